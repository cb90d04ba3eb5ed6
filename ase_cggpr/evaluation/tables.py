"""Result files of the evaluation: CSV rows, CV predictions, JSON text, and the paper's own files.

One CSV convention for the package: :func:`write_csv` ``(path, rows, fields)`` writes dict rows atomically
(:func:`ase_cggpr.outputs.atomic_output`); :func:`read_csv` reads them back with numbers parsed. The screen's
ranking (:func:`ase_cggpr.screening.write_csv`) is written through it. The package's root-mean-square error is
:func:`ase_cggpr.metrics.rmse`. Grid-search CSVs (:data:`GRID_FIELDS`) are appended point by point by
:func:`~ase_cggpr.evaluation.studies.grid_search`; :func:`grid_setting` tells the grids of one file apart.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..outputs import atomic_output
from ..spec import canonical_representation

#: Columns of a learning-curve CSV (the paper's names plus the representation, the spread and the time).


LC_FIELDS = ("representation", "soap_cutoff", "atom_sigma", "noise", "numb_training_atoms", "av_train_rmse",
             "av_test_rmse", "std_test_rmse", "n_folds", "seconds")


GRID_FIELDS = ("representation", "cutoff", "atom_sigma", "noise", "n_train", "n_folds", "seed",
               "train_rmse", "test_rmse", "seconds", "protocol")


def write_rows(path: str | os.PathLike, rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> None:
    """Write dict rows as CSV with the header ``fields`` into ``path`` (in place, flushed to disk): the package's
    one CSV writer (:func:`write_csv` writes through it atomically; so does the screen's ranking)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None, *,
              overwrite: bool = True, make_folder: bool = True) -> Path:
    """Write rows (dicts) as CSV, atomically (:func:`ase_cggpr.outputs.atomic_output`): path first, then rows.

    ``fields``: the columns (default: the first row's keys); ``make_folder``: create a missing parent folder."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"write_csv(path, rows, ...): the path comes first, got {type(path).__name__}")
    path = Path(path)
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(fields or (rows[0].keys() if rows else []))
    with atomic_output(path, force=overwrite) as tmp:
        write_rows(tmp, rows, fields)
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


def write_text(path: Path, text: str, *, overwrite: bool = True) -> None:
    with atomic_output(path, force=overwrite) as tmp:
        tmp.write_text(text)


def save_predictions(path: str | os.PathLike, labels: np.ndarray, predictions: np.ndarray,
                     folds: np.ndarray, groups: np.ndarray | None = None, *, overwrite: bool = True) -> Path:
    """CSV of out-of-fold predictions: row, fold, label, prediction (eV), written atomically."""
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


def _grid_key(cutoff: float, atom_sigma: float, noise: float) -> tuple[str, str, str]:
    return (f"{float(cutoff):.6g}", f"{float(atom_sigma):.6g}", f"{float(noise):.6g}")


def grid_setting(row: dict[str, Any]) -> tuple[str, ...]:
    """(representation, n_train, n_folds, seed, protocol) of a grid-search CSV row: the points of one grid.

    ``protocol`` is ``per-fold`` (each fold's own fit, tested on the whole fold; also rows written before the
    column existed) or ``shared`` (:func:`shared_kernel_cv` on seeded per-fold samples)."""
    return (str(row["representation"]), str(row["n_train"] if row["n_train"] != "" else ""), str(row["n_folds"]),
            str(row["seed"]), str(row.get("protocol") or "per-fold"))


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
