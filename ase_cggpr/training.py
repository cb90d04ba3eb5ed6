"""Training from labelled files in one call (what ``cggpr train`` runs)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from .data import expand_paths, iter_structures, load_labelled, reference_energy_from_info, split_by_group
from .errors import LabelError
from .model import CGGPRModel, describe_files
from .spec import ModelSpec


def parse_reference(reference: str | float | None, frames) -> float:
    """Reference energy per metal (eV): a number, ``"none"`` (0) or ``"auto"`` (the files' value, else 0)."""
    if reference is None or (isinstance(reference, str) and reference.lower() == "none"):
        return 0.0
    if isinstance(reference, str) and reference.lower() == "auto":
        return reference_energy_from_info(frames) or 0.0
    try:
        return float(reference)
    except ValueError:
        raise LabelError(f"reference must be a number, 'none' or 'auto', got {reference!r}") from None


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square difference (same units as the inputs)."""
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def train_model(data: Iterable[str | os.PathLike], *, representation: str = "AB2", label_key: str = "energies",
                target: str = "local", cutoff: float | None = None, atom_sigma: float | None = None,
                n_max: int = 16, l_max: int = 8, noise: float = 0.2, backend: str = "featomic",
                reference: str | float | None = "auto", n_train: int | None = None,
                test_fraction: float | None = None, group_key: str | None = None, seed: int = 0,
                progress: bool = False) -> tuple[CGGPRModel, dict[str, Any]]:
    """Train a model on labelled structure files; optionally hold out whole structure groups
    (``group_key``: their ``atoms.info`` key; default ``topology``, else ``structure_id``).

    Returns the fitted model and a summary (numbers of structures and environments, label statistics in
    eV, and the held-out RMSE in eV per metal when ``test_fraction`` is given; the held-out uncertainty
    calibration is then stored in the model, where ``cggpr screen`` takes its trust threshold from).
    """
    spec = ModelSpec(representation=representation, cutoff=cutoff, atom_sigma=atom_sigma, n_max=n_max,
                     l_max=l_max, noise=noise, backend=backend)
    data = list(data)
    labelled = load_labelled(iter_structures(data), representation=spec.representation, label_key=label_key,
                             target=target, group_key=group_key)
    model = CGGPRModel(spec, reference_energy=parse_reference(reference, labelled.frames))
    report: dict[str, Any] = {"representation": spec.representation, "cutoff (Å)": spec.cutoff,
                              "atom_sigma (Å)": spec.atom_sigma, "structures": len(labelled.frames),
                              "environments": labelled.n_environments,
                              "reference energy (eV)": model.reference_energy}
    train_set, test_set = labelled, None
    if test_fraction:
        train_idx, test_idx = split_by_group(labelled.groups, test_fraction, seed=seed)
        train_set, test_set = labelled.subset(train_idx), labelled.subset(test_idx)
    model.fit_maps(train_set.maps, train_set.labels, n_train=n_train, seed=seed, progress=progress)
    model.training_.update(  # the saved model records what it was trained on
        label_key=label_key, target=target, test_fraction=test_fraction, group_key=group_key,
        files=describe_files(expand_paths(data)))
    report["training environments"] = model.training_["n_environments"]
    if test_set is not None:
        from .screening import calibration_from_errors

        means, stds = model.predict_maps(test_set.maps, return_std=True, progress=progress)
        predicted, truth = np.concatenate(means), np.concatenate(test_set.labels) - model.reference_energy
        calibration = calibration_from_errors(predicted - truth, np.concatenate(stds), model.spec.noise)
        model.calibration_ = calibration.to_dict()
        report["test structures"] = len(test_set.frames)
        report["test environments"] = int(truth.size)
        report["test RMSE (eV/metal)"] = round(rmse(predicted, truth), 5)
        report["test label std (eV)"] = round(float(truth.std()), 5)
        report["errors within 1/2 std"] = (f"{calibration.within_1sigma_with_noise:.0%} / "
                                           f"{calibration.within_2sigma_with_noise:.0%} (std incl. noise)")
        report["trust threshold (eV)"] = round(calibration.threshold, 4)
    return model, report
