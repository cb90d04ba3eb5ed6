"""Command-line interface ``cggpr`` (click), a thin layer over the Python API.

Each command module registers its commands on the :func:`main` group when imported.
"""

from ._group import main

__all__ = ["main"]

# command modules (one line each; importing registers the commands)
from . import (
    core,  # noqa: F401,E402
    dataset,  # noqa: F401,E402
    evaluation,  # noqa: F401,E402
    label,  # noqa: F401,E402
    screening,  # noqa: F401,E402
)
