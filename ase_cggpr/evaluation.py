"""Evaluation layer: grouped k-fold CV, learning curves, grid searches and the cross-hyper table.

Everything here is built on the core API: :func:`~ase_cggpr.beads.coarse_grain` for the
representations, :func:`~ase_cggpr.labels.local_energies` for the labels,
:func:`~ase_cggpr.descriptors.soap_vectors` for SOAP and :class:`~ase_cggpr.model.CGGPRModel` (and so
the solvers of :mod:`ase_cggpr.regression`) for the regression.

Typical use::

    from ase.io import read
    from ase_cggpr.evaluation import Environments, SoapCache, cross_validate
    from ase_cggpr.spec import ModelSpec

    env = Environments.from_structures(read("train.extxyz", ":"))       # labels + groups
    spec = ModelSpec(representation="AB2")
    X = SoapCache("soap-cache").vectors(env, spec)                       # computed once, on disk
    result = cross_validate(X, env.labels, env.groups, spec, n_train=20000)
    print(result.test_rmse, result.train_rmse)

Folds are grouped: every environment of one group is in the same fold. The group is
``atoms.info['topology']`` when present (the build's connectivity key: every cell of one framework, e.g. an IZA
net and its CHIC-1 copy, whose environments are nearly the same; grouping by net instead let them leak
across folds and lowered the AB2 test RMSE from 0.083 to 0.059 eV on the full build's first 238 nets),
else ``structure_id`` (all rattled copies of one net), ``net`` or ``name``. Groups are shuffled with
``seed`` and dealt to the fold with the fewest environments so far, so folds are balanced and reproducible.
When ``n_train`` is given, that many training environments are drawn (seeded, per fold) from the training
folds, as in the paper.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .beads import BeadMap, Connectivity, coarse_grain, find_connectivity, structure_name
from .descriptors import SPECIES, soap_dimension, soap_vectors
from .errors import LabelError, ModelError
from .labels import TARGETS, local_energies
from .model import CGGPRModel
from .progress import progress_bar
from .regression import BlockKernel
from .spec import PAPER_OPTIMUM, REPRESENTATIONS, ModelSpec, canonical_representation

#: The paper's learning-curve training sizes (7 ... 32,000, doubling).
PAPER_SIZES = (7, 15, 31, 62, 125, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000)

#: Training environments predicted for the training RMSE of solvers without free fitted values.
TRAIN_RMSE_SAMPLE = 4000

#: Structure-info keys tried, in order, for the CV group of a structure.
GROUP_KEYS = ("framework_type", "topology", "structure_id", "net", "name")

Log = Callable[[str], None] | None


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square difference (same units as the inputs)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else math.nan


# -- data: environments, labels, groups --------------------------------------------------------------------
@dataclasses.dataclass
class Environments:
    """Labelled metal environments of a set of structures, with their CV groups.

    Attributes:
        structures: the input structures (atomistic, or Si/O beads for the CG representations only).
        connectivities: one :class:`~ase_cggpr.beads.Connectivity` per structure (found once, reused for every
            representation).
        labels: (n_env,) per-metal labels (eV), structure by structure in metal order.
        groups: (n_env,) CV group of each environment (str).
        owner: (n_env,) index of the structure each environment belongs to.
        target: ``"local"`` or ``"metal"``.
        group_by: the ``atoms.info`` key(s) the groups came from, e.g. ``"connectivity"`` ("+"-joined if the
            structures differ; ``"#index"`` for structures grouped alone).
    """

    structures: list[Atoms]
    connectivities: list[Connectivity]
    labels: np.ndarray
    groups: np.ndarray
    owner: np.ndarray
    target: str = "local"
    group_by: str = ""

    @classmethod
    def from_structures(cls, structures: Iterable[Atoms], *, label_key: str | None = None,
                        target: str = "local", group_key: str | None = None,
                        labels: Sequence[np.ndarray] | None = None) -> Environments:
        """Find connectivities, form labels and read CV groups.

        Args:
            label_key: per-atom energies (``energies``, ``energy``; local energies are formed) or
                per-metal values (``e_local``, ``e_local_mofff``). Default: the first of ``energies``,
                ``energy``, ``e_local``, ``e_local_mofff`` present (per-atom energies first, as the
                Zn-only target needs them).
            target: ``"local"`` (default) or ``"metal"`` (Zn-only energy).
            group_key: ``atoms.info`` key naming the group; default the first of ``connectivity``,
                ``structure_id``, ``net``, ``name`` present; structures without any form a group each.
            labels: per-structure label arrays, instead of ``label_key``.
        """
        if target not in TARGETS:
            raise LabelError(f"unknown label target {target!r}; choose one of {TARGETS}")
        structures = list(structures)
        if not structures:
            raise ModelError("no structures given")
        connectivities, label_arrays, groups, used = [], [], [], []
        for k, atoms in enumerate(structures):
            name = structure_name(atoms, fallback=f"structure {k}")
            connectivity = find_connectivity(atoms, name=name)
            if labels is not None:
                lab = np.asarray(labels[k], dtype=float).ravel()
            else:
                key = label_key or _default_label_key(atoms)
                lab = local_energies(atoms, key=key, target=target, connectivity=connectivity)
            if lab.shape != (connectivity.n_metals,):
                raise LabelError(f"structure {name!r}: {lab.size} labels for {connectivity.n_metals} metal sites")
            if not np.isfinite(lab).all():
                raise LabelError(f"structure {name!r}: labels contain NaN or inf")
            connectivities.append(connectivity)
            label_arrays.append(lab)
            group, key = _group_of(atoms, k, group_key)
            groups.append(group)
            if key not in used:
                used.append(key)
        counts = np.array([t.n_metals for t in connectivities])
        return cls(structures=structures, connectivities=connectivities, labels=np.concatenate(label_arrays),
                   groups=np.repeat(np.array(groups, dtype=str), counts),
                   owner=np.repeat(np.arange(len(structures)), counts), target=target, group_by="+".join(used))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_groups(self) -> int:
        return len(np.unique(self.groups))

    def maps(self, representation: str) -> list[BeadMap]:
        """Bead maps of every structure in ``representation`` (connectivities reused)."""
        rep = canonical_representation(representation)
        return [coarse_grain(a, rep, connectivity=t) for a, t in zip(self.structures, self.connectivities, strict=True)]

    def fingerprint(self) -> str:
        """SHA-256 of the structures (numbers, positions, cell, pbc, in order): the cache's data key."""
        digest = hashlib.sha256()
        for atoms in self.structures:
            digest.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
            digest.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
            digest.update(np.ascontiguousarray(np.asarray(atoms.cell), dtype=np.float64).tobytes())
            digest.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
        return digest.hexdigest()


