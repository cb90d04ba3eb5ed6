"""``compute(..., centres=...)``: both backends return exactly the full computation's rows for the subset."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

#: Small hyperparameters: the selection logic, not the basis, is under test.
KWARGS = dict(species=(14, 8), centre_species=(14,), cutoff=5.0, atom_sigma=0.5, n_max=4, l_max=3,
              cutoff_transition_width=0.5)


def backend(name: str):
    pytest.importorskip(name, reason=f"{name} not installed")
    return importlib.import_module(f"ase_cggpr.descriptors.{name}")


def relabelled_crystal(seed: int, extra_hydrogen: bool = False) -> Atoms:
    """A rattled rocksalt supercell relabelled Si / O, optionally with an H atom (not a SOAP species)."""
    atoms = bulk("NaCl", "rocksalt", a=5.0, cubic=True).repeat((1, 1, 2))
    atoms.set_chemical_symbols(["Si" if z == 11 else "O" for z in atoms.numbers])
    if extra_hydrogen:  # in the middle, so featomic's reduced indices differ from the original ones
        atoms = atoms[:3] + Atoms("H", positions=[[1.2, 1.3, 1.4]], cell=atoms.cell, pbc=True) + atoms[3:]
    atoms.rattle(0.2, seed=seed)
    return atoms


@pytest.mark.parametrize("name", ["featomic", "quippy"])
def test_centres_subset_equals_full_rows(name):
    module = backend(name)
    structures = [relabelled_crystal(0), relabelled_crystal(1, extra_hydrogen=True), relabelled_crystal(2)]
    full = module.compute(structures, **KWARGS)
    all_centres = [np.flatnonzero(s.numbers == 14) for s in structures]
    assert len(full) == sum(len(c) for c in all_centres)
    subsets = [all_centres[0][[0, 2, 5]], all_centres[1][[1, 3, 4, 7]], all_centres[2][:0]]
    rows, first = [], 0
    for atoms, subset in zip(all_centres, subsets, strict=True):
        rows.extend(first + np.searchsorted(atoms, subset))
        first += len(atoms)
    selected = module.compute(structures, **KWARGS, centres=subsets)
    assert selected.shape == (len(rows), full.shape[1])
    np.testing.assert_allclose(selected, full[rows], rtol=0.0, atol=1e-12)
    # every centre selected explicitly is the full computation
    np.testing.assert_allclose(module.compute(structures, **KWARGS, centres=all_centres), full,
                               rtol=0.0, atol=1e-12)


@pytest.mark.parametrize("name", ["featomic", "quippy"])
def test_centres_are_validated(name):
    module = backend(name)
    structure = relabelled_crystal(0)
    si = np.flatnonzero(structure.numbers == 14)
    o = np.flatnonzero(structure.numbers == 8)
    for bad in ([si[[2, 0]]], [o[:1]], [np.array([len(structure)])], [si, si]):
        with pytest.raises(ValueError):
            module.compute([structure], **KWARGS, centres=bad)


def test_backends_agree_on_selected_centres():
    fb, qb = backend("featomic"), backend("quippy")
    structure = relabelled_crystal(3, extra_hydrogen=True)
    subset = [np.flatnonzero(structure.numbers == 14)[1::3]]
    np.testing.assert_allclose(fb.compute([structure], **KWARGS, centres=subset),
                               qb.compute([structure], **KWARGS, centres=subset), rtol=0.0, atol=1e-6)
