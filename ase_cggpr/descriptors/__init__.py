"""SOAP descriptors of the metal (A-site) environments: one interface, two backends.

A descriptor backend is a :class:`DescriptorBackend`: typed keyword hyperparameters (``species``,
``centre_species``, ``cutoff``, ``atom_sigma``, ``n_max``, ``l_max``, ``cutoff_transition_width``, as
featomic's calculators take them) and two methods,

* :meth:`~DescriptorBackend.vectors` ``(structures, centres=None) -> (n_centres, D)`` float64 normalised
  SOAP power spectra, one row per centre, structure by structure in atom order;
* :meth:`~DescriptorBackend.gradients` ``(structure, centres=None, *, strain=False) ->``
  :class:`DescriptorGradients`: the vectors of one structure with their position gradients kept compact,
  ``.contract(dE_dx)`` giving ``dE/dr`` per atom (the chain rule through the descriptor, never the
  (n_centres, n_atoms, 3, D) Jacobian), and with ``strain=True`` also ``.contract_strain(dE_dx)`` giving
  ``dE/d(eps)`` (3, 3) under the homogeneous deformation ``r -> (1 + eps) r`` of positions and cell (the
  virial, from which the model forms the stress).

:class:`~ase_cggpr.descriptors.featomic.FeatomicBackend` (fast, default) and
:class:`~ase_cggpr.descriptors.quippy.QuippyBackend` (the reference) give the same vectors element by element.
:func:`backend_for` builds the backend a :class:`~ase_cggpr.spec.ModelSpec` names and keeps one instance per
descriptor setting, so repeated calls (a calculator in an MD run) reuse its featomic splines or quippy
descriptor. :func:`soap_vectors` is the entry the model and the evaluation use: bead maps in, vectors out,
after checking that every map holds only species the spec's descriptor knows.

The species come from the spec (``spec.effective_species``, ``spec.effective_centre_species``), which
records those of the training data (see :mod:`ase_cggpr.spec`); for Zn(Im)2 they are the paper's: atomistic
Zn, N, C, H (centres Zn); AB2 A and B beads Si, O (centres Si); A-only Si.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ..beads import BeadMap
from ..errors import ModelError
from ..spec import BACKENDS, ModelSpec

__all__ = ["DescriptorBackend", "DescriptorGradients", "backend_for", "check_centres",
           "check_species", "soap_dimension", "soap_vectors"]

def dimension(n_species: int, n_max: int, l_max: int) -> int:
    """Length of one SOAP vector: (n_species n_max)(n_species n_max + 1)/2 (l_max + 1)."""
    n = n_species * n_max
    return n * (n + 1) // 2 * (l_max + 1)


def soap_dimension(spec: ModelSpec) -> int:
    """Length of one SOAP vector of ``spec``'s descriptor (its species, n_max and l_max)."""
    return dimension(len(spec.effective_species), spec.n_max, spec.l_max)


@runtime_checkable
class DescriptorGradients(Protocol):
    """The SOAP vectors of one structure's centres and their position gradients, in contracted form.

    Attributes:
        vectors: (n_centres, D) normalised SOAP vectors, equal to the backend's ``vectors``.
        centres: (n_centres,) atom indices of the centres, in row order.
        n_atoms: number of atoms of the structure.
        has_strain: whether :meth:`contract_strain` is available (the gradients were asked with ``strain=True``).
    """

    vectors: np.ndarray
    centres: np.ndarray
    n_atoms: int
    has_strain: bool

    def contract(self, dE_dx: np.ndarray) -> np.ndarray:
        """dE/dr (n_atoms, 3) for dE/dx (n_centres, D), the derivative with respect to the normalised vectors."""
        ...

    def contract_strain(self, dE_dx: np.ndarray) -> np.ndarray:
        """dE/d(eps) (3, 3) for dE/dx (n_centres, D): ``[a, b]`` the derivative with respect to ``eps_ab`` of
        ``r_a -> r_a + eps_ab r_b`` applied to every position and the cell. ValueError without ``strain=True``."""
        ...


