"""Command-line interface ``cggpr`` (click), a thin layer over the Python API.

Each command module registers its commands on the :func:`main` group when imported: :mod:`.core` (train,
predict, coarse-grain, info, demo), :mod:`.evaluation` (cv, learning-curve, grid-search, cross-hyper, report),
:mod:`.screening` (screen, calibrate), :mod:`.label` and :mod:`.dataset`. :mod:`.options` holds the shared
options (spec, solver, label key, quiet, force, workers), the output claims (checked and locked before any
work, see :mod:`ase_cggpr.outputs`) and the one error handler :func:`~.options.cli_errors` (a user error is
one line and exit 1, a usage error exit 2, Ctrl-C/SIGTERM exit 130, anything else a traceback marked as a bug).
"""

from ._group import main

__all__ = ["main"]

# command modules (one line each; importing registers the commands)
from . import (
    core,  # noqa: F401,E402
    dataset,  # noqa: F401,E402
    evaluation,  # noqa: F401,E402
    label,  # noqa: F401,E402
    relax,  # noqa: F401,E402
    screening,  # noqa: F401,E402
)
