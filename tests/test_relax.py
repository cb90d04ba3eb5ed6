"""CG relaxation on a model's energy surface (ase_cggpr.relax, `cggpr relax`): real SOAP, real models."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from ase.io import read, write
from click.testing import CliRunner
from conftest import SMALL, builtin_frames, counted_model

from ase_cggpr.calculator import CGGPRCalculator
from ase_cggpr.cli import main
from ase_cggpr.errors import CGGPRError, ModelError
from ase_cggpr.relax import relax


@pytest.fixture(scope="module")
def bound_model():
    """An AB2 model with a minimum near the relaxed nets: the ideal-linker (d) and bead-rattled (r-d) CG frames
    of all 32 built-in nets (178 frames; d-r frames carry linker-distortion energy the beads cannot see)."""
    from ase_cggpr.model import CGGPRModel

    frames = [a for a in builtin_frames("cg") if a.info["order"] in ("d", "r-d")]
    return CGGPRModel(representation="AB2", backend="featomic", **SMALL).fit(frames, label_key="e_local")


@pytest.fixture()
def rattled():
    (atoms,) = builtin_frames("cg", net="YUG", order="d")
    atoms.rattle(0.05, seed=3)
    atoms.info["name"] = "YUG-rattled"
    return atoms


def test_rattled_beads_relax_to_lower_energy(bound_model, rattled):
    start = rattled.copy()
    result = relax(rattled, bound_model, cell=False, fmax=0.01, max_steps=400)
    assert result.converged and result.max_force < 0.01 and result.max_stress is None
    assert result.energy_per_zn < result.initial_energy_per_metal - 0.05
    assert result.n_metals == 16 and 0 < result.n_steps <= 400 and result.seconds > 0
    assert np.isfinite(result.energy_std) and 0 < result.energy_std <= result.max_site_std
    assert np.array_equal(rattled.positions, start.positions)  # the input is not modified
    # the final state is what the model says: a fresh single point agrees
    check = result.atoms.copy()
    check.calc = CGGPRCalculator(bound_model)
    assert check.get_potential_energy() / 16 == pytest.approx(result.energy_per_metal, abs=1e-9)
    assert np.linalg.norm(check.get_forces(), axis=1).max() < 0.01
    assert result.atoms.info["relax_converged"] and "converged" in result.message


def test_cell_relaxation(bound_model, rattled):
    calc = CGGPRCalculator(bound_model)
    if "stress" not in calc.implemented_properties:
        pytest.skip("CGGPRCalculator has no stress yet: cell relaxation is refused (test_bad_input_is_one_clear_error)")
    rattled.set_cell(rattled.cell.array * 1.02, scale_atoms=True)
    volume = rattled.get_volume()
    result = relax(rattled, calc, cell=True, fmax=0.02, max_steps=500)
    assert result.cell_relaxed and result.converged, result.message
    assert result.max_force < 0.02 and result.max_stress < 1e-4
    assert result.energy_per_metal < result.initial_energy_per_metal
    assert result.atoms.get_volume() != pytest.approx(volume, rel=1e-4)
    check = result.atoms.copy()
    check.calc = CGGPRCalculator(bound_model)
    assert np.abs(check.get_stress()).max() < 1e-4


def test_atomistic_input_relaxes_its_beads(bound_model):
    (atoms,) = builtin_frames("atomistic", net="YUG", order="r-d", rattle="small", batch=1)
    result = relax(atoms, bound_model, cell=False, optimizer="FIRE", max_steps=30)
    assert set(result.atoms.get_chemical_symbols()) == {"Si", "O"} and len(result.atoms) == 48
    assert result.n_steps <= 30 and result.energy_per_metal < result.initial_energy_per_metal


def test_bad_input_is_one_clear_error(bound_model, small_models, rattled):
    atomistic_model = small_models["atomistic"]
    with pytest.raises(CGGPRError, match="already coarse-grained"):
        relax(rattled, atomistic_model, cell=False)
    with pytest.raises(ModelError, match="fmax"):
        relax(rattled, bound_model, fmax=-1, cell=False)
    with pytest.raises(ModelError, match="optimizer"):
        relax(rattled, bound_model, cell=False, optimizer="LBFGSX")
    calc = CGGPRCalculator(bound_model)
    if "stress" not in calc.implemented_properties:
        with pytest.raises(ModelError, match="stress"):
            relax(rattled, calc, cell=True)


def test_cli_relax_writes_structures_and_csv(bound_model, rattled, tmp_path):
    model_path = bound_model.save(tmp_path / "ab2.npz")
    write(tmp_path / "start.extxyz", rattled)
    out = tmp_path / "relaxed.extxyz"
    result = CliRunner().invoke(main, ["relax", str(model_path), str(tmp_path / "start.extxyz"), "-o", str(out),
                                       "--fixed-cell", "--max-steps", "40", "-q"])
    assert result.exit_code == 0, result.output
    (relaxed,) = read(out, ":")
    rows = list(csv.DictReader((tmp_path / "relaxed.csv").open()))
    assert [r["name"] for r in rows] == ["YUG-rattled"]
    assert list(rows[0]) == ["name", "energy_per_Zn_eV", "std", "converged", "steps", "seconds", "n_defective",
                             "n_untrusted"]
    assert rows[0]["converged"] == str(int(relaxed.info["relax_converged"])) and int(rows[0]["steps"]) <= 40
    assert float(rows[0]["energy_per_Zn_eV"]) == pytest.approx(
        relaxed.info["cggpr_energy_per_metal"], abs=1e-5)
    # bad input: one line, exit 1, no output left behind
    (tmp_path / "junk.extxyz").write_text("not a structure\n")
    bad = CliRunner().invoke(main, ["relax", str(model_path), str(tmp_path / "junk.extxyz"), "-o",
                                    str(tmp_path / "bad.extxyz"), "--fixed-cell"])
    assert bad.exit_code == 1
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "junk.extxyz" in lines[0]
    assert not (tmp_path / "bad.extxyz").exists() and not (tmp_path / "bad.csv").exists()
    if "stress" not in CGGPRCalculator(bound_model).implemented_properties:
        bad = CliRunner().invoke(main, ["relax", str(model_path), str(tmp_path / "start.extxyz"), "-o",
                                        str(tmp_path / "cell.extxyz")])
        assert bad.exit_code == 1 and "stress" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_relaxation_computes_the_std_once_for_the_final_state(bound_model, rattled):
    model, counter = counted_model(bound_model)
    calc = CGGPRCalculator(model, return_std=True)  # even a calculator asking for it on every call
    result = relax(rattled, calc, fmax=0.05, cell=False, max_steps=100)
    assert result.n_steps > 0 and counter.variance_calls == 1
    assert calc.parameters["return_std"] is True  # restored
    _, std = bound_model.predict(result.atoms, return_std=True)
    assert result.energy_std == pytest.approx(float(np.mean(std)), abs=1e-10)


def test_symmetric_relaxation_matches_the_full_one(shared_data):
    """Shipped AB2 model, idealised SBN net (10 Zn, P6_3/m, 2 Zn orbits; held out of the model's training): the
    default relaxation (in the space group, one Zn per orbit) reaches the full-space relaxation's energy and keeps
    the space group, and the full model is computed only for the start and the final check."""
    import spglib

    from ase_cggpr.dataset.nets import read_nets
    from ase_cggpr.model import CGGPRModel
    from ase_cggpr.relax import SymmetricCalculator, _symmetric_setup

    nets, _ = read_nets([shared_data / "nets" / "iza" / "SBN.cif"])
    start = nets[0].atoms.copy()
    start.info = {"name": "SBN"}
    model = CGGPRModel.load("AB2")

    def space_group(atoms):
        return spglib.get_symmetry_dataset((atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers),
                                           symprec=1e-3).number

    # the symmetric calculator's energy, forces and stress are the full calculation's on a symmetric structure
    full = CGGPRCalculator(model)
    symmetric_start = start.copy()
    constraint, symmetric = _symmetric_setup(symmetric_start, full, 1e-3)
    assert isinstance(symmetric, SymmetricCalculator) and len(symmetric.representatives) == 2
    strained = symmetric_start.copy()
    strained.set_cell(strained.cell.array * 1.03, scale_atoms=True)  # off the minimum: real forces and stress
    for calc in (full, symmetric):
        calc.calculate(strained, ["energy", "forces", "stress"])
    assert symmetric.results["energy"] == pytest.approx(full.results["energy"], abs=1e-8)
    assert np.abs(full.results["forces"]).max() > 1e-3
    assert np.allclose(symmetric.results["forces"], full.results["forces"], atol=1e-6)
    assert np.allclose(symmetric.results["stress"], full.results["stress"], atol=1e-8)

    results, calls = {}, {}
    for symmetry in (True, False):
        calc = CGGPRCalculator(model)
        count, original = [0], calc.calculate

        def counting(*args, _count=count, _original=original, **kwargs):
            _count[0] += 1
            return _original(*args, **kwargs)

        calc.calculate = counting
        results[symmetry] = relax(start, calc, symmetry=symmetry)
        calls[symmetry] = count[0]
    sym, plain = results[True], results[False]
    assert sym.converged and plain.converged and sym.n_steps > 5
    assert sym.energy_per_metal == pytest.approx(plain.energy_per_metal, abs=1e-3)
    assert sym.energy_per_metal < sym.initial_energy_per_metal - 0.01
    assert calls[True] <= 4 < sym.n_steps <= calls[False]
    assert space_group(sym.atoms) == space_group(start) == 176
    assert not sym.atoms.constraints  # the symmetry constraint is not left on the result


def test_reduced_coordinates_gradient_is_the_energy_derivative(shared_data):
    """Shipped AB2 model, idealised SBN net strained off its minimum: the gradient of the energy in the space
    group's reduced coordinates (positions and cell, ReducedCoordinates, from the symmetric calculator's forces and
    stress) equals central differences of the full model's energy, and every reduced displacement keeps the
    space group (same spglib number)."""
    import spglib

    from ase_cggpr.dataset.nets import read_nets
    from ase_cggpr.model import CGGPRModel
    from ase_cggpr.relax import ReducedCoordinates, _symmetric_setup, positions_basis, strain_basis

    nets, _ = read_nets([shared_data / "nets" / "iza" / "SBN.cif"])
    atoms = nets[0].atoms.copy()
    atoms.info = {"name": "SBN"}
    atoms.set_cell(atoms.cell.array * 1.03, scale_atoms=True)
    full = CGGPRCalculator(CGGPRModel.load("AB2"))
    constraint, symmetric = _symmetric_setup(atoms, full, 1e-3)
    problem = ReducedCoordinates(atoms, symmetric, positions_basis(atoms, constraint),
                                 strain_basis(atoms, constraint))
    assert problem.size == 10 and problem.S.shape == (9, 2)  # P6_3/m: 8 position and 2 cell coordinates
    rng = np.random.default_rng(0)
    q = 0.05 * rng.standard_normal(problem.size)
    _, gradient, _, stress = problem.evaluate(q)
    assert np.abs(gradient).max() > 1e-2 and np.abs(stress).max() > 1e-5  # off the minimum

    def energy(x):
        problem.evaluate(x)
        return full.get_potential_energy(problem.atoms)

    h = 1e-4
    numerical = [(energy(q + h * e) - energy(q - h * e)) / (2 * h) for e in np.eye(problem.size)]
    assert np.allclose(gradient, numerical, atol=2e-4 * np.abs(gradient).max())
    moved = problem.atoms
    number = spglib.get_symmetry_dataset((moved.cell[:], moved.get_scaled_positions(), moved.numbers),
                                         symprec=1e-3).number
    assert number == 176


def test_symmetric_relaxation_writes_its_trajectory_and_log(shared_data, tmp_path):
    """The reduced-coordinate phase writes the trajectory (one frame per step and the start, energies, forces and
    stress of the symmetric structure) and the log the options ask for, as ASE's optimisers do."""
    from ase_cggpr.dataset.nets import read_nets

    nets, _ = read_nets([shared_data / "nets" / "iza" / "SBN.cif"])
    start = nets[0].atoms.copy()
    start.info = {"name": "SBN"}
    result = relax(start, "AB2", fmax=0.05, trajectory=tmp_path / "sbn.traj", logfile=str(tmp_path / "sbn.log"))
    assert result.converged and 0 < result.n_steps < 30
    frames = read(tmp_path / "sbn.traj", ":")
    assert len(frames) == result.n_steps + 1
    energies = [f.get_potential_energy() / 10 for f in frames]
    assert energies[0] == pytest.approx(result.initial_energy_per_metal, abs=1e-6)
    assert energies[-1] == pytest.approx(result.energy_per_metal, abs=1e-5) and energies[-1] < energies[0] - 0.01
    assert frames[-1].get_stress().shape == (6,)
    assert len((tmp_path / "sbn.log").read_text().splitlines()) == result.n_steps + 1
