"""SOAP descriptors of the metal (A-site) environments, one interface over several backends.

:func:`soap_vectors` turns bead maps into an (n_centres, D) float64 matrix of normalised SOAP power
spectra, one row per metal in structure order. The backend (``quippy``, the reference, or ``featomic``)
is named in the :class:`~ase_cggpr.spec.ModelSpec`; both give the same vectors, element by element.

Species per representation follow the paper: atomistic Zn, N, C, H (centres Zn); AB2 A and B beads
(Si, O; centres Si); A-only A beads (Si).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import numpy as np

from ..beads import BeadMap
from ..errors import ModelError
from ..spec import ModelSpec

#: (species Z, centre Z) per representation.
SPECIES = {"atomistic": ((30, 7, 6, 1), (30,)), "AB2": ((14, 8), (14,)), "A": ((14,), (14,))}


def soap_dimension(spec: ModelSpec) -> int:
    """Length of one SOAP vector: (n_species n_max)(n_species n_max + 1)/2 (l_max + 1)."""
    n = len(SPECIES[spec.representation][0]) * spec.n_max
    return n * (n + 1) // 2 * (spec.l_max + 1)


def backend_module(name: str):
    """The module implementing descriptor backend ``name`` (imported lazily)."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name and error.name.startswith(f"{__name__}."):
            raise ModelError(f"unknown descriptor backend {name!r}") from None
        raise


def check_centres(structures: Sequence, centre_species: Sequence[int],
                  centres: Sequence[np.ndarray] | None) -> list[np.ndarray]:
    """Per structure, the atom indices of the SOAP centres to compute (int64, sorted).

    ``centres`` None means every atom whose Z is in ``centre_species``. Otherwise ``centres[k]`` must be a
    strictly increasing sequence of indices of centre-species atoms of ``structures[k]``; anything else
    raises ``ValueError``. Shared by the backends' ``compute(..., centres=...)``.
    """
    if centres is None:
        return [np.flatnonzero(np.isin(s.numbers, centre_species)) for s in structures]
    if len(centres) != len(structures):
        raise ValueError(f"centres has {len(centres)} entries for {len(structures)} structures")
    out = []
    for k, (structure, selected) in enumerate(zip(structures, centres, strict=True)):
        selected = np.asarray(selected)
        if selected.size == 0:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        if selected.ndim != 1 or not np.issubdtype(selected.dtype, np.integer):
            raise ValueError(f"centres[{k}] must be a 1-d array of atom indices")
        selected = selected.astype(np.int64)
        if np.any(np.diff(selected) <= 0):
            raise ValueError(f"centres[{k}] must be sorted without repeats")
        if selected[0] < 0 or selected[-1] >= len(structure):
            raise ValueError(f"centres[{k}] has atom indices outside 0..{len(structure) - 1}")
        if not np.isin(structure.numbers[selected], centre_species).all():
            raise ValueError(f"centres[{k}] selects atoms that are not of the centre species {tuple(centre_species)}")
        out.append(selected)
    return out


def soap_vectors(maps: Sequence[BeadMap], spec: ModelSpec, *,
                 centres: Sequence[np.ndarray] | None = None,
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Normalised SOAP vectors of every centre of every map, stacked in order: (n_centres, D) float64.

    ``centres``, if given, holds per map the sorted indices (into ``map.structure``) of the centres whose
    vectors are wanted; only those are computed. None means all centres. Rows are in map order, then
    atom order. ``progress(k)`` is called after each structure with the number of structures just finished.
    """
    species, centre_species = SPECIES[spec.representation]
    for bead_map in maps:
        if bead_map.representation != spec.representation:
            raise ModelError(f"structure {bead_map.name!r} is in the {bead_map.representation} representation "
                             f"but the model uses {spec.representation}")
    module = backend_module(spec.backend)
    return module.compute([m.structure for m in maps], species=species, centre_species=centre_species,
                          cutoff=spec.cutoff, atom_sigma=spec.atom_sigma, n_max=spec.n_max,
                          l_max=spec.l_max, cutoff_transition_width=spec.cutoff_transition_width,
                          centres=centres, progress=progress)
