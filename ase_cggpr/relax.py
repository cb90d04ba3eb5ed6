"""Relaxation on a CG-GPR model's energy surface: positions and (optionally) the cell, with ASE optimisers.

:func:`relax` takes a structure and a model (a :class:`~ase_cggpr.model.CGGPRModel`, a model file or shipped
name, or a :class:`~ase_cggpr.calculator.CGGPRCalculator`) and minimises the model's energy:

* coarse-grained models (``AB2``, ``A``): the structure relaxed is the bead structure (Si/O, A beads on the
  metals, B beads at the linker-ring centroids). Bead input is relaxed as it is; atomistic input is
  coarse-grained first with the model's bead mapping (:meth:`CGGPRModel.bead_map`, always to AB2 beads: an
  A-only model's energy ignores the B beads, which then feel no force but keep the bead net readable);
* atomistic models: every atom (H atoms too; see :meth:`CGGPRModel.compute` for what the forces mean).

Positions are moved by ``ase.optimize`` (``BFGS``, with the initial Hessian :data:`BFGS_ALPHA` suited to bead
structures, or ``FIRE``); with ``cell=True`` the cell too, through
``ase.filters.FrechetCellFilter`` (needs ``'stress'`` in the calculator's ``implemented_properties``; a
calculator without it is refused with a :class:`~ase_cggpr.errors.ModelError` before any work).

Symmetric relaxation (``symmetry=True``, the default; issue 29, chosen by measurement): a coarse-grained structure
with a space group (spglib, tolerance ``symprec``; an idealised net has its net's) is relaxed in that group first:
``ase.constraints.FixSymmetry`` keeps it, and :class:`SymmetricCalculator` computes the energy, forces and stress
from one metal site per symmetry orbit (3-5 x fewer SOAP centres and kernel rows on the held-out IZA nets; the same
numbers as the full calculation for a symmetric structure). With ``optimizer="BFGS"`` the relaxation runs in the
group's reduced coordinates (:class:`ReducedCoordinates`: symmetric atomic displacements and cell strains, a few
to ~130 numbers instead of 3 per bead + 9; no ``FixSymmetry`` or ``FrechetCellFilter`` at each step) with ASE's BFGS
update and step rule (:func:`reduced_bfgs`; its eigendecomposition is of a k x k matrix, not 3N x 3N), strain steps
limited to :data:`MAX_STRAIN_STEP` instead of the cell filter's 0.2 / N, and, with at most
:data:`MAX_NUMERICAL_HESSIAN_DOF` coordinates, from the model's numerical Hessian in them (:func:`reduced_hessian`,
one model call per coordinate) instead of ``BFGS_ALPHA`` times the identity: 1.3-3 x fewer steps (BEC 91 -> 28,
ITW 82 -> 35, BIK 48 -> 26 with the shipped AB2). The start is evaluated by the symmetric calculator too; the end
is checked by the full calculation without the constraint (the convergence check below); if it fails, the
relaxation goes on in the full space (ASE's BFGS). ``optimizer="FIRE"`` keeps ``FixSymmetry`` on the atoms with the
cell filter for its symmetric phase. A symmetric stationary point
can be a saddle of the full surface (the symmetry then traps the relaxation where the full-space one might escape
through noise): ``symmetry=False`` relaxes in the full space from the start.

Energies are per metal (eV, relative to the model's reference energy, like every prediction of the model).
The reported std of the energy per metal is the mean of the per-metal GP standard deviations: an upper bound
of the std of their mean (which would need the GP covariance between sites).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.io import Trajectory
from ase.optimize import BFGS, FIRE
from ase.spacegroup.symmetrize import symmetrize_rank1, symmetrize_rank2

from .beads import coarse_grain, find_connectivity, is_coarse_grained, structure_name
from .calculator import CGGPRCalculator
from .errors import CGGPRError, ModelError, StructureError
from .model import CGGPRModel
from .prediction import bead_to_atom_gradient, check_prediction

__all__ = ["OPTIMIZERS", "RelaxResult", "relax"]

#: Optimisers accepted by name.
OPTIMIZERS = ("BFGS", "FIRE")
#: Default stress criterion (eV/Å^3): 1e-4 eV/Å^3 = 16 MPa = 158 atm.
DEFAULT_SMAX = 1e-4
#: Default spglib tolerance (Å) of the symmetric relaxation (``symmetry=True``; the screen's default too).
DEFAULT_SYMPREC = 1e-3
#: Initial Hessian (eV/Å^2) of ``optimizer="BFGS"`` (ASE's default is 70, for stiff atomistic bonds). Chosen by
#: measurement (issue 29, ``benchmarks/relax_strategies.py``) on held-out idealised nets relaxed with the shipped
#: AB2 model, positions and cell, fmax 0.01: 10 takes about half the steps of ASE's 70 (MTW, 28 Zn: 176 -> 78
#: steps, 30 were 102; evaluations SBN 37 -> 18, MON 37 -> 25) at the same or lower relaxed energies; 5 is as fast
#: on some nets, 3 is unstable (MON 120 evaluations). A bead net's cell degrees of freedom are soft (FrechetCellFilter
#: divides the virial by the number of beads), so a small initial Hessian helps them most. Over 20 held-out nets of
#: at most 66 Zn (``scripts/cg_relax_vs_mofff.py AB2 --n 20 --max-zn 66``): median 90 -> 72 steps, 18.2 -> 10.2 s CPU
#: per net; 17 nets take about half the steps to the same energy, 3 (BEC, RWR, AEL) take 3-5 x more and end in a
#: different, lower minimum (RWR by 76 meV/Zn): the larger first steps can leave the start's basin.
BFGS_ALPHA = 10.0


@dataclasses.dataclass
class RelaxResult:
    """Outcome of :func:`relax`.

    Attributes:
        name: the structure's name.
        atoms: the relaxed structure the model sees (beads for coarse-grained models, all atoms for atomistic
            ones), with a :class:`~ase.calculators.singlepoint.SinglePointCalculator` holding the final energy
            (eV), forces (eV/Å) and, for cell relaxations, stress (eV/Å^3); ``info`` records the numbers below.
        n_metals: number of metal sites.
        energy_per_metal: final energy per metal (eV, relative to the model's reference energy).
        energy_std: mean per-metal GP std of the final state (eV; an upper bound of the std of the mean; computed
            once, for the final state: the optimiser's steps never compute the std).
        max_site_std: largest per-metal GP std of the final state (eV).
        initial_energy_per_metal: energy per metal of the start (eV).
        converged: the final check passed (max force < fmax and, with ``cell``, max |stress| < smax).
        n_steps: optimiser steps taken.
        seconds: wall time (s).
        max_force: largest atomic force norm of the final state (eV/Å).
        max_stress: largest |stress component| of the final state (eV/Å^3), None for fixed-cell relaxations.
        cell_relaxed: whether the cell was relaxed.
        message: one line summing it up.
        n_defective: coordination-defective metal sites of the final state (``defects="flag"``;
            :mod:`ase_cggpr.defects`).
        n_untrusted: metal sites of the final state whose local energy is not trusted (defective, or a defect
            within the model's cutoff); the energy per metal averages them too.
    """

    name: str
    atoms: Atoms
    n_metals: int
    energy_per_metal: float
    energy_std: float
    max_site_std: float
    initial_energy_per_metal: float
    converged: bool
    n_steps: int
    seconds: float
    max_force: float
    max_stress: float | None
    cell_relaxed: bool
    message: str
    n_defective: int = 0
    n_untrusted: int = 0

    @property
    def energy_per_zn(self) -> float:
        """The energy per metal (eV) under the name used for Zn(Im)2."""
        return self.energy_per_metal


class SymmetricCalculator(Calculator):
    """Energy, forces and stress of a symmetric coarse-grained structure from one metal site per symmetry orbit.

    For a structure with the space-group operations g (spglib, through :class:`ase.constraints.FixSymmetry`,
    which keeps the relaxed structure in that group), the local energy of every metal in an orbit o equals that of
    its representative r_o, so the energy is ``E = sum_o m_o e(r_o)`` (m_o metals in the orbit) and its gradient
    is ``sum_o m_o Sym(grad e(r_o))``, ``Sym`` the average over the group's operations (the images of a site's
    gradient are its gradient transformed by the operations); likewise the virial. So one descriptor and kernel
    evaluation of the representatives (3-5 x fewer centres on the held-out IZA nets) gives the energy, forces and
    stress of the whole cell, equal to the full calculation's for a symmetric structure (to the symmetry
    tolerance). Only valid while the structure keeps the symmetry: use it with the :class:`FixSymmetry` it was
    built from.

    Results: ``energy``, ``free_energy`` (eV), ``forces`` (eV/Å), ``stress`` (eV/Å^3, ASE's Voigt order),
    ``local_energies`` (eV, per metal, each its representative's). The connectivity of every call is checked by
    the full calculator (:meth:`CGGPRCalculator.connectivity`), as in a full call.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "local_energies"]

    def __init__(self, full: CGGPRCalculator, atoms: Atoms, constraint: FixSymmetry):
        super().__init__()
        self.full = full
        self.model = full.model
        self.rotations = np.asarray(constraint.rotations)
        self.translations = np.asarray(constraint.translations)
        self.symm_map = [np.asarray(m) for m in constraint.symm_map]
        bead_map = self.model.bead_map(atoms, connectivity=full.connectivity(atoms),
                                       defects=full.parameters.get("defects", "flag"))
        metals = np.asarray(bead_map.centre_indices)  # descriptor-structure atom indices, metal order
        images = np.stack(self.symm_map)  # (n_ops, n_atoms): op k sends atom i to images[k, i]
        orbit = images.min(axis=0)  # the smallest index of each atom's orbit
        n_atoms = len(atoms)
        if any(np.unique(m).size != n_atoms for m in self.symm_map) or not np.isin(orbit[metals], metals).all():
            raise ValueError("the symmetry operations are not permutations of the atoms that keep metal sites")
        self.representatives = np.unique(orbit[metals])  # sorted atom indices
        self.site_of = np.searchsorted(self.representatives, orbit[metals])  # metal k -> its representative's row
        self.multiplicity = np.bincount(self.site_of, minlength=len(self.representatives)).astype(float)
        self.n_metals = len(metals)

    @property
    def reduction(self) -> float:
        """Metal sites per representative (1: no symmetry to exploit)."""
        return self.n_metals / max(len(self.representatives), 1)

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        full = self.full
        bead_map = self.model.bead_map(atoms, connectivity=full.connectivity(atoms),
                                       defects=full.parameters.get("defects", "flag"))
        structure = bead_map.structure
        backend = self.model.descriptor_backend(full.parameters.get("descriptor_backend"))
        gradients = backend.gradients(structure, centres=self.representatives, strain=True)
        if not np.array_equal(np.asarray(gradients.centres), self.representatives):
            raise ModelError(f"structure {bead_map.name!r}: descriptor centres do not match the symmetry orbits")
        energies, _, dE_dx = self.model._predict(gradients.vectors, gradient=True, return_std=False, precision=None)
        check_prediction(bead_map.name, energies, None)
        weighted = self.multiplicity[:, None] * dE_dx
        cell = np.asarray(structure.cell[:])
        inverse = np.linalg.inv(cell)
        gradient = symmetrize_rank1(cell, inverse, gradients.contract(weighted), self.rotations, self.translations,
                                    self.symm_map)
        forces = -bead_to_atom_gradient(bead_map, gradient, len(atoms))
        virial = gradients.contract_strain(weighted)
        sigma = symmetrize_rank2(cell, inverse, 0.5 * (virial + virial.T), self.rotations) / abs(structure.cell.volume)
        stress = sigma[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        if not (np.isfinite(forces).all() and np.isfinite(stress).all()):
            raise ModelError(f"structure {bead_map.name!r}: the model predicted non-finite forces or stress")
        local = np.asarray(energies)[self.site_of]
        total = float(local.sum())
        self.results = {"energy": total, "free_energy": total, "forces": forces, "stress": stress,
                        "local_energies": local}


class _CellFilter(FrechetCellFilter):
    """``FrechetCellFilter`` whose generalised forces are kept while positions and cell are unchanged: an ASE
    optimiser asks for them about three times per step (convergence test, log, step), and each time the filter
    recomputes the matrix logarithm and exponential Fréchet derivatives of the deformation (about 15% of a
    symmetric relaxation's time before this cache)."""

    _kept: tuple[bytes, np.ndarray] | None = None

    def get_forces(self, **kwargs) -> np.ndarray:
        key = self.atoms.positions.tobytes() + self.atoms.cell.array.tobytes()
        if self._kept is not None and self._kept[0] == key and not kwargs:
            return self._kept[1].copy()
        forces = super().get_forces(**kwargs)
        self._kept = (key, forces.copy())
        return forces


#: Largest number of symmetric degrees of freedom (positions and cell) for which the symmetric relaxation starts
#: BFGS from a numerical Hessian of the model in the symmetric subspace (one model call per degree of freedom)
#: instead of :data:`BFGS_ALPHA` times the identity.
MAX_NUMERICAL_HESSIAN_DOF = 60
#: Finite-difference step (in the reduced coordinates: Å for positions) of that numerical Hessian.
HESSIAN_STEP = 0.01
#: Largest step (Å) of the reduced-space BFGS, per atom (and per cell row in the cell coordinates), like ASE's BFGS.
MAX_STEP = 0.2
#: Largest strain step (|component| of the deformation's change) of the reduced-space BFGS. The cell filter's rule
#: (cell rows in its coordinates N log F limited to 0.2) allows only 0.2 / N (0.14% for 144 beads) per step, so the
#: cell, which grows by 1-2% on the model's surface, took most of the steps. Measured (issue 29, 6-20 held-out nets,
#: shipped AB2): 0.005-0.03 all cut steps (AEN 64 -> 24, AFR 63 -> 18, MON 18 -> 11; same energies within 0.5
#: meV/Zn on 16 of 20 nets; AEN, AFR, BEC end in another minimum 4-9 meV/Zn away); 0.01 chosen.
MAX_STRAIN_STEP = 0.01


def positions_basis(atoms: Atoms, constraint: FixSymmetry) -> np.ndarray:
    """Orthonormal basis (3 n_atoms, k) of the atomic displacements (Cartesian, Å) that keep the space group.

    The range of the group average ``P = (1/|G|) sum_g Pi_g (x) R_g`` (atom permutation times Cartesian rotation),
    an orthogonal projector."""
    n = len(atoms)
    lattice = atoms.cell.array
    inverse = np.linalg.inv(lattice)
    projector = np.zeros((n, 3, n, 3))
    index = np.arange(n)
    for rotation, image in zip(constraint.rotations, constraint.symm_map, strict=True):
        projector[np.asarray(image), :, index, :] += lattice.T @ rotation @ inverse.T
    projector = projector.reshape(3 * n, 3 * n) / len(constraint.rotations)
    values, vectors = np.linalg.eigh(0.5 * (projector + projector.T))
    return vectors[:, values > 0.5]


def strain_basis(atoms: Atoms, constraint: FixSymmetry) -> np.ndarray:
    """Orthonormal basis (9, k) of the symmetric Cartesian strains (flattened 3 x 3) the group's rotations leave
    unchanged (the range of :func:`ase.spacegroup.symmetrize.symmetrize_rank2`, an orthogonal projection)."""
    lattice = atoms.cell.array
    inverse = np.linalg.inv(lattice)
    strains = []
    for a, b in ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)):
        unit = np.zeros((3, 3))
        unit[a, b] = unit[b, a] = 1.0
        strains.append(symmetrize_rank2(lattice, inverse, unit, constraint.rotations).ravel())
    u, singular, _ = np.linalg.svd(np.array(strains).T, full_matrices=False)
    return u[:, singular > 1e-8 * singular.max()]


class ReducedCoordinates:
    """A symmetric structure's energy as a function of the reduced coordinates ``q`` of its space group.

    ``q = (q_p, q_c)``: the positions are ``(x0 + P q_p) F^T`` and the cell ``cell0 F^T`` with the deformation
    ``F = I + reshape(S q_c) / n_atoms`` (P: :func:`positions_basis`, Å; S: :func:`strain_basis`; the cell
    coordinates scaled by the number of atoms like ``FrechetCellFilter``'s, so a cell "force" is the virial per
    atom). Every displacement of ``q`` keeps the group, so no constraint is needed, and the gradient is the
    projection of the full one (exact for a symmetric structure, whose forces and stress are symmetric).
    :meth:`evaluate` computes the calculator's energy, forces and stress once per ``q``. ``pressure`` (eV/Å^3,
    default 0) adds ``p V`` to the function whose gradient is returned (an enthalpy; the stress returned includes
    it): tried against the model-surface limit of the ranking (issue 29) and not adopted, so :func:`relax` never
    sets it."""

    def __init__(self, atoms: Atoms, calculator: Calculator, positions: np.ndarray, strains: np.ndarray | None,
                 pressure: float = 0.0):
        self.pressure = float(pressure)
        self.atoms = atoms
        self.calculator = calculator
        self.P = positions
        self.S = strains if strains is not None else np.zeros((9, 0))
        self.x0 = atoms.positions.copy()
        self.cell0 = atoms.cell.array.copy()
        self.scale = float(len(atoms))
        self.size = self.P.shape[1] + self.S.shape[1]

    def deformation(self, q: np.ndarray) -> np.ndarray:
        return np.eye(3) + (self.S @ q[self.P.shape[1]:]).reshape(3, 3) / self.scale

    def step_length(self, dq: np.ndarray, maxstep: float, max_strain: float | None) -> float:
        """The largest ratio of the step ``dq``'s atomic displacement norm to ``maxstep`` (Å) and of its strain
        (largest |component| of ``F - I``'s change) to ``max_strain`` (None: the cell rows in the cell
        coordinates to ``maxstep``, as ASE's BFGS limits steps in ``FrechetCellFilter``'s coordinates)."""
        k = self.P.shape[1]
        atoms = float(np.linalg.norm((self.P @ dq[:k]).reshape(-1, 3), axis=1).max(initial=0.0)) / maxstep
        strain = (self.S @ dq[k:]).reshape(3, 3)
        if max_strain is None:
            cell = float(np.linalg.norm(strain, axis=1).max(initial=0.0)) / maxstep
        else:
            cell = float(np.abs(strain).max(initial=0.0)) / self.scale / max_strain
        return max(atoms, cell)

    def evaluate(self, q: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray | None]:
        """(energy eV, gradient d E / d q, forces eV/Å, stress eV/Å^3 or None) at ``q``; the atoms are moved there."""
        k = self.P.shape[1]
        deformation = self.deformation(q)
        atoms = self.atoms
        atoms.set_cell(self.cell0 @ deformation.T, scale_atoms=False)
        atoms.positions = (self.x0 + (self.P @ q[:k]).reshape(-1, 3)) @ deformation.T
        properties = ["energy", "forces"] + (["stress"] if self.S.shape[1] else [])
        self.calculator.calculate(atoms, properties, all_changes)
        results = self.calculator.results
        forces = np.asarray(results["forces"])
        gradient = np.empty(self.size)
        gradient[:k] = self.P.T @ (-forces @ deformation).ravel()
        stress = None
        if self.S.shape[1]:
            stress = np.asarray(results["stress"])
            sigma = np.array([[stress[0], stress[5], stress[4]], [stress[5], stress[1], stress[3]],
                              [stress[4], stress[3], stress[2]]])
            sigma = sigma + self.pressure * np.eye(3)  # the enthalpy E + p V under an external pressure p
            virial = abs(atoms.cell.volume) * sigma @ np.linalg.inv(deformation).T  # d E / d F
            gradient[k:] = self.S.T @ virial.ravel() / self.scale
            if self.pressure:
                stress = stress + self.pressure * np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
        return float(results["energy"]), gradient, forces, stress


def reduced_hessian(problem: ReducedCoordinates, q: np.ndarray, gradient: np.ndarray,
                    step: float = HESSIAN_STEP) -> np.ndarray:
    """The model's Hessian (k, k) in the reduced coordinates at ``q`` by forward differences of the gradient
    (k model calls; ``gradient`` is the one at ``q``), symmetrised and made positive definite (absolute
    eigenvalues, at least 5% of the largest). The atoms are left at ``q``'s geometry."""
    columns = []
    for j in range(problem.size):
        shifted = q.copy()
        shifted[j] += step
        columns.append((problem.evaluate(shifted)[1] - gradient) / step)
    problem.evaluate(q)
    values, vectors = np.linalg.eigh(0.5 * (np.array(columns) + np.array(columns).T))
    values = np.abs(values)
    values = np.maximum(values, 0.05 * values.max()) if values.max() > 0 else np.ones_like(values)
    return (vectors * values) @ vectors.T


def reduced_bfgs(problem: ReducedCoordinates, hessian: np.ndarray, *, fmax: float, smax: float | None,
                 max_steps: int, maxstep: float = MAX_STEP, max_strain: float | None = MAX_STRAIN_STEP,
                 logfile=None, trajectory=None, initial: tuple | None = None) -> tuple[int, bool]:
    """BFGS in the reduced coordinates (ASE's update and step: the Hessian's eigenvalues taken in absolute value,
    the step scaled so no atom moves more than ``maxstep`` (Å) and no strain component changes by more than
    ``max_strain``; see :meth:`ReducedCoordinates.step_length`), from ``q = 0`` and the initial Hessian
    ``hessian`` (k, k). Stops when the largest atomic force is below ``fmax`` (eV/Å) and, with a cell, the largest
    |stress| below ``smax`` (eV/Å^3), or after ``max_steps`` steps. ``initial``: :meth:`evaluate` at ``q = 0``
    if already done. ``logfile``: an open text file; ``trajectory``: an :class:`ase.io.Trajectory` open for
    writing. Returns (steps taken, converged); the atoms end at the last evaluated geometry."""

    def done(forces: np.ndarray, stress: np.ndarray | None) -> bool:
        f = float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0
        return f < fmax and (stress is None or float(np.abs(stress).max()) < smax)

    q = np.zeros(problem.size)
    energy, gradient, forces, stress = initial if initial is not None else problem.evaluate(q)
    H = np.array(hessian, dtype=float)
    steps = 0
    while True:
        if logfile is not None:
            f = float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0
            logfile.write(f"reduced-BFGS {steps:4d} {energy:+.6f} eV fmax {f:.4f}\n")
            logfile.flush()
        if trajectory is not None:
            frame = problem.atoms.copy()
            frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces,
                                               **({} if stress is None else {"stress": stress}))
            trajectory.write(frame)
        if done(forces, stress) or steps >= max_steps or problem.size == 0:
            return steps, done(forces, stress)
        omega, V = np.linalg.eigh(H)
        dq = -V @ ((V.T @ gradient) / np.abs(omega))
        longest = problem.step_length(dq, maxstep, max_strain)
        if longest > 1.0:
            dq /= longest
        new = problem.evaluate(q + dq)
        steps += 1
        dg = new[1] - gradient
        a = float(dq @ dg)
        Hdq = H @ dq
        b = float(dq @ Hdq)
        if abs(a) > 1e-12 and abs(b) > 1e-12:  # ASE's BFGS update (with the gradient difference for -df)
            H += np.outer(dg, dg) / a - np.outer(Hdq, Hdq) / b
        q = q + dq
        energy, gradient, forces, stress = new


