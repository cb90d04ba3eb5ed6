"""CGGPRModel: a model spec plus a fitted GP regressor; the only owner of its fitted state.

Data flows one way: structures -> :func:`~ase_cggpr.beads.coarse_grain` -> SOAP vectors
(:mod:`ase_cggpr.descriptors`) -> GP regression (:mod:`ase_cggpr.regression`) -> per-metal local energies.
:meth:`CGGPRModel.compute` is the one prediction route of a structure: its local energies (of every metal site, or
of the ``centres`` asked for: the screen's symmetry-unique ones), their standard deviations and its forces in one
call (forces by the chain rule: the descriptor backend's ``gradients()`` contracted with the regressor's
``predict_gradient``, which is the kernel's ``gradient``); :meth:`CGGPRModel.predict_maps` is the same route for
many structures and :meth:`CGGPRModel.predict_vectors` its last step, from descriptor vectors (what
cross-validation predicts); the ASE calculator is a cache around :meth:`~CGGPRModel.compute`.

Fitting: the solvers return a fitted regressor (:mod:`ase_cggpr.regression`; streamed:
:func:`ase_cggpr.streaming.fit_streamed`) and the model records it, with its training summary, in one place
(:meth:`CGGPRModel._set_fitted`), for the exact fit, the streamed fit and a loaded file alike.

Energies are per metal environment (eV), relative to ``reference_energy`` (eV per metal; e.g. the mean
local energy of relaxed zni, as in the paper; 0 keeps raw force-field energies). The file format, and how a file
is checked before use: :mod:`ase_cggpr.model_file`.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .beads import BeadMap, Connectivity, coarse_grain, find_connectivity
from .defects import SiteTrust, site_trust
from .descriptors import DescriptorBackend, backend_for, check_species, selected_vectors, soap_vectors
from .errors import ModelError
from .fit_inputs import (
    CG_INPUT_LINKERS,
    CG_INPUT_METALS,
    _linker_names,
    _species,
    _stack_labels,
    _training_species,
    check_forces,
    checked_totals,
    describe_files,
)
from .labels import atom_forces, local_energies, total_energy
from .model_file import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_SAVED_FACTOR,
    ModelFileNotFoundError,
    available,
    read_model_file,
    resolve,
    saved_arrays,
    shadowing,
    write_model_file,
)
from .prediction import Prediction, _input_atom_count, bead_to_atom_gradient, check_prediction
from .progress import progress_bar
from .regression import SOLVERS, solver_from_state
from .spec import ModelSpec
from .streaming import fit_streamed
from .version import __version__

__all__ = ["CGGPRModel", "ModelFileNotFoundError", "Prediction", "bead_to_atom_gradient", "check_prediction",
           "describe_files", "selected_vectors"]

#: Noise standard deviation of a force component (eV/Å) when training on forces (``force_noise``).
DEFAULT_FORCE_NOISE = 0.1



class CGGPRModel:
    """GPR model of per-metal local-environment energies (eV) on SOAP vectors.

    Args:
        spec: the :class:`~ase_cggpr.spec.ModelSpec`; keyword hyperparameters (``representation``,
            ``cutoff``, ``atom_sigma``, ``noise``, ...) override its fields or build one.
        reference_energy: energy per metal (eV) subtracted from labels; predictions are relative to it.
        solver: regression solver, a key of :data:`ase_cggpr.regression.SOLVERS` (``"exact"`` or
            ``"sparse"``); ``solver_options`` are passed to it (e.g. ``precision="mixed"`` for the exact
            solver, ``n_inducing=4000`` for the sparse one).

    Fitted attributes (after :meth:`fit`): ``regressor_``, ``metals_``, ``linkers_``, ``training_`` and
    ``calibration_`` (held-out uncertainty calibration, a dict, when one was made; see
    :func:`ase_cggpr.screening.calibrate`).

    ``prediction_precision`` (``"float64"``, or ``"float32"``: the kernel product of :meth:`compute` in single
    precision, 1.5-2 x faster, but energies off by up to ~8 meV per metal on the shipped models, whose weights
    are large and cancel; for rough screening only) is a run-time setting, not saved.
    """

    prediction_precision: str = "float64"

    def __init__(self, spec: ModelSpec | None = None, *, reference_energy: float = 0.0, solver: str = "exact",
                 solver_options: dict[str, Any] | None = None, **hypers: Any):
        spec = spec or ModelSpec(**hypers)
        self.spec = spec.replace(**hypers) if hypers else spec
        if not np.isfinite(reference_energy):
            raise ModelError(f"reference_energy must be finite, got {reference_energy!r}")
        self.reference_energy = float(reference_energy)
        if solver not in SOLVERS:
            raise ModelError(f"unknown regression solver {solver!r}; choose one of {sorted(SOLVERS)}")
        self.solver = solver
        self.solver_options = dict(solver_options or {})

    def __repr__(self) -> str:
        state = f"fitted on {self.training_['n_environments']} environments" if self.is_fitted else "not fitted"
        return f"CGGPRModel({self.spec!r}, reference_energy={self.reference_energy}, {state})"

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "regressor_")

    # -- structures -> bead maps -> vectors ------------------------------------------------------------
    def bead_map(self, atoms: Atoms, *, connectivity: Connectivity | None = None, name: str | None = None,
                 defects: str = "refuse") -> BeadMap:
        """Map a structure onto the model's representation, checking it holds only metals and linkers the
        model was trained on (:meth:`check_species`) before it is coarse-grained.

        ``defects``: ``"refuse"`` (default) or ``"flag"`` a coordination defect (see
        :mod:`ase_cggpr.defects`; :meth:`site_trust` gives the per-site trust of the map)."""
        if self.is_fitted or defects != "refuse":
            if connectivity is None:
                connectivity = find_connectivity(atoms, name=name, defects=defects)
        if self.is_fitted:
            self.check_species(connectivity)
        return coarse_grain(atoms, self.spec.representation, connectivity=connectivity, name=name)

    def check_species(self, connectivity: Connectivity) -> None:
        """Refuse a structure with a metal or linker the model was not trained on: one :class:`ModelError`
        naming the structure, the training metals / linkers and what it has instead."""
        self._check_fitted()
        metals, linkers = _species(connectivity)
        new_metals, new_linkers = sorted(metals - set(self.metals_)), sorted(linkers - set(self.linkers_))
        if not new_metals and not new_linkers:
            return
        has = ([f"metal(s) {new_metals}"] if new_metals else []) + \
              ([f"unsupported linker(s) {_linker_names(new_linkers)}"] if new_linkers else [])
        message = (f"structure {connectivity.name!r}: the model was trained on metals {list(self.metals_)} / "
                   f"linkers {list(self.linkers_)}; this structure has {' and '.join(has)}")
        if new_linkers and self.spec.representation == "A":
            message += ("; an A-only model cannot tell linkers apart (its beads are the metal sites alone): "
                        "use an AB2 or atomistic model for other linkers")
        raise ModelError(message)

    def site_trust(self, bead_map: BeadMap) -> SiteTrust:
        """Which sites of a mapped structure to trust: not defective, no defect within the model's cutoff
        (:func:`ase_cggpr.defects.site_trust`; all trusted for a well-formed network)."""
        return site_trust(bead_map, self.spec.cutoff)

    def vectors(self, maps: Sequence[BeadMap], *, progress: bool = False) -> np.ndarray:
        """SOAP vectors (n_centres, D) of the maps, with an optional progress bar."""
        with progress_bar(len(maps), "SOAP", enabled=progress) as update:
            return soap_vectors(maps, self.spec, progress=update)

    def selected_vectors(self, maps: Sequence[BeadMap], rows: np.ndarray, *, chunk: int = 64,
                         progress: bool = False) -> np.ndarray:
        """SOAP vectors of the environments ``rows`` (sorted global centre indices) only
        (:func:`selected_vectors`, with an optional progress bar)."""
        counts = np.array([len(m.centre_indices) for m in maps])
        needed = np.unique(np.searchsorted(np.cumsum(counts), np.asarray(rows), side="right"))
        with progress_bar(len(needed), "SOAP", enabled=progress) as update:
            return selected_vectors(maps, self.spec, rows, chunk=chunk, progress=update)

    # -- fitting -----------------------------------------------------------------------------------------
    def fit(self, structures: Sequence[Atoms], labels: Sequence[np.ndarray] | None = None, *,
            label_key: str = "energies", target: str = "local", n_train: int | None = None, seed: int = 0,
            energy_key: str | None = None, forces_key: str | None = None, force_noise: float = DEFAULT_FORCE_NOISE,
            progress: bool = False) -> CGGPRModel:
        """Fit to structures (atomistic or Si/O bead input) and their per-metal labels (eV).

        Args:
            labels: per-structure arrays of per-metal labels; formed from ``label_key`` when omitted.
            label_key: per-atom energies (local energies are formed) or per-site local energies.
            target: ``"local"`` (e_local) or ``"metal"`` (Zn-only energy).
            n_train: train on this many environments drawn at random (seeded) from all of them.
            energy_key: learn the per-metal local energies from each structure's *total* energy (eV), read
                from ``atoms.info[energy_key]`` or ``atoms.calc.results[energy_key]`` (what extxyz files for
                GAP, MACE or NequIP carry) instead of per-atom labels: :meth:`fit_totals_maps`.
            forces_key: with ``energy_key``, per-atom forces (eV/Å, ``atoms.arrays`` or calculator results)
                learned as gradient rows, noise ``force_noise`` eV/Å per component (atomistic models only).
        """
        if not len(structures):
            raise ModelError("no training structures given")
        if forces_key is not None and energy_key is None:
            raise ModelError("forces_key needs energy_key: forces are learned together with total energies")
        if energy_key is not None:
            if labels is not None or n_train is not None:
                raise ModelError("energy_key (training from total energies) takes no per-metal labels and no "
                                 "n_train: every structure's sites are used")
            totals = [total_energy(a, energy_key) for a in structures]
            forces = None if forces_key is None else [atom_forces(a, forces_key) for a in structures]
            maps = [coarse_grain(a, self.spec.representation) for a in structures]
            return self.fit_totals_maps(maps, totals, forces=forces, energy_key=energy_key, forces_key=forces_key,
                                        force_noise=force_noise, progress=progress)
        maps = [coarse_grain(a, self.spec.representation) for a in structures]
        if labels is None:
            labels = [local_energies(a, label_key=label_key, target=target, connectivity=m.connectivity)
                      for a, m in zip(structures, maps, strict=True)]
        return self.fit_maps(maps, labels, n_train=n_train, seed=seed, progress=progress)

    def fit_maps(self, maps: Sequence[BeadMap], labels: Sequence[np.ndarray], *, n_train: int | None = None,
                 seed: int = 0, progress: bool = False, weights: Sequence[float] | None = None) -> CGGPRModel:
        """Fit to bead maps (from :meth:`bead_map` or :func:`~ase_cggpr.beads.coarse_grain`) and labels (eV).
        ``weights`` (sparse solver only): one positive weight per map; its sites' noise variance is ``noise^2 / w``
        (the same as repeating the map w times, at the cost of one)."""
        if not len(maps):
            raise ModelError("no training structures given")
        y = _stack_labels(maps, labels)
        w = None
        if weights is not None:
            if self.solver != "sparse":
                raise ModelError("per-structure weights need the sparse solver")
            if len(weights) != len(maps):
                raise ModelError(f"need one weight per structure ({len(maps)}), got {len(weights)}")
            w = np.repeat(np.asarray(weights, dtype=float), [len(m.centre_indices) for m in maps])
        # the descriptor's species come from the training data (species a user put in the spec are kept)
        metals, linkers = self._training_species_of(maps)
        rows = np.arange(len(y))
        if n_train is not None:
            if n_train < 1:
                raise ModelError(f"n_train must be at least 1, got {n_train}")
            if n_train < len(y):
                rows = np.sort(np.random.default_rng(seed).choice(len(y), size=n_train, replace=False))
        if self.solver == "sparse":  # streamed: never all N x D descriptors at once (ase_cggpr.streaming)
            fitted = fit_streamed(self.spec, self.solver_options, maps, y, rows,
                                  reference_energy=self.reference_energy, progress=progress, weights=w)
            fitted.training.update(n_candidate_environments=int(len(y)), n_train=n_train, seed=seed)
            if w is not None:
                fitted.training["weights"] = {"min": float(w.min()), "max": float(w.max()),
                                              "weighted_environments": float(w[rows].sum())}
            return self._set_fitted(fitted.regressor, metals=sorted(metals), linkers=sorted(linkers),
                                    training=fitted.training, clusters=fitted.clusters)
        X = self.selected_vectors(maps, rows, progress=progress)
        n_structures = len(np.unique(np.searchsorted(np.cumsum([len(m.centre_indices) for m in maps]), rows,
                                                     side="right")))
        self.fit_vectors(X, y[rows], metals=sorted(metals), linkers=sorted(linkers),
                         n_structures=n_structures, progress=progress)
        # how the training environments were drawn, so the saved model says how to reproduce it
        self.training_.update(n_candidate_environments=int(len(y)), n_train=n_train, seed=seed)
        return self

    def fit_totals_maps(self, maps: Sequence[BeadMap], totals: Sequence[float], *,
                        forces: Sequence[np.ndarray | None] | None = None, energy_key: str | None = None,
                        forces_key: str | None = None, force_noise: float = DEFAULT_FORCE_NOISE,
                        progress: bool = False) -> CGGPRModel:
        """Fit per-metal local energies to the structures' total energies (eV), as GAP fits total energies.

        Each structure s (``maps[s]``, n_s metal sites) is one observation of the sum of its local energies,

            E_s - n_s reference_energy = sum_{i in s} e(x_i) + noise_s,   var(noise_s) = noise^2 n_s,

        (``noise``, the spec's, is the per-site standard deviation, so a structure's noise grows as the square
        root of its number of metals, as independent per-site errors would). The sparse (projected-process)
        solver does it in M x M: the rows ``sum_{i in s} k(x_i, X_m)`` against the inducing environments
        X_m (:meth:`~ase_cggpr.streaming.Accumulator.add_totals`; streamed, 64 structures at a time, the
        inducing environments drawn from the environments as for local labels), then SparseGPR's own
        blocked-Cholesky solve. The result is an ordinary sparse model (weights on inducing environments,
        the same file, calculator and screen); its variance is the projected-process posterior variance of
        one local energy given the totals.

        Reference energies: one per-metal offset. The model's constant mean is the weighted least-squares
        per-site offset ``sum_s (E_s - n_s reference) / sum_s n_s``, on top of ``reference_energy``. For
        Zn(Im)2 every structure has the same stoichiometry, so a Zn offset and an imidazolate offset cannot
        be told apart from totals (only ``mu_Zn + 2 mu_Im``, the per-metal offset, is identifiable); with
        several metals or linkers the GP itself carries their differences (their environments differ).

        Forces (``forces``: per map its (n_atoms, 3) forces in eV/Å, or None): each component is one more
        observation, of minus the position derivative of the structure's summed local energies, with noise
        ``force_noise`` (eV/Å); its row is ``-d/dr sum_i k(x_i, X_m)`` through the descriptor gradients
        (:meth:`~ase_cggpr.streaming.Accumulator.add_forces`; featomic backend). Atomistic models only: a
        coarse-grained model's energy is a function of the bead positions alone, with the linkers' internal
        coordinates not seen (AB2, A) and its labels those of ideal or relaxed linkers; the atomistic forces of a
        frame are derivatives with every other atom held where it is, so they are not the gradient of that
        energy (summing them over a bead's atoms would teach it the gradient of a different function), and
        they are refused.

        Needs ``solver="sparse"``; ``n_train`` does not apply (every site of every structure is used).
        """
        if self.solver != "sparse":
            raise ModelError("training from total energies uses the sparse solver: build the model with "
                             "solver='sparse' (cggpr train --energy-key uses it by default)")
        if not len(maps):
            raise ModelError("no training structures given")
        totals, counts = checked_totals(maps, totals, self.reference_energy)
        if forces is not None:
            check_forces(maps, forces, self.spec.representation, force_noise)
        metals, linkers = self._training_species_of(maps)
        fitted = fit_streamed(self.spec, self.solver_options, maps, np.zeros(int(counts.sum())),
                              np.arange(int(counts.sum())), reference_energy=self.reference_energy,
                              progress=progress, totals=totals, forces=forces, force_noise=force_noise)
        training = fitted.training
        training.update(labels="total energies", energy_key=energy_key,
                        n_totals=int(len(maps)), noise_per_structure="noise * sqrt(n_metals)")
        n_components = int(fitted.regressor.label_stats_.get("n_force_components", 0))
        if n_components:
            training.update(labels="total energies and forces", forces_key=forces_key,
                            n_force_components=n_components, force_noise=float(force_noise))
        self._set_fitted(fitted.regressor, metals=sorted(metals), linkers=sorted(linkers), training=training,
                         clusters=fitted.clusters)
        return self

    def _training_species_of(self, maps: Sequence[BeadMap]) -> tuple[set[str], set[str]]:
        """(metals, linkers) of the training maps, checked against the representation; sets the spec's
        descriptor species from them (as :meth:`fit_maps`)."""
        metals, linkers = set(), set()
        for m in maps:
            m_metals, m_linkers = _species(m.connectivity)
            metals |= m_metals
            linkers |= m_linkers
        if self.spec.representation == "A" and len(linkers) > 1:
            raise ModelError(f"the training structures have linkers {_linker_names(sorted(linkers))}, but the A "
                             "representation cannot tell linkers apart (its beads are the metal sites alone); "
                             "train an AB2 or atomistic model on several linkers")
        if not hasattr(self, "_given_species"):
            self._given_species = (self.spec.species, self.spec.centre_species)
        self.spec = _training_species(self.spec, self._given_species, maps)
        return metals, linkers

    def fit_vectors(self, X: np.ndarray, y: np.ndarray, *, metals: Sequence[str] = CG_INPUT_METALS,
                    linkers: Sequence[str] = CG_INPUT_LINKERS, n_structures: int | None = None,
                    progress: bool = False) -> CGGPRModel:
        """Fit to precomputed SOAP vectors X (N, D) and raw per-metal labels y (N,) in eV."""
        y = np.asarray(y, dtype=float) - self.reference_energy
        regressor = SOLVERS[self.solver](zeta=self.spec.zeta, offset=self.spec.offset, noise=self.spec.noise,
                                         **self.solver_options)
        n = len(y)
        with progress_bar(n, "kernel", enabled=progress and n > 2000) as update:
            regressor = regressor.fit(X, y, progress=update)
        training = {"n_structures": n_structures, "n_environments": n,
                    "label_mean": float(y.mean()), "label_std": float(y.std()),
                    "label_min": float(y.min()), "label_max": float(y.max())}
        return self._set_fitted(regressor, metals=metals, linkers=linkers, training=training)

    def _set_fitted(self, regressor, *, metals: Sequence[str], linkers: Sequence[str], training: dict[str, Any],
                    clusters: list[Atoms] | None = None, calibration: dict | None = None,
                    metadata: dict | None = None, source: str | None = None) -> CGGPRModel:
        """Record a fitted regressor and what the model knows with it: the one place the fitted state is set
        (exact fit, streamed fit, a loaded file). A new fit has no calibration and is no file's model
        (``metadata_``, ``source_`` None); ``clusters``: the inducing environments of a compact sparse model
        (:mod:`ase_cggpr.inducing`), saved in their place."""
        self.regressor_ = regressor
        self.inducing_clusters_ = clusters
        self.calibration_ = calibration
        self.metadata_, self.source_ = metadata, source
        self.metals_ = tuple(metals)
        self.linkers_ = tuple(linkers)
        self.training_ = training
        return self

    # -- prediction --------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ModelError("this model is not fitted yet; call fit() or load a saved model")

    def predict_maps(self, maps: Sequence[BeadMap], *, return_std: bool = False, progress: bool = False,
                     chunk: int = 64, centres: Sequence[Sequence[int] | None] | None = None):
        """Per-structure arrays of local energies (eV, relative to the reference) [and std devs].

        ``centres``: per map, the metal sites to predict (positions in metal order, e.g. the symmetry-unique ones;
        None: all), the arrays then holding those sites in the order given; only their vectors are computed.
        Structures are described and predicted ``chunk`` at a time, so memory does not grow with their number.
        """
        self._check_fitted()
        if centres is not None and len(centres) != len(maps):
            raise ModelError(f"{len(centres)} centre selections for {len(maps)} structures")
        means, stds = [], []
        with progress_bar(len(maps), "predict", enabled=progress) as update:
            for begin in range(0, len(maps), chunk):
                block = maps[begin:begin + chunk]
                chosen = None if centres is None else [_centre_positions(m, c)
                                                       for m, c in zip(block, centres[begin:begin + chunk],
                                                                       strict=True)]
                X = self._map_vectors(block, chosen, progress=update)
                mean, std = self._predict_rows(X, return_std=return_std)
                counts = [len(m.centre_indices) for m in block] if chosen is None else [len(c) for c in chosen]
                splits = np.cumsum(counts)[:-1]
                block_means = np.split(mean, splits)
                block_stds = np.split(std, splits) if return_std else [None] * len(block)
                for m, e, s in zip(block, block_means, block_stds, strict=True):
                    check_prediction(m.name, e, s)  # a NaN is never returned as a number
                means.extend(block_means)
                if return_std:
                    stds.extend(block_stds)
        return (means, stds) if return_std else means

    def predict_vectors(self, X: np.ndarray, *, return_std: bool = False, name: str = "structure"):
        """Local energies (eV, relative to the reference) [and std devs] of descriptor vectors X (n, D) already
        computed (cross-validation's folds): the last step of :meth:`predict_maps`; a non-finite number is a
        :class:`ModelError` naming ``name``."""
        self._check_fitted()
        energies, std = self._predict_rows(X, return_std=return_std)
        check_prediction(name, energies, std)
        return (energies, std) if return_std else energies

    @property
    def cheap_fitted_values(self) -> bool:
        """Whether :meth:`fitted_values` costs nothing (the exact solver's come from its weights)."""
        return bool(getattr(self.regressor_, "cheap_fitted_values", False))

    def fitted_values(self, X: np.ndarray) -> np.ndarray:
        """Predictions (eV, relative to the reference) at the training vectors X the model was just fitted on
        (:meth:`fit_vectors`): free from the exact solver's weights, else :meth:`predict_vectors`."""
        self._check_fitted()
        if hasattr(self.regressor_, "fitted_values"):
            return self.regressor_.fitted_values()
        return self.predict_vectors(X, name="training set")

    @property
    def fit_timings(self) -> dict[str, float]:
        """Seconds of the last fit's phases (kernel, Cholesky, solve, ...; empty when unknown)."""
        return dict(getattr(getattr(self, "regressor_", None), "timings_", {}) or {})

    @property
    def fitted_weights(self) -> dict[str, np.ndarray]:
        """The fitted regressor's weights that decide its predictions, by name (``alpha_``: the weights, eV per
        kernel unit; ``mean_``: the prior mean, eV), those the solver has; what a screen's fingerprint hashes."""
        self._check_fitted()
        return {name: value for name in ("alpha_", "mean_")
                if (value := getattr(self.regressor_, name, None)) is not None}

    def _predict_rows(self, X: np.ndarray, *, return_std: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(mean, std or None) of descriptor rows, the regressor's blocked ``predict``."""
        out = self.regressor_.predict(X, return_std=return_std)
        return out if return_std else (out, None)

    def _map_vectors(self, maps: Sequence[BeadMap], positions: Sequence[np.ndarray] | None = None, *,
                     backend: DescriptorBackend | None = None, progress=None) -> np.ndarray:
        """SOAP vectors of the maps' centres at ``positions`` (per map, unique positions in metal order, in any
        order; None: every centre), rows in map order then in the order of the positions. Only the selected
        centres are described (the same vectors as describing all of them)."""
        if positions is not None and all(np.array_equal(p, np.arange(len(m.centre_indices)))
                                         for m, p in zip(maps, positions, strict=True)):
            positions = None  # every centre, in order: described as such
        if positions is None:
            if backend is None:
                return soap_vectors(maps, self.spec, progress=progress)
            return backend.vectors([m.structure for m in maps])
        orders = [np.argsort(p, kind="stable") for p in positions]  # backends take centres in atom order
        atoms = [np.asarray(m.centre_indices)[p[o]] for m, p, o in zip(maps, positions, orders, strict=True)]
        if backend is None:
            X = soap_vectors(maps, self.spec, centres=atoms, progress=progress)
        else:
            X = backend.vectors([m.structure for m in maps], atoms)
        out = np.empty_like(X)
        start = 0
        for order in orders:
            out[start + order] = X[start:start + len(order)]
            start += len(order)
        return out

    def predict(self, structures: Atoms | Sequence[Atoms], *, return_std: bool = False,
                progress: bool = False, defects: str = "refuse"):
        """Local energies (eV per metal, relative to the reference) of one structure or a list of them.

        Returns an array (one structure) or a list of arrays, each in metal order; with ``return_std``
        a pair (means, standard deviations). Plain arrays cannot say which sites to trust, so a coordination
        defect is refused by default; ``defects="flag"`` predicts every site anyway (:meth:`compute` and
        :meth:`site_trust` say which sites are defective or affected).
        """
        single = isinstance(structures, Atoms)
        frames = [structures] if single else list(structures)
        maps = [self.bead_map(a, defects=defects) for a in frames]
        result = self.predict_maps(maps, return_std=return_std, progress=progress)
        if single:
            return (result[0][0], result[1][0]) if return_std else result[0]
        return result

    def descriptor_backend(self, name: str | None = None) -> DescriptorBackend:
        """The descriptor backend of the model's spec (``name``, ``"featomic"`` or ``"quippy"``, overrides
        ``spec.backend``; both give the same vectors)."""
        return backend_for(self.spec, name)

    def compute(self, structure: Atoms | BeadMap, *, forces: bool = False, return_std: bool = False,
                connectivity: Connectivity | None = None, descriptor_backend: str | None = None,
                stress: bool = False, precision: str | None = None, defects: str = "flag",
                centres: Sequence[int] | None = None) -> Prediction:
        """Local energies of one structure, and with ``forces`` their forces, with ``stress`` the stress, in one call.

        ``centres``: predict only these metal sites (positions in metal order, unique; e.g. one per symmetry orbit,
        as the screen does): only their vectors are computed, and ``local_energies``, ``std`` and ``vectors`` hold
        them in the order given (``Prediction.centres``); forces and stress need every site.

        Coordination defects (a Zn with 3 or 5 N, a dangling linker: amorphous networks) are flagged by
        default (``defects="flag"``; ``"refuse"`` raises a StructureError instead): every site is predicted
        and ``Prediction.trust`` (:class:`~ase_cggpr.defects.SiteTrust`) names the defective sites and those
        with a defect within the model's cutoff, whose local energies are extrapolations. ``energy`` stays the
        sum over all sites; ``energy_trusted`` is the sum over the trusted ones.

        ``structure`` is an Atoms object (mapped with :meth:`bead_map`, reusing ``connectivity`` if given) or
        a :class:`~ase_cggpr.beads.BeadMap` from it. The descriptor backend is ``spec.backend`` unless
        ``descriptor_backend`` names the other one. ``precision`` (default :attr:`prediction_precision`,
        ``"float64"``) is the arithmetic of the kernel product: ``"float32"`` cuts its cost by 1.5-2 x and moves
        the energies by up to ~8 meV per metal on the shipped models (measured on the 272-atom cag cell: AB2 7.8,
        A 1.9, atomistic 3.9 meV; forces by up to 1e-3 eV/Å), so it is opt-in (the variance is always float64).

        The mean and its gradient come from one kernel product against the regressor's vectors
        (:meth:`~ase_cggpr.regression.SparseGPR.predict_mean`); the variance is computed only with ``return_std``.

        The energy of a structure is a sum over its metal environments (centres) i,

            E = sum_i e(x_i),    e(x) = mean + sum_n w_n k(x, b_n),

        with x_i the normalised SOAP vector of centre i, ``k`` the regressor's kernel and (b_n, w_n) its
        vectors and weights (training vectors for the exact solver, inducing vectors for the sparse one).
        With ``forces``, the descriptor backend gives the vectors with their position gradients, the
        regressor ``dE/dx_i`` (:meth:`~ase_cggpr.regression.Regressor.predict_gradient`) and the backend
        contracts them to ``dE/dr_j = sum_i (dx_i/dr_j)^T dE/dx_i`` on the descriptor structure's atoms,
        never storing the (n_centres, n_atoms, 3, D) Jacobian; :func:`bead_to_atom_gradient` carries that
        to the input atoms. The energies are those of the same vectors.

        What the forces mean physically: minus the gradient of the *learned* energy with respect to the
        positions of what the descriptor sees. In the atomistic representation that is every atom. In the
        coarse-grained representations the energy depends only on the A beads (the metals) and, for AB2, on
        the B beads at the centroids of the linkers' ring atoms; by the chain rule the force on a B bead is
        shared equally among its ring atoms (1/n each, n ring atoms), the A-bead force acts on the metal,
        and everything else (H atoms, substituents, and internal linker motions that leave the ring centroid
        in place: ring deformation, rotation of the ring about its centroid) carries no force. Such forces
        drive the coarse-grained degrees of freedom down the learned energy surface; they are not, and do
        not approximate, the atomistic forces. They sum to zero (translation invariance of SOAP) up to
        numerical noise.

        With ``stress``, the same descriptor call also gives the strain gradients of the vectors and the
        backend contracts them with the same ``dE/dx_i`` into ``W = dE/d(eps)`` under the homogeneous
        deformation ``r -> (1 + eps) r`` of every position and the cell; the stress is ``sym(W) / V``
        (eV/Å^3, ASE's sign and Voigt order xx yy zz yz xz xy, V the cell volume), the strain derivative of
        the learned energy. In the coarse-grained representations the strain acts on the bead structure: its
        beads are metal positions and centroids of ring atoms (unwrapped with fixed periodic-image offsets),
        which move affinely with the atoms under a homogeneous strain, and its cell is the input's, so the
        bead structure's virial is exactly the input structure's (the stress of the learned energy with
        respect to the input's cell). With the quippy backend the strain gradients come from featomic (see
        :mod:`ase_cggpr.descriptors.quippy`; the same vectors).

        A non-finite energy, std, force or stress is a :class:`ModelError` naming the structure.
        """
        self._check_fitted()
        if isinstance(structure, BeadMap):
            bead_map = structure
            n_atoms = _input_atom_count(bead_map)
        else:
            bead_map = self.bead_map(structure, connectivity=connectivity, defects=defects)
            n_atoms = len(structure)
        if bead_map.representation != self.spec.representation:
            raise ModelError(f"structure {bead_map.name!r} is in the {bead_map.representation} representation but "
                             f"the model uses {self.spec.representation}")
        check_species(bead_map, self.spec)
        backend = self.descriptor_backend(descriptor_backend)
        if centres is not None:
            if forces or stress:
                raise ModelError(f"structure {bead_map.name!r}: forces and stress need every metal site; "
                                 "predict with centres=None")
            centres = _centre_positions(bead_map, centres)
        volume = None
        if stress:
            cell = bead_map.structure.cell
            volume = abs(float(cell.volume)) if bool(np.all(bead_map.structure.pbc)) else 0.0
            if not volume > 0.0:
                raise ModelError(f"structure {bead_map.name!r}: stress needs a 3-d periodic cell with a volume")
        if forces or stress:
            gradients = backend.gradients(bead_map.structure, strain=stress)
            if not np.array_equal(np.asarray(gradients.centres), np.asarray(bead_map.centre_indices)):
                raise ModelError(f"structure {bead_map.name!r}: descriptor centres do not match the metal sites")
            X = gradients.vectors
        else:
            X = self._map_vectors([bead_map], None if centres is None else [centres], backend=backend)
        energies, std, dE_dx = self._predict(X, gradient=forces or stress, return_std=return_std,
                                             precision=precision)
        check_prediction(bead_map.name, energies, std)
        atom_forces = voigt = None
        if forces:
            bead_gradient = gradients.contract(dE_dx)
            atom_forces = -bead_to_atom_gradient(bead_map, bead_gradient, n_atoms)
            if not np.isfinite(atom_forces).all():
                raise ModelError(f"structure {bead_map.name!r}: the model predicted non-finite forces (NaN or inf)")
        if stress:
            virial = gradients.contract_strain(dE_dx)
            sigma = 0.5 * (virial + virial.T) / volume
            voigt = sigma[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]  # xx yy zz yz xz xy
            if not np.isfinite(voigt).all():
                raise ModelError(f"structure {bead_map.name!r}: the model predicted a non-finite stress (NaN or inf)")
        return Prediction(local_energies=energies, std=std, forces=atom_forces, bead_map=bead_map, stress=voigt,
                          trust=self.site_trust(bead_map), vectors=X, centres=centres)

    def std_of_vectors(self, X: np.ndarray, name: str = "structure") -> np.ndarray:
        """GP standard deviation (eV, latent function) of each row of X, descriptor vectors of one structure
        (e.g. :attr:`Prediction.vectors`); a non-finite one is a :class:`ModelError` naming ``name``."""
        return self.predict_vectors(X, return_std=True, name=name)[1]

    def _predict(self, X: np.ndarray, *, gradient: bool, return_std: bool, precision: str | None):
        """(mean, std or None, d mean / d x or None) of the rows of X: the mean and its gradient in one kernel pass
        (``predict_mean``), the std (``predict``) only when asked for."""
        precision = precision or self.prediction_precision
        regressor = self.regressor_
        std = None
        if not hasattr(regressor, "predict_mean"):  # a solver without the one-pass route
            out = regressor.predict(X, return_std=return_std)
            energies, std = out if return_std else (out, None)
            return energies, std, regressor.predict_gradient(X) if gradient else None
        if return_std and not gradient and precision == "float64":
            energies, std = regressor.predict(X, return_std=True)
            return energies, std, None
        energies, dE_dx = regressor.predict_mean(X, gradient=gradient, precision=precision)
        if return_std:
            std = regressor.predict(X, return_std=True)[1]
        return energies, std, dE_dx

    # -- persistence ---------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """What a saved model records: format and package version, creation time, every hyperparameter (the
        full spec, the regression parameters, the solver and its options), the reference energy, the species
        seen, the training summary (numbers of structures and environments, label statistics, how the
        environments were drawn: ``n_train``, ``seed``; from :func:`~ase_cggpr.training.train_model` also
        the label key, target, held-out fraction and each data file's size and SHA-256) and the calibration."""
        self._check_fitted()
        params, _ = self.regressor_.get_state(include_factor=False)
        clusters = getattr(self, "inducing_clusters_", None)
        if clusters:  # saved as clusters (ase_cggpr.inducing), their vectors recomputed at load
            params.update(inducing_storage="clusters", cluster_atoms=int(sum(len(c) for c in clusters)))
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "package_version": __version__,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "spec": self.spec.to_dict(), "regression": params,
                "reference_energy": self.reference_energy, "metals": list(self.metals_),
                "linkers": list(self.linkers_), "training": self.training_,
                "calibration": getattr(self, "calibration_", None),
                "solver": self.solver, "solver_options": self.solver_options}

    def save(self, path: str | os.PathLike, *, overwrite: bool = False,
             include_factor: bool | None = None) -> Path:
        """Write the model to ``path`` (``.npz`` appended if missing). Never overwrites unless asked.

        ``include_factor``: store the exact N x N Cholesky factor for predictive variances (default: when the
        training set has at most 8,000 environments, which is when the exact solver keeps it; above, the
        model's variance is the projected-process one on M x M factors, always saved: the metadata's
        ``regression.variance`` says which). A model saved without its factor gives no std above
        2,000 environments (it is never refactored inside a prediction).
        """
        self._check_fitted()
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; choose another name or pass overwrite=True")
        if include_factor is None:
            include_factor = self.training_["n_environments"] <= MAX_SAVED_FACTOR
        arrays = saved_arrays(self.regressor_, getattr(self, "inducing_clusters_", None),
                              include_factor=include_factor)
        record = self.metadata()
        write_model_file(path, record, arrays, overwrite=overwrite)
        self.metadata_, self.source_ = record, str(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CGGPRModel:
        """Read a model written by :meth:`save` (no pickle involved), checking everything before use.

        ``path`` may also name a model that ships with the package (:mod:`ase_cggpr.pretrained`:
        ``CGGPRModel.load("AB2")``; ``cggpr models`` lists them); an existing file of that name wins.

        The file is checked in this order, and any problem is one :class:`ModelError` naming the file: the
        zip container; every member's ``.npy`` header (dtype, shape, and that the member holds exactly the
        bytes the header claims, so nothing is read past a lie); the metadata JSON, field by field; every
        array's shape and dtype against the metadata (the descriptor dimension of the spec, the number of
        training or inducing environments) and their total size against this machine's memory, all before
        any array is read; then finiteness of every array and the consistency of a saved Cholesky factor
        with the training vectors (a few of its rows are recomputed).
        """
        given, path = path, resolve(path)  # a shipped model's name ("AB2", "A", "atomistic") or a path
        if not path.exists():
            shipped = ", ".join(available()) or "none in this installation"
            raise ModelFileNotFoundError(f"cannot load model {path}: no such file, and not the name of a shipped "
                                         f"model ({shipped})")
        try:
            meta, spec, arrays = read_model_file(path)
        except ModelError as error:
            if shadowing(given):  # e.g. a folder named AB2 in the working directory
                error.args = (f"{error}; {shadowing(given)}",)
            raise
        if spec.species is None or spec.centre_species is None:  # written before the spec recorded species
            spec = spec.replace(species=spec.effective_species, centre_species=spec.effective_centre_species)
        try:
            regressor = solver_from_state(meta["regression"], arrays)
        except ModelError as error:
            raise ModelError(f"cannot load model {path}: {error}") from None
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"cannot load model {path}: invalid regression state "
                             f"({type(error).__name__}: {error})") from None
        model = cls(spec, reference_energy=meta["reference_energy"], solver=regressor.kind,
                    solver_options=dict(meta.get("solver_options") or {}))
        return model._set_fitted(regressor, metals=meta["metals"], linkers=meta["linkers"],
                                 training=meta["training"], clusters=arrays.get("clusters"),
                                 calibration=meta.get("calibration"), metadata=meta, source=str(path))

    def provenance(self) -> dict[str, Any]:
        """Which model this is, for the record of a number it predicted (no arrays): the file it was loaded
        from or saved to (None if neither), that file's creation time and package version (None and this
        package's version for a model only in memory), representation, descriptor backend, solver and
        number of training environments."""
        self._check_fitted()
        meta = getattr(self, "metadata_", None) or {}
        return {"path": getattr(self, "source_", None), "created": meta.get("created"),
                "package_version": meta.get("package_version", __version__),
                "representation": self.spec.representation, "backend": self.spec.backend,
                "solver": self.solver, "n_environments": self.training_["n_environments"]}


def _centre_positions(bead_map: BeadMap, centres: Sequence[int] | None) -> np.ndarray:
    """``centres`` as unique metal-site positions (0..n_metals-1) of ``bead_map`` (None: all of them)."""
    n = len(bead_map.centre_indices)
    if centres is None:
        return np.arange(n)
    positions = np.asarray(centres)
    if positions.ndim != 1 or (positions.size and (positions.dtype.kind not in "iu" or positions.min() < 0
                                                   or positions.max() >= n)) \
            or len(np.unique(positions)) != len(positions):
        raise ModelError(f"structure {bead_map.name!r}: centres must be unique metal-site positions in 0..{n - 1}")
    return positions.astype(np.int64)
