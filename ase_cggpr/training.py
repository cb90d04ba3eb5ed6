"""Training from labelled files in one call (what ``cggpr train`` runs)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from .beads import coarse_grain, find_connectivity, structure_name
from .errors import LabelError, ModelError
from .io import _group_of, expand_paths, iter_structures, load_labelled, reference_energy_from_info, split_by_group
from .labels import atom_forces, total_energy
from .metrics import rmse
from .model import DEFAULT_FORCE_NOISE, CGGPRModel, describe_files
from .regression import MAX_LABEL_DEVIATION, check_memory, exact_fit_bytes, solver_options
from .spec import ModelSpec
from .streaming import RESERVOIR_PER_INDUCING, sparse_stream_bytes
from .uncertainty import calibration_from_errors


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


def check_test_fraction(test_fraction: Any) -> float | None:
    """None (no hold-out) or a finite number strictly between 0 and 1; ModelError otherwise."""
    if test_fraction is None:
        return None
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float, np.integer, np.floating)) \
            or not 0 < float(test_fraction) < 1:
        raise ModelError(f"test_fraction must be a number strictly between 0 and 1 (the fraction of structure "
                         f"groups held out), got {test_fraction!r}; leave it unset to hold out nothing")
    return float(test_fraction)


def _solver_options(solver: str, precision: str, inducing: int | None) -> dict[str, Any]:
    """:func:`~ase_cggpr.regression.solver_options`, float64 (the default precision) left unrecorded."""
    return solver_options(solver, precision=None if precision == "float64" else precision, inducing=inducing)


def check_training_labels(labelled) -> None:
    """Refuse non-finite labels and labels more than MAX_LABEL_DEVIATION eV per metal from the mean, naming
    the structure (a unit or sign error; such labels also overflow the label statistics)."""
    for frame, lab in zip(labelled.frames, labelled.structure_labels, strict=True):
        if not np.isfinite(lab).all():
            raise LabelError(f"structure {frame.info.get('name', '?')!r}: labels contain NaN or inf")
    if not labelled.n_environments:
        return
    mean = float(np.mean(labelled.labels))
    worst, where = 0.0, None
    for frame, lab in zip(labelled.frames, labelled.structure_labels, strict=True):
        deviation = float(np.abs(lab - mean).max()) if lab.size else 0.0
        if not np.isfinite(deviation) or deviation > worst:
            worst, where = deviation, frame
    if where is not None and not worst <= MAX_LABEL_DEVIATION:
        raise LabelError(f"structure {where.info.get('name', '?')!r}: a label lies {worst:.3g} eV per metal from "
                         f"the mean of all labels (limit {MAX_LABEL_DEVIATION:g} eV; the dataset's local energies "
                         "span about 2 eV): wrong units, or a total instead of a per-metal energy?")


def training_bytes(n: int, d: int, solver: str, options: dict[str, Any]) -> int:
    """Peak bytes of a fit on n environments of dimension d: the n x d descriptors plus the solver's matrices
    (the sparse solver streams its descriptors, :mod:`ase_cggpr.streaming`: its reservoir sample, M x M
    matrices and one chunk instead)."""
    if solver == "sparse":
        m = min(int(options.get("n_inducing", 4000)), n)
        return sparse_stream_bytes(m, d, reservoir=min(RESERVOIR_PER_INDUCING * m, n), chunk_rows=min(n, 8192))
    return 8 * n * d + exact_fit_bytes(n, precision=options.get("precision", "float64"))


def check_training_memory(model: CGGPRModel, first_map, n: int, *, budget: float | None = None) -> None:
    """Refuse (ModelError) a fit whose descriptors and matrices exceed ``budget`` (default: available memory).

    The descriptor length comes from the SOAP of one structure (cheap), so nothing large is allocated.
    """
    d = model.vectors([first_map]).shape[1]
    need = training_bytes(n, d, model.solver, model.solver_options)
    what = (f"training on {n} environments (streamed sparse solver: reservoir, M x M matrices, one chunk)"
            if model.solver == "sparse" else f"training on {n} environments ({n} x {d} descriptors, "
                                             f"{model.solver} solver)")
    check_memory(need, what, budget=budget)


def train_model(data: Iterable[str | os.PathLike], *, representation: str = "AB2", label_key: str = "energies",
                target: str = "local", cutoff: float | None = None, atom_sigma: float | None = None,
                n_max: int = 16, l_max: int = 8, noise: float = 0.2, backend: str = "featomic",
                reference: str | float | None = "auto", n_train: int | None = None,
                test_fraction: float | None = None, group_key: str | None = None, seed: int = 0,
                solver: str | None = None, precision: str = "float64", inducing: int | None = None,
                memory_budget: float | None = None, energy_key: str | None = None, forces_key: str | None = None,
                force_noise: float | None = None, progress: bool = False) -> tuple[CGGPRModel, dict[str, Any]]:
    """Train a model on labelled structure files; optionally hold out whole structure groups
    (``group_key``: their ``atoms.info`` key; default ``topology``, else ``structure_id``).

    Returns the fitted model and a summary (numbers of structures and environments, label statistics in
    eV, and the held-out RMSE in eV per metal when ``test_fraction`` is given; the held-out uncertainty
    calibration is then stored in the model, where ``cggpr screen`` takes its trust threshold from).

    ``test_fraction``: None holds out nothing; otherwise a number strictly between 0 and 1 (0 is refused,
    not read as "no hold-out"). ``solver``: ``"exact"`` (``precision`` ``"float64"`` or ``"mixed"``) or
    ``"sparse"`` (``inducing`` environments M, default 4,000; streamed, :mod:`ase_cggpr.streaming`: the
    descriptors are computed 64 structures at a time and never held together). Labels must be finite and within
    :data:`~ase_cggpr.regression.MAX_LABEL_DEVIATION` (100 eV) of their mean. Before any descriptor is
    computed, the memory of the N x D descriptor matrix plus the solver's N x N (or M x M) matrices is
    compared with ``memory_budget`` bytes (default: the memory available) and an impossible fit refused.

    ``energy_key``: learn the per-metal local energies from each structure's total energy (``atoms.info`` or
    ``atoms.calc.results[energy_key]``, eV) instead of per-atom labels (:func:`train_from_totals`; sparse
    solver, the default then); with ``forces_key`` (atomistic models only) also from per-atom forces (eV/Å),
    noise ``force_noise`` eV/Å per component (default 0.1). ``solver`` defaults to ``"exact"`` for per-atom
    labels.
    """
    if forces_key is not None and energy_key is None:
        raise ModelError("forces_key needs energy_key: forces are learned together with total energies")
    if energy_key is not None:
        if target != "local":
            raise ModelError(f"target {target!r} needs per-atom energies; total energies give local energies only")
        if n_train is not None:
            raise ModelError("n_train does not apply to training from total energies (every site is used)")
        if solver not in (None, "sparse"):
            raise ModelError(f"training from total energies uses the sparse solver, not {solver!r}")
        return train_from_totals(data, representation=representation, energy_key=energy_key, cutoff=cutoff,
                                 atom_sigma=atom_sigma, n_max=n_max, l_max=l_max, noise=noise, backend=backend,
                                 reference=reference, test_fraction=test_fraction, group_key=group_key, seed=seed,
                                 solver_options=_solver_options("sparse", precision, inducing),
                                 memory_budget=memory_budget, forces_key=forces_key, force_noise=force_noise,
                                 progress=progress)
    solver = solver or "exact"
    test_fraction = check_test_fraction(test_fraction)
    solver_options = _solver_options(solver, precision, inducing)
    spec = ModelSpec(representation=representation, cutoff=cutoff, atom_sigma=atom_sigma, n_max=n_max,
                     l_max=l_max, noise=noise, backend=backend)
    data = list(data)
    labelled = load_labelled(iter_structures(data), representation=spec.representation, label_key=label_key,
                             target=target, group_key=group_key)
    check_training_labels(labelled)
    model = CGGPRModel(spec, reference_energy=parse_reference(reference, labelled.frames), solver=solver,
                       solver_options=solver_options)
    report: dict[str, Any] = {"representation": spec.representation, "cutoff (Å)": spec.cutoff,
                              "atom_sigma (Å)": spec.atom_sigma, "structures": len(labelled.frames),
                              "environments": labelled.n_environments,
                              "reference energy (eV)": model.reference_energy}
    train_set, test_set = labelled, None
    if test_fraction is not None:
        train_idx, test_idx = split_by_group(labelled.structure_groups, test_fraction, seed=seed)
        train_set, test_set = labelled.subset(train_idx), labelled.subset(test_idx)
    n_fit = train_set.n_environments if n_train is None else min(int(n_train), train_set.n_environments)
    check_training_memory(model, train_set.maps()[0], n_fit, budget=memory_budget)
    model.fit_maps(train_set.maps(), train_set.structure_labels, n_train=n_train, seed=seed, progress=progress)
    model.training_.update(  # the saved model records what it was trained on
        label_key=label_key, target=target, test_fraction=test_fraction, group_key=group_key,
        files=describe_files(expand_paths(data)))
    report["training environments"] = model.training_["n_environments"]
    if test_set is not None:
        means, stds = model.predict_maps(test_set.maps(), return_std=True, progress=progress)
        predicted, truth = np.concatenate(means), test_set.labels - model.reference_energy
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


def train_from_totals(data: Iterable[str | os.PathLike], *, representation: str = "AB2", energy_key: str = "energy",
                      cutoff: float | None = None, atom_sigma: float | None = None, n_max: int = 16,
                      l_max: int = 8, noise: float = 0.2, backend: str = "featomic",
                      reference: str | float | None = "auto", test_fraction: float | None = None,
                      group_key: str | None = None, seed: int = 0, solver_options: dict[str, Any] | None = None,
                      memory_budget: float | None = None, forces_key: str | None = None,
                      force_noise: float | None = None,
                      progress: bool = False) -> tuple[CGGPRModel, dict[str, Any]]:
    """Train per-metal local energies on the structures' total energies (what ``cggpr train --energy-key``
    runs): :meth:`~ase_cggpr.model.CGGPRModel.fit_totals_maps` (sparse solver, noise ``noise * sqrt(n_metals)``
    per structure), with ``forces_key`` also on their forces (atomistic only). Held-out groups
    (``test_fraction``) are scored on their total energy per metal (eV) (and forces, eV/Å), the labels the
    files give; no uncertainty calibration is made (it needs per-site errors)."""
    test_fraction = check_test_fraction(test_fraction)
    spec = ModelSpec(representation=representation, cutoff=cutoff, atom_sigma=atom_sigma, n_max=n_max,
                     l_max=l_max, noise=noise, backend=backend)
    data = list(data)
    frames, maps, totals, groups, forces = [], [], [], [], []
    for k, atoms in enumerate(iter_structures(data)):
        name = structure_name(atoms, fallback=f"structure {k}")
        connectivity = find_connectivity(atoms, name=name)
        totals.append(total_energy(atoms, energy_key, name=name))
        if forces_key is not None:
            forces.append(atom_forces(atoms, forces_key, name=name))
        maps.append(coarse_grain(atoms, spec.representation, connectivity=connectivity))
        groups.append(_group_of(atoms, k, name, group_key, "name")[0])
        frames.append(atoms)
    if not frames:
        raise ModelError("no structures to train on")
    totals, groups = np.asarray(totals), np.asarray(groups)
    counts = np.array([len(m.centre_indices) for m in maps])
    model = CGGPRModel(spec, reference_energy=parse_reference(reference, frames), solver="sparse",
                       solver_options=dict(solver_options or {}))
    report: dict[str, Any] = {"representation": spec.representation, "cutoff (Å)": spec.cutoff,
                              "atom_sigma (Å)": spec.atom_sigma, "structures": len(frames),
                              "environments": int(counts.sum()), "labels": f"total energies {energy_key!r}",
                              "reference energy (eV)": model.reference_energy}
    train_idx, test_idx = np.arange(len(frames)), None
    if test_fraction is not None:
        train_idx, test_idx = split_by_group(groups, test_fraction, seed=seed)
    check_training_memory(model, maps[train_idx[0]], int(counts[train_idx].sum()), budget=memory_budget)
    model.fit_totals_maps([maps[i] for i in train_idx], totals[train_idx], energy_key=energy_key,
                          forces=[forces[i] for i in train_idx] if forces_key is not None else None,
                          forces_key=forces_key,
                          force_noise=DEFAULT_FORCE_NOISE if force_noise is None else float(force_noise),
                          progress=progress)
    model.training_.update(test_fraction=test_fraction, group_key=group_key,
                           files=describe_files(expand_paths(data)))
    report["training environments"] = model.training_["n_environments"]
    if test_idx is not None:
        means = model.predict_maps([maps[i] for i in test_idx], progress=progress)
        predicted = np.array([e.sum() for e in means]) / counts[test_idx]
        truth = totals[test_idx] / counts[test_idx] - model.reference_energy
        report["test structures"] = len(test_idx)
        report["test RMSE of energy per metal (eV)"] = round(rmse(predicted, truth), 5)
        if forces_key is not None:
            errors = [model.compute(maps[i], forces=True).forces - forces[i] for i in test_idx]
            report["test force RMSE (eV/Å)"] = round(float(np.sqrt(np.mean(np.concatenate(errors) ** 2))), 5)
    return model, report
