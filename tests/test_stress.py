"""Stress: the strain derivative of the learned energy, (1/V) dE/d(eps), in every representation.

Checked against central finite differences of the energy under symmetric strain (ASE's convention: Voigt
xx yy zz yz xz xy, eV/Å^3), against the quippy backend, and in cell relaxations with
``ase.filters.FrechetCellFilter`` + ``ase.optimize.BFGS``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase.constraints import FixAtoms
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS
from conftest import SMALL, net_frames

from ase_cggpr import CGGPRCalculator
from ase_cggpr.model import CGGPRModel

STEP = 1e-5
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def strained(atoms, eps):
    """A copy of ``atoms`` with positions and cell deformed by ``1 + eps``."""
    out = atoms.copy()
    out.calc = None
    deformation = np.eye(3) + eps
    out.set_cell(np.asarray(atoms.cell) @ deformation.T, scale_atoms=False)
    out.positions = atoms.positions @ deformation.T
    return out


def numerical_stress(model, atoms, step=STEP):
    """Central differences of the energy under symmetric strain, over the volume (ASE's convention)."""
    out = np.empty(6)
    for k, (i, j) in enumerate(VOIGT):
        eps = np.zeros((3, 3))
        eps[i, j] = eps[j, i] = step if i == j else step / 2
        plus, minus = model.compute(strained(atoms, eps)).energy, model.compute(strained(atoms, -eps)).energy
        out[k] = (plus - minus) / (2 * step) / atoms.get_volume()
    return out


@pytest.mark.parametrize("representation", ["atomistic", "AB2", "A"])
def test_stress_matches_finite_differences(small_models, representation):
    model = small_models[representation]
    atoms = net_frames("atomistic")[2]
    prediction = model.compute(atoms, forces=True, stress=True)
    assert prediction.stress.shape == (6,)
    assert np.abs(prediction.stress).max() > 1e-4  # a real, non-trivial stress
    np.testing.assert_allclose(prediction.stress, numerical_stress(model, atoms), rtol=0, atol=1e-5)
    # the energy and forces are those without stress
    plain = model.compute(atoms, forces=True)
    np.testing.assert_array_equal(prediction.local_energies, plain.local_energies)
    np.testing.assert_array_equal(prediction.forces, plain.forces)
    # stress alone (no forces asked) is the same stress
    np.testing.assert_array_equal(model.compute(atoms, stress=True).stress, prediction.stress)


def test_stress_of_coarse_grained_input(small_models):
    """Bead input (Si/O) gets the stress of its own cell, matching finite differences."""
    model = small_models["AB2"]
    beads = net_frames("cg")[2]
    stress = model.compute(beads, stress=True).stress
    np.testing.assert_allclose(stress, numerical_stress(model, beads), rtol=0, atol=1e-5)


def test_calculator_stress(small_models):
    atoms = net_frames("atomistic")[2]
    assert "stress" in CGGPRCalculator.implemented_properties
    atoms.calc = CGGPRCalculator(small_models["AB2"], return_std=False)
    stress = atoms.get_stress()
    np.testing.assert_array_equal(stress, small_models["AB2"].compute(atoms, stress=True).stress)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), atoms.get_stress(voigt=False).T)
    assert "forces" in atoms.calc.results  # computed in the same call
    assert atoms.get_potential_energy() == pytest.approx(small_models["AB2"].compute(atoms).energy)
    # once asked for the stress, a force evaluation brings it along (one model call per cell-filter step)
    atoms.positions[0] += 0.01
    forces = atoms.get_forces()
    assert "stress" in atoms.calc.results
    reference = small_models["AB2"].compute(atoms, forces=True, stress=True)
    np.testing.assert_array_equal(forces, reference.forces)
    np.testing.assert_array_equal(atoms.calc.results["stress"], reference.stress)


def test_quippy_stress_equals_featomic(small_models):
    pytest.importorskip("quippy")
    model = small_models["AB2"]
    atoms = net_frames("atomistic")[2]
    featomic = model.compute(atoms, stress=True, forces=True)
    quippy = model.compute(atoms, stress=True, forces=True, descriptor_backend="quippy")
    np.testing.assert_allclose(quippy.stress, featomic.stress, rtol=0, atol=1e-9)


def _toy_model(representation):
    """A model whose learned energy has its minimum at the ideal cell: trained on the ideal YUG frame scaled
    by 0.97..1.03 with a per-Zn energy 50 (s - 1)^2 eV."""
    base = net_frames("atomistic")[0]
    frames = []
    for s in (0.97, 0.985, 1.0, 1.015, 1.03):
        atoms = base.copy()
        atoms.calc = None
        atoms.set_cell(atoms.cell * s, scale_atoms=True)
        energies = np.zeros(len(atoms))
        energies[atoms.numbers == 30] = 50.0 * (s - 1.0) ** 2
        atoms.arrays["e_toy"] = energies
        frames.append(atoms)
    hypers = dict(SMALL, n_max=5, cutoff=5.0) if representation == "atomistic" else SMALL
    return CGGPRModel(representation=representation, backend="featomic", **hypers).fit(frames, label_key="e_toy"), base


@pytest.mark.parametrize("representation", ["AB2", "atomistic"])
def test_frechet_cell_relaxation_reaches_zero_pressure(representation):
    """BFGS on FrechetCellFilter (hydrostatic, atoms following the cell) takes a cell expanded by 2% back to
    zero pressure, lowering the energy and shrinking the cell."""
    model, base = _toy_model(representation)
    atoms = base.copy()
    atoms.calc = None
    atoms.set_cell(atoms.cell * 1.02, scale_atoms=True)
    atoms.calc = CGGPRCalculator(model, return_std=False)
    atoms.set_constraint(FixAtoms(indices=range(len(atoms))))
    e0, p0 = atoms.get_potential_energy(), -np.mean(atoms.get_stress()[:3])
    assert p0 < -5e-4  # stretched: tensile stress
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's logm accuracy notes
        optimizer = BFGS(FrechetCellFilter(atoms, hydrostatic_strain=True, exp_cell_factor=1.0), logfile=None)
        assert optimizer.run(fmax=0.05, steps=20)
    assert atoms.get_potential_energy() < e0 - 0.1
    assert abs(np.mean(atoms.get_stress()[:3])) < 2e-5
    scale = np.cbrt(atoms.get_volume() / base.get_volume())
    assert scale < 1.015


def test_frechet_cell_filter_full_relaxation_lowers_energy(small_models):
    """All cell and bead degrees of freedom of coarse-grained input: a few BFGS steps lower the energy."""
    beads = net_frames("cg")[2]
    beads.calc = CGGPRCalculator(small_models["AB2"], return_std=False)
    e0, s0 = beads.get_potential_energy(), np.abs(beads.get_stress()).max()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        BFGS(FrechetCellFilter(beads), logfile=None, maxstep=0.05).run(fmax=0.01, steps=8)
    assert beads.get_potential_energy() < e0
    assert np.abs(beads.get_stress()).max() < s0