def _default_label_key(atoms: Atoms) -> str:
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    for key in ("energies", "energy", "e_local", "e_local_mofff"):
        if key in atoms.arrays or np.shape(results.get(key)) == (len(atoms),):
            return key
    raise LabelError(f"structure {structure_name(atoms)!r}: no label array found (looked for energies, energy, "
                     "e_local, e_local_mofff); pass label_key")


def _group_of(atoms: Atoms, index: int, group_key: str | None) -> tuple[str, str]:
    """(group, info key it came from) of one structure."""
    keys = (group_key,) if group_key else GROUP_KEYS
    for key in keys:
        if key in atoms.info:
            return str(atoms.info[key]), key
    if group_key:
        raise ModelError(f"structure {index} has no info[{group_key!r}] to group it by")
    return f"#{index}", "#index"


def select_structures(structures: Sequence[Atoms], *, select: dict[str, Iterable[str]] | None = None,
                      exclude: dict[str, Iterable[str]] | None = None) -> list[Atoms]:
    """Structures whose ``atoms.info`` values match: for every ``select`` key one of its values, for no
    ``exclude`` key one of its values (values compared as strings, e.g. ``exclude={"order": ["d-r"]}``).

    A key that no structure has, or a selection that leaves nothing, is an error.
    """
    select = {k: {str(v) for v in vs} for k, vs in (select or {}).items()}
    exclude = {k: {str(v) for v in vs} for k, vs in (exclude or {}).items()}
    for key in [*select, *exclude]:
        if not any(key in atoms.info for atoms in structures):
            present = sorted({k for atoms in structures for k in atoms.info})
            raise ModelError(f"no structure has info key {key!r} to select on; keys present: {present}")
    kept = [atoms for atoms in structures
            if all(str(atoms.info.get(k)) in vs for k, vs in select.items())
            and not any(str(atoms.info.get(k)) in vs for k, vs in exclude.items())]
    if not kept:
        raise ModelError(f"no structure left after selecting {select or ''} and excluding {exclude or ''}")
    return kept


def read_environments(paths: str | os.PathLike | Sequence[str | os.PathLike], *,
                      select: dict[str, Iterable[str]] | None = None, exclude: dict[str, Iterable[str]] | None = None,
                      **kwargs: Any) -> Environments:
    """Read every frame of one or more structure files (any ASE format) into :class:`Environments`.

    ``select`` / ``exclude``: keep only some frames by their ``info`` values (:func:`select_structures`).
    """
    from ase.io import read

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    frames: list[Atoms] = []
    for path in paths:
        frames.extend(read(str(path), index=":"))
    if select or exclude:
        frames = select_structures(frames, select=select, exclude=exclude)
    return Environments.from_structures(frames, **kwargs)


