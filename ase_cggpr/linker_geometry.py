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


def _sum_over_metals(per_linker: np.ndarray, connectivity) -> tuple[np.ndarray, np.ndarray]:
    """Per metal site (metal order): the sum of the finite ``per_linker`` values over the linkers it bonds to, and
    how many there were."""
    n = connectivity.n_metals
    total, count = np.zeros(n), np.zeros(n)
    metals = np.asarray(connectivity.linker_metals, dtype=int).reshape(-1, 2)
    ok = np.isfinite(per_linker)
    for side in (0, 1):
        np.add.at(total, metals[ok, side], per_linker[ok])
        np.add.at(count, metals[ok, side], 1.0)
    return total, count


def linker_distortion(atoms: Atoms, connectivity, ideal: np.ndarray | None = None) -> np.ndarray:
    """Per metal site (metal order): root mean square over its linkers of :func:`linker_rmsd` (Å, against
    ``ideal`` as there); NaN for coarse-grained input or when no linker of the site has a reference geometry."""
    total, count = _sum_over_metals(linker_rmsd(atoms, connectivity, ideal) ** 2, connectivity)
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


# -- the linkers' strain energy (issue 31): what the beads cannot see, in meV --------------------------------------
#: kcal/mol in eV.
KCAL_PER_MOL = 0.0433641
#: Order of the labelled imidazolate atoms (:data:`ase_cggpr.dataset.decorate.LINKER_LABELS`): Na Nb C2 Ca Cb H2 Ha Hb.
#: Harmonic MOF-FF terms (Dürholt et al. 2019, ZIF8_H; :mod:`ase_cggpr.mofff.parameters`), K2 in kcal/mol per Å^2
#: (bonds, type 6, 5, 4, 3, 2) and per rad^2 (angles, type 6, 9, 4, 5, 3, 2): E = K2 x (q - q_ideal)^2.
_IM_BONDS = (((0, 2), 549.703117), ((1, 2), 549.703117), ((0, 3), 416.087696), ((1, 4), 416.087696),
             ((3, 4), 434.003560), ((2, 5), 395.222152), ((3, 6), 387.353267), ((4, 7), 387.353267))
_IM_ANGLES = (((0, 2, 1), 118.587164), ((2, 0, 3), 84.449242), ((2, 1, 4), 84.449242), ((0, 3, 4), 64.976103),
              ((1, 4, 3), 64.976103), ((5, 2, 0), 35.465568), ((5, 2, 1), 35.465568), ((6, 3, 0), 31.225453),
              ((7, 4, 1), 31.225453), ((4, 3, 6), 13.870059), ((3, 4, 7), 13.870059))
#: OPLS torsions with only K2 (kcal/mol; types 5, 9, 13, 3, 4, 7, 11): E = K2 / 2 (1 - cos 2 phi), 0 when planar.
_IM_TORSIONS = (((0, 3, 4, 1), 14.398838), ((4, 3, 0, 2), 10.524033), ((3, 4, 1, 2), 10.524033),
                ((1, 2, 0, 3), 23.699680), ((0, 2, 1, 4), 23.699680), ((6, 3, 4, 7), 0.669064),
                ((6, 3, 4, 1), 2.761801), ((7, 4, 3, 0), 2.761801), ((6, 3, 0, 2), 13.351879),
                ((7, 4, 1, 2), 13.351879), ((5, 2, 0, 3), 9.688948), ((5, 2, 1, 4), 9.688948))


