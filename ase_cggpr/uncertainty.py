"""Uncertainty of the predicted local energies: calibration on held-out data and the trust threshold.

The per-Zn standard deviation is the GP's latent (noise-free) predictive std. :func:`calibrate` measures, on
held-out labelled data, the fraction of errors within 1 and 2 predicted sigma, with the latent std and with
the noise term added (an ideal Gaussian model gives about 68% and 95%), and picks the trust threshold by
the rule :data:`THRESHOLD_RULE`: the 99th percentile of the held-out environments' latent std. A structure
is *trusted* when none of its Zn environments has a std above the threshold, i.e. none is less covered by
the training data than 99% of the environments the model was validated on. Without a calibration the
threshold is the model's noise sigma (an environment whose latent uncertainty exceeds the label noise is
one the model is guessing about).

Variance calibration (issue 31): a model may carry ``calibration.variance`` (:func:`variance_transform`), fitted on
held-out framework types (``scripts/calibrate_shipped.py`` for the shipped models, :func:`fit_variance`); the std
a user is shown (calculator ``local_energy_std``, ``cggpr predict``, the screen's ``max_std_eV``) is then
:func:`calibrated_std`, and the stored trust threshold is on that std. Models without it report the latent std.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .beads import BeadMap
from .errors import CGGPRError, ModelError, OptionError
from .linker_geometry import bead_distortion, linker_distortion
from .metrics import rmse
from .outputs import atomic_output

THRESHOLD_RULE = "99th percentile of the held-out per-Zn latent std (GP, no noise term)"
THRESHOLD_QUANTILE = 0.99


def is_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def check_threshold(value, what: str = "threshold") -> float:
    """``value`` as a float if it is a finite number >= 0 (eV); otherwise :class:`OptionError`.

    NaN or a negative threshold would silently trust nothing; 0 says so explicitly (every std is above it).
    """
    if not is_number(value) or not math.isfinite(float(value)) or float(value) < 0:
        raise OptionError(f"{what} must be a finite number >= 0 (eV), got {value!r}: a structure is "
                                "trusted when every per-Zn std is at most the threshold")
    return float(value)



@dataclasses.dataclass
class Calibration:
    """Calibration of per-Zn predictive std on held-out data (energies in eV per Zn environment).

    ``within_1sigma`` / ``within_2sigma``: fraction of |error| <= 1 / 2 latent std; ``*_with_noise``: with the
    noise variance added to the latent variance. Ideal: about 0.68 / 0.95.
    """

    n_environments: int
    rmse: float
    within_1sigma: float
    within_2sigma: float
    within_1sigma_with_noise: float
    within_2sigma_with_noise: float
    std_median: float
    std_q99: float
    noise: float
    threshold: float
    threshold_rule: str = THRESHOLD_RULE

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the calibration JSON (atomically; never over an existing file unless ``overwrite``)."""
        with atomic_output(path, force=overwrite) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        """Read a calibration written by :meth:`save`; anything else is one :class:`OptionError`."""
        path = Path(path)
        where = f"calibration file {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise OptionError(f"{where} is not a text (JSON) file") from None
        except OSError as error:
            raise OptionError(f"cannot read {where}: {error.strerror or error}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise OptionError(f"{where} is not JSON ({error.msg} at line {error.lineno}); write one "
                                    "with 'cggpr calibrate -o'") from None
        if not isinstance(data, dict):
            raise OptionError(f"{where} holds a JSON {type(data).__name__}, not the object written by "
                                    "'cggpr calibrate -o'")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing = [name for name, f in fields.items() if name not in data and f.default is dataclasses.MISSING]
        if missing:
            raise OptionError(f"{where} lacks {', '.join(missing)}; write it with 'cggpr calibrate -o'")
        values = {}
        for name in fields:
            if name not in data:
                continue
            value = data[name]
            if name == "threshold_rule":
                if not isinstance(value, str):
                    raise OptionError(f"{where}: threshold_rule must be a string, got {value!r}")
            elif name == "n_environments":
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise OptionError(f"{where}: n_environments must be an integer >= 1, got {value!r}")
            elif name == "threshold":
                value = check_threshold(value, f"{where}: threshold")
            elif not is_number(value) or not math.isfinite(value) or value < 0 or \
                    (name.startswith("within") and value > 1):
                raise OptionError(f"{where}: {name} must be a finite number"
                                        f"{' in [0, 1]' if name.startswith('within') else ' >= 0'}, got {value!r}")
            values[name] = value
        return cls(**values)

    def table(self) -> str:
        return "\n".join([
            f"held-out environments: {self.n_environments}, RMSE {self.rmse:.4f} eV",
            f"within 1 sigma: {self.within_1sigma:.1%} latent, {self.within_1sigma_with_noise:.1%} with noise"
            " (ideal 68.3%)",
            f"within 2 sigma: {self.within_2sigma:.1%} latent, {self.within_2sigma_with_noise:.1%} with noise"
            " (ideal 95.4%)",
            f"latent std: median {self.std_median:.4f} eV, 99th percentile {self.std_q99:.4f} eV; noise "
            f"{self.noise:.4f} eV",
            f"trust threshold: {self.threshold:.4f} eV ({self.threshold_rule})"])


