"""Labelled environments of structure files, with their CV groups.

The labelled-set type is :class:`ase_cggpr.io.LabelledSet` (``Environments`` here is the same class):
structures, their bonded connectivity, one label per metal environment and its CV group. This module reads
structure files into one (:func:`read_environments`) and selects frames by their ``info`` values
(:func:`select_structures`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from ase import Atoms
from ase.io import read

from ..errors import ModelError
from ..io import GROUP_KEYS, LabelledSet  # noqa: F401  (GROUP_KEYS re-exported)

#: The labelled-set type of the evaluation layer: :class:`ase_cggpr.io.LabelledSet` under its older name.
Environments = LabelledSet


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
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    frames: list[Atoms] = []
    for path in paths:
        frames.extend(read(str(path), index=":"))
    if select or exclude:
        frames = select_structures(frames, select=select, exclude=exclude)
    return Environments.from_structures(frames, **kwargs)
