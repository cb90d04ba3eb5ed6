"""No finished work lost: the per-structure commands (``relax``, ``predict``) check every input before the
work, and keep what finished when a structure fails during it.

The convention (docs/guarantees.md, "Bad input and long runs", names it):

1. before any work, every structure is read and mapped onto the model's representation
   (:func:`check_structures`): a structure that cannot be is one error line naming it (all such structures,
   counted), exit code 1, nothing computed and nothing written;
2. a structure that fails during the work (a relaxation that breaks the bead net, a prediction that is not
   finite) does not stop the others; the command then writes what finished under *partial* names
   (:func:`partial_path`: ``relaxed.extxyz`` -> ``relaxed.partial.extxyz``; a table gets one error row per
   failed structure, as ``cggpr screen``'s ranking does) and ends with one error line naming the failures and
   the partial files, exit code 1. The complete output name is only ever written by a run where every
   structure succeeded, so its existence (and exit code 0) means "all done". A partial file of an earlier run
   is replaced; it is locked while the command runs, as every output is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import click

from ..errors import CGGPRError
from ..outputs import check_output, output_lock
from .options import hold

#: failures named in full in the error line (the rest are counted)
SHOWN = 3


def partial_path(path: Path) -> Path:
    """Where a run with failed structures writes what finished: ``NAME.partial.EXT`` beside ``path``."""
    path = Path(path)
    if path.suffix:
        return path.with_name(f"{path.stem}.partial{path.suffix}")
    return path.with_name(path.name + ".partial")


def claim_partial(*paths: Path | None) -> list[Path]:
    """Check and lock the partial names of ``paths`` for the command's duration (an earlier partial file is
    replaced, so only the folder and the name's kind are checked); returns them (``None`` entries dropped)."""
    partial = [partial_path(p) for p in paths if p is not None]
    ctx = click.get_current_context(silent=True)
    for path in partial:
        check_output(path, force=True)
        if ctx is not None:
            hold(ctx, output_lock(path), path)
    return partial


def failure_text(failures: Sequence[tuple[str, str]]) -> str:
    """``name: reason; ...`` of the first :data:`SHOWN` failures, then how many more."""
    shown = []
    for name, reason in failures[:SHOWN]:
        shown.append(reason if name in reason else f"{name}: {reason}")
    more = f"; and {len(failures) - SHOWN} more" if len(failures) > SHOWN else ""
    return "; ".join(shown) + more


def check_structures(frames: Sequence, check: Callable, verb: str) -> list:
    """``check(atoms)`` for every frame before any work; a :class:`CGGPRError` from any is collected, and if
    there are any the command stops with one line naming them all (counted), nothing computed. Returns the
    checks' results (e.g. bead maps, reused by the work)."""
    results, failures = [], []
    for atoms in frames:
        name = str(atoms.info.get("name", atoms.get_chemical_formula()))
        try:
            results.append(check(atoms))
        except CGGPRError as error:
            failures.append((name, " ".join(str(error).split())))
    if failures:
        raise CGGPRError(f"{len(failures)} of {len(frames)} structure(s) cannot be {verb}, so nothing was "
                         f"computed: {failure_text(failures)}")
    return results


def finished_with_failures(failures: Sequence[tuple[str, str]], n_total: int, verb: str,
                           written: Sequence[Path]) -> CGGPRError:
    """The error ending a run where some structures failed during the work (``written``: the partial files)."""
    n_done = n_total - len(failures)
    where = (f"; the {n_done} finished are in {' and '.join(str(p) for p in written)} (named .partial: not all "
             "structures are in them)" if written and n_done else "; nothing finished, nothing written")
    return CGGPRError(f"{len(failures)} of {n_total} structure(s) could not be {verb}: {failure_text(failures)}"
                      f"{where}")
