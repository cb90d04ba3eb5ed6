"""The main job (``cggpr demo``): the bundled real Zn(Im)2 structures, their MOF-FF reference, and the screen
with the shipped models beside the MOF-FF and ACE rankings."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from ase_cggpr.demo import (
    ACE_RELAXED_FILE,
    DEFAULT_MODELS,
    REAL_ZIFS_DIR,
    REFERENCE_FILE,
    ace_reference,
    demo_outputs,
    mofff_reference,
    real_structures,
    run_demo,
    spearman,
)
from ase_cggpr.pretrained import available

CLI = [sys.executable, "-c", "from ase_cggpr.cli import main; main()"]
NAMES = {"ZIF1", "ZIF4", "ZIF6", "ZIF8_H", "coi", "nog", "zni"}
shipped = pytest.mark.skipif(not set(DEFAULT_MODELS) <= set(available()),
                             reason=f"the shipped models {DEFAULT_MODELS} are not in this installation yet")


def test_bundled_reference_is_the_mofff_relaxation():
    ref = mofff_reference()
    assert {e["name"] for e in ref["structures"]} == NAMES
    assert "scripts/relax_real_zifs.py" in ref["command"]
    assert "CC BY 4.0" in ref["source"]
    assert ref["reference_energy_eV"] == pytest.approx(-0.711955)
    for e in ref["structures"]:
        assert e["converged"], e
        assert e["max_force_eV_A"] < ref["fmax_eV_A"] and e["max_pressure_atm"] < ref["pmax_atm"]
        # relaxing lowers the MOF-FF energy of the DFT structure
        assert e["energy_per_zn_relaxed_eV"] <= e["energy_per_zn_cif_eV"] + 1e-6
    by_name = {e["name"]: e for e in ref["structures"]}
    assert abs(by_name["zni"]["energy_per_zn_relaxed_eV"]) < 2e-3  # zni is the reference polymorph
    relaxed = {a.info["name"]: a for a in _read_relaxed()}
    assert set(relaxed) == NAMES
    for name, atoms in relaxed.items():
        assert atoms.info["mofff_energy_per_zn"] == pytest.approx(by_name[name]["energy_per_zn_relaxed_eV"])
    atoms = real_structures(ref)
    assert [a.info["name"] for a in atoms] == [e["name"] for e in ref["structures"]]
    assert all((a.numbers == 30).sum() == e["n_zn"] for a, e in zip(atoms, ref["structures"], strict=True))


def test_bundled_ace_reference_is_the_ace_relaxation():
    ace = ace_reference()
    assert {e["name"] for e in ace["structures"]} == NAMES
    assert ace["labeller"]["labeller"] == "ace" and ace["labeller"]["potential"] == "zif-ace-24.yaml"
    assert "--labeller ace:" in ace["command"] and "/" + "work/" not in ace["command"]
    by_name = {e["name"]: e for e in ace["structures"]}
    assert abs(by_name["zni"]["energy_per_zn_relaxed_eV"]) < 2e-3
    assert all(e["converged"] and e["max_force_eV_A"] < ace["fmax_eV_A"] for e in ace["structures"])
    from ase.io import read

    relaxed = {a.info["name"]: a for a in read(ACE_RELAXED_FILE, ":")}
    assert set(relaxed) == NAMES
    for name, atoms in relaxed.items():
        assert atoms.info["ace_energy_per_zn"] == pytest.approx(by_name[name]["energy_per_zn_relaxed_eV"])


def test_an_ace_grade_model_is_compared_with_the_ace_reference(small_models, tmp_path):
    """A model whose card says it learnt ACE labels is ranked against ACE (the MOF-FF-grade one against MOF-FF),
    both references in every table row and CSV line, and the demo says which to pick for what."""
    from ase_cggpr import CGGPRModel

    mofff_path = small_models["AB2"].save(tmp_path / "small_AB2.npz")
    model = CGGPRModel.load(mofff_path)
    model.training_ = dict(model.training_, labeller={"labeller": "ace", "potential": "zif-ace-24.yaml"}, nets=76)
    ace_path = model.save(tmp_path / "small_ace.npz")
    out = tmp_path / "demo"
    result = run_demo(out, models=[str(mofff_path), str(ace_path)], train=False)
    mofff = {e["name"]: e["energy_per_zn_relaxed_eV"] for e in mofff_reference()["structures"]}
    ace = {e["name"]: e["energy_per_zn_relaxed_eV"] for e in ace_reference()["structures"]}
    by_mofff, by_ace = result.screens
    assert (by_mofff.reference_name, by_ace.reference_name) == ("MOF-FF", "ACE")
    for s, own in ((by_mofff, mofff), (by_ace, ace)):
        assert {r["structure"] for r in s.rows} == NAMES
        for r in s.rows:
            assert r["mofff"] == mofff[r["structure"]] and r["ace"] == ace[r["structure"]]
            assert r["error"] == pytest.approx(r["predicted"] - own[r["structure"]])
        assert s.spearman == pytest.approx(spearman([r["predicted"] for r in s.rows],
                                                    [own[r["structure"]] for r in s.rows]))
    # the same model, the same structures: only the reference differs
    assert [r["predicted"] for r in by_mofff.rows] == [r["predicted"] for r in by_ace.rows]
    assert sorted(r["ace_rank"] for r in by_ace.rows) == list(range(1, 8))
    text = result.table()
    assert "error vs ACE" in text and "error vs MOF-FF" in text and "--labeller ace:" in text
    assert "Which model" in text and "ACE-grade small_ace" in text and "76 ACE-relaxed nets" in text
    with open(out / "ranking.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["error_against"] for r in rows} == {"MOF-FF", "ACE"} and len(rows) == 14
    assert all(float(r["ace_relaxed_meV_per_Zn"]) == pytest.approx(1000 * ace[r["structure"]], abs=0.01)
               for r in rows)
    # --relaxed: the ACE-grade model screens the ACE-relaxed structures (the MOF-FF-grade one MOF-FF's)
    relaxed = run_demo(tmp_path / "relaxed", models=[str(ace_path)], train=False, relaxed=True)
    from ase.io import read

    structures = {a.info["name"]: a for a in read(ACE_RELAXED_FILE, ":")}
    as_given = {r["structure"]: r["predicted"] for r in by_ace.rows}
    for r in relaxed.screens[0].rows:  # the screen wraps atoms into the cell: the same to 0.1 meV
        assert r["predicted"] == pytest.approx(float(np.mean(model.predict(structures[r["structure"]]))), abs=1e-4)
    assert max(abs(r["predicted"] - as_given[r["structure"]]) for r in relaxed.screens[0].rows) > 1e-3


def test_without_an_ace_grade_model_the_demo_says_none_ships(small_models, tmp_path):
    path = small_models["AB2"].save(tmp_path / "small_AB2.npz")
    text = run_demo(tmp_path / "demo", models=[str(path)], train=False).table()
    assert "Which model" in text and "No ACE-grade model ships yet" in text
    assert "AB2-ace" not in DEFAULT_MODELS or "AB2-ace" in available()


def _read_relaxed():
    from ase.io import read

    return read(REAL_ZIFS_DIR / "mofff_relaxed.extxyz", ":")


def test_bundled_cifs_are_unchanged_copies(shared_data):
    for name in NAMES:
        ours = (REAL_ZIFS_DIR / f"{name}.cif").read_bytes()
        theirs = (shared_data / "zif-structures" / f"{name}.cif").read_bytes()
        assert hashlib.sha256(ours).digest() == hashlib.sha256(theirs).digest(), name
    assert "CC BY 4.0" in (REAL_ZIFS_DIR / "README.md").read_text()


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [1, 2]))


def test_demo_with_model_files(small_models, tmp_path):
    """The demo takes any model files (the shipped ones are names): a real screen, table, CSV and figure."""
    paths = []
    for rep in ("AB2", "A"):
        paths.append(tmp_path / f"small_{rep}.npz")
        small_models[rep].save(paths[-1])
    out = tmp_path / "demo"
    result = run_demo(out, models=[str(p) for p in paths], n_train=100)
    ref = {e["name"]: e["energy_per_zn_relaxed_eV"] for e in mofff_reference()["structures"]}
    assert [s.name for s in result.screens] == ["small_AB2", "small_A"]
    for s in result.screens:
        assert {r["structure"] for r in s.rows} == NAMES
        assert all(math.isfinite(r["predicted"]) and not r["error_message"] for r in s.rows)
        assert all(r["mofff"] == ref[r["structure"]] for r in s.rows)
        assert s.threshold == pytest.approx(0.2)  # no calibration in these files: the noise sigma
    assert (out / "real_zifs.png").stat().st_size > 10_000
    with open(out / "ranking.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 14
    assert result.training.n_train == 100 and 0 < result.training.rmse < 1.0
    assert "Training on the built-in data" in result.table()
    relaxed = run_demo(tmp_path / "relaxed", models=[str(paths[0])], train=False, relaxed=True)
    assert {r["structure"] for r in relaxed.screens[0].rows} == NAMES
    assert relaxed.screens[0].rows != result.screens[0].rows  # other structures, other predictions


@shipped
def test_demo_screens_the_real_structures_with_the_shipped_models(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(out, models=DEFAULT_MODELS, n_train=200)
    ref = {e["name"]: e["energy_per_zn_relaxed_eV"] for e in json.loads(REFERENCE_FILE.read_text())["structures"]}
    assert [s.name for s in result.screens] == list(DEFAULT_MODELS)
    for s in result.screens:
        assert {r["structure"] for r in s.rows} == NAMES
        assert not any(r["error_message"] for r in s.rows)
        assert all(math.isfinite(r["predicted"]) and r["max_std"] >= 0 for r in s.rows)
        assert all(r["mofff"] == ref[r["structure"]] for r in s.rows)  # read from the bundled JSON
        assert [r["rank"] for r in s.rows] == list(range(1, 8))
        assert np.all(np.diff([r["predicted"] for r in s.rows]) >= 0)
        assert sorted(r["mofff_rank"] for r in s.rows) == list(range(1, 8))
        assert all(r["trusted"] == (r["max_std"] <= s.threshold and not r["trust_reason"]) for r in s.rows)
        own = "ace" if s.reference_name == "ACE" else "mofff"  # each model against its own labeller's reference
        assert all(r["reference"] == r[own] for r in s.rows)
        assert s.rmse == pytest.approx(np.sqrt(np.mean([(r["predicted"] - r[own]) ** 2 for r in s.rows])))
        assert -1 <= s.spearman <= 1
        assert s.threshold > 0 and "calibration" in s.threshold_source
        assert "held out" in s.card_text
    text = result.table()
    assert all(name in text for name in NAMES) and "Spearman" in text and ref and "relax_real_zifs.py" in text
    with open(out / "ranking.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7 * len(DEFAULT_MODELS)
    assert all(float(r["mofff_relaxed_meV_per_Zn"]) == pytest.approx(1000 * ref[r["structure"]], abs=0.01)
               for r in rows)
    assert (out / "real_zifs.png").stat().st_size > 10_000
    assert result.training is not None and 0 < result.training.rmse < 1.0
    assert (out / "model_AB2.npz").is_file()
    with pytest.raises(FileExistsError):  # nothing the user wrote is overwritten without asking
        run_demo(out, models=DEFAULT_MODELS[:1], train=False)


@shipped
def test_demo_command(tmp_path):
    out = tmp_path / "d"
    run = subprocess.run(CLI + ["demo", "-o", str(out), "--model", "AB2",
                          "--no-train", "-q"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "ZIF4" in run.stdout and "Spearman" in run.stdout
    assert {p.name for p in demo_outputs(out, train=False)} <= {p.name for p in out.iterdir()}
    again = subprocess.run(CLI + ["demo", "-o", str(out), "--model", "AB2",
                            "--no-train", "-q"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "exists" in again.stderr
