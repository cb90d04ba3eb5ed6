"""The shipped models' training recipe: frame kinds, recipes, the held-out split, fit and held-out table (issue 18).

The shipped models (``ase_cggpr/models/*.npz``) were chosen and trained with these functions on a build folder
of ``scripts/build_full_dataset.py`` in which ``scripts/label_relaxed_frames.py`` also wrote the labelled MOF-FF
relaxations (``scripts/shipped_models.py`` is the command-line wrapper; the recorded command is in each model
card). The same functions work on any labelled frames, e.g. the built-in dataset (``ase_cggpr/data``), which has
no relaxed frames.

Frame kinds (from ``info['order']``): ``relaxed`` (the MOF-FF relaxation itself), ``none`` (order ``d``: ideal
linkers re-decorated on the relaxed beads, 42 meV per Zn above the relaxation on average), ``r-d`` (beads
rattled, then decorated with ideal linkers) and ``d-r`` (decorated, then every atom rattled; never used for
coarse-grained models: their energy lies in linker distortions the beads cannot see). Recipes:

* ``rd+none``: r-d and none frames (biased upward on relaxed frameworks);
* ``rd+relaxed``: r-d frames and the relaxed frames instead of the re-decorated ones;
* ``rd-shifted+relaxed``: as ``rd+relaxed``, with each r-d label lowered by its site's linker-relaxation
  energy in the same net, ``delta_i = e_none(i) - e_relaxed(i)`` (eV; the energy the linkers gain when they
  relax on the relaxed beads): an estimate of the constrained-relaxed label (linkers relaxed, beads held);
* ``relaxed``: the relaxed frames alone;
* ``rd+none+relaxed``: every frame kind but d-r, labels unshifted (atomistic models: each frame's label is the
  energy of its own atoms, so nothing needs shifting; d-r frames are left out);
* ``all``: everything including d-r (atomistic models only).

Targets (``target``): ``local`` fits the per-site labels themselves; ``totals`` fits each frame's sum of them (its
total energy, shifted as the recipe shifts it) with the sum-of-local-energies kernel
(:meth:`~ase_cggpr.model.CGGPRModel.fit_totals_maps`), for labellers whose split of the total into per-atom
energies is not physical (a machine-learned potential such as ACE: issue 30).

Held-out metrics per frame kind (:func:`evaluate`): RMSE per Zn (eV), mean error (bias, eV), and for relaxed
frames the RMSE, median and worst absolute error and Spearman rank correlation of each framework's mean energy per
Zn. Everything is seeded.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.io import iread
from scipy.stats import spearmanr

from .beads import BeadMap
from .errors import OptionError
from .io import framework_type_of, held_out_groups
from .model import CGGPRModel
from .uncertainty import calibrate

KINDS = ("relaxed", "none", "r-d", "d-r")
RECIPES = ("rd+none", "rd+relaxed", "rd-shifted+relaxed", "relaxed", "rd+none+relaxed", "all")
TARGETS = ("local", "totals")
#: Frame kinds each recipe trains on.
RECIPE_KINDS = {"rd+none": {"r-d", "none"}, "rd+relaxed": {"r-d", "relaxed"},
                "rd-shifted+relaxed": {"r-d", "relaxed"}, "relaxed": {"relaxed"},
                "rd+none+relaxed": {"r-d", "none", "relaxed"}, "all": set(KINDS)}
#: What a shipped card's ``training.data_files`` paths and ``command`` call the build folder (no machine path).
BUILD_PLACEHOLDER = "BUILD"


def frame_kind(atoms: Atoms) -> str:
    """The frame kind (one of :data:`KINDS`) of a labelled frame, from its ``info['order']``."""
    order = atoms.info.get("order")
    kinds = {"relaxed": "relaxed", "d": "none", "r-d": "r-d", "d-r": "d-r"}
    if order not in kinds:
        raise OptionError(f"structure {atoms.info.get('net', '?')!r}: info['order'] is {order!r}, not one of "
                          f"{sorted(kinds)}; the recipe needs frames of a dataset build")
    return kinds[order]


def prepare_frames(frames: Sequence[Atoms]) -> list[Atoms]:
    """Tag each frame (in place) with ``info['kind']`` and ``info['framework_type']`` (a string; the net's name
    when the frame has none, as in the built-in dataset) and return them as a list."""
    for atoms in frames:
        atoms.info["kind"] = frame_kind(atoms)
        # a key like '12e45' reads back as a float: keep it a string
        atoms.info["framework_type"] = framework_type_of(atoms) or str(atoms.info["net"])
    return list(frames)


def build_files(build: str | Path, rep: str) -> list[Path]:
    """The two files of a build folder a representation trains on: the merged frames and the relaxed frames."""
    which = "atomistic" if rep == "atomistic" else "cg"
    return [Path(build) / f"{which}.extxyz", Path(build) / f"relaxed_{which}.extxyz"]


def read_frames(build: str | Path, rep: str) -> list[Atoms]:
    """Every frame of a build folder (merged file + relaxed frames) of the representation's input kind, tagged by
    :func:`prepare_frames`."""
    frames: list[Atoms] = []
    for path in build_files(build, rep):
        frames.extend(iread(path, index=":", format="extxyz"))
    return prepare_frames(frames)


def describe_build_files(build: str | Path, rep: str) -> list[dict[str, Any]]:
    """``[{"path", "bytes", "sha256"}]`` of the build files, each path written ``BUILD/<name>`` (no machine path)."""
    out = []
    for path in build_files(build, rep):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        out.append({"path": f"{BUILD_PLACEHOLDER}/{path.name}", "bytes": path.stat().st_size,
                    "sha256": digest.hexdigest()})
    return out


def site_labels(atoms: Atoms) -> np.ndarray:
    """The finite per-site local energies (eV) of a frame, ``arrays['e_local']`` (NaN off the metal sites)."""
    e = atoms.arrays["e_local"]
    return np.asarray(e[np.isfinite(e)], dtype=float)


def linker_relaxation_shift(frames: Sequence[Atoms]) -> dict[str, np.ndarray]:
    """Per net: ``delta_i = e_none(i) - e_relaxed(i)`` per Zn site (eV), from the net's none and relaxed frames."""
    none = {a.info["net"]: site_labels(a) for a in frames if a.info["kind"] == "none"}
    relaxed = {a.info["net"]: site_labels(a) for a in frames if a.info["kind"] == "relaxed"}
    return {net: none[net] - relaxed[net] for net in none.keys() & relaxed.keys()
            if none[net].shape == relaxed[net].shape}


