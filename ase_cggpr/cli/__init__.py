"""Command-line interface ``cggpr`` (click), a thin layer over the Python API.

Each command module registers its commands on the :func:`main` group when imported.
"""

from ._group import main

__all__ = ["main"]

# command modules (one line each; importing registers the commands)
from . import core  # noqa: F401,E402
from . import evaluation  # noqa: F401,E402
from . import label  # noqa: F401,E402
from . import screening  # noqa: F401,E402
from . import dataset  # noqa: F401,E402