def calibration_from_errors(errors: np.ndarray, std: np.ndarray, noise: float) -> Calibration:
    """A :class:`Calibration` from held-out errors (prediction - truth) and latent stds (eV)."""
    errors, std = np.abs(np.asarray(errors, float)), np.asarray(std, float)
    if errors.size == 0 or errors.shape != std.shape:
        raise CGGPRError(f"need matching non-empty errors and std, got {errors.shape} and {std.shape}")
    total = np.sqrt(std**2 + noise**2)
    q99 = float(np.quantile(std, THRESHOLD_QUANTILE))
    return Calibration(
        n_environments=int(errors.size), rmse=rmse(errors, 0.0),
        within_1sigma=float(np.mean(errors <= std)), within_2sigma=float(np.mean(errors <= 2 * std)),
        within_1sigma_with_noise=float(np.mean(errors <= total)),
        within_2sigma_with_noise=float(np.mean(errors <= 2 * total)),
        std_median=float(np.median(std)), std_q99=q99, noise=float(noise), threshold=q99)


def calibrate(model, maps: Sequence[BeadMap], labels: Sequence[np.ndarray], *, progress: bool = False
              ) -> Calibration:
    """Calibrate ``model``'s per-Zn std on held-out bead maps and their raw per-metal labels (eV).

    Labels are raw (as for fitting); the model's reference energy is subtracted here.
    """
    means, stds = model.predict_maps(list(maps), return_std=True, progress=progress)
    truth = np.concatenate([np.asarray(y, float).ravel() for y in labels]) - model.reference_energy
    return calibration_from_errors(np.concatenate(means) - truth, np.concatenate(stds), model.spec.noise)


def default_threshold(model) -> tuple[float, str]:
    """(threshold in eV, where it came from): the model's stored calibration if any, else its noise sigma."""
    calibration = getattr(model, "calibration_", None) or {}
    stored = calibration.get("threshold") if isinstance(calibration, dict) else None
    if stored is not None:
        try:
            return check_threshold(stored, "the model's stored calibration threshold"), "model calibration"
        except OptionError as error:
            raise ModelError(f"{error}; give --threshold or --calibration") from None
    return check_threshold(model.spec.noise, "the model's noise sigma"), "model noise sigma (no calibration given)"


# -- variance calibration (issue 31) ----------------------------------------------------------------------------
# std' = sqrt((scale std)^2 + floor^2 + (distortion D^2)^2 + (bead B)^2), D and B per Zn from the input's geometry

