"""Screening many candidate frameworks: predicted energy per Zn, uncertainty, trust flag, symmetry reduction.

:func:`screen` streams structures (CIF, extxyz, folders, globs; one frame in memory per worker), maps each
onto the model's representation, predicts its per-Zn local energies relative to the model's reference
(e.g. relaxed zni) with their GP standard deviations, and returns rows sorted by energy per Zn: trusted
structures first, then untrusted ones, then structures that could not be read or mapped (their error
message is in the row; one bad structure never stops a screen). :func:`write_csv` and :func:`format_table`
write and print the ranking.

Uncertainty
-----------
The per-Zn standard deviation is the GP's latent (noise-free) predictive std. :func:`calibrate` measures, on
held-out labelled data, the fraction of errors within 1 and 2 predicted sigma, with the latent std and with
the noise term added (an ideal Gaussian model gives about 68% and 95%), and picks the trust threshold by
the rule :data:`THRESHOLD_RULE`: the 99th percentile of the held-out environments' latent std. A structure
is *trusted* when none of its Zn environments has a std above the threshold, i.e. none is less covered by
the training data than 99% of the environments the model was validated on. Without a calibration the
threshold is the model's noise sigma (an environment whose latent uncertainty exceeds the label noise is
one the model is guessing about).

Symmetry
--------
Symmetry-equivalent Zn sites have identical environments, hence identical SOAP vectors and predictions.
With ``symmetry=True`` spglib's ``equivalent_atoms`` (tolerance ``symprec``, Å) is found for the structure
the descriptor sees (atoms, or Si/O beads: bead structures can be more symmetric than the atoms), SOAP
vectors and predictions are computed for one representative per orbit only, and copied to the others.
Only the representatives are computed (:func:`~ase_cggpr.descriptors.soap_vectors` with ``centres``:
featomic's ``selected_samples``, quippy's ``atom_mask_name``). Within the tolerance, results equal the
unreduced computation (exactly, for exactly symmetric structures).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .beads import BeadMap
from .descriptors import soap_dimension
from .errors import CGGPRError

#: Default spglib tolerance (Å) for symmetry-equivalent Zn sites.
SYMPREC = 1e-3
#: How the trust threshold is chosen from a calibration.
THRESHOLD_RULE = "99th percentile of the held-out per-Zn latent std (GP, no noise term)"
THRESHOLD_QUANTILE = 0.99

CSV_COLUMNS = ("rank", "id", "topology", "n_Zn", "energy_per_Zn_eV", "max_std_eV", "trusted", "space_group",
               "n_unique_Zn", "source", "error")


# ---------------------------------------------------------------------------------------------------------
# Calibration of the predictive uncertainty
# ---------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Calibration:
    """Calibration of per-Zn predictive std on held-out data (energies in eV per Zn environment).

    ``within_1sigma`` / ``within_2sigma``: fraction of |error| <= 1 / 2 latent std; ``*_with_noise``: with the
    noise variance added to the latent variance. Ideal: about 0.68 / 0.95.
    """

    n_environments: int
    rmse: float
    within_1sigma: float
    within_2sigma: float
    within_1sigma_with_noise: float
    within_2sigma_with_noise: float
    std_median: float
    std_q99: float
    noise: float
    threshold: float
    threshold_rule: str = THRESHOLD_RULE

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        return cls(**json.loads(Path(path).read_text()))

    def table(self) -> str:
        return "\n".join([
            f"held-out environments: {self.n_environments}, RMSE {self.rmse:.4f} eV",
            f"within 1 sigma: {self.within_1sigma:.1%} latent, {self.within_1sigma_with_noise:.1%} with noise"
            " (ideal 68.3%)",
            f"within 2 sigma: {self.within_2sigma:.1%} latent, {self.within_2sigma_with_noise:.1%} with noise"
            " (ideal 95.4%)",
            f"latent std: median {self.std_median:.4f} eV, 99th percentile {self.std_q99:.4f} eV; noise "
            f"{self.noise:.4f} eV",
            f"trust threshold: {self.threshold:.4f} eV ({self.threshold_rule})"])


def calibration_from_errors(errors: np.ndarray, std: np.ndarray, noise: float) -> Calibration:
    """A :class:`Calibration` from held-out errors (prediction - truth) and latent stds (eV)."""
    errors, std = np.abs(np.asarray(errors, float)), np.asarray(std, float)
    if errors.size == 0 or errors.shape != std.shape:
        raise CGGPRError(f"need matching non-empty errors and std, got {errors.shape} and {std.shape}")
    total = np.sqrt(std**2 + noise**2)
    q99 = float(np.quantile(std, THRESHOLD_QUANTILE))
    return Calibration(
        n_environments=int(errors.size), rmse=float(np.sqrt(np.mean(errors**2))),
        within_1sigma=float(np.mean(errors <= std)), within_2sigma=float(np.mean(errors <= 2 * std)),
        within_1sigma_with_noise=float(np.mean(errors <= total)),
        within_2sigma_with_noise=float(np.mean(errors <= 2 * total)),
        std_median=float(np.median(std)), std_q99=q99, noise=float(noise), threshold=q99)


def calibrate(model, maps: Sequence[BeadMap], labels: Sequence[np.ndarray], *, progress: bool = False
              ) -> Calibration:
    """Calibrate ``model``'s per-Zn std on held-out bead maps and their raw per-metal labels (eV).

    Labels are raw (as for fitting); the model's reference energy is subtracted here.
    """
    means, stds = model.predict_maps(list(maps), return_std=True, progress=progress)
    truth = np.concatenate([np.asarray(y, float).ravel() for y in labels]) - model.reference_energy
    return calibration_from_errors(np.concatenate(means) - truth, np.concatenate(stds), model.spec.noise)


def default_threshold(model) -> tuple[float, str]:
    """(threshold in eV, where it came from): the model's stored calibration if any, else its noise sigma."""
    stored = (getattr(model, "calibration_", None) or {}).get("threshold")
    if stored is not None:
        return float(stored), "model calibration"
    return float(model.spec.noise), "model noise sigma (no calibration given)"


