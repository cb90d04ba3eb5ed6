"""Structure files in and out: names, folders and globs, labelled training sets, the built-in dataset.

Conventions of the labelled extxyz files this package reads and writes:

* atomistic frames carry per-atom MOF-FF energies ``energies`` (eV) and per-metal ``e_local`` (eV, NaN on
  the other atoms); coarse-grained frames (Si = A site, O = B bead) carry ``e_local`` on Si (NaN on O);
* ``info``: ``structure_id`` (all rattled copies of one parent net share it), ``framework_type`` (legacy
  name ``topology``: all cells of one framework share it: the group for CV and held-out sets;
  ``structure_id`` when absent), ``net``, ``batch``, ``rattle``, ``order`` and ``reference_energy`` (mean
  local energy per Zn of relaxed zni, eV).

ASE moves a per-atom column named ``energy`` or ``energies`` into ``atoms.calc.results``; the label
functions look there too.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, chemical_symbols
from ase.io import iread, read
from ase.io.formats import filetype

from .beads import BeadMap, Connectivity, coarse_grain, find_connectivity, structure_name
from .errors import CGGPRError, LabelError, ModelError, StructureError
from .labels import TARGETS, local_energies
from .spec import canonical_representation

STRUCTURE_SUFFIXES = (".xyz", ".extxyz", ".cif", ".traj", ".vasp", ".json", ".gz")
DATA_DIR = Path(__file__).resolve().parent / "data"


def default_dataset_path(kind: str = "atomistic") -> Path:
    """Path of the built-in dataset shipped with the package: ``kind`` is ``"atomistic"`` or ``"cg"``."""
    if kind not in ("atomistic", "cg"):
        raise ValueError(f"kind must be 'atomistic' or 'cg', got {kind!r}")
    path = DATA_DIR / f"default_{kind}.extxyz.gz"
    if not path.exists():
        raise FileNotFoundError(f"the built-in dataset {path.name} is missing from this installation ({DATA_DIR})")
    return path


def framework_type_of(atoms: Atoms) -> str | None:
    """The framework type of a structure (``info['framework_type']``, a net's coordination-sequence key written
    by ``cggpr dataset build``; files from before version 0.2 call it ``topology``), or None."""
    value = atoms.info.get("framework_type", atoms.info.get("topology"))
    return None if value is None else str(value)


def expand_paths(patterns: Iterable[str | os.PathLike]) -> list[Path]:
    """Files named by paths, folders (their structure files, LAMMPS data files included; sorted) and glob
    patterns, in order."""
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir()
                                if p.is_file() and (p.name.lower().endswith(STRUCTURE_SUFFIXES) or is_lammps_data(p))))
        elif path.exists():
            files.append(path)
        else:
            matches = sorted(glob.glob(str(pattern)))
            if not matches:
                raise FileNotFoundError(f"no such file, folder or glob match: {pattern}")
            files.extend(Path(m) for m in matches)
    return files


def read_error_reason(error: BaseException, path: str | os.PathLike | None = None) -> str:
    """A readable reason for an exception raised while reading a structure file.

    ASE's readers often fail with an exception whose text is empty (an ``AssertionError`` or a
    ``StopIteration`` from the CIF parser): the reason then names the exception and says what was expected.
    """
    text = str(error).strip()
    kind = type(error).__name__
    if text and text != "None":
        return f"{kind}: {text}"
    suffix = Path(path).suffix.lower().lstrip(".") if path is not None else ""
    fmt = {"cif": "CIF", "xyz": "extxyz", "extxyz": "extxyz", "traj": "ASE trajectory", "vasp": "VASP POSCAR",
           "json": "ASE JSON database", "gz": "(gzipped) structure"}.get(suffix, "structure")
    return f"not a readable {fmt} file (ASE's reader raised {kind} without a message)"


#: suffixes of LAMMPS data files (read when the file has a "N atoms" header line; ASE alone guesses RuNNer for .data)
LAMMPS_DATA_SUFFIXES = (".data", ".lmp", ".lammps")
#: largest difference (amu) between a LAMMPS atom type's mass and the mass of the element it is read as
LAMMPS_MASS_TOLERANCE = 0.1


def is_lammps_data(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a LAMMPS data file: one of :data:`LAMMPS_DATA_SUFFIXES` with an ``N atoms`` header."""
    path = Path(path)
    if path.suffix.lower() not in LAMMPS_DATA_SUFFIXES or not path.is_file():
        return False
    with open(path, "rb") as handle:
        head = handle.read(1 << 14)
    return re.search(rb"^\s*\d+\s+atoms\s*(#.*)?$", head, re.MULTILINE) is not None


