"""Defective ZIF networks: which metal sites' predictions to trust.

Amorphous ZIFs (melt-quenched glasses, annealed networks) and real crystals have coordination defects: a Zn
with 3 or 5 linker N within 2.6 Å, a dangling linker bound to one Zn, a missing or an extra linker.
Coarse-graining with ``defects="flag"`` (:func:`ase_cggpr.beads.find_connectivity`) maps such a structure all
the same and names its defects (:class:`~ase_cggpr.beads.DefectReport`); :func:`site_trust` turns that
report into a per-site trust mask for a model of cutoff ``r_c``:

* **defective** sites: metals with a coordination other than 4, or bonded to a linker that does not bridge
  exactly 2 metals. The model has (almost) never seen such an environment: their local energies are the
  model's extrapolation;
* **affected** sites: well-formed (4-coordinated) metals whose descriptor environment (radius ``r_c``) may
  hold part of a defect: a defective metal closer than ``r_c + reach``, or an atom (bead) of a defective
  linker closer than ``r_c``. ``reach`` is the largest distance, in the structure the descriptor sees, from
  a defective metal to an atom (bead) of a linker it binds: a linker missing at a defective metal lay within
  that distance of it, so by the triangle inequality every site whose environment held an atom of it is
  flagged (0 for the A representation, whose beads are the metals alone);
* every other site is **trusted**: its environment holds no part of a defect, so its local energy is the one
  the same environment would get in a defect-free network (exactly, if the environment is unchanged).

What the total energy then means: the sum of the local energies of *all* metal sites (the defective ones as
the model's extrapolation), as for a well-formed network; :attr:`SiteTrust.trusted` says which terms are
interpolations of the training data, and ``Prediction.energy_trusted`` is the sum over the trusted sites only.
A trust mask says nothing about the model's error on a well-formed site (that is the GP std).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from ase import Atoms
from ase.geometry import find_mic
from ase.neighborlist import neighbor_list

from .beads import BeadMap

__all__ = ["SiteTrust", "site_trust"]


@dataclasses.dataclass(frozen=True)
class SiteTrust:
    """Per-site trust of one structure's prediction (sites = metals, in metal (atom-index) order).

    Attributes:
        name: the structure's name.
        metal_indices: atom index of each site in the input structure.
        metal_symbols: chemical symbol of each site's metal.
        trusted: (n_sites,) True where the site and its environment are free of defects.
        defective: sorted positions (metal order) of the defective sites.
        affected: sorted positions of the well-formed sites with a defect within their environment.
        reasons: (n_sites,) why a site is not trusted ("" for trusted sites).
        cutoff: the descriptor cutoff used (Å).
        reach: the extra radius (Å) around a defective metal (see the module docstring).
    """

    name: str
    metal_indices: np.ndarray
    metal_symbols: tuple[str, ...]
    trusted: np.ndarray
    defective: np.ndarray
    affected: np.ndarray
    reasons: tuple[str, ...]
    cutoff: float
    reach: float

    @property
    def n_sites(self) -> int:
        return len(self.trusted)

    @property
    def n_defective(self) -> int:
        return len(self.defective)

    @property
    def n_untrusted(self) -> int:
        return int(np.count_nonzero(~self.trusted))

    @property
    def all_trusted(self) -> bool:
        return bool(self.trusted.all())

    def site_state(self) -> np.ndarray:
        """(n_sites,) int: 0 trusted, 1 affected (a defect within its environment), 2 defective."""
        state = np.zeros(self.n_sites, dtype=int)
        state[self.affected] = 1
        state[self.defective] = 2
        return state

    def summary(self, limit: int = 6) -> str:
        """One line naming the defective sites (by atom index, the first ``limit``) and the counts."""
        if self.all_trusted:
            return f"structure {self.name!r}: no coordination defects; all {self.n_sites} metal sites trusted"
        shown = [f"{self.metal_symbols[k]} {int(self.metal_indices[k])} ({self.reasons[k]})"
                 for k in self.defective[:limit]]
        more = self.n_defective - len(shown)
        return (f"structure {self.name!r}: {self.n_defective} of {self.n_sites} metal sites defective ("
                + ", ".join(shown) + (f", and {more} more" if more > 0 else "")
                + f"); {len(self.affected)} more have a defect within the model's {self.cutoff:g} Å environment; "
                f"these {self.n_untrusted} local energies are extrapolations, not trusted")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able record: counts, and the atom indices of the defective and affected sites."""
        return {"n_sites": self.n_sites, "n_defective": self.n_defective, "n_affected": len(self.affected),
                "n_untrusted": self.n_untrusted, "cutoff": self.cutoff, "reach": self.reach,
                "defective_atoms": self.metal_indices[self.defective].tolist(),
                "affected_atoms": self.metal_indices[self.affected].tolist(),
                "defective_reasons": [self.reasons[k] for k in self.defective]}


