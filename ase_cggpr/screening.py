"""Screening many candidate frameworks: predicted energy per Zn, uncertainty, trust flag, symmetry reduction.

:func:`screen` streams structures (CIF, extxyz, folders, globs; one frame in memory per worker), maps each
onto the model's representation, predicts its per-Zn local energies relative to the model's reference
(e.g. relaxed zni) with their GP standard deviations, and returns rows sorted by energy per Zn: trusted
structures first, then untrusted ones, then structures that could not be read or mapped (their error
message is in the row; one bad structure never stops a screen). :func:`write_csv` and :func:`format_table`
write and print the ranking.

Uncertainty
-----------
A structure is *trusted* when every per-Zn std is at most the threshold: the model's stored calibration
(:mod:`ase_cggpr.uncertainty`), ``--threshold``/``--calibration``, or the model's noise sigma when none is given,
and its input is within what the model was trained on (:mod:`ase_cggpr.applicability`: a coarse-grained model
given atomistic input with distorted linkers); ``trust_reason`` says why a row is not trusted. The std shown
(``max_std_eV``) is the latent GP std through the model's variance calibration when it has one
(:func:`~ase_cggpr.uncertainty.calibrated_std`), else the latent std. A structure with coordination defects (a Zn
with 3 or 5 N, a dangling linker; ``defects="flag"``, the default) is predicted, its defective and affected Zn are
counted (``n_defective_Zn``, ``n_untrusted_Zn``; :mod:`ase_cggpr.defects`) and it is never trusted: its energy
per Zn averages the model's extrapolation at those sites. ``defects="refuse"`` makes it an error row.

Symmetry
--------
Symmetry-equivalent Zn sites have identical environments, hence identical SOAP vectors and predictions.
With ``symmetry=True`` spglib's ``equivalent_atoms`` (tolerance ``symprec``, Å) is found for the structure
the descriptor sees (atoms, or Si/O beads: bead structures can be more symmetric than the atoms), SOAP
vectors and predictions are computed for one representative per orbit only, and copied to the others.
Only the representatives are computed (:func:`~ase_cggpr.descriptors.soap_vectors` with ``centres``:
featomic's ``selected_samples``, quippy's ``atom_mask_name``). Within the tolerance, results equal the
unreduced computation (exactly, for exactly symmetric structures).

Robustness
----------
Options are checked before any work (a threshold must be a finite number >= 0 eV, ``symprec`` finite in
(0, 1) Å: spglib crashes on a negative tolerance; ``workers`` >= 1), and so is a calibration file. Every
input structure gets a row: a file that cannot be read, holds no atoms, or whose structure cannot be
mapped gives an error row naming the file and the reason, and a prediction that is not finite (NaN energy
or std) is an error row too, never ranked or trusted. Parallel screens run in worker processes that die
with the screen, or on a Dask cluster (:mod:`ase_cggpr.tasks`); a worker that dies (e.g. killed by the
out-of-memory killer) is replaced and the structure it held is screened again, at most
:data:`~ase_cggpr.tasks.RETRIES` times, then it is an error row ("worker died (signal 9 ...)").
With a progress file (:func:`screen_to_csv` keeps one beside the output: ``OUTPUT.progress.jsonl``) every
finished row is appended and flushed to disk at once, so an interrupted screen resumes (``resume=True``,
``cggpr screen --resume``) without computing those structures again; the CSV itself is written atomically
at the end and the progress file removed. A resumed row is checked field by field (:func:`progress_row`: types,
ranges, a trust flag the row earned); one that fails is computed again and named
(:attr:`ScreenResult.invalid_progress`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from ase import Atoms

from .applicability import trust as applicability_trust  # shown (calibrated) std, why not trusted
from .beads import check_defects_mode
from .errors import CGGPRError, ModelError, OptionError
from .io import expand_paths, no_structure_reason, read_frames
from .model import CGGPRModel
from .outputs import atomic_output, check_output
from .progress import progress_bar
from .relax import relax as relax_structure
from .screening_output import (  # noqa: F401  (re-exported: the screen's rows and files)
    CSV_COLUMNS,
    PROGRESS_FORMAT,
    ProgressLog,
    ScreenResult,
    ScreenRow,
    _write_rows,
    format_table,
    model_fingerprint,
    progress_path,
    progress_row,
    sort_rows,
    write_csv,
)
from .screening_symmetry import (  # noqa: F401  (re-exported: symmetry helpers)
    MAX_SYMPREC,
    SYMPREC,
    centre_vectors,
    check_symprec,
    equivalent_centres,
    predict_symmetric,
    space_group,
)
from .tasks import WORKER_DIED, Runner, Task, as_runner, run_tasks  # noqa: F401  (WORKER_DIED: re-exported)
from .uncertainty import (  # noqa: F401  (re-exported: the screen's trust threshold)
    THRESHOLD_QUANTILE,
    THRESHOLD_RULE,
    Calibration,
    calibrate,
    calibration_from_errors,
    check_threshold,
    default_threshold,
    is_number,
)


def check_workers(value) -> int | Runner:
    """``value`` if it is a number of worker processes (an integer >= 1) or a :class:`~ase_cggpr.tasks.Runner`."""
    if isinstance(value, Runner):
        return value
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise OptionError(f"workers must be an integer >= 1, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------------------
# One structure (symmetry: screening_symmetry; rows, CSV and progress file: screening_output)
# ---------------------------------------------------------------------------------------------------------


def _framework_type_label(atoms: Atoms) -> str:
    for key in ("framework_type", "net", "topology"):
        if key in atoms.info:
            return str(atoms.info[key])
    return ""


def _error_text(error: BaseException) -> str:
    """One line: a package error's own message, else the exception type and its message."""
    message = " ".join(str(error).split())
    if isinstance(error, CGGPRError) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


