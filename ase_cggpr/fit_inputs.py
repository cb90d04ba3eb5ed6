"""The training inputs of a model, checked: labels per structure, total energies and forces, the metals, linkers
and descriptor species of the training structures, and the record of the data files. :class:`~ase_cggpr.model.
CGGPRModel`'s fit methods call these before any descriptor is computed."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from .beads import KNOWN_LINKERS, BeadMap, Connectivity
from .errors import ModelError
from .labels import as_label_array
from .regression import MAX_LABEL_DEVIATION
from .spec import ModelSpec

#: Metals and linkers recorded by :meth:`CGGPRModel.fit_vectors` when not given: Zn(Im)2.
CG_INPUT_METALS = ("Zn",)
CG_INPUT_LINKERS = ("C3H3N2",)


def _species(connectivity: Connectivity) -> tuple[set[str], set[str]]:
    """(metals, linker Hill formulas) of a structure; bead input names those its bead elements stand for."""
    return set(connectivity.metal_symbols), set(connectivity.linker_formulas)


def _linker_names(formulas) -> str:
    return ", ".join(f"{f} = {KNOWN_LINKERS[f]}" if f in KNOWN_LINKERS else f for f in formulas)


def _training_species(spec: ModelSpec, given: tuple, maps: Sequence[BeadMap]) -> ModelSpec:
    """``spec`` with the descriptor species of the training maps: the elements of their descriptor structures
    (neighbour species) and of their metal sites (centre species), in descending Z. Species given in the spec
    by the user (``given``: its species and centre_species before the first fit) are kept, and the training
    structures must hold no other element."""
    elements, centres = set(), set()
    for m in maps:
        numbers = m.structure.numbers
        elements.update(np.unique(numbers).tolist())
        centres.update(np.unique(numbers[np.asarray(m.centre_indices, dtype=int)]).tolist())
    found = {"species": tuple(sorted(elements, reverse=True)), "centre_species": tuple(sorted(centres, reverse=True))}
    for key, user in zip(("species", "centre_species"), given, strict=True):
        if user is None:
            continue
        extra = set(found[key]) - set(user)
        if extra:
            where = next(m.name for m in maps if set(np.unique(m.structure.numbers).tolist()) & extra)
            raise ModelError(f"training structure {where!r} holds {[chemical_symbols[z] for z in sorted(extra)]}, "
                             f"which are not in the spec's {key} {[chemical_symbols[z] for z in user]}")
        found[key] = tuple(user)
    return spec.replace(**found)


def _stack_labels(maps: Sequence[BeadMap], labels: Sequence[np.ndarray]) -> np.ndarray:
    if len(labels) != len(maps):
        raise ModelError(f"{len(labels)} label arrays for {len(maps)} structures")
    out = []
    for m, lab in zip(maps, labels, strict=True):
        lab = as_label_array(lab, what="the label array", name=m.name).ravel()
        if lab.shape != (len(m.centre_indices),):
            raise ModelError(f"structure {m.name!r}: {lab.size} labels for {len(m.centre_indices)} metal sites")
        if not np.isfinite(lab).all():
            raise ModelError(f"structure {m.name!r}: labels contain NaN or inf")
        out.append(lab)
    return np.concatenate(out)


def checked_totals(maps: Sequence[BeadMap], totals: Sequence[float], reference_energy: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(totals (eV) as floats, sites per structure) of training structures, each total finite, each structure with a
    metal site, and every total per metal within :data:`~ase_cggpr.regression.MAX_LABEL_DEVIATION` of the mean."""
    if len(totals) != len(maps):
        raise ModelError(f"{len(totals)} total energies for {len(maps)} structures")
    totals = np.asarray([float(t) for t in totals], dtype=float)
    counts = np.array([len(m.centre_indices) for m in maps])
    for m, total, n in zip(maps, totals, counts, strict=True):
        if n == 0:
            raise ModelError(f"structure {m.name!r} has no metal site to carry its total energy")
        if not np.isfinite(total):
            raise ModelError(f"structure {m.name!r}: total energy is {total} (not finite)")
    per_site = totals / counts - reference_energy
    deviation = np.abs(per_site - float(np.sum(totals - reference_energy * counts) / counts.sum()))
    worst = int(np.argmax(deviation))
    if deviation[worst] > MAX_LABEL_DEVIATION:
        raise ModelError(f"structure {maps[worst].name!r}: its total energy per metal lies "
                         f"{deviation[worst]:.3g} eV from that of all structures (limit "
                         f"{MAX_LABEL_DEVIATION:g} eV): wrong units, or a mix of calculators?")
    return totals, counts


def check_forces(maps: Sequence[BeadMap], forces: Sequence[np.ndarray | None], representation: str,
                 force_noise: float) -> None:
    """Refuse training forces that do not fit: one array (n_atoms, 3) or None per structure, atomistic models only
    (see :meth:`~ase_cggpr.model.CGGPRModel.fit_totals_maps`), a positive ``force_noise`` (eV/Å)."""
    if len(forces) != len(maps):
        raise ModelError(f"{len(forces)} force arrays for {len(maps)} structures")
    if representation != "atomistic" and any(f is not None for f in forces):
        raise ModelError(f"forces train atomistic models only; the {representation} model's energy "
                         "is a function of the bead positions, and the atomistic forces of a frame are not "
                         "its gradient (see CGGPRModel.fit_totals_maps): train it on totals alone")
    if not (np.isfinite(force_noise) and force_noise > 0):
        raise ModelError(f"force_noise must be a positive number (eV/Å), got {force_noise!r}")
    for m, f in zip(maps, forces, strict=True):
        if f is not None and np.shape(f) != (len(m.structure), 3):
            raise ModelError(f"structure {m.name!r}: forces of shape {np.shape(f)} for "
                             f"{len(m.structure)} atoms")


def describe_files(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """``[{"path", "bytes", "sha256"}]`` of data files, for a model's record of what it was trained on."""
    out = []
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        out.append({"path": str(Path(path).resolve()), "bytes": Path(path).stat().st_size,
                    "sha256": digest.hexdigest()})
    return out
