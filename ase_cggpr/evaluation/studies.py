"""Studies built on the CV: learning curves, resumable grid searches and the cross-hyper table (Table 1).

Each study runs :func:`~.cv.cross_validate` (or the shared-kernel CV) over training sizes or
hyperparameters on vectors from a :class:`~.cache.SoapCache` and returns rows in the column names of
:mod:`.tables`.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..spec import PAPER_OPTIMUM, REPRESENTATIONS, ModelSpec, canonical_representation
from .cache import SoapCache
from .cv import Log, SampledRows, cross_validate, sampled_vectors, shared_kernel_cv
from .environments import Environments
from .folds import group_folds, shared_kernel_rows, usable_sizes
from .tables import GRID_FIELDS, _grid_key, grid_csv_fields, grid_setting, read_csv

#: The paper's learning-curve training sizes (7 ... 32,000, doubling).
PAPER_SIZES = (7, 15, 31, 62, 125, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000)


def learning_curve(X: np.ndarray, y: np.ndarray, groups: Sequence[str] | np.ndarray, spec: ModelSpec, *,
                   sizes: Sequence[int] = PAPER_SIZES, n_folds: int = 5, seed: int = 0, solver: str = "exact",
                   solver_options: dict | None = None, shared_kernel: bool = False,
                   log: Log = None) -> list[dict[str, Any]]:
    """RMSE vs number of training environments, one grouped k-fold CV per size (same folds).

    ``shared_kernel=True``: all sizes from one kernel (:func:`shared_kernel_cv`; nested training sets,
    the same test sample at every size).

    Sizes larger than the smallest training split are dropped except one final point at that
    size. Rows use the paper's column names (``numb_training_atoms``, ``av_train_rmse``,
    ``av_test_rmse``) plus the representation, the spread over folds and the time.
    """
    folds = group_folds(groups, n_folds, seed=seed)
    usable = usable_sizes(groups, sizes, n_folds=n_folds, seed=seed)
    rows = []
    if shared_kernel:
        if solver != "exact":
            raise ModelError("the shared-kernel learning curve needs the exact solver")
        precision = (solver_options or {}).get("precision", "mixed")
        results = shared_kernel_cv(X, y, groups, spec, sizes=usable, n_folds=n_folds, seed=seed, folds=folds,
                                   precision=precision, log=log)
    else:
        results = (cross_validate(X, y, groups, spec, n_train=size, seed=seed, solver=solver,
                                  solver_options=solver_options, folds=folds) for size in usable)
    for size, result in zip(usable, results, strict=True):
        rows.append({"representation": spec.representation, "soap_cutoff": spec.cutoff,
                     "atom_sigma": spec.atom_sigma, "noise": spec.noise, "numb_training_atoms": size,
                     "av_train_rmse": result.mean_train_rmse, "av_test_rmse": result.mean_test_rmse,
                     "std_test_rmse": float(np.std(result.test_rmse)), "n_folds": n_folds,
                     "seconds": result.seconds})
        if log:
            log(f"{spec.representation} N={size}: train {result.mean_train_rmse:.4f} test "
                f"{result.mean_test_rmse:.4f} eV ({result.seconds:.1f} s)")
    return rows


def grid_search(env: Environments, spec: ModelSpec, *, cutoffs: Sequence[float], atom_sigmas: Sequence[float],
                noises: Sequence[float] | None = None, csv_path: str | os.PathLike, n_folds: int = 5,
                n_train: int | None = None, seed: int = 0, cache: SoapCache | None = None,
                solver: str = "exact", solver_options: dict | None = None, shared_kernel: bool = False,
                log: Log = None) -> list[dict[str, Any]]:
    """Grouped-CV RMSE over cutoff x atom_sigma (x noise), appended to ``csv_path`` point by point.

    Resumable: points already in the CSV (same representation, cutoff, atom_sigma, noise, n_train,
    n_folds, seed, protocol) are not recomputed. SOAP vectors are computed once per (cutoff, atom_sigma)
    and shared by the noise values. Points whose ``cutoff_transition_width`` would not fit are skipped.

    ``shared_kernel=True`` (exact solver, ``n_train`` given) draws the seeded per-fold samples of
    :func:`shared_kernel_cv` once and evaluates every point on the same environments, describing only
    those: ``n_train * n_folds / (n_folds - 1)`` SOAP vectors per point instead of all of them, so wide
    grids (cutoff to 15 Å, atom_sigma to 2 Å) of large data sets stay affordable, and the points differ
    by their hyperparameters alone.
    Returns every row of the CSV for this representation and setting.
    """
    csv_path = Path(csv_path)
    cache = cache or SoapCache(None)
    noises = list(noises) if noises else [spec.noise]
    if shared_kernel and (n_train is None or solver != "exact"):
        raise ModelError("the shared-kernel grid search needs the exact solver and a training size (n_train)")
    protocol = "shared" if shared_kernel else "per-fold"
    setting = (spec.representation, str(n_train or ""), str(n_folds), str(seed), protocol)
    done = set()
    fields = list(GRID_FIELDS)
    if csv_path.exists():
        fields = grid_csv_fields(csv_path)
        if "protocol" not in fields and shared_kernel:
            raise ModelError(f"{csv_path} holds per-fold grid results (no protocol column); write the "
                             "shared-kernel grid to another file")
        for row in read_csv(csv_path):
            if grid_setting(row) == setting:
                done.add(_grid_key(row["cutoff"], row["atom_sigma"], row["noise"]))
    else:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="") as handle:
            csv.writer(handle).writerow(GRID_FIELDS)
    folds = group_folds(env.groups, n_folds, seed=seed)
    rows = None
    if shared_kernel:
        rows = shared_kernel_rows(env.groups, n_train, n_folds=n_folds, seed=seed)
        if log:
            log(f"{spec.representation}: every grid point on the same {len(rows)} sampled environments "
                f"(of {len(env)})")
    for cutoff in cutoffs:
        for sigma in atom_sigmas:
            todo = [n for n in noises if _grid_key(cutoff, sigma, n) not in done]
            if not todo:
                continue
            if float(cutoff) <= spec.cutoff_transition_width:
                continue
            point = spec.replace(cutoff=float(cutoff), atom_sigma=float(sigma))
            t0 = time.perf_counter()
            X = cache.vectors(env, point) if rows is None else \
                SampledRows(cache.vectors(env, point, rows=rows), rows, len(env))
            soap_seconds = time.perf_counter() - t0
            for noise in todo:
                result = cross_validate(X, env.labels, env.groups, point.replace(noise=float(noise)),
                                        n_folds=n_folds, n_train=n_train, seed=seed, solver=solver,
                                        solver_options=solver_options, folds=folds, target=env.target,
                                        shared_kernel=shared_kernel)
                row = {"representation": spec.representation, "cutoff": float(cutoff), "atom_sigma": float(sigma),
                       "noise": float(noise), "n_train": n_train or "", "n_folds": n_folds, "seed": seed,
                       "train_rmse": result.mean_train_rmse, "test_rmse": result.mean_test_rmse,
                       "seconds": round(result.seconds + soap_seconds, 3), "protocol": protocol}
                soap_seconds = 0.0
                with open(csv_path, "a", newline="") as handle:
                    csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore").writerow(row)
                done.add(_grid_key(cutoff, sigma, noise))
                if log:
                    log(f"{spec.representation} cutoff {cutoff} sigma {sigma} noise {noise}: "
                        f"test {result.mean_test_rmse:.4f} eV ({row['seconds']:.1f} s)")
    return [r for r in read_csv(csv_path) if grid_setting(r) == setting]


def cross_hyper_table(env: Environments, optima: dict[str, tuple[float, float]] | None = None, *,
                      representations: Sequence[str] = REPRESENTATIONS, base: ModelSpec | None = None,
                      n_folds: int = 5, n_train: int | None = None, seed: int = 0,
                      cache: SoapCache | None = None, solver: str = "exact", solver_options: dict | None = None,
                      diagonal_only: bool = False, shared_kernel: bool = False,
                      log: Log = None) -> list[dict[str, Any]]:
    """Each representation evaluated with each representation's optimal (cutoff, atom_sigma).

    ``optima`` maps representation -> (cutoff, atom_sigma) (default: the paper's). With
    ``diagonal_only`` each representation is evaluated with its own optimum only. Rows:
    representation, hypers_of, cutoff, atom_sigma, train/test RMSE (eV), n_train, seconds.
    """
    optima = {canonical_representation(k): v for k, v in (optima or PAPER_OPTIMUM).items()}
    base = base or ModelSpec()
    cache = cache or SoapCache(None)
    folds = group_folds(env.groups, n_folds, seed=seed)
    rows = []
    for rep in map(canonical_representation, representations):
        for hypers_of in map(canonical_representation, representations):
            if diagonal_only and hypers_of != rep:
                continue
            cutoff, sigma = optima[hypers_of]
            spec = base.replace(representation=rep, cutoff=cutoff, atom_sigma=sigma)
            if shared_kernel and n_train is not None:
                X = sampled_vectors(env, spec, cache, n_train, n_folds=n_folds, seed=seed)
            else:
                X = cache.vectors(env, spec)
            result = cross_validate(X, env.labels, env.groups, spec, n_folds=n_folds, n_train=n_train, seed=seed,
                                    solver=solver, solver_options=solver_options, folds=folds,
                                    target=env.target, shared_kernel=shared_kernel, log=log)
            rows.append({"representation": rep, "hypers_of": hypers_of, "cutoff": cutoff, "atom_sigma": sigma,
                         "noise": spec.noise, "n_train": max(result.n_train), "train_rmse": result.mean_train_rmse,
                         "test_rmse": result.mean_test_rmse, "seconds": round(result.seconds, 2),
                         "target": env.target})
    return rows
