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
import json
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .beads import BeadMap, check_defects_mode
from .descriptors import soap_dimension
from .errors import CGGPRError, ModelError, OptionError
from .tasks import WORKER_DIED, Runner, Task, as_runner, run_tasks
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

#: Default spglib tolerance (Å) for symmetry-equivalent Zn sites.
SYMPREC = 1e-3
#: How the trust threshold is chosen from a calibration.

CSV_COLUMNS = ("rank", "id", "framework_type", "n_Zn", "energy_per_Zn_eV", "max_std_eV", "trusted", "trust_reason",
               "space_group", "n_unique_Zn", "n_defective_Zn", "n_untrusted_Zn", "relaxation", "source", "error")
#: Largest accepted spglib tolerance (Å): beyond it every structure looks symmetric.
MAX_SYMPREC = 1.0


ScreenOptionError = OptionError  # an invalid screen option (threshold, symprec, workers, calibration, progress file)


def check_symprec(value) -> float:
    """``value`` as a float if it is a usable spglib tolerance: finite, 0 < symprec < 1 Å."""
    if not is_number(value) or not math.isfinite(float(value)) or not 0 < float(value) < MAX_SYMPREC:
        raise ScreenOptionError(f"symprec must be a finite tolerance in (0, {MAX_SYMPREC:g}) Å, got {value!r}")
    return float(value)


