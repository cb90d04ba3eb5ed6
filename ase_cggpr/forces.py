"""Deprecated: energies and forces come from one call, :meth:`ase_cggpr.model.CGGPRModel.compute`."""

from __future__ import annotations

import warnings

from .model import bead_to_atom_gradient

__all__ = ["bead_to_atom_gradient", "predict_with_forces"]


def predict_with_forces(model, atoms, bead_map=None, *, return_std=False, backend="auto"):
    """Deprecated: ``model.compute(atoms, forces=True, return_std=...)``; returns (energies, forces[, std])."""
    warnings.warn("ase_cggpr.forces.predict_with_forces is deprecated: use CGGPRModel.compute(atoms, forces=True)",
                  DeprecationWarning, stacklevel=2)
    prediction = model.compute(atoms, forces=True, return_std=return_std,
                               connectivity=None if bead_map is None else bead_map.connectivity,
                               descriptor_backend=None if backend == "auto" else backend)
    out = (prediction.local_energies, prediction.forces)
    return (*out, prediction.std) if return_std else out
