"""The package's one root-mean-square error (used by training, the uncertainty calibration and the evaluation)."""

from __future__ import annotations

import math

import numpy as np


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square difference (same units as the inputs); NaN for empty inputs."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else math.nan