def check_workers(value) -> int | Runner:
    """``value`` if it is a number of worker processes (an integer >= 1) or a :class:`~ase_cggpr.tasks.Runner`."""
    if isinstance(value, Runner):
        return value
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ScreenOptionError(f"workers must be an integer >= 1, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------------------
# Symmetry
# ---------------------------------------------------------------------------------------------------------

def _spglib_dataset(atoms: Atoms, symprec: float):
    import spglib

    symprec = check_symprec(symprec)  # spglib segfaults on a negative tolerance

    cell = (np.asarray(atoms.cell), atoms.get_scaled_positions(wrap=True), atoms.numbers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spglib.get_symmetry_dataset(cell, symprec=symprec)


def _get(dataset, key: str):
    return dataset[key] if isinstance(dataset, dict) else getattr(dataset, key)


def space_group(atoms: Atoms, symprec: float = SYMPREC) -> str:
    """International symbol and number, e.g. ``"I4_1cd (110)"`` ("" when spglib finds none)."""
    dataset = _spglib_dataset(atoms, symprec)
    if dataset is None:
        return ""
    return f"{_get(dataset, 'international')} ({_get(dataset, 'number')})"


def equivalent_centres(bead_map: BeadMap, symprec: float = SYMPREC) -> tuple[np.ndarray, np.ndarray]:
    """(representative centre positions, inverse): centre k is equivalent to centre ``reps[inverse[k]]``.

    Positions index ``bead_map.centre_indices`` (metal order). Found with spglib on the descriptor's
    structure; no symmetry found means every centre is its own representative.
    """
    centres = np.asarray(bead_map.centre_indices)
    dataset = _spglib_dataset(bead_map.structure, symprec)
    if dataset is None:
        return np.arange(len(centres)), np.arange(len(centres))
    orbit = np.asarray(_get(dataset, "equivalent_atoms"))[centres]
    _, first, inverse = np.unique(orbit, return_index=True, return_inverse=True)
    return first, inverse.ravel()


def centre_vectors(spec, bead_map: BeadMap, positions: np.ndarray | None = None) -> np.ndarray:
    """Normalised SOAP vectors of the centres at ``positions`` (in metal order; all when None): (k, D).

    Only the selected centres are computed (:func:`ase_cggpr.model.selected_vectors`).
    """
    from .descriptors import soap_vectors
    from .model import selected_vectors

    if positions is None or np.array_equal(positions, np.arange(len(bead_map.centre_indices))):
        return soap_vectors([bead_map], spec)
    positions = np.asarray(positions)
    order = np.argsort(positions, kind="stable")  # the helper takes sorted rows (centres in metal = atom order)
    out = np.empty((len(positions), soap_dimension(spec)))
    out[order] = selected_vectors([bead_map], spec, positions[order])
    return out


def predict_symmetric(model, bead_map: BeadMap, *, symmetry: bool = True, symprec: float = SYMPREC):
    """(per-Zn mean, per-Zn std, number of unique Zn sites), computed once per symmetry orbit."""
    n = len(bead_map.centre_indices)
    if symmetry:
        reps, inverse = equivalent_centres(bead_map, symprec)
    else:
        reps, inverse = np.arange(n), np.arange(n)
    X = centre_vectors(model.spec, bead_map, reps)
    mean, std = model.regressor_.predict(X, return_std=True)
    return mean[inverse], std[inverse], len(reps)


# ---------------------------------------------------------------------------------------------------------
# Rows and the screen
# ---------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ScreenRow:
    """One screened structure. Energies in eV per Zn relative to the model's reference."""

    id: str
    source: str = ""
    framework_type: str = ""
    n_Zn: int = 0
    energy_per_Zn: float = math.nan
    max_std: float = math.nan
    trusted: bool = False
    space_group: str = ""
    n_unique_Zn: int = 0
    #: coordination-defective Zn sites, and all untrusted ones (defective, or a defect within the model's cutoff:
    #: :mod:`ase_cggpr.defects`); a row with any untrusted site is never trusted (its energy per Zn averages
    #: extrapolated sites too), so it is listed unranked
    n_defective_Zn: int = 0
    n_untrusted_Zn: int = 0
    #: "" (not relaxed), "converged (N steps)" or "NOT converged (max force ... after N steps)": a row whose
    #: relaxation did not converge keeps its last energy but is never trusted (so listed unranked).
    relaxation: str = ""
    #: why the row is not trusted ("" when it is): std above the threshold, input outside what the model was
    #: trained on (:mod:`ase_cggpr.applicability`), relaxation not converged
    trust_reason: str = ""
    error: str = ""
    rank: int | None = None

    def csv_row(self) -> dict[str, Any]:
        ok = not self.error
        return {"rank": "" if self.rank is None else self.rank, "id": self.id, "framework_type": self.framework_type,
                "n_Zn": self.n_Zn if ok else "", "energy_per_Zn_eV": f"{self.energy_per_Zn:.6f}" if ok else "",
                "max_std_eV": f"{self.max_std:.6f}" if ok else "", "trusted": str(self.trusted) if ok else "",
                "trust_reason": self.trust_reason if ok else "",
                "space_group": self.space_group, "n_unique_Zn": self.n_unique_Zn if ok else "",
                "n_defective_Zn": self.n_defective_Zn if ok else "",
                "n_untrusted_Zn": self.n_untrusted_Zn if ok else "",
                "relaxation": self.relaxation, "source": self.source, "error": self.error}


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
                from .relax import relax as relax_structure

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
        from .applicability import trust as applicability_trust  # shown (calibrated) std, why not trusted

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
    from .io import expand_paths, no_structure_reason, read_frames

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

    with contextlib.closing(run_tasks(_screen_task, to_run(), runner, context=(model, kwargs),
                                      on_death=warn)) as outcomes:
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


# -- progress file (resume) -----------------------------------------------------------------------------

PROGRESS_FORMAT = "cggpr-screen-progress"


def progress_path(output: str | os.PathLike) -> Path:
    """The progress file kept beside a screen's CSV while it runs: ``OUTPUT.progress.jsonl``."""
    output = Path(output)
    return output.with_name(output.name + ".progress.jsonl")


def model_fingerprint(model) -> str:
    """A digest of what decides a model's predictions (spec, reference, training facts, weights)."""
    digest = hashlib.sha256(json.dumps({"spec": model.spec.to_dict(), "reference": model.reference_energy,
                                        "training": getattr(model, "training_", None)},
                                       sort_keys=True, default=str).encode())
    for name in ("alpha_", "mean_"):
        value = getattr(model.regressor_, name, None)
        if value is not None:
            digest.update(np.ascontiguousarray(np.asarray(value, np.float64)).tobytes())
    return digest.hexdigest()[:24]


_ROW_TEXT = ("id", "source", "framework_type", "space_group", "trust_reason", "relaxation", "error")


def progress_row(entry: Any, settings: dict) -> tuple[str, ScreenRow]:
    """(key, row) of one entry of a progress file, every field's type and range checked against what
    :func:`screen_structure` writes with these ``settings``; ``ValueError`` names the first field that fails
    (a hand-edited row must not crash the screen after its work, nor be ranked or trusted unearned)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not entry["key"]:
        raise ValueError("not an object with a 'key' string and a 'row' object")
    raw = entry.get("row")
    if not isinstance(raw, dict):
        raise ValueError(f"'row' is {type(raw).__name__}, not an object")
    # rows written before defect flags and trust reasons had none
    raw = {"n_defective_Zn": 0, "n_untrusted_Zn": 0, "trust_reason": "", **raw}
    missing = [f.name for f in dataclasses.fields(ScreenRow) if f.name != "rank" and f.name not in raw]
    if missing:
        raise ValueError(f"row has no {', '.join(missing)}")

    def bad(field: str, expected: str) -> ValueError:
        return ValueError(f"{field} {raw[field]!r} is not {expected}")

    for field in _ROW_TEXT:
        if not isinstance(raw[field], str):
            raise bad(field, "a string")
    if not raw["id"]:
        raise bad("id", "a non-empty string")
    if not isinstance(raw["trusted"], bool):
        raise bad("trusted", "true or false")
    ok = not raw["error"]
    for field in ("n_Zn", "n_unique_Zn"):
        value = raw[field]
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if ok else 0):
            raise bad(field, "an integer >= 1" if ok else "an integer >= 0")
    for field in ("n_defective_Zn", "n_untrusted_Zn"):
        value = raw[field]
        if ok and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= raw["n_Zn"]):
            raise bad(field, f"an integer from 0 to n_Zn {raw['n_Zn']}")
    for field in ("energy_per_Zn", "max_std"):
        value = raw[field]
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise bad(field, "a number")
        if ok and not math.isfinite(value):
            raise bad(field, "a finite number")
    if ok:
        if raw["max_std"] < 0:
            raise bad("max_std", "a std >= 0 (eV)")
        if raw["n_unique_Zn"] > raw["n_Zn"]:
            raise bad("n_unique_Zn", f"<= n_Zn {raw['n_Zn']}")
        if bool(raw["relaxation"]) != bool(settings.get("relax")):
            raise bad("relaxation", "what this screen writes" + (" (it relaxes)" if settings.get("relax") else
                                                                    " (no relaxation)"))
        relaxed = not raw["relaxation"] or raw["relaxation"].startswith("converged")
        earned = (raw["max_std"] <= float(settings.get("threshold", math.inf)) and relaxed
                  and raw["n_untrusted_Zn"] == 0)
        if raw["trusted"] and (raw["trust_reason"] or not earned):
            raise bad("trusted", f"false ({raw['trust_reason'] or 'not earned'}: max_std {raw['max_std']!r}, "
                                 f"threshold {settings.get('threshold')!r}"
                                 f"{'' if relaxed else ', relaxation not converged'}, "
                                 f"{raw['n_untrusted_Zn']} untrusted Zn)")
        if not raw["trusted"] and not raw["trust_reason"]:
            raise bad("trusted", "true, or a trust_reason saying why not")
    elif raw["trusted"]:
        raise bad("trusted", "false (an error row is never trusted)")
    row = ScreenRow(**{f.name: raw[f.name] for f in dataclasses.fields(ScreenRow) if f.name != "rank"})
    row.energy_per_Zn, row.max_std = float(row.energy_per_Zn), float(row.max_std)
    return entry["key"], row


class ProgressLog:
    """Append-only JSON-lines record of a screen's finished rows (flushed and fsync'd per row).

    The first line holds the screen's settings; a resume with other settings is refused. A last line cut
    short by a kill is dropped.
    """

    def __init__(self, path: str | os.PathLike, settings: dict, *, resume: bool):
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings))
        self.rows: dict[str, ScreenRow] = {}
        self.invalid: list[str] = []  #: "line N: reason" of each row that failed validation (computed again)
        self.n_added = 0  #: rows added by this run
        if resume and self.path.exists():
            self._read()
            self.handle = open(self.path, "a", encoding="utf-8")
        else:
            self.handle = open(self.path, "w", encoding="utf-8")
            self._write({"format": PROGRESS_FORMAT, "settings": self.settings})

    def _read(self) -> None:
        data = self.path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):  # a line cut short by a kill: drop it
            with open(self.path, "r+b") as handle:
                handle.truncate(cut)
            data = data[:cut]
        lines = data.decode("utf-8", errors="replace").splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("format") != PROGRESS_FORMAT:
            raise ScreenOptionError(f"{self.path} is not a screen progress file; remove it or choose another "
                                    "output")
        if header.get("settings") != self.settings:
            old = header.get("settings") if isinstance(header.get("settings"), dict) else {}
            unset = "not set"  # e.g. relax: only screens with --relax record it
            diff = [f"{k} {old.get(k, unset)!r} -> {self.settings.get(k, unset)!r}"
                    for k in [*self.settings, *(k for k in old if k not in self.settings)]
                    if old.get(k, unset) != self.settings.get(k, unset)]
            raise ScreenOptionError(f"cannot resume from {self.path}: it was written with other settings "
                                    f"({'; '.join(diff) or 'unreadable settings'}); resume with the same model and "
                                    "options, or pass --force without --resume to start over")
        for number, line in enumerate(lines[1:], start=2):
            try:
                key, row = progress_row(json.loads(line), self.settings)
            except (ValueError, TypeError) as error:  # a hand-edited or damaged row: computed again, and named
                self.invalid.append(f"line {number}: {' '.join(str(error).split())[:200]}")
                continue
            if row.error.startswith(WORKER_DIED):
                continue  # computed again
            self.rows[key] = row

    def _write(self, entry: dict) -> None:
        self.handle.write(json.dumps(entry) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def add(self, key: str, row: ScreenRow) -> None:
        record = dataclasses.asdict(row)
        record.pop("rank", None)
        self._write({"key": key, "row": record})
        self.n_added += 1

    def close(self) -> None:
        self.handle.close()


# -- the screen -------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ScreenResult:
    """Sorted rows and run statistics of a screen."""

    rows: list[ScreenRow]
    seconds: float
    threshold: float
    threshold_source: str
    n_resumed: int = 0  #: rows taken from an interrupted screen's progress file (not computed again)
    #: worker processes that died while screening a structure (the structure was screened again, up to
    #: :data:`~ase_cggpr.tasks.RETRIES` times, then made an error row)
    n_worker_deaths: int = 0
    #: "line N: reason" of each progress-file row that failed validation on resume (computed again)
    invalid_progress: list[str] = dataclasses.field(default_factory=list)

    @property
    def n_ok(self) -> int:
        return sum(not r.error for r in self.rows)

    @property
    def per_second(self) -> float:
        return len(self.rows) / self.seconds if self.seconds > 0 else math.inf


def sort_rows(rows: list[ScreenRow]) -> list[ScreenRow]:
    """Trusted rows by energy per Zn (ranked 1, 2, ...), then untrusted by energy (unranked), then errors.

    A row without an error but with a non-finite energy or std becomes an error row (never ranked).
    """
    for row in rows:
        if not row.error and not (math.isfinite(row.energy_per_Zn) and math.isfinite(row.max_std)):
            row.error, row.trusted = "the prediction is not finite (NaN energy or std); not ranked", False
    rows = sorted(rows, key=lambda r: (bool(r.error), not r.trusted, r.energy_per_Zn if not r.error else 0.0,
                                       r.id))
    rank = 0
    for row in rows:
        row.rank = None
        if not row.error and row.trusted:
            rank += 1
            row.rank = rank
    return rows


def screen(model, structures: Iterable[str | os.PathLike | Atoms], *, threshold: float | None = None,
           symmetry: bool = True, symprec: float = SYMPREC, workers: int = 1, progress: bool = False,
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
    from .model import CGGPRModel
    from .progress import progress_bar

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
                from .io import expand_paths

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


def _write_rows(path: Path, rows: Sequence[ScreenRow]) -> None:
    from .evaluation.tables import write_rows

    write_rows(path, (row.csv_row() for row in rows), CSV_COLUMNS)


def write_csv(path: str | os.PathLike, rows: Sequence[ScreenRow], *, overwrite: bool = False) -> Path:
    """Write the ranking (columns :data:`CSV_COLUMNS`) atomically; never overwrites unless asked.

    Path first, then rows, as every ``write_csv`` of the package (:func:`ase_cggpr.evaluation.write_csv`)."""
    from .evaluation.tables import write_csv as write_table

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"write_csv(path, rows, ...): the path comes first, got {type(path).__name__}")
    path = Path(path)
    if path.exists() and not overwrite and not path.is_dir():
        raise FileExistsError(f"{path} exists; choose another name or pass overwrite=True (--force)")
    return write_table(path, [row.csv_row() for row in rows], CSV_COLUMNS, overwrite=overwrite, make_folder=False)


def screen_to_csv(model, structures: Iterable[str | os.PathLike | Atoms], output: str | os.PathLike, *,
                  force: bool = False, resume: bool = False, **options) -> ScreenResult:
    """:func:`screen` into the CSV ``output``, resumable: rows are streamed to :func:`progress_path` as they
    finish; the CSV is published atomically at the end and the progress file removed.

    ``output`` is checked and locked before any work (an existing file needs ``force``). An existing progress
    file (an interrupted screen) needs ``resume=True`` (continue it) or ``force=True`` (start over).
    ``options`` are those of :func:`screen`.
    """
    from .outputs import atomic_output, check_output

    for name, check in (("threshold", check_threshold), ("symprec", check_symprec), ("workers", check_workers)):
        if options.get(name) is not None:
            check(options[name])
    output = check_output(output, force=force)
    log_path = progress_path(output)
    if log_path.exists() and not resume and not force:
        raise ScreenOptionError(f"{log_path} holds the rows of an interrupted screen into {output}; pass "
                                "--resume (resume=True) to continue it, or --force to start over")
    with atomic_output(output, force=force) as tmp:
        result = screen(model, structures, progress_file=log_path, resume=resume, **options)
        _write_rows(tmp, result.rows)
    log_path.unlink(missing_ok=True)
    return result


def format_table(rows: Sequence[ScreenRow], top: int = 10) -> str:
    """The first ``top`` rows as a fixed-width table (energies in eV per Zn)."""
    lines = [f"{'rank':>4} {'id':<28} {'framework':<9} {'n_Zn':>4} {'E/Zn (eV)':>10} {'max std':>8} "
             f"{'trusted':>7} {'space group':<16} error"]
    for row in list(rows)[:max(0, top)]:
        if row.error:
            lines.append(f"{'':>4} {row.id[:28]:<28} {row.framework_type[:9]:<9} {'':>4} {'':>10} {'':>8} {'':>7} "
                         f"{'':<16} {row.error[:80]}")
        else:
            rank = "" if row.rank is None else row.rank
            lines.append(f"{rank!s:>4} {row.id[:28]:<28} {row.framework_type[:9]:<9} {row.n_Zn:>4d} "
                         f"{row.energy_per_Zn:>10.4f} {row.max_std:>8.4f} {'yes' if row.trusted else 'NO':>7} "
                         f"{row.space_group[:16]:<16}")
    return "\n".join(lines)
