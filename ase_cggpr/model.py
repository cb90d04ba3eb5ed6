"""CGGPRModel: a model spec plus a fitted GP regressor, with a portable, pickle-free file format.

Data flows one way: structures -> :func:`~ase_cggpr.beads.coarse_grain` -> SOAP vectors
(:mod:`ase_cggpr.descriptors`) -> GP regression (:mod:`ase_cggpr.regression`) -> per-metal local energies.
:meth:`CGGPRModel.compute` is the one prediction route of a structure: its local energies, their standard
deviations and its forces in one call (forces by the chain rule: the descriptor backend's ``gradients()``
contracted with the regressor's ``predict_gradient``, which is the kernel's ``gradient``); the ASE
calculator is a cache around it.

Energies are per metal environment (eV), relative to ``reference_energy`` (eV per metal; e.g. the mean
local energy of relaxed zni, as in the paper; 0 keeps raw force-field energies).

File format (version 1): one ``.npz`` file, read with ``allow_pickle=False``, holding the fitted arrays
(``X`` training vectors, ``alpha`` weights, optionally ``L`` the Cholesky factor) and ``metadata``, a JSON
string recording the format version, package version, the full :class:`ModelSpec`, the regression
parameters (kernel, noise, training mean), the reference energy, the metals and linkers seen in training
and a training-set summary. A model trained from total energies (and forces) is the same file (weights on inducing
environments); only its training summary differs (``labels``, ``energy_key``, ``n_totals``, ``forces_key``,
``n_force_components``, ``force_noise``: optional fields, checked when present), so the version stays 1.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from . import __version__
from .beads import KNOWN_LINKERS, BeadMap, Connectivity, coarse_grain, find_connectivity
from .defects import SiteTrust, site_trust
from .descriptors import DescriptorBackend, backend_for, check_species, soap_dimension, soap_vectors
from .errors import ModelError
from .inducing import cluster_factor, cluster_vectors, pack_clusters, pack_lower, unpack_clusters, unpack_lower
from .kernels import PolynomialKernel
from .labels import as_label_array, local_energies
from .outputs import atomic_output
from .progress import progress_bar
from .regression import EXACT_VARIANCE_MAX, MAX_LABEL_DEVIATION, SELECTIONS, SOLVERS, SparseGPR, solver_from_state
from .spec import ModelSpec

FORMAT_NAME = "ase-cggpr-model"
FORMAT_VERSION = 1
#: Above this many training environments the exact N x N Cholesky factor is neither kept nor saved: the
#: exact solver keeps the small Nyström variance instead (see ase_cggpr.regression.ExactGPR).
MAX_SAVED_FACTOR = EXACT_VARIANCE_MAX
#: Largest metadata member read from a model file (bytes of its numpy unicode string).
MAX_METADATA_BYTES = 64 * 2**20
#: Most members (arrays) a model file may hold.
MAX_MEMBERS = 64
#: Largest ``block_size`` a model file may ask for (rows of the kernel block held at once).
MAX_BLOCK_SIZE = 1_000_000

#: Noise standard deviation of a force component (eV/Å) when training on forces (``force_noise``).
DEFAULT_FORCE_NOISE = 0.1

#: Metals and linkers recorded by :meth:`CGGPRModel.fit_vectors` when not given: Zn(Im)2.
CG_INPUT_METALS = ("Zn",)
CG_INPUT_LINKERS = ("C3H3N2",)


def _species(connectivity: Connectivity) -> tuple[set[str], set[str]]:
    """(metals, linker Hill formulas) of a structure; bead input names those its bead elements stand for."""
    return set(connectivity.metal_symbols), set(connectivity.linker_formulas)


def _linker_names(formulas) -> str:
    return ", ".join(f"{f} = {KNOWN_LINKERS[f]}" if f in KNOWN_LINKERS else f for f in formulas)


def _training_species(spec: ModelSpec, given: tuple, maps: Sequence[BeadMap]) -> ModelSpec:
    """``spec`` with the descriptor species of the training maps: the elements of their descriptor structures
    (neighbour species) and of their metal sites (centre species), in descending Z. Species given in the spec
    by the user (``given``: its species and centre_species before the first fit) are kept, and the training
    structures must hold no other element."""
    from ase.data import chemical_symbols

    elements, centres = set(), set()
    for m in maps:
        numbers = m.structure.numbers
        elements.update(np.unique(numbers).tolist())
        centres.update(np.unique(numbers[np.asarray(m.centre_indices, dtype=int)]).tolist())
    found = {"species": tuple(sorted(elements, reverse=True)), "centre_species": tuple(sorted(centres, reverse=True))}
    for key, user in zip(("species", "centre_species"), given, strict=True):
        if user is None:
            continue
        extra = set(found[key]) - set(user)
        if extra:
            where = next(m.name for m in maps if set(np.unique(m.structure.numbers).tolist()) & extra)
            raise ModelError(f"training structure {where!r} holds {[chemical_symbols[z] for z in sorted(extra)]}, "
                             f"which are not in the spec's {key} {[chemical_symbols[z] for z in user]}")
        found[key] = tuple(user)
    return spec.replace(**found)


def selected_vectors(maps: Sequence[BeadMap], spec: ModelSpec, rows: np.ndarray, *, chunk: int = 64,
                     progress=None) -> np.ndarray:
    """SOAP vectors (len(rows), D) of the environments ``rows`` only: the package's one selected-centres helper
    (training on a sample, the evaluation's SOAP cache, the screen's symmetry-unique centres).

    ``rows`` are sorted, unique global centre indices: the centres of ``maps[0]`` in metal order, then those of
    ``maps[1]``, ... Only the selected centres are described (``soap_vectors(..., centres=...)``; the same
    numbers as describing every centre and keeping those rows), ``chunk`` maps per call; maps with no selected
    row are skipped. ``progress(k)`` is called as :func:`~ase_cggpr.descriptors.soap_vectors` calls it.
    """
    rows = np.asarray(rows, dtype=np.int64)
    counts = np.array([len(m.centre_indices) for m in maps], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    if rows.ndim != 1 or (rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= starts[-1])):
        raise ModelError(f"rows must be sorted, unique environment indices in 0..{starts[-1] - 1}")
    owner = np.searchsorted(starts[1:], rows, side="right")
    needed = np.unique(owner)
    out = np.empty((len(rows), soap_dimension(spec)))
    filled = 0
    for begin in range(0, len(needed), chunk):
        block = needed[begin:begin + chunk]
        bounds = np.searchsorted(owner, np.append(block, block[-1] + 1))
        centres = [np.asarray(maps[k].centre_indices)[rows[a:b] - starts[k]]
                   for k, a, b in zip(block, bounds[:-1], bounds[1:], strict=True)]
        X = soap_vectors([maps[k] for k in block], spec, centres=centres, progress=progress)
        out[filled:filled + len(X)] = X
        filled += len(X)
    return out


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
            from .labels import atom_forces, total_energy

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
                 seed: int = 0, progress: bool = False) -> CGGPRModel:
        """Fit to bead maps (from :meth:`bead_map` or :func:`~ase_cggpr.beads.coarse_grain`) and labels (eV)."""
        if not len(maps):
            raise ModelError("no training structures given")
        y = _stack_labels(maps, labels)
        # the descriptor's species come from the training data (species a user put in the spec are kept)
        metals, linkers = self._training_species_of(maps)
        rows = np.arange(len(y))
        if n_train is not None:
            if n_train < 1:
                raise ModelError(f"n_train must be at least 1, got {n_train}")
            if n_train < len(y):
                rows = np.sort(np.random.default_rng(seed).choice(len(y), size=n_train, replace=False))
        if self.solver == "sparse":  # streamed: never all N x D descriptors at once (ase_cggpr.streaming)
            from .streaming import fit_model_streaming

            fit_model_streaming(self, maps, y, rows, metals=sorted(metals), linkers=sorted(linkers),
                                progress=progress)
            self.training_.update(n_candidate_environments=int(len(y)), n_train=n_train, seed=seed)
            return self
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
        if len(totals) != len(maps):
            raise ModelError(f"{len(totals)} total energies for {len(maps)} structures")
        totals = np.asarray([float(t) for t in totals], dtype=float)
        counts = np.array([len(m.centre_indices) for m in maps])
        for m, total, n in zip(maps, totals, counts, strict=True):
            if n == 0:
                raise ModelError(f"structure {m.name!r} has no metal site to carry its total energy")
            if not np.isfinite(total):
                raise ModelError(f"structure {m.name!r}: total energy is {total} (not finite)")
        per_site = totals / counts - self.reference_energy
        deviation = np.abs(per_site - float(np.sum(totals - self.reference_energy * counts) / counts.sum()))
        worst = int(np.argmax(deviation))
        if deviation[worst] > MAX_LABEL_DEVIATION:
            raise ModelError(f"structure {maps[worst].name!r}: its total energy per metal lies "
                             f"{deviation[worst]:.3g} eV from that of all structures (limit "
                             f"{MAX_LABEL_DEVIATION:g} eV): wrong units, or a mix of calculators?")
        if forces is not None:
            if len(forces) != len(maps):
                raise ModelError(f"{len(forces)} force arrays for {len(maps)} structures")
            if self.spec.representation != "atomistic" and any(f is not None for f in forces):
                raise ModelError(f"forces train atomistic models only; the {self.spec.representation} model's energy "
                                 "is a function of the bead positions, and the atomistic forces of a frame are not "
                                 "its gradient (see CGGPRModel.fit_totals_maps): train it on totals alone")
            if not (np.isfinite(force_noise) and force_noise > 0):
                raise ModelError(f"force_noise must be a positive number (eV/Å), got {force_noise!r}")
            for m, f in zip(maps, forces, strict=True):
                if f is not None and np.shape(f) != (len(m.structure), 3):
                    raise ModelError(f"structure {m.name!r}: forces of shape {np.shape(f)} for "
                                     f"{len(m.structure)} atoms")
        metals, linkers = self._training_species_of(maps)
        from .streaming import fit_model_streaming

        fit_model_streaming(self, maps, np.zeros(int(counts.sum())), np.arange(int(counts.sum())),
                            metals=sorted(metals), linkers=sorted(linkers), progress=progress, totals=totals,
                            forces=forces, force_noise=force_noise)
        self.training_.update(labels="total energies", energy_key=energy_key,
                              n_totals=int(len(maps)), noise_per_structure="noise * sqrt(n_metals)")
        n_components = int(self.regressor_.label_stats_.get("n_force_components", 0))
        if n_components:
            self.training_.update(labels="total energies and forces", forces_key=forces_key,
                                  n_force_components=n_components, force_noise=float(force_noise))
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
            regressor.fit(X, y, progress=update)
        self.regressor_ = regressor
        self.calibration_ = None
        self.metadata_ = self.source_ = None  # a new fit is no longer the model of a file
        self.metals_ = tuple(metals)
        self.linkers_ = tuple(linkers)
        self.training_ = {"n_structures": n_structures, "n_environments": n,
                          "label_mean": float(y.mean()), "label_std": float(y.std()),
                          "label_min": float(y.min()), "label_max": float(y.max())}
        return self

    # -- prediction --------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ModelError("this model is not fitted yet; call fit() or load a saved model")

    def predict_maps(self, maps: Sequence[BeadMap], *, return_std: bool = False, progress: bool = False,
                     chunk: int = 64):
        """Per-structure arrays of local energies (eV, relative to the reference) [and std devs].

        Structures are described and predicted ``chunk`` at a time, so memory does not grow with their number.
        """
        self._check_fitted()
        means, stds = [], []
        with progress_bar(len(maps), "predict", enabled=progress) as update:
            for begin in range(0, len(maps), chunk):
                block = maps[begin:begin + chunk]
                X = soap_vectors(block, self.spec, progress=update)
                out = self.regressor_.predict(X, return_std=return_std)
                mean, std = out if return_std else (out, None)
                splits = np.cumsum([len(m.centre_indices) for m in block])[:-1]
                block_means = np.split(mean, splits)
                block_stds = np.split(std, splits) if return_std else [None] * len(block)
                for m, e, s in zip(block, block_means, block_stds, strict=True):
                    check_prediction(m.name, e, s)  # a NaN is never returned as a number
                means.extend(block_means)
                if return_std:
                    stds.extend(block_stds)
        return (means, stds) if return_std else means

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
                stress: bool = False, precision: str | None = None, defects: str = "flag") -> Prediction:
        """Local energies of one structure, and with ``forces`` their forces, with ``stress`` the stress, in one call.

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
            X = backend.vectors([bead_map.structure])
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
                          trust=self.site_trust(bead_map), vectors=X)

    def std_of_vectors(self, X: np.ndarray, name: str = "structure") -> np.ndarray:
        """GP standard deviation (eV, latent function) of each row of X, descriptor vectors of one structure
        (e.g. :attr:`Prediction.vectors`); a non-finite one is a :class:`ModelError` naming ``name``."""
        self._check_fitted()
        energies, std = self.regressor_.predict(X, return_std=True)
        check_prediction(name, energies, std)
        return std

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
        _, arrays = self.regressor_.get_state(include_factor=include_factor)
        clusters = getattr(self, "inducing_clusters_", None)
        if clusters:  # compact format: the inducing environments as clusters (ase_cggpr.inducing)
            # the variance factor in float32 (std to ~1e-7 relative; the mean's weights stay float64)
            arrays = {"alpha": arrays["alpha"], "La_packed": pack_lower(self.regressor_.La_).astype(np.float32),
                      **pack_clusters(clusters)}
        try:
            record = self.metadata()
            metadata = json.dumps(record, indent=1, allow_nan=False)
        except ValueError:
            raise ModelError(f"cannot save {path}: the model's metadata holds NaN or inf "
                             f"(training summary {self.training_})") from None
        # a hidden temporary file beside path, removed on any exit (error, Ctrl-C); published in one step
        with atomic_output(path, force=overwrite) as tmp:
            np.savez(tmp, metadata=np.array(metadata), **arrays)
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
        from .pretrained import available, resolve, shadowing

        given, path = path, resolve(path)  # a shipped model's name ("AB2", "A", "atomistic") or a path
        if not path.exists():
            shipped = ", ".join(available()) or "none in this installation"
            raise ModelFileNotFoundError(f"cannot load model {path}: no such file, and not the name of a shipped "
                                         f"model ({shipped})")
        try:
            meta, spec, arrays = _read_model_file(path)
        except ModelError as error:
            if shadowing(given):  # e.g. a folder named AB2 in the working directory
                error.args = (f"{error}; {shadowing(given)}",)
            raise
        if spec.species is None or spec.centre_species is None:  # written before the spec recorded species
            spec = spec.replace(species=spec.effective_species, centre_species=spec.effective_centre_species)
        model = cls(spec, reference_energy=meta["reference_energy"])
        try:
            model.regressor_ = solver_from_state(meta["regression"], arrays)
        except ModelError as error:
            raise ModelError(f"cannot load model {path}: {error}") from None
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"cannot load model {path}: invalid regression state "
                             f"({type(error).__name__}: {error})") from None
        model.solver = model.regressor_.kind
        model.solver_options = dict(meta.get("solver_options") or {})
        model.metals_ = tuple(meta["metals"])
        model.linkers_ = tuple(meta["linkers"])
        model.training_ = meta["training"]
        model.calibration_ = meta.get("calibration")
        model.inducing_clusters_ = arrays.get("clusters")
        model.metadata_ = meta
        model.source_ = str(path)
        return model

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