def _symmetric_setup(structure: Atoms, calc: CGGPRCalculator, symprec: float):
    """(FixSymmetry, SymmetricCalculator) for a coarse-grained structure with a symmetry worth exploiting (fewer
    representatives than metal sites), else None. ``structure`` is symmetrised to ``symprec`` (Å) in place
    (:func:`ase.spacegroup.symmetrize.refine_symmetry`, moving atoms by less than ``symprec``)."""

    if calc.model.spec.representation == "atomistic" or not bool(np.all(structure.pbc)):
        return None
    trial = structure.copy()
    try:
        constraint = FixSymmetry(trial, symprec=symprec)
        symmetric = SymmetricCalculator(calc, trial, constraint)
    except (RuntimeError, ValueError, TypeError):  # spglib finds no dataset, or a map that is not a permutation
        return None
    if symmetric.reduction < 1.5:
        return None
    structure.set_cell(trial.cell, scale_atoms=False)
    structure.positions = trial.positions
    return constraint, symmetric


def _reduced_phase(structure: Atoms, setup, cell: bool, fmax: float, smax: float, max_steps: int, alpha: float,
                   logfile, trajectory) -> tuple[int, float]:
    """The symmetric phase of :func:`relax` with BFGS: :func:`reduced_bfgs` in the space group's reduced coordinates
    (:class:`ReducedCoordinates`) with the :class:`SymmetricCalculator` of ``setup``, from the model's numerical
    Hessian (:func:`reduced_hessian`) when there are at most :data:`MAX_NUMERICAL_HESSIAN_DOF` coordinates, else
    ``alpha`` times the identity. Moves ``structure`` (no constraint left on it); returns the steps taken and the
    energy (eV) of the start."""
    constraint, symmetric = setup
    structure.set_constraint()
    problem = ReducedCoordinates(structure, symmetric, positions_basis(structure, constraint),
                                 strain_basis(structure, constraint) if cell else None)
    initial = problem.evaluate(np.zeros(problem.size))
    if 0 < problem.size <= MAX_NUMERICAL_HESSIAN_DOF:
        hessian = reduced_hessian(problem, np.zeros(problem.size), initial[1])
    else:
        hessian = alpha * np.eye(problem.size)
    log = None
    if logfile is not None:
        log = sys.stdout if logfile == "-" else (open(logfile, "a") if isinstance(logfile, str | os.PathLike)  # noqa: SIM115
                                                 else logfile)
    traj = Trajectory(os.fspath(trajectory), "w") if trajectory else None
    try:
        steps, _ = reduced_bfgs(problem, hessian, fmax=fmax, smax=smax if cell else None, max_steps=max_steps,
                                max_strain=MAX_STRAIN_STEP, logfile=log, trajectory=traj, initial=initial)
    finally:
        if traj is not None:
            traj.close()
        if log is not None and log is not sys.stdout and log is not logfile:
            log.close()
    return steps, initial[0]


