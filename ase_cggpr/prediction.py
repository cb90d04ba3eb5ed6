"""What a prediction of one structure is: :class:`Prediction` (local energies, std, forces, stress, trust), the
refusal of a non-finite number (:func:`check_prediction`) and the bead -> atom chain rule of the forces
(:func:`bead_to_atom_gradient`). :meth:`ase_cggpr.model.CGGPRModel.compute` makes them."""

from __future__ import annotations

import dataclasses

import numpy as np

from .beads import BeadMap
from .defects import SiteTrust
from .errors import ModelError


def check_prediction(name: str, energies: np.ndarray, std: np.ndarray | None = None) -> None:
    """Refuse a prediction holding NaN or inf (a corrupt model, or a structure that overflows the kernel).

    Raises :class:`ModelError` naming the structure, so a non-finite number is never returned, ranked or
    trusted (the screen turns the error into an error row).
    """
    for what, values in (("energy", energies), ("standard deviation", std)):
        if values is not None and not np.isfinite(values).all():
            bad = int(np.size(values) - np.isfinite(values).sum())
            raise ModelError(f"structure {name!r}: the model predicted a non-finite {what} (NaN or inf) for "
                             f"{bad} of {np.size(values)} metal site(s); the model file is corrupt or the "
                             "structure overflows its kernel")


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What :meth:`CGGPRModel.compute` predicts for one structure.

    Attributes:
        local_energies: (n_metals,) local energy per metal (eV, relative to the model's reference energy),
            in metal (atom-index) order.
        std: (n_metals,) GP standard deviation per metal (eV, latent function), or None if not asked for.
        forces: (n_atoms, 3) forces on the input atoms (eV/Å), or None if not asked for.
        bead_map: the :class:`~ase_cggpr.beads.BeadMap` the descriptor saw.
        stress: (6,) stress (eV/Å^3, ASE sign, Voigt order xx yy zz yz xz xy), or None if not asked for.
        trust: per-site trust (:class:`~ase_cggpr.defects.SiteTrust`: defective sites and those with a defect
            within the cutoff are not trusted).
        vectors: (n_metals, D) the normalised descriptor vectors the energies come from (so a caller can ask
            for the std later without describing the structure again: :meth:`CGGPRModel.std_of_vectors`).
        centres: the metal-site positions predicted when only some were asked for (``compute(centres=...)``):
            ``local_energies``, ``std`` and ``vectors`` are then theirs, in this order; None: every site.
    """

    local_energies: np.ndarray
    std: np.ndarray | None
    forces: np.ndarray | None
    bead_map: BeadMap
    stress: np.ndarray | None = None
    trust: SiteTrust | None = None
    vectors: np.ndarray | None = None
    centres: np.ndarray | None = None

    @property
    def energy(self) -> float:
        """Total energy (eV): the sum of the local energies of all metal sites (for a structure with
        coordination defects, the untrusted sites' terms are the model's extrapolation: see ``trust``)."""
        return float(np.sum(self.local_energies))

    @property
    def trusted(self) -> np.ndarray:
        """(n_metals,) bool: sites free of defects within the model's cutoff (all True without ``trust``)."""
        return self.trust.trusted if self.trust is not None else np.ones(len(self.local_energies), dtype=bool)

    @property
    def energy_trusted(self) -> float:
        """Sum (eV) of the trusted sites' local energies only (equal to ``energy`` for a well-formed network)."""
        return float(np.sum(self.local_energies[self.trusted]))


def bead_to_atom_gradient(bead_map: BeadMap, bead_gradient: np.ndarray, n_atoms: int) -> np.ndarray:
    """Chain rule from the descriptor structure to the input atoms: (n_atoms, 3).

    atomistic: identity. AB2: A beads -> metals; each B bead's gradient split equally over its ring atoms
    (the bead is their centroid). A: A beads -> metals. Already coarse-grained input maps bead to bead.
    """
    connectivity = bead_map.connectivity
    out = np.zeros((n_atoms, 3))
    if bead_map.representation == "atomistic":
        out[:] = bead_gradient
        return out
    n_metals = connectivity.n_metals
    out[connectivity.metal_indices] += bead_gradient[:n_metals]
    if bead_map.representation == "AB2":
        for k, ring in enumerate(connectivity.rings):
            out[ring] += bead_gradient[n_metals + k] / len(ring)
    return out


def _input_atom_count(bead_map: BeadMap) -> int:
    """Number of atoms of the structure a bead map was made from (every atom is a metal or in a linker)."""
    if bead_map.representation == "atomistic":
        return len(bead_map.structure)
    connectivity = bead_map.connectivity
    indices = [np.asarray(connectivity.metal_indices), *map(np.asarray, connectivity.linkers)]
    return int(max(int(i.max()) for i in indices if i.size)) + 1
