"""The built-in dataset and the core example: these run without ../shared (the demo: test_demo.py)."""

import numpy as np
import pytest
from conftest import builtin_frames

from ase_cggpr import coarse_grain, local_energies
from ase_cggpr.io import default_dataset_path


@pytest.fixture(scope="module")
def default_frames():
    assert default_dataset_path("atomistic").name == "default_atomistic.extxyz.gz"
    return builtin_frames("atomistic"), builtin_frames("cg")  # read once per session (conftest)


def test_default_dataset_is_self_consistent(default_frames):
    atomistic, cg = default_frames
    assert len(atomistic) == len(cg) > 100
    for atoms, beads in list(zip(atomistic, cg, strict=True))[::25]:
        e_local = local_energies(atoms, label_key="energies")
        zn = atoms.symbols == "Zn"
        assert np.abs(e_local - atoms.arrays["e_local"][zn]).max() < 1e-6
        assert np.abs(e_local - local_energies(beads, label_key="e_local")).max() < 1e-6
        assert e_local.max() <= 1.0  # the paper's filter on raw MOF-FF local energies
        mine = coarse_grain(atoms, "AB2").structure
        assert np.abs(mine.cell.cellpar() - beads.cell.cellpar()).max() < 1e-6
        assert mine.get_chemical_formula() == beads.get_chemical_formula()
    assert len({a.info["structure_id"] for a in atomistic}) >= 30
    assert {a.info["rattle"] for a in atomistic} >= {"none", "small", "medium", "large"}


def test_example_train_and_calculate():
    from conftest import run_example

    run = run_example("train_and_calculate.py", "--small", timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    rmse = float(out.strip().splitlines()[-1].split(":")[1].split()[0])
    assert 0 < rmse < 0.5