def read_lammps_data(path: str | os.PathLike) -> Atoms:
    """A LAMMPS data file (e.g. a MOF-FF ZIF, ``atom_style`` full or atomic) as Atoms: positions in Å (LAMMPS
    ``metal`` and ``real`` units agree on lengths), elements from the ``Masses`` section.

    Refused (a :class:`StructureError` naming the file): no ``Masses`` section (the elements of the atom types
    would be unknown), or a type's mass further than :data:`LAMMPS_MASS_TOLERANCE` amu from any element's
    (united atoms, coarse-grained beads).
    """
    path = Path(path)
    if re.search(rb"^\s*Masses\s*(#.*)?$", path.read_bytes(), re.MULTILINE) is None:
        raise StructureError("a LAMMPS data file without a Masses section: the elements of its atom types are "
                             "unknown (add a Masses section, or convert it to extxyz with the elements)",
                             structure=str(path))
    atoms = read(path, format="lammps-data", units="metal")
    masses = atoms.get_masses()
    off = np.abs(masses - atomic_masses[atoms.numbers]) > LAMMPS_MASS_TOLERANCE
    if off.any():
        k = int(np.argmax(off))
        kind = f"type {atoms.arrays['type'][k]}" if "type" in atoms.arrays else f"atom {k}"
        raise StructureError(f"LAMMPS data file: atom {kind} has mass {masses[k]:g} amu, which is no element's "
                             f"(closest: {chemical_symbols[atoms.numbers[k]]}, {atomic_masses[atoms.numbers[k]]:g}); "
                             "united atoms or beads cannot be read as elements", structure=str(path))
    for key in ("id", "type", "mmcharges", "masses"):  # LAMMPS bookkeeping, not structure
        atoms.arrays.pop(key, None)
    return atoms


def read_frames(path: str | os.PathLike, index: str = ":") -> Iterator[Atoms]:
    """Frames of one structure file, one at a time (ASE's ``iread``; LAMMPS data files: :func:`read_lammps_data`).

    A gzip-compressed file is first decompressed into a spooled temporary file (memory up to 256 MB, then
    disk): ASE's extxyz reader seeks through the file, and seeking in a gzip stream is about 50x slower
    (the built-in 364-frame dataset: 10 s against 0.2 s).
    """
    path = Path(path)
    if is_lammps_data(path):
        yield read_lammps_data(path)
        return
    if path.suffix != ".gz":
        yield from iread(path, index=index)
        return
    with tempfile.SpooledTemporaryFile(max_size=256 * 2**20, mode="w+t") as spool:
        with gzip.open(path, "rt") as handle:
            shutil.copyfileobj(handle, spool)
        spool.seek(0)
        yield from iread(spool, index=index, format=filetype(str(path), guess=False))


def iter_structures(patterns: Iterable[str | os.PathLike], *, index: str = ":") -> Iterator[Atoms]:
    """Stream structures from files, folders and globs; each gets ``info['name']`` (file, or file@frame).

    Frames are read one at a time, so memory stays flat in the number of structures. A file that cannot
    be read, or that holds no structure (e.g. a CIF with a cell but no atom sites), is an error naming it.
    """
    for path in expand_paths(patterns):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # ASE's CIF setting warnings for P1 cells
            frames = read_frames(path, index)
            previous, k = None, 0
            while True:
                try:
                    atoms = next(frames)
                except StopIteration:
                    break
                except Exception as error:  # ASE raises many kinds for unreadable files
                    raise CGGPRError(f"cannot read structures from {path}: "
                                     f"{read_error_reason(error, path)}") from error
                if previous is not None:  # names need to know whether the file holds more than one frame
                    yield _named(previous, path, k - 1, single=False)
                previous, k = atoms, k + 1
        if previous is None:
            raise StructureError(no_structure_reason(path), structure=str(path))
        yield _named(previous, path, k - 1, single=k == 1)


