"""What a coarse-grained model cannot see: the linkers' internal geometry of an atomistic input (issue 31).

A coarse-grained (AB2 or A-only) model sees the metal sites and, for AB2, the centroids of the linkers' rings. Its
training frames have linkers at (or near) the relaxed imidazolate geometry: ideal linkers placed on (rattled) beads,
and MOF-FF relaxations. An atomistic input whose linkers are distorted (e.g. atoms rattled) carries energy in those
distortions that the beads cannot see: the model's prediction, and its std, say nothing about it.

:func:`linker_distortion` (:mod:`ase_cggpr.linker_geometry`) measures it per metal site: for each linker, the root-
mean-square difference (Å) between its sorted intra-linker interatomic distances (grouped by element pair, so no atom
labelling is needed) and those of the ideal linker of the same formula
(:data:`ase_cggpr.dataset.decorate.IDEAL_LINKER`: bond lengths and angles of the relaxed imidazolate); for each metal,
the root mean square over the linkers bonded to it. A prediction is *outside what the model was trained on* when that
measure exceeds the model's applicability threshold (chosen by measurement on held-out nets:
``scripts/calibrate_shipped.py``; stored in the model's ``calibration.applicability``).
Coarse-grained input (beads) and linkers without a reference geometry cannot be measured (NaN): they are not flagged.
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms

from .linker_geometry import RELAXED_METAL_BEAD, bead_distortion, linker_distortion, linker_rmsd
from .uncertainty import calibrated_std

__all__ = ["MEASURE", "RELAXED_METAL_BEAD", "RULE", "applicability_threshold", "bead_distortion",
           "linker_distortion", "linker_rmsd", "outside_reason", "trust"]

#: Name of the per-Zn measure of :func:`linker_distortion`, recorded with a threshold in a model's calibration.
MEASURE = "linker_distortion"
RULE = ("not trusted when any Zn's linker distortion (RMS difference of its linkers' sorted intra-linker "
        "distances from the ideal imidazolate, Å) exceeds the threshold: energy in linker distortions the beads "
        "cannot see")


def applicability_threshold(model) -> float | None:
    """The model's linker-distortion threshold (Å) from its calibration, or None (no rule: nothing flagged).

    Atomistic models see the linkers: they have no such rule."""
    if model.spec.representation == "atomistic":
        return None
    calibration = getattr(model, "calibration_", None) or {}
    rule = calibration.get("applicability") if isinstance(calibration, dict) else None
    if not isinstance(rule, dict) or rule.get("measure") != MEASURE:
        return None
    value = rule.get("threshold")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def outside_reason(model, atoms: Atoms, connectivity, *, distortion: np.ndarray | None = None) -> str:
    """Why a prediction of ``model`` for ``atoms`` is outside what it was trained on ("" when it is not);
    ``distortion``: the per-Zn :func:`linker_distortion` if already measured."""
    threshold = applicability_threshold(model)
    if threshold is None or connectivity.coarse_grained_input:
        return ""
    if distortion is None:
        distortion = linker_distortion(atoms, connectivity)
    over = np.isfinite(distortion) & (distortion > threshold)
    if not over.any():
        return ""
    return (f"linker geometry outside training: linker distortion up to {np.nanmax(distortion):.3f} Å > "
            f"{threshold:.3f} Å on {int(over.sum())} of {len(distortion)} Zn (energy the "
            f"{model.spec.representation} beads cannot see)")


def trust(model, atoms: Atoms, connectivity, std: np.ndarray, threshold: float, *,
          relax_converged: bool = True) -> tuple[np.ndarray, str]:
    """(per-Zn std a user is shown, eV; why the prediction is not trusted, "" when it is).

    The std is the latent GP std through the model's variance calibration
    (:func:`ase_cggpr.uncertainty.calibrated_std`, with the input's linker distortion); a prediction is not
    trusted when any Zn's std exceeds ``threshold`` (eV), when the input is outside what the model was trained on
    (:func:`outside_reason`), or when its relaxation did not converge. Reasons are joined with "; "."""
    distortion = None if connectivity.coarse_grained_input else linker_distortion(atoms, connectivity)
    shown = calibrated_std(model, std, atoms, connectivity, distortion=distortion)
    reasons = []
    if not relax_converged:
        reasons.append("relaxation not converged")
    if shown.size and float(shown.max()) > threshold:
        reasons.append(f"std {float(shown.max()):.3f} eV > threshold {threshold:.3f} eV")
    outside = outside_reason(model, atoms, connectivity, distortion=distortion)
    if outside:
        reasons.append(outside)
    return shown, "; ".join(reasons)