#: Criteria of ``screen(..., relax=True)``: force (eV/Å) and optimiser steps of :func:`ase_cggpr.relax.relax`.
RELAX_FMAX, RELAX_MAX_STEPS = 0.05, 200


def screen_structure(model, atoms: Atoms, *, threshold: float, symmetry: bool = True, symprec: float = SYMPREC,
                     id: str | None = None, source: str = "", relax: bool = False,
                     defects: str = "flag") -> ScreenRow:
    """Screen one structure; any error becomes the row's ``error`` (never raised).

    Coordination defects (``defects="flag"``, the default; ``"refuse"`` makes them an error row) are counted
    in ``n_defective_Zn`` / ``n_untrusted_Zn`` (:mod:`ase_cggpr.defects`); ``energy_per_Zn`` is then the mean
    over all Zn, extrapolated ones included, and the row is never trusted.

    A prediction that is not finite (NaN or infinite energy or std of any Zn) is an error row: it is never
    ranked or trusted. With ``relax``, the structure is first relaxed on the model's energy surface (positions
    and cell, :func:`ase_cggpr.relax.relax` with ``fmax`` :data:`RELAX_FMAX` and at most
    :data:`RELAX_MAX_STEPS` steps; coarse-grained models relax the bead structure) and the relaxed structure
    is the one predicted; a relaxation that fails is an error row, and one that has not converged within the
    steps keeps its last energy, is never trusted (hence not ranked) and says so in ``relaxation``.
    """
    name = id or str(atoms.info.get("name") or atoms.info.get("structure_id") or atoms.get_chemical_formula())
    row = ScreenRow(id=name, source=source, framework_type=_framework_type_label(atoms))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            relax_converged = True  # nothing to converge without ``relax``
            if relax:
                relaxed = relax_structure(atoms, model, fmax=RELAX_FMAX, max_steps=RELAX_MAX_STEPS, cell=True,
                                          name=name, defects=defects)
                atoms, relax_converged = relaxed.atoms, relaxed.converged
                stress = "" if relaxed.max_stress is None else f", max stress {relaxed.max_stress:.3g} eV/Å^3"
                row.relaxation = (f"converged ({relaxed.n_steps} steps)" if relaxed.converged else
                                  f"NOT converged (max force {relaxed.max_force:.3g} eV/Å{stress} after "
                                  f"{relaxed.n_steps} steps)")
            bead_map = model.bead_map(atoms, name=name, defects=defects)
            site_trust = model.site_trust(bead_map)
            with contextlib.suppress(Exception):
                row.space_group = space_group(atoms, symprec)
            mean, std, n_unique = predict_symmetric(model, bead_map, symmetry=symmetry, symprec=symprec)
        mean, std = np.asarray(mean, float), np.asarray(std, float)
        bad = ~(np.isfinite(mean) & np.isfinite(std))
        if mean.size == 0 or bad.any():
            raise ModelError(f"structure {name!r}: the prediction is not finite (NaN or infinite energy or std "
                             f"for {int(bad.sum())} of {mean.size} Zn); the model file may be corrupt; not "
                             "ranked, not trusted")
        row.n_Zn, row.n_unique_Zn = len(mean), int(n_unique)
        std, row.trust_reason = applicability_trust(model, atoms, bead_map.connectivity, std, threshold,
                                      relax_converged=relax_converged)
        row.energy_per_Zn, row.max_std = float(mean.mean()), float(std.max())
        row.n_defective_Zn, row.n_untrusted_Zn = site_trust.n_defective, site_trust.n_untrusted
        if not site_trust.all_trusted:
            defect = (f"{site_trust.n_untrusted} of {row.n_Zn} Zn untrusted ({site_trust.n_defective} with a "
                      "coordination defect, the others within the cutoff of one)")
            row.trust_reason = "; ".join(r for r in (row.trust_reason, defect) if r)
        row.trusted = not row.trust_reason
    except Exception as error:  # one bad structure never stops a screen
        row.error = _error_text(error)
    return row


