"""Symmetry of a screened structure: spglib's space group and equivalent Zn sites, and predictions computed once
per orbit of equivalent sites (:func:`predict_symmetric`; see :mod:`ase_cggpr.screening`, "Symmetry")."""

from __future__ import annotations

import math
import warnings

import numpy as np
import spglib
from ase import Atoms

from .beads import BeadMap
from .descriptors import soap_dimension, soap_vectors
from .errors import OptionError
from .model import selected_vectors
from .uncertainty import is_number

#: Default spglib tolerance (Å) for symmetry-equivalent Zn sites.
SYMPREC = 1e-3


#: Largest accepted spglib tolerance (Å): beyond it every structure looks symmetric.
MAX_SYMPREC = 1.0


def check_symprec(value) -> float:
    """``value`` as a float if it is a usable spglib tolerance: finite, 0 < symprec < 1 Å."""
    if not is_number(value) or not math.isfinite(float(value)) or not 0 < float(value) < MAX_SYMPREC:
        raise OptionError(f"symprec must be a finite tolerance in (0, {MAX_SYMPREC:g}) Å, got {value!r}")
    return float(value)


def _spglib_dataset(atoms: Atoms, symprec: float):
    symprec = check_symprec(symprec)  # spglib segfaults on a negative tolerance

    cell = (np.asarray(atoms.cell), atoms.get_scaled_positions(wrap=True), atoms.numbers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spglib.get_symmetry_dataset(cell, symprec=symprec)


def _get(dataset, key: str):
    return dataset[key] if isinstance(dataset, dict) else getattr(dataset, key)


def space_group(atoms: Atoms, symprec: float = SYMPREC) -> str:
    """International symbol and number, e.g. ``"I4_1cd (110)"`` ("" when spglib finds none)."""
    dataset = _spglib_dataset(atoms, symprec)
    if dataset is None:
        return ""
    return f"{_get(dataset, 'international')} ({_get(dataset, 'number')})"


def equivalent_centres(bead_map: BeadMap, symprec: float = SYMPREC) -> tuple[np.ndarray, np.ndarray]:
    """(representative centre positions, inverse): centre k is equivalent to centre ``reps[inverse[k]]``.

    Positions index ``bead_map.centre_indices`` (metal order). Found with spglib on the descriptor's
    structure; no symmetry found means every centre is its own representative.
    """
    centres = np.asarray(bead_map.centre_indices)
    dataset = _spglib_dataset(bead_map.structure, symprec)
    if dataset is None:
        return np.arange(len(centres)), np.arange(len(centres))
    orbit = np.asarray(_get(dataset, "equivalent_atoms"))[centres]
    _, first, inverse = np.unique(orbit, return_index=True, return_inverse=True)
    return first, inverse.ravel()


def centre_vectors(spec, bead_map: BeadMap, positions: np.ndarray | None = None) -> np.ndarray:
    """Normalised SOAP vectors of the centres at ``positions`` (in metal order; all when None): (k, D).

    Only the selected centres are computed (:func:`ase_cggpr.model.selected_vectors`).
    """
    if positions is None or np.array_equal(positions, np.arange(len(bead_map.centre_indices))):
        return soap_vectors([bead_map], spec)
    positions = np.asarray(positions)
    order = np.argsort(positions, kind="stable")  # the helper takes sorted rows (centres in metal = atom order)
    out = np.empty((len(positions), soap_dimension(spec)))
    out[order] = selected_vectors([bead_map], spec, positions[order])
    return out


def predict_symmetric(model, bead_map: BeadMap, *, symmetry: bool = True, symprec: float = SYMPREC):
    """(per-Zn mean, per-Zn std, number of unique Zn sites), computed once per symmetry orbit."""
    n = len(bead_map.centre_indices)
    if symmetry:
        reps, inverse = equivalent_centres(bead_map, symprec)
    else:
        reps, inverse = np.arange(n), np.arange(n)
    prediction = model.compute(bead_map, return_std=True, centres=reps)  # the model's one prediction route
    return prediction.local_energies[inverse], prediction.std[inverse], len(reps)
