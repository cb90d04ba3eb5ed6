"""Label many Zn(Im)2 structures with MOF-FF per-atom energies (LAMMPS), in parallel across processes."""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from ase import Atoms

from ..errors import StructureError
from ..structure_checks import check_contacts, check_structure
from ..tasks import Runner, Task, as_runner, run_tasks
from .atom_types import mofff_typing
from .driver import MOFFFEngine, load_lammps

_ENGINE_CACHE_SIZE = 4
_engines: OrderedDict[bytes, Any] = OrderedDict()


def _label_one(job: tuple) -> tuple[int, np.ndarray | None, float | None, str | None]:
    """Worker: type one structure, evaluate it with a cached engine of its typing."""
    index, numbers, positions, cell, info_name, bonds, shifts, errors = job
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
    try:
        check_structure(atoms, info_name)  # a degenerate cell, before any neighbour search
        check_contacts(atoms, info_name)  # the build screen's limits: no label for overlapping atoms
        top = mofff_typing(atoms, bonds=bonds, shifts=shifts, name=info_name)
    except StructureError as exc:
        if errors == "skip":
            return index, None, None, str(exc)
        raise
    sig = top.signature()
    eng = _engines.get(sig)
    if eng is None:
        eng = MOFFFEngine(top, positions, cell)
        _engines[sig] = eng
        while len(_engines) > _ENGINE_CACHE_SIZE:
            _engines.popitem(last=False)[1].close()
    else:
        _engines.move_to_end(sig)
    try:
        res = eng.evaluate(positions, cell)
    except StructureError as exc:  # LAMMPS failed: this instance may be unusable, drop it
        _engines.pop(sig, None)
        eng.close()
        if errors == "skip":
            return index, None, None, str(exc)
        raise
    return index, res["energies"], float(res["energy"]), None


def _label_chunk(context: None, jobs: list[tuple]) -> list[tuple]:
    """A task of :mod:`ase_cggpr.tasks`: a chunk of consecutive frames (the worker keeps its LAMMPS engines)."""
    return [_label_one(job) for job in jobs]


def _name(atoms: Atoms, index: int) -> str:
    for key in ("name", "structure_id", "id", "refcode"):
        if key in atoms.info:
            return f"{atoms.info[key]} (frame {index})"
    return f"frame {index} ({atoms.get_chemical_formula()})"


def label_structures(frames: Sequence[Atoms], *, workers: int | Runner = 1, key: str = "energies",
                     bonds: Sequence[np.ndarray | None] | None = None,
                     shifts: Sequence[np.ndarray | None] | None = None,
                     errors: Literal["raise", "skip"] = "raise",
                     progress: Callable[[int], None] | None = None, chunk_size: int | None = None) -> list[Atoms]:
    """Attach MOF-FF per-atom energies to each frame, in place, and return the frames.

    Each labelled frame gets ``atoms.arrays[key]`` (per-atom energies, eV) and ``atoms.info["energy"]``
    (total, eV).  Connectivity is inferred from distances unless ``bonds`` (and ``shifts``) give it per
    frame.  One LAMMPS instance is reused for consecutive frames of the same typing; ``workers > 1`` (or a
    :class:`~ase_cggpr.tasks.Runner`: a Dask cluster) spreads chunks of consecutive frames over processes (the pair
    style is not threaded); a chunk whose worker died is labelled again elsewhere (:mod:`ase_cggpr.tasks`), and
    after :data:`~ase_cggpr.tasks.RETRIES` retries its frames are errors.  With
    ``errors="skip"`` a structure that cannot be typed is left unlabelled and gets
    ``info["mofff_error"]``; otherwise :class:`~ase_cggpr.errors.StructureError` is raised.
    ``progress(n)`` is called with the number of frames finished since the last call.  Worker processes
    are started with "spawn": as usual with multiprocessing, call this from a script under
    ``if __name__ == "__main__":`` (or a notebook), not from code piped to the interpreter.
    """
    load_lammps()  # fail early, with the install hint, if LAMMPS is missing
    n = len(frames)
    if bonds is not None and len(bonds) != n:
        raise ValueError(f"{len(bonds)} bond lists for {n} frames")
    if shifts is not None and len(shifts) != n:
        raise ValueError(f"{len(shifts)} shift lists for {n} frames")
    jobs = []
    for i, atoms in enumerate(frames):
        if not atoms.pbc.all():
            raise StructureError("MOF-FF labelling needs periodic cells", structure=_name(atoms, i))
        jobs.append((i, atoms.numbers.copy(), atoms.positions.copy(), atoms.cell.array.copy(), _name(atoms, i),
                     None if bonds is None else bonds[i], None if shifts is None else shifts[i], errors))

    def attach(result: tuple) -> None:
        i, energies, energy, error = result
        atoms = frames[i]
        if error is not None:
            atoms.info["mofff_error"] = error
            return
        atoms.arrays[key] = energies
        atoms.info["energy"] = energy
        atoms.info.pop("mofff_error", None)

    runner = as_runner(max(1, int(workers)) if not isinstance(workers, Runner) else workers)
    width = runner.workers if not runner.distributed else 16  # chunks: about four per worker
    if not runner.parallel or n <= 1:
        for job in jobs:
            attach(_label_one(job))
            if progress:
                progress(1)
        return list(frames)

    if chunk_size is None:  # about four chunks per worker, for load balance and progress
        chunk_size = min(32, -(-n // (4 * width)))
    chunk_size = max(1, min(chunk_size, -(-n // width)))
    chunks = (Task(k, jobs[k:k + chunk_size]) for k in range(0, n, chunk_size))

    def warn(task: Task, message: str, retried: bool) -> None:
        warnings.warn(f"{message} while labelling frames {task.key}-{task.key + len(task.payload) - 1}"
                      f"{'; labelling them again' if retried else ''}", stacklevel=2)

    with contextlib.closing(run_tasks(_label_chunk, chunks, runner, on_death=warn)) as outcomes:
        for outcome in outcomes:
            if outcome.exception is not None:  # errors="raise": the first structure that cannot be labelled
                raise outcome.exception
            if outcome.error:  # its workers died on every attempt
                if errors != "skip":
                    raise StructureError(f"{outcome.error} while labelling this chunk of frames",
                                         structure=_name(frames[outcome.task.key], outcome.task.key))
                results = [(job[0], None, None, outcome.error) for job in outcome.task.payload]
            else:
                results = outcome.value
            for r in results:
                attach(r)
            if progress:
                progress(len(results))
    return list(frames)
