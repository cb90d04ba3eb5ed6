"""Grouped folds and the seeded training samples drawn from them.

:func:`group_folds` gives every environment a fold, keeping each CV group (one framework, or one net's
rattled copies) in one fold. :func:`fold_samples` / :func:`sample_training_rows` / :func:`shared_kernel_rows`
are the per-fold samples of the shared-kernel CV (nested across training sizes); :func:`usable_sizes` caps a
learning curve's sizes at the smallest training split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ModelError


def group_folds(groups: Sequence[str] | np.ndarray, n_folds: int = 5, *, seed: int = 0) -> np.ndarray:
    """Fold index (0 .. n_folds-1) of every environment; all environments of a group share a fold.

    Groups are shuffled with ``seed`` and each is given to the fold holding the fewest environments.
    """
    groups = np.asarray(groups)
    unique, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if n_folds < 2:
        raise ModelError(f"need at least 2 folds, got {n_folds}")
    if len(unique) < n_folds:
        raise ModelError(f"only {len(unique)} structure groups for {n_folds} folds; every fold needs one")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = np.empty(len(unique), dtype=int)
    sizes = np.zeros(n_folds, dtype=int)
    for g in order:
        k = int(np.argmin(sizes))
        fold_of_group[g] = k
        sizes[k] += counts[g]
    return fold_of_group[inverse.ravel()]


def _training_rows(folds: np.ndarray, k: int, n_train: int | None, seed: int) -> np.ndarray:
    rows = np.flatnonzero(folds != k)
    if n_train is not None:
        if n_train < 1:
            raise ModelError(f"n_train must be at least 1, got {n_train}")
        if n_train < len(rows):
            rng = np.random.default_rng([seed, k, n_train])
            rows = np.sort(rng.choice(rows, size=n_train, replace=False))
    return rows


def _split_evenly(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if a < n % parts else 0) for a in range(parts)]


def fold_samples(folds: np.ndarray, largest: int, *, seed: int = 0) -> list[np.ndarray]:
    """Per fold, a seeded random sample of ``ceil(largest / (n_folds - 1))`` of its environment rows.

    The samples of :func:`shared_kernel_cv`: fold k's is its test set, the others' first rows its training set.
    """
    n_folds = int(folds.max()) + 1
    per_fold = math.ceil(largest / (n_folds - 1))
    rng = np.random.default_rng([seed, n_folds, largest])
    return [rng.permutation(np.flatnonzero(folds == k))[:per_fold] for k in range(n_folds)]


def shared_kernel_rows(groups: Sequence[str] | np.ndarray, largest: int, *, n_folds: int = 5,
                       seed: int = 0) -> np.ndarray:
    """Sorted rows of every environment :func:`shared_kernel_cv` uses for sizes up to ``largest``."""
    folds = group_folds(groups, n_folds, seed=seed)
    return np.sort(np.concatenate(fold_samples(folds, largest, seed=seed)))


def usable_sizes(groups: Sequence[str] | np.ndarray, sizes: Sequence[int], *, n_folds: int = 5,
                 seed: int = 0) -> list[int]:
    """Training sizes a learning curve can use: each capped at the smallest training split."""
    folds = group_folds(groups, n_folds, seed=seed)
    largest = min(int((folds != k).sum()) for k in range(n_folds))
    return sorted({min(int(s), largest) for s in sizes})


def sample_training_rows(samples: Sequence[np.ndarray], k: int, size: int) -> tuple[list[int], list[int], np.ndarray]:
    """(other folds, rows taken from each, training rows) of fold ``k`` at ``size`` from :func:`fold_samples`."""
    others = [j for j in range(len(samples)) if j != k]
    counts = [min(c, len(samples[j])) for c, j in zip(_split_evenly(size, len(others)), others, strict=True)]
    return others, counts, np.concatenate([samples[j][:c] for j, c in zip(others, counts, strict=True)])