# ---------------------------------------------------------------------------------------------------------
# Symmetry
# ---------------------------------------------------------------------------------------------------------

def _spglib_dataset(atoms: Atoms, symprec: float):
    import spglib

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

    Only the selected centres are computed (``soap_vectors(..., centres=...)``).
    """
    from .descriptors import soap_vectors

    if positions is None or np.array_equal(positions, np.arange(len(bead_map.centre_indices))):
        return soap_vectors([bead_map], spec)
    atoms = np.asarray(bead_map.centre_indices)[np.asarray(positions)]
    order = np.argsort(atoms, kind="stable")  # the descriptors return centres in atom order
    out = np.empty((len(atoms), soap_dimension(spec)))
    out[order] = soap_vectors([bead_map], spec, centres=[atoms[order]])
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
    topology: str = ""
    n_Zn: int = 0
    energy_per_Zn: float = math.nan
    max_std: float = math.nan
    trusted: bool = False
    space_group: str = ""
    n_unique_Zn: int = 0
    error: str = ""
    rank: int | None = None

    def csv_row(self) -> dict[str, Any]:
        ok = not self.error
        return {"rank": "" if self.rank is None else self.rank, "id": self.id, "topology": self.topology,
                "n_Zn": self.n_Zn if ok else "", "energy_per_Zn_eV": f"{self.energy_per_Zn:.6f}" if ok else "",
                "max_std_eV": f"{self.max_std:.6f}" if ok else "", "trusted": str(self.trusted) if ok else "",
                "space_group": self.space_group, "n_unique_Zn": self.n_unique_Zn if ok else "",
                "source": self.source, "error": self.error}


def _topology_label(atoms: Atoms) -> str:
    for key in ("net", "topology"):
        if key in atoms.info:
            return str(atoms.info[key])
    return ""


def screen_structure(model, atoms: Atoms, *, threshold: float, symmetry: bool = True, symprec: float = SYMPREC,
                     id: str | None = None, source: str = "") -> ScreenRow:
    """Screen one structure; any error becomes the row's ``error`` (never raised)."""
    name = id or str(atoms.info.get("name") or atoms.info.get("structure_id") or atoms.get_chemical_formula())
    row = ScreenRow(id=name, source=source, topology=_topology_label(atoms))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bead_map = model.bead_map(atoms, name=name)
            with contextlib.suppress(Exception):
                row.space_group = space_group(atoms, symprec)
            mean, std, n_unique = predict_symmetric(model, bead_map, symmetry=symmetry, symprec=symprec)
        row.n_Zn, row.n_unique_Zn = len(mean), int(n_unique)
        row.energy_per_Zn, row.max_std = float(mean.mean()), float(std.max())
        row.trusted = bool(row.max_std <= threshold)
    except Exception as error:  # one bad structure never stops a screen
        message = str(error) or type(error).__name__
        row.error = f"{type(error).__name__}: {message}".replace("\n", " ")
    return row


def iter_sources(patterns: Iterable[str | os.PathLike], *, file_done=None
                 ) -> Iterator[tuple[str, str, Atoms | Exception]]:
    """Stream (id, source file, Atoms or the error reading it) from files, folders and globs, frame by frame.

    ``file_done()`` is called after each file (or unmatched pattern) has been read.
    """
    from ase.io import iread

    from .data import expand_paths

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
                    for atoms in iread(path, index=":"):
                        yield f"{path.name}@{k}", str(path), atoms
                        k += 1
            except Exception as error:  # unreadable file or frame: one error row, go on with the next file
                yield (f"{path.name}@{k}" if k else path.name), str(path), error
            if file_done is not None:
                file_done()


def _structure_id(default: str, atoms: Atoms) -> str:
    name = atoms.info.get("name")
    return str(name) if name else default


# worker-process state
_WORKER: dict[str, Any] = {}


def _init_worker(model, kwargs: dict) -> None:
    _WORKER["model"], _WORKER["kwargs"] = model, kwargs


def _work(item: tuple[str, str, Atoms]) -> ScreenRow:
    name, source, atoms = item
    return screen_structure(_WORKER["model"], atoms, id=name, source=source, **_WORKER["kwargs"])


