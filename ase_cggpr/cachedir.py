"""Where the package keeps files it can recompute (inducing vectors and factors, featomic's spline parameters)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where recomputed inducing vectors (and featomic's parameters) are kept: ``$CGGPR_CACHE``, else
    ``$XDG_CACHE_HOME/ase-cggpr``, else ``~/.cache/ase-cggpr``."""
    if os.environ.get("CGGPR_CACHE"):
        return Path(os.environ["CGGPR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ase-cggpr"
