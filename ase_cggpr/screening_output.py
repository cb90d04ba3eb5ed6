"""A screen's rows and what is written of them: :class:`ScreenRow`, the ranking (:func:`sort_rows`), the CSV
(:func:`write_csv`), the printed table (:func:`format_table`) and the progress file that makes a screen resumable
(:class:`ProgressLog`, :func:`progress_row`; see :mod:`ase_cggpr.screening`, "Robustness")."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OptionError
from .evaluation.tables import write_csv as write_table
from .evaluation.tables import write_rows
from .tasks import WORKER_DIED

CSV_COLUMNS = ("rank", "id", "framework_type", "n_Zn", "energy_per_Zn_eV", "max_std_eV", "trusted", "trust_reason",
               "space_group", "n_unique_Zn", "n_defective_Zn", "n_untrusted_Zn", "relaxation", "source", "error")


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
    for value in model.fitted_weights.values():  # alpha_ then mean_, as before
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
            raise OptionError(f"{self.path} is not a screen progress file; remove it or choose another "
                                    "output")
        if header.get("settings") != self.settings:
            old = header.get("settings") if isinstance(header.get("settings"), dict) else {}
            unset = "not set"  # e.g. relax: only screens with --relax record it
            diff = [f"{k} {old.get(k, unset)!r} -> {self.settings.get(k, unset)!r}"
                    for k in [*self.settings, *(k for k in old if k not in self.settings)]
                    if old.get(k, unset) != self.settings.get(k, unset)]
            raise OptionError(f"cannot resume from {self.path}: it was written with other settings "
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


def _write_rows(path: Path, rows: Sequence[ScreenRow]) -> None:
    write_rows(path, (row.csv_row() for row in rows), CSV_COLUMNS)


def write_csv(path: str | os.PathLike, rows: Sequence[ScreenRow], *, overwrite: bool = False) -> Path:
    """Write the ranking (columns :data:`CSV_COLUMNS`) atomically; never overwrites unless asked.

    Path first, then rows, as every ``write_csv`` of the package (:func:`ase_cggpr.evaluation.write_csv`)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"write_csv(path, rows, ...): the path comes first, got {type(path).__name__}")
    path = Path(path)
    if path.exists() and not overwrite and not path.is_dir():
        raise FileExistsError(f"{path} exists; choose another name or pass overwrite=True (--force)")
    return write_table(path, [row.csv_row() for row in rows], CSV_COLUMNS, overwrite=overwrite, make_folder=False)


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
