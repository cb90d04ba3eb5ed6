"""Labelled environments of structure files, with their CV groups.

The labelled-set type is :class:`ase_cggpr.io.LabelledSet` (``Environments`` here is the same class):
structures, their bonded connectivity, one label per metal environment and its CV group. This module reads
structure files into one (:func:`read_environments`) and selects frames by their ``info`` values
(:func:`select_structures`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from ase import Atoms

from ..beads import BeadMap, Connectivity, coarse_grain, find_connectivity, structure_name
from ..errors import LabelError, ModelError
from ..labels import TARGETS, local_energies
from ..spec import canonical_representation

#: Structure-info keys tried, in order, for the CV group of a structure.
GROUP_KEYS = ("framework_type", "topology", "structure_id", "net", "name")


@dataclasses.dataclass
class Environments:
    """Labelled metal environments of a set of structures, with their CV groups.

    Attributes:
        structures: the input structures (atomistic, or Si/O beads for the CG representations only).
        connectivities: one :class:`~ase_cggpr.beads.Connectivity` per structure (found once, reused for every
            representation).
        labels: (n_env,) per-metal labels (eV), structure by structure in metal order.
        groups: (n_env,) CV group of each environment (str).
        owner: (n_env,) index of the structure each environment belongs to.
        target: ``"local"`` or ``"metal"``.
        group_by: the ``atoms.info`` key(s) the groups came from, e.g. ``"connectivity"`` ("+"-joined if the
            structures differ; ``"#index"`` for structures grouped alone).
    """

    structures: list[Atoms]
    connectivities: list[Connectivity]
    labels: np.ndarray
    groups: np.ndarray
    owner: np.ndarray
    target: str = "local"
    group_by: str = ""

    @classmethod
    def from_structures(cls, structures: Iterable[Atoms], *, label_key: str | None = None,
                        target: str = "local", group_key: str | None = None,
                        labels: Sequence[np.ndarray] | None = None) -> Environments:
        """Find connectivities, form labels and read CV groups.

        Args:
            label_key: per-atom energies (``energies``, ``energy``; local energies are formed) or
                per-metal values (``e_local``, ``e_local_mofff``). Default: the first of ``energies``,
                ``energy``, ``e_local``, ``e_local_mofff`` present (per-atom energies first, as the
                Zn-only target needs them).
            target: ``"local"`` (default) or ``"metal"`` (Zn-only energy).
            group_key: ``atoms.info`` key naming the group; default the first of ``connectivity``,
                ``structure_id``, ``net``, ``name`` present; structures without any form a group each.
            labels: per-structure label arrays, instead of ``label_key``.
        """
        if target not in TARGETS:
            raise LabelError(f"unknown label target {target!r}; choose one of {TARGETS}")
        structures = list(structures)
        if not structures:
            raise ModelError("no structures given")
        connectivities, label_arrays, groups, used = [], [], [], []
        for k, atoms in enumerate(structures):
            name = structure_name(atoms, fallback=f"structure {k}")
            connectivity = find_connectivity(atoms, name=name)
            if labels is not None:
                lab = np.asarray(labels[k], dtype=float).ravel()
            else:
                key = label_key or _default_label_key(atoms)
                lab = local_energies(atoms, key=key, target=target, connectivity=connectivity)
            if lab.shape != (connectivity.n_metals,):
                raise LabelError(f"structure {name!r}: {lab.size} labels for {connectivity.n_metals} metal sites")
            if not np.isfinite(lab).all():
                raise LabelError(f"structure {name!r}: labels contain NaN or inf")
            connectivities.append(connectivity)
            label_arrays.append(lab)
            group, key = _group_of(atoms, k, group_key)
            groups.append(group)
            if key not in used:
                used.append(key)
        counts = np.array([t.n_metals for t in connectivities])
        return cls(structures=structures, connectivities=connectivities, labels=np.concatenate(label_arrays),
                   groups=np.repeat(np.array(groups, dtype=str), counts),
                   owner=np.repeat(np.arange(len(structures)), counts), target=target, group_by="+".join(used))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_groups(self) -> int:
        return len(np.unique(self.groups))

    def maps(self, representation: str) -> list[BeadMap]:
        """Bead maps of every structure in ``representation`` (connectivities reused)."""
        rep = canonical_representation(representation)
        return [coarse_grain(a, rep, connectivity=t) for a, t in zip(self.structures, self.connectivities, strict=True)]

    def fingerprint(self) -> str:
        """SHA-256 of the structures (numbers, positions, cell, pbc, in order): the cache's data key."""
        digest = hashlib.sha256()
        for atoms in self.structures:
            digest.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
            digest.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
            digest.update(np.ascontiguousarray(np.asarray(atoms.cell), dtype=np.float64).tobytes())
            digest.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
        return digest.hexdigest()


def _default_label_key(atoms: Atoms) -> str:
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    for key in ("energies", "energy", "e_local", "e_local_mofff"):
        if key in atoms.arrays or np.shape(results.get(key)) == (len(atoms),):
            return key
    raise LabelError(f"structure {structure_name(atoms)!r}: no label array found (looked for energies, energy, "
                     "e_local, e_local_mofff); pass label_key")


def _group_of(atoms: Atoms, index: int, group_key: str | None) -> tuple[str, str]:
    """(group, info key it came from) of one structure."""
    keys = (group_key,) if group_key else GROUP_KEYS
    for key in keys:
        if key in atoms.info:
            return str(atoms.info[key]), key
    if group_key:
        raise ModelError(f"structure {index} has no info[{group_key!r}] to group it by")
    return f"#{index}", "#index"


def select_structures(structures: Sequence[Atoms], *, select: dict[str, Iterable[str]] | None = None,
                      exclude: dict[str, Iterable[str]] | None = None) -> list[Atoms]:
    """Structures whose ``atoms.info`` values match: for every ``select`` key one of its values, for no
    ``exclude`` key one of its values (values compared as strings, e.g. ``exclude={"order": ["d-r"]}``).

    A key that no structure has, or a selection that leaves nothing, is an error.
    """
    select = {k: {str(v) for v in vs} for k, vs in (select or {}).items()}
    exclude = {k: {str(v) for v in vs} for k, vs in (exclude or {}).items()}
    for key in [*select, *exclude]:
        if not any(key in atoms.info for atoms in structures):
            present = sorted({k for atoms in structures for k in atoms.info})
            raise ModelError(f"no structure has info key {key!r} to select on; keys present: {present}")
    kept = [atoms for atoms in structures
            if all(str(atoms.info.get(k)) in vs for k, vs in select.items())
            and not any(str(atoms.info.get(k)) in vs for k, vs in exclude.items())]
    if not kept:
        raise ModelError(f"no structure left after selecting {select or ''} and excluding {exclude or ''}")
    return kept


def read_environments(paths: str | os.PathLike | Sequence[str | os.PathLike], *,
                      select: dict[str, Iterable[str]] | None = None, exclude: dict[str, Iterable[str]] | None = None,
                      **kwargs: Any) -> Environments:
    """Read every frame of one or more structure files (any ASE format) into :class:`Environments`.

    ``select`` / ``exclude``: keep only some frames by their ``info`` values (:func:`select_structures`).
    """
    from ase.io import read

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    frames: list[Atoms] = []
    for path in paths:
        frames.extend(read(str(path), index=":"))
    if select or exclude:
        frames = select_structures(frames, select=select, exclude=exclude)
    return Environments.from_structures(frames, **kwargs)