@contextlib.contextmanager
def _single_threaded_children():
    """Worker processes use one BLAS/featomic thread each (processes already use the cores)."""
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _rows(model, items: Iterator[tuple[str, str, Atoms | Exception]], kwargs: dict, workers: int,
          ) -> Iterator[ScreenRow]:
    """Screen rows as they finish (serial in order; parallel with a bounded window of pending structures)."""
    def error_row(name, source, error):
        return ScreenRow(id=name, source=source, error=f"{type(error).__name__}: {error}".replace("\n", " "))

    if workers <= 1:
        for name, source, atoms in items:
            if isinstance(atoms, Exception):
                yield error_row(name, source, atoms)
            else:
                yield screen_structure(model, atoms, id=_structure_id(name, atoms), source=source, **kwargs)
        return
    import multiprocessing

    # spawn (not fork): featomic's thread pool and BLAS threads do not survive a fork safely. The
    # environment is set while the pool lives, since workers are started on first submit.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(model, kwargs))
    window = 4 * workers
    with _single_threaded_children(), pool:
        pending: set = set()
        for name, source, atoms in items:
            if isinstance(atoms, Exception):
                yield error_row(name, source, atoms)
                continue
            pending.add(pool.submit(_work, (_structure_id(name, atoms), source, atoms)))
            if len(pending) >= window:  # bounded: memory stays flat in the number of structures
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        for future in pending:
            yield future.result()


@dataclasses.dataclass
class ScreenResult:
    """Sorted rows and run statistics of a screen."""

    rows: list[ScreenRow]
    seconds: float
    threshold: float
    threshold_source: str

    @property
    def n_ok(self) -> int:
        return sum(not r.error for r in self.rows)

    @property
    def per_second(self) -> float:
        return len(self.rows) / self.seconds if self.seconds > 0 else math.inf


def sort_rows(rows: list[ScreenRow]) -> list[ScreenRow]:
    """Trusted rows by energy per Zn (ranked 1, 2, ...), then untrusted by energy (unranked), then errors."""
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
           symmetry: bool = True, symprec: float = SYMPREC, workers: int = 1, progress: bool = False
           ) -> ScreenResult:
    """Screen structures with a fitted model (or a model path) and rank them by predicted energy per Zn.

    Args:
        structures: file paths, folders, glob patterns (streamed), or Atoms objects (any mix).
        threshold: per-Zn latent std (eV) above which a structure is not trusted; default
            :func:`default_threshold` (the model's calibration, else its noise sigma).
        symmetry: compute once per set of symmetry-equivalent Zn sites (spglib, tolerance ``symprec`` Å).
        workers: processes (1: in this process).
        progress: progress bar on stderr (over input files).
    """
    from .model import CGGPRModel
    from .progress import progress_bar

    if not isinstance(model, CGGPRModel):
        model = CGGPRModel.load(model)
    source = "given"
    if threshold is None:
        threshold, source = default_threshold(model)
    kwargs = dict(threshold=float(threshold), symmetry=symmetry, symprec=symprec)
    inputs = list(structures)
    n_files = 0
    for item in inputs:
        if isinstance(item, Atoms):
            n_files += 1
        else:
            try:
                from .data import expand_paths

                n_files += len(expand_paths([item]))
            except Exception:
                n_files += 1

    start = time.perf_counter()
    with progress_bar(n_files, "screen", enabled=progress) as update:
        def items():
            for k, item in enumerate(inputs):
                if isinstance(item, Atoms):
                    yield _structure_id(f"structure {k}", item), "", item
                    update(1)
                else:
                    yield from iter_sources([item], file_done=lambda: update(1))

        rows = list(_rows(model, items(), kwargs, workers))
    return ScreenResult(sort_rows(rows), time.perf_counter() - start, float(threshold), source)


def write_csv(rows: Sequence[ScreenRow], path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the ranking (columns :data:`CSV_COLUMNS`); never overwrites unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another name or pass overwrite=True (--force)")
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.csv_row())
    os.replace(tmp, path)
    return path


def format_table(rows: Sequence[ScreenRow], top: int = 10) -> str:
    """The first ``top`` rows as a fixed-width table (energies in eV per Zn)."""
    lines = [f"{'rank':>4} {'id':<28} {'topology':<9} {'n_Zn':>4} {'E/Zn (eV)':>10} {'max std':>8} "
             f"{'trusted':>7} {'space group':<16} error"]
    for row in list(rows)[:top]:
        if row.error:
            lines.append(f"{'':>4} {row.id[:28]:<28} {row.topology[:9]:<9} {'':>4} {'':>10} {'':>8} {'':>7} "
                         f"{'':<16} {row.error[:80]}")
        else:
            rank = "" if row.rank is None else row.rank
            lines.append(f"{rank!s:>4} {row.id[:28]:<28} {row.topology[:9]:<9} {row.n_Zn:>4d} "
                         f"{row.energy_per_Zn:>10.4f} {row.max_std:>8.4f} {'yes' if row.trusted else 'NO':>7} "
                         f"{row.space_group[:16]:<16}")
    return "\n".join(lines)
