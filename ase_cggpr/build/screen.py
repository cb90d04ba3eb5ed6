"""Screening: reject structures with unphysically short interatomic contacts.

The check lives in :mod:`ase_cggpr.structure_checks` (prediction, training and labelling apply the same
limits); it is re-exported here for the build pipeline.
"""

from __future__ import annotations

from ase import Atoms

from ..structure_checks import MIN_DISTANCE, MIN_DISTANCE_H, shortest_contact

__all__ = ["MIN_DISTANCE", "MIN_DISTANCE_H", "passes_screen", "shortest_contact"]


def passes_screen(atoms: Atoms, *, min_distance: float = MIN_DISTANCE,
                  min_distance_h: float = MIN_DISTANCE_H) -> bool:
    """True when no pair of atoms is closer than the limits of :func:`shortest_contact`."""
    return shortest_contact(atoms, min_distance=min_distance, min_distance_h=min_distance_h) is None