def _im_energy(xyz: np.ndarray, reference: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """MOF-FF harmonic intra-linker energy (eV) of labelled imidazolates ``xyz`` (n, 8, 3) about ``reference``
    (bond lengths and angles of the ideal linker; the torsions' reference is planar)."""
    bonds = np.stack([np.linalg.norm(xyz[:, i] - xyz[:, j], axis=-1) for (i, j), _ in _IM_BONDS], axis=1)
    angles = np.stack([_angles(xyz[:, i], xyz[:, j], xyz[:, k]) for (i, j, k), _ in _IM_ANGLES], axis=1)
    if reference is None:
        return bonds, angles
    kb = np.array([k for _, k in _IM_BONDS])
    ka = np.array([k for _, k in _IM_ANGLES])
    kt = np.array([k for _, k in _IM_TORSIONS])
    phi = np.stack([_dihedrals(*(xyz[:, a] for a in atoms)) for atoms, _ in _IM_TORSIONS], axis=1)
    energy = ((bonds - reference[0]) ** 2 @ kb + (angles - reference[1]) ** 2 @ ka
              + (0.5 * (1.0 - np.cos(2.0 * phi))) @ kt)
    return energy * KCAL_PER_MOL


def _angles(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    u, v = a - b, c - b
    cos = np.sum(u * v, axis=-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
    return np.arccos(np.clip(cos, -1.0, 1.0))


def _dihedrals(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    b0, b1, b2 = a - b, c - b, d - c
    b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1, axis=-1, keepdims=True) * b1
    w = b2 - np.sum(b2 * b1, axis=-1, keepdims=True) * b1
    return np.arctan2(np.sum(np.cross(b1, v) * w, axis=-1), np.sum(v * w, axis=-1))


@cache
def _im_reference_internal(ideal: tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    xy = IDEAL_LINKER if ideal is None else np.asarray(ideal, float).reshape(8, 2)
    return _im_energy(np.column_stack([xy, np.zeros(len(xy))])[None])


def linker_strain_energy(atoms: Atoms, connectivity, ideal: np.ndarray | None = None) -> np.ndarray:
    """Per linker: the energy (eV) in its internal distortion from the ideal imidazolate (``ideal``: in-plane
    coordinates (8, 2), default :data:`~ase_cggpr.dataset.decorate.IDEAL_LINKER`), estimated with MOF-FF's harmonic
    intra-linker terms (bond stretches, angle bends, ring and C-H torsions; Dürholt et al. 2019): the energy a
    coarse-grained model cannot see. 0 for the ideal linker; NaN for a linker that is not an imidazolate (C3H3N2)
    and for coarse-grained input. Atoms are labelled by distance (C2: the C nearest both N; each ring C's N and H:
    the nearest), so any atom order works."""
    out = np.full(len(connectivity.linkers), math.nan)
    if connectivity.coarse_grained_input or not len(connectivity.linkers):
        return out
    ks = [k for k, formula in enumerate(connectivity.linker_formulas) if formula == LINKERS["Im"][2]]
    if not ks:
        return out
    positions = atoms.get_positions()
    index = np.array([connectivity.linkers[k] for k in ks])
    if index.shape[1] != 8:
        return out
    order = np.argsort(atoms.numbers[index], axis=1, kind="stable")  # H H H C C C N N
    index = np.take_along_axis(index, order, axis=1)
    if not np.array_equal(atoms.numbers[index[0]], [1, 1, 1, 6, 6, 6, 7, 7]) or \
            not (atoms.numbers[index] == atoms.numbers[index[0]]).all():
        return out
    rings = np.array([connectivity.rings[k] for k in ks])
    ring_vectors = _mic(positions[rings] - positions[rings[:, :1]], atoms)
    centroid = positions[rings[:, 0]] + ring_vectors.mean(axis=1)
    xyz = _mic(positions[index] - centroid[:, None, :], atoms)  # (n, 8, 3): H H H C C C N N
    h, c, n = xyz[:, 0:3], xyz[:, 3:6], xyz[:, 6:8]
    rows = np.arange(len(ks))
    cn = np.linalg.norm(c[:, :, None] - n[:, None], axis=-1)  # (n, 3 C, 2 N)
    c2 = np.argmin(cn.max(axis=2), axis=1)
    others = np.array([[k for k in range(3) if k != j] for j in range(3)])[c2]  # the two other C
    first_to_na = cn[rows, others[:, 0], 0] <= cn[rows, others[:, 1], 0]
    ca = np.where(first_to_na, others[:, 0], others[:, 1])
    cb = np.where(first_to_na, others[:, 1], others[:, 0])
    labelled = [n[:, 0], n[:, 1], c[rows, c2], c[rows, ca], c[rows, cb]]
    for carbon in labelled[2:5]:  # each ring C's H: the nearest H
        nearest = np.argmin(np.linalg.norm(h - carbon[:, None], axis=-1), axis=1)
        labelled.append(h[rows, nearest])
    key = None if ideal is None else tuple(np.asarray(ideal, float).ravel().tolist())
    out[ks] = _im_energy(np.stack(labelled, axis=1), _im_reference_internal(key))
    return out


def strain_energy_per_metal(atoms: Atoms, connectivity, ideal: np.ndarray | None = None) -> np.ndarray:
    """Per metal site (metal order): half the sum of :func:`linker_strain_energy` (eV) over the linkers it bonds to
    (each linker's energy shared by its two metals); NaN for coarse-grained input or when none of its linkers is
    measured."""
    total, count = _sum_over_metals(0.5 * linker_strain_energy(atoms, connectivity, ideal), connectivity)
    return np.where(count > 0, total, math.nan)