def _read_failure(path: Path, error: BaseException) -> CGGPRError:
    """A one-line error naming ``path`` and a real reason (ASE's readers often raise bare assertions)."""
    message = " ".join(str(error).split())
    if isinstance(error, AssertionError) or not message:
        reason = ""
        if path.suffix.lower() == ".cif":
            with contextlib.suppress(OSError):
                with open(path, "rb") as handle:
                    head = handle.read(1 << 16).lower()
                if b"data_" not in head:
                    reason = "not a CIF file (no 'data_' block)"
        if not reason:
            frames = traceback.extract_tb(error.__traceback__)
            where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
            reason = f"malformed file (ASE's reader failed with {type(error).__name__}{where})"
        message = reason
    elif not isinstance(error, CGGPRError):
        message = f"{type(error).__name__}: {message}"
    return CGGPRError(f"cannot read {path}: {message}")


def iter_sources(patterns: Iterable[str | os.PathLike], *, file_done=None
                 ) -> Iterator[tuple[str, str, Atoms | Exception]]:
    """Stream (id, source file, Atoms or the error reading it) from files, folders and globs, frame by frame.

    Every file gives at least one item: a file without any structure (e.g. a CIF with a cell and no atom
    sites) gives an error. ``file_done()`` is called after each file (or unmatched pattern) has been read.
    """
    for pattern in patterns:
        try:
            files = expand_paths([pattern])
        except Exception as error:
            yield str(pattern), str(pattern), error
            if file_done is not None:
                file_done()
            continue
        for path in files:
            k = 0
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for atoms in read_frames(path, ":"):
                        yield f"{path.name}@{k}", str(path), atoms
                        k += 1
                if k == 0:
                    yield path.name, str(path), CGGPRError(f"{path}: {no_structure_reason(path)}")
            except Exception as error:  # unreadable file or frame: one error row, go on with the next file
                yield (f"{path.name}@{k}" if k else path.name), str(path), _read_failure(path, error)
            if file_done is not None:
                file_done()


def _structure_id(default: str, atoms: Atoms) -> str:
    name = atoms.info.get("name")
    return str(name) if name else default


def structure_key(atoms: Atoms) -> str:
    """A digest of a structure's numbers, positions, cell and pbc: the key of its row in a progress file."""
    digest = hashlib.sha256()
    for array in (atoms.numbers.astype(np.int64), np.asarray(atoms.positions, np.float64),
                  np.asarray(atoms.cell.array, np.float64), np.asarray(atoms.pbc, np.int8)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:20]


