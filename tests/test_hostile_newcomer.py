"""Hostile inputs a newcomer meets (issue 28 item 5): no finished work lost, no misleading line.

Everything is real and built here from the package's built-in data: a tiny AB2 model (n_max 4, l_max 2,
12 coarse-grained frames), real relaxations and predictions, a real progress file edited by hand as a user
would, a real writer process killed with SIGKILL, LAMMPS data files written by ASE (and, when present, the
authors' ``ZIF8_H.data`` of ../shared). Each case asserts the exit code, one ``Error:`` line with the expected
words and no traceback, and exactly which files are left.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write
from click.testing import CliRunner
from conftest import builtin_frames

from ase_cggpr.cli import main
from ase_cggpr.io import read_structures
from ase_cggpr.model import CGGPRModel
from ase_cggpr.outputs import atomic_output
from ase_cggpr.pretrained import MODELS_DIR, available
from ase_cggpr.screening import progress_path, screen, screen_to_csv

TINY = ["--n-max", "4", "--l-max", "2"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def invoke(args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def error_line(result, code: int = 1) -> str:
    """The one ``Error`` line of a failed command (no traceback)."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    return errors[0]


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A tiny AB2 model on 12 bead frames; good.extxyz (one frame), stretched.extxyz (the same frame with its
    cell and beads scaled by 1.3: it maps, but its relaxation breaks the bead net after two steps) and
    nacl.cif (reads, but is no ZIF)."""
    from ase.build import bulk

    folder = tmp_path_factory.mktemp("newcomer")
    cg = builtin_frames("cg")
    frames = []
    for sid in (0, 4, 5, 6, 9, 10):
        frames += [a for a in cg if a.info["structure_id"] == sid][:2]
    write(folder / "cg.extxyz", frames)
    result = invoke(["train", folder / "cg.extxyz", "-o", folder / "m.npz", "--label-key", "e_local", *TINY, "-q"])
    assert result.exit_code == 0, result.output
    good = frames[0].copy()
    good.calc = None
    good.info = {"name": "good"}
    write(folder / "good.extxyz", good)
    stretched = good.copy()
    stretched.set_cell(stretched.cell * 1.3, scale_atoms=True)
    stretched.info = {"name": "stretched"}
    write(folder / "stretched.extxyz", stretched)
    write(folder / "nacl.cif", bulk("NaCl", "rocksalt", a=5.6))
    return folder


# -- relax / predict: check before the work, keep what finished ----------------------------------------------

def test_relax_keeps_the_finished_structures_when_one_fails_during_the_work(inputs, tmp_path):
    out = tmp_path / "relaxed.extxyz"
    args = ["relax", inputs / "m.npz", inputs / "good.extxyz", inputs / "stretched.extxyz", "-o", out,
            "--fixed-cell", "--max-steps", "5"]
    for _run in range(2):  # a second run replaces the first run's partial files
        line = error_line(invoke(args))
        assert "1 of 2 structure(s) could not be relaxed" in line and "'stretched'" in line, line
        assert "relaxation stopped after" in line and "relaxed.partial.extxyz" in line, line
        assert files(tmp_path) == ["relaxed.partial.csv", "relaxed.partial.extxyz"]  # never the complete names
    (done,) = read(tmp_path / "relaxed.partial.extxyz", ":")
    assert done.info["name"] == "good" and 0 < done.info["relax_steps"] <= 5  # the symmetric relaxation: 4
    with open(tmp_path / "relaxed.partial.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["good", "stretched"]
    assert rows[0]["error"] == "" and float(rows[0]["energy_per_Zn_eV"]) == pytest.approx(
        done.info["cggpr_energy_per_metal"], abs=1e-6)
    assert rows[1]["energy_per_Zn_eV"] == "" and "bead" in rows[1]["error"]
    # all good: the complete names, exit 0, no error column
    result = invoke(["relax", inputs / "m.npz", inputs / "good.extxyz", "-o", out, "--fixed-cell", "--max-steps", "5",
                     "-q"])
    assert result.exit_code == 0, result.output
    assert "error" not in (tmp_path / "relaxed.csv").read_text().splitlines()[0]


def test_relax_checks_every_structure_before_relaxing_any(inputs, tmp_path):
    """The second file cannot be mapped: found before the first is relaxed; nothing computed, nothing written."""
    result = invoke(["relax", inputs / "m.npz", inputs / "good.extxyz", inputs / "nacl.cif", "-o",
                     tmp_path / "r.extxyz"])
    line = error_line(result)
    assert "1 of 2 structure(s) cannot be relaxed, so nothing was computed" in line and "nacl.cif" in line, line
    assert ("coordination" in line or "broken linker" in line) and "good:" not in result.output  # no relaxation ran
    assert files(tmp_path) == []
    only_bad = invoke(["relax", inputs / "m.npz", inputs / "stretched.extxyz", "-o", tmp_path / "r.extxyz",
                       "--fixed-cell", "-q"])
    assert "nothing finished, nothing written" in error_line(only_bad) and files(tmp_path) == []


def test_predict_checks_the_last_frame_before_predicting_the_others(inputs, tmp_path):
    frames = read(inputs / "cg.extxyz", ":") + [read(inputs / "nacl.cif")]
    write(tmp_path / "many.extxyz", frames)
    out = tmp_path / "p.extxyz"
    line = error_line(invoke(["predict", inputs / "m.npz", tmp_path / "many.extxyz", "-o", out]))
    assert "1 of 13 structure(s) cannot be predicted, so nothing was computed" in line, line
    assert "many.extxyz@12" in line and ("coordination" in line or "broken linker" in line)
    assert files(tmp_path) == ["many.extxyz"]
    result = invoke(["predict", inputs / "m.npz", inputs / "cg.extxyz", "-o", out, "-q"])
    assert result.exit_code == 0 and len(read(out, ":")) == 12, result.output


@pytest.mark.parametrize("max_steps,fmax,status,comparison", [(0, "0.01", "NOT converged in 0 steps", "(NOT < 0.01)"),
                                                              (0, "1", "converged in 0 steps", "(< 1)")])
def test_relax_message_says_whether_the_force_criterion_is_met(inputs, tmp_path, max_steps, fmax, status,
                                                                comparison):
    result = invoke(["relax", inputs / "m.npz", inputs / "good.extxyz", "-o", tmp_path / "r.extxyz", "--fixed-cell",
                     "--max-steps", max_steps, "--fmax", fmax])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("good:"))
    assert line.startswith(f"good: {status}") and f"eV/Å {comparison}" in line, line
    force = float(line.split("max force ")[1].split()[0])
    assert (force < float(fmax)) == (status == "converged in 0 steps")


# -- screen --resume: every field of a hand-edited row is checked -------------------------------------------

@pytest.fixture(scope="module")
def screened(inputs, tmp_path_factory):
    """A progress file of a screen of 4 bead frames whose CSV was never written, and the reference ranking."""
    folder = tmp_path_factory.mktemp("screened")
    write(folder / "four.extxyz", read(inputs / "cg.extxyz", ":4"))
    model = CGGPRModel.load(inputs / "m.npz")
    log = folder / "progress.jsonl"
    reference = screen(model, [folder / "four.extxyz"], threshold=0.045, progress_file=log)
    assert 0 < sum(r.trusted for r in reference.rows) < 4  # both kinds of row, so 'trusted' edits matter
    return model, folder / "four.extxyz", log, {r.id: r for r in reference.rows}


def _edit_row(row: dict, field: str, value) -> dict:
    row = dict(row)
    row[field] = value
    return row


EDITS = {  # what a user's editor or a damaged disk can do to row 2 of the file (line 3)
    "energy-text": lambda e: {**e, "row": _edit_row(e["row"], "energy_per_Zn", "abc")},
    "energy-nan": lambda e: {**e, "row": _edit_row(e["row"], "energy_per_Zn", float("nan"))},
    "std-negative": lambda e: {**e, "row": _edit_row(e["row"], "max_std", -0.01)},
    "row-is-a-string": lambda e: {**e, "row": "abc"},
    "entry-is-an-int": lambda e: 5,
    "key-is-an-int": lambda e: {**e, "key": 5},
    "id-is-an-int": lambda e: {**e, "row": _edit_row(e["row"], "id", 5)},
    "error-is-an-int": lambda e: {**e, "row": _edit_row(e["row"], "error", 5)},
    "trusted-as-text": lambda e: {**e, "row": _edit_row(e["row"], "trusted", "False")},
    "trusted-unearned": lambda e: {**e, "row": _edit_row(_edit_row(e["row"], "trusted", True), "max_std", 0.5)},
    "n-zn-negative": lambda e: {**e, "row": _edit_row(e["row"], "n_Zn", -1)},
    "n-zn-bool": lambda e: {**e, "row": _edit_row(e["row"], "n_Zn", True)},
    "field-missing": lambda e: {**e, "row": {k: v for k, v in e["row"].items() if k != "space_group"}},
    "not-json": None,
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_resume_recomputes_and_names_a_hand_edited_row(screened, tmp_path, case):
    model, data, log, reference = screened
    lines = log.read_text().splitlines()
    edited = "{not json" if EDITS[case] is None else json.dumps(EDITS[case](json.loads(lines[2])))
    out = tmp_path / "ranking.csv"
    progress_path(out).write_text("\n".join([*lines[:2], edited, *lines[3:]]) + "\n")
    result = screen_to_csv(model, [data], out, threshold=0.045, resume=True)
    assert result.n_resumed == 3 and len(result.invalid_progress) == 1, result.invalid_progress
    assert result.invalid_progress[0].startswith("line 3: "), result.invalid_progress
    for row in result.rows:  # the edited row was computed again: the ranking is the one of a clean screen
        ref = reference[row.id]
        assert (row.rank, row.trusted, row.error) == (ref.rank, ref.trusted, ref.error), row
        assert row.energy_per_Zn == pytest.approx(ref.energy_per_Zn, abs=1e-9)
    assert out.exists() and not progress_path(out).exists()


def test_resume_through_the_cli_warns_and_ranks_no_text_flag(screened, inputs, tmp_path):
    model, data, log, reference = screened
    lines = log.read_text().splitlines()
    trusted = next(k for k, line in enumerate(lines[1:], 1) if json.loads(line)["row"]["trusted"])
    entry = json.loads(lines[trusted])
    entry["row"]["trusted"] = "False"  # a string: truthy in Python
    lines[trusted] = json.dumps(entry)
    untrusted = next(k for k, line in enumerate(lines[1:], 1) if not json.loads(line)["row"]["trusted"])
    entry = json.loads(lines[untrusted])
    entry["row"]["trusted"] = "True"
    lines[untrusted] = json.dumps(entry)
    out = tmp_path / "ranking.csv"
    progress_path(out).write_text("\n".join(lines) + "\n")
    result = invoke(["screen", inputs / "m.npz", data, "-o", out, "--threshold", "0.045", "--resume", "-j", "1",
                     "--top", "0"])
    assert result.exit_code == 0, result.output
    warning = next(x for x in result.output.splitlines() if x.startswith("warning"))
    assert "2 row(s)" in warning and "computed again" in warning and "trusted 'True' is not true or false" in \
        warning.replace("'False'", "'True'"), warning
    with open(out, newline="") as handle:
        rows = {r["id"]: r for r in csv.DictReader(handle)}
    for name, row in rows.items():
        assert row["trusted"] == str(reference[name].trusted) and row["rank"] == str(reference[name].rank or "")


def test_resume_names_a_setting_that_only_the_progress_file_has(screened, tmp_path):
    """A --relax screen's progress file resumed without --relax: the message names 'relax'."""
    model, data, log, _ = screened
    lines = log.read_text().splitlines()
    header = json.loads(lines[0])
    header["settings"]["relax"] = True  # what `cggpr screen --relax` records
    out = tmp_path / "ranking.csv"
    progress_path(out).write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    model_file = tmp_path / "m.npz"
    model.save(model_file)
    result = invoke(["screen", model_file, data, "-o", out, "--threshold", "0.045", "--resume", "-q"])
    line = error_line(result)
    assert "other settings (relax True -> 'not set')" in line, line
    assert files(tmp_path) == ["m.npz", "ranking.csv.progress.jsonl"]  # the progress file is kept