def split_types(frames: Sequence[Atoms], n_held: int, seed: int) -> set[str]:
    """``min(n_held, types // 5)`` framework types drawn (seeded) from the sorted framework types of ``frames``."""
    types = sorted({a.info["framework_type"] for a in frames})
    return set(held_out_groups(types, min(n_held, len(types) // 5), seed=seed).tolist())


def held_out_split(frames: Sequence[Atoms], rep: str, n_held: int, seed: int
                   ) -> tuple[set[str], list[Atoms], list[Atoms]]:
    """(held-out framework types, training frames, test frames): d-r frames are tested only for atomistic models
    (coarse-grained models never see them)."""
    held = split_types(frames, n_held, seed)
    train = [a for a in frames if a.info["framework_type"] not in held]
    test = [a for a in frames if a.info["framework_type"] in held and (a.info["kind"] != "d-r" or rep == "atomistic")]
    return held, train, test


def subsample_rattled(frames: Sequence[Atoms], n_env: int | None, seed: int) -> list[Atoms]:
    """``frames`` with its r-d and d-r frames each subsampled (seeded, whole frames) to about ``n_env``
    environments (None: all); relaxed and none frames are all kept. Used to make a held-out evaluation of an
    atomistic model affordable (its r-d and d-r test frames hold ~185,000 environments)."""
    if n_env is None:
        return list(frames)
    keep: set[int] = set()
    for rattled in ("r-d", "d-r"):
        idx = [k for k, a in enumerate(frames) if a.info["kind"] == rattled]
        if not idx:
            continue
        order = np.random.default_rng([seed, 31]).permutation(idx)
        sizes = np.array([len(site_labels(frames[k])) for k in order])
        keep |= set(order[: int(np.searchsorted(np.cumsum(sizes), n_env)) + 1].tolist())
    return [a for k, a in enumerate(frames) if a.info["kind"] not in ("r-d", "d-r") or k in keep]


def training_set(frames: Sequence[Atoms], recipe: str, shifts: dict[str, np.ndarray], *, n_rd: int | None,
                 seed: int) -> tuple[list[Atoms], list[np.ndarray]]:
    """(frames, labels in eV) of a recipe; r-d and d-r frames each subsampled (seeded) to about ``n_rd``
    environments (None: all). ``shifts``: :func:`linker_relaxation_shift` (used by ``rd-shifted+relaxed``)."""
    if recipe not in RECIPES:
        raise OptionError(f"unknown recipe {recipe!r}; choose from {RECIPES}")
    kinds = RECIPE_KINDS[recipe]
    chosen = [a for a in frames if a.info["kind"] in kinds]
    for rattled in ("r-d", "d-r"):
        rd = [k for k, a in enumerate(chosen) if a.info["kind"] == rattled]
        if n_rd is not None and rd:
            rng = np.random.default_rng([seed, 18])
            order = rng.permutation(rd)
            sizes = np.array([len(site_labels(chosen[k])) for k in order])
            keep = set(order[: int(np.searchsorted(np.cumsum(sizes), n_rd)) + 1].tolist())
            chosen = [a for k, a in enumerate(chosen) if a.info["kind"] != rattled or k in keep]
    out, labels = [], []
    for a in chosen:
        y = site_labels(a)
        if recipe == "rd-shifted+relaxed" and a.info["kind"] == "r-d":
            delta = shifts.get(a.info["net"])
            if delta is None or delta.shape != y.shape:
                continue
            y = y - delta
        out.append(a)
        labels.append(y)
    return out, labels


def _maps(model: CGGPRModel, frames: Sequence[Atoms]) -> list[BeadMap]:
    return [model.bead_map(a, name=f"{a.info['net']}/{a.info['kind']}") for a in frames]


def fit(rep: str, frames: Sequence[Atoms], labels: Sequence[np.ndarray], *, inducing: int, seed: int,
        progress: bool = False, basis: dict[str, float] | None = None, target: str = "local",
        weights: Sequence[float] | None = None) -> CGGPRModel:
    """Streamed sparse GPR of the representation on ``inducing`` inducing environments; reference energy: the
    first frame's ``info['reference_energy']`` (eV per Zn); ``basis``: SOAP ``n_max`` / ``l_max`` / ``cutoff`` (Å) /
    ``atom_sigma`` (Å) (default: the paper's); ``target``: fit the per-site ``labels`` (``local``) or each frame's
    sum of them (``totals``, eV); ``weights``: one per frame (local target; its noise variance ``noise^2 / w``,
    as repeating the frame w times)."""
    if target not in TARGETS:
        raise OptionError(f"unknown target {target!r}; choose from {TARGETS}")
    reference = float(frames[0].info["reference_energy"])
    model = CGGPRModel(representation=rep, reference_energy=reference, solver="sparse",
                       solver_options={"n_inducing": inducing, "seed": seed}, **(basis or {}))
    if target == "totals":
        if weights is not None:
            raise OptionError("per-frame weights are for the local target")
        model.fit_totals_maps(_maps(model, frames), [float(np.sum(y)) for y in labels], progress=progress)
    else:
        model.fit_maps(_maps(model, frames), labels, seed=seed, progress=progress, weights=weights)
    model.training_["target"] = target
    return model


def evaluate(model: CGGPRModel, frames: Sequence[Atoms], *, progress: bool = False
             ) -> tuple[dict[str, dict[str, Any]], list[BeadMap], list[np.ndarray], list[np.ndarray]]:
    """(held-out table per frame kind, bead maps, predicted means, latent std) on labelled ``frames``.

    The table: per kind present, ``frames``, ``environments``, ``rmse`` and ``bias`` (eV per Zn, against the raw
    labels), ``spearman`` (rank correlation of the frames' predicted and labelled energy per Zn, when defined);
    for ``relaxed`` frames (one per framework) also ``rmse_per_framework``, ``median_abs_per_framework``,
    ``worst_framework`` (its net) and ``worst_framework_error`` (eV per Zn)."""
    maps = _maps(model, frames)
    means, stds = model.predict_maps(maps, return_std=True, progress=progress)
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        idx = [k for k, a in enumerate(frames) if a.info["kind"] == kind]
        if not idx:
            continue
        err = np.concatenate([means[k] + model.reference_energy - site_labels(frames[k]) for k in idx])
        row: dict[str, Any] = {"frames": len(idx), "environments": int(err.size),
                               "rmse": float(np.sqrt(np.mean(err**2))), "bias": float(err.mean())}
        pred = np.array([means[k].mean() + model.reference_energy for k in idx])
        true = np.array([site_labels(frames[k]).mean() for k in idx])
        if kind != "relaxed" and len(idx) > 2 and np.ptp(true) > 0 and np.ptp(pred) > 0:
            row["spearman"] = float(spearmanr(pred, true).statistic)  # ranks of the frames' energy per Zn
        if kind == "relaxed":
            row.update(rmse_per_framework=float(np.sqrt(np.mean((pred - true) ** 2))),
                       median_abs_per_framework=float(np.median(np.abs(pred - true))),
                       worst_framework=str(frames[idx[int(np.argmax(np.abs(pred - true)))]].info["net"]),
                       worst_framework_error=float(np.max(np.abs(pred - true))),
                       spearman=float(spearmanr(pred, true).statistic))
        out[kind] = row
    return out, maps, means, stds


def select(frames: Sequence[Atoms], rep: str, recipes: Sequence[str], *, n_rd: int | None, inducing: int,
           n_held: int = 50, seed: int = 0, basis: dict[str, float] | None = None,
           on_row: Any = None, target: str = "local") -> list[dict[str, Any]]:
    """Model selection: each recipe fitted on the training framework types of :func:`held_out_split` and
    evaluated on the held-out ones; one row per recipe (``rep``, ``recipe``, ``inducing``, ``n_train_env``,
    ``seconds``, ``metrics``: the :func:`evaluate` table). ``on_row(row)`` is called as each row is done."""
    shifts = linker_relaxation_shift(frames)
    _, train, test = held_out_split(frames, rep, n_held, seed)
    rows = []
    for recipe in recipes:
        t = time.perf_counter()
        tr, labels = training_set(train, recipe, shifts, n_rd=n_rd, seed=seed)
        model = fit(rep, tr, labels, inducing=inducing, seed=seed, basis=basis, target=target)
        metrics, *_ = evaluate(model, test)
        row = {"rep": rep, "recipe": recipe, "inducing": inducing,
               "n_train_env": model.training_["n_environments"], "seconds": round(time.perf_counter() - t),
               "metrics": metrics}
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def train(frames: Sequence[Atoms], rep: str, recipe: str, *, n_rd: int | None, inducing: int, n_held: int = 50,
          seed: int = 0, final: str = "all", basis: dict[str, float] | None = None, progress: bool = False,
          target: str = "local", n_test_rd: int | None = None) -> tuple[CGGPRModel, dict[str, Any]]:
    """A shipped model: held-out validation (errors per frame kind, uncertainty calibration), then the model
    shipped: ``final="validated"`` the validated model itself (it never saw the held-out framework types),
    ``"all"`` the same recipe retrained on every framework type (``n_rd`` scaled to the larger set).
    ``n_test_rd``: evaluate on about this many held-out r-d and d-r environments each
    (:func:`subsample_rattled`; None: all of them).

    Returns (model, {"held_out": table, "calibration": dict}); the model's ``calibration_`` and ``training_``
    record the recipe, frame kinds, rattle levels, counts and the held-out validation (framework types, seed,
    nets, metrics). A caller adds ``data_files``, ``dataset`` and ``command`` to ``training_`` before saving."""
    if final not in ("all", "validated"):
        raise OptionError(f"final must be 'all' or 'validated', got {final!r}")
    shifts = linker_relaxation_shift(frames)
    held, train_frames, test = held_out_split(frames, rep, n_held, seed)
    test = subsample_rattled(test, n_test_rd, seed)
    tr, labels = training_set(train_frames, recipe, shifts, n_rd=n_rd, seed=seed)
    validation = fit(rep, tr, labels, inducing=inducing, seed=seed, progress=progress, basis=basis, target=target)
    metrics, maps, _, _ = evaluate(validation, test)
    calibration = calibrate(validation, maps, [site_labels(a) for a in test]).to_dict()
    if final == "validated":  # ship the validated model itself: its held-out errors are its own
        model = validation
    else:
        n_rd_all = None if n_rd is None else int(n_rd * len(frames) / max(len(train_frames), 1))
        tr, labels = training_set(frames, recipe, shifts, n_rd=n_rd_all, seed=seed)
        model = fit(rep, tr, labels, inducing=inducing, seed=seed, progress=progress, basis=basis, target=target)
    model.calibration_ = calibration
    model.training_.update(
        recipe=recipe, frame_kinds=sorted({a.info["kind"] for a in tr}),
        rattle_levels=sorted({a.info["rattle"] for a in tr}), nets=len({a.info["net"] for a in tr}),
        framework_types=len({a.info["framework_type"] for a in tr}), frames=len(tr),
        held_out_validation={"framework_types": len(held), "seed": seed, "n_test_rd": n_test_rd,
                             "nets": sorted({a.info["net"] for a in test}), "metrics": metrics,
                             "model": ("this model" if final == "validated"
                                       else "same recipe, trained without them")})
    return model, {"held_out": metrics, "calibration": calibration}