# -- tasks ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Task:
    key: str
    name: str
    source: str
    atoms: Atoms | None = None  # None: ``row`` is ready (an unreadable input or a resumed row)
    row: ScreenRow | None = None
    resumed: bool = False
    deaths: int = 0  # worker deaths while screening it (each followed by a retry, but the last)


def _screen_task(context: tuple, payload: tuple) -> ScreenRow:
    """One structure on a worker: ``context`` is (model, screen options), sent once per worker."""
    model, kwargs = context
    name, source, atoms = payload
    return screen_structure(model, atoms, id=name, source=source, **kwargs)


def _rows(model, tasks: Iterable[_Task], kwargs: dict, runner: Runner) -> Iterator[_Task]:
    """Tasks with their rows, as they finish (see :mod:`ase_cggpr.tasks`): ready ones (unreadable inputs,
    resumed rows) at once, the others computed by ``runner``'s workers. A structure whose workers all died
    (:data:`~ase_cggpr.tasks.RETRIES` retries) is an error row ("worker died ...")."""
    ready: list[_Task] = []

    def to_run() -> Iterator[Task]:
        for task in tasks:
            if task.row is not None:
                ready.append(task)
            else:
                yield Task(task, (task.name, task.source, task.atoms))

    def warn(task: Task, message: str, retried: bool) -> None:
        if runner.parallel:
            print(f"warning: {message} while screening {task.key.name}"
                  f"{'; screening it again' if retried else '; not retried again (an error row)'}", file=sys.stderr)

    chunk = runner.chunk_size or "auto"  # chunks of ~1 s on a worker (ase_cggpr.tasks.ChunkSizer)
    with contextlib.closing(run_tasks(_screen_task, to_run(), runner, context=(model, kwargs), on_death=warn,
                                      chunk_size=chunk)) as outcomes:
        for outcome in outcomes:
            yield from ready
            ready.clear()
            task: _Task = outcome.task.key
            if outcome.ok:
                task.row = outcome.value
            else:
                error = outcome.error or _error_text(outcome.exception)
                task.row = ScreenRow(id=task.name, source=task.source, framework_type=_framework_type_label(task.atoms),
                                     error=f"{error} while screening this structure" if outcome.error else error)
            task.deaths = outcome.deaths
            task.atoms = None
            yield task
    yield from ready


# -- the screen -------------------------------------------------------------------------------------------


