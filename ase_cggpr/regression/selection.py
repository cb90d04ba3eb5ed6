"""Choosing M representative rows of a set of descriptor vectors: farthest-point sampling and CUR leverage
scores (the sparse solver's inducing environments, the exact solver's Nyström variance environments)."""

from __future__ import annotations

import math

import numpy as np


def farthest_point_sampling(X: np.ndarray, m: int, *, seed: int = 0, dim: int | None = 256) -> np.ndarray:
    """Indices of m rows of X chosen by greedy farthest-point sampling (Euclidean).

    For normalised vectors the polynomial-kernel distance is a monotonic function of the Euclidean one.
    With ``dim`` the distances are those of a seeded Gaussian random projection to ``dim`` dimensions
    (approximately preserved, far cheaper for SOAP vectors of thousands of dimensions).
    """
    n = X.shape[0]
    m = min(int(m), n)
    rng = np.random.default_rng(seed)
    if dim is not None and dim < X.shape[1]:
        P = rng.standard_normal((X.shape[1], dim)) / math.sqrt(dim)
        Y = np.vstack([X[s:s + 4096] @ P for s in range(0, n, 4096)])
    else:
        Y = np.asarray(X, dtype=np.float64)
    sq = np.einsum("ij,ij->i", Y, Y)
    chosen = np.empty(m, dtype=int)
    chosen[0] = int(rng.integers(n))
    d = sq - 2 * Y @ Y[chosen[0]] + sq[chosen[0]]
    for k in range(1, m):
        nxt = int(np.argmax(d))
        chosen[k] = nxt
        np.minimum(d, sq - 2 * Y @ Y[nxt] + sq[nxt], out=d)
        d[nxt] = -np.inf
    return chosen


def cur_selection(X: np.ndarray, m: int, *, rank: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices of the m rows of X with the largest leverage scores on its top ``rank`` singular vectors.

    The singular vectors come from a seeded randomised range finder (two power iterations).
    """
    n = X.shape[0]
    m = min(int(m), n)
    rank = min(rank or max(1, min(m, 200)), n, X.shape[1])
    rng = np.random.default_rng(seed)
    Q = X @ rng.standard_normal((X.shape[1], rank + 10))
    for _ in range(2):
        Q, _ = np.linalg.qr(Q)
        Q = X @ (X.T @ Q)
    Q, _ = np.linalg.qr(Q)
    U, _, _ = np.linalg.svd(Q.T @ X, full_matrices=False)
    leverage = np.einsum("ij,ij->i", Q @ U[:, :rank], Q @ U[:, :rank])
    return np.sort(np.argsort(-leverage, kind="stable")[:m])


SELECTIONS = ("fps", "cur", "random")