# -- SOAP cache -------------------------------------------------------------------------------------------
class SoapCache:
    """SOAP vectors computed once per (structure set, descriptor hyperparameters), kept on disk.

    The file name holds the representation and a SHA-256 of the structures' fingerprint and
    ``spec.descriptor_key()``, so any change of structures or SOAP hyperparameters gives a new entry
    and kernel or noise changes reuse it. ``directory=None`` keeps vectors in memory only.
    ``hits`` and ``misses`` count lookups.
    """

    #: structures described per SOAP call when writing to disk
    CHUNK = 256

    def __init__(self, directory: str | os.PathLike | None = None, *, progress: bool = False):
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.hits = 0
        self.misses = 0
        self._memory: dict[str, np.ndarray] = {}

    @staticmethod
    def key(env: Environments, spec: ModelSpec) -> str:
        payload = json.dumps({"structures": env.fingerprint(), "descriptor": spec.descriptor_key()},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def path(self, env: Environments, spec: ModelSpec) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"soap-{spec.representation}-{self.key(env, spec)}.npy"

    def has(self, env: Environments, spec: ModelSpec) -> bool:
        """Whether the vectors of every environment of ``env`` are cached (in memory or on disk)."""
        path = self.path(env, spec)
        return self.key(env, spec) in self._memory or (path is not None and path.exists())

    def vectors(self, env: Environments, spec: ModelSpec, *, rows: np.ndarray | None = None) -> np.ndarray:
        """(n_env, D) normalised SOAP vectors of ``env`` for ``spec`` (loaded or computed).

        With a cache directory the vectors are written ``CHUNK`` structures at a time into a ``.npy``
        file and returned memory-mapped (read-only), so memory does not grow with the number of
        environments (80,000 atomistic environments are 12 GB on disk, not in RAM).

        ``rows`` (sorted environment indices) asks for those environments only, (len(rows), D): they are
        taken from the full set when it is cached, and otherwise computed for the selected centres alone
        (and cached under a key that adds the rows), so a CV on a sample of 4,000 of 80,000 environments
        describes 4,000.
        """
        key = self.key(env, spec)
        path = self.path(env, spec)
        if rows is not None:
            rows = np.asarray(rows)
            if rows.ndim != 1 or (rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0
                                                  or rows[-1] >= len(env))):
                raise ModelError(f"rows must be sorted, unique environment indices in 0..{len(env) - 1}")
            if self.has(env, spec):
                return np.asarray(self.vectors(env, spec)[rows])
            digest = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]
            key = f"{key}-rows-{digest}"
            path = None if path is None else path.with_name(f"{path.stem}-rows-{digest}.npy")
        n = len(env) if rows is None else len(rows)
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        if path is not None and path.exists():
            X = self._load(path, n, soap_dimension(spec))
            if X is not None:
                self.hits += 1
                self._memory = {key: X}
                return X
        self.misses += 1
        try:
            X = self._compute(env, spec, rows, path)
        except BaseException:  # no half-written entry is left behind (error, Ctrl-C)
            if path is not None:
                with contextlib.suppress(OSError):
                    path.with_name(path.stem + f".part{os.getpid()}.npy").unlink()
            raise
        if X.shape[0] != n:
            raise ModelError(f"SOAP gave {X.shape[0]} vectors for {n} environments")
        self._memory = {key: X}  # keep one set (atomistic vectors are large)
        return X

    @staticmethod
    def _load(path: Path, n: int, d: int) -> np.ndarray | None:
        """The cached (n, d) float64 vectors at ``path``, or None (with a warning) if the entry is unusable:
        truncated, not a ``.npy`` array, pickled data, another shape or dtype. It is then computed again."""
        try:
            X = np.load(path, mmap_mode="r", allow_pickle=False)
            ok = isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype == np.float64 and X.shape == (n, d)
        except (OSError, ValueError, EOFError) as error:  # mmap past the end, bad header, pickled objects
            reason = " ".join(str(error).split()) or type(error).__name__
            ok, X = False, None
        else:
            reason = f"holds a {getattr(X, 'dtype', '?')} array of shape {getattr(X, 'shape', '?')}, not ({n}, {d})"
        if ok:
            return X
        del X
        warnings.warn(f"SOAP cache entry {path} is unusable ({reason}); computing it again", stacklevel=3)
        with contextlib.suppress(OSError):
            path.unlink()
        return None

    def _compute(self, env: Environments, spec: ModelSpec, rows: np.ndarray | None, path: Path | None) -> np.ndarray:
        """SOAP of all environments (``rows`` None) or of ``rows``, ``CHUNK`` structures per call, written into
        a memory-mapped ``path`` (or kept in memory without one)."""
        rep = spec.representation
        if rows is None:
            owners, centres_of = np.arange(len(env.structures)), None
        else:
            centre_species = SPECIES[rep][1]
            first_row = np.concatenate([[0], np.cumsum(np.bincount(env.owner, minlength=len(env.structures)))])
            row_owner = env.owner[rows]  # non-decreasing: environments are stored structure by structure
            owners = np.unique(row_owner)

            def centres_of(s: int, structure: Atoms) -> np.ndarray:
                lo, hi = np.searchsorted(row_owner, [s, s + 1])
                return np.flatnonzero(np.isin(structure.numbers, centre_species))[rows[lo:hi] - first_row[s]]

        n = len(env) if rows is None else len(rows)
        label = f"SOAP {rep}" + ("" if rows is None else f" ({n} of {len(env)} environments)")
        tmp = None if path is None else path.with_name(path.stem + f".part{os.getpid()}.npy")
        X, parts, filled = None, [], 0
        with progress_bar(len(owners), label, enabled=self.progress) as update:
            for begin in range(0, len(owners), self.CHUNK):
                chunk = owners[begin:begin + self.CHUNK]
                maps = [coarse_grain(env.structures[s], rep, connectivity=env.connectivities[s]) for s in chunk]
                centres = None if centres_of is None else \
                    [centres_of(s, m.structure) for s, m in zip(chunk, maps, strict=True)]
                block = soap_vectors(maps, spec, centres=centres, progress=update)
                if tmp is None:
                    parts.append(block)
                    continue
                if X is None:
                    X = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=(n, block.shape[1]))
                X[filled:filled + len(block)] = block[: max(0, n - filled)]
                filled += len(block)
        if tmp is None:
            return np.concatenate(parts) if parts else np.zeros((0, soap_dimension(spec)))
        if X is None or filled != n:
            raise ModelError(f"SOAP gave {filled} vectors for {n} environments")
        X.flush()
        del X
        os.replace(tmp, path)
        return np.load(path, mmap_mode="r", allow_pickle=False)


# -- folds --------------------------------------------------------------------------------------------------
def group_folds(groups: Sequence[str] | np.ndarray, n_folds: int = 5, *, seed: int = 0) -> np.ndarray:
    """Fold index (0 .. n_folds-1) of every environment; all environments of a group share a fold.

    Groups are shuffled with ``seed`` and each is given to the fold holding the fewest environments.
    """
    groups = np.asarray(groups)
    unique, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if n_folds < 2:
        raise ModelError(f"need at least 2 folds, got {n_folds}")
    if len(unique) < n_folds:
        raise ModelError(f"only {len(unique)} structure groups for {n_folds} folds; every fold needs one")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = np.empty(len(unique), dtype=int)
    sizes = np.zeros(n_folds, dtype=int)
    for g in order:
        k = int(np.argmin(sizes))
        fold_of_group[g] = k
        sizes[k] += counts[g]
    return fold_of_group[inverse.ravel()]


