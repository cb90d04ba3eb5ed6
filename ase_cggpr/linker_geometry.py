"""How far an atomistic input's linkers are from the geometry the coarse-grained models were trained on (issue 31):
the per-metal measures :func:`linker_distortion` (the linkers' internal geometry against the ideal imidazolate,
:data:`ase_cggpr.dataset.decorate.IDEAL_LINKER`) and :func:`bead_distortion` (the metal-to-linker-bead distances
against the relaxed one), in Å. Used by the variance calibration (:mod:`ase_cggpr.uncertainty`) and the
applicability rule (:mod:`ase_cggpr.applicability`); see the latter for what they mean."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.geometry import find_mic

from .dataset.decorate import IDEAL_LINKER, IDEAL_MIM_LINKER, LINKERS

__all__ = ["RELAXED_METAL_BEAD", "bead_distortion", "linker_distortion", "linker_rmsd"]


@cache
def _reference(formula: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(pair-key order, sorted reference distances) of a linker formula's ideal geometry, or None."""
    for name, (symbols, _, hill) in LINKERS.items():
        if hill != formula:
            continue
        if name == "Im":
            xyz = np.column_stack([IDEAL_LINKER, np.zeros(len(IDEAL_LINKER))])
        else:
            xyz = IDEAL_MIM_LINKER
        numbers = np.array([atomic_numbers[s] for s in symbols])
        return _sorted_distances(numbers, xyz[None])
    return None


