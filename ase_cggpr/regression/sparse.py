"""Sparse GP regression by the projected-process (DTC) approximation on M inducing environments
(:class:`SparseGPR`), and the factor of its inducing kernel (:func:`inducing_factor`)."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from .base import (
    Progress,
    _check_kernel_hypers,
    _check_lower_factor,
    _integer,
    _kernel_params,
    _KernelHypers,
    _number,
    _state_array,
    check_labels,
)
from .linalg import _lower_solve, blocked_cholesky, check_memory, kernel_matrix_blocks
from .selection import SELECTIONS, cur_selection, farthest_point_sampling


class SparseGPR(_KernelHypers):
    """Sparse GPR by the projected-process (DTC) approximation on M inducing environments.

    Mean ``k_m(x) . alpha_m`` with ``alpha_m = (noise^2 K_mm + K_mn K_nm)^-1 K_mn (y - mean)``; variance
    ``k(x,x) - q(x,x) + noise^2 k_m^T (noise^2 K_mm + K_mn K_nm)^-1 k_m``. Inducing points are rows of the
    training set chosen by ``selection``: ``"fps"`` (farthest-point sampling), ``"cur"`` (leverage scores)
    or ``"random"`` (seeded). ``jitter`` (relative to the mean diagonal) stabilises K_mm's Cholesky.
    """

    kind = "sparse"

    def __init__(self, *, zeta: int = 4, offset: float = 1.0, noise: float = 0.2, n_inducing: int = 4000,
                 selection: str = "fps", seed: int = 0, jitter: float = 1e-10, block_size: int = 2048,
                 memory_budget: float | None = None):
        self.kernel, self.noise = _check_kernel_hypers(zeta, offset, noise)
        if selection not in SELECTIONS:
            raise ModelError(f"unknown inducing-point selection {selection!r}; choose one of {SELECTIONS}")
        self.n_inducing = _integer("n_inducing", n_inducing, 1)
        self.selection, self.seed = selection, _integer("seed", seed, 0)
        self.jitter = _number("jitter", jitter, minimum=0.0)
        self.block_size = _integer("block_size", block_size, 1)
        self.memory_budget = None if memory_budget is None else _number("memory_budget", memory_budget,
                                                                        positive=True)

    def select(self, X: np.ndarray) -> np.ndarray:
        m = min(self.n_inducing, X.shape[0])
        if m == X.shape[0]:
            return np.arange(m)
        if self.selection == "fps":
            return np.sort(farthest_point_sampling(X, m, seed=self.seed))
        if self.selection == "cur":
            return cur_selection(X, m, seed=self.seed)
        return np.sort(np.random.default_rng(self.seed).choice(X.shape[0], size=m, replace=False))

    def fit(self, X: np.ndarray, y: np.ndarray, *, progress: Progress = None) -> SparseGPR:
        X = np.ascontiguousarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise ModelError(f"need matching non-empty X (N, D) and y (N,), got {X.shape} and {y.shape}")
        if not np.isfinite(X).all():
            raise ModelError("training vectors contain NaN or inf")
        check_labels(y)
        m = min(self.n_inducing, X.shape[0])
        check_memory(8 * (3 * m * m + 2 * m * min(self.block_size, X.shape[0]) + m * X.shape[1]),
                     f"sparse GPR with {m} inducing environments", budget=self.memory_budget)
        self.mean_ = float(y.mean())
        self.Z_ = np.ascontiguousarray(X[self.select(X)])
        m = self.Z_.shape[0]
        Kmm = kernel_matrix_blocks(self.Z_, self.kernel, block_size=self.block_size)
        Kmm = np.tril(Kmm) + np.tril(Kmm, -1).T
        Kmm.flat[:: m + 1] += self.jitter * float(np.mean(np.diag(Kmm)))
        self.Lm_ = self._chol(Kmm)
        A = np.zeros((m, m))
        A.flat[:: m + 1] = self.noise**2
        b = np.zeros(m)
        r = y - self.mean_
        for start in range(0, X.shape[0], self.block_size):
            V = _lower_solve(self.Lm_, self.kernel(self.Z_, X[start:start + self.block_size]))
            A += V @ V.T
            b += V @ r[start:start + self.block_size]
            if progress is not None:
                progress(V.shape[1])
        self.La_ = self._chol(A)
        w = _lower_solve(self.La_, _lower_solve(self.La_, b[:, None]), trans=True)
        self.alpha_ = _lower_solve(self.Lm_, w, trans=True)[:, 0]
        self.X_train_ = X
        return self

    @staticmethod
    def _chol(A: np.ndarray) -> np.ndarray:
        try:
            return blocked_cholesky(np.ascontiguousarray(A, dtype=np.float64))
        except ModelError as error:
            raise ModelError(f"{error} (sparse GPR: duplicate inducing points? increase jitter)") from None

    def _check_fitted(self) -> None:
        if not hasattr(self, "alpha_"):
            raise ModelError("this regressor is not fitted yet; call fit() first")

    def fitted_values(self) -> np.ndarray:
        """Predictions at the training vectors (eV)."""
        self._check_fitted()
        return self.predict(self.X_train_)

    def predict(self, X: np.ndarray, *, return_std: bool = False, include_noise: bool = False,
                block_size: int | None = None):
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.Z_.shape[1]:
            raise ModelError(f"descriptor vectors have shape {X.shape}; the model expects (n, {self.Z_.shape[1]})")
        if return_std and getattr(self, "Lm_", None) is None:
            raise ModelError("this sparse model was saved without its factors (include_factor=False): no std")
        block = block_size or self.block_size
        mean = np.empty(X.shape[0])
        std = np.empty(X.shape[0]) if return_std else None
        for start in range(0, X.shape[0], block):
            rows = X[start:start + block]
            k = self.kernel(self.Z_, rows)  # (m, b)
            mean[start:start + block] = self.mean_ + self.alpha_ @ k
            if return_std:
                v1 = _lower_solve(self.Lm_, k)
                v2 = _lower_solve(self.La_, v1)
                prior = self.kernel.diagonal(rows)
                var = prior - np.einsum("ij,ij->j", v1, v1) + self.noise**2 * np.einsum("ij,ij->j", v2, v2)
                var = np.maximum(var, 0.0)
                if include_noise:
                    var += self.noise**2
                std[start:start + block] = np.sqrt(var)
        return (mean, std) if return_std else mean

    def _prediction_basis(self) -> tuple[np.ndarray, np.ndarray]:
        return self.Z_, self.alpha_

    def predict_gradient(self, X: np.ndarray) -> np.ndarray:
        """d mean / d x at each row of X (n, D): ``kernel.gradient(X, Z_, alpha_)`` over the inducing vectors."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.Z_.shape[1]:
            raise ModelError(f"descriptor vectors have shape {X.shape}; the model expects (n, {self.Z_.shape[1]})")
        return self.kernel.gradient(X, self.Z_, self.alpha_)

    def get_state(self, *, include_factor: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
        self._check_fitted()
        params = {"kind": self.kind, "zeta": self.zeta, "offset": self.offset, "noise": self.noise,
                  "n_inducing": int(self.Z_.shape[0]), "selection": self.selection, "seed": self.seed,
                  "jitter": self.jitter, "block_size": self.block_size, "mean": self.mean_}
        arrays = {"X": self.Z_, "alpha": self.alpha_}
        if include_factor:
            arrays.update(Lm=self.Lm_, La=self.La_)
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> SparseGPR:
        """Rebuild a fitted regressor from :meth:`get_state` output, validating every array (shape from the
        parameters and ``X``, float dtype, finite, factors lower-triangular): ModelError otherwise."""
        _kernel_params(params)
        if "n_inducing" not in params:
            raise ModelError("regression parameters lack ['n_inducing']")
        gpr = cls(zeta=params["zeta"], offset=params["offset"], noise=params["noise"],
                  n_inducing=params["n_inducing"], selection=params.get("selection", "fps"),
                  seed=params.get("seed", 0), jitter=params.get("jitter", 1e-10),
                  block_size=params.get("block_size", 2048))
        Z = _state_array(arrays, "X", (gpr.n_inducing, None))
        gpr.Z_ = np.ascontiguousarray(Z, dtype=np.float64)
        gpr.alpha_ = np.asarray(_state_array(arrays, "alpha", (gpr.n_inducing,)), dtype=np.float64)
        gpr.mean_ = _number("regression mean", params["mean"])
        if "Lm" in arrays or "La" in arrays:
            for key in ("Lm", "La"):
                _check_lower_factor(_state_array(arrays, key, (gpr.n_inducing, gpr.n_inducing)), key)
            gpr.Lm_ = np.ascontiguousarray(arrays["Lm"], dtype=np.float64)
            gpr.La_ = np.ascontiguousarray(arrays["La"], dtype=np.float64)
        return gpr

    @property
    def X_(self) -> np.ndarray:  # the vectors the model keeps (inducing points), as ExactGPR.X_
        return self.Z_


def inducing_factor(gpr: SparseGPR, Z: np.ndarray) -> np.ndarray:
    """L_m: the lower Cholesky factor of K_mm plus SparseGPR's jitter (relative to its mean diagonal), of the
    inducing vectors Z (M, D): what the streamed fit (:mod:`ase_cggpr.streaming`) and a compact model file's
    load (:func:`ase_cggpr.inducing.cluster_factor`) factor."""
    m = Z.shape[0]
    Kmm = gpr.kernel(Z, Z)
    Kmm.flat[:: m + 1] += gpr.jitter * float(np.mean(np.diag(Kmm)))
    return SparseGPR._chol(Kmm)
