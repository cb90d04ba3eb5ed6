"""Screening: reject structures with unphysically short interatomic contacts."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

#: Minimum allowed distance between any two atoms (Å).
MIN_DISTANCE = 1.0
#: Minimum allowed distance when one of the two atoms is H (Å).
MIN_DISTANCE_H = 0.6


def shortest_contact(atoms: Atoms, *, min_distance: float = MIN_DISTANCE,
                     min_distance_h: float = MIN_DISTANCE_H) -> tuple[float, int, int] | None:
    """The worst short contact of ``atoms``, or None if every pair is far enough apart.

    A pair is too short when closer than ``min_distance`` (Å), or ``min_distance_h`` (Å) when
    at least one atom is H. Returns (distance Å, i, j) of the shortest offending pair.
    """
    i, j, d = neighbor_list("ijd", atoms, max(min_distance, min_distance_h))
    keep = i < j
    i, j, d = i[keep], j[keep], d[keep]
    is_h = atoms.numbers == 1
    limit = np.where(is_h[i] | is_h[j], min_distance_h, min_distance)
    bad = d < limit
    if not bad.any():
        return None
    k = int(np.argmin(np.where(bad, d, np.inf)))
    return float(d[k]), int(i[k]), int(j[k])


def passes_screen(atoms: Atoms, *, min_distance: float = MIN_DISTANCE,
                  min_distance_h: float = MIN_DISTANCE_H) -> bool:
    """True when no pair of atoms is closer than the limits of :func:`shortest_contact`."""
    return shortest_contact(atoms, min_distance=min_distance, min_distance_h=min_distance_h) is None