def _pair_keys(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, j = np.triu_indices(len(numbers), k=1)
    a, b = np.minimum(numbers[i], numbers[j]), np.maximum(numbers[i], numbers[j])
    return i, j, a * 200 + b


def _sorted_distances(numbers: np.ndarray, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted pair keys, distances (n, n_pairs) sorted by key then length) of linkers (n, n_atoms, 3), Å."""
    i, j, key = _pair_keys(numbers)
    d = np.linalg.norm(xyz[:, i] - xyz[:, j], axis=-1)
    _, rank = np.unique(key, return_inverse=True)
    combined = np.sort(rank[None, :] * 1000.0 + d, axis=1)  # intra-linker distances are far below 1000 Å
    return np.sort(key), combined - np.sort(rank)[None, :] * 1000.0


def _im_reference(ideal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pair-key order, sorted reference distances) of an Im geometry given as in-plane coordinates (8, 2)."""
    symbols = LINKERS["Im"][0]
    xyz = np.column_stack([ideal, np.zeros(len(ideal))])
    return _sorted_distances(np.array([atomic_numbers[s] for s in symbols]), xyz[None])


def linker_rmsd(atoms: Atoms, connectivity, ideal: np.ndarray | None = None) -> np.ndarray:
    """Per linker: RMS difference (Å) of its sorted intra-linker distances from the ideal linker's (NaN when the
    linker has no reference geometry). Linkers are made whole with the minimum-image convention. ``ideal``:
    in-plane coordinates (8, 2) of the imidazolate to compare Im linkers with (default MOF-FF's
    :data:`~ase_cggpr.dataset.decorate.IDEAL_LINKER`), e.g. a labeller's own
    (:func:`ase_cggpr.dataset.config.im_geometry_of`)."""
    out = np.full(len(connectivity.linkers), math.nan)
    if connectivity.coarse_grained_input or not len(connectivity.linkers):
        return out
    by_formula: dict[str, list[int]] = {}
    for k, formula in enumerate(connectivity.linker_formulas):
        by_formula.setdefault(formula, []).append(k)
    positions = atoms.get_positions()
    for formula, ks in by_formula.items():
        reference = (_im_reference(ideal) if ideal is not None and formula == LINKERS["Im"][2]
                     else _reference(formula))
        if reference is None:
            continue
        index = np.array([connectivity.linkers[k] for k in ks])  # (n, n_atoms) of one formula
        # one atom order for all: sort each linker's atoms by element (the pair keys then agree)
        numbers = atoms.numbers[index]
        order = np.argsort(numbers, axis=1, kind="stable")
        index = np.take_along_axis(index, order, axis=1)
        numbers = atoms.numbers[index[0]]
        # whole linkers in small cells too: the ring centroid from the ring atoms (within 2.3 Å of each other),
        # then every atom as its minimum image about the centroid (H within 2.2 Å of it)
        rings = np.array([connectivity.rings[k] for k in ks])
        ring_vectors = _mic(positions[rings] - positions[rings[:, :1]], atoms)
        centroid = positions[rings[:, 0]] + ring_vectors.mean(axis=1)
        vectors = _mic(positions[index] - centroid[:, None, :], atoms)
        keys, d = _sorted_distances(numbers, vectors)
        ref_keys, ref = reference
        if keys.shape != ref_keys.shape or not np.array_equal(keys, ref_keys):
            continue
        out[ks] = np.sqrt(np.mean((d - ref) ** 2, axis=1))
    return out


def _mic(vectors: np.ndarray, atoms: Atoms) -> np.ndarray:
    """Minimum-image ``vectors`` (any shape ending in 3) in ``atoms``' cell."""
    if not atoms.pbc.any():
        return vectors
    return find_mic(vectors.reshape(-1, 3), atoms.cell, atoms.pbc)[0].reshape(vectors.shape)


def linker_distortion(atoms: Atoms, connectivity, ideal: np.ndarray | None = None) -> np.ndarray:
    """Per metal site (metal order): root mean square over its linkers of :func:`linker_rmsd` (Å, against
    ``ideal`` as there); NaN for coarse-grained input or when no linker of the site has a reference geometry."""
    n = connectivity.n_metals
    per_linker = linker_rmsd(atoms, connectivity, ideal)
    total, count = np.zeros(n), np.zeros(n)
    metals = np.asarray(connectivity.linker_metals, dtype=int).reshape(-1, 2)
    ok = np.isfinite(per_linker)
    for side in (0, 1):
        np.add.at(total, metals[ok, side], per_linker[ok] ** 2)
        np.add.at(count, metals[ok, side], 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.sqrt(total / np.maximum(count, 1)), math.nan)


#: Relaxed metal-to-linker-bead distance (Å): the median Zn-centroid distance of the MOF-FF-relaxed held-out
#: frames (``scripts/calibrate_shipped.py``; nets are built at 3.24 Å and relax to 3.186 +- 0.006 Å).
RELAXED_METAL_BEAD = 3.186


def bead_distortion(atoms: Atoms, connectivity) -> np.ndarray:
    """Per metal site (metal order): RMS deviation (Å) of its metal-to-linker-bead distances (the bead: the
    centroid of the linker's ring atoms, or the B bead of bead input) from :data:`RELAXED_METAL_BEAD`. About
    0.006 Å in MOF-FF-relaxed frameworks, 0.05-0.16 Å when the beads are rattled; NaN for a metal without linkers."""
    n = connectivity.n_metals
    total, count = np.zeros(n), np.zeros(n)
    if not len(connectivity.rings):
        return np.full(n, math.nan)
    positions = atoms.get_positions()
    metals = np.asarray(connectivity.linker_metals, dtype=int).reshape(-1, 2)
    metal_index = np.asarray(connectivity.metal_indices, dtype=int)
    for k, ring in enumerate(connectivity.rings):
        ring = np.asarray(ring, dtype=int)
        centroid = positions[ring[0]] + _mic(positions[ring] - positions[ring[0]], atoms).mean(axis=0)
        for side in (0, 1):
            m = metals[k, side]
            d = float(np.linalg.norm(_mic(centroid - positions[metal_index[m]], atoms)))
            total[m] += (d - RELAXED_METAL_BEAD) ** 2
            count[m] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.sqrt(total / np.maximum(count, 1)), math.nan)
