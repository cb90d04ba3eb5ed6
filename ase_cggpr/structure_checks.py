"""Checks every structure passes before it is mapped, described or labelled.

They run before any neighbour search (which is what hangs or exhausts memory on a degenerate cell) and each
failure is a :class:`~ase_cggpr.errors.StructureError` naming the structure and the numbers:

* :func:`check_cell`: atoms present, periodic in three directions, finite positions and cell, a volume per
  atom and lattice-plane spacings (face heights) of real matter;
* :func:`check_occupancy`: no partially occupied or mixed sites (CIF ``_atom_site_occupancy``);
* :func:`worst_contact` / :func:`shortest_contact` / :func:`check_contacts`: no two atoms closer than
  :data:`MIN_DISTANCE` (:data:`MIN_DISTANCE_H` when one is H). The same limits screen generated structures
  (the dataset build's contact screen uses them too), so what the build rejects, prediction and labelling refuse.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from .errors import StructureError

#: Minimum allowed distance between any two atoms (Å).
MIN_DISTANCE = 1.0
#: Minimum allowed distance when one of the two atoms is H (Å).
MIN_DISTANCE_H = 0.6
#: Volume per atom (Å^3) below which no structure is physical (diamond has 5.7; a ZIF ~ 15-20, as beads ~ 100).
MIN_VOLUME_PER_ATOM = 2.0
#: Volume per atom (Å^3) above which the cell is not a framework (wrong units, or almost only vacuum).
MAX_VOLUME_PER_ATOM = 1.0e5
#: Smallest allowed spacing (Å) of the lattice planes spanned by two cell vectors (volume / |a x b| etc.).
#: Every lattice vector is at least this long, so no atom meets its own image closer than MIN_DISTANCE; a
#: smaller spacing is a flat or extremely skewed cell, whose neighbour search explodes.
MIN_FACE_HEIGHT = 1.0
#: Tolerance on an occupancy of 1.
OCCUPANCY_TOLERANCE = 1e-3


def face_heights(cell: np.ndarray) -> np.ndarray:
    """Spacings (Å) of the lattice planes normal to b x c, c x a and a x b: volume / face area."""
    cell = np.asarray(cell, dtype=float)
    volume = abs(np.linalg.det(cell))
    areas = np.linalg.norm([np.cross(cell[1], cell[2]), np.cross(cell[2], cell[0]),
                            np.cross(cell[0], cell[1])], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(areas > 0, volume / np.where(areas > 0, areas, 1.0), 0.0)


def check_cell(atoms: Atoms, name: str) -> None:
    """Raise StructureError unless the structure has atoms, is fully periodic and has a physical cell.

    Checked in this order, all without a neighbour search: at least one atom; pbc in all three directions;
    finite positions and cell; volume per atom between :data:`MIN_VOLUME_PER_ATOM` and
    :data:`MAX_VOLUME_PER_ATOM`; every face height at least :data:`MIN_FACE_HEIGHT`.
    """
    if len(atoms) == 0:
        raise StructureError("the structure has no atoms", structure=name)
    if not np.all(atoms.pbc):
        raise StructureError(f"the structure must be periodic in all three directions (pbc={atoms.pbc.tolist()})",
                             structure=name)
    positions = atoms.positions
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise StructureError(f"non-finite (NaN or inf) positions at atom indices {bad[:10].tolist()}"
                             f"{' ...' if bad.size > 10 else ''}", structure=name)
    cell = np.asarray(atoms.cell, dtype=float)
    if not np.isfinite(cell).all():
        raise StructureError(f"the cell is not finite: {cell.tolist()}", structure=name)
    volume = abs(float(np.linalg.det(cell)))
    per_atom = volume / len(atoms)
    lengths = ", ".join(f"{x:.4g}" for x in np.linalg.norm(cell, axis=1))
    if per_atom < MIN_VOLUME_PER_ATOM:
        raise StructureError(f"the cell is degenerate or far too small: volume {volume:.4g} Å^3 for {len(atoms)} "
                             f"atoms ({per_atom:.3g} Å^3 per atom; at least {MIN_VOLUME_PER_ATOM:g} needed; "
                             f"cell vector lengths {lengths} Å)", structure=name)
    if per_atom > MAX_VOLUME_PER_ATOM:
        raise StructureError(f"the cell is far too large for its atoms: volume {volume:.4g} Å^3 for {len(atoms)} "
                             f"atoms ({per_atom:.3g} Å^3 per atom; at most {MAX_VOLUME_PER_ATOM:g}; cell vector "
                             f"lengths {lengths} Å; wrong length unit?)", structure=name)
    heights = face_heights(cell)
    if heights.min() < MIN_FACE_HEIGHT:
        k = int(np.argmin(heights))
        raise StructureError(f"the cell is nearly flat or extremely skewed: lattice planes {'abc'[k]} are "
                             f"{heights[k]:.3g} Å apart (face heights {', '.join(f'{h:.3g}' for h in heights)} Å; "
                             f"at least {MIN_FACE_HEIGHT:g} Å needed; cell vector lengths {lengths} Å). If the "
                             "lattice is valid, reduce the cell first (ase.build.niggli_reduce)", structure=name)


def check_occupancy(atoms: Atoms, name: str) -> None:
    """Raise StructureError for partially occupied or mixed sites.

    ASE's CIF reader keeps ``_atom_site_occupancy`` in ``atoms.info['occupancy']`` ({site kind: {symbol:
    occupancy}}; ``atoms.arrays['spacegroup_kinds']`` gives each atom's kind). A disordered model is not one
    structure: the descriptor would see every partial atom as a full one.
    """
    occupancy = atoms.info.get("occupancy")
    if not isinstance(occupancy, dict):
        return
    partial, mixed = [], []
    for kind, species in occupancy.items():
        if not isinstance(species, dict):
            continue
        if len(species) > 1:
            mixed.append((kind, species))
        for symbol, value in species.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise StructureError(f"site {kind} ({symbol}) has a non-numeric occupancy {value!r}",
                                     structure=name) from None
            if not abs(value - 1.0) <= OCCUPANCY_TOLERANCE:
                partial.append((kind, symbol, value))
    if partial or mixed:
        groups: dict[tuple[str, float], int] = {}
        for _, symbol, value in partial:
            groups[(symbol, value)] = groups.get((symbol, value), 0) + 1
        details = [f"{n} {symbol} site{'s' if n != 1 else ''} with occupancy {value:g}"
                   for (symbol, value), n in sorted(groups.items())]
        shared: dict[str, int] = {}
        for _, species in mixed:
            label = "/".join(sorted(species))
            shared[label] = shared.get(label, 0) + 1
        details += [f"{n} site{'s' if n != 1 else ''} shared by {label}" for label, n in sorted(shared.items())]
        raise StructureError("partially occupied or mixed sites (CIF _atom_site_occupancy): " + "; ".join(details[:6])
                             + (f"; {len(details) - 6} more" if len(details) > 6 else "")
                             + ". Give an ordered structure with every occupancy 1", structure=name)


def check_structure(atoms: Atoms, name: str) -> None:
    """:func:`check_cell` and :func:`check_occupancy`: everything that needs no neighbour search."""
    check_cell(atoms, name)
    check_occupancy(atoms, name)


def worst_contact(numbers: np.ndarray, i: np.ndarray, j: np.ndarray, d: np.ndarray, *,
                  min_distance: float = MIN_DISTANCE, min_distance_h: float = MIN_DISTANCE_H
                  ) -> tuple[float, int, int] | None:
    """The shortest offending pair (distance Å, i, j) among the pairs (i, j, d) given, or None.

    A pair is too short when closer than ``min_distance``, or ``min_distance_h`` when at least one atom is H.
    The pairs must include every pair closer than the larger limit (e.g. from ASE's neighbour list).
    """
    is_h = np.asarray(numbers) == 1
    limit = np.where(is_h[i] | is_h[j], min_distance_h, min_distance)
    bad = d < limit
    if not bad.any():
        return None
    k = int(np.argmin(np.where(bad, d, np.inf)))
    a, b = sorted((int(i[k]), int(j[k])))
    return float(d[k]), a, b


def shortest_contact(atoms: Atoms, *, min_distance: float = MIN_DISTANCE,
                     min_distance_h: float = MIN_DISTANCE_H) -> tuple[float, int, int] | None:
    """The worst short contact of ``atoms``, or None if every pair is far enough apart.

    A pair is too short when closer than ``min_distance`` (Å), or ``min_distance_h`` (Å) when
    at least one atom is H; an atom and its own periodic image count too. Returns (distance Å, i, j) of the
    shortest offending pair.
    """
    i, j, d = neighbor_list("ijd", atoms, max(min_distance, min_distance_h))
    keep = i <= j  # i == j: an atom and its own image
    return worst_contact(atoms.numbers, i[keep], j[keep], d[keep], min_distance=min_distance,
                         min_distance_h=min_distance_h)


def contact_message(atoms: Atoms, contact: tuple[float, int, int]) -> str:
    """One line describing a short contact found by :func:`worst_contact`."""
    d, a, b = contact
    symbols = atoms.get_chemical_symbols()
    limit = MIN_DISTANCE_H if "H" in (symbols[a], symbols[b]) else MIN_DISTANCE
    what = f"atom {a} ({symbols[a]}) is {d:.3g} Å from its own periodic image" if a == b else (
        f"atoms {a} ({symbols[a]}) and {b} ({symbols[b]}) are {d:.3g} Å apart")
    return (f"unphysically short contact: {what}, closer than {limit:g} Å (limits: {MIN_DISTANCE_H:g} Å with H, "
            f"{MIN_DISTANCE:g} Å otherwise)")


def check_contacts(atoms: Atoms, name: str) -> None:
    """Raise StructureError when two atoms are closer than the limits of :func:`shortest_contact`."""
    contact = shortest_contact(atoms)
    if contact is not None:
        raise StructureError(contact_message(atoms, contact), structure=name)
