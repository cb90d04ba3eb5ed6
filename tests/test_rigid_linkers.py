"""RigidLinkers: atomistic ZIFs relaxed and run with MD on the shipped coarse-grained models with plain ASE.

Real shipped models (ase_cggpr/models), real ZIF CIFs (ase_cggpr/data/real_zifs), real ASE optimisers, filters
and integrators. Issue 28 item 3: without the constraint the H atoms feel no force and a linker breaks.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.filters import FrechetCellFilter
from ase.io import read
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS, FIRE, LBFGS

from ase_cggpr import CGGPRCalculator, RigidLinkers, find_connectivity
from ase_cggpr.errors import ModelError, StructureError
from ase_cggpr.relax import relax

REAL = Path(__file__).resolve().parents[1] / "ase_cggpr" / "data" / "real_zifs"

pytestmark = pytest.mark.filterwarnings("ignore:logm result may be inaccurate", "ignore:crystal system",
                                      "ignore:Use thermalize_momenta")  # ASE 3.29; ase>=3.23 is supported


@pytest.fixture(scope="module")
def calculators():
    """One calculator per shipped CG model (loading a model costs more than a step)."""
    return {name: CGGPRCalculator(name) for name in ("AB2", "A")}


def zif(name: str) -> Atoms:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ASE: "crystal system 'triclinic' is not interpreted for P1"
        return read(REAL / f"{name}.cif")


def linker_distances(atoms: Atoms, linkers) -> list[np.ndarray]:
    everything = atoms.get_all_distances(mic=True)
    return [everything[np.ix_(x, x)] for x in linkers]


def assert_linkers_intact(atoms: Atoms, connectivity, start: list[np.ndarray]) -> None:
    now = linker_distances(atoms, connectivity.linkers)
    worst = max(np.abs(a - b).max() for a, b in zip(now, start, strict=True))
    assert worst < 1e-6, f"a linker changed shape by {worst:.2e} Å"
    again = find_connectivity(atoms)  # still a ZIF with the same linkers
    assert [x.tolist() for x in again.linkers] == [x.tolist() for x in connectivity.linkers]


def constrained(name: str, model: str, calculators) -> tuple[Atoms, object, list[np.ndarray]]:
    atoms = zif(name)
    connectivity = find_connectivity(atoms)
    atoms.calc = calculators[model]
    atoms.set_constraint(RigidLinkers(atoms, model))
    return atoms, connectivity, linker_distances(atoms, connectivity.linkers)


def bead_forces(atoms: Atoms, connectivity) -> np.ndarray:
    """Metal forces and each linker's total force (eV/Å) from the calculator's raw forces."""
    forces = atoms.get_forces(apply_constraint=False)
    return np.vstack([forces[connectivity.metal_indices]] + [forces[x].sum(axis=0)[None] for x in connectivity.linkers])


def test_issue_run_zif4_cell_relaxation_keeps_linkers(calculators):
    """The issue's run, verbatim: BFGS(FrechetCellFilter(atoms)).run(fmax=0.05) on ZIF-4 with the AB2 model."""
    atoms, connectivity, start = constrained("ZIF4", "AB2", calculators)
    e0 = atoms.get_potential_energy()
    cell, stress = atoms.cell.copy(), np.abs(atoms.get_stress()).max()
    assert BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.05, steps=300)
    assert_linkers_intact(atoms, connectivity, start)
    # n12/l6 AB2 (issue 29): 0.207 -> 0.170 eV per Zn (MOF-FF's relaxed ZIF-4: 0.224 above zni); the n16/l8
    # model went 0.26 -> ~0.05, so this bound was 0.1 eV per Zn before
    assert atoms.get_potential_energy() < e0 - 16 * 0.02
    # the cell did relax (the n16/l8 model changed the volume by > 1%; the n12/l6 one's ZIF-4 cell is within 0.04% of
    # its minimum volume, so the check is that the cell moved and its stress fell)
    assert not np.allclose(atoms.cell, cell, atol=1e-3)
    assert np.abs(atoms.get_stress()).max() < stress


