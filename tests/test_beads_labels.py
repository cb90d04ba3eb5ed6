"""Bead mapping and local-energy labels: on the built-in data, and against the dataset authors' reference frames
(``../shared/data/mofff-reference``; those tests skip without it)."""

import warnings

import numpy as np
import pytest
from ase.geometry import get_distances
from ase.io import read
from conftest import builtin_frames, methylated

from ase_cggpr import StructureError, coarse_grain, find_connectivity, local_energies
from ase_cggpr.errors import LabelError


@pytest.fixture(scope="module")
def reference_frames(shared_data):
    atomistic = read(shared_data / "mofff-reference" / "cag_pressure_atomistic_3frames.xyz", ":")
    cg = read(shared_data / "mofff-reference" / "cag_pressure_cg_3frames.xyz", ":")
    return atomistic, cg


def read_cif(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms = read(path)
    atoms.info["name"] = path.name
    return atoms


def test_beads_match_authors_coarse_graining(reference_frames):
    atomistic, cg = reference_frames
    for atoms, ref in zip(atomistic, cg, strict=True):
        beads = coarse_grain(atoms, "AB2").structure
        assert beads.get_chemical_formula() == ref.get_chemical_formula()
        for symbol in ("Si", "O"):
            mine = beads.positions[beads.symbols == symbol]
            theirs = ref.positions[ref.symbols == symbol]
            _, d = get_distances(mine, theirs, cell=ref.cell, pbc=True)
            assert np.all(d.argmin(axis=1) == np.arange(len(mine)))  # same order as the authors
            assert d.min(axis=1).max() < 1e-3


def test_local_energies_match_authors_and_sum_to_cell_energy(reference_frames):
    atomistic, cg = reference_frames
    for atoms, ref in zip(atomistic, cg, strict=True):
        e_local = local_energies(atoms, label_key="energy")  # ASE moved the column into calc.results
        assert np.abs(e_local - local_energies(ref, label_key="e_local_mofff")).max() < 1e-4
        assert e_local.sum() == pytest.approx(atoms.calc.results["energy"].sum(), abs=1e-8)
        e_zn = local_energies(atoms, label_key="energy", target="metal")
        assert np.abs(e_zn - ref.arrays["energies_mofff"][ref.symbols == "Si"]).max() < 1e-6


def test_representations_and_cg_input(frames, cg_frames):
    atomistic, cg = frames, cg_frames
    atoms = atomistic[0]
    full = coarse_grain(atoms, "atomistic")
    assert len(full.structure) == 272 and np.all(full.structure.symbols[full.centre_indices] == "Zn")
    only_a = coarse_grain(atoms, "A")
    assert set(only_a.structure.symbols) == {"Si"} and len(only_a.structure) == 16
    from_cg = coarse_grain(cg[0], "AB2")
    assert from_cg.connectivity.coarse_grained_input and len(from_cg.centre_indices) == 16
    with pytest.raises(StructureError, match="already coarse-grained"):
        coarse_grain(cg[0], "atomistic")
    top = find_connectivity(atoms)
    assert all(len(r) == 5 for r in top.rings) and all(len(lk) == 8 for lk in top.linkers)
    assert np.bincount(top.linker_metals.ravel()).tolist() == [4] * 16


def test_real_zif_structures_map(shared_data):
    for path in sorted((shared_data / "zif-structures").glob("*.cif")):
        top = find_connectivity(read_cif(path))
        assert top.n_metals > 0 and len(top.rings) == 2 * top.n_metals
        expected = {"C4H5N2"} if "CH3" in path.name else {"C3H3N2"}
        assert set(top.linker_formulas) == expected


def test_methylimidazolate_is_recognised(frames):
    """2-methylimidazolate (ZIF-8's linker) is a known linker: mapped, and reported by its formula."""
    atoms = methylated(frames[0], name="YUG_CH3")
    top = find_connectivity(atoms)
    assert set(top.linker_formulas) == {"C4H5N2"} and len(top.rings) == 2 * top.n_metals == 32
    assert np.bincount(top.linker_metals.ravel()).tolist() == [4] * 16
    beads = coarse_grain(atoms, "AB2").structure
    reference = coarse_grain(frames[0], "AB2").structure  # the methyl group does not move the ring centroid
    # mIm has its own B-bead element (beads.B_BEADS): S where Im's beads are O; the A beads stay Si
    assert beads.get_chemical_formula() == "S32Si16" and reference.get_chemical_formula() == "O32Si16"
    np.testing.assert_allclose(beads.positions, reference.positions, atol=1e-9)


@pytest.fixture()
def yug():
    """An ideal built-in frame (net YUG, 16 Zn) without labels, named like a file."""
    (atoms,) = builtin_frames(net="YUG", order="d")
    atoms.calc = None
    del atoms.arrays["e_local"]
    atoms.info["name"] = "YUG.cif"
    return atoms


def test_bad_structures_give_clear_errors(yug):
    with pytest.raises(StructureError, match="no metal atoms"):
        find_connectivity(yug[~(yug.symbols == "Zn")])
    h = np.flatnonzero(yug.symbols == "H")[0]
    broken = yug.copy()
    del broken[h]
    with pytest.raises(StructureError, match=r"YUG.cif.*unrecognised or broken linker C3H2N2"):
        find_connectivity(broken)
    top = find_connectivity(yug)
    no_linker = yug.copy()
    del no_linker[top.linkers[0].tolist()]
    with pytest.raises(StructureError, match="wrong metal coordination.*3 N neighbours"):
        find_connectivity(no_linker)
    nan = yug.copy()
    nan.positions[5, 1] = np.nan
    with pytest.raises(StructureError, match=r"non-finite .* \[5\]"):
        find_connectivity(nan)
    slab = yug.copy()
    slab.pbc = (True, True, False)
    with pytest.raises(StructureError, match="periodic"):
        find_connectivity(slab)


def test_missing_label_array(yug):
    with pytest.raises(LabelError, match="YUG.cif.*no per-atom label array 'energies'"):
        local_energies(yug)


def test_dense_coarse_grained_input_bonds_the_four_nearest_beads():
    """Two medium r-d frames of the full build (relaxed CUIMDZ03 net): a non-bonded B bead sits 4.11 Å from an
    A site, inside the 4.2 Å cut-off, while the bonded ones stay below 3.4 Å. The 4 nearest are the bonds."""
    from pathlib import Path

    from ase import Atoms

    frames = read(Path(__file__).parent / "data" / "cg_dense_CUIMDZ03.extxyz", ":")
    assert len(frames) == 2
    for atoms in frames:
        top = find_connectivity(atoms)
        assert top.n_metals == 12 and np.bincount(top.linker_metals.ravel()).tolist() == [4] * 12
        a, b = top.linker_metals[:, 0], top.linker_metals[:, 1]
        assert (a != b).all()
        bonds = atoms.get_distances(top.metal_indices[0], [r[0] for r in top.rings], mic=True)
        assert np.sort(bonds)[3] < 3.5
        assert len(coarse_grain(atoms, "AB2").centre_indices) == 12
    # a bead as near as the bonded ones makes the coordination ambiguous: an error, not a guess
    crowded = frames[0] + Atoms("O", positions=[frames[0].positions[0] + [0.0, 0.0, 3.3]])
    with pytest.raises(StructureError, match=r"clearly nearer than the rest.*Si 0: 4th at"):
        find_connectivity(crowded)
