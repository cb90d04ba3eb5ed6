"""Reference SOAP backend: quippy's ``soap`` descriptor (GAP's equispaced-Gaussian radial basis).

quippy appends one trailing element (the covariance sigma0 slot, always 0 here); it is dropped so that
vectors have the textbook dimension. Rows come out normalised to unit length.

A subset of the centres is computed with quippy's ``atom_mask_name`` option: a logical per-atom array
selecting the centres; the neighbour density, species and hence the descriptor are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from ase import Atoms

from . import check_centres

#: Name of the per-atom array holding the centre mask passed to quippy.
MASK_NAME = "cggpr_centre_mask"


@lru_cache(maxsize=16)
def _descriptor(args: str):
    from quippy.descriptors import Descriptor

    return Descriptor(args)


def descriptor_string(*, species: tuple[int, ...], centre_species: tuple[int, ...], cutoff: float,
                      atom_sigma: float, n_max: int, l_max: int, cutoff_transition_width: float) -> str:
    """The quippy descriptor argument string for these hyperparameters (lengths in Å)."""
    return (f"soap cutoff={cutoff!r} cutoff_transition_width={cutoff_transition_width!r} "
            f"atom_sigma={atom_sigma!r} n_max={n_max} l_max={l_max} normalise=T "
            f"n_species={len(species)} species_Z={{{' '.join(map(str, species))}}} "
            f"n_Z={len(centre_species)} Z={{{' '.join(map(str, centre_species))}}}")


def compute(structures: Sequence[Atoms], *, species: tuple[int, ...], centre_species: tuple[int, ...],
            cutoff: float, atom_sigma: float, n_max: int, l_max: int,
            cutoff_transition_width: float = 0.5, centres: Sequence[np.ndarray] | None = None,
            progress: Callable[[int], None] | None = None) -> np.ndarray:
    """SOAP vectors (n_centres, D) of the atoms whose Z is in ``centre_species``, frame by frame.

    ``centres``, if given, holds per structure the sorted indices of the centre-species atoms whose
    vectors are wanted (None: all of them); rows are in structure order, then atom order.
    """
    descriptor = _descriptor(descriptor_string(
        species=tuple(species), centre_species=tuple(centre_species), cutoff=cutoff, atom_sigma=atom_sigma,
        n_max=n_max, l_max=l_max, cutoff_transition_width=cutoff_transition_width))
    dimension = descriptor.dimensions() - 1
    structures = list(structures)
    selected = check_centres(structures, centre_species, centres)
    counts = [len(s) for s in selected]
    out = np.empty((sum(counts), dimension))
    row = 0
    for structure, atoms, count in zip(structures, selected, counts, strict=True):
        if count:
            if centres is None:
                data = descriptor.calc(structure)["data"]
            else:
                masked = structure.copy()
                mask = np.zeros(len(masked), dtype=bool)
                mask[atoms] = True
                masked.arrays[MASK_NAME] = mask
                data = descriptor.calc(masked, args_str=f"atom_mask_name={MASK_NAME}")["data"]
            if data.shape[0] != count:
                raise RuntimeError(f"quippy returned {data.shape[0]} SOAP vectors for {count} centres")
            out[row:row + count] = data[:, :dimension]
            row += count
        if progress is not None:
            progress(1)
    return out
