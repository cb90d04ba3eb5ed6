"""The built-in dataset, the demo (main job) and the core example: these run without ../shared."""

import numpy as np
import pytest
from ase.io import write
from conftest import builtin_frames

from ase_cggpr import coarse_grain, local_energies
from ase_cggpr.demo import run_demo
from ase_cggpr.io import default_dataset_path


@pytest.fixture(scope="module")
def default_frames():
    assert default_dataset_path("atomistic").name == "default_atomistic.extxyz.gz"
    return builtin_frames("atomistic"), builtin_frames("cg")  # read once per session (conftest)


def test_default_dataset_is_self_consistent(default_frames):
    atomistic, cg = default_frames
    assert len(atomistic) == len(cg) > 100
    for atoms, beads in list(zip(atomistic, cg, strict=True))[::25]:
        e_local = local_energies(atoms, key="energies")
        zn = atoms.symbols == "Zn"
        assert np.abs(e_local - atoms.arrays["e_local"][zn]).max() < 1e-6
        assert np.abs(e_local - local_energies(beads, key="e_local")).max() < 1e-6
        assert e_local.max() <= 1.0  # the paper's filter on raw MOF-FF local energies
        mine = coarse_grain(atoms, "AB2").structure
        assert np.abs(mine.cell.cellpar() - beads.cell.cellpar()).max() < 1e-6
        assert mine.get_chemical_formula() == beads.get_chemical_formula()
    assert len({a.info["structure_id"] for a in atomistic}) >= 30
    assert {a.info["rattle"] for a in atomistic} >= {"none", "small", "medium", "large"}


def test_demo_on_a_subset(default_frames, tmp_path):
    atomistic, _ = default_frames
    subset = [a for a in atomistic if a.info["structure_id"] < 8]
    path = tmp_path / "subset.extxyz"
    write(path, subset)
    result = run_demo(tmp_path / "demo", data=[path], seed=0)
    assert set(result.rmse) == {"atomistic", "AB2", "A"}
    assert all(0 < v < 1.0 for v in result.rmse.values())
    assert (tmp_path / "demo" / "parity.png").stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "demo").glob("model_*.npz")) == [
        "model_A.npz", "model_AB2.npz", "model_atomistic.npz"]
    with pytest.raises(FileExistsError):  # nothing the user wrote is overwritten without asking
        run_demo(tmp_path / "demo", data=[path], seed=0)
    assert "representation" in result.table()


def test_example_train_and_calculate():
    from conftest import run_example

    run = run_example("train_and_calculate.py", "--small", timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    rmse = float(out.strip().splitlines()[-1].split(":")[1].split()[0])
    assert 0 < rmse < 0.5