def _calculator(calculator_or_model, defects: str | None = None):

    options = {} if defects is None else {"defects": defects}
    if isinstance(calculator_or_model, CGGPRCalculator):
        if defects is not None and calculator_or_model.parameters.get("defects") != defects:
            calculator_or_model.set(defects=defects)
        return calculator_or_model
    if isinstance(calculator_or_model, CGGPRModel):
        return CGGPRCalculator(calculator_or_model, **options)
    if isinstance(calculator_or_model, str | os.PathLike):
        return CGGPRCalculator(CGGPRModel.load(calculator_or_model), **options)
    raise ModelError(f"relax needs a CGGPRModel, a model file or a CGGPRCalculator, got "
                     f"{type(calculator_or_model).__name__}")


def _start_structure(atoms: Atoms, model, name: str, defects: str = "refuse") -> Atoms:
    """The structure to relax: the model's beads (AB2 beads for A models) or, for atomistic models, the atoms."""
    if not isinstance(atoms, Atoms):
        raise StructureError(f"relax needs an ase.Atoms object, got {type(atoms).__name__}")
    representation = model.spec.representation
    if representation == "atomistic":
        if is_coarse_grained(atoms):
            raise StructureError("the model is atomistic but this structure is already coarse-grained (beads); "
                                 "relax bead structures with an AB2 or A model", structure=name)
        start = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
        model.check_species(find_connectivity(start, name=name, defects=defects))
    elif is_coarse_grained(atoms):
        start = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
        model.check_species(find_connectivity(start, name=name, defects=defects))
    else:
        connectivity = find_connectivity(atoms, name=name, defects=defects)
        model.check_species(connectivity)
        start = coarse_grain(atoms, "AB2", connectivity=connectivity).structure
    start.info = {k: v for k, v in atoms.info.items() if isinstance(v, str | int | float | bool)}
    start.info["name"] = name
    return start