def screen(model, structures: Iterable[str | os.PathLike | Atoms], *, threshold: float | None = None,
           symmetry: bool = True, symprec: float = SYMPREC, workers: int | Runner = 1, progress: bool = False,
           progress_file: str | os.PathLike | None = None, resume: bool = False, relax: bool = False,
           defects: str = "flag") -> ScreenResult:
    """Screen structures with a fitted model (or a model path) and rank them by predicted energy per Zn.

    Args:
        structures: file paths, folders, glob patterns (streamed), or Atoms objects (any mix).
        threshold: per-Zn latent std (eV) above which a structure is not trusted; default
            :func:`default_threshold` (the model's calibration, else its noise sigma).
        symmetry: compute once per set of symmetry-equivalent Zn sites (spglib, tolerance ``symprec`` Å).
        workers: processes (1: in this process), or a :class:`~ase_cggpr.tasks.Runner` (local processes, a Dask
            scheduler or a SLURM/PBS cluster). A worker that dies loses only its structure, which is screened
            again on another worker (at most :data:`~ase_cggpr.tasks.RETRIES` times, then an error row).
        progress: progress bar on stderr (over input files).
        progress_file: append every finished row to this file as it finishes (see :class:`ProgressLog`);
            it is left in place (remove it once the result is saved: :func:`screen_to_csv` does).
        resume: take the rows already in ``progress_file`` instead of computing them again (the file must
            come from a screen with the same model and options).
        relax: relax every structure on the model's energy surface (positions and cell) before predicting it
            (see :func:`screen_structure`).
        defects: ``"flag"`` (default: coordination defects counted, such rows untrusted) or ``"refuse"`` (an
            error row); see :func:`screen_structure`.
    """
    workers = check_workers(workers)
    symprec = check_symprec(symprec)
    if threshold is not None:
        threshold = check_threshold(threshold)
    if not isinstance(model, CGGPRModel):
        model = CGGPRModel.load(model)
    source = "given"
    if threshold is None:
        threshold, source = default_threshold(model)
    kwargs = dict(threshold=float(threshold), symmetry=bool(symmetry), symprec=symprec)
    if relax:  # only then: the progress files of screens without relaxation keep their settings
        kwargs["relax"] = True
    if check_defects_mode(defects) != "flag":  # likewise: only a non-default mode enters the settings
        kwargs["defects"] = defects
    inputs = list(structures)
    n_files = 0
    for item in inputs:
        if isinstance(item, Atoms):
            n_files += 1
        else:
            try:
                n_files += len(expand_paths([item]))
            except Exception:
                n_files += 1

    log = None
    if progress_file is not None:
        log = ProgressLog(progress_file, dict(model=model_fingerprint(model), **kwargs), resume=resume)
    start = time.perf_counter()
    rows: list[ScreenRow] = []
    n_resumed = n_deaths = 0
    try:
        with progress_bar(n_files, "screen", enabled=progress) as update:
            def tasks() -> Iterator[_Task]:
                for k, item in enumerate(inputs):
                    if isinstance(item, Atoms):
                        found: Iterable = [(_structure_id(f"structure {k}", item), "", item)]
                    else:
                        found = iter_sources([item], file_done=lambda: update(1))
                    for name, src, atoms in found:
                        if isinstance(atoms, Exception):
                            yield _Task(key="", name=name, source=src,
                                        row=ScreenRow(id=name, source=src, error=_error_text(atoms)))
                            continue
                        name = _structure_id(name, atoms)
                        key = f"{structure_key(atoms)}:{name}"
                        if log is not None and key in log.rows:
                            yield _Task(key=key, name=name, source=src, row=log.rows[key], resumed=True)
                        else:
                            yield _Task(key=key, name=name, source=src, atoms=atoms)
                    if isinstance(item, Atoms):
                        update(1)

            for task in _rows(model, tasks(), kwargs, as_runner(workers)):
                rows.append(task.row)
                n_resumed += task.resumed
                n_deaths += task.deaths
                if log is not None and task.key and not task.resumed:
                    log.add(task.key, task.row)
    except BaseException:
        if log is not None and not resume and not log.n_added:  # nothing to resume: leave no file behind
            log.close()
            log.path.unlink(missing_ok=True)
        raise
    finally:
        if log is not None:
            log.close()
    return ScreenResult(sort_rows(rows), time.perf_counter() - start, float(threshold), source,
                        n_resumed=n_resumed, n_worker_deaths=n_deaths,
                        invalid_progress=list(log.invalid) if log is not None else [])


def screen_to_csv(model, structures: Iterable[str | os.PathLike | Atoms], output: str | os.PathLike, *,
                  force: bool = False, resume: bool = False, **options) -> ScreenResult:
    """:func:`screen` into the CSV ``output``, resumable: rows are streamed to :func:`progress_path` as they
    finish; the CSV is published atomically at the end and the progress file removed.

    ``output`` is checked and locked before any work (an existing file needs ``force``). An existing progress
    file (an interrupted screen) needs ``resume=True`` (continue it) or ``force=True`` (start over).
    ``options`` are those of :func:`screen`.
    """
    for name, check in (("threshold", check_threshold), ("symprec", check_symprec), ("workers", check_workers)):
        if options.get(name) is not None:
            check(options[name])
    output = check_output(output, force=force)
    log_path = progress_path(output)
    if log_path.exists() and not resume and not force:
        raise OptionError(f"{log_path} holds the rows of an interrupted screen into {output}; pass "
                                "--resume (resume=True) to continue it, or --force to start over")
    with atomic_output(output, force=force) as tmp:
        result = screen(model, structures, progress_file=log_path, resume=resume, **options)
        _write_rows(tmp, result.rows)
    log_path.unlink(missing_ok=True)
    return result