#: Coverage of |error| <= k std for a calibrated Gaussian, k = 1, 2.
GAUSSIAN_COVERAGE = {1: 0.6827, 2: 0.9545}
VARIANCE_RULE = ("std = sqrt((scale x latent std)^2 + floor^2 + (distortion x D^2)^2 + (bead x B)^2), D the Zn's "
                 "linker distortion (Å, atomistic input; 0 otherwise), B the RMS deviation of its Zn-linker-bead "
                 "distances from the relaxed 3.186 Å; fitted on held-out framework types")


def variance_transform(model) -> tuple[float, float, float, float] | None:
    """(scale, floor in eV, distortion coefficient in eV/Å^2, bead coefficient in eV/Å) of the model's stored
    variance calibration (``calibration.variance``), or None. A model file without one (written before issue 31,
    or by ``cggpr train``) reports its latent std; missing coefficients are 0."""
    calibration = getattr(model, "calibration_", None) or {}
    variance = calibration.get("variance") if isinstance(calibration, dict) else None
    if not isinstance(variance, dict):
        return None
    values = [variance.get("scale"), variance.get("floor"), variance.get("distortion", 0.0), variance.get("bead", 0.0)]
    if not (all(is_number(v) and math.isfinite(v) and v >= 0 for v in values) and values[0] > 0):
        raise ModelError(f"the model's calibration.variance must hold a finite scale > 0 and floor, distortion and "
                         f"bead >= 0, got {variance!r}")
    return tuple(float(v) for v in values)


def calibrated_std(model, std: np.ndarray, atoms=None, connectivity=None, *,
                   distortion: np.ndarray | None = None, bead: np.ndarray | None = None) -> np.ndarray:
    """The per-Zn std a user is shown (eV): the latent GP std through the model's variance calibration
    (:func:`variance_transform`), or the latent std itself when the model has none.

    The geometry terms need, per Zn, the linker distortion and the bead distortion (Å): given, or measured on
    ``atoms`` with ``connectivity`` (:mod:`ase_cggpr.linker_geometry`); what cannot be measured counts 0."""
    std = np.asarray(std, dtype=float)
    transform = variance_transform(model)
    if transform is None:
        return std
    scale, floor, coefficient, bead_coefficient = transform
    variance = (scale * std) ** 2 + floor**2
    measurable = atoms is not None and connectivity is not None
    if coefficient > 0:
        if distortion is None and measurable:
            distortion = linker_distortion(atoms, connectivity)
        if distortion is not None:
            d = np.nan_to_num(np.asarray(distortion, dtype=float), nan=0.0)
            variance = variance + (coefficient * d**2) ** 2
    if bead_coefficient > 0:
        if bead is None and measurable:
            bead = bead_distortion(atoms, connectivity)
        if bead is not None:
            variance = variance + (bead_coefficient * np.nan_to_num(np.asarray(bead, dtype=float), nan=0.0)) ** 2
    return np.sqrt(variance)


def coverage(errors: np.ndarray, std: np.ndarray, k: float) -> float:
    """Fraction of |errors| <= k std."""
    errors, std = np.abs(np.asarray(errors, float)), np.asarray(std, float)
    return float(np.mean(errors <= k * std)) if errors.size else math.nan