# -- names: a shadowed shipped model, a LAMMPS data file --------------------------------------------------

@pytest.mark.skipif("AB2" not in available(), reason="no shipped AB2 model in this installation")
@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_path_shadowing_a_shipped_model_is_named(tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    if kind == "folder":
        (tmp_path / "AB2").mkdir()
    else:
        (tmp_path / "AB2").write_text("my notes\n")
    line = error_line(invoke(["info", "AB2"]), 2 if kind == "folder" else 1)
    assert f"the {kind} {tmp_path / 'AB2'} shadows the shipped model AB2" in line, line
    assert str(MODELS_DIR / "AB2.npz") in line
    assert invoke(["info", MODELS_DIR / "AB2.npz", "-q"]).exit_code == 0  # the way out the message gives works


def _lammps(atoms, path: Path, *, masses: bool = True) -> Path:
    write(path, atoms, format="lammps-data", atom_style="full", masses=masses,
          specorder=sorted(set(atoms.get_chemical_symbols())))
    return path


def test_lammps_data_files_are_read(inputs, tmp_path):
    """An atomistic ZIF as a LAMMPS data file (atom_style full, Masses): the same prediction as its extxyz."""
    atoms = builtin_frames("atomistic")[0]
    atoms.calc = None
    atoms.info = {}
    write(tmp_path / "zif.extxyz", atoms)
    _lammps(atoms, tmp_path / "zif.data")
    (back,) = read_structures([tmp_path / "zif.data"])
    assert back.get_chemical_formula() == atoms.get_chemical_formula() and back.pbc.all()
    assert np.abs(back.positions - atoms.positions).max() < 1e-9
    out, folder = {}, tmp_path / "predictions"
    folder.mkdir()
    for name in ("zif.extxyz", "zif.data"):
        result = invoke(["predict", inputs / "m.npz", tmp_path / name, "-o", folder / f"{name}.extxyz"])
        assert result.exit_code == 0, result.output
        out[name] = read(folder / f"{name}.extxyz").info["cggpr_energy_per_metal"]
    assert math.isfinite(out["zif.data"]) and out["zif.data"] == pytest.approx(out["zif.extxyz"], abs=1e-9)
    rows = screen(CGGPRModel.load(inputs / "m.npz"), [tmp_path], threshold=1.0).rows  # a folder: .data included
    assert sorted(Path(r.source).name for r in rows) == ["zif.data", "zif.extxyz"]
    assert not any(r.error for r in rows)


def test_unreadable_lammps_and_unknown_formats_are_named(inputs, tmp_path):
    atoms = builtin_frames("atomistic")[0]
    _lammps(atoms, tmp_path / "no_masses.data", masses=False)
    line = error_line(invoke(["predict", inputs / "m.npz", tmp_path / "no_masses.data"]))
    assert "no_masses.data" in line and "Masses section" in line, line
    text = _lammps(atoms, tmp_path / "united.data").read_text()
    (tmp_path / "united.data").write_text(text.replace("1.0079999997406976", "15.035"))  # H typed as CH3
    line = error_line(invoke(["predict", inputs / "m.npz", tmp_path / "united.data"]))
    assert "united.data" in line and "15.035 amu" in line and "no element" in line, line
    (tmp_path / "notes.data").write_text("my measurements\n1 2 3\n")
    line = error_line(invoke(["predict", inputs / "m.npz", tmp_path / "notes.data"]))
    assert "notes.data" in line and "'runnerdata'" in line and "LAMMPS data" in line, line


def test_the_authors_lammps_data_file(inputs, shared_data):
    path = shared_data / "mofff" / "ZIF8_H.data"
    if not path.exists():
        pytest.skip(f"{path} is not there")
    (atoms,) = read_structures([path])
    assert atoms.get_chemical_formula() == "C576H576N384Zn96"
    result = invoke(["predict", inputs / "m.npz", path])
    assert result.exit_code == 0 and "ZIF8_H.data" in result.output, result.output


# -- a writer killed with SIGKILL leaves files; the next writer removes them --------------------------------

KILLED_WRITER = """
import sys, time
from pathlib import Path
from ase_cggpr.outputs import atomic_output
with atomic_output(Path(sys.argv[1])) as tmp:
    tmp.write_text("half")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_files_of_a_killed_writer_are_removed_by_the_next(tmp_path):
    out = tmp_path / "m.npz"
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out)], stdout=subprocess.PIPE, env=ENV,
                               text=True)
    try:
        assert process.stdout.readline().strip() == "writing"
        left = files(tmp_path)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert files(tmp_path) == left and len(left) == 3, left  # lock, the lock's .PID.HEX twin, the temporary
    assert {".m.npz.lock", f".m.{process.pid}.tmp.npz"} <= set(left)
    live = tmp_path / f".m.npz.lock.{os.getppid()}.abcd1234"  # a live process's: not touched
    live.write_text(str(os.getppid()))
    time.sleep(0.01)
    with atomic_output(out) as tmp:
        tmp.write_text("complete")
    assert files(tmp_path) == [live.name, "m.npz"] and out.read_text() == "complete"
