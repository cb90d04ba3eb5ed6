"""Inducing environments stored as the atoms (or beads) that define them: the compact model format.

A sparse model's prediction needs, per inducing environment n, its normalised SOAP vector z_n (D numbers:
4,752 for AB2 and 18,720 for the atomistic representation at n_max 16, l_max 8). A SOAP vector is a function
of the neighbours within the cutoff only, so the environment itself, the centre at the origin and its
neighbours within ``cutoff`` (about 25 beads for AB2 at 9 Å, 60 atoms for the atomistic representation at
6.75 Å: 0.6 kB to 1.5 kB in float64), holds the same information in a few per cent of the bytes. A model
saved with ``inducing_storage="clusters"`` keeps these clusters; at load their vectors are recomputed once
(one descriptor call on M non-periodic clusters, centre 0 of each) and ``L_m`` (the Cholesky factor of
K_mm, a function of the vectors) with them, so the file holds only the clusters, the weights ``alpha`` and
the packed lower triangle of ``L_a`` (the predictive-variance factor, which depends on the training data).

The cluster of centre i of a periodic structure holds every periodic image j of every atom with
|r_j - r_i| < cutoff (:func:`ase.neighborlist.neighbor_list`), so the cluster's centre vector equals the
periodic structure's to rounding (1e-14; checked by :func:`environment_clusters` callers and by the tests).
Because training uses the vectors of the clusters themselves (:func:`cluster_vectors`), the saved model
predicts after load exactly what the trained model predicted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from .cachedir import cache_dir
from .descriptors import backend_for, soap_dimension
from .errors import ModelError
from .regression import inducing_factor
from .spec import ModelSpec
from .version import __version__

#: Extra radius (Å) beyond the cutoff included in a cluster: the smooth cutoff is exactly 0 beyond
#: ``cutoff``, so anything in [cutoff, cutoff + margin) contributes nothing; the margin only makes the cluster
#: insensitive to rounding at the boundary.
MARGIN = 0.01


def environment_clusters(structure: Atoms, centres: Sequence[int], cutoff: float) -> list[Atoms]:
    """One non-periodic cluster per centre index: the centre at the origin (index 0), then every periodic
    image of every atom within ``cutoff + MARGIN`` Å of it, as positions relative to the centre."""
    i, j, d = neighbor_list("ijD", structure, float(cutoff) + MARGIN, self_interaction=False)
    numbers = structure.numbers
    out = []
    for c in centres:
        mask = i == c
        pos = np.vstack([np.zeros((1, 3)), d[mask]])
        nums = np.concatenate([[numbers[c]], numbers[j[mask]]])
        out.append(Atoms(numbers=nums, positions=pos, pbc=False))
    return out


def pack_clusters(clusters: Sequence[Atoms]) -> dict[str, np.ndarray]:
    """The arrays of a model file: ``cluster_sizes`` (M,) int64, ``cluster_numbers`` (n,) int64,
    ``cluster_positions`` (n, 3) float64 (Å, relative to each cluster's centre)."""
    return {"cluster_sizes": np.array([len(c) for c in clusters], dtype=np.int64),
            "cluster_numbers": np.concatenate([c.numbers for c in clusters]).astype(np.int64),
            "cluster_positions": np.vstack([c.positions for c in clusters]).astype(np.float64)}


def unpack_clusters(arrays: dict[str, np.ndarray], spec: ModelSpec, m: int) -> list[Atoms]:
    """The M clusters of a model file's arrays, every array checked against the spec (ModelError)."""
    sizes = np.asarray(arrays["cluster_sizes"])
    numbers = np.asarray(arrays["cluster_numbers"])
    positions = np.asarray(arrays["cluster_positions"])
    if sizes.shape != (m,) or sizes.dtype.kind not in "iu" or (sizes < 1).any():
        raise ModelError(f"cluster_sizes must be {m} positive integers, got shape {sizes.shape}")
    n = int(sizes.sum())
    if numbers.shape != (n,) or numbers.dtype.kind not in "iu":
        raise ModelError(f"cluster_numbers must be {n} integers (the sum of cluster_sizes), got {numbers.shape}")
    if positions.shape != (n, 3) or positions.dtype.kind != "f" or not np.isfinite(positions).all():
        raise ModelError(f"cluster_positions must be {n} x 3 finite numbers, got {positions.shape}")
    unknown = sorted(set(np.unique(numbers).tolist()) - set(spec.effective_species))
    if unknown:
        raise ModelError(f"clusters hold atomic numbers {unknown} that are not among the model's species "
                         f"{list(spec.effective_species)}")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    centres = numbers[starts[:-1]]
    if not np.isin(centres, spec.effective_centre_species).all():
        raise ModelError("a cluster's first atom (its centre) is not of a centre species")
    if np.abs(positions[starts[:-1]]).max(initial=0.0) != 0.0:
        raise ModelError("a cluster's centre is not at the origin")
    reach = np.linalg.norm(positions, axis=1).max(initial=0.0)
    if reach > spec.cutoff + MARGIN + 1e-9:
        raise ModelError(f"a cluster reaches {reach:.3f} Å from its centre, beyond the cutoff {spec.cutoff:g} Å")
    return [Atoms(numbers=numbers[a:b], positions=positions[a:b], pbc=False)
            for a, b in zip(starts[:-1], starts[1:], strict=True)]


def cluster_vectors(clusters: Sequence[Atoms], spec: ModelSpec, *, chunk: int = 256,
                    cache: bool = True) -> np.ndarray:
    """Normalised SOAP vectors (M, D) of each cluster's centre (atom 0), in chunks of ``chunk`` clusters.

    With ``cache`` the vectors are also kept in :func:`cache_dir` under a key made of the clusters' bytes, the
    spec's descriptor fields and this package's and featomic's versions, so a model loads in a fraction of a
    second from the second time on; a cached file is used only if its shape is (M, D) and every row is finite
    and normalised, and a cache that cannot be written is skipped silently.
    """
    path = _cache_path(clusters, spec) if cache else None
    if path is not None and path.exists():
        try:
            X = np.load(path, allow_pickle=False)
            if (X.shape == (len(clusters), soap_dimension(spec)) and np.isfinite(X).all()
                    and np.allclose(np.einsum("ij,ij->i", X, X), 1.0, atol=1e-8)):
                return X
        except (OSError, ValueError):
            pass
    backend = backend_for(spec)
    if not clusters:
        return np.zeros((0, 0))
    X = np.empty((len(clusters), soap_dimension(spec)))
    for start in range(0, len(clusters), chunk):
        block = list(clusters[start:start + chunk])
        X[start:start + len(block)] = backend.vectors(block, [np.array([0])] * len(block))
    if path is not None:
        _save(path, X)
    return X


def _save(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary file renamed into place; a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass


def cluster_factor(clusters: Sequence[Atoms], spec: ModelSpec, X: np.ndarray, gpr, *,
                   cache: bool = True) -> np.ndarray:
    """L_m, the lower Cholesky factor of ``K(X, X)`` plus ``gpr``'s jitter (as
    :func:`~ase_cggpr.regression.inducing_factor`), kept in :func:`cache_dir` beside the vectors of the same clusters.

    Forming K_mm costs M^2 D (2,000^2 x 4,752 for the shipped AB2: about 1 s), the factor M^3 / 3; reading the
    cached factor (its lower triangle, float64) takes milliseconds. A cached factor is used only if it has the
    right shape, a positive diagonal, and three of its columns reproduce ``K(X, X) + jitter`` to 1e-10 (relative),
    else it is recomputed (and the cache rewritten).
    """
    m = X.shape[0]
    path = _factor_path(clusters, spec, gpr) if cache else None
    if path is not None and path.exists():
        try:
            L = unpack_lower(np.load(path, allow_pickle=False), m)
            if _factors(L, X, gpr):
                return L
        except (OSError, ValueError, ModelError):
            pass
    L = inducing_factor(gpr, X)
    if path is not None:
        _save(path, pack_lower(L))
    return L


def _factors(L: np.ndarray, X: np.ndarray, gpr) -> bool:
    """Whether L looks like the jittered Cholesky factor of K(X, X): positive diagonal, three columns exact."""
    m = L.shape[0]
    if m == 0:
        return True
    if not np.isfinite(L).all() or not (np.diagonal(L) > 0).all():
        return False
    shift = gpr.jitter * float(np.mean(gpr.kernel.diagonal(X)))
    for j in sorted({0, m // 2, m - 1}):
        column = gpr.kernel(X[j:], X[j:j + 1])[:, 0]
        column[0] += shift
        if np.abs(L[j:, :j + 1] @ L[j, :j + 1] - column).max() > 1e-10 * np.abs(column).max():
            return False
    return True


def _factor_path(clusters: Sequence[Atoms], spec: ModelSpec, gpr) -> Path | None:
    path = _cache_path(clusters, spec)
    if path is None:
        return None
    key = json.dumps({"zeta": gpr.zeta, "offset": gpr.offset, "jitter": gpr.jitter}, sort_keys=True)
    return path.with_name(f"{path.stem}-Lm-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npy")


def _cache_path(clusters: Sequence[Atoms], spec: ModelSpec) -> Path | None:
    try:
        featomic = version("featomic")
    except PackageNotFoundError:
        featomic = "none"
    digest = hashlib.sha256()
    arrays = pack_clusters(clusters)
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    digest.update(json.dumps({"spec": spec.descriptor_key(), "backend": spec.backend, "package": __version__,
                              "featomic": featomic}, sort_keys=True, default=str).encode())
    return cache_dir() / f"inducing-{digest.hexdigest()[:32]}.npy"


def pack_lower(L: np.ndarray) -> np.ndarray:
    """The lower triangle of a square matrix, row by row, as a flat float64 array of m (m + 1) / 2."""
    return np.ascontiguousarray(L[np.tril_indices(L.shape[0])], dtype=np.float64)


def unpack_lower(packed: np.ndarray, m: int) -> np.ndarray:
    """Inverse of :func:`pack_lower` (ModelError if the length is not m (m + 1) / 2)."""
    packed = np.asarray(packed)
    if packed.shape != (m * (m + 1) // 2,):
        raise ModelError(f"a packed {m} x {m} triangle has {m * (m + 1) // 2} entries, got shape {packed.shape}")
    L = np.zeros((m, m))
    start = 0
    for i in range(m):  # row slices: the same entries as L[np.tril_indices(m)] = packed, without 2 x m^2/2 indices
        L[i, :i + 1] = packed[start:start + i + 1]
        start += i + 1
    return L