def _linker_atoms(bead_map: BeadMap, linker: int) -> np.ndarray:
    """Indices in the descriptor structure of a linker's atoms (its B bead for AB2; none for A)."""
    connectivity = bead_map.connectivity
    if bead_map.representation == "atomistic":
        return np.asarray(connectivity.linkers[linker], dtype=int)
    if bead_map.representation == "AB2":
        return np.array([connectivity.n_metals + linker])
    return np.zeros(0, dtype=int)


def _reach(bead_map: BeadMap, metals: np.ndarray) -> float:
    """Largest distance (Å) from one of ``metals`` (positions) to an atom of a linker it binds."""
    connectivity = bead_map.connectivity
    if bead_map.representation == "A" or not len(metals):
        return 0.0
    chosen = np.zeros(connectivity.n_metals, dtype=bool)
    chosen[metals] = True
    pairs_m, pairs_a = [], []
    for k, (m1, m2) in enumerate(connectivity.linker_metals):
        for m in {int(m1), int(m2)} - {-1}:
            if chosen[m]:
                atoms = _linker_atoms(bead_map, k)
                pairs_m.append(np.full(len(atoms), m))
                pairs_a.append(atoms)
    if not pairs_m:  # defective metals bound to no linker: the reach of any metal in the structure
        if chosen.all():
            return 0.0
        return _reach(bead_map, np.flatnonzero(~chosen))
    structure = bead_map.structure
    centres = np.asarray(bead_map.centre_indices)[np.concatenate(pairs_m)]
    vectors = structure.positions[np.concatenate(pairs_a)] - structure.positions[centres]
    _, lengths = find_mic(vectors, structure.cell, pbc=True)
    return float(lengths.max())


def site_trust(bead_map: BeadMap, cutoff: float) -> SiteTrust:
    """The :class:`SiteTrust` of a mapped structure for a descriptor of cutoff ``cutoff`` (Å).

    Sites are trusted unless defective or within reach of a defect (module docstring). Cost: nothing for a
    well-formed structure; otherwise one neighbour search (radius ``cutoff + reach``) over the sites and the
    defects' atoms, linear in the number of sites (0.1-0.3 s for 1,728 Zn).
    """
    connectivity = bead_map.connectivity
    n = connectivity.n_metals
    report = connectivity.defects
    trusted = np.ones(n, dtype=bool)
    reasons = [""] * n
    common = dict(name=connectivity.name, metal_indices=np.asarray(connectivity.metal_indices),
                  metal_symbols=tuple(connectivity.metal_symbols), cutoff=float(cutoff))
    if not report:
        return SiteTrust(trusted=trusted, defective=np.zeros(0, dtype=int), affected=np.zeros(0, dtype=int),
                         reasons=tuple(reasons), reach=0.0, **common)
    defective = np.asarray(report.defective_metals, dtype=int)
    for k, reason in zip(defective, report.metal_reasons, strict=True):
        trusted[k], reasons[k] = False, reason
    reach = _reach(bead_map, defective)
    structure = bead_map.structure
    centres = np.asarray(bead_map.centre_indices)
    # markers: the defective metals (radius cutoff + reach) and the atoms of defective linkers (radius cutoff)
    linker_atoms = [(int(b), _linker_atoms(bead_map, int(b))) for b in report.defective_linkers]
    marker_index = np.concatenate([centres[defective]] + [a for _, a in linker_atoms]).astype(int)
    marker_label = ([f"defective {connectivity.metal_symbols[k]} {int(connectivity.metal_indices[k])}"
                     for k in defective]
                    + [f"linker {b} bridging {int(bridges)} metal(s)"
                       for (b, a), bridges in zip(linker_atoms, report.linker_bridges, strict=True) for _ in a])
    radius = np.concatenate([np.full(len(defective), cutoff + reach), np.full(len(marker_index) - len(defective),
                                                                               float(cutoff))])
    points = Atoms(positions=np.vstack([structure.positions[centres], structure.positions[marker_index]]),
                   cell=structure.cell, pbc=True)
    # one radius for the search (per-point radii would make ASE bin, and pair, every two sites within twice the
    # largest); linear in the number of sites: each has a few dozen sites within cutoff + reach
    i, j, d = neighbor_list("ijd", points, float(radius.max()), self_interaction=False)
    keep = (i < n) & (j >= n)
    i, j, d = i[keep], j[keep] - n, d[keep]
    keep = d <= radius[j]
    i, j, d = i[keep], j[keep], d[keep]
    well_formed = trusted[i]  # only the defective sites are untrusted so far
    i, j, d = i[well_formed], j[well_formed], d[well_formed]
    order = np.lexsort((d, i))  # per site, the nearest marker first
    affected, first = np.unique(i[order], return_index=True)
    for site, k in zip(affected.tolist(), order[first].tolist(), strict=True):
        trusted[site] = False
        reasons[site] = f"{marker_label[j[k]]} at {d[k]:.2f} Å"
    return SiteTrust(trusted=trusted, defective=defective, affected=affected.astype(int), reasons=tuple(reasons),
                     reach=reach, **common)

