"""Exact GP regression (:class:`ExactGPR`): blocked Cholesky of the N x N kernel, float64 or mixed precision,
with the exact or the projected-process (Nyström) predictive variance."""

from __future__ import annotations

import time

import numpy as np

from ..errors import ModelError
from ..kernels import PolynomialKernel
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
from .linalg import CHOLESKY_BLOCK, _lower_solve, blocked_cholesky, check_memory, exact_fit_bytes, kernel_matrix_blocks
from .selection import farthest_point_sampling

#: Training sets up to this size keep (and save) the exact N x N Cholesky factor for predictive variances;
#: larger ones keep the projected-process (Nyström) variance on ``n_variance`` environments.
EXACT_VARIANCE_MAX = 8000

#: A model loaded without its variance factor may refactor its kernel on the first std request only up to
#: this many training environments (well under a second); above it the std is refused, never a stall.
LAZY_FACTOR_MAX = 2000

VARIANCES = ("auto", "exact", "nystrom", "none")


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
