"""CGGPRModel: a model spec plus a fitted GP regressor, with a portable, pickle-free file format.

Data flows one way: structures -> :func:`~ase_cggpr.beads.coarse_grain` -> SOAP vectors
(:mod:`ase_cggpr.descriptors`) -> GP regression (:mod:`ase_cggpr.regression`) -> per-metal local energies.

Energies are per metal environment (eV), relative to ``reference_energy`` (eV per metal; e.g. the mean
local energy of relaxed zni, as in the paper; 0 keeps raw force-field energies).

File format (version 1): one ``.npz`` file, read with ``allow_pickle=False``, holding the fitted arrays
(``X`` training vectors, ``alpha`` weights, optionally ``L`` the Cholesky factor) and ``metadata``, a JSON
string recording the format version, package version, the full :class:`ModelSpec`, the regression
parameters (kernel, noise, training mean), the reference energy, the metals and linkers seen in training
and a training-set summary.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from . import __version__
from .beads import BeadMap, Topology, coarse_grain
from .descriptors import soap_vectors
from .errors import ModelError
from .labels import local_energies
from .progress import progress_bar
from .regression import SOLVERS, solver_from_state
from .spec import ModelSpec

FORMAT_NAME = "ase-cggpr-model"
FORMAT_VERSION = 1
#: Above this many training environments the N x N Cholesky factor is not saved (recomputed on demand).
MAX_SAVED_FACTOR = 8000

#: Already coarse-grained input follows the hZIF convention: Zn(Im)2 beads.
CG_INPUT_METALS = ("Zn",)
CG_INPUT_LINKERS = ("C3H3N2",)


def _species(topology: Topology) -> tuple[set[str], set[str]]:
    if topology.coarse_grained_input:
        return set(CG_INPUT_METALS), set(CG_INPUT_LINKERS)
    return set(topology.metal_symbols), set(topology.linker_formulas)


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
    """

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
    def bead_map(self, atoms: Atoms, *, topology: Topology | None = None, name: str | None = None) -> BeadMap:
        """Map a structure onto the model's representation, checking it holds only species the model saw."""
        bead_map = coarse_grain(atoms, self.spec.representation, topology=topology, name=name)
        if self.is_fitted:
            metals, linkers = _species(bead_map.topology)
            if not metals <= set(self.metals_):
                raise ModelError(f"structure {bead_map.name!r} contains metal(s) {sorted(metals - set(self.metals_))}"
                                 f" but the model was trained on {list(self.metals_)} only")
            if not linkers <= set(self.linkers_):
                raise ModelError(f"structure {bead_map.name!r} contains unsupported linker(s) "
                                 f"{sorted(linkers - set(self.linkers_))}; the model was trained on "
                                 f"{list(self.linkers_)} only")
        return bead_map

    def vectors(self, maps: Sequence[BeadMap], *, progress: bool = False) -> np.ndarray:
        """SOAP vectors (n_centres, D) of the maps, with an optional progress bar."""
        with progress_bar(len(maps), "SOAP", enabled=progress) as update:
            return soap_vectors(maps, self.spec, progress=update)

    def selected_vectors(self, maps: Sequence[BeadMap], rows: np.ndarray, *, chunk: int = 64,
                         progress: bool = False) -> np.ndarray:
        """SOAP vectors of the environments ``rows`` (sorted global centre indices) only.

        Structures are described in chunks and only the selected rows kept, so memory is the output plus one
        chunk, whatever the number of environments; structures with no selected row are skipped.
        """
        counts = np.array([len(m.centre_indices) for m in maps])
        starts = np.concatenate([[0], np.cumsum(counts)])
        owner = np.searchsorted(starts[1:], rows, side="right")
        needed = np.unique(owner)
        out = None
        filled = 0
        with progress_bar(len(needed), "SOAP", enabled=progress) as update:
            for begin in range(0, len(needed), chunk):
                block = needed[begin:begin + chunk]
                X = soap_vectors([maps[k] for k in block], self.spec, progress=update)
                if out is None:
                    out = np.empty((len(rows), X.shape[1]))
                local_start = np.concatenate([[0], np.cumsum(counts[block])[:-1]])
                in_block = np.isin(owner, block)
                position = np.searchsorted(block, owner[in_block])
                local_rows = local_start[position] + rows[in_block] - starts[owner[in_block]]
                out[filled:filled + local_rows.size] = X[local_rows]
                filled += local_rows.size
        return out

    # -- fitting -----------------------------------------------------------------------------------------
    def fit(self, structures: Sequence[Atoms], labels: Sequence[np.ndarray] | None = None, *,
            label_key: str = "energies", target: str = "local", n_train: int | None = None, seed: int = 0,
            progress: bool = False) -> CGGPRModel:
        """Fit to structures (atomistic or Si/O bead input) and their per-metal labels (eV).

        Args:
            labels: per-structure arrays of per-metal labels; formed from ``label_key`` when omitted.
            label_key: per-atom energies (local energies are formed) or per-site local energies.
            target: ``"local"`` (e_local) or ``"metal"`` (Zn-only energy).
            n_train: train on this many environments drawn at random (seeded) from all of them.
        """
        if not len(structures):
            raise ModelError("no training structures given")
        maps = [coarse_grain(a, self.spec.representation) for a in structures]
        if labels is None:
            labels = [local_energies(a, key=label_key, target=target, topology=m.topology)
                      for a, m in zip(structures, maps, strict=True)]
        return self.fit_maps(maps, labels, n_train=n_train, seed=seed, progress=progress)

    def fit_maps(self, maps: Sequence[BeadMap], labels: Sequence[np.ndarray], *, n_train: int | None = None,
                 seed: int = 0, progress: bool = False) -> CGGPRModel:
        """Fit to bead maps (from :meth:`bead_map` or :func:`~ase_cggpr.beads.coarse_grain`) and labels (eV)."""
        if not len(maps):
            raise ModelError("no training structures given")
        y = _stack_labels(maps, labels)
        rows = np.arange(len(y))
        if n_train is not None:
            if n_train < 1:
                raise ModelError(f"n_train must be at least 1, got {n_train}")
            if n_train < len(y):
                rows = np.sort(np.random.default_rng(seed).choice(len(y), size=n_train, replace=False))
        X = self.selected_vectors(maps, rows, progress=progress)
        n_structures = len(np.unique(np.searchsorted(np.cumsum([len(m.centre_indices) for m in maps]), rows,
                                                     side="right")))
        metals, linkers = set(), set()
        for m in maps:
            m_metals, m_linkers = _species(m.topology)
            metals |= m_metals
            linkers |= m_linkers
        return self.fit_vectors(X, y[rows], metals=sorted(metals), linkers=sorted(linkers),
                                n_structures=n_structures, progress=progress)

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
                means.extend(np.split(mean, splits))
                if return_std:
                    stds.extend(np.split(std, splits))
        return (means, stds) if return_std else means

    def predict(self, structures: Atoms | Sequence[Atoms], *, return_std: bool = False,
                progress: bool = False):
        """Local energies (eV per metal, relative to the reference) of one structure or a list of them.

        Returns an array (one structure) or a list of arrays, each in metal order; with ``return_std``
        a pair (means, standard deviations).
        """
        single = isinstance(structures, Atoms)
        frames = [structures] if single else list(structures)
        maps = [self.bead_map(a) for a in frames]
        result = self.predict_maps(maps, return_std=return_std, progress=progress)
        if single:
            return (result[0][0], result[1][0]) if return_std else result[0]
        return result

    # -- persistence ---------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        self._check_fitted()
        params, _ = self.regressor_.get_state(include_factor=False)
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "package_version": __version__,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "spec": self.spec.to_dict(), "regression": params,
                "reference_energy": self.reference_energy, "metals": list(self.metals_),
                "linkers": list(self.linkers_), "training": self.training_,
                "calibration": getattr(self, "calibration_", None)}

    def save(self, path: str | os.PathLike, *, overwrite: bool = False,
             include_factor: bool | None = None) -> Path:
        """Write the model to ``path`` (``.npz`` appended if missing). Never overwrites unless asked.

        ``include_factor``: store the Cholesky factor for fast predictive variances (default: when the
        training set has at most 8,000 environments; otherwise it is recomputed on first use).
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
        tmp = path.with_name(path.name + ".part.npz")
        np.savez(tmp, metadata=np.array(json.dumps(self.metadata(), indent=1)), **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CGGPRModel:
        """Read a model written by :meth:`save` (no pickle involved)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no model file at {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (ValueError, OSError) as error:
            raise ModelError(f"{path} is not an ase-cggpr model file: {error}") from None
        try:
            meta = json.loads(str(arrays.pop("metadata")))
        except (KeyError, json.JSONDecodeError):
            raise ModelError(f"{path} is not an ase-cggpr model file (no metadata)") from None
        if meta.get("format") != FORMAT_NAME:
            raise ModelError(f"{path} is not an ase-cggpr model file")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ModelError(f"{path} has model format version {meta['format_version']}; this ase-cggpr "
                             f"({__version__}) reads up to version {FORMAT_VERSION}: please upgrade")
        model = cls(ModelSpec.from_dict(meta["spec"]), reference_energy=meta["reference_energy"])
        model.regressor_ = solver_from_state(meta["regression"], arrays)
        model.solver = model.regressor_.kind
        model.metals_ = tuple(meta["metals"])
        model.linkers_ = tuple(meta["linkers"])
        model.training_ = meta["training"]
        model.calibration_ = meta.get("calibration")
        model.metadata_ = meta
        return model


def _stack_labels(maps: Sequence[BeadMap], labels: Sequence[np.ndarray]) -> np.ndarray:
    if len(labels) != len(maps):
        raise ModelError(f"{len(labels)} label arrays for {len(maps)} structures")
    out = []
    for m, lab in zip(maps, labels, strict=True):
        lab = np.asarray(lab, dtype=float).ravel()
        if lab.shape != (len(m.centre_indices),):
            raise ModelError(f"structure {m.name!r}: {lab.size} labels for {len(m.centre_indices)} metal sites")
        if not np.isfinite(lab).all():
            raise ModelError(f"structure {m.name!r}: labels contain NaN or inf")
        out.append(lab)
    return np.concatenate(out)