def _optimizer(optimizer, coarse_grained: bool = True) -> tuple[type, dict]:
    """(ase.optimize class, its keyword options) for a name of :data:`OPTIMIZERS` or a class; BFGS on bead
    structures starts from the initial Hessian :data:`BFGS_ALPHA`, on atoms from ASE's."""

    if isinstance(optimizer, str):
        table = {"BFGS": (BFGS, {"alpha": BFGS_ALPHA} if coarse_grained else {}), "FIRE": (FIRE, {})}
        if optimizer.upper() not in table:
            raise ModelError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}")
        return table[optimizer.upper()]
    return optimizer, {}


def relax(atoms: Atoms, calculator_or_model, *, fmax: float = 0.01, cell: bool = True, max_steps: int = 500,
          smax: float = DEFAULT_SMAX, optimizer: str | type = "BFGS", trajectory: str | os.PathLike | None = None,
          logfile: str | None = None, name: str | None = None, defects: str | None = None,
          symmetry: bool = True, symprec: float = DEFAULT_SYMPREC) -> RelaxResult:
    """Relax ``atoms`` on the model's energy surface; positions and, with ``cell=True``, the cell.

    Args:
        atoms: an atomistic ZIF or a bead structure (Si/O...; not modified).
        calculator_or_model: a :class:`~ase_cggpr.model.CGGPRModel`, a model path or shipped name, or a
            :class:`~ase_cggpr.calculator.CGGPRCalculator` (its options, e.g. the descriptor backend, are used).
        fmax: force criterion (eV/Å, largest atomic force norm).
        cell: also relax the cell (``FrechetCellFilter``, zero target pressure); needs a calculator with stress.
        max_steps: most optimiser steps in total.
        smax: stress criterion (eV/Å^3, largest |component|) of cell relaxations.
        optimizer: ``"BFGS"`` (initial Hessian :data:`BFGS_ALPHA` for bead structures, ASE's 70 eV/Å^2 for
            atomistic ones) or ``"FIRE"`` (or an ``ase.optimize`` class).
        trajectory, logfile: passed to the optimiser (default: none, silent).
        name: the structure's name (default: from ``atoms.info`` or the formula).
        defects: ``"flag"`` or ``"refuse"`` coordination defects (default: the calculator's setting, ``"flag"``
            for a new one): flagged defects are relaxed like every site and counted in the result.
        symmetry: relax coarse-grained structures in their space group first (spglib to ``symprec``;
            :class:`SymmetricCalculator`: one metal site per symmetry orbit, ``ase.constraints.FixSymmetry``), then
            check the result with the full calculation and, if it fails, go on without the constraint (see the
            module docstring). ``False``: every step is a full calculation in the full space (the relaxation may
            then break the symmetry through numerical noise and end in a lower, less symmetric minimum).
        symprec: spglib tolerance (Å) of ``symmetry``; the start is symmetrised to it (atoms move by less).

    Returns:
        a :class:`RelaxResult`; ``converged`` comes from a final single-point check (see the module docstring).

    Raises:
        ModelError / StructureError (one line naming the structure) for bad options, a structure the model cannot
        describe, a calculator without stress for ``cell=True``, or a relaxation that breaks the bead net.
    """

    t0 = time.perf_counter()
    for what, value in (("fmax", fmax), ("smax", smax), ("symprec", symprec)):
        if not isinstance(value, int | float) or not np.isfinite(value) or value <= 0:
            raise ModelError(f"{what} must be a positive number, got {value!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int | np.integer) or max_steps < 0:
        raise ModelError(f"max_steps must be a non-negative integer, got {max_steps!r}")
    _optimizer(optimizer)  # a bad name is refused before any work
    calc = _calculator(calculator_or_model, defects)
    defects = calc.parameters.get("defects", "refuse")
    if cell and "stress" not in calc.implemented_properties:
        raise ModelError("cell relaxation needs the stress of the model's energy, which this CGGPRCalculator does "
                         "not implement; relax positions only (cell=False)")
    name = name or (structure_name(atoms) if isinstance(atoms, Atoms) else "structure")
    structure = _start_structure(atoms, calc.model, name, defects)
    opt_class, opt_options = _optimizer(optimizer, calc.model.spec.representation != "atomistic")
    structure.calc = calc
    n_metals = find_connectivity(structure, name=name, defects=defects).n_metals

    def state() -> tuple[np.ndarray, np.ndarray, float, float | None]:
        forces = structure.get_forces()  # the energies come with the forces (one descriptor call)
        energy_local = np.asarray(structure.calc.get_property("local_energies", structure))
        f = float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0
        s = float(np.abs(structure.get_stress()).max()) if cell else None
        return energy_local, forces, f, s

    steps, opt, setup = 0, None, None
    every_call_std = calc.parameters.get("return_std", False)
    calc.parameters["return_std"] = False  # the std of the final state only (asked for below), not every step
    with warnings.catch_warnings():  # FrechetCellFilter's scipy logm warns of ~1e-13 errors at every step
        warnings.filterwarnings("ignore", message="logm result may be inaccurate", category=RuntimeWarning)
        try:
            # BFGS on a symmetric structure: in the space group's reduced coordinates with one site per orbit
            # (the start too), then the full check; otherwise (FIRE) the symmetric phase under FixSymmetry if the
            # start is not converged, then, if the full check fails, the full calculation without constraint
            setup = _symmetric_setup(structure, calc, symprec) if symmetry and opt_class is BFGS else None
            if setup is not None:
                taken, initial_energy = _reduced_phase(structure, setup, cell, fmax, smax, max_steps,
                                                       float(opt_options.get("alpha", BFGS_ALPHA)), logfile,
                                                       trajectory)
                steps += taken
                e0 = initial_energy / n_metals
                local, forces, f, s = state()  # the full calculation, without constraint
                converged = f < fmax and (not cell or s < smax)
                phases = [None]
            else:
                e0 = float(np.mean(state()[0]))
                local, forces, f, s = state()
                converged = f < fmax and (not cell or s < smax)
                setup = _symmetric_setup(structure, calc, symprec) if symmetry and not converged else None
                phases = ([setup] if setup is not None else []) + [None]
            for phase in phases:
                if converged or steps >= max_steps:
                    break
                structure.set_constraint(None if phase is None else phase[0])
                structure.calc = calc if phase is None else phase[1]
                target = _CellFilter(structure) if cell else structure
                if opt is not None and getattr(opt, "trajectory", None) is not None:
                    opt.trajectory.close()
                options = dict(logfile=logfile, trajectory=os.fspath(trajectory) if trajectory else None,
                               append_trajectory=steps > 0, **opt_options)
                opt = opt_class(target, **options)
                first, criterion = steps, float(fmax)
                local, forces, f, s = state()
                converged = f < fmax and (not cell or s < smax)
                try:
                    while not converged and steps < max_steps:
                        opt.run(fmax=criterion, steps=max_steps - steps)
                        taken = first + opt.get_number_of_steps() - steps
                        steps = first + opt.get_number_of_steps()
                        local, forces, f, s = state()
                        converged = f < fmax and (not cell or s < smax)
                        if not converged and taken == 0:
                            criterion *= 0.5  # the optimiser thinks it is done; the explicit check does not
                        if criterion < 1e-6 * fmax:
                            break
                except RuntimeError:  # FixSymmetry refuses a cell step too large to symmetrise: go on without
                    if phase is None:
                        raise
                    steps = first + opt.get_number_of_steps()
                if phase is not None:  # the final check: the full calculation, without the constraint
                    structure.set_constraint()
                    structure.calc = calc
                    local, forces, f, s = state()
                    converged = f < fmax and (not cell or s < smax)
            std = np.asarray(calc.get_property("local_energy_std", structure))  # reuses the last call's vectors
        except CGGPRError as error:
            text, named = str(error), f"structure {name!r}: "
            text = text[len(named):] if text.startswith(named) else text
            raise ModelError(f"{named}the relaxation stopped after {steps} optimiser steps: {text}") from None
        finally:
            calc.parameters["return_std"] = every_call_std
            if opt is not None and getattr(opt, "trajectory", None) is not None:
                opt.trajectory.close()
    e = float(np.mean(local))
    out = structure.copy()
    results = dict(energy=float(np.sum(local)), free_energy=float(np.sum(local)), forces=np.array(forces))
    if cell:
        results["stress"] = np.array(structure.get_stress())
    out.calc = SinglePointCalculator(out, **results)
    seconds = time.perf_counter() - t0
    status = "converged" if converged else "NOT converged"
    stress_text = f", max |stress| {s:.2e} eV/Å^3 ({'<' if s < smax else 'NOT <'} {smax:g})" if cell else ""
    message = (f"{status} in {steps} steps, {seconds:.1f} s: energy {e0:+.4f} -> {e:+.4f} eV per metal, "
               f"max force {f:.2e} eV/Å ({'<' if f < fmax else 'NOT <'} {fmax:g}){stress_text}")
    if setup is not None:
        message += (f"; relaxed in its space group first ({len(setup[1].representatives)} of {setup[1].n_metals} "
                    "metal sites computed per step)")
    trust = getattr(calc, "site_trust", None)
    n_defective, n_untrusted = (trust.n_defective, trust.n_untrusted) if trust is not None else (0, 0)
    if n_untrusted:
        message += (f"; {n_defective} defective metal site(s), {n_untrusted} untrusted (extrapolated) in the "
                    "energy per metal")
    out.info.update(name=name, cggpr_energy_per_metal=e, cggpr_energy_std=float(np.mean(std)),
                    relax_converged=bool(converged), relax_steps=int(steps), relax_seconds=round(seconds, 3),
                    relax_message=message, cggpr_n_defective=int(n_defective), cggpr_n_untrusted=int(n_untrusted))
    return RelaxResult(name=name, atoms=out, n_metals=n_metals, energy_per_metal=e, energy_std=float(np.mean(std)),
                       max_site_std=float(np.max(std)), initial_energy_per_metal=e0, converged=bool(converged),
                       n_steps=int(steps), seconds=seconds, max_force=f, max_stress=s, cell_relaxed=bool(cell),
                       message=message, n_defective=int(n_defective), n_untrusted=int(n_untrusted))
