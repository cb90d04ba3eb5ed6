"""The dense linear algebra of the solvers: the kernel matrix in row blocks, the in-place blocked Cholesky
factorisation, triangular solves, and the memory checks made before a large allocation."""

from __future__ import annotations

import os

import numpy as np
from scipy.linalg import blas, lapack

from ..errors import ModelError
from ..kernels import PolynomialKernel
from .base import Progress


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


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (psutil, else ``os.sysconf``)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil is a dependency of the test environment only
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
