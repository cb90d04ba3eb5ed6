"""What a coarse-grained model cannot see: the linkers' internal geometry of an atomistic input (issue 31).

A coarse-grained (AB2 or A-only) model sees the metal sites and, for AB2, the centroids of the linkers' rings. Its
training frames have linkers at (or near) the relaxed imidazolate geometry: ideal linkers placed on (rattled) beads,
and MOF-FF relaxations. An atomistic input whose linkers are distorted (e.g. atoms rattled) carries energy in those
distortions that the beads cannot see: the model's prediction, and its std, say nothing about it.

:func:`linker_distortion` (:mod:`ase_cggpr.linker_geometry`) measures it per metal site: for each linker, the root-
mean-square difference (Å) between its sorted intra-linker interatomic distances (grouped by element pair, so no atom
labelling is needed) and those of the ideal linker of the same formula
(:data:`ase_cggpr.dataset.decorate.IDEAL_LINKER`: bond lengths and angles of the relaxed imidazolate); for each metal,
the root mean square over the linkers bonded to it. :func:`strain_energy_per_metal` estimates the energy in those
distortions (meV per Zn, MOF-FF's harmonic intra-linker terms; half of each linker's to each of its two metals).

A prediction is *outside what the model was trained on* when the measure named by the model's rule (``calibration.
applicability``: :data:`MEASURE_ENERGY`, the unseen energy in eV, since issue 31's second calibration; or
:data:`MEASURE`, the RMS distortion in Å, in files written before) exceeds its threshold (chosen by measurement on
held-out nets: ``scripts/calibrate_shipped.py``). With the energy measure a rule may also carry ``std_margin`` (c,
a number of std; 0 when absent): a Zn is then outside when its unseen energy exceeds the threshold plus c times its
calibrated std (:func:`ase_cggpr.uncertainty.calibrated_std`), i.e. when the energy the model cannot see is larger
than what it already says it does not know (issue 31: fewer small errors flagged at the same share of large ones).
Coarse-grained input (beads) and linkers without a reference geometry cannot be measured (NaN): they are not flagged.
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms

from .linker_geometry import (
    RELAXED_METAL_BEAD,
    bead_distortion,
    linker_distortion,
    linker_rmsd,
    linker_strain_energy,
    strain_energy_per_metal,
)
from .uncertainty import calibrated_std

__all__ = ["MEASURE", "MEASURE_ENERGY", "RELAXED_METAL_BEAD", "RULE", "RULE_ENERGY", "applicability_margin",
           "applicability_rule", "applicability_threshold", "bead_distortion", "linker_distortion", "linker_rmsd",
           "linker_strain_energy", "outside_reason", "strain_energy_per_metal", "trust"]

#: Name of the per-Zn measure of :func:`linker_distortion`, recorded with a threshold in a model's calibration.
MEASURE = "linker_distortion"
RULE = ("not trusted when any Zn's linker distortion (RMS difference of its linkers' sorted intra-linker "
        "distances from the ideal imidazolate, Å) exceeds the threshold: energy in linker distortions the beads "
        "cannot see")
#: Name of the per-Zn measure of :func:`strain_energy_per_metal` (eV), recorded with a threshold in eV.
MEASURE_ENERGY = "linker_strain_energy"
RULE_ENERGY = ("not trusted when any Zn's unseen linker strain energy (MOF-FF harmonic estimate of the energy in its "
               "linkers' internal distortion from the relaxed imidazolate, half of each linker's, meV per Zn) exceeds "
               "the threshold: energy the beads cannot see")
MEASURES = (MEASURE, MEASURE_ENERGY)


def applicability_rule(model) -> tuple[str, float] | None:
    """(measure, threshold) of the model's applicability rule: :data:`MEASURE_ENERGY` with a threshold in eV per Zn,
    or :data:`MEASURE` in Å; None when it has none (nothing flagged). Atomistic models see the linkers: no rule."""
    if model.spec.representation == "atomistic":
        return None
    calibration = getattr(model, "calibration_", None) or {}
    rule = calibration.get("applicability") if isinstance(calibration, dict) else None
    if not isinstance(rule, dict) or rule.get("measure") not in MEASURES:
        return None
    value = rule.get("threshold")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        return None
    return str(rule["measure"]), float(value)


def applicability_margin(model) -> float:
    """The rule's ``std_margin`` (a number of calibrated std added to the energy threshold per Zn; 0 when the rule
    has none, is not on the energy measure, or the value is not a finite number >= 0)."""
    rule = applicability_rule(model)
    if rule is None or rule[0] != MEASURE_ENERGY:
        return 0.0
    value = model.calibration_["applicability"].get("std_margin", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


def applicability_threshold(model) -> float | None:
    """The threshold of the model's applicability rule (:func:`applicability_rule`; eV for the energy measure, Å for
    the distortion), or None."""
    rule = applicability_rule(model)
    return None if rule is None else rule[1]


def outside_reason(model, atoms: Atoms, connectivity, *, distortion: np.ndarray | None = None,
                   std: np.ndarray | None = None) -> str:
    """Why a prediction of ``model`` for ``atoms`` is outside what it was trained on ("" when it is not);
    ``distortion``: the per-Zn :func:`linker_distortion` if already measured; ``std``: the per-Zn calibrated std
    (eV) the rule's ``std_margin`` adds to its threshold (:func:`applicability_margin`; without it, the threshold
    alone: a stricter rule)."""
    rule = applicability_rule(model)
    if rule is None or connectivity.coarse_grained_input:
        return ""
    measure, threshold = rule
    if measure == MEASURE_ENERGY:
        energy = strain_energy_per_metal(atoms, connectivity)
        margin = applicability_margin(model)
        limit = threshold + (margin * np.asarray(std, float) if margin and std is not None else 0.0)
        over = np.isfinite(energy) & (energy > limit)
        if not over.any():
            return ""
        beyond = f" + {margin:g} x its calibrated std" if margin and std is not None else ""
        return (f"linker geometry outside training: unseen linker strain energy up to {1000 * np.nanmax(energy):.0f} "
                f"meV > {1000 * threshold:.0f} meV{beyond} per Zn on {int(over.sum())} of {len(energy)} Zn (energy "
                f"the {model.spec.representation} beads cannot see)")
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
    (:func:`outside_reason`, with the calibrated std), or when its relaxation did not converge. Reasons are joined
    with "; "."""
    distortion = None if connectivity.coarse_grained_input else linker_distortion(atoms, connectivity)
    shown = calibrated_std(model, std, atoms, connectivity, distortion=distortion)
    reasons = []
    if not relax_converged:
        reasons.append("relaxation not converged")
    if shown.size and float(shown.max()) > threshold:
        reasons.append(f"std {float(shown.max()):.3f} eV > threshold {threshold:.3f} eV")
    outside = outside_reason(model, atoms, connectivity, distortion=distortion, std=shown)
    if outside:
        reasons.append(outside)
    return shown, "; ".join(reasons)
