"""Zn(mIm)2 (issue 33): the mIm bead (its own species, at the ring centroid; the centre of mass for comparison),
the bundled ZIF-8 MOF-FF reference and relaxed Zn(mIm)2 nets, and ``cggpr demo --linker mIm``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.geometry import find_mic
from ase.io import read

from ase_cggpr.beads import B_BEADS, bead_positions, coarse_grain, find_connectivity
from ase_cggpr.demo import (
    MIM_POLYMORPHS_FILE,
    ZIF8_REFERENCE_FILE,
    ZIF8_RELAXED_FILE,
    mim_structures,
    shipped_mim_models,
)
from ase_cggpr.model import CGGPRModel

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from ase_cggpr.cli import main; main()"]


@pytest.fixture(scope="module")
def zif8():
    return read(ZIF8_RELAXED_FILE)


def test_mim_bead_is_its_own_species_at_the_ring_centroid(zif8):
    conn = find_connectivity(zif8)
    assert set(conn.linker_formulas) == {"C4H5N2"}
    beads = coarse_grain(zif8, "AB2", connectivity=conn).structure
    assert beads.get_chemical_symbols().count("Si") == 12
    assert beads.get_chemical_symbols().count(B_BEADS["C4H5N2"]) == 24 == beads.get_chemical_symbols().count("S")
    ring = bead_positions(zif8, conn)
    assert np.allclose(beads.positions[12:], ring)
    # the ring centroid: mean of the 5 ring atoms (minimum image), for one linker by hand
    members = conn.rings[0]
    offsets, _ = find_mic(zif8.positions[members] - zif8.positions[members[0]], zif8.cell)
    by_hand = zif8.positions[members[0]] + offsets.mean(axis=0)
    d, _ = find_mic(by_hand - ring[0], zif8.cell)
    assert np.linalg.norm(d) < 1e-8
    # the centre of mass lies ~0.48 Å from it, towards the methyl carbon (the ring's C2 neighbour outside the ring)
    mass = coarse_grain(zif8, "AB2", connectivity=conn, centre="mass").structure.positions[12:]
    shift, _ = find_mic(mass - ring, zif8.cell)
    assert np.allclose(np.linalg.norm(shift, axis=1), 0.48, atol=0.03)
    methyl = [i for i in conn.linkers[0] if zif8[i].symbol == "C" and i not in set(conn.rings[0])]
    towards, _ = find_mic(zif8.positions[methyl[0]] - ring[0], zif8.cell)
    assert np.dot(shift[0], towards) / (np.linalg.norm(shift[0]) * np.linalg.norm(towards)) > 0.99
    with pytest.raises(ValueError, match="centre must be one of"):
        bead_positions(zif8, conn, "middle")


def test_bundled_zif8_reference_is_its_mofff_relaxation(zif8):
    ref = json.loads(ZIF8_REFERENCE_FILE.read_text())
    assert ref["converged"] and ref["max_force_eV_A"] < 1e-3 and ref["max_pressure_atm"] < 50
    assert "CC BY 4.0" in ref["source"] and "relax_zif8.py" in ref["command"]
    assert ref["mofff_total_energy_per_zn_eV"] == pytest.approx(-7.764209, abs=2e-6)
    assert np.nanmean(zif8.arrays["e_local"]) - ref["reference_energy_eV"] == pytest.approx(
        ref["energy_per_zn_relaxed_eV"], abs=1e-9)
    assert zif8.cell.lengths() == pytest.approx([17.0907] * 3, abs=2e-4)


def test_bundled_mim_polymorphs():
    structures = mim_structures()
    assert [a.info["name"] for a in structures][0] == "ZIF-8"
    assert {a.info["framework_type"] for a in structures} == {"sod", "dia", "qtz", "crb", "abw", "gis"}
    for a in read(MIM_POLYMORPHS_FILE, ":"):
        assert set(find_connectivity(a).linker_formulas) == {"C4H5N2"}
        e = a.arrays["e_local"]
        assert a.info["mofff_energy_per_zn"] == pytest.approx(np.nanmean(e) - a.info["reference_energy"], abs=1e-9)


@pytest.fixture(scope="module")
def tiny_mim_model(tmp_path_factory):
    """An exact AB2 model fitted on the bundled relaxed Zn(mIm)2 nets (not ZIF-8): a real model, seconds to fit."""
    frames = read(MIM_POLYMORPHS_FILE, ":")
    model = CGGPRModel(representation="AB2", reference_energy=frames[0].info["reference_energy"])
    model.fit([a for a in frames], [a.arrays["e_local"][a.numbers == 30] for a in frames])
    path = tmp_path_factory.mktemp("mim") / "tiny-mIm.npz"
    model.save(path)
    return path


def test_demo_mim_with_a_model_file(tiny_mim_model, tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(CLI + ["demo", "--linker", "mIm", "--model", str(tiny_mim_model), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ZIF-8" in proc.stdout and "Spearman" in proc.stdout and "dia - ZIF-8" in proc.stdout
    rows = list(csv.DictReader(open(out / "ranking_mIm.csv")))
    assert len(rows) == 7 and {r["structure"] for r in rows} >= {"ZIF-8", "SOD", "ZIFs:46_XASGON"}
    assert sorted(int(r["rank"]) for r in rows) == list(range(1, 8))
    for r in rows:  # the table's error is the prediction minus MOF-FF
        assert float(r["error_meV"]) == pytest.approx(float(r["predicted_meV_per_Zn"])
                                                      - float(r["mofff_relaxed_meV_per_Zn"]), abs=2e-3)
    again = subprocess.run(CLI + ["demo", "--linker", "mIm", "--model", str(tiny_mim_model), "-o", str(out)],
                           capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr


def test_demo_mim_without_a_shipped_model_says_what_to_run(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(CLI + ["demo", "--linker", "mIm", "-o", str(out)], capture_output=True, text=True)
    if shipped_mim_models():
        assert proc.returncode == 0, proc.stderr
        assert (out / "ranking_mIm.csv").is_file() and "AB2-mIm" in proc.stdout
    else:
        assert proc.returncode == 1
        assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
        assert "no Zn(mIm)2 model ships" in proc.stderr and "scripts/mim_models.py" in proc.stderr
        assert not out.exists()


def test_training_labels_are_shifted_per_linker_and_relaxed_frames_weighted():
    """``scripts/mim_models.py`` builds the training set per linker: a net's Im and mIm frames share its name, and
    one ``linker_relaxation_shift`` call on both would give every mIm *and* Im r-d label whichever linker came
    last. Im r-d labels: their own shift; mIm r-d labels: the same net's Im shift (``--mim-rd-shift im``) or none
    (``none``: the mIm build's d frame is its relaxation, shift 0); relaxed frames weighted ``--relaxed-weight``."""
    import argparse
    import importlib.util

    from conftest import builtin_frames

    from ase_cggpr import recipes

    spec = importlib.util.spec_from_file_location("mim_models", ROOT / "scripts" / "mim_models.py")
    mim_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mim_models)
    nets = sorted({a.info["net"] for a in builtin_frames("cg")})[:3]
    im = [a for a in builtin_frames("cg") if a.info["net"] in nets and a.info["order"] in ("d", "r-d")]
    im += [a.copy() for a in im if a.info["order"] == "d"]
    for a in im[-len(nets):]:  # Im relaxed frames: the none labels lowered by 0.05 eV per Zn
        a.info.update(order="relaxed", rattle="relaxed")
        a.arrays["e_local"] = a.arrays["e_local"] - 0.05
    mim = [a.copy() for a in im if a.info["order"] in ("d", "r-d")]
    for a in mim:
        a.info["linker"] = "mIm"
        a.arrays["e_local"] = a.arrays["e_local"] - 7.0
    mim += [a.copy() for a in mim if a.info["order"] == "d"]
    for a in mim[-len(nets):]:  # as read_mim_frames: the d frame is the relaxation (shift 0)
        a.info.update(order="relaxed", rattle="relaxed")
    frames = recipes.prepare_frames(mim + im)
    raw = {id(a): recipes.site_labels(a) for a in frames}
    for shift, weight in (("im", 1), ("none", 3)):
        args = argparse.Namespace(mim_rd_shift=shift, relaxed_weight=weight, n_rd=None, seed=0)
        tr, labels, weights = mim_models.linker_training_set(frames, frames, args, "rd-shifted+relaxed")
        rd = [(a, y) for a, y in zip(tr, labels, strict=True) if a.info["kind"] == "r-d"]
        assert len(rd) == sum(a.info["kind"] == "r-d" for a in frames) > 0
        for a, y in rd:
            lowered = 0.05 if mim_models.linker_of(a) == "Im" or shift == "im" else 0.0
            assert np.allclose(raw[id(a)] - y, lowered, atol=1e-9)
        assert sum(a.info["kind"] == "relaxed" for a in tr) == 2 * len(nets)  # each once, weighted
        assert [w for a, w in zip(tr, weights, strict=True) if a.info["kind"] == "relaxed"] == [weight] * 2 * len(nets)
        assert all(w == 1 for a, w in zip(tr, weights, strict=True) if a.info["kind"] != "relaxed")
    # the atomistic recipe: a mIm none frame is its relaxed frame (same atoms), kept once, as relaxed
    tr, _, weights = mim_models.linker_training_set(frames, frames, args, "rd+none+relaxed")
    kinds = {(mim_models.linker_of(a), a.info["kind"]) for a in tr}
    assert ("mIm", "none") not in kinds and {("Im", "none"), ("mIm", "relaxed"), ("mIm", "r-d")} <= kinds
    # the collision a single call makes: every net gets the last linker's (Im) shift, mIm r-d included
    assert all(np.allclose(d, 0.05) for d in recipes.linker_relaxation_shift(frames).values())
