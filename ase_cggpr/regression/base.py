"""What every GP solver shares: the :class:`Regressor` protocol, the checks of hyperparameters, labels and saved
arrays, and the one-pass predictive mean of a fitted solver (:class:`_KernelHypers`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import LabelError, ModelError
from ..kernels import PolynomialKernel

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


#: Labels further than this from their mean (eV per metal) are refused: MOF-FF local energies of the
#: dataset span about 2 eV (-0.8 to +1.0 eV per Zn after the paper's 1 eV filter); a deviation of 100 eV
#: is a unit or sign error (kJ/mol, a total instead of a per-metal energy), and far larger ones overflow
#: the label statistics (a label std of ``inf``).
MAX_LABEL_DEVIATION = 100.0


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


def check_labels(y: np.ndarray, what: str = "training labels") -> None:
    """Refuse non-finite labels and labels further than :data:`MAX_LABEL_DEVIATION` eV from their mean."""
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