def _training_rows(folds: np.ndarray, k: int, n_train: int | None, seed: int) -> np.ndarray:
    rows = np.flatnonzero(folds != k)
    if n_train is not None:
        if n_train < 1:
            raise ModelError(f"n_train must be at least 1, got {n_train}")
        if n_train < len(rows):
            rng = np.random.default_rng([seed, k, n_train])
            rows = np.sort(rng.choice(rows, size=n_train, replace=False))
    return rows


# -- cross-validation ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class CVResult:
    """Outcome of one grouped k-fold CV (RMSE in eV per environment).

    ``train_rmse`` / ``test_rmse``: per fold; ``predictions``: (n_env,) out-of-fold predictions
    (eV), ``folds``: fold of each environment; ``n_train``: training environments per fold.
    """

    spec: ModelSpec
    n_folds: int
    seed: int
    n_train: list[int]
    train_rmse: list[float]
    test_rmse: list[float]
    labels: np.ndarray
    predictions: np.ndarray
    folds: np.ndarray
    seconds: float
    solver: str = "exact"
    target: str = "local"
    #: per fold, the rows of the environments each model was trained on (shared-kernel CV; else None)
    train_rows: list[np.ndarray] | None = None

    @property
    def mean_train_rmse(self) -> float:
        return float(np.mean(self.train_rmse))

    @property
    def mean_test_rmse(self) -> float:
        return float(np.mean(self.test_rmse))

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (no per-environment arrays)."""
        return {"representation": self.spec.representation, "spec": self.spec.to_dict(), "target": self.target,
                "solver": self.solver, "n_folds": self.n_folds, "seed": self.seed, "n_train": self.n_train,
                "n_environments": int(len(self.labels)), "train_rmse": self.train_rmse,
                "test_rmse": self.test_rmse, "mean_train_rmse": self.mean_train_rmse,
                "mean_test_rmse": self.mean_test_rmse, "seconds": self.seconds}

    def save(self, path: str | os.PathLike, predictions: str | os.PathLike | None = None, *,
             overwrite: bool = True) -> Path:
        """Write the summary as JSON and (optionally) per-environment predictions as CSV.

        Both are checked before either is written, and written atomically (:mod:`ase_cggpr.outputs`);
        ``overwrite=False`` refuses existing files."""
        from .outputs import check_output

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        check_output(path, force=overwrite)
        summary = self.summary()
        if predictions is not None:
            summary["predictions_file"] = str(predictions)
            save_predictions(predictions, self.labels, self.predictions, self.folds, overwrite=overwrite)
        _atomic_write(path, json.dumps(summary, indent=1), overwrite=overwrite)
        return path


def save_predictions(path: str | os.PathLike, labels: np.ndarray, predictions: np.ndarray,
                     folds: np.ndarray, groups: np.ndarray | None = None, *, overwrite: bool = True) -> Path:
    """CSV of out-of-fold predictions: row, fold, label, prediction (eV), written atomically."""
    from .outputs import atomic_output

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, force=overwrite) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "fold", "label_eV", "prediction_eV"])
        for row, (k, y, p) in enumerate(zip(folds.tolist(), labels.tolist(), predictions.tolist(), strict=True)):
            writer.writerow([row, k, repr(y), repr(p)])
    return path


def read_predictions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, predictions, folds) from a file written by :func:`save_predictions`."""
    data = np.genfromtxt(path, delimiter=",", names=True)
    return data["label_eV"], data["prediction_eV"], data["fold"].astype(int)


def fit_fold(X: np.ndarray, y: np.ndarray, train: np.ndarray, spec: ModelSpec, *, solver: str = "exact",
             solver_options: dict | None = None) -> CGGPRModel:
    """A :class:`CGGPRModel` fitted on rows ``train`` of precomputed vectors (through ``fit_vectors``)."""
    model = CGGPRModel(spec, solver=solver, solver_options=solver_options or {})
    return model.fit_vectors(X[train], y[train])


def cross_validate(X: np.ndarray, y: np.ndarray, groups: Sequence[str] | np.ndarray, spec: ModelSpec, *,
                   n_folds: int = 5, n_train: int | None = None, seed: int = 0, solver: str = "exact",
                   solver_options: dict | None = None, folds: np.ndarray | None = None,
                   target: str = "local", shared_kernel: bool = False, log: Log = None) -> CVResult:
    """Grouped k-fold CV of a GPR on precomputed SOAP vectors X (n_env, D) and labels y (eV).

    Every environment is predicted once, by the model of the fold that holds it out. The training
    RMSE is that of each fold's model on its own training environments (exact solver: all of them, free
    from the weights; other solvers: a seeded sample of at most ``TRAIN_RMSE_SAMPLE``).
    ``shared_kernel=True`` (exact solver, ``n_train`` given) runs :func:`shared_kernel_cv` instead: one
    kernel for all folds, test RMSE on a sample of ``n_train / (n_folds - 1)`` environments per fold.
    """
    if shared_kernel:
        if n_train is None or solver != "exact":
            raise ModelError("the shared-kernel CV needs the exact solver and a training size (n_train)")
        options = dict(solver_options or {})
        return shared_kernel_cv(X, y, groups, spec, sizes=[n_train], n_folds=n_folds, seed=seed, folds=folds,
                                precision=options.get("precision", "mixed"), target=target, log=log)[0]
    y = np.asarray(y, dtype=float)
    if X.shape[0] != len(y) or len(groups) != len(y):
        raise ModelError(f"{X.shape[0]} vectors, {len(y)} labels and {len(groups)} groups: lengths differ")
    folds = group_folds(groups, n_folds, seed=seed) if folds is None else np.asarray(folds)
    n_folds = int(folds.max()) + 1
    predictions = np.full(len(y), np.nan)
    n_used, train_rmse, test_rmse = [], [], []
    start = time.perf_counter()
    for k in range(n_folds):
        t0 = time.perf_counter()
        train = _training_rows(folds, k, n_train, seed)
        test = np.flatnonzero(folds == k)
        model = fit_fold(X, y, train, spec, solver=solver, solver_options=solver_options)
        regressor = model.regressor_
        if getattr(regressor, "cheap_fitted_values", False) or len(train) <= TRAIN_RMSE_SAMPLE:
            fitted_rows, fitted = train, regressor.fitted_values() if hasattr(regressor, "fitted_values") \
                else regressor.predict(X[train])
        else:  # training RMSE on a seeded sample: predicting all N costs as much as the sparse fit
            fitted_rows = np.sort(np.random.default_rng([seed, k]).choice(train, TRAIN_RMSE_SAMPLE, replace=False))
            fitted = regressor.predict(X[fitted_rows])
        predictions[test] = regressor.predict(X[test]) + model.reference_energy
        n_used.append(int(len(train)))
        train_rmse.append(rmse(fitted + model.reference_energy, y[fitted_rows]))
        test_rmse.append(rmse(predictions[test], y[test]))
        if log:
            phases = getattr(model.regressor_, "timings_", {})
            detail = ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
            log(f"{spec.representation} fold {k + 1}/{n_folds}: N={len(train)} train {train_rmse[-1]:.4f} "
                f"test {test_rmse[-1]:.4f} eV ({time.perf_counter() - t0:.1f} s{'; ' + detail if detail else ''})")
        del model
    return CVResult(spec=spec, n_folds=n_folds, seed=seed, n_train=n_used, train_rmse=train_rmse,
                    test_rmse=test_rmse, labels=y, predictions=predictions, folds=folds,
                    seconds=time.perf_counter() - start, solver=solver, target=target)