#: ASE formats read as structures here (others, e.g. RuNNer's for any ``*.data``, are named when they hold nothing)
READ_FORMATS = {"cif": "CIF", "extxyz": "extxyz", "xyz": "xyz", "traj": "ASE trajectory", "vasp": "VASP POSCAR",
                "json": "ASE JSON database", "lammps-data": "LAMMPS data"}


def no_structure_reason(path: str | os.PathLike) -> str:
    """Why a file gave no structure: empty of atoms, or read in a format this package does not read."""
    try:
        fmt = filetype(str(path))
    except Exception:  # ASE cannot even guess a format
        fmt = None
    if fmt in READ_FORMATS or (fmt is None and Path(path).suffix.lower() == ".cif"):
        return ("the file holds no structure: no atoms (a CIF needs an atom-site loop, an extxyz file at least one "
                "frame)")
    guessed = f"ASE takes it for the {fmt!r} format" if fmt else "ASE cannot tell its format"
    return (f"no atoms read: {guessed}, which is not a structure format this package reads (read: "
            f"{', '.join(READ_FORMATS.values())}; LAMMPS data files need a '.data' name and an 'N atoms' line)")


def _named(atoms: Atoms, path: Path, k: int, *, single: bool) -> Atoms:
    if "name" not in atoms.info:
        atoms.info["name"] = path.name if single else f"{path.name}@{k}"
    return atoms


def read_structures(patterns: Iterable[str | os.PathLike], *, index: str = ":") -> list[Atoms]:
    """All structures of :func:`iter_structures` in a list."""
    return list(iter_structures(patterns, index=index))


#: ``atoms.info`` keys tried, in order, for the CV group of a structure (:meth:`LabelledSet.from_structures`).
GROUP_KEYS = ("framework_type", "topology", "structure_id", "net", "name")

#: per-atom energies or per-metal labels tried, in order, when no label key is given
LABEL_KEYS = ("energies", "energy", "e_local", "e_local_mofff")


