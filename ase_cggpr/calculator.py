"""CGGPRCalculator: a trained CG-GPR model as an ASE calculator.

The calculator holds the options (ASE ``parameters``), the atom -> bead mapping cache and the ``results``;
every number comes from one call of :meth:`CGGPRModel.compute <ase_cggpr.model.CGGPRModel.compute>`
(structure -> beads -> descriptor -> regressor -> local energies, their std and forces; the physics of
the energies and forces is described there).

Parameters (``calc.parameters``, recorded by ``calc.todict()`` and hence by ase.db):
    ``model``: the model file's path (or None for a model given as an object); ``todict()`` adds
        ``model_info``, the model's creation time, package version, representation, descriptor backend,
        solver and number of training environments, so a stored number says which model made it.
    ``return_std``: compute the per-metal standard deviations on every call (default False: only when
        ``local_energy_std`` is asked for; dynamics and relaxations never need it, and it costs about as much
        as the energy).
    ``descriptor_backend``: ``None`` (the model's ``spec.backend``), ``"featomic"`` or ``"quippy"``, used for
        energies and forces alike (both give the same vectors).
    ``defects``: ``"flag"`` (default) or ``"refuse"`` coordination defects (a Zn with 3 or 5 N, a dangling
        linker; :mod:`ase_cggpr.defects`). Flagged: every site is predicted, ``site_trusted`` marks the
        defective sites and those with a defect within the model's cutoff False, ``calc.site_trust`` names
        them, and a :class:`~ase_cggpr.errors.DefectWarning` says so. ``energy`` stays the sum over all
        sites (the untrusted ones as the model's extrapolation).

Results (each also through ``calc.get_property(name, atoms)``):
    ``energy``, ``free_energy``: total (eV).
    ``energies``: per atom (eV); each metal carries its local energy, every other atom 0, so they sum to
        the total. For already coarse-grained input (Si/O beads) the A sites carry them.
    ``local_energies``: per metal, in metal (atom-index) order (eV).
    ``site_trusted``: per metal, bool: False for a defective site or one with a defect within the cutoff.
    ``local_energy_std``: standard deviation per metal (eV): the GP's latent std through the model's variance
        calibration (:func:`ase_cggpr.uncertainty.calibrated_std`; the shipped models have one, fitted on held-out
        framework types), or the latent std for a model without one. ``local_energy_std_latent``: the GP's latent
        std (no noise term, no calibration). Both are computed only when asked for
        (``calc.get_property("local_energy_std", atoms)``), or on every call with ``return_std=True``; asked for
        after an energy or force call on the same structure, they reuse that call's descriptor vectors (one
        variance evaluation, the other results kept).
    ``forces`` (eV/Å, computed only when asked for): minus the gradient of the *learned* energy.
    ``stress`` (eV/Å^3, ASE sign and Voigt order xx yy zz yz xz xy; computed only when asked for, together
        with the forces in the same descriptor call): the strain derivative of the *learned* energy over the
        cell volume, from the descriptor's strain gradients (for the coarse-grained representations the
        bead structure's virial, which is the input structure's; see
        :meth:`CGGPRModel.compute <ase_cggpr.model.CGGPRModel.compute>`). Works with
        ``ase.filters.FrechetCellFilter`` for cell relaxations. Once a calculator has been asked for the
        stress, every later force evaluation computes the stress too (same call, the forces unchanged), so a
        cell filter's ``get_forces()`` then ``get_stress()`` costs one model evaluation per step, not two.

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
import warnings
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes, equal

from .beads import (
    Bonds,
    BondTracker,
    Connectivity,
    check_defects_mode,
    check_input,
    connectivity_from_bonds,
    structure_name,
)
from .defects import SiteTrust
from .errors import DefectWarning, ModelError
from .model import CGGPRModel
from .pretrained import available, canonical_name
from .rigid_linkers import warn_free_linkers
from .spec import BACKENDS
from .uncertainty import calibrated_std

#: The calculator results that hold a std (computed only when asked for, or with ``return_std=True``).
STD_PROPERTIES = frozenset({"local_energy_std", "local_energy_std_latent"})

class CGGPRCalculator(Calculator):
    """ASE calculator predicting ZIF energies, forces and stress with a :class:`~ase_cggpr.model.CGGPRModel`.

    Args:
        model: a fitted model, the path of a model saved with :meth:`CGGPRModel.save`, or the name of a
            model that ships with the package (``"AB2"``, ``"A"``, ``"atomistic"``; ``cggpr models``).
        model_path: the path, as a keyword (give exactly one of ``model`` and ``model_path``).
        return_std: compute per-metal standard deviations on every call (default False: only when
            ``local_energy_std`` is asked for).
        descriptor_backend: ``None`` (the model's own, ``spec.backend``), ``"featomic"`` or ``"quippy"``,
            for energies and forces.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "local_energies",
                              "local_energy_std", "local_energy_std_latent", "site_trusted"]
    default_parameters: dict[str, Any] = {"model": None, "return_std": False, "descriptor_backend": None,
                                          "defects": "flag"}

    def __init__(self, model: CGGPRModel | str | os.PathLike | None = None, *,
                 model_path: str | os.PathLike | None = None, return_std: bool = False,
                 descriptor_backend: str | None = None, defects: str = "flag", **kwargs):
        if (model is None) == (model_path is None):
            raise ModelError("give exactly one of model= or model_path=")
        if "gradient_backend" in kwargs:  # removed in 0.3.0 (CHANGELOG.md)
            raise TypeError("CGGPRCalculator(gradient_backend=...) was removed: use descriptor_backend=")
        self.model: CGGPRModel | None = None
        self._connectivity: Connectivity | None = None
        self._bonds: Bonds | None = None
        self._tracker = BondTracker()
        self._stress_with_forces = False  # set once the stress is asked for (see the module docstring)
        self.site_trust: SiteTrust | None = None  # of the last calculation
        self._warned_free_linkers = False  # rigid_linkers.warn_free_linkers: once per calculator
        self._vectors: np.ndarray | None = None  # descriptor vectors of the structure in ``results``
        source = model if model is not None else model_path
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        super().__init__(model=source, return_std=return_std, descriptor_backend=descriptor_backend,
                         defects=defects, **kwargs)

    @classmethod
    def pretrained(cls, name: str = "AB2", **kwargs) -> CGGPRCalculator:
        """A calculator with a shipped model (:mod:`ase_cggpr.pretrained`), e.g. ``pretrained("AB2")``."""

        if canonical_name(name) is None:
            raise ModelError(f"no shipped model named {name!r}; shipped: {', '.join(available()) or 'none'}")
        return cls(canonical_name(name), **kwargs)

    def set(self, **kwargs) -> dict:
        """Change parameters (ASE convention); a new ``model`` is loaded (a path) or checked (an object).

        Any change of ``model``, ``return_std`` or ``descriptor_backend`` discards the results.
        """
        if isinstance(kwargs.get("model"), os.PathLike):
            kwargs["model"] = os.fspath(kwargs["model"])
        if kwargs.get("descriptor_backend") not in (None, *BACKENDS):
            raise ModelError(f"unknown descriptor backend {kwargs['descriptor_backend']!r}; choose None (the "
                             f"model's own) or one of {BACKENDS}")
        if "defects" in kwargs:
            check_defects_mode(kwargs["defects"])
        previous = self.parameters.get("model")
        changed = super().set(**kwargs)
        if "defects" in changed:
            self._connectivity = self._bonds = None
        if "model" in changed:
            model = changed["model"]
            try:
                if isinstance(model, str):
                    model = CGGPRModel.load(model)
                elif not isinstance(model, CGGPRModel):
                    raise ModelError(f"model must be a CGGPRModel or a model file path, got {type(model).__name__}")
                if not model.is_fitted:
                    raise ModelError("CGGPRCalculator needs a fitted model")
            except BaseException:
                self.parameters["model"] = previous  # the parameters keep naming the model in use
                raise
            self.model = model
        if changed:
            self.reset()
        return changed

    @property
    def return_std(self) -> bool:
        return bool(self.parameters["return_std"])

    def todict(self, skip_default: bool = True) -> dict[str, Any]:
        """The parameters, JSON-able (ASE convention; ase.db stores them): ``model`` as the path it was given
        (None for a model given as an object), the others unless default (with ``skip_default``), plus
        ``model_info`` (:meth:`CGGPRModel.provenance`: path, created, package version, representation,
        backend, solver, training environments; no arrays), so a stored number says which model made it."""
        out = {}
        for key, value in self.parameters.items():
            if key == "model":
                value = value if isinstance(value, str) else None
            elif skip_default and key in self.default_parameters and equal(value, self.default_parameters[key]):
                continue
            out[key] = value
        out["model_info"] = self.model.provenance()
        return out

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
            connectivity = connectivity_from_bonds(atoms, bonds, name=name, defects=self.parameters["defects"])
        self._connectivity, self._bonds = connectivity, bonds
        return connectivity

    def _std_results(self, latent: np.ndarray, atoms: Atoms, connectivity) -> dict[str, np.ndarray]:
        """The std results from the GP's latent std (eV): calibrated (issue 31) and latent."""

        return {"local_energy_std": calibrated_std(self.model, latent, atoms, connectivity),
                "local_energy_std_latent": latent}

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes):
        """Fill ``results`` for ``properties`` (ASE convention). With ``system_changes`` empty (the same
        structure, e.g. ``get_property`` of a result not yet computed) the earlier results are kept and only
        what is missing is added: the std alone from the kept descriptor vectors, anything else by one
        :meth:`CGGPRModel.compute` call."""
        kept = dict(self.results) if not system_changes else {}
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if "stress" in properties:
            self._stress_with_forces = True
        want_std = self.return_std or not STD_PROPERTIES.isdisjoint(properties)
        missing = {p for p in properties if p not in kept}
        if kept and self._vectors is not None and self._connectivity is not None and missing \
                and missing <= STD_PROPERTIES:
            latent = self.model.std_of_vectors(self._vectors, self._connectivity.name)
            kept.update(self._std_results(latent, atoms, self._connectivity))
            self.results = kept
            return
        self._vectors = None
        stress = "stress" in properties or (self._stress_with_forces and "forces" in properties
                                            and bool(np.all(atoms.pbc)))
        prediction = self.model.compute(atoms, connectivity=self.connectivity(atoms),
                                        forces="forces" in properties or "stress" in properties,
                                        stress=stress, return_std=want_std,
                                        descriptor_backend=self.parameters["descriptor_backend"])
        if ("forces" in properties or "stress" in properties) and not self._warned_free_linkers:

            self._warned_free_linkers = warn_free_linkers(atoms, prediction.bead_map)
        local = prediction.local_energies
        energies = np.zeros(len(atoms))
        energies[prediction.bead_map.connectivity.metal_indices] = local
        total = float(local.sum())
        results = {"energy": total, "free_energy": total, "energies": energies, "local_energies": local,
                   "site_trusted": prediction.trusted.copy()}
        self.site_trust = prediction.trust
        if prediction.trust is not None and not prediction.trust.all_trusted:
            warnings.warn(prediction.trust.summary(), DefectWarning, stacklevel=2)
        if prediction.std is not None:
            results.update(self._std_results(prediction.std, atoms, prediction.bead_map.connectivity))
        if prediction.forces is not None:
            results["forces"] = prediction.forces
        if prediction.stress is not None:
            results["stress"] = prediction.stress
        self.results = {**kept, **results}
        self._vectors = prediction.vectors
