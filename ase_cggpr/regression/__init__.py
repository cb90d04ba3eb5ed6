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

The package: :mod:`.base` (the :class:`Regressor` protocol, checks), :mod:`.linalg` (blocked Cholesky, triangular
solves, memory checks), :mod:`.selection` (FPS, CUR), :mod:`.exact` (:class:`ExactGPR`), :mod:`.sparse`
(:class:`SparseGPR`); the solvers by name (:data:`SOLVERS`), their options (:func:`solver_options`) and a saved
solver's rebuild (:func:`solver_from_state`) are here. Cross-validation's shared kernel is
:class:`ase_cggpr.evaluation.shared_kernel.BlockKernel`.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from .base import MAX_LABEL_DEVIATION, PREDICTION_PRECISIONS, Progress, Regressor, check_labels
from .exact import EXACT_VARIANCE_MAX, LAZY_FACTOR_MAX, VARIANCES, ExactGPR, nystrom_variance_factors
from .linalg import (
    CHOLESKY_BLOCK,
    available_memory,
    blocked_cholesky,
    check_memory,
    exact_fit_bytes,
    kernel_matrix_blocks,
)
from .selection import SELECTIONS, cur_selection, farthest_point_sampling
from .sparse import SparseGPR, inducing_factor

__all__ = ["CHOLESKY_BLOCK", "EXACT_VARIANCE_MAX", "LAZY_FACTOR_MAX", "MAX_LABEL_DEVIATION", "PREDICTION_PRECISIONS",
           "SELECTIONS", "SOLVERS", "VARIANCES", "ExactGPR", "Progress", "Regressor", "SparseGPR", "available_memory",
           "blocked_cholesky", "check_labels", "check_memory", "cur_selection", "exact_fit_bytes",
           "farthest_point_sampling", "inducing_factor", "kernel_matrix_blocks", "nystrom_variance_factors",
           "solver_from_state", "solver_options"]

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