class DescriptorBackend:
    """A SOAP descriptor with fixed hyperparameters (keyword-only, typed, validated).

    Args:
        species: atomic numbers of the neighbour species, in channel order (atoms of other elements are
            not seen, as in quippy).
        centre_species: atomic numbers of the centres (every atom of these elements is a centre).
        cutoff: cutoff radius (Å); atom_sigma: Gaussian width of the neighbour density (Å);
        n_max, l_max: radial and angular basis sizes; cutoff_transition_width: smooth cutoff width (Å).

    Subclasses set :attr:`name` and implement :meth:`vectors` and :meth:`gradients`. Heavy state (featomic's
    splines, quippy's descriptor object) is built on first use and kept by the instance.
    """

    name: ClassVar[str] = ""

    def __init__(self, *, species: Sequence[int], centre_species: Sequence[int], cutoff: float,
                 atom_sigma: float, n_max: int = 16, l_max: int = 8, cutoff_transition_width: float = 0.5):
        self.species = tuple(int(z) for z in species)
        self.centre_species = tuple(int(z) for z in centre_species)
        if not self.species or not self.centre_species:
            raise ModelError("a descriptor needs at least one species and one centre species")
        if not set(self.centre_species) <= set(self.species):
            raise ModelError(f"centre species {list(self.centre_species)} must be among the species "
                             f"{list(self.species)}")
        self.cutoff = float(cutoff)
        self.atom_sigma = float(atom_sigma)
        self.n_max = int(n_max)
        self.l_max = int(l_max)
        self.cutoff_transition_width = float(cutoff_transition_width)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> DescriptorBackend:
        """The backend with ``spec``'s descriptor hyperparameters and species (the backend class is not checked)."""
        return cls(species=spec.effective_species, centre_species=spec.effective_centre_species,
                   cutoff=spec.cutoff, atom_sigma=spec.atom_sigma, n_max=spec.n_max, l_max=spec.l_max,
                   cutoff_transition_width=spec.cutoff_transition_width)

    @property
    def dimension(self) -> int:
        """Length D of one SOAP vector."""
        return dimension(len(self.species), self.n_max, self.l_max)

    def hypers(self) -> dict[str, Any]:
        """The keyword hyperparameters (species as tuples), as the module-level ``compute`` functions take them."""
        return dict(species=self.species, centre_species=self.centre_species, cutoff=self.cutoff,
                    atom_sigma=self.atom_sigma, n_max=self.n_max, l_max=self.l_max,
                    cutoff_transition_width=self.cutoff_transition_width)

    def to_dict(self) -> dict[str, Any]:
        """``{"backend": name, **hyperparameters}``, JSON-ready (species as lists)."""
        out = {"backend": self.name, **self.hypers()}
        out["species"], out["centre_species"] = list(self.species), list(self.centre_species)
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.hypers().items())
        return f"{type(self).__name__}({fields})"

    def vectors(self, structures: Sequence[Atoms], centres: Sequence[np.ndarray] | None = None, *,
                progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Normalised SOAP vectors (n_centres, D) float64 of the structures' centres, stacked in order.

        ``centres``, if given, holds per structure the sorted atom indices of the centre-species atoms whose
        vectors are wanted (None: all of them); only those are computed. ``progress(k)`` is called as
        structures finish, with the number just finished.
        """
        raise NotImplementedError

    def gradients(self, structure: Atoms, centres: np.ndarray | None = None, *,
                  strain: bool = False) -> DescriptorGradients:
        """The vectors of one structure's centres (all, or the sorted atom indices ``centres``) with their
        position gradients and, with ``strain``, their strain gradients (see :class:`DescriptorGradients`)."""
        raise NotImplementedError


def backend_module(name: str):
    """The module implementing descriptor backend ``name`` (imported lazily)."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name and error.name.startswith(f"{__name__}."):
            raise ModelError(f"unknown descriptor backend {name!r}") from None
        raise


def backend_class(name: str) -> type[DescriptorBackend]:
    """The :class:`DescriptorBackend` subclass of backend ``name`` (``"featomic"`` or ``"quippy"``)."""
    if name not in BACKENDS:
        raise ModelError(f"unknown descriptor backend {name!r}; choose one of {BACKENDS}")
    return backend_module(name).BACKEND


@lru_cache(maxsize=32)
def _cached_backend(name: str, species: tuple[int, ...], centre_species: tuple[int, ...], cutoff: float,
                    atom_sigma: float, n_max: int, l_max: int, width: float) -> DescriptorBackend:
    return backend_class(name)(species=species, centre_species=centre_species, cutoff=cutoff,
                               atom_sigma=atom_sigma, n_max=n_max, l_max=l_max, cutoff_transition_width=width)


def backend_for(spec: ModelSpec, backend: str | None = None) -> DescriptorBackend:
    """The descriptor backend of ``spec`` (or the backend named ``backend`` with ``spec``'s hyperparameters).

    One instance is kept per backend and descriptor setting (the 32 most recent), so every call for the same
    spec returns the same object and reuses what it built (featomic's radial splines, quippy's descriptor).
    """
    return _cached_backend(spec.backend if backend is None else backend, spec.effective_species,
                           spec.effective_centre_species, spec.cutoff, spec.atom_sigma, spec.n_max, spec.l_max,
                           spec.cutoff_transition_width)


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


def _symbols(numbers) -> list[str]:
    return [chemical_symbols[int(z)] for z in numbers]


def check_species(bead_map: BeadMap, spec: ModelSpec) -> None:
    """Refuse a map the spec's descriptor would describe wrongly, with a :class:`ModelError` naming it.

    Every element of ``bead_map.structure`` must be one of the descriptor's species (an unknown neighbour
    would be silently left out of the environment), and the descriptor's centres (the atoms of the centre
    species) must be exactly the map's metal sites.
    """
    numbers = bead_map.structure.numbers
    species, centre_species = spec.effective_species, spec.effective_centre_species
    unknown = sorted(set(np.unique(numbers).tolist()) - set(species), reverse=True)
    if unknown:
        raise ModelError(f"structure {bead_map.name!r} ({bead_map.representation}) holds {_symbols(unknown)} but "
                         f"the model's descriptor sees only {_symbols(species)} (the species it was trained on)")
    centres = np.flatnonzero(np.isin(numbers, centre_species))
    if not np.array_equal(centres, np.asarray(bead_map.centre_indices)):
        sites = sorted(set(numbers[np.asarray(bead_map.centre_indices, dtype=int)].tolist()), reverse=True)
        raise ModelError(f"structure {bead_map.name!r} ({bead_map.representation}): its metal sites are "
                         f"{_symbols(sites)} but the model's descriptor centres are {_symbols(centre_species)} "
                         "(the metals it was trained on)")


def soap_vectors(maps: Sequence[BeadMap], spec: ModelSpec, *,
                 centres: Sequence[np.ndarray] | None = None,
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Normalised SOAP vectors of every centre of every map, stacked in order: (n_centres, D) float64.

    ``centres``, if given, holds per map the sorted indices (into ``map.structure``) of the centres whose
    vectors are wanted; only those are computed. None means all centres. Rows are in map order, then
    atom order. ``progress(k)`` is called after each structure with the number of structures just finished.
    Each map is checked first (:func:`check_species`, and its representation against the spec's).
    """
    for bead_map in maps:
        if bead_map.representation != spec.representation:
            raise ModelError(f"structure {bead_map.name!r} is in the {bead_map.representation} representation "
                             f"but the model uses {spec.representation}")
        check_species(bead_map, spec)
    return backend_for(spec).vectors([m.structure for m in maps], centres, progress=progress)


def selected_vectors(maps: Sequence[BeadMap], spec: ModelSpec, rows: np.ndarray, *, chunk: int = 64,
                     progress=None) -> np.ndarray:
    """SOAP vectors (len(rows), D) of the environments ``rows`` only: the package's one selected-centres helper
    (training on a sample, the evaluation's SOAP cache, the screen's symmetry-unique centres).

    ``rows`` are sorted, unique global centre indices: the centres of ``maps[0]`` in metal order, then those of
    ``maps[1]``, ... Only the selected centres are described (``soap_vectors(..., centres=...)``; the same
    numbers as describing every centre and keeping those rows), ``chunk`` maps per call; maps with no selected
    row are skipped. ``progress(k)`` is called as :func:`~ase_cggpr.descriptors.soap_vectors` calls it.
    """
    rows = np.asarray(rows, dtype=np.int64)
    counts = np.array([len(m.centre_indices) for m in maps], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    if rows.ndim != 1 or (rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= starts[-1])):
        raise ModelError(f"rows must be sorted, unique environment indices in 0..{starts[-1] - 1}")
    owner = np.searchsorted(starts[1:], rows, side="right")
    needed = np.unique(owner)
    out = np.empty((len(rows), soap_dimension(spec)))
    filled = 0
    for begin in range(0, len(needed), chunk):
        block = needed[begin:begin + chunk]
        bounds = np.searchsorted(owner, np.append(block, block[-1] + 1))
        centres = [np.asarray(maps[k].centre_indices)[rows[a:b] - starts[k]]
                   for k, a, b in zip(block, bounds[:-1], bounds[1:], strict=True)]
        X = soap_vectors([maps[k] for k in block], spec, centres=centres, progress=progress)
        out[filled:filled + len(X)] = X
        filled += len(X)
    return out
