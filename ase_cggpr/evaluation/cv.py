"""Grouped k-fold cross-validation on precomputed SOAP vectors, and the shared-kernel CV.

:func:`cross_validate` fits one :class:`~ase_cggpr.model.CGGPRModel` per fold (any solver) and predicts the
held-out fold; :func:`shared_kernel_cv` computes one kernel of seeded per-fold samples
(:class:`~ase_cggpr.evaluation.shared_kernel.BlockKernel`) and evaluates every fold and training size from it.
:class:`CVResult` holds the outcome and writes it (:mod:`.tables`). :func:`sampled_vectors` /
:class:`SampledRows` describe only the environments a shared-kernel CV uses.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..metrics import rmse
from ..model import CGGPRModel
from ..outputs import check_output
from ..progress import progress_bar
from ..spec import ModelSpec
from .cache import SoapCache
from .environments import Environments
from .folds import _training_rows, fold_samples, group_folds, sample_training_rows, shared_kernel_rows
from .shared_kernel import BlockKernel
from .tables import save_predictions, write_text

#: Training environments predicted for the training RMSE of solvers without free fitted values.
TRAIN_RMSE_SAMPLE = 4000


Log = Callable[[str], None] | None


@dataclasses.dataclass
class CVResult:
    """Outcome of one grouped k-fold CV (RMSE in eV per environment).

    ``train_rmse`` / ``test_rmse``: per fold; ``predictions``: (n_env,) out-of-fold predictions
    (eV), ``folds``: fold of each environment; ``n_train``: training environments per fold.
    """

    spec: ModelSpec
    n_folds: int
    seed: int
    n_train: list[int]
    train_rmse: list[float]
    test_rmse: list[float]
    labels: np.ndarray
    predictions: np.ndarray
    folds: np.ndarray
    seconds: float
    solver: str = "exact"
    target: str = "local"
    #: per fold, the rows of the environments each model was trained on (shared-kernel CV; else None)
    train_rows: list[np.ndarray] | None = None

    @property
    def mean_train_rmse(self) -> float:
        return float(np.mean(self.train_rmse))

    @property
    def mean_test_rmse(self) -> float:
        return float(np.mean(self.test_rmse))

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (no per-environment arrays)."""
        return {"representation": self.spec.representation, "spec": self.spec.to_dict(), "target": self.target,
                "solver": self.solver, "n_folds": self.n_folds, "seed": self.seed, "n_train": self.n_train,
                "n_environments": int(len(self.labels)), "train_rmse": self.train_rmse,
                "test_rmse": self.test_rmse, "mean_train_rmse": self.mean_train_rmse,
                "mean_test_rmse": self.mean_test_rmse, "seconds": self.seconds}

    def save(self, path: str | os.PathLike, predictions: str | os.PathLike | None = None, *,
             overwrite: bool = True) -> Path:
        """Write the summary as JSON and (optionally) per-environment predictions as CSV.

        Both are checked before either is written, and written atomically (:mod:`ase_cggpr.outputs`);
        ``overwrite=False`` refuses existing files."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        check_output(path, force=overwrite)
        summary = self.summary()
        if predictions is not None:
            summary["predictions_file"] = str(predictions)
            save_predictions(predictions, self.labels, self.predictions, self.folds, overwrite=overwrite)
        write_text(path, json.dumps(summary, indent=1), overwrite=overwrite)
        return path


def fit_fold(X: np.ndarray, y: np.ndarray, train: np.ndarray, spec: ModelSpec, *, solver: str = "exact",
             solver_options: dict | None = None) -> CGGPRModel:
    """A :class:`CGGPRModel` fitted on rows ``train`` of precomputed vectors (through ``fit_vectors``)."""
    options = dict(solver_options or {})
    if solver == "exact":
        options.setdefault("variance", "none")  # CV needs means only: no N x N or Nyström factors kept
    model = CGGPRModel(spec, solver=solver, solver_options=options)
    return model.fit_vectors(X[train], y[train])


def cross_validate(X: np.ndarray, y: np.ndarray, groups: Sequence[str] | np.ndarray, spec: ModelSpec, *,
                   n_folds: int = 5, n_train: int | None = None, seed: int = 0, solver: str = "exact",
                   solver_options: dict | None = None, folds: np.ndarray | None = None,
                   target: str = "local", shared_kernel: bool = False, log: Log = None) -> CVResult:
    """Grouped k-fold CV of a GPR on precomputed SOAP vectors X (n_env, D) and labels y (eV).

    Every environment is predicted once, by the model of the fold that holds it out. The training
    RMSE is that of each fold's model on its own training environments (exact solver: all of them, free
    from the weights; other solvers: a seeded sample of at most ``TRAIN_RMSE_SAMPLE``).
    ``shared_kernel=True`` (exact solver, ``n_train`` given) runs :func:`shared_kernel_cv` instead: one
    kernel for all folds, test RMSE on a sample of ``n_train / (n_folds - 1)`` environments per fold.
    """
    if shared_kernel:
        if n_train is None or solver != "exact":
            raise ModelError("the shared-kernel CV needs the exact solver and a training size (n_train)")
        options = dict(solver_options or {})
        return shared_kernel_cv(X, y, groups, spec, sizes=[n_train], n_folds=n_folds, seed=seed, folds=folds,
                                precision=options.get("precision", "mixed"), target=target, log=log)[0]
    y = np.asarray(y, dtype=float)
    if X.shape[0] != len(y) or len(groups) != len(y):
        raise ModelError(f"{X.shape[0]} vectors, {len(y)} labels and {len(groups)} groups: lengths differ")
    folds = group_folds(groups, n_folds, seed=seed) if folds is None else np.asarray(folds)
    n_folds = int(folds.max()) + 1
    predictions = np.full(len(y), np.nan)
    n_used, train_rmse, test_rmse = [], [], []
    start = time.perf_counter()
    for k in range(n_folds):
        t0 = time.perf_counter()
        train = _training_rows(folds, k, n_train, seed)
        test = np.flatnonzero(folds == k)
        model = fit_fold(X, y, train, spec, solver=solver, solver_options=solver_options)
        if len(train) <= TRAIN_RMSE_SAMPLE or model.cheap_fitted_values:
            fitted_rows, fitted = train, model.fitted_values(X[train])
        else:  # training RMSE on a seeded sample: predicting all N costs as much as the sparse fit
            fitted_rows = np.sort(np.random.default_rng([seed, k]).choice(train, TRAIN_RMSE_SAMPLE, replace=False))
            fitted = model.predict_vectors(X[fitted_rows], name=f"fold {k + 1} training sample")
        predictions[test] = model.predict_vectors(X[test], name=f"fold {k + 1}") + model.reference_energy
        n_used.append(int(len(train)))
        train_rmse.append(rmse(fitted + model.reference_energy, y[fitted_rows]))
        test_rmse.append(rmse(predictions[test], y[test]))
        if log:
            phases = model.fit_timings
            detail = ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
            log(f"{spec.representation} fold {k + 1}/{n_folds}: N={len(train)} train {train_rmse[-1]:.4f} "
                f"test {test_rmse[-1]:.4f} eV ({time.perf_counter() - t0:.1f} s{'; ' + detail if detail else ''})")
        del model
    return CVResult(spec=spec, n_folds=n_folds, seed=seed, n_train=n_used, train_rmse=train_rmse,
                    test_rmse=test_rmse, labels=y, predictions=predictions, folds=folds,
                    seconds=time.perf_counter() - start, solver=solver, target=target)


class SampledRows:
    """SOAP vectors of selected rows of an (n, D) set, indexed by the full set's row numbers.

    What the shared-kernel CV needs of X is ``X[rows]`` for rows of its samples; this holds only those
    (``vectors``, one per entry of the sorted ``rows``) and refuses any other row.
    """

    def __init__(self, vectors: np.ndarray, rows: np.ndarray, n: int):
        self.vectors, self.rows = vectors, np.asarray(rows)
        if self.vectors.shape[0] != len(self.rows):
            raise ModelError(f"{self.vectors.shape[0]} vectors for {len(self.rows)} rows")
        self.shape = (int(n), self.vectors.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        index = np.asarray(index)
        where = np.minimum(np.searchsorted(self.rows, index), len(self.rows) - 1)
        if not np.array_equal(self.rows[where], index):
            raise ModelError("asked for SOAP vectors of environments outside the sampled rows")
        return self.vectors[where]


def sampled_vectors(env: Environments, spec: ModelSpec, cache: SoapCache, largest: int, *, n_folds: int = 5,
                    seed: int = 0) -> SampledRows | np.ndarray:
    """The SOAP vectors a shared-kernel CV of ``env`` up to ``largest`` training environments needs (only those
    are described); pass the result as X to :func:`shared_kernel_cv`, :func:`cross_validate` or
    :func:`learning_curve` (with ``shared_kernel=True``)."""
    if cache.has(env, spec):  # all vectors at hand (memory-mapped): use them as they are
        return cache.vectors(env, spec)
    rows = shared_kernel_rows(env.groups, largest, n_folds=n_folds, seed=seed)
    return SampledRows(cache.vectors(env, spec, rows=rows), rows, len(env))


def shared_kernel_cv(X: np.ndarray, y: np.ndarray, groups: Sequence[str] | np.ndarray, spec: ModelSpec, *,
                     sizes: Sequence[int], n_folds: int = 5, seed: int = 0, folds: np.ndarray | None = None,
                     precision: str = "mixed", target: str = "local", log: Log = None,
                     progress: bool = False) -> list[CVResult]:
    """Grouped k-fold CV at one or more training sizes from one kernel matrix (exact GPR).

    Each fold's environments are shuffled once (seeded) and the first ``ceil(max(sizes) / (k - 1))``
    kept as that fold's sample. The kernel of all samples is computed once
    (:class:`~ase_cggpr.evaluation.shared_kernel.BlockKernel`): fold ``k`` at size N trains on N environments spread
    evenly over the other folds' samples (their first rows, so the sets are nested across sizes) and is
    tested on its own whole sample. Every fold's training set is thus a seeded random sample of its
    training folds, as in :func:`cross_validate`, but no kernel entry is computed twice and the test
    RMSE is measured on a sample of each fold (environments outside the samples get NaN predictions).
    Memory: float64 kernel of the samples, ``(max(sizes) * k / (k - 1))^2 * 4`` bytes, plus a float32
    N x N copy per fit, whatever the descriptor dimension; X may be memory-mapped.
    """
    y = np.asarray(y, dtype=float)
    if X.shape[0] != len(y) or len(groups) != len(y):
        raise ModelError(f"{X.shape[0]} vectors, {len(y)} labels and {len(groups)} groups: lengths differ")
    sizes = sorted({int(n) for n in sizes})
    if not sizes or sizes[0] < 1:
        raise ModelError(f"training sizes must be positive, got {sizes}")
    folds = group_folds(groups, n_folds, seed=seed) if folds is None else np.asarray(folds)
    n_folds = int(folds.max()) + 1
    samples = fold_samples(folds, sizes[-1], seed=seed)
    start = time.perf_counter()
    n_tiles = n_folds * (n_folds + 1) // 2
    with progress_bar(n_tiles, "kernel tiles", enabled=progress) as update:
        kernel = BlockKernel(lambda k: X[samples[k]], n_folds, zeta=spec.zeta, offset=spec.offset,
                             progress=update)
    kernel_seconds = time.perf_counter() - start
    if log:
        log(f"{spec.representation}: kernel of {sum(kernel.sizes)} sampled environments "
            f"({', '.join(map(str, kernel.sizes))} per fold) in {kernel_seconds:.1f} s")
    results = []
    for size in sizes:
        t_size = time.perf_counter()
        predictions = np.full(len(y), np.nan)
        n_used, train_rmse, test_rmse, train_rows = [], [], [], []
        for k in range(n_folds):
            t0 = time.perf_counter()
            others, counts, train = sample_training_rows(samples, k, size)
            gpr = kernel.fit(others, counts, y[train], noise=spec.noise, precision=precision)
            predictions[samples[k]] = kernel.predict(gpr, others, counts, target=k)
            n_used.append(int(len(train)))
            train_rows.append(train)
            train_rmse.append(rmse(gpr.fitted_values(), y[train]))
            test_rmse.append(rmse(predictions[samples[k]], y[samples[k]]))
            if log:
                detail = ", ".join(f"{name} {v:.1f}" for name, v in gpr.timings_.items())
                log(f"{spec.representation} N={len(train)} fold {k + 1}/{n_folds}: train {train_rmse[-1]:.4f} "
                    f"test {test_rmse[-1]:.4f} eV on {len(samples[k])} ({time.perf_counter() - t0:.1f} s; "
                    f"{detail})")
            del gpr
        seconds = time.perf_counter() - t_size + (kernel_seconds if size == sizes[0] else 0.0)
        results.append(CVResult(spec=spec, n_folds=n_folds, seed=seed, n_train=n_used, train_rmse=train_rmse,
                                test_rmse=test_rmse, labels=y, predictions=predictions, folds=folds,
                                seconds=seconds, solver=f"exact-shared-{precision}", target=target,
                                train_rows=train_rows))
    return results
