"""Defective networks (issue 28 item 4): a Zn with 3 or 5 N, a dangling linker. Prediction flags them instead of
refusing the structure: every site is predicted, the defective sites and those with a defect within the model's
cutoff are named untrusted, and the trusted sites get exactly the prediction of the perfect network.

Real structures: the shipped ZIF-4 (cag, 16 Zn, 272 atoms) with one linker removed, or one linker added (bound to
one Zn, which becomes 5-coordinated, and dangling); its 2x2x2 supercell (128 Zn) for the comparison with the
perfect network. Real shipped models, real SOAP.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.geometry import get_distances
from ase.io import read, write
from click.testing import CliRunner
from scipy.spatial.transform import Rotation

import ase_cggpr
from ase_cggpr.beads import coarse_grain, find_connectivity
from ase_cggpr.calculator import CGGPRCalculator
from ase_cggpr.cli import main
from ase_cggpr.errors import DefectWarning, StructureError
from ase_cggpr.model import CGGPRModel
from ase_cggpr.relax import relax
from ase_cggpr.screening import screen, screen_to_csv

ZIF4 = Path(ase_cggpr.__file__).parent / "data" / "real_zifs" / "ZIF4.cif"
#: Rotation (quaternion x, y, z, w) of a copy of linker 0 about the first Zn it binds: its donor N stays 2.0 Å
#: from that Zn, its other N is more than 2.6 Å from every metal, and every new atom is at least 1.85 Å from
#: every old one (found by a search over random rotations; asserted below).
ADDED_ROTATION = [-0.19260605199742747, 0.7514456824716454, -0.5351573616372206, 0.33442322484267784]


def _cell() -> Atoms:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms = read(ZIF4)
    atoms.info["name"] = "ZIF-4"
    return atoms


def _removed(atoms: Atoms) -> Atoms:
    """``atoms`` without linker 0 (its two Zn become 3-coordinated)."""
    out = atoms.copy()
    del out[find_connectivity(atoms).linkers[0].tolist()]
    out.info["name"] = atoms.info["name"] + " - linker"
    return out


def _extra_linker(cell: Atoms) -> Atoms:
    """The atoms of one extra linker for ``cell``: bound to one Zn (5-coordinated) and dangling."""
    top = find_connectivity(cell)
    metal = top.metal_indices[top.linker_metals[0, 0]]
    linker = top.linkers[0]
    zn = cell.positions[metal]
    vectors, _ = get_distances(zn, cell.positions[linker], cell=cell.cell, pbc=True)
    new = zn + vectors[0] @ Rotation.from_quat(ADDED_ROTATION).as_matrix().T
    symbols = np.array(cell.get_chemical_symbols())[linker]
    _, d = get_distances(new, np.delete(cell.positions, metal, axis=0), cell=cell.cell, pbc=True)
    assert d.min() > 1.85
    _, to_metals = get_distances(new[symbols == "N"], cell.positions[top.metal_indices], cell=cell.cell, pbc=True)
    assert np.count_nonzero(to_metals < 2.6) == 1
    return Atoms(symbols.tolist(), positions=new)


def _added(atoms: Atoms, cell: Atoms) -> Atoms:
    out = atoms + _extra_linker(cell)  # the first len(cell) atoms of a repeat are the cell's own
    out.info["name"] = atoms.info["name"] + " + linker"
    return out


@pytest.fixture(scope="module")
def cell() -> Atoms:
    return _cell()


@pytest.fixture(scope="module")
def supercell(cell) -> Atoms:
    out = cell.repeat(2)
    out.info["name"] = "ZIF-4 2x2x2"
    return out


@pytest.fixture(scope="module")
def ab2() -> CGGPRModel:
    return CGGPRModel.load("AB2")


def test_defects_are_refused_by_default_and_named_when_flagged(cell):
    removed, added = _removed(cell), _added(cell, cell)
    with pytest.raises(StructureError, match=r"wrong metal coordination.*3 N neighbours"):
        find_connectivity(removed)
    with pytest.raises(StructureError, match=r"wrong metal coordination.*5 N neighbours"):
        find_connectivity(added)
    perfect = find_connectivity(cell)
    pair = sorted(perfect.linker_metals[0].tolist())
    top = find_connectivity(removed, defects="flag")
    assert top.defects.defective_metals.tolist() == pair
    assert top.defects.metal_reasons == ("3 linker bonds", "3 linker bonds")
    assert top.defects.metal_coordination.tolist().count(4) == 14 and not len(top.defects.defective_linkers)
    top = find_connectivity(added, defects="flag")
    zn = perfect.linker_metals[0, 0]
    assert top.defects.defective_metals.tolist() == [zn]
    extra = len(perfect.linkers)  # the added linker comes last
    assert top.defects.metal_reasons[0] == f"5 linker bonds; binds linker {extra}, which bridges 1 metal(s)"
    assert top.defects.defective_linkers.tolist() == [len(perfect.linkers)]
    assert top.linker_metals[-1].tolist() == [zn, -1]
    # the bead forms: the same sites flagged, the same refusal without the flag
    for structure, expected in ((removed, pair), (added, [zn])):
        beads = coarse_grain(structure, "AB2", connectivity=find_connectivity(structure, defects="flag")).structure
        with pytest.raises(StructureError, match="needs 4 B beads|exactly 2 A sites|clearly nearer"):
            find_connectivity(beads)
        assert find_connectivity(beads, defects="flag").defects.defective_metals.tolist() == expected
    assert find_connectivity(cell, defects="flag").defects is None  # a perfect network has no report


def test_a_network_without_any_well_formed_metal_is_still_refused(cell):
    beads = coarse_grain(cell, "AB2").structure
    bare = beads[beads.symbols == "Si"]  # A beads only: no metal has a linker
    with pytest.raises(StructureError, match="not a ZIF network: none of its 16 metal sites"):
        find_connectivity(bare, defects="flag")


@pytest.mark.parametrize("representation", ["AB2", "atomistic"])
def test_trusted_sites_equal_the_perfect_network(supercell, cell, representation):
    """Every site is predicted; the trusted ones get exactly the perfect supercell's local energies; every site
    whose energy the defect changed is untrusted; the totals say what they sum."""
    model = CGGPRModel.load(representation)
    perfect = model.compute(supercell, return_std=True)
    assert perfect.trust.all_trusted
    for structure, n_defective in ((_removed(supercell), 2), (_added(supercell, cell), 1)):
        with pytest.raises(StructureError, match="wrong metal coordination"):
            model.compute(structure, defects="refuse")
        p = model.compute(structure, return_std=True)
        trust = p.trust
        assert p.local_energies.shape == (128,) and np.isfinite(p.local_energies).all() and np.isfinite(p.std).all()
        assert trust.n_defective == n_defective and 0 < len(trust.affected) < 128 - n_defective
        assert set(trust.defective) | set(trust.affected) == set(np.flatnonzero(~trust.trusted))
        changed = np.abs(p.local_energies - perfect.local_energies) > 1e-9
        assert changed.any() and not (changed & trust.trusted).any()  # the mask is conservative
        np.testing.assert_allclose(p.local_energies[trust.trusted], perfect.local_energies[trust.trusted],
                                   rtol=0, atol=1e-10)
        assert changed[trust.affected].any()  # flagged neighbours do differ: the flag is not cosmetic
        assert p.energy == pytest.approx(p.local_energies.sum(), abs=1e-9)
        assert p.energy_trusted == pytest.approx(p.local_energies[trust.trusted].sum(), abs=1e-9)
        assert all(trust.reasons[k] for k in np.flatnonzero(~trust.trusted))
        assert all(not trust.reasons[k] for k in np.flatnonzero(trust.trusted))
        assert f"{trust.n_defective} of 128 metal sites defective" in trust.summary()
        if representation == "AB2":  # the bead form of the same structure: same energies, same flags
            beads = coarse_grain(structure, "AB2", connectivity=find_connectivity(structure, defects="flag")).structure
            q = model.compute(beads)
            np.testing.assert_allclose(q.local_energies, p.local_energies, rtol=0, atol=1e-9)
            assert np.array_equal(q.trust.trusted, trust.trusted)


def test_calculator_flags_by_default_and_refuses_on_request(cell, ab2):
    atoms = _removed(cell)
    calc = CGGPRCalculator(ab2)
    atoms.calc = calc
    with pytest.warns(DefectWarning, match=r"ZIF-4 - linker': 2 of 16 metal sites defective \(Zn \d+ \(3 linker"):
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
    assert forces.shape == (len(atoms), 3) and np.isfinite(forces).all()
    trusted = calc.get_property("site_trusted", atoms)
    assert trusted.dtype == bool and trusted.shape == (16,) and np.array_equal(trusted, calc.site_trust.trusted)
    assert energy == pytest.approx(calc.results["local_energies"].sum(), abs=1e-9)
    calc.set(defects="refuse")  # the cached (flagged) mapping is not reused under the other mode
    with pytest.raises(StructureError, match="wrong metal coordination"):
        atoms.get_potential_energy()
    atoms.calc = CGGPRCalculator(ab2, defects="refuse")
    with pytest.raises(StructureError, match="wrong metal coordination"):
        atoms.get_potential_energy()


def test_screen_counts_defects_and_never_trusts_them(cell, ab2, tmp_path):
    structures = [cell, _removed(cell), _added(cell, cell)]
    output = tmp_path / "rank.csv"
    screen_to_csv(ab2, structures, output, threshold=10.0, workers=1)
    with open(output) as handle:
        rows = {r["id"]: r for r in csv.DictReader(handle)}
    assert rows["ZIF-4"]["rank"] == "1" and rows["ZIF-4"]["trusted"] == "True"
    assert rows["ZIF-4"]["n_defective_Zn"] == rows["ZIF-4"]["n_untrusted_Zn"] == "0"
    for name, n_defective in (("ZIF-4 - linker", 2), ("ZIF-4 + linker", 1)):
        row = rows[name]
        assert not row["error"] and row["rank"] == "" and row["trusted"] == "False"
        assert int(row["n_defective_Zn"]) == n_defective and int(row["n_untrusted_Zn"]) >= n_defective
        assert np.isfinite(float(row["energy_per_Zn_eV"]))
    refused = {r.id: r for r in screen(ab2, structures, threshold=10.0, defects="refuse").rows}
    assert not refused["ZIF-4"].error
    assert "wrong metal coordination" in refused["ZIF-4 - linker"].error


def test_cli_predict_names_the_defective_sites(cell, tmp_path):
    removed = _removed(cell)
    source = tmp_path / "removed.extxyz"
    write(source, removed)
    out = tmp_path / "predicted.extxyz"
    result = CliRunner().invoke(main, ["predict", "AB2", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 of 16 metal sites defective" in result.stderr
    predicted = read(out)
    state = predicted.arrays["cggpr_site_state"]
    pair = find_connectivity(removed, defects="flag").defects.defective_metals
    is_zn = np.array(predicted.get_chemical_symbols()) == "Zn"
    metals = np.flatnonzero(is_zn)
    assert state[metals[pair]].tolist() == [2, 2] and (state[~is_zn] == -1).all()
    assert predicted.info["cggpr_n_defective"] == 2
    energies = predicted.arrays["cggpr_local_energy"][metals]
    assert predicted.info["cggpr_energy"] == pytest.approx(energies.sum())
    assert predicted.info["cggpr_energy_trusted"] == pytest.approx(energies[state[metals] == 0].sum())
    refused = CliRunner().invoke(main, ["predict", "AB2", str(source), "--defects", "refuse"])
    assert refused.exit_code == 1
    assert "wrong metal coordination" in refused.output and "Traceback" not in refused.output
    # coarse-graining then predicting the beads: the same energies, the same defective sites
    beads = tmp_path / "beads.extxyz"
    result = CliRunner().invoke(main, ["coarse-grain", str(source), "-o", str(beads)])
    assert result.exit_code == 0, result.output
    assert "2 defective metal site(s)" in result.stderr
    out_beads = tmp_path / "predicted_beads.extxyz"
    result = CliRunner().invoke(main, ["predict", "AB2", str(beads), "-o", str(out_beads), "-q"])
    assert result.exit_code == 0, result.output
    from_beads = read(out_beads)
    # (the extxyz files round positions to 1e-8 Å)
    np.testing.assert_allclose(from_beads.arrays["cggpr_local_energy"][:16], energies, rtol=0, atol=1e-6)
    assert from_beads.arrays["cggpr_site_state"][:16].tolist() == state[metals].tolist()


def test_relax_a_defective_network(cell, ab2):
    removed = _removed(cell)
    with pytest.warns(DefectWarning):
        result = relax(removed, ab2, cell=False, max_steps=3, fmax=0.05)
    assert result.n_defective == 2 and result.n_untrusted >= 2 and "2 defective metal site(s)" in result.message
    assert np.isfinite(result.energy_per_metal) and result.atoms.info["cggpr_n_defective"] == 2
    with pytest.raises(StructureError, match="wrong metal coordination"):
        relax(removed, ab2, cell=False, max_steps=3, defects="refuse")
