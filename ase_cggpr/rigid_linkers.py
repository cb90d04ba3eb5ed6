"""RigidLinkers: an ASE constraint to relax or run MD on an atomistic ZIF with a coarse-grained model.

A coarse-grained model's energy depends on the beads only (:meth:`CGGPRModel.compute
<ase_cggpr.model.CGGPRModel.compute>`): ``AB2`` on the metals and on the centroid of each linker's ring atoms,
``A`` on the metals alone. On atomistic input the H atoms (and every internal linker motion) therefore feel no
force, so an ASE optimiser or MD integrator moves the ring atoms away from their H atoms until a linker breaks
(``StructureError: ... broken linker``). This constraint removes exactly those degrees of freedom:

    atoms.set_constraint(RigidLinkers(atoms, "AB2"))     # or "A", a CGGPRModel, a CGGPRCalculator

after which every ASE optimiser (BFGS, LBFGS, FIRE, ...), cell filter (``FrechetCellFilter``,
``UnitCellFilter``) and MD integrator (``VelocityVerlet``, ``Langevin``, ...) keeps every linker intact.

What it does (each linker's shape, its atoms' offsets from its ring centroid in Å, is stored when the constraint
is made, and every move rebuilds the linker from it; the orientation is kept, since the coarse-grained energy
exerts no torque on a linker):

``AB2``  each linker is a rigid body that translates with its B bead (3 degrees of freedom per linker). Its new
         position puts the ring centroid at the centroid of the proposed ring-atom positions, so a cell filter's
         affine move carries the bead affinely (as the calculator's stress assumes) but cannot stretch the
         linker. Forces: the linker's total force (the bead force) is shared by mass, ``m_i F / M``, which is
         uniform acceleration (the B bead has the linker's mass M); momenta likewise (one velocity per linker).
         The fixed points are those of :func:`ase_cggpr.relax` on the bead structure: the same energy.
``A``    the energy ignores the linkers, so each linker follows its two metals: its ring centroid stays at the
         midpoint of its two metals plus the offset it had at the start (the linker is translated, rigid).
         A force on a linker (zero for an A model) goes half to each of its metals; in MD the linkers are
         massless followers (momentum 0, no thermostat noise), so the metals move as the A beads would alone.

Per-atom forces reported on an AB2 linker are ``m_i / M`` of the bead force (for Im, at most 14/68 of it on a
N atom), so an optimiser's ``fmax`` on the atoms is a tighter or looser test than the same ``fmax`` on the
bead structure; compare energies at converged forces.

Not stored in ASE files: ASE reads back only its own constraint classes, so a trajectory written with this
constraint attached omits it (its positions are the constrained ones) and ``ase.db`` refuses it with a clear
message; re-attach it after reading. Changing the cell with ``atoms.set_cell(..., scale_atoms=True)`` directly
scales the linkers; the cell filters are fine (they set positions through the constraint).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
from ase import Atoms
from ase.constraints import FixConstraint
from ase.geometry import find_mic

from .beads import Connectivity, find_connectivity, structure_name
from .errors import ModelError, StructureError
from .spec import canonical_representation

__all__ = ["RigidLinkers", "representation_of", "warn_free_linkers"]


def warn_free_linkers(atoms: Atoms, bead_map) -> bool:
    """Warn (UserWarning) when a coarse-grained model's forces or stress (a cell filter asks for the stress first)
    are computed on atomistic ``atoms`` without a :class:`RigidLinkers` constraint: moving such atoms (optimiser,
    cell filter, MD) breaks the linkers. Returns True when it warned (the calculator warns once).
    """
    representation = bead_map.representation
    if (representation == "atomistic" or bead_map.connectivity.coarse_grained_input
            or any(isinstance(c, RigidLinkers) for c in atoms.constraints)):
        return False
    warnings.warn(f"structure {bead_map.name!r}: the {representation} model's forces act on its beads only (the H "
                  "atoms and the linkers' shape feel none), so an ASE optimiser, cell filter or MD on these atoms "
                  "breaks the linkers; first run: from ase_cggpr import RigidLinkers; "
                  f"atoms.set_constraint(RigidLinkers(atoms, {representation!r})) "
                  "(or relax the beads with ase_cggpr.relax)", UserWarning, stacklevel=2)
    return True


def representation_of(model) -> str:
    """``"AB2"`` or ``"A"`` from a representation name, a :class:`CGGPRModel` or a :class:`CGGPRCalculator`
    (recognised by what they hold: a calculator its ``model``, a model its ``spec``; this module sits below both)."""
    if isinstance(model, str):
        representation = canonical_representation(model)
    else:
        spec = getattr(getattr(model, "model", model), "spec", None)  # a calculator holds its model
        representation = getattr(spec, "representation", None)
        if not isinstance(representation, str):
            raise ModelError(f"RigidLinkers needs a representation ('AB2' or 'A'), a CGGPRModel or a "
                             f"CGGPRCalculator, got {type(model).__name__}")
    if representation == "atomistic":
        raise ModelError("an atomistic model gives every atom its force: no RigidLinkers constraint is needed "
                         "(it is for the coarse-grained AB2 and A models on atomistic input)")
    return representation


class RigidLinkers(FixConstraint):
    """Keep every linker of an atomistic ZIF rigid while a coarse-grained model moves its beads (see the module).

    Args:
        atoms: the atomistic ZIF (its linkers' shapes are stored now, in Å).
        model: ``"AB2"`` or ``"A"``, a :class:`~ase_cggpr.model.CGGPRModel` or a
            :class:`~ase_cggpr.calculator.CGGPRCalculator`; default: ``atoms.calc`` if it is a CGGPRCalculator.
        connectivity: the atoms' :class:`~ase_cggpr.beads.Connectivity` if already found.

    Raises:
        StructureError: for bead input (already coarse-grained: nothing to keep rigid) or a structure whose
            linkers cannot be found (the message of :func:`~ase_cggpr.beads.find_connectivity`).
        ModelError: for an atomistic model or no model.
    """

    def __init__(self, atoms: Atoms, model=None, *, connectivity: Connectivity | None = None):
        if model is None:
            model = atoms.calc
            if model is None:
                raise ModelError("RigidLinkers(atoms, model): give the model ('AB2', 'A', a CGGPRModel or a "
                                 "CGGPRCalculator) or attach a CGGPRCalculator to the atoms first")
        self.representation = representation_of(model)
        name = structure_name(atoms)
        if connectivity is None:
            connectivity = find_connectivity(atoms, name=name)
        if connectivity.coarse_grained_input:
            raise StructureError("RigidLinkers is for atomistic input; this structure is already coarse-grained "
                                 "(beads), which a coarse-grained model moves as it is", structure=name)
        positions = atoms.positions
        shapes, ring_masks, metal_offsets = [], [], []
        metal_atoms = connectivity.metal_indices[connectivity.linker_metals]  # (n_linkers, 2) atom indices
        for k, (linker, ring) in enumerate(zip(connectivity.linkers, connectivity.rings, strict=True)):
            offsets, _ = find_mic(positions[linker] - positions[linker[0]], atoms.cell, pbc=True)
            in_ring = np.isin(linker, ring)
            centre = offsets[in_ring].mean(axis=0)
            shapes.append(offsets - centre)
            ring_masks.append(in_ring)
            to_metals, _ = find_mic(positions[metal_atoms[k]] - (positions[linker[0]] + centre), atoms.cell,
                                    pbc=True)
            metal_offsets.append(to_metals)
        self._set(linkers=[np.asarray(x, dtype=int) for x in connectivity.linkers], shapes=shapes,
                  ring_masks=ring_masks, metals=np.asarray(metal_atoms, dtype=int).reshape(-1, 2),
                  metal_offsets=np.asarray(metal_offsets, dtype=float).reshape(-1, 2, 3), name=name)

    def _set(self, *, linkers, shapes, ring_masks, metals, metal_offsets, name) -> None:
        """Store the per-linker data and the flat (vectorised) arrays built from it."""
        self.linkers = list(linkers)
        self.shapes = [np.asarray(s, dtype=float) for s in shapes]
        self.ring_masks = [np.asarray(r, dtype=bool) for r in ring_masks]
        self.metals = metals
        self.metal_offsets = metal_offsets
        self.name = name
        sizes = np.array([len(x) for x in self.linkers], dtype=int)
        self._index = np.concatenate(self.linkers) if self.linkers else np.zeros(0, dtype=int)
        self._owner = np.repeat(np.arange(len(self.linkers)), sizes)
        self._shape = np.concatenate(self.shapes) if self.shapes else np.zeros((0, 3))
        self._ring = np.concatenate(self.ring_masks) if self.ring_masks else np.zeros(0, dtype=bool)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        self._anchor = starts[self._owner]  # flat position of each atom's linker's first atom
        self._ring_size = np.bincount(self._owner[self._ring], minlength=len(self.linkers))

    # -- geometry ------------------------------------------------------------------------------------------------
    def _per_linker_sum(self, values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        n = len(self.linkers)
        w = np.ones(len(values)) if weights is None else weights
        return np.stack([np.bincount(self._owner, weights=values[:, x] * w, minlength=n) for x in range(3)], axis=1)

    def _ring_centroids(self, proposed: np.ndarray, cell: np.ndarray, inverse: np.ndarray) -> np.ndarray:
        """Centroid of each linker's ring atoms (Å), unwrapped with the stored shape as a guide."""
        guide = proposed[self._anchor] + self._shape - self._shape[self._anchor]
        unwrapped = proposed - np.rint((proposed - guide) @ inverse) @ cell
        n = len(self.linkers)
        ring = self._ring
        sums = np.stack([np.bincount(self._owner[ring], weights=unwrapped[ring, x], minlength=n) for x in range(3)],
                        axis=1)
        return sums / self._ring_size[:, None]

    def adjust_positions(self, atoms: Atoms, new: np.ndarray) -> None:
        """Rebuild every linker, rigid, from its stored shape at its new ring centroid (in place, Å)."""
        if not self.linkers:
            return
        cell = np.asarray(atoms.cell)
        inverse = np.linalg.inv(cell)
        proposed = new[self._index]
        centres = self._ring_centroids(proposed, cell, inverse)
        if self.representation == "A":  # the midpoint of the linker's two metals (their images bonded to it)
            metals = new[self.metals]  # (n, 2, 3)
            images = centres[:, None, :] + self.metal_offsets
            metals = metals + np.rint((images - metals) @ inverse) @ cell
            centres = metals.mean(axis=1) - self.metal_offsets.mean(axis=1)
        target = centres[self._owner] + self._shape
        new[self._index] = target + np.rint((proposed - target) @ inverse) @ cell  # each atom's periodic image kept

    def _masses(self, atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
        masses = atoms.get_masses()[self._index]
        return masses, np.bincount(self._owner, weights=masses, minlength=len(self.linkers))

    def adjust_forces(self, atoms: Atoms, forces: np.ndarray) -> None:
        """AB2: each linker's total force shared by mass (uniform acceleration); A: given to its two metals."""
        if not self.linkers:
            return
        total = self._per_linker_sum(forces[self._index])
        if self.representation == "AB2":
            masses, linker_mass = self._masses(atoms)
            forces[self._index] = (masses / linker_mass[self._owner])[:, None] * total[self._owner]
        else:
            forces[self._index] = 0.0
            np.add.at(forces, self.metals[:, 0], 0.5 * total)
            np.add.at(forces, self.metals[:, 1], 0.5 * total)

    def adjust_momenta(self, atoms: Atoms, momenta: np.ndarray) -> None:
        """AB2: one velocity per linker (its total momentum kept); A: linkers massless, momentum 0."""
        if not self.linkers:
            return
        if self.representation == "AB2":
            total = self._per_linker_sum(momenta[self._index])
            masses, linker_mass = self._masses(atoms)
            momenta[self._index] = (masses / linker_mass[self._owner])[:, None] * total[self._owner]
        else:
            momenta[self._index] = 0.0

    def redistribute_forces_md(self, atoms: Atoms, forces: np.ndarray, rand: bool = False) -> None:
        """MD forces (ASE calls this with ``get_forces(md=True)``) and, with ``rand``, Langevin's random numbers.

        Forces as :meth:`adjust_forces`. Random numbers ``xi`` (standard normal per atom, scaled by the
        integrator by 1/sqrt(m_i)): AB2 replaces a linker's by ``sqrt(m_i / M) * sum_j sqrt(m_j / M) xi_j``,
        again standard normal for the linker as a whole, so every atom gets the same random velocity, that of a
        body of mass M; A sets them to 0 (massless linkers).
        """
        if not rand:
            self.adjust_forces(atoms, forces)
            return
        if not self.linkers:
            return
        if self.representation == "AB2":
            masses, linker_mass = self._masses(atoms)
            root = np.sqrt(masses / linker_mass[self._owner])
            common = self._per_linker_sum(forces[self._index], root)
            forces[self._index] = root[:, None] * common[self._owner]
        else:
            forces[self._index] = 0.0

    def get_removed_dof(self, atoms: Atoms) -> int:
        """Degrees of freedom removed: 3 n - 3 per linker of n atoms (AB2), 3 n (A)."""
        n_atoms = int(len(self._index))
        return 3 * n_atoms - (3 * len(self.linkers) if self.representation == "AB2" else 0)

    def get_indices(self) -> np.ndarray:
        """Indices of every linker atom."""
        return np.sort(self._index)

    # -- ASE bookkeeping -----------------------------------------------------------------------------------------
    def index_shuffle(self, atoms: Atoms, ind) -> None:
        """Keep the linkers (and, for A, their metals) wholly in ``atoms[ind]``, renumbered; IndexError if none."""
        new_of_old = np.full(len(atoms), -1, dtype=int)
        selected = np.arange(len(atoms))[ind]
        new_of_old[selected] = np.arange(len(selected))
        keep = [k for k, linker in enumerate(self.linkers)
                if (new_of_old[linker] >= 0).all() and (new_of_old[self.metals[k]] >= 0).all()]
        if not keep:
            raise IndexError("RigidLinkers: no whole linker in the selection")
        self._set(linkers=[new_of_old[self.linkers[k]] for k in keep], shapes=[self.shapes[k] for k in keep],
                  ring_masks=[self.ring_masks[k] for k in keep], metals=new_of_old[self.metals[keep]],
                  metal_offsets=self.metal_offsets[keep], name=self.name)

    def repeat(self, m, n: int):
        """Refused: a linker across the cell boundary joins atoms of two different copies of the repeated cell."""
        raise NotImplementedError("RigidLinkers cannot be repeated with the atoms (a linker across the cell boundary "
                                  "joins two copies); remove it (del atoms.constraints), repeat, then attach "
                                  "RigidLinkers(repeated_atoms, model)")

    def copy(self) -> RigidLinkers:
        return copy.deepcopy(self)

    @property
    def todict(self):
        """Not available: ASE reads back only its own constraints (a trajectory then omits this one)."""
        raise AttributeError("RigidLinkers cannot be stored in ASE files (ASE reads back only its own constraint "
                             "classes); remove it first (del atoms.constraints) and re-attach it after reading")

    def __repr__(self) -> str:
        return f"RigidLinkers({len(self.linkers)} linkers, representation={self.representation!r})"