@pytest.mark.parametrize("name", ["ZIF8_H"])
def test_ab2_relaxation_reaches_the_energy_of_ase_cggpr_relax(calculators, name):
    atoms, connectivity, start = constrained(name, "AB2", calculators)
    n = connectivity.n_metals
    opt = BFGS(FrechetCellFilter(atoms), logfile=None)
    criterion = 0.01
    while opt.get_number_of_steps() < 400:  # relax's own check: bead forces < 0.01 eV/Å, |stress| < 1e-4 eV/Å^3
        if np.linalg.norm(bead_forces(atoms, connectivity), axis=1).max() < 0.01 \
                and np.abs(atoms.get_stress()).max() < 1e-4:
            break
        opt.run(fmax=criterion, steps=400 - opt.get_number_of_steps())
        criterion *= 0.5
    assert np.linalg.norm(bead_forces(atoms, connectivity), axis=1).max() < 0.01
    assert np.abs(atoms.get_stress()).max() < 1e-4
    assert_linkers_intact(atoms, connectivity, start)
    reference = relax(zif(name), calculators["AB2"], fmax=0.01)
    assert reference.converged
    assert atoms.get_potential_energy() / n == pytest.approx(reference.energy_per_metal, abs=1e-3)
    # the rigid linkers' ring centroids are where relax put the B beads (same net, same cell to ~0.05 Å)
    assert np.allclose(atoms.cell.cellpar()[:3], reference.atoms.cell.cellpar()[:3], atol=0.1)


def test_a_model_relaxation_keeps_linkers_on_their_metals(calculators):
    atoms, connectivity, start = constrained("ZIF8_H", "A", calculators)
    metals = connectivity.metal_indices[connectivity.linker_metals]

    def midpoint_offsets() -> np.ndarray:
        """Per linker, the sum of the vectors from its first ring atom to its two metals: twice the offset of
        the metals' midpoint from that atom, constant when the rigid linker follows the midpoint."""
        return np.array([atoms.get_distances(ring[0], pair, mic=True, vector=True).sum(axis=0)
                         for ring, pair in zip(connectivity.rings, metals, strict=True)])

    offsets = midpoint_offsets()
    e0 = atoms.get_potential_energy()
    assert BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.01, steps=400)
    assert_linkers_intact(atoms, connectivity, start)
    assert np.abs(midpoint_offsets() - offsets).max() < 1e-9
    assert atoms.get_potential_energy() < e0
    raw = atoms.get_forces(apply_constraint=False)
    assert np.abs(raw[np.concatenate(connectivity.linkers)]).max() == 0.0  # the A energy ignores linkers
    assert np.linalg.norm(raw[connectivity.metal_indices], axis=1).max() < 0.01


@pytest.mark.parametrize("optimizer", [FIRE, LBFGS])
def test_other_optimisers_keep_linkers(calculators, optimizer):
    atoms, connectivity, start = constrained("ZIF8_H", "AB2", calculators)
    e0 = atoms.get_potential_energy()
    optimizer(atoms, logfile=None).run(fmax=0.01, steps=15)
    assert_linkers_intact(atoms, connectivity, start)
    assert atoms.get_potential_energy() < e0


def test_forces_are_the_gradient_along_rigid_linker_moves(calculators):
    """Each linker's constrained forces sum to its bead force, and that is -dE/d(translation) (finite difference)."""
    atoms, connectivity, _ = constrained("ZIF8_H", "AB2", calculators)
    forces = atoms.get_forces()
    raw = atoms.get_forces(apply_constraint=False)
    masses = atoms.get_masses()
    for linker in connectivity.linkers:
        assert np.allclose(forces[linker].sum(0), raw[linker].sum(0), atol=1e-12)
        assert np.allclose(forces[linker] / masses[linker, None], forces[linker[0]] / masses[linker[0]])
    linker, h = connectivity.linkers[3], 1e-3
    energies = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.calc = calculators["AB2"]
        positions = moved.get_positions()
        positions[linker] += sign * h * np.array([1.0, 0, 0])
        moved.set_positions(positions)
        energies.append(moved.get_potential_energy())
    assert (energies[1] - energies[0]) / (2 * h) == pytest.approx(forces[linker, 0].sum(), rel=2e-3, abs=2e-4)


def test_langevin_200_steps_ab2(calculators):
    atoms, connectivity, start = constrained("ZIF8_H", "AB2", calculators)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(1))
    md = Langevin(atoms, 1.0 * units.fs, temperature_K=300, friction=0.02 / units.fs, fixcm=False,
                  rng=np.random.default_rng(2))
    energies, temperatures = [], []
    md.attach(lambda: (energies.append(atoms.get_potential_energy()), temperatures.append(atoms.get_temperature())),
              interval=10)
    md.run(200)
    assert np.isfinite(energies).all() and len(energies) == 21
    assert_linkers_intact(atoms, connectivity, start)
    velocities = atoms.get_velocities()
    for linker in connectivity.linkers:  # each linker moves as one body
        assert np.allclose(velocities[linker], velocities[linker[0]], atol=1e-12)
    # the thermostat holds it near 300 K (6 metals + 12 rigid linkers: 54 degrees of freedom, wide fluctuations)
    assert atoms.get_number_of_degrees_of_freedom() == 3 * (6 + 12)
    assert 150 < np.mean(temperatures[5:]) < 450