def describe_files(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """``[{"path", "bytes", "sha256"}]`` of data files, for a model's record of what it was trained on."""
    import hashlib

    out = []
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        out.append({"path": str(Path(path).resolve()), "bytes": Path(path).stat().st_size,
                    "sha256": digest.hexdigest()})
    return out


def check_prediction(name: str, energies: np.ndarray, std: np.ndarray | None = None) -> None:
    """Refuse a prediction holding NaN or inf (a corrupt model, or a structure that overflows the kernel).

    Raises :class:`ModelError` naming the structure, so a non-finite number is never returned, ranked or
    trusted (the screen turns the error into an error row).
    """
    for what, values in (("energy", energies), ("standard deviation", std)):
        if values is not None and not np.isfinite(values).all():
            bad = int(np.size(values) - np.isfinite(values).sum())
            raise ModelError(f"structure {name!r}: the model predicted a non-finite {what} (NaN or inf) for "
                             f"{bad} of {np.size(values)} metal site(s); the model file is corrupt or the "
                             "structure overflows its kernel")


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What :meth:`CGGPRModel.compute` predicts for one structure.

    Attributes:
        local_energies: (n_metals,) local energy per metal (eV, relative to the model's reference energy),
            in metal (atom-index) order.
        std: (n_metals,) GP standard deviation per metal (eV, latent function), or None if not asked for.
        forces: (n_atoms, 3) forces on the input atoms (eV/Å), or None if not asked for.
        bead_map: the :class:`~ase_cggpr.beads.BeadMap` the descriptor saw.
        stress: (6,) stress (eV/Å^3, ASE sign, Voigt order xx yy zz yz xz xy), or None if not asked for.
        trust: per-site trust (:class:`~ase_cggpr.defects.SiteTrust`: defective sites and those with a defect
            within the cutoff are not trusted).
        vectors: (n_metals, D) the normalised descriptor vectors the energies come from (so a caller can ask
            for the std later without describing the structure again: :meth:`CGGPRModel.std_of_vectors`).
    """

    local_energies: np.ndarray
    std: np.ndarray | None
    forces: np.ndarray | None
    bead_map: BeadMap
    stress: np.ndarray | None = None
    trust: SiteTrust | None = None
    vectors: np.ndarray | None = None

    @property
    def energy(self) -> float:
        """Total energy (eV): the sum of the local energies of all metal sites (for a structure with
        coordination defects, the untrusted sites' terms are the model's extrapolation: see ``trust``)."""
        return float(np.sum(self.local_energies))

    @property
    def trusted(self) -> np.ndarray:
        """(n_metals,) bool: sites free of defects within the model's cutoff (all True without ``trust``)."""
        return self.trust.trusted if self.trust is not None else np.ones(len(self.local_energies), dtype=bool)

    @property
    def energy_trusted(self) -> float:
        """Sum (eV) of the trusted sites' local energies only (equal to ``energy`` for a well-formed network)."""
        return float(np.sum(self.local_energies[self.trusted]))


def bead_to_atom_gradient(bead_map: BeadMap, bead_gradient: np.ndarray, n_atoms: int) -> np.ndarray:
    """Chain rule from the descriptor structure to the input atoms: (n_atoms, 3).

    atomistic: identity. AB2: A beads -> metals; each B bead's gradient split equally over its ring atoms
    (the bead is their centroid). A: A beads -> metals. Already coarse-grained input maps bead to bead.
    """
    connectivity = bead_map.connectivity
    out = np.zeros((n_atoms, 3))
    if bead_map.representation == "atomistic":
        out[:] = bead_gradient
        return out
    n_metals = connectivity.n_metals
    out[connectivity.metal_indices] += bead_gradient[:n_metals]
    if bead_map.representation == "AB2":
        for k, ring in enumerate(connectivity.rings):
            out[ring] += bead_gradient[n_metals + k] / len(ring)
    return out


def _input_atom_count(bead_map: BeadMap) -> int:
    """Number of atoms of the structure a bead map was made from (every atom is a metal or in a linker)."""
    if bead_map.representation == "atomistic":
        return len(bead_map.structure)
    connectivity = bead_map.connectivity
    indices = [np.asarray(connectivity.metal_indices), *map(np.asarray, connectivity.linkers)]
    return int(max(int(i.max()) for i in indices if i.size)) + 1


# -- reading model files: everything is checked before it is used ---------------------------------------------
class ModelFileNotFoundError(ModelError, FileNotFoundError):
    """A model path that does not exist (both a ModelError and a FileNotFoundError)."""


def _bad(path: Path, problem: str) -> ModelError:
    return ModelError(f"cannot load model {path}: {problem}")


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _field(path: Path, section: dict, key: str, where: str) -> Any:
    if key not in section:
        raise _bad(path, f"the metadata has no field {where}")
    return section[key]


def _number(path: Path, value: Any, where: str, *, positive: bool = False, low: float | None = None) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and not (positive and value <= 0) and not (low is not None and value < low)
    if not ok:
        kind = ("a positive finite number" if positive else "a finite number" if low is None
                else f"a finite number >= {low}")
        raise _bad(path, f"metadata field {where} must be {kind}, got {_shown(value)}")
    return float(value)


def _integer(path: Path, value: Any, where: str, *, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"between {low} and {high}"
        raise _bad(path, f"metadata field {where} must be an integer {span}, got {_shown(value)}")
    return value


def _strings(path: Path, value: Any, where: str, *, non_empty: bool) -> list[str]:
    if (not isinstance(value, list) or (non_empty and not value)
            or not all(isinstance(v, str) and v for v in value)):
        kind = "a non-empty list" if non_empty else "a list"
        raise _bad(path, f"metadata field {where} must be {kind} of names, got {_shown(value)}")
    return value


#: Spec fields a model file must record (``backend`` may be missing: both backends give the same vectors).
_SPEC_TYPES = {"representation": str, "cutoff": float, "atom_sigma": float, "n_max": int, "l_max": int,
               "cutoff_transition_width": float, "zeta": int, "offset": float, "noise": float, "backend": str}


def _check_spec(path: Path, data: Any) -> ModelSpec:
    if not isinstance(data, dict):
        raise _bad(path, f"metadata field spec must be an object, got {_json_type(data)}")
    for key, kind in _SPEC_TYPES.items():
        if key not in data:
            if key == "backend":
                continue
            raise _bad(path, f"the metadata has no field spec.{key}")
        value = data[key]
        if kind is float:
            _number(path, value, f"spec.{key}")
        elif kind is int:
            _integer(path, value, f"spec.{key}")
        elif not isinstance(value, str):
            raise _bad(path, f"metadata field spec.{key} must be a string, got {_shown(value)}")
    try:
        return ModelSpec.from_dict(data)
    except ModelError as error:
        raise _bad(path, f"metadata field spec: {error}") from None
    except (TypeError, ValueError, KeyError) as error:
        raise _bad(path, f"metadata field spec: {type(error).__name__}: {error}") from None


def _check_regression(path: Path, data: Any, spec: ModelSpec) -> dict:
    if not isinstance(data, dict):
        raise _bad(path, f"metadata field regression must be an object, got {_json_type(data)}")
    kind = data.get("kind")
    if kind not in SOLVERS:
        raise _bad(path, f"metadata field regression.kind is {_shown(kind)}; known solvers: {sorted(SOLVERS)}")
    for key in ("zeta", "offset", "noise"):
        value = _field(path, data, key, f"regression.{key}")
        _number(path, value, f"regression.{key}")
        if not math.isclose(float(value), float(getattr(spec, key)), rel_tol=1e-12, abs_tol=1e-300):
            raise _bad(path, f"metadata field regression.{key} = {_shown(value)} differs from spec.{key} = "
                             f"{getattr(spec, key)!r}")
    if spec.zeta * math.log10(spec.offset + 1.0) > 300:
        raise _bad(path, f"zeta {spec.zeta} with offset {spec.offset}: the kernel (offset + x.x')^zeta reaches "
                         f"10^{spec.zeta * math.log10(spec.offset + 1.0):.0f}, beyond float64 (10^308)")
    _number(path, _field(path, data, "mean", "regression.mean"), "regression.mean")
    if "block_size" in data:
        _integer(path, data["block_size"], "regression.block_size", low=1, high=MAX_BLOCK_SIZE)
    if kind == "exact":
        precisions = SOLVERS["exact"].PRECISIONS
        if data.get("precision", "float64") not in precisions:
            raise _bad(path, f"metadata field regression.precision must be one of {list(precisions)}, "
                             f"got {_shown(data['precision'])}")
    else:
        _integer(path, _field(path, data, "n_inducing", "regression.n_inducing"), "regression.n_inducing", low=1)
        if data.get("selection", "fps") not in SELECTIONS:
            raise _bad(path, f"metadata field regression.selection must be one of {list(SELECTIONS)}, "
                             f"got {_shown(data['selection'])}")
        if "jitter" in data:
            _number(path, data["jitter"], "regression.jitter", low=0.0)
        storage = data.get("inducing_storage", "vectors")
        if storage not in ("vectors", "clusters"):
            raise _bad(path, f"metadata field regression.inducing_storage must be 'vectors' or 'clusters', "
                             f"got {_shown(storage)}")
        if storage == "clusters":
            _integer(path, _field(path, data, "cluster_atoms", "regression.cluster_atoms"),
                     "regression.cluster_atoms", low=1, high=10**9)
        if "seed" in data:
            _integer(path, data["seed"], "regression.seed")
    return data


def _check_training(path: Path, data: Any) -> dict:
    if not isinstance(data, dict):
        raise _bad(path, f"metadata field training must be an object, got {_json_type(data)}")
    _integer(path, _field(path, data, "n_environments", "training.n_environments"), "training.n_environments",
             low=1)
    if data.get("n_structures") is not None:
        _integer(path, data["n_structures"], "training.n_structures", low=1)
    for key in ("label_mean", "label_min", "label_max"):
        if key in data:
            _number(path, data[key], f"training.{key}")
    if "label_std" in data:
        _number(path, data["label_std"], "training.label_std", low=0.0)
    for key in ("n_totals", "n_force_components"):  # trained from total energies (and forces)
        if data.get(key) is not None:
            _integer(path, data[key], f"training.{key}", low=1)
    if data.get("force_noise") is not None:
        _number(path, data["force_noise"], "training.force_noise", positive=True)
    return data


def _check_metadata(path: Path, meta: Any) -> ModelSpec:
    """Check every metadata field the model uses (types, ranges, agreement of spec and regression)."""
    if not isinstance(meta, dict):
        raise _bad(path, f"the metadata is {_json_type(meta)}, not an object: not an ase-cggpr model file")
    if meta.get("format") != FORMAT_NAME:
        raise _bad(path, f"metadata field format is {_shown(meta.get('format'))}, not {FORMAT_NAME!r}: "
                         "not an ase-cggpr model file")
    version = _field(path, meta, "format_version", "format_version")
    _integer(path, version, "format_version", low=1)
    if version > FORMAT_VERSION:
        raise _bad(path, f"it has model format version {version}; this ase-cggpr ({__version__}) reads up to "
                         f"version {FORMAT_VERSION}: please upgrade")
    for key in ("package_version", "created"):
        if key in meta and not isinstance(meta[key], str):
            raise _bad(path, f"metadata field {key} must be a string, got {_shown(meta[key])}")
    spec = _check_spec(path, _field(path, meta, "spec", "spec"))
    _check_regression(path, _field(path, meta, "regression", "regression"), spec)
    _number(path, _field(path, meta, "reference_energy", "reference_energy"), "reference_energy")
    _strings(path, _field(path, meta, "metals", "metals"), "metals", non_empty=True)
    _strings(path, _field(path, meta, "linkers", "linkers"), "linkers", non_empty=False)
    _check_training(path, _field(path, meta, "training", "training"))
    options = meta.get("solver_options")
    if options is not None and not isinstance(options, dict):
        raise _bad(path, f"metadata field solver_options must be an object, got {_json_type(options)}")
    calibration = meta.get("calibration")
    if calibration is not None:
        if not isinstance(calibration, dict):
            raise _bad(path, f"metadata field calibration must be an object or null, got {_json_type(calibration)}")
        _number(path, _field(path, calibration, "threshold", "calibration.threshold"), "calibration.threshold",
                positive=True)
        # issue 31 (optional: older files have neither): the variance calibration and the applicability rule
        variance = calibration.get("variance")
        if variance is not None:
            if not isinstance(variance, dict):
                raise _bad(path, f"metadata field calibration.variance must be an object, got {_json_type(variance)}")
            _number(path, _field(path, variance, "scale", "calibration.variance.scale"), "calibration.variance.scale",
                    positive=True)
            _number(path, _field(path, variance, "floor", "calibration.variance.floor"), "calibration.variance.floor",
                    low=0.0)
            for key in ("distortion", "bead"):
                if key in variance:
                    _number(path, variance[key], f"calibration.variance.{key}", low=0.0)
        rule = calibration.get("applicability")
        if rule is not None:
            if not isinstance(rule, dict):
                raise _bad(path, f"metadata field calibration.applicability must be an object, got {_json_type(rule)}")
            if not isinstance(rule.get("measure"), str):
                raise _bad(path, "metadata field calibration.applicability.measure must be a string, got "
                                 f"{_shown(rule.get('measure'))}")
            _number(path, _field(path, rule, "threshold", "calibration.applicability.threshold"),
                    "calibration.applicability.threshold", positive=True)
    return spec


def _expected_arrays(meta: dict, spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], tuple[str, ...], bool]]:
    """name -> (shape, allowed dtypes, required) of the arrays a model with this metadata holds."""
    regression = meta["regression"]
    d = soap_dimension(spec)
    if regression["kind"] == "exact":
        n = meta["training"]["n_environments"]
        factor = ("<f8", "<f4") if regression.get("precision") == "mixed" else ("<f8",)
        return {"X": ((n, d), ("<f8",), True), "alpha": ((n,), ("<f8",), True), "L": ((n, n), factor, False)}
    m = regression["n_inducing"]
    if regression.get("inducing_storage") == "clusters":
        n = regression["cluster_atoms"]
        return {"cluster_sizes": ((m,), ("<i8",), True), "cluster_numbers": ((n,), ("<i8",), True),
                "cluster_positions": ((n, 3), ("<f8",), True), "alpha": ((m,), ("<f8",), True),
                "La_packed": ((m * (m + 1) // 2,), ("<f4", "<f8"), True)}
    return {"X": ((m, d), ("<f8",), True), "alpha": ((m,), ("<f8",), True),
            "Lm": ((m, m), ("<f8",), False), "La": ((m, m), ("<f8",), False)}


def _open_archive(path: Path) -> zipfile.ZipFile:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise _bad(path, f"cannot read the file ({error.strerror or error})") from None
    if path.is_dir():
        raise _bad(path, "it is a directory, not a model file")
    if size == 0:
        raise _bad(path, "the file is empty (0 bytes), not an ase-cggpr model (.npz) file")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise _bad(path, f"not a valid .npz (zip) archive ({size:,} bytes): the file is truncated, corrupt or "
                         "not a model file") from None
    except (OSError, ValueError, EOFError) as error:
        raise _bad(path, f"cannot read the archive ({type(error).__name__}: {error})") from None


_MEMBER_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                  RuntimeError)


def _npy_header(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple, np.dtype, bool]:
    """(shape, dtype, fortran_order) from a member's .npy header, checking the member holds exactly its data."""
    name = info.filename
    try:
        with archive.open(info) as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise _bad(path, f"member {name} has unsupported .npy format version {version}")
            offset = handle.tell()
    except ModelError:
        raise
    except _MEMBER_ERRORS as error:
        raise _bad(path, f"member {name} has no valid .npy header ({type(error).__name__}: {error})") from None
    if dtype.hasobject:
        raise _bad(path, f"member {name} holds Python objects; model files never do (they are read without "
                         "pickle)")
    claimed = math.prod(shape) * dtype.itemsize
    held = info.file_size - offset
    if claimed != held:
        raise _bad(path, f"member {name}: its header claims shape {shape} of {dtype} ({claimed:,} bytes) but it "
                         f"holds {held:,} bytes: truncated or tampered")
    return shape, dtype, fortran


def _read_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    try:
        with archive.open(info) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)
    except MemoryError:
        raise _bad(path, f"not enough memory to read member {info.filename}") from None
    except _MEMBER_ERRORS as error:
        raise _bad(path, f"member {info.filename} is corrupt ({type(error).__name__}: {error})") from None


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _all_finite(array: np.ndarray, step: int = 1 << 22) -> bool:
    flat = array.ravel(order="K")
    return all(np.isfinite(flat[i:i + step]).all() for i in range(0, flat.size, step))


def _check_rows_normalised(path: Path, X: np.ndarray, step: int = 4096) -> None:
    """SOAP vectors are stored normalised to unit length (or all zero)."""
    for start in range(0, X.shape[0], step):
        norms = np.einsum("ij,ij->i", X[start:start + step], X[start:start + step])
        wrong = ~((np.abs(norms - 1.0) < 1e-5) | (norms == 0.0))
        if wrong.any():
            row = start + int(np.argmax(wrong))
            raise _bad(path, f"training vector {row} of X has squared norm {norms[row - start]:.6g}; SOAP vectors "
                             "are stored normalised to 1: the array is tampered or corrupt")


def _check_factor(path: Path, name: str, L: np.ndarray, X: np.ndarray, *, kernel: PolynomialKernel,
                  diagonal_shift: float | None) -> None:
    """A lower-triangular factor with a positive diagonal; with ``diagonal_shift``, a few of its rows must
    reproduce ``K(X, X) + shift I`` (that it is the factor of this model's kernel)."""
    n = L.shape[0]
    diagonal = np.diagonal(L)
    if n and not (diagonal > 0).all():
        raise _bad(path, f"the Cholesky factor {name} has a non-positive diagonal entry: tampered or corrupt")
    tol = 1e-6 if L.dtype == np.float64 else 2e-3
    for j in sorted({0, n // 2, n - 1} if n else set()):
        if L[j, j + 1:].any():
            raise _bad(path, f"the Cholesky factor {name} is not lower-triangular (row {j}): tampered or corrupt")
        if diagonal_shift is None:
            continue
        product = (L[j:, :j + 1] @ L[j, :j + 1]).astype(np.float64)
        column = kernel(X[j:], X[j:j + 1])[:, 0]
        column[0] += diagonal_shift
        if np.abs(product - column).max() > tol * np.abs(column).max():
            raise _bad(path, f"the Cholesky factor {name} does not factor the kernel of the training vectors "
                             f"X (column {j} differs): tampered or corrupt")


def _read_model_file(path: Path) -> tuple[dict, ModelSpec, dict[str, np.ndarray]]:
    """(metadata, spec, arrays) of a model file, every part checked before the next is read."""
    with _open_archive(path) as archive:
        members: dict[str, zipfile.ZipInfo] = {}
        if len(archive.infolist()) > MAX_MEMBERS:
            raise _bad(path, f"the archive holds {len(archive.infolist()):,} members; a model holds a few arrays")
        for info in archive.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else ""
            if not key.isidentifier() or key in members:
                raise _bad(path, f"unexpected member {info.filename!r} in the archive: not an ase-cggpr model file")
            members[key] = info
        if "metadata" not in members:
            raise _bad(path, "the archive holds no metadata: not an ase-cggpr model file")
        headers = {key: _npy_header(path, archive, info) for key, info in members.items()}
        shape, dtype, _ = headers.pop("metadata")
        if shape != () or dtype.kind != "U":
            raise _bad(path, f"the metadata member is a {dtype} array of shape {shape}, not a JSON string")
        if dtype.itemsize > MAX_METADATA_BYTES:
            raise _bad(path, f"the metadata member is {dtype.itemsize:,} bytes; more than "
                             f"{MAX_METADATA_BYTES:,} is not a model's metadata")
        try:
            meta = json.loads(str(_read_member(path, archive, members.pop("metadata"))))
        except (json.JSONDecodeError, RecursionError) as error:
            raise _bad(path, f"the metadata is not valid JSON ({error})") from None
        spec = _check_metadata(path, meta)
        expected = _expected_arrays(meta, spec)
        for key, (shape, dtypes, required) in expected.items():
            if key not in headers:
                if required:
                    raise _bad(path, f"the archive has no array {key}")
                continue
            got_shape, got_dtype, _ = headers[key]
            if got_shape != shape:
                why = f" (descriptor dimension {shape[1]} of the spec)" if key == "X" else ""
                raise _bad(path, f"array {key} has shape {got_shape}; the metadata implies {shape}{why}")
            if got_dtype.str not in dtypes:
                raise _bad(path, f"array {key} has dtype {got_dtype}; expected {' or '.join(dtypes)}")
        for key, (_, got_dtype, _) in headers.items():
            if key not in expected and got_dtype.kind not in "fiub":
                raise _bad(path, f"array {key} has dtype {got_dtype}, not a number")
        if ("Lm" in headers) != ("La" in headers):
            raise _bad(path, "the sparse model holds only one of its factors Lm and La")
        total = sum(math.prod(s) * t.itemsize for s, t, _ in headers.values())
        memory = _physical_memory()
        if memory and total > memory:
            raise _bad(path, f"its arrays need {total / 1e9:.1f} GB, more than this machine's memory "
                             f"({memory / 1e9:.1f} GB)")
        arrays = {key: _read_member(path, archive, info) for key, info in members.items()}
    for key, array in arrays.items():
        if not _all_finite(array):
            raise _bad(path, f"array {key} contains NaN or inf")
    regression = meta["regression"]
    if regression.get("inducing_storage") == "clusters":
        arrays = _arrays_from_clusters(path, arrays, spec, regression)
    _check_rows_normalised(path, arrays["X"])
    kernel = PolynomialKernel(spec.zeta, spec.offset)
    if "L" in arrays:
        _check_factor(path, "L", arrays["L"], arrays["X"], kernel=kernel,
                      diagonal_shift=spec.noise**2)
    if "Lm" in arrays:
        Z = arrays["X"]
        prior = float(np.mean(kernel.diagonal(Z)))
        _check_factor(path, "Lm", arrays["Lm"], Z, kernel=kernel,
                      diagonal_shift=float(regression.get("jitter", 1e-10)) * prior)
        _check_factor(path, "La", arrays["La"], Z, kernel=kernel, diagonal_shift=None)
    return meta, spec, arrays


def _arrays_from_clusters(path: Path, arrays: dict, spec: ModelSpec, regression: dict) -> dict:
    """X (the clusters' centre vectors), Lm (recomputed from X) and La (unpacked) of a compact model file."""
    m = int(regression["n_inducing"])
    try:
        clusters = unpack_clusters(arrays, spec, m)
        X = cluster_vectors(clusters, spec)
        gpr = SparseGPR(zeta=spec.zeta, offset=spec.offset, noise=spec.noise,
                        jitter=float(regression.get("jitter", 1e-10)))
        Lm = cluster_factor(clusters, spec, X, gpr)  # = streaming.inducing_factor(gpr, X), cached on disk
        La = unpack_lower(arrays["La_packed"], m)
    except ModelError as error:
        raise _bad(path, f"its inducing clusters are invalid: {error}") from None
    return {"X": X, "alpha": arrays["alpha"], "Lm": Lm, "La": La, "clusters": clusters}


def _stack_labels(maps: Sequence[BeadMap], labels: Sequence[np.ndarray]) -> np.ndarray:
    if len(labels) != len(maps):
        raise ModelError(f"{len(labels)} label arrays for {len(maps)} structures")
    out = []
    for m, lab in zip(maps, labels, strict=True):
        lab = as_label_array(lab, what="the label array", name=m.name).ravel()
        if lab.shape != (len(m.centre_indices),):
            raise ModelError(f"structure {m.name!r}: {lab.size} labels for {len(m.centre_indices)} metal sites")
        if not np.isfinite(lab).all():
            raise ModelError(f"structure {m.name!r}: labels contain NaN or inf")
        out.append(lab)
    return np.concatenate(out)
