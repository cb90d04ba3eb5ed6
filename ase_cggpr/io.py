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
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import iread
from ase.io.formats import filetype

from .beads import BeadMap, coarse_grain
from .errors import CGGPRError, LabelError, StructureError
from .labels import local_energies

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
    """Files named by paths, folders (their structure files, sorted) and glob patterns, in order."""
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir()
                                if p.is_file() and p.name.lower().endswith(STRUCTURE_SUFFIXES)))
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


def _frames(path: Path, index: str) -> Iterator[Atoms]:
    """Frames of one file, one at a time (ASE's ``iread``).

    A gzip-compressed file is first decompressed into a spooled temporary file (memory up to 256 MB, then
    disk): ASE's extxyz reader seeks through the file, and seeking in a gzip stream is about 50x slower
    (the built-in 364-frame dataset: 10 s against 0.2 s).
    """
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
    import warnings

    for path in expand_paths(patterns):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # ASE's CIF setting warnings for P1 cells
            frames = _frames(path, index)
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
            raise StructureError("the file holds no structure: no atoms (a CIF needs an atom-site loop, an extxyz "
                                 "file at least one frame)", structure=str(path))
        yield _named(previous, path, k - 1, single=k == 1)


def _named(atoms: Atoms, path: Path, k: int, *, single: bool) -> Atoms:
    if "name" not in atoms.info:
        atoms.info["name"] = path.name if single else f"{path.name}@{k}"
    return atoms


def read_structures(patterns: Iterable[str | os.PathLike], *, index: str = ":") -> list[Atoms]:
    """All structures of :func:`iter_structures` in a list."""
    return list(iter_structures(patterns, index=index))


@dataclasses.dataclass
class LabelledSet:
    """Structures with their bead maps and per-metal labels (eV) for one representation."""

    frames: list[Atoms]
    maps: list[BeadMap]
    labels: list[np.ndarray]
    groups: np.ndarray  # one group id per structure (framework type, else structure_id, else the structure's name)

    @property
    def n_environments(self) -> int:
        return int(sum(len(lab) for lab in self.labels))

    def subset(self, indices: Sequence[int]) -> LabelledSet:
        return LabelledSet([self.frames[i] for i in indices], [self.maps[i] for i in indices],
                           [self.labels[i] for i in indices], self.groups[list(indices)])


def load_labelled(structures: Iterable[Atoms], *, representation: str, label_key: str = "energies",
                  target: str = "local", group_key: str | None = None) -> LabelledSet:
    """Map structures and read their per-metal labels; errors name the structure and the problem.

    ``group_key``: ``atoms.info`` key of each structure's group (held-out sets keep groups whole); default
    ``framework_type`` (or the legacy ``topology``), else ``structure_id``, else the structure's name.
    """
    frames, maps, labels, groups = [], [], [], []
    for atoms in structures:
        bead_map = coarse_grain(atoms, representation)
        labels.append(local_energies(atoms, key=label_key, target=target, connectivity=bead_map.connectivity))
        frames.append(atoms)
        maps.append(bead_map)
        if group_key is not None:
            if group_key not in atoms.info:
                raise LabelError(f"structure {bead_map.name!r}: no info[{group_key!r}] to group it by")
            groups.append(str(atoms.info[group_key]))
        else:
            groups.append(str(framework_type_of(atoms) or atoms.info.get("structure_id", bead_map.name)))
    if not frames:
        raise StructureError("no structures to train on")
    return LabelledSet(frames, maps, labels, np.array(groups))


def split_by_group(groups: np.ndarray, test_fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with whole groups held out: about ``test_fraction`` of the structures in test."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie between 0 and 1, got {test_fraction}")
    unique = np.unique(groups)
    if len(unique) < 2:
        raise LabelError("a held-out test set needs at least two structure groups (info 'framework_type' or "
                         "'structure_id'; see group_key)")
    rng = np.random.default_rng(seed)
    n_test = min(max(1, round(test_fraction * len(unique))), len(unique) - 1)
    test_groups = rng.choice(unique, size=n_test, replace=False)
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