def test_velocity_verlet_conserves_energy(calculators):
    """NVE with rigid linkers of the linker's mass: the total energy is conserved (the dynamics is consistent)."""
    atoms, connectivity, start = constrained("ZIF8_H", "AB2", calculators)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(3))
    md = VelocityVerlet(atoms, 0.5 * units.fs)
    total = []
    md.attach(lambda: total.append(atoms.get_potential_energy() + atoms.get_kinetic_energy()), interval=5)
    md.run(60)
    kinetic = 0.5 * 3 * 18 * units.kB * 300
    assert np.ptp(total) < 0.05 * kinetic
    assert_linkers_intact(atoms, connectivity, start)


def test_a_model_md_linkers_follow_massless(calculators):
    atoms, connectivity, start = constrained("ZIF8_H", "A", calculators)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(1))
    md = Langevin(atoms, 1.0 * units.fs, temperature_K=300, friction=0.02 / units.fs, fixcm=False,
                  rng=np.random.default_rng(2))
    md.run(20)
    assert np.isfinite(atoms.get_potential_energy())
    assert_linkers_intact(atoms, connectivity, start)
    assert np.abs(atoms.get_momenta()[np.concatenate(connectivity.linkers)]).max() == 0.0
    assert atoms.get_number_of_degrees_of_freedom() == 3 * 6


def test_ase_bookkeeping(tmp_path, calculators):
    atoms, connectivity, _ = constrained("ZIF8_H", "AB2", calculators)
    constraint = atoms.constraints[0]
    for twin in (atoms.copy(), Atoms(atoms)):
        assert isinstance(twin.constraints[0], RigidLinkers) and twin.constraints[0] is not constraint
    # a trajectory written with the constraint is readable (ASE reads back only its own constraints: omitted)
    path = tmp_path / "run.traj"
    BFGS(atoms, logfile=None, trajectory=str(path)).run(fmax=0.01, steps=2)
    frames = read(path, ":")
    assert len(frames) == 3 and frames[-1].constraints == []
    assert np.allclose(frames[-1].positions, atoms.positions)
    # a selection keeps the whole linkers, renumbered
    rest = np.setdiff1d(np.arange(len(atoms)), connectivity.linkers[0])
    part = atoms[rest]
    kept = part.constraints[0].linkers
    assert len(kept) == len(connectivity.linkers) - 1
    assert [part.symbols[x].get_chemical_formula() for x in kept] == ["C3H3N2"] * len(kept)
    # a random move of every atom leaves each linker's shape unchanged, the atoms near where they were moved
    before = linker_distances(atoms, connectivity.linkers)
    positions = atoms.get_positions() + np.random.default_rng(0).normal(scale=0.05, size=(len(atoms), 3))
    atoms.set_positions(positions)
    now = linker_distances(atoms, connectivity.linkers)
    assert max(np.abs(a - b).max() for a, b in zip(now, before, strict=True)) < 1e-9
    assert np.abs(atoms.positions - positions).max() < 0.3
    # a repeat is refused with the way out (ASE's own constraints that cannot be repeated do the same)
    with pytest.raises(NotImplementedError, match="repeat, then attach"):
        atoms.repeat((2, 1, 1))


def test_warning_without_the_constraint_and_bad_input(calculators):
    atoms = zif("ZIF8_H")
    atoms.calc = CGGPRCalculator("AB2")
    with pytest.warns(UserWarning, match=r"RigidLinkers\(atoms, 'AB2'\)"):
        atoms.get_forces()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atoms.get_forces()  # once per calculator
        constrained("ZIF8_H", "AB2", calculators)[0].get_forces()
    cell_filter_first = zif("ZIF8_H")  # the issue's run: FrechetCellFilter asks for the stress first
    cell_filter_first.calc = CGGPRCalculator("AB2")
    with pytest.warns(UserWarning, match="breaks the linkers"):
        BFGS(FrechetCellFilter(cell_filter_first), logfile=None).run(fmax=0.05, steps=1)
    with pytest.raises(ModelError, match="atomistic model"):
        RigidLinkers(atoms, "atomistic")
    with pytest.raises(ModelError, match="give the model"):
        RigidLinkers(zif("ZIF8_H"))
    from ase_cggpr import coarse_grain

    with pytest.raises(StructureError, match="already coarse-grained"):
        RigidLinkers(coarse_grain(atoms, "AB2").structure, "AB2")
    assert RigidLinkers(atoms).representation == "AB2"  # from the attached calculator
