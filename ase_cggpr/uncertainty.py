"""Uncertainty of the predicted local energies: calibration on held-out data and the trust threshold.

The per-Zn standard deviation is the GP's latent (noise-free) predictive std. :func:`calibrate` measures, on
held-out labelled data, the fraction of errors within 1 and 2 predicted sigma, with the latent std and with
the noise term added (an ideal Gaussian model gives about 68% and 95%), and picks the trust threshold by
the rule :data:`THRESHOLD_RULE`: the 99th percentile of the held-out environments' latent std. A structure
is *trusted* when none of its Zn environments has a std above the threshold, i.e. none is less covered by
the training data than 99% of the environments the model was validated on. Without a calibration the
threshold is the model's noise sigma (an environment whose latent uncertainty exceeds the label noise is
one the model is guessing about).

Variance calibration (issue 31): a model may carry ``calibration.variance`` (:func:`variance_transform`,
:data:`VARIANCE_RULE`: the latent std scaled, with a floor and terms that grow with the input's distortion, known at
prediction time: the structure's bead-angle strain, the Zn's bead distortion and linker distortion, and a factor
for ideal (unrelaxed) or unknown linkers), fitted on held-out framework types (``scripts/calibrate_shipped.py``
for the shipped models, :func:`fit_variance`); the std a user is shown (calculator ``local_energy_std``,
``cggpr predict``, the screen's ``max_std_eV``) is then :func:`calibrated_std`, and the stored trust threshold is
on that std. Models without it report the latent std.
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
from ase.geometry import find_mic
from scipy.optimize import minimize

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
# std' = m x sqrt((scale s)^2 + floor^2 + (strain (T/10 deg)^4)^2 + (bead B)^2 + (distortion D^2)^2), per Zn:
# s the latent std, T the structure's bead-angle strain, B the bead distortion, D the linker distortion, m the
# ideal-linker factor (see VARIANCE_RULE)

#: Coverage of |error| <= k std for a calibrated Gaussian, k = 1, 2.
GAUSSIAN_COVERAGE = {1: 0.6827, 2: 0.9545}
#: A Zn whose linker distortion is below this (Å) has linkers at the ideal geometry: decorated, not relaxed.
IDEAL_LINKER_DISTORTION = 1e-4
#: Reference angle of the strain term (degrees): T / STRAIN_ANGLE is raised to the 4th power.
STRAIN_ANGLE = 10.0
VARIANCE_RULE = (
    "std = m x sqrt((scale x s)^2 + floor^2 + (strain x (T / 10 deg)^4)^2 + (bead x B)^2 + (distortion x D^2)^2) "
    "per Zn: s the GP latent std (eV); T the structure's bead-angle strain (mean over its Zn of the RMS deviation of "
    "the linker-bead-Zn-linker-bead angles from 109.47 deg, degrees; strain in eV); B the Zn's bead distortion (RMS "
    "deviation of its Zn-linker-bead distances from the relaxed 3.186 Å; bead in eV/Å); D the Zn's linker "
    "distortion (Å, atomistic input, 0 for beads; distortion in eV/Å^2); m = ideal_linkers when the Zn's linkers are "
    "at the ideal geometry (D < 1e-4 Å: decorated, not relaxed) or unknown (bead input), else 1; fitted on held-out "
    "framework types")
#: Keys of ``calibration.variance`` and their defaults (a file written before a term existed lacks it).
VARIANCE_TERMS = {"scale": None, "floor": None, "strain": 0.0, "bead": 0.0, "distortion": 0.0, "ideal_linkers": 1.0}


def variance_transform(model) -> dict[str, float] | None:
    """The model's stored variance calibration (``calibration.variance``; see :data:`VARIANCE_RULE`) as
    {scale, floor (eV), strain (eV), bead (eV/Å), distortion (eV/Å^2), ideal_linkers (factor)}, or None.
    A model file without one (written before issue 31, or by ``cggpr train``) reports its latent std; missing
    terms take their neutral value (0, or 1 for the factor)."""
    calibration = getattr(model, "calibration_", None) or {}
    variance = calibration.get("variance") if isinstance(calibration, dict) else None
    if not isinstance(variance, dict):
        return None
    values = {k: variance.get(k, default) for k, default in VARIANCE_TERMS.items()}
    good = all(is_number(v) and math.isfinite(v) and v >= 0 for v in values.values())
    if not (good and values["scale"] > 0 and values["ideal_linkers"] > 0):
        raise ModelError(f"the model's calibration.variance must hold a finite scale > 0, ideal_linkers > 0 and "
                         f"floor, strain, bead and distortion >= 0, got {variance!r}")
    return {k: float(v) for k, v in values.items()}


def bead_angle_strain(atoms, connectivity) -> np.ndarray:
    """Per metal site (metal order): RMS deviation (degrees) of its linker-bead-metal-linker-bead angles from the
    tetrahedral 109.47 deg (the bead: the centroid of the linker's ring atoms, or the B bead of bead input); NaN for a
    metal without 2 linkers. About 4-7 deg in MOF-FF-relaxed frameworks, 10-15 deg in strained ones."""
    n = connectivity.n_metals
    out = np.full(n, math.nan)
    if not len(connectivity.rings):
        return out
    positions = atoms.get_positions()
    metals = np.asarray(connectivity.linker_metals, dtype=int).reshape(-1, 2)
    metal_index = np.asarray(connectivity.metal_indices, dtype=int)
    vectors: list[list[np.ndarray]] = [[] for _ in range(n)]
    for k, ring in enumerate(connectivity.rings):
        ring = np.asarray(ring, dtype=int)
        centroid = positions[ring[0]] + _mic(positions[ring] - positions[ring[0]], atoms).mean(axis=0)
        for side in (0, 1):
            m = metals[k, side]
            vectors[m].append(_mic(centroid - positions[metal_index[m]], atoms))
    for m, vs in enumerate(vectors):
        if len(vs) < 2:
            continue
        u = np.array(vs) / np.linalg.norm(vs, axis=1)[:, None]
        i, j = np.triu_indices(len(u), k=1)
        angles = np.degrees(np.arccos(np.clip(np.sum(u[i] * u[j], axis=1), -1.0, 1.0)))
        out[m] = float(np.sqrt(np.mean((angles - TETRAHEDRAL_ANGLE) ** 2)))
    return out


#: The tetrahedral angle (degrees).
TETRAHEDRAL_ANGLE = math.degrees(math.acos(-1.0 / 3.0))


def _mic(vectors: np.ndarray, atoms) -> np.ndarray:
    if not atoms.pbc.any():
        return vectors
    return find_mic(vectors.reshape(-1, 3), atoms.cell, atoms.pbc)[0].reshape(vectors.shape)


def variance_features(atoms, connectivity, *, distortion: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per Zn, what the variance calibration needs from the input's geometry: ``strain`` (the structure's mean
    :func:`bead_angle_strain`, degrees, the same for every Zn), ``bead`` (:func:`bead_distortion`, Å),
    ``distortion`` (:func:`linker_distortion`, Å; 0 for bead input) and ``ideal`` (bool: linkers at the ideal
    geometry, or bead input). ``distortion``: the per-Zn linker distortion if already measured."""
    n = connectivity.n_metals
    angle = bead_angle_strain(atoms, connectivity)
    strain = float(np.nanmean(angle)) if np.isfinite(angle).any() else 0.0
    bead = np.nan_to_num(bead_distortion(atoms, connectivity), nan=0.0)
    if connectivity.coarse_grained_input:
        d = np.zeros(n)
        ideal = np.ones(n, bool)
    else:
        d = linker_distortion(atoms, connectivity) if distortion is None else np.asarray(distortion, float)
        ideal = ~(np.nan_to_num(d, nan=0.0) >= IDEAL_LINKER_DISTORTION)
        d = np.nan_to_num(d, nan=0.0)
    return {"strain": np.full(n, strain), "bead": bead, "distortion": d, "ideal": ideal}


def _variance(p: dict[str, float], std: np.ndarray, features: dict[str, np.ndarray]) -> np.ndarray:
    """The calibrated variance (eV^2) of :data:`VARIANCE_RULE` for parameters ``p`` and per-Zn ``features``."""
    variance = (p["scale"] * std) ** 2 + p["floor"] ** 2
    if p.get("strain", 0.0) and "strain" in features:
        variance = variance + (p["strain"] * (features["strain"] / STRAIN_ANGLE) ** 4) ** 2
    if p.get("bead", 0.0) and "bead" in features:
        variance = variance + (p["bead"] * features["bead"]) ** 2
    if p.get("distortion", 0.0) and "distortion" in features:
        variance = variance + (p["distortion"] * features["distortion"] ** 2) ** 2
    if p.get("ideal_linkers", 1.0) != 1.0 and "ideal" in features:
        variance = variance * np.where(features["ideal"], p["ideal_linkers"] ** 2, 1.0)
    return variance


def calibrated_std(model, std: np.ndarray, atoms=None, connectivity=None, *,
                   distortion: np.ndarray | None = None, features: dict[str, np.ndarray] | None = None
                   ) -> np.ndarray:
    """The per-Zn std a user is shown (eV): the latent GP std through the model's variance calibration
    (:func:`variance_transform`, :data:`VARIANCE_RULE`), or the latent std itself when the model has none.

    The geometry terms are measured on ``atoms`` with ``connectivity`` (:func:`variance_features`; ``distortion``:
    the per-Zn linker distortion if already measured) or given as ``features``; without either, only the scale
    and floor apply."""
    std = np.asarray(std, dtype=float)
    transform = variance_transform(model)
    if transform is None:
        return std
    if features is None and atoms is not None and connectivity is not None:
        features = variance_features(atoms, connectivity, distortion=distortion)
    return np.sqrt(_variance(transform, std, features or {}))


def coverage(errors: np.ndarray, std: np.ndarray, k: float) -> float:
    """Fraction of |errors| <= k std."""
    errors, std = np.abs(np.asarray(errors, float)), np.asarray(std, float)
    return float(np.mean(errors <= k * std)) if errors.size else math.nan


def fit_variance(errors: np.ndarray, std: np.ndarray, groups: np.ndarray | None = None, *,
                 features: dict[str, np.ndarray] | None = None, terms: Sequence[str] = (), max_points: int = 20000,
                 seed: int = 0, method: str = "coverage", tail_weight: float = 1.0,
                 two_sigma_target: float | None = None) -> dict[str, float]:
    """The parameters of :data:`VARIANCE_RULE` ({scale, floor, strain, bead, distortion, ideal_linkers}) making it a
    calibrated Gaussian std for held-out ``errors`` (prediction - truth, eV) with latent ``std`` (eV) and per-point
    ``features`` (:func:`variance_features`' keys); ``terms``: which of strain, bead, distortion, ideal_linkers are
    fitted (the others stay neutral).

    Minimises the sum over ``groups`` (e.g. frame kinds; each weighs the same whatever its size) of the squared
    misses of the coverage at 1 and 2 std (68.3% and 95.4%; and, weighted 1/4, at 0.5 and 1.5 std, which pins scale
    and floor apart): Nelder-Mead on the log parameters, started from the
    Gaussian maximum-likelihood fit (itself smooth), the best of a few restarts. At most ``max_points`` points per
    group are used (drawn with ``seed``). ``method="ml"``: the Gaussian maximum-likelihood fit only.
    ``tail_weight``: the weight of the 2-std miss (1 by default; more makes the tails' coverage the priority);
    ``two_sigma_target``: the coverage aimed at within 2 std (default the Gaussian's 95.4%)."""
    errors, std = np.abs(np.asarray(errors, float)), np.asarray(std, float)
    if errors.size == 0 or errors.shape != std.shape or not (np.isfinite(errors).all() and np.isfinite(std).all()):
        raise CGGPRError(f"need matching, finite, non-empty errors and std, got {errors.shape} and {std.shape}")
    unknown = set(terms) - set(VARIANCE_TERMS)
    if unknown:
        raise CGGPRError(f"unknown variance terms {sorted(unknown)}; known: {list(VARIANCE_TERMS)}")
    features = {k: np.asarray(v) for k, v in (features or {}).items()}
    groups = np.zeros(errors.size, int) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(groups == g))[:max_points] for g in np.unique(groups)])
    errors, std, groups = errors[keep], std[keep], groups[keep]
    features = {k: v[keep] for k, v in features.items()}
    masks = [groups == g for g in np.unique(groups)]
    names = ["scale", "floor", *[t for t in VARIANCE_TERMS if t in terms and t not in ("scale", "floor")]]
    top = max(float(np.quantile(errors, 0.99)), 1e-6)
    start = {"scale": 1.5, "floor": 0.1 * top, "strain": 0.1 * top, "bead": 10 * top, "distortion": 1000 * top,
             "ideal_linkers": 1.5}

    def params(x: np.ndarray) -> dict[str, float]:
        return dict(zip(names, np.exp(np.clip(x, -60, 60)), strict=True))

    def nll(x: np.ndarray) -> float:
        variance = _variance(params(x), std, features) + 1e-30
        return float(sum(np.mean(errors[m] ** 2 / variance[m] + np.log(variance[m])) for m in masks))

    levels = [(k, math.erf(k / math.sqrt(2)), {1.0: 1.0, 2.0: tail_weight}.get(k, 0.25)) for k in (0.5, 1.0, 1.5, 2.0)]
    if two_sigma_target is not None:  # e.g. a margin for the heavier tails of framework types never seen
        levels[3] = (2.0, float(two_sigma_target), tail_weight)

    def loss(x: np.ndarray) -> float:
        s = np.sqrt(_variance(params(x), std, features))
        return float(sum(w * (np.mean(errors[m] <= k * s[m]) - g) ** 2 for m in masks for k, g, w in levels))

    x0 = np.log([start[n] for n in names])
    x0 = minimize(nll, x0, method="Nelder-Mead", options={"maxiter": 400 * len(names), "xatol": 1e-4,
                                                          "fatol": 1e-9}).x
    best, best_loss = x0, loss(x0)
    # restarts with simplexes of other sizes about the best point so far
    for step in ((0.3, 0.6, 0.15) if method == "coverage" else ()):
        simplex = best + step * np.vstack([np.zeros(len(names)), np.eye(len(names))])
        result = minimize(loss, best, method="Nelder-Mead",
                          options={"maxiter": 300 * len(names), "initial_simplex": simplex})
        if result.fun < best_loss:
            best, best_loss = result.x, float(result.fun)
    out = {k: (1.0 if k == "ideal_linkers" else 0.0) for k in VARIANCE_TERMS}
    out.update(params(best))
    for k in ("floor", "strain", "bead", "distortion"):  # negligible terms are written as 0
        if out[k] < 1e-9:
            out[k] = 0.0
    return {k: float(v) for k, v in out.items()}


def reliability(errors: np.ndarray, std: np.ndarray, levels: Sequence[float] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
                ) -> list[dict[str, float]]:
    """Reliability diagram: for each k, the observed fraction of |error| <= k std and a Gaussian's."""
    return [{"k": float(k), "observed": coverage(errors, std, k), "gaussian": math.erf(k / math.sqrt(2))}
            for k in levels]
