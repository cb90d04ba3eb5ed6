"""Reference SOAP backend: quippy's ``soap`` descriptor (GAP's equispaced-Gaussian radial basis).

Uses quippy's public :class:`quippy.descriptors.Descriptor` (quippy-ase 0.10): ``Descriptor(args)``,
``.dimensions()`` and ``.calc(atoms, grad=..., args_str=...)`` returning ``data`` (one row per centre),
``ci`` (1-based centre atoms) and, with ``grad=True``, ``grad_data`` (n_pairs, 3, dim) and
``grad_index_0based`` (n_pairs, 2: centre atom, neighbour atom, one pair per periodic image of a neighbour).

quippy appends one trailing element (the covariance sigma0 slot, always 0 here); it is dropped so that
vectors have the textbook dimension. Rows come out normalised to unit length.

Strain gradients (for the stress) come from featomic, not quippy: quippy's ``grad_index_0based`` names the
neighbour of each pair but not its periodic image, so the pair vectors a virial needs are not recoverable
from its output. ``gradients(..., strain=True)`` therefore also runs
:class:`~ase_cggpr.descriptors.featomic.FeatomicBackend` with the same hyperparameters (strain gradients
only), whose vectors equal quippy's element by element, so ``contract_strain`` is the strain derivative of the
same energy; this costs one extra featomic expansion per stress evaluation and needs featomic installed.

A subset of the centres is computed with quippy's ``atom_mask_name`` option: a logical per-atom array
selecting the centres; the neighbour density, species and hence the descriptor are unchanged.

:class:`QuippyBackend` is the :class:`~ase_cggpr.descriptors.DescriptorBackend` over quippy; its gradients
(:class:`QuippyGradients`) contract quippy's per-pair rows with ``dE/dx`` block by block and sum them per atom.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from ase import Atoms
from quippy.descriptors import Descriptor

from . import DescriptorBackend, check_centres
from .featomic import FeatomicBackend

#: Name of the per-atom array holding the centre mask passed to quippy.
MASK_NAME = "cggpr_centre_mask"

#: Gradient rows (centre-neighbour pairs) contracted at once by :meth:`QuippyGradients.contract`.
PAIR_BLOCK = 2048


def _new_descriptor(args: str):
    return Descriptor(args)


@lru_cache(maxsize=16)
def _descriptor(args: str):
    """A cached quippy descriptor for ``args`` (used by :func:`compute`)."""
    return _new_descriptor(args)


def descriptor_string(*, species: tuple[int, ...], centre_species: tuple[int, ...], cutoff: float,
                      atom_sigma: float, n_max: int, l_max: int, cutoff_transition_width: float) -> str:
    """The quippy descriptor argument string for these hyperparameters (lengths in Å)."""
    return (f"soap cutoff={cutoff!r} cutoff_transition_width={cutoff_transition_width!r} "
            f"atom_sigma={atom_sigma!r} n_max={n_max} l_max={l_max} normalise=T "
            f"n_species={len(species)} species_Z={{{' '.join(map(str, species))}}} "
            f"n_Z={len(centre_species)} Z={{{' '.join(map(str, centre_species))}}}")


def _masked(structure: Atoms, atoms: np.ndarray) -> Atoms:
    masked = structure.copy()
    mask = np.zeros(len(masked), dtype=bool)
    mask[atoms] = True
    masked.arrays[MASK_NAME] = mask
    return masked


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
    return _compute(descriptor, structures, centre_species, centres, progress)


def _compute(descriptor, structures: Sequence[Atoms], centre_species: Sequence[int],
             centres: Sequence[np.ndarray] | None, progress: Callable[[int], None] | None) -> np.ndarray:
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
                data = descriptor.calc(_masked(structure, atoms), args_str=f"atom_mask_name={MASK_NAME}")["data"]
            if data.shape[0] != count:
                raise RuntimeError(f"quippy returned {data.shape[0]} SOAP vectors for {count} centres")
            out[row:row + count] = data[:, :dimension]
            row += count
        if progress is not None:
            progress(1)
    return out


class QuippyGradients:
    """quippy's SOAP vectors of one structure with their per-pair position gradients.

    Attributes: ``vectors`` (n_centres, D), ``centres`` (atom indices, row order), ``n_atoms``.
    :meth:`contract` forms ``dE/dr_j = sum_i (dx_i/dr_j)^T dE/dx_i`` over quippy's (centre, neighbour image)
    pairs, :data:`PAIR_BLOCK` pairs at a time, summed per atom.
    """

    def __init__(self, result: dict, centres: np.ndarray, n_atoms: int, dimension: int, strain_source=None):
        self.n_atoms = int(n_atoms)
        self._strain_source = strain_source  # featomic SoapGradients with strain gradients, or None
        self.has_strain = strain_source is not None
        self.centres = np.asarray(centres, dtype=np.int64)
        self._dimension = dimension
        if len(self.centres):
            self.vectors = np.asarray(result["data"])[:, :dimension]
            self._index = np.asarray(result["grad_index_0based"])
            self._grad = result["grad_data"]
        else:
            self.vectors = np.zeros((0, dimension))
            self._index = np.zeros((0, 2), dtype=np.int64)
            self._grad = None
        if self.vectors.shape[0] != len(self.centres):
            raise RuntimeError(f"quippy returned {self.vectors.shape[0]} SOAP vectors for {len(self.centres)} "
                               "centres")

    def contract(self, dE_dx: np.ndarray) -> np.ndarray:
        """dE/dr (n_atoms, 3) for dE/dx given per centre as (n_centres, D) (derivative w.r.t. normalised x)."""
        dE_dx = np.asarray(dE_dx, dtype=float)
        if dE_dx.shape != self.vectors.shape:
            raise ValueError(f"dE_dx has shape {dE_dx.shape}, expected {self.vectors.shape}")
        out = np.zeros((self.n_atoms, 3))
        if self._grad is None:
            return out
        row_of_atom = np.full(self.n_atoms, -1)
        row_of_atom[self.centres] = np.arange(len(self.centres))
        index = self._index
        for start in range(0, index.shape[0], PAIR_BLOCK):
            rows = slice(start, start + PAIR_BLOCK)
            g = np.asarray(self._grad[rows])[:, :, :self._dimension]  # d x_centre / d r_neighbour
            contribution = np.einsum("gxd,gd->gx", g, dE_dx[row_of_atom[index[rows, 0]]], optimize=True)
            np.add.at(out, index[rows, 1], contribution)
        return out

    def contract_strain(self, dE_dx: np.ndarray) -> np.ndarray:
        """dE/d(eps) (3, 3) for dE/dx per centre, from featomic's strain gradients of the same vectors (see the
        module docstring); ValueError unless the gradients were asked with ``strain=True``."""
        if self._strain_source is None:
            raise ValueError("these SOAP gradients were computed without strain gradients (strain=False)")
        dE_dx = np.asarray(dE_dx, dtype=float)
        if dE_dx.shape != self.vectors.shape:
            raise ValueError(f"dE_dx has shape {dE_dx.shape}, expected {self.vectors.shape}")
        return self._strain_source.contract_strain(dE_dx)


class QuippyBackend(DescriptorBackend):
    """quippy's ``soap`` descriptor (the reference), one ``quippy.descriptors.Descriptor`` per instance."""

    name = "quippy"

    def __init__(self, **hypers):
        super().__init__(**hypers)
        self.args = descriptor_string(**self.hypers())
        self._quippy_descriptor = None
        self._featomic = None

    def descriptor(self):
        """The ``quippy.descriptors.Descriptor`` for these hyperparameters (built once)."""
        if self._quippy_descriptor is None:
            self._quippy_descriptor = _new_descriptor(self.args)
        return self._quippy_descriptor

    def vectors(self, structures: Sequence[Atoms], centres: Sequence[np.ndarray] | None = None, *,
                progress: Callable[[int], None] | None = None) -> np.ndarray:
        return _compute(self.descriptor(), structures, self.centre_species, centres, progress)

    def featomic(self):
        """The featomic backend with these hyperparameters, for strain gradients (built once)."""
        if self._featomic is None:
            self._featomic = FeatomicBackend(**self.hypers())
        return self._featomic

    def gradients(self, structure: Atoms, centres: np.ndarray | None = None, *,
                  strain: bool = False) -> QuippyGradients:
        """quippy's vectors and position gradients; with ``strain``, featomic's strain gradients too."""
        descriptor = self.descriptor()
        dimension = descriptor.dimensions() - 1
        (selected,) = check_centres([structure], self.centre_species, None if centres is None else [centres])
        strain_source = self.featomic().strain_gradients(structure, selected) if strain else None
        if not len(selected):
            return QuippyGradients({}, selected, len(structure), dimension, strain_source)
        if centres is None:
            result = descriptor.calc(structure, grad=True)
        else:
            result = descriptor.calc(_masked(structure, selected), grad=True, args_str=f"atom_mask_name={MASK_NAME}")
        described = np.asarray(result["ci"], dtype=np.int64).ravel() - 1
        if not np.array_equal(described, selected):
            raise RuntimeError(f"quippy described centres {described.tolist()[:8]}, expected "
                               f"{selected.tolist()[:8]}")
        return QuippyGradients(result, selected, len(structure), dimension, strain_source)


#: The backend class of this module (see :func:`ase_cggpr.descriptors.backend_class`).
BACKEND = QuippyBackend