def _coverage_loss(errors: np.ndarray, base: np.ndarray, floors: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Per floor: sum over groups of the squared misses of the coverage at 1 and 2 std, the std being
    sqrt(base + floor^2)."""
    s = np.sqrt(base[None, :] + floors[:, None] ** 2)  # (floors, points)
    loss = np.zeros(len(floors))
    for sel in masks:
        e, t = errors[sel][None, :], s[:, sel]
        loss += ((np.mean(e <= t, axis=1) - GAUSSIAN_COVERAGE[1]) ** 2
                 + (np.mean(e <= 2 * t, axis=1) - GAUSSIAN_COVERAGE[2]) ** 2)
    return loss


def fit_variance(errors: np.ndarray, std: np.ndarray, groups: np.ndarray | None = None, *,
                 distortion: np.ndarray | None = None, bead: np.ndarray | None = None, max_points: int = 4000,
                 seed: int = 0) -> tuple[float, float, float, float]:
    """(scale, floor in eV, distortion coefficient in eV/Å^2, bead coefficient in eV/Å) making
    ``sqrt((scale std)^2 + floor^2 + (distortion D^2)^2 + (bead B)^2)`` a calibrated Gaussian std for held-out
    ``errors`` (prediction - truth, eV) with latent ``std`` (eV), linker distortion ``D`` and bead distortion ``B``
    (Å; None: no such term).

    Minimises the sum over ``groups`` (e.g. frame kinds; each weighs the same whatever its size) of the squared
    misses of the coverage at 1 and 2 std (68.3% and 95.4%): a log grid, then a finer grid about its best point.
    At most ``max_points`` points per group are used (drawn with ``seed``)."""
    errors, std = np.abs(np.asarray(errors, float)), np.asarray(std, float)
    if errors.size == 0 or errors.shape != std.shape or not (np.isfinite(errors).all() and np.isfinite(std).all()):
        raise CGGPRError(f"need matching, finite, non-empty errors and std, got {errors.shape} and {std.shape}")
    groups = np.zeros(errors.size, int) if groups is None else np.asarray(groups)
    d2 = np.zeros(errors.size) if distortion is None else np.nan_to_num(np.asarray(distortion, float), nan=0.0) ** 2
    b = np.zeros(errors.size) if bead is None else np.nan_to_num(np.asarray(bead, float), nan=0.0)
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(groups == g))[:max_points] for g in np.unique(groups)])
    errors, std, groups, d2, b = errors[keep], std[keep], groups[keep], d2[keep], b[keep]
    masks = [groups == g for g in np.unique(groups)]
    top = max(float(np.quantile(errors, 0.99)), 1e-6)
    scales = np.geomspace(0.05, 50.0, 30)
    floors = np.concatenate([[0.0], np.geomspace(top / 1000, top, 30)])
    coefficients = np.zeros(1) if distortion is None else np.concatenate([[0.0], np.geomspace(1.0, 3000.0, 16)])
    beads = np.zeros(1) if bead is None else np.concatenate([[0.0], np.geomspace(0.01, 30.0, 16)])
    best, best_loss = (1.0, 0.0, 0.0, 0.0), math.inf
    for refine in range(2):
        for coefficient in coefficients:
            for bead_coefficient in beads:
                extra = (coefficient * d2) ** 2 + (bead_coefficient * b) ** 2
                for scale in scales:
                    loss = _coverage_loss(errors, (scale * std) ** 2 + extra, floors, masks)
                    k = int(np.argmin(loss))
                    if loss[k] < best_loss:
                        best = (float(scale), float(floors[k]), float(coefficient), float(bead_coefficient))
                        best_loss = float(loss[k])
        if refine == 0:  # a finer grid about the best point
            scale, floor, coefficient, bead_coefficient = best
            scales = scale * np.geomspace(0.8, 1.25, 9)
            floors = np.unique(np.concatenate([[0.0], max(floor, top / 1000) * np.geomspace(0.7, 1.4, 13)]))
            if distortion is not None:
                coefficients = np.unique(np.concatenate([[0.0], max(coefficient, 1.0) * np.geomspace(0.7, 1.4, 7)]))
            if bead is not None:
                beads = np.unique(np.concatenate([[0.0], max(bead_coefficient, 0.01) * np.geomspace(0.7, 1.4, 7)]))
    return best


def reliability(errors: np.ndarray, std: np.ndarray, levels: Sequence[float] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
                ) -> list[dict[str, float]]:
    """Reliability diagram: for each k, the observed fraction of |error| <= k std and a Gaussian's."""
    return [{"k": float(k), "observed": coverage(errors, std, k), "gaussian": math.erf(k / math.sqrt(2))}
            for k in levels]