@dataclasses.dataclass
class LabelledSet:
    """Labelled metal environments of a set of structures, with their groups: the package's one labelled-set
    type (training, held-out sets, calibration, and the evaluation layer's ``Environments``).

    Attributes:
        structures: the input structures (atomistic, or bead structures for the CG representations only).
        connectivities: one :class:`~ase_cggpr.beads.Connectivity` per structure (found once, reused for every
            representation).
        labels: (n_env,) per-metal labels (eV), structure by structure in metal order.
        groups: (n_env,) group of each environment (str): the CV folds and held-out sets keep groups whole.
        owner: (n_env,) index of the structure each environment belongs to.
        target: ``"local"`` or ``"metal"``.
        group_by: the ``atoms.info`` key(s) the groups came from, e.g. ``"framework_type"`` ("+"-joined if the
            structures differ; ``"#index"`` for structures grouped alone, ``"name"`` for their names).
        representation: the representation of the bead maps made while loading (:func:`load_labelled`), or None.
        bead_maps: those bead maps (one per structure), or None; :meth:`maps` makes any representation's.
    """

    structures: list[Atoms]
    connectivities: list[Connectivity]
    labels: np.ndarray
    groups: np.ndarray
    owner: np.ndarray
    target: str = "local"
    group_by: str = ""
    representation: str | None = None
    bead_maps: list[BeadMap] | None = None

    @classmethod
    def from_structures(cls, structures: Iterable[Atoms], *, label_key: str | None = None,
                        target: str = "local", group_key: str | None = None,
                        labels: Sequence[np.ndarray] | None = None, representation: str | None = None,
                        group_fallback: str = "index") -> LabelledSet:
        """Find connectivities, form labels and read groups; errors name the structure and the problem.

        Args:
            label_key: per-atom energies (``energies``, ``energy``; local energies are formed) or
                per-metal values (``e_local``, ``e_local_mofff``). Default: the first of :data:`LABEL_KEYS`
                present (per-atom energies first, as the Zn-only target needs them).
            target: ``"local"`` (default) or ``"metal"`` (Zn-only energy).
            group_key: ``atoms.info`` key naming the group (a structure without it is a LabelError).
                Default, with ``group_fallback="index"`` (CV): the first of :data:`GROUP_KEYS` present,
                structures without any form a group each; with ``"name"`` (held-out sets): the framework type,
                else ``structure_id``, else the structure's name.
            labels: per-structure label arrays, instead of ``label_key``.
            representation: also map every structure onto this representation (kept as ``bead_maps``).
        """
        if target not in TARGETS:
            raise LabelError(f"unknown label target {target!r}; choose one of {TARGETS}")
        if group_fallback not in ("index", "name"):
            raise ValueError(f"group_fallback must be 'index' or 'name', got {group_fallback!r}")
        structures = list(structures)
        if not structures:
            raise ModelError("no structures given")
        rep = None if representation is None else canonical_representation(representation)
        connectivities, label_arrays, groups, used, maps = [], [], [], [], []
        for k, atoms in enumerate(structures):
            name = structure_name(atoms, fallback=f"structure {k}")
            connectivity = find_connectivity(atoms, name=name)
            if rep is not None:
                maps.append(coarse_grain(atoms, rep, connectivity=connectivity))
            if labels is not None:
                lab = np.asarray(labels[k], dtype=float).ravel()
            else:
                key = label_key or _default_label_key(atoms)
                lab = local_energies(atoms, label_key=key, target=target, connectivity=connectivity)
            if lab.shape != (connectivity.n_metals,):
                raise LabelError(f"structure {name!r}: {lab.size} labels for {connectivity.n_metals} metal sites")
            if not np.isfinite(lab).all():
                raise LabelError(f"structure {name!r}: labels contain NaN or inf")
            connectivities.append(connectivity)
            label_arrays.append(lab)
            group, key = _group_of(atoms, k, name, group_key, group_fallback)
            groups.append(group)
            if key not in used:
                used.append(key)
        counts = np.array([c.n_metals for c in connectivities])
        return cls(structures=structures, connectivities=connectivities, labels=np.concatenate(label_arrays),
                   groups=np.repeat(np.array(groups, dtype=str), counts),
                   owner=np.repeat(np.arange(len(structures)), counts), target=target, group_by="+".join(used),
                   representation=rep, bead_maps=maps if rep is not None else None)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_environments(self) -> int:
        return len(self.labels)

    @property
    def n_groups(self) -> int:
        return len(np.unique(self.groups))

    @property
    def frames(self) -> list[Atoms]:
        """The structures (the name training code uses)."""
        return self.structures

    def _starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(np.bincount(self.owner, minlength=len(self.structures)))])

    @property
    def structure_labels(self) -> list[np.ndarray]:
        """Per structure, its (n_metals,) labels (eV)."""
        starts = self._starts()
        return [self.labels[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]

    @property
    def structure_groups(self) -> np.ndarray:
        """(n_structures,) group of each structure (what :func:`split_by_group` splits)."""
        return self.groups[self._starts()[:-1]]

    def maps(self, representation: str | None = None) -> list[BeadMap]:
        """Bead maps of every structure in ``representation`` (default: the one loaded; connectivities reused)."""
        rep = self.representation if representation is None else canonical_representation(representation)
        if rep is None:
            raise ModelError("no representation given and none loaded")
        if rep == self.representation and self.bead_maps is not None:
            return self.bead_maps
        return [coarse_grain(a, rep, connectivity=c) for a, c in zip(self.structures, self.connectivities, strict=True)]

    def subset(self, indices: Sequence[int]) -> LabelledSet:
        """The set of the structures ``indices`` (in that order)."""
        indices = [int(i) for i in indices]
        starts = self._starts()
        rows = [np.arange(starts[i], starts[i + 1]) for i in indices]
        rows = np.concatenate(rows) if rows else np.zeros(0, dtype=int)
        counts = np.diff(starts)[indices] if indices else np.zeros(0, dtype=int)
        return LabelledSet(structures=[self.structures[i] for i in indices],
                           connectivities=[self.connectivities[i] for i in indices], labels=self.labels[rows],
                           groups=self.groups[rows], owner=np.repeat(np.arange(len(indices)), counts),
                           target=self.target, group_by=self.group_by, representation=self.representation,
                           bead_maps=None if self.bead_maps is None else [self.bead_maps[i] for i in indices])

    def fingerprint(self) -> str:
        """SHA-256 of the structures (numbers, positions, cell, pbc, in order): the SOAP cache's data key."""
        digest = hashlib.sha256()
        for atoms in self.structures:
            digest.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
            digest.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
            digest.update(np.ascontiguousarray(np.asarray(atoms.cell), dtype=np.float64).tobytes())
            digest.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
        return digest.hexdigest()


def _default_label_key(atoms: Atoms) -> str:
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    for key in LABEL_KEYS:
        if key in atoms.arrays or np.shape(results.get(key)) == (len(atoms),):
            return key
    raise LabelError(f"structure {structure_name(atoms)!r}: no label array found (looked for energies, energy, "
                     "e_local, e_local_mofff); pass label_key")


def _group_of(atoms: Atoms, index: int, name: str, group_key: str | None, fallback: str) -> tuple[str, str]:
    """(group, info key it came from) of one structure."""
    if group_key:
        if group_key not in atoms.info:
            raise LabelError(f"structure {name!r}: no info[{group_key!r}] to group it by")
        return str(atoms.info[group_key]), group_key
    if fallback == "name":  # held-out sets: framework type, else structure_id, else the structure's name
        framework = framework_type_of(atoms)
        if framework:
            return framework, "framework_type"
        if "structure_id" in atoms.info:
            return str(atoms.info["structure_id"]), "structure_id"
        return structure_name(atoms), "name"
    for key in GROUP_KEYS:
        if key in atoms.info:
            return str(atoms.info[key]), key
    return f"#{index}", "#index"


def load_labelled(structures: Iterable[Atoms], *, representation: str, label_key: str = "energies",
                  target: str = "local", group_key: str | None = None) -> LabelledSet:
    """Map structures onto ``representation`` and read their per-metal labels (a :class:`LabelledSet` with its
    ``bead_maps``); errors name the structure and the problem.

    ``group_key``: ``atoms.info`` key of each structure's group (held-out sets keep groups whole); default
    ``framework_type`` (or the legacy ``topology``), else ``structure_id``, else the structure's name.
    """
    structures = list(structures)
    if not structures:
        raise StructureError("no structures to train on")
    return LabelledSet.from_structures(structures, label_key=label_key, target=target, group_key=group_key,
                                       representation=representation, group_fallback="name")


def held_out_groups(groups: Sequence | np.ndarray, n_held: int, *, seed: int = 0) -> np.ndarray:
    """``n_held`` of the distinct values of ``groups`` (e.g. framework types), drawn at random without replacement
    (``numpy.random.default_rng(seed).choice`` over the sorted distinct values): the package's one held-out split.

    :func:`split_by_group` (``cggpr train --test-fraction``), the shipped models' validation
    (``scripts/shipped_models.py``: ``n_held = min(50, n_types // 5)``, seed 0) and the relaxation check
    (``scripts/cg_relax_vs_mofff.py --held-out-split``) all draw through it, so one seed names one split."""
    unique = np.unique(np.asarray(groups))
    if not 0 <= int(n_held) <= len(unique):
        raise ValueError(f"cannot hold out {n_held} of {len(unique)} groups")
    return np.random.default_rng(seed).choice(unique, size=int(n_held), replace=False)


def split_by_group(groups: np.ndarray, test_fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with whole groups held out: about ``test_fraction`` of the structures in test
    (:func:`held_out_groups` of ``round(test_fraction * n_groups)`` groups, at least one, and one kept)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie between 0 and 1, got {test_fraction}")
    unique = np.unique(groups)
    if len(unique) < 2:
        raise LabelError("a held-out test set needs at least two structure groups (info 'framework_type' or "
                         "'structure_id'; see group_key)")
    n_test = min(max(1, round(test_fraction * len(unique))), len(unique) - 1)
    test_groups = held_out_groups(unique, n_test, seed=seed)
    is_test = np.isin(groups, test_groups)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def reference_energy_from_info(frames: Sequence[Atoms]) -> float | None:
    """The ``reference_energy`` recorded in the frames' info, if all frames that have one agree."""
    values = set()
    for atoms in frames:
        if "reference_energy" in atoms.info:
            value = atoms.info["reference_energy"]
            try:
                value = float(value)
            except (TypeError, ValueError):
                value = None
            if value is None or not np.isfinite(value):
                raise LabelError(f"structure {atoms.info.get('name', atoms.get_chemical_formula())!r}: "
                                 f"info reference_energy {atoms.info['reference_energy']!r} is not a finite number "
                                 "(eV per Zn)")
            values.add(value)
    if len(values) > 1:
        raise LabelError(f"frames disagree on reference_energy: {sorted(values)}")
    return values.pop() if values else None
