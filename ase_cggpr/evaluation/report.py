"""The evaluation report: one markdown or HTML page with the tables and figures of earlier runs.

:func:`build_report` reads cv summaries (JSON), learning-curve, grid-search and cross-hyper CSVs (each checked
field by field by :func:`read_input`: a file that is not what it should be is one line naming it), draws the
figures (:mod:`ase_cggpr.plots`) into a folder beside the page and writes the page; :func:`markdown_to_html`
turns the page into HTML for a ``.html`` output. ``cggpr report`` calls :func:`build_report`.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np

from .. import plots
from ..errors import CGGPRError, ModelError
from ..outputs import atomic_output, check_output
from .tables import grid_setting, optimum, paper_grid, paper_learning_curve, read_csv, read_predictions


def optimum_of(rows, paths):
    """The grid optimum of ``rows`` (read from ``paths``); none finite is one line naming the files."""
    try:
        return optimum(rows)
    except ModelError as error:
        raise ModelError(f"{', '.join(str(p) for p in paths)}: {error}") from None


def figures_folder(output: Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + "_figures")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: what each field of the report's inputs must hold
_CHECKS = {
    "any": lambda v: True,
    "num": _is_number,
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "int?": lambda v: v == "" or v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "nums": lambda v: isinstance(v, list) and bool(v) and all(_is_number(x) for x in v),
    "spec": lambda v: isinstance(v, dict) and all(_is_number(v.get(k)) for k in ("cutoff", "atom_sigma", "noise")),
}


def read_input(path, kind: str, reader, fields: dict[str, str] | None = None):
    """Read an input of the report; a file that is not what it should be (unreadable, or without the
    ``fields``, or with values of the wrong kind) is one line naming it."""
    try:
        data = reader(path)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise CGGPRError(f"{path} is not a {kind} ({type(error).__name__}: {error})") from None
    if not fields:
        return data
    records = data if isinstance(data, list) else [data]
    if not records or not all(isinstance(r, dict) for r in records):
        raise CGGPRError(f"{path} is not a {kind} (no records)")
    missing = sorted({k for r in records for k in fields if k not in r})
    if missing:
        raise CGGPRError(f"{path} is not a {kind} (no field {', '.join(missing)})")
    for number, record in enumerate(records, 1):
        for key, check in fields.items():
            if not _CHECKS[check](record[key]):
                where = f"record {number}" if isinstance(data, list) else "the file"
                raise CGGPRError(f"{path} is not a {kind}: {key} = {record[key]!r} in {where}")
    return data


TABLE_INPUT_FIELDS = {"representation": "any", "hypers_of": "any", "cutoff": "num", "atom_sigma": "num",
                 "n_train": "int?", "train_rmse": "num", "test_rmse": "num"}


CV_INPUT_FIELDS = {"representation": "any", "target": "any", "spec": "spec", "n_folds": "int", "n_train": "nums",
              "mean_train_rmse": "num", "mean_test_rmse": "num", "seconds": "num"}


LC_INPUT_FIELDS = {"representation": "any", "numb_training_atoms": "int", "av_train_rmse": "num", "av_test_rmse": "num"}


GRID_INPUT_FIELDS = {"representation": "any", "cutoff": "num", "atom_sigma": "num", "noise": "num", "n_train": "int?",
                "n_folds": "int", "seed": "int", "test_rmse": "num"}


def _figure(path: Path, draw, *, overwrite: bool) -> None:
    """Draw a figure into ``path`` atomically (``draw(tmp)`` writes it)."""
    with atomic_output(path, force=overwrite) as tmp:
        draw(tmp)


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def build_report(output: Path, *, cv_files=(), lc_files=(), grid_files=(), table_files=(),
                 paper: Path | None = None, overwrite: bool = True) -> Path:
    """Write a markdown (or, for a .html output, HTML) page with tables and figures of evaluation runs.

    Inputs are read (and refused with one line if malformed) before anything is written; the page and
    each figure are written atomically."""
    output = Path(output)
    check_output(output, force=overwrite)
    figures = figures_folder(output)
    tables = {p: read_input(p, "cross-hyper CSV", read_csv, TABLE_INPUT_FIELDS) for p in table_files}
    summaries = [read_input(p, "cv summary (JSON from cggpr cv)", lambda q: json.loads(Path(q).read_text()),
                             CV_INPUT_FIELDS) for p in cv_files]
    lc_rows = {p: read_input(p, "learning-curve CSV", read_csv, LC_INPUT_FIELDS) for p in lc_files}
    grid_rows = {p: read_input(p, "grid-search CSV", read_csv, GRID_INPUT_FIELDS) for p in grid_files}
    created = not figures.exists()
    figures.mkdir(parents=True, exist_ok=True)
    try:
        return _write_report(output, figures, tables, summaries, lc_rows, grid_rows, paper, overwrite)
    except BaseException:
        if created:  # a report that failed leaves no figure folder of its own behind
            shutil.rmtree(figures, ignore_errors=True)
        raise


def _write_report(output, figures, tables, summaries, lc_rows, grid_rows, paper, overwrite) -> Path:
    table_files, lc_files, grid_files = list(tables), list(lc_rows), list(grid_rows)
    cv_files = summaries
    parts = ["# ase-cggpr evaluation report", ""]

    if table_files:
        parts += ["## Cross-hyper table (Table 1)", ""]
        rows = [r for path in table_files for r in tables[path]]
        parts += [_md_table(["representation", "hypers of", "cutoff (Å)", "atom_sigma (Å)", "N train",
                             "train RMSE (eV)", "test RMSE (eV)"],
                            [[r["representation"], r["hypers_of"], r["cutoff"], r["atom_sigma"], r["n_train"],
                              f"{r['train_rmse']:.4f}", f"{r['test_rmse']:.4f}"] for r in rows]), ""]

    if cv_files:
        parts += ["## Cross-validation", ""]
        parts += [_md_table(["representation", "target", "cutoff", "atom_sigma", "noise", "folds", "N train",
                             "train RMSE (eV)", "test RMSE (eV)", "time (s)"],
                            [[s["representation"], s["target"], s["spec"]["cutoff"], s["spec"]["atom_sigma"],
                              s["spec"]["noise"], s["n_folds"], max(s["n_train"]), f"{s['mean_train_rmse']:.4f}",
                              f"{s['mean_test_rmse']:.4f}", f"{s['seconds']:.1f}"] for s in summaries]), ""]
        parity = {}
        for s in summaries:
            if s.get("predictions_file") and Path(s["predictions_file"]).exists():
                y, p, _ = read_input(s["predictions_file"], "predictions CSV", read_predictions)
                predicted = np.isfinite(p)  # shared-kernel CV predicts a sample of each fold only
                parity[s["representation"]] = (y[predicted], p[predicted])
        if parity:
            _figure(figures / "parity.png", lambda tmp: plots.parity(parity, path=tmp), overwrite=True)
            parts += [f"![parity]({figures.name}/parity.png)", ""]

    if lc_files:
        parts += ["## Learning curves", ""]
        curves: dict[str, list] = {}
        for path in lc_files:
            for r in lc_rows[path]:
                curves.setdefault(str(r["representation"]), []).append(r)
        reference = {}
        if paper is not None:
            reference = {rep: paper_learning_curve(paper, rep) for rep in curves}
        table = []
        for rep, rows in curves.items():
            ref = {int(r["numb_training_atoms"]): r["av_test_rmse"] for r in reference.get(rep, [])}
            for r in rows:
                n = int(r["numb_training_atoms"])
                table.append([rep, n, f"{r['av_train_rmse']:.4f}", f"{r['av_test_rmse']:.4f}",
                              f"{ref[n]:.4f}" if n in ref else ""])
        parts += [_md_table(["representation", "N", "train RMSE (eV)", "test RMSE (eV)", "paper test RMSE (eV)"],
                            table), ""]
        _figure(figures / "learning_curves.png",
                lambda tmp: plots.learning_curves(curves, paper=reference, path=tmp), overwrite=True)
        parts += [f"![learning curves]({figures.name}/learning_curves.png)", ""]

    if grid_files:
        parts += ["## Grid searches", ""]
        grids: dict[tuple, list] = {}
        for path in grid_files:
            for r in grid_rows[path]:  # one heatmap per representation and CV setting
                grids.setdefault(grid_setting(r), []).append(r)
        for setting, rows in grids.items():
            rep, n_train, n_folds, _, protocol = setting
            best = optimum_of(rows, grid_files)
            detail = f"{len(rows)} points, {n_folds} folds, N = {n_train or 'all'}, {protocol}"
            line = (f"**{rep}**: optimum cutoff {best['cutoff']} Å, atom_sigma {best['atom_sigma']} Å, noise "
                    f"{best['noise']} eV, test RMSE {best['test_rmse']:.4f} eV ({detail})")
            if paper is not None:
                ref = optimum(paper_grid(paper, rep))
                line += (f"; paper: {ref['cutoff']} Å, {ref['atom_sigma']} Å, {ref['test_rmse']:.4f} eV")
            same_rep = [s for s in grids if s[0] == rep]
            name = f"grid_{rep}.png" if len(same_rep) == 1 else f"grid_{rep}_{same_rep.index(setting) + 1}.png"
            title = f"{rep} grid search (N = {n_train or 'all'}, {protocol})"
            _figure(figures / name, lambda tmp, rows=rows, title=title: plots.grid_heatmap(rows, title=title, path=tmp),
                    overwrite=True)
            parts += [line, "", f"![{rep} grid]({figures.name}/{name})", ""]

    text = "\n".join(parts)
    if output.suffix.lower() in (".html", ".htm"):
        text = markdown_to_html(text)
    with atomic_output(output, force=overwrite) as tmp:
        tmp.write_text(text)
    return output


def markdown_to_html(text: str) -> str:
    """Minimal markdown -> HTML for the report's own output (headings, tables, images, paragraphs)."""
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>ase-cggpr report</title>",
           "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}</style></head><body>"]
    lines = text.splitlines()
    k = 0
    while k < len(lines):
        line = lines[k]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while k < len(lines) and lines[k].startswith("|"):
                if not lines[k].startswith("|---"):
                    rows.append([html.escape(c.strip()) for c in lines[k].strip("|").split("|")])
                k += 1
            out.append("<table>" + "".join(
                "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{c}</{'th' if i == 0 else 'td'}>" for c in row)
                + "</tr>" for i, row in enumerate(rows)) + "</table>")
            continue
        elif line.startswith("!["):
            match = re.match(r"!\[(.*)\]\((.*)\)", line)
            if match:
                out.append(f"<p><img src='{html.escape(match.group(2))}' alt='{html.escape(match.group(1))}'></p>")
        elif line.strip():
            bold = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(line))
            out.append(f"<p>{bold}</p>")
        k += 1
    out.append("</body></html>")
    return "\n".join(out)