def _split_evenly(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if a < n % parts else 0) for a in range(parts)]


def fold_samples(folds: np.ndarray, largest: int, *, seed: int = 0) -> list[np.ndarray]:
    """Per fold, a seeded random sample of ``ceil(largest / (n_folds - 1))`` of its environment rows.

    The samples of :func:`shared_kernel_cv`: fold k's is its test set, the others' first rows its training set.
    """
    n_folds = int(folds.max()) + 1
    per_fold = math.ceil(largest / (n_folds - 1))
    rng = np.random.default_rng([seed, n_folds, largest])
    return [rng.permutation(np.flatnonzero(folds == k))[:per_fold] for k in range(n_folds)]


class SampledRows:
    """SOAP vectors of selected rows of an (n, D) set, indexed by the full set's row numbers.

    What the shared-kernel CV needs of X is ``X[rows]`` for rows of its samples; this holds only those
    (``vectors``, one per entry of the sorted ``rows``) and refuses any other row.
    """

    def __init__(self, vectors: np.ndarray, rows: np.ndarray, n: int):
        self.vectors, self.rows = vectors, np.asarray(rows)
        if self.vectors.shape[0] != len(self.rows):
            raise ModelError(f"{self.vectors.shape[0]} vectors for {len(self.rows)} rows")
        self.shape = (int(n), self.vectors.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        index = np.asarray(index)
        where = np.minimum(np.searchsorted(self.rows, index), len(self.rows) - 1)
        if not np.array_equal(self.rows[where], index):
            raise ModelError("asked for SOAP vectors of environments outside the sampled rows")
        return self.vectors[where]


def shared_kernel_rows(groups: Sequence[str] | np.ndarray, largest: int, *, n_folds: int = 5,
                       seed: int = 0) -> np.ndarray:
    """Sorted rows of every environment :func:`shared_kernel_cv` uses for sizes up to ``largest``."""
    folds = group_folds(groups, n_folds, seed=seed)
    return np.sort(np.concatenate(fold_samples(folds, largest, seed=seed)))


def sampled_vectors(env: Environments, spec: ModelSpec, cache: SoapCache, largest: int, *, n_folds: int = 5,
                    seed: int = 0) -> SampledRows | np.ndarray:
    """The SOAP vectors a shared-kernel CV of ``env`` up to ``largest`` training environments needs (only those
    are described); pass the result as X to :func:`shared_kernel_cv`, :func:`cross_validate` or
    :func:`learning_curve` (with ``shared_kernel=True``)."""
    if cache.has(env, spec):  # all vectors at hand (memory-mapped): use them as they are
        return cache.vectors(env, spec)
    rows = shared_kernel_rows(env.groups, largest, n_folds=n_folds, seed=seed)
    return SampledRows(cache.vectors(env, spec, rows=rows), rows, len(env))


def usable_sizes(groups: Sequence[str] | np.ndarray, sizes: Sequence[int], *, n_folds: int = 5,
                 seed: int = 0) -> list[int]:
    """Training sizes a learning curve can use: each capped at the smallest training split."""
    folds = group_folds(groups, n_folds, seed=seed)
    largest = min(int((folds != k).sum()) for k in range(n_folds))
    return sorted({min(int(s), largest) for s in sizes})


def sample_training_rows(samples: Sequence[np.ndarray], k: int, size: int) -> tuple[list[int], list[int], np.ndarray]:
    """(other folds, rows taken from each, training rows) of fold ``k`` at ``size`` from :func:`fold_samples`."""
    others = [j for j in range(len(samples)) if j != k]
    counts = [min(c, len(samples[j])) for c, j in zip(_split_evenly(size, len(others)), others, strict=True)]
    return others, counts, np.concatenate([samples[j][:c] for j, c in zip(others, counts, strict=True)])


def shared_kernel_cv(X: np.ndarray, y: np.ndarray, groups: Sequence[str] | np.ndarray, spec: ModelSpec, *,
                     sizes: Sequence[int], n_folds: int = 5, seed: int = 0, folds: np.ndarray | None = None,
                     precision: str = "mixed", target: str = "local", log: Log = None,
                     progress: bool = False) -> list[CVResult]:
    """Grouped k-fold CV at one or more training sizes from one kernel matrix (exact GPR).

    Each fold's environments are shuffled once (seeded) and the first ``ceil(max(sizes) / (k - 1))``
    kept as that fold's sample. The kernel of all samples is computed once
    (:class:`~ase_cggpr.regression.BlockKernel`): fold ``k`` at size N trains on N environments spread
    evenly over the other folds' samples (their first rows, so the sets are nested across sizes) and is
    tested on its own whole sample. Every fold's training set is thus a seeded random sample of its
    training folds, as in :func:`cross_validate`, but no kernel entry is computed twice and the test
    RMSE is measured on a sample of each fold (environments outside the samples get NaN predictions).
    Memory: float64 kernel of the samples, ``(max(sizes) * k / (k - 1))^2 * 4`` bytes, plus a float32
    N x N copy per fit, whatever the descriptor dimension; X may be memory-mapped.
    """
    y = np.asarray(y, dtype=float)
    if X.shape[0] != len(y) or len(groups) != len(y):
        raise ModelError(f"{X.shape[0]} vectors, {len(y)} labels and {len(groups)} groups: lengths differ")
    sizes = sorted({int(n) for n in sizes})
    if not sizes or sizes[0] < 1:
        raise ModelError(f"training sizes must be positive, got {sizes}")
    folds = group_folds(groups, n_folds, seed=seed) if folds is None else np.asarray(folds)
    n_folds = int(folds.max()) + 1
    samples = fold_samples(folds, sizes[-1], seed=seed)
    start = time.perf_counter()
    n_tiles = n_folds * (n_folds + 1) // 2
    with progress_bar(n_tiles, "kernel tiles", enabled=progress) as update:
        kernel = BlockKernel(lambda k: X[samples[k]], n_folds, zeta=spec.zeta, offset=spec.offset,
                             progress=update)
    kernel_seconds = time.perf_counter() - start
    if log:
        log(f"{spec.representation}: kernel of {sum(kernel.sizes)} sampled environments "
            f"({', '.join(map(str, kernel.sizes))} per fold) in {kernel_seconds:.1f} s")
    results = []
    for size in sizes:
        t_size = time.perf_counter()
        predictions = np.full(len(y), np.nan)
        n_used, train_rmse, test_rmse, train_rows = [], [], [], []
        for k in range(n_folds):
            t0 = time.perf_counter()
            others, counts, train = sample_training_rows(samples, k, size)
            gpr = kernel.fit(others, counts, y[train], noise=spec.noise, precision=precision)
            predictions[samples[k]] = kernel.predict(gpr, others, counts, target=k)
            n_used.append(int(len(train)))
            train_rows.append(train)
            train_rmse.append(rmse(gpr.fitted_values(), y[train]))
            test_rmse.append(rmse(predictions[samples[k]], y[samples[k]]))
            if log:
                detail = ", ".join(f"{name} {v:.1f}" for name, v in gpr.timings_.items())
                log(f"{spec.representation} N={len(train)} fold {k + 1}/{n_folds}: train {train_rmse[-1]:.4f} "
                    f"test {test_rmse[-1]:.4f} eV on {len(samples[k])} ({time.perf_counter() - t0:.1f} s; "
                    f"{detail})")
            del gpr
        seconds = time.perf_counter() - t_size + (kernel_seconds if size == sizes[0] else 0.0)
        results.append(CVResult(spec=spec, n_folds=n_folds, seed=seed, n_train=n_used, train_rmse=train_rmse,
                                test_rmse=test_rmse, labels=y, predictions=predictions, folds=folds,
                                seconds=seconds, solver=f"exact-shared-{precision}", target=target,
                                train_rows=train_rows))
    return results


# -- learning curves -----------------------------------------------------------------------------------------
LC_FIELDS = ("representation", "soap_cutoff", "atom_sigma", "noise", "numb_training_atoms", "av_train_rmse",
             "av_test_rmse", "std_test_rmse", "n_folds", "seconds")


def learning_curve(X: np.ndarray, y: np.ndarray, groups: Sequence[str] | np.ndarray, spec: ModelSpec, *,
                   sizes: Sequence[int] = PAPER_SIZES, n_folds: int = 5, seed: int = 0, solver: str = "exact",
                   solver_options: dict | None = None, shared_kernel: bool = False,
                   log: Log = None) -> list[dict[str, Any]]:
    """RMSE vs number of training environments, one grouped k-fold CV per size (same folds).

    ``shared_kernel=True``: all sizes from one kernel (:func:`shared_kernel_cv`; nested training sets,
    the same test sample at every size).

    Sizes larger than the smallest training split are dropped except one final point at that
    size. Rows use the paper's column names (``numb_training_atoms``, ``av_train_rmse``,
    ``av_test_rmse``) plus the representation, the spread over folds and the time.
    """
    folds = group_folds(groups, n_folds, seed=seed)
    usable = usable_sizes(groups, sizes, n_folds=n_folds, seed=seed)
    rows = []
    if shared_kernel:
        if solver != "exact":
            raise ModelError("the shared-kernel learning curve needs the exact solver")
        precision = (solver_options or {}).get("precision", "mixed")
        results = shared_kernel_cv(X, y, groups, spec, sizes=usable, n_folds=n_folds, seed=seed, folds=folds,
                                   precision=precision, log=log)
    else:
        results = (cross_validate(X, y, groups, spec, n_train=size, seed=seed, solver=solver,
                                  solver_options=solver_options, folds=folds) for size in usable)
    for size, result in zip(usable, results, strict=True):
        rows.append({"representation": spec.representation, "soap_cutoff": spec.cutoff,
                     "atom_sigma": spec.atom_sigma, "noise": spec.noise, "numb_training_atoms": size,
                     "av_train_rmse": result.mean_train_rmse, "av_test_rmse": result.mean_test_rmse,
                     "std_test_rmse": float(np.std(result.test_rmse)), "n_folds": n_folds,
                     "seconds": result.seconds})
        if log:
            log(f"{spec.representation} N={size}: train {result.mean_train_rmse:.4f} test "
                f"{result.mean_test_rmse:.4f} eV ({result.seconds:.1f} s)")
    return rows


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None, *,
              overwrite: bool = True) -> Path:
    """Write rows (dicts) as CSV, atomically (:func:`ase_cggpr.outputs.atomic_output`)."""
    from .outputs import atomic_output

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(fields or (rows[0].keys() if rows else []))
    with atomic_output(path, force=overwrite) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a CSV file, numbers converted to float/int where they parse."""
    with open(path, newline="") as handle:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _number(value: str):
    if value is None:
        return value
    try:
        as_float = float(value)
    except ValueError:
        return value
    return int(as_float) if value.strip().lstrip("-").isdigit() else as_float


# -- grid search -------------------------------------------------------------------------------------------------
GRID_FIELDS = ("representation", "cutoff", "atom_sigma", "noise", "n_train", "n_folds", "seed",
               "train_rmse", "test_rmse", "seconds", "protocol")


def _grid_key(cutoff: float, atom_sigma: float, noise: float) -> tuple[str, str, str]:
    return (f"{float(cutoff):.6g}", f"{float(atom_sigma):.6g}", f"{float(noise):.6g}")


def grid_setting(row: dict[str, Any]) -> tuple[str, ...]:
    """(representation, n_train, n_folds, seed, protocol) of a grid-search CSV row: the points of one grid.

    ``protocol`` is ``per-fold`` (each fold's own fit, tested on the whole fold; also rows written before the
    column existed) or ``shared`` (:func:`shared_kernel_cv` on seeded per-fold samples)."""
    return (str(row["representation"]), str(row["n_train"] if row["n_train"] != "" else ""), str(row["n_folds"]),
            str(row["seed"]), str(row.get("protocol") or "per-fold"))


def grid_search(env: Environments, spec: ModelSpec, *, cutoffs: Sequence[float], atom_sigmas: Sequence[float],
                noises: Sequence[float] | None = None, csv_path: str | os.PathLike, n_folds: int = 5,
                n_train: int | None = None, seed: int = 0, cache: SoapCache | None = None,
                solver: str = "exact", solver_options: dict | None = None, shared_kernel: bool = False,
                log: Log = None) -> list[dict[str, Any]]:
    """Grouped-CV RMSE over cutoff x atom_sigma (x noise), appended to ``csv_path`` point by point.

    Resumable: points already in the CSV (same representation, cutoff, atom_sigma, noise, n_train,
    n_folds, seed, protocol) are not recomputed. SOAP vectors are computed once per (cutoff, atom_sigma)
    and shared by the noise values. Points whose ``cutoff_transition_width`` would not fit are skipped.

    ``shared_kernel=True`` (exact solver, ``n_train`` given) draws the seeded per-fold samples of
    :func:`shared_kernel_cv` once and evaluates every point on the same environments, describing only
    those: ``n_train * n_folds / (n_folds - 1)`` SOAP vectors per point instead of all of them, so wide
    grids (cutoff to 15 Å, atom_sigma to 2 Å) of large data sets stay affordable, and the points differ
    by their hyperparameters alone.
    Returns every row of the CSV for this representation and setting.
    """
    csv_path = Path(csv_path)
    cache = cache or SoapCache(None)
    noises = list(noises) if noises else [spec.noise]
    if shared_kernel and (n_train is None or solver != "exact"):
        raise ModelError("the shared-kernel grid search needs the exact solver and a training size (n_train)")
    protocol = "shared" if shared_kernel else "per-fold"
    setting = (spec.representation, str(n_train or ""), str(n_folds), str(seed), protocol)
    done = set()
    fields = list(GRID_FIELDS)
    if csv_path.exists():
        fields = grid_csv_fields(csv_path)
        if "protocol" not in fields and shared_kernel:
            raise ModelError(f"{csv_path} holds per-fold grid results (no protocol column); write the "
                             "shared-kernel grid to another file")
        for row in read_csv(csv_path):
            if grid_setting(row) == setting:
                done.add(_grid_key(row["cutoff"], row["atom_sigma"], row["noise"]))
    else:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="") as handle:
            csv.writer(handle).writerow(GRID_FIELDS)
    folds = group_folds(env.groups, n_folds, seed=seed)
    rows = None
    if shared_kernel:
        rows = shared_kernel_rows(env.groups, n_train, n_folds=n_folds, seed=seed)
        if log:
            log(f"{spec.representation}: every grid point on the same {len(rows)} sampled environments "
                f"(of {len(env)})")
    for cutoff in cutoffs:
        for sigma in atom_sigmas:
            todo = [n for n in noises if _grid_key(cutoff, sigma, n) not in done]
            if not todo:
                continue
            if float(cutoff) <= spec.cutoff_transition_width:
                continue
            point = spec.replace(cutoff=float(cutoff), atom_sigma=float(sigma))
            t0 = time.perf_counter()
            X = cache.vectors(env, point) if rows is None else \
                SampledRows(cache.vectors(env, point, rows=rows), rows, len(env))
            soap_seconds = time.perf_counter() - t0
            for noise in todo:
                result = cross_validate(X, env.labels, env.groups, point.replace(noise=float(noise)),
                                        n_folds=n_folds, n_train=n_train, seed=seed, solver=solver,
                                        solver_options=solver_options, folds=folds, target=env.target,
                                        shared_kernel=shared_kernel)
                row = {"representation": spec.representation, "cutoff": float(cutoff), "atom_sigma": float(sigma),
                       "noise": float(noise), "n_train": n_train or "", "n_folds": n_folds, "seed": seed,
                       "train_rmse": result.mean_train_rmse, "test_rmse": result.mean_test_rmse,
                       "seconds": round(result.seconds + soap_seconds, 3), "protocol": protocol}
                soap_seconds = 0.0
                with open(csv_path, "a", newline="") as handle:
                    csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore").writerow(row)
                done.add(_grid_key(cutoff, sigma, noise))
                if log:
                    log(f"{spec.representation} cutoff {cutoff} sigma {sigma} noise {noise}: "
                        f"test {result.mean_test_rmse:.4f} eV ({row['seconds']:.1f} s)")
    return [r for r in read_csv(csv_path) if grid_setting(r) == setting]


def grid_csv_fields(path: str | os.PathLike) -> list[str]:
    """The header of an existing grid-search CSV; ModelError if ``path`` is not one (another file, binary)."""
    try:
        with open(path, newline="") as handle:
            fields = next(csv.reader(handle), None) or []
    except (UnicodeDecodeError, csv.Error) as error:
        raise ModelError(f"{path} is not a grid-search CSV ({error}); choose another output file") from None
    missing = [f for f in GRID_FIELDS if f != "protocol" and f not in fields]
    if missing:
        raise ModelError(f"{path} is not a grid-search CSV (no column {', '.join(missing)}); choose another "
                         "output file") if fields else ModelError(f"{path} is empty, not a grid-search CSV; "
                                                                  "remove it or choose another output file")
    return fields


def optimum(rows: Sequence[dict[str, Any]], *, key: str = "test_rmse") -> dict[str, Any]:
    """The grid row with the lowest ``key`` (mean test RMSE)."""
    finite = [r for r in rows if isinstance(r.get(key), float) and math.isfinite(r[key])]
    if not finite:
        raise ModelError("no finite grid-search results")
    return min(finite, key=lambda r: r[key])


# -- cross-hyper table (the paper's Table 1) -----------------------------------------------------------------------
def cross_hyper_table(env: Environments, optima: dict[str, tuple[float, float]] | None = None, *,
                      representations: Sequence[str] = REPRESENTATIONS, base: ModelSpec | None = None,
                      n_folds: int = 5, n_train: int | None = None, seed: int = 0,
                      cache: SoapCache | None = None, solver: str = "exact", solver_options: dict | None = None,
                      diagonal_only: bool = False, shared_kernel: bool = False,
                      log: Log = None) -> list[dict[str, Any]]:
    """Each representation evaluated with each representation's optimal (cutoff, atom_sigma).

    ``optima`` maps representation -> (cutoff, atom_sigma) (default: the paper's). With
    ``diagonal_only`` each representation is evaluated with its own optimum only. Rows:
    representation, hypers_of, cutoff, atom_sigma, train/test RMSE (eV), n_train, seconds.
    """
    optima = {canonical_representation(k): v for k, v in (optima or PAPER_OPTIMUM).items()}
    base = base or ModelSpec()
    cache = cache or SoapCache(None)
    folds = group_folds(env.groups, n_folds, seed=seed)
    rows = []
    for rep in map(canonical_representation, representations):
        for hypers_of in map(canonical_representation, representations):
            if diagonal_only and hypers_of != rep:
                continue
            cutoff, sigma = optima[hypers_of]
            spec = base.replace(representation=rep, cutoff=cutoff, atom_sigma=sigma)
            if shared_kernel and n_train is not None:
                X = sampled_vectors(env, spec, cache, n_train, n_folds=n_folds, seed=seed)
            else:
                X = cache.vectors(env, spec)
            result = cross_validate(X, env.labels, env.groups, spec, n_folds=n_folds, n_train=n_train, seed=seed,
                                    solver=solver, solver_options=solver_options, folds=folds,
                                    target=env.target, shared_kernel=shared_kernel, log=log)
            rows.append({"representation": rep, "hypers_of": hypers_of, "cutoff": cutoff, "atom_sigma": sigma,
                         "noise": spec.noise, "n_train": max(result.n_train), "train_rmse": result.mean_train_rmse,
                         "test_rmse": result.mean_test_rmse, "seconds": round(result.seconds, 2),
                         "target": env.target})
    return rows


# -- the paper's own numbers -------------------------------------------------------------------------------------
PAPER_FILE_TAG = {"atomistic": "atomistic", "AB2": "cg", "A": "A_cg"}


def paper_learning_curve(root: str | os.PathLike, representation: str, *, l_max: int = 8) -> list[dict[str, Any]]:
    """The paper's learning curve (``new_learning_curve/lc_lMax{l}_{tag}_H_new.csv``) for a representation."""
    tag = PAPER_FILE_TAG[canonical_representation(representation)]
    return read_csv(Path(root) / "new_learning_curve" / f"lc_lMax{l_max}_{tag}_H_new.csv")


def paper_grid(root: str | os.PathLike, representation: str) -> list[dict[str, Any]]:
    """The paper's grid search for a representation, in this module's column names."""
    tag = PAPER_FILE_TAG[canonical_representation(representation)]
    rows = read_csv(Path(root) / "new_grid_search" / f"{tag}_H_new" / "results.csv")
    return [{"representation": canonical_representation(representation), "cutoff": r["config.cutoff"],
             "atom_sigma": r["config.sigma"], "noise": r["config.noise"], "train_rmse": r["result.av_train_rmse"],
             "test_rmse": r["result.av_test_rmse"]} for r in rows]


def _atomic_write(path: Path, text: str, *, overwrite: bool = True) -> None:
    from .outputs import atomic_output

    with atomic_output(path, force=overwrite) as tmp:
        tmp.write_text(text)
