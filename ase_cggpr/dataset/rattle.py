"""Rattling: Gaussian site displacements plus random cell length and angle perturbations.

Three levels, calibrated (see ``ase_cggpr/data/README.md``) so that the raw MOF-FF local
energies per Zn resemble the hZIF dataset's: about -0.29 / -0.17 / +0.28 eV mean for small /
medium / large. Two orders use them:

* ``"r-d"``: rattle the coarse-grained beads (Si/O), then decorate with ideal linkers;
* ``"d-r"``: decorate, then rattle every atom (H included).

Displacements act on Cartesian components (Å); the cell is strained affinely (fractional
coordinates kept) by relative length changes and absolute angle changes (degrees).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from ase import Atoms
from ase.geometry import cell_to_cellpar, cellpar_to_cell


@dataclasses.dataclass(frozen=True)
class RattleLevel:
    """Widths of one rattle level.

    Attributes:
        beads: std of the bead displacements in order ``"r-d"`` (Å per Cartesian component).
        atoms: std of the atom displacements in order ``"d-r"`` (Å per Cartesian component).
        length: std of the relative cell length changes (dimensionless).
        angle: std of the cell angle changes (degrees).
    """

    beads: float
    atoms: float
    length: float
    angle: float


#: The calibrated levels. Measured on 8 IZA nets (3 batches): local energy rises about
#: quadratically with the width, +0.077 eV per Zn above the ideal-linker frame ("d", about
#: -0.345 eV) for 0.04 Å on the beads and +0.041 eV for 0.006 Å on all atoms; the widths
#: were set to reach +0.055 / +0.175 / +0.625 eV (paper means -0.29 / -0.17 / +0.28 eV).
RATTLE_LEVELS: dict[str, RattleLevel] = {
    "small": RattleLevel(beads=0.034, atoms=0.007, length=0.003, angle=0.3),
    "medium": RattleLevel(beads=0.06, atoms=0.0125, length=0.006, angle=0.6),
    "large": RattleLevel(beads=0.115, atoms=0.0235, length=0.012, angle=1.2),
}

#: Orders: "d" = ideal linkers on the relaxed beads (no rattle), "r-d", "d-r".
ORDERS = ("d", "r-d", "d-r")


def get_level(level: str | RattleLevel) -> RattleLevel:
    """The :class:`RattleLevel` named ``level`` (small, medium, large) or ``level`` itself."""
    if isinstance(level, RattleLevel):
        return level
    try:
        return RATTLE_LEVELS[level]
    except KeyError:
        raise ValueError(f"unknown rattle level {level!r}; choose from "
                         f"{', '.join(RATTLE_LEVELS)}") from None


def perturb_cell(atoms: Atoms, length: float, angle: float, rng: np.random.Generator) -> Atoms:
    """Copy of ``atoms`` with cell lengths scaled by 1 + N(0, length) and angles shifted by
    N(0, angle) degrees, atoms moved affinely (fractional coordinates unchanged)."""
    out = atoms.copy()
    par = cell_to_cellpar(atoms.cell.array)
    par[:3] *= 1.0 + length * rng.standard_normal(3)
    par[3:] += angle * rng.standard_normal(3)
    new = cellpar_to_cell(par)
    # keep the orientation of the old cell: map through the deformation of the cellpar frame
    old_std = cellpar_to_cell(cell_to_cellpar(atoms.cell.array))
    rotation = np.linalg.solve(old_std, atoms.cell.array)  # old = old_std @ R
    out.set_cell(new @ rotation, scale_atoms=True)
    return out


def rattle(atoms: Atoms, sigma: float, length: float, angle: float,
           rng: np.random.Generator) -> Atoms:
    """Copy of ``atoms`` with the cell perturbed (:func:`perturb_cell`) and every Cartesian
    component of every position displaced by N(0, sigma) Å."""
    out = perturb_cell(atoms, length, angle, rng)
    out.positions = out.positions + sigma * rng.standard_normal(out.positions.shape)
    return out


def rigid_rattle(atoms: Atoms, connectivity, sigma: float, rng: np.random.Generator, *, atomic: float = 0.003) -> Atoms:
    """Copy of ``atoms`` with every metal and every whole linker displaced as a rigid body.

    Each metal and each linker (all its atoms together, per ``connectivity`` from
    :func:`ase_cggpr.beads.find_connectivity`) moves by a Gaussian of std ``sigma`` (Å per Cartesian
    component), then every atom by a small Gaussian of std ``atomic`` (Å): coarse-grained distortions,
    not stretched bonds. The cell is unchanged.
    """
    out = atoms.copy()
    out.positions[connectivity.metal_indices] += rng.normal(0.0, sigma, (connectivity.n_metals, 3))
    for linker in connectivity.linkers:
        out.positions[linker] += rng.normal(0.0, sigma, 3)
    out.positions += rng.normal(0.0, atomic, out.positions.shape)
    return out
