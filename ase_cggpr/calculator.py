"""CGGPRCalculator: a trained CG-GPR model as an ASE calculator.

The energy of a Zn imidazolate framework is a sum of local-environment energies, one per metal:

    E = sum_i e_local(i),    e_local(i) = mean + sum_n alpha_n (1 + x_i · x_n)**zeta

where x_i is the normalised SOAP vector of metal i's environment (atomistic, or coarse-grained into A
beads on metals and B beads at linker-ring centroids) and x_n are the training environments. Energies are
in eV, relative to the model's reference energy per metal (e.g. relaxed zni).

Results:
    ``energy``, ``free_energy``: total (eV).
    ``energies``: per atom (eV); each metal carries its local energy, every other atom 0, so they sum to
        the total. For already coarse-grained input (Si/O beads) the A sites carry them.
    ``local_energies``: per metal, in metal (atom-index) order (eV).
    ``local_energy_std``: GP predictive standard deviation per metal (eV; latent function, no noise term).
    ``forces`` (eV/Å, computed only when asked for): minus the gradient of the *learned* energy E with
        respect to the atom positions, by the chain rule through the SOAP descriptor (:mod:`ase_cggpr.forces`).
        Atomistic models: a force on every atom. Coarse-grained models: the energy depends only on the metal
        positions (A beads) and, for AB2, on the linker-ring centroids (B beads); a B-bead force is shared
        equally among the ring atoms (C and N), an A-bead force acts on the metal, and H atoms and internal
        linker motions that keep the ring centroid fixed carry no force. They drive the coarse-grained
        degrees of freedom down the learned energy surface; they are not atomistic MOF-FF forces.

Stress is not implemented (it would need the descriptor's strain derivatives, the virial).

The atom -> bead mapping (which atoms form which linker, ring and bead) is cached, but never trusted blindly:
on every call the structure is checked (cell, occupancies, short contacts) and its bonded connectivity is
recomputed exactly (:class:`~ase_cggpr.beads.BondTracker`: a Verlet list with a 0.5 Å skin, so while the
cell is fixed and atoms move by less than 0.25 Å it costs a vectorised distance evaluation instead of a
neighbour search). The cached mapping is reused only when the atoms (``numbers``) and every bonded pair are
exactly those it was built from, so it is always the mapping a fresh calculator would find: a different
structure with the same ``numbers``, permuted atoms or a moved linker get a new one.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from .beads import Bonds, BondTracker, Connectivity, check_input, connectivity_from_bonds, structure_name
from .errors import ModelError
from .model import CGGPRModel


class CGGPRCalculator(Calculator):
    """ASE calculator predicting ZIF energies with a :class:`~ase_cggpr.model.CGGPRModel`.

    Args:
        model: a fitted model, or
        model_path: path of a model saved with :meth:`CGGPRModel.save` (exactly one of the two).
        return_std: also compute per-metal standard deviations (default True; a little slower).
        gradient_backend: descriptor used for forces, ``"auto"`` (featomic when installed, else quippy),
            ``"featomic"`` or ``"quippy"``. Both give the same vectors; featomic is 3-5x faster.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces"]
    default_parameters: dict = {}

    def __init__(self, model: CGGPRModel | None = None, *, model_path: str | os.PathLike | None = None,
                 return_std: bool = True, gradient_backend: str = "auto", **kwargs):
        super().__init__(**kwargs)
        if (model is None) == (model_path is None):
            raise ModelError("give exactly one of model= or model_path=")
        self.model = CGGPRModel.load(model_path) if model is None else model
        if not self.model.is_fitted:
            raise ModelError("CGGPRCalculator needs a fitted model")
        self.return_std = return_std
        self.gradient_backend = gradient_backend
        self._connectivity: Connectivity | None = None
        self._bonds: Bonds | None = None
        self._tracker = BondTracker()

    def connectivity(self, atoms: Atoms) -> Connectivity:
        """The atom -> bead mapping of ``atoms``, always equal to :func:`~ase_cggpr.beads.find_connectivity`'s.

        The structure is checked and its bonds recomputed on every call; the cached mapping is reused only
        when ``numbers`` and the bonded pairs are unchanged (for coarse-grained input, whose mapping also
        depends on A-B distances, it is rebuilt from the new bonds, which costs little more).
        """
        name = structure_name(atoms)
        check_input(atoms, name)
        bonds = self._tracker.bonds(atoms, name=name)
        if self._connectivity is not None and bonds.same_connectivity(self._bonds):
            connectivity = self._connectivity
            if connectivity.name != name:
                connectivity = dataclasses.replace(connectivity, name=name)
        else:
            self._connectivity = self._bonds = None
            connectivity = connectivity_from_bonds(atoms, bonds, name=name)
        self._connectivity, self._bonds = connectivity, bonds
        return connectivity

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        bead_map = self.model.bead_map(atoms, connectivity=self.connectivity(atoms))
        forces = std = None
        if "forces" in properties:
            from .forces import predict_with_forces

            out = predict_with_forces(self.model, atoms, bead_map, return_std=self.return_std,
                                      backend=self.gradient_backend)
            local, forces = out[0], out[1]
            std = out[2] if self.return_std else None
        else:
            result = self.model.predict_maps([bead_map], return_std=self.return_std)
            local = result[0][0] if self.return_std else result[0]
            std = result[1][0] if self.return_std else None
        energies = np.zeros(len(atoms))
        energies[bead_map.connectivity.metal_indices] = local
        total = float(local.sum())
        self.results = {"energy": total, "free_energy": total, "energies": energies,
                        "local_energies": local}
        if std is not None:
            self.results["local_energy_std"] = std
        if forces is not None:
            self.results["forces"] = forces
