"""Where does a cross-validated model's error come from? Break it down by rattle order and level.

Reads the labelled atomistic dataset that the CV ran on and one or more ``cggpr cv`` prediction files
(columns ``row, fold, label_eV, prediction_eV``; ``row`` indexes the metal environments of the dataset
in file order: frames in order, metal atoms in atom order within a frame, as
:meth:`ase_cggpr.evaluation.Environments.from_structures` forms them). Writes a markdown report with

* the dataset: frames and environments per rattle order (``d``, ``r-d``, ``d-r``) and level;
* a model-free decomposition of the label variance: the RMSE of the per-net-mean and per-frame-mean
  predictors (oracles that know each net's / frame's mean label), i.e. how much of the variance lies
  between nets, between frames of a net and within a frame;
* per representation: test RMSE, mean error (bias, prediction - label), label std and count by order,
  by level and by (order, level), each group's share of the total squared error, the error split into
  a per-frame-mean part and a within-frame part, and the RMSE on subsets (e.g. without ``d-r``).

    python scripts/error_breakdown.py --data runs/analysis/atomistic.extxyz \
        --predictions cv_AB2.predictions.csv cv_A.predictions.csv -o breakdown.md

Only reads; light on memory (frames are streamed, only per-environment scalars are kept).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np
from ase.io import iread

from ase_cggpr.beads import NON_METALS

ORDERS = ("d", "r-d", "d-r")
LEVELS = ("none", "small", "medium", "large")
SUBSETS = {
    "all": lambda o, lv: np.ones(o.shape, bool),
    "d + r-d (no d-r)": lambda o, lv: o != "d-r",
    "d only": lambda o, lv: o == "d",
    "r-d only": lambda o, lv: o == "r-d",
    "d-r only": lambda o, lv: o == "d-r",
    "no large": lambda o, lv: lv != "large",
    "d + r-d, no large": lambda o, lv: (o != "d-r") & (lv != "large"),
}


# -- input --------------------------------------------------------------------------------------------------
def load_environments(path: Path) -> dict[str, np.ndarray]:
    """Per-environment arrays: frame index, net, order, level, batch, raw e_local and reference energy."""
    cols: dict[str, list] = {k: [] for k in ("frame", "net", "order", "level", "batch", "e_local", "reference")}
    n_frames = 0
    for k, atoms in enumerate(iread(str(path), index=":")):
        symbols = np.array(atoms.get_chemical_symbols())
        metals = np.flatnonzero([s not in NON_METALS for s in symbols])
        if "e_local" not in atoms.arrays:
            raise SystemExit(f"{path}: frame {k} has no per-atom e_local array")
        e_local = np.asarray(atoms.arrays["e_local"], dtype=float)[metals]
        info = atoms.info
        n = len(metals)
        cols["frame"].extend([k] * n)
        cols["net"].extend([str(info.get("structure_id", info.get("net", f"#{k}")))] * n)
        cols["order"].extend([str(info.get("order", "?"))] * n)
        cols["level"].extend([str(info.get("rattle", "?"))] * n)
        cols["batch"].extend([int(info.get("batch", -1))] * n)
        cols["e_local"].extend(e_local.tolist())
        cols["reference"].extend([float(info.get("reference_energy", 0.0))] * n)
        n_frames = k + 1
    env = {k: np.asarray(v) for k, v in cols.items()}
    env["n_frames"] = np.asarray(n_frames)
    return env


def load_predictions(path: Path, n_env: int) -> dict[str, np.ndarray]:
    """Label and prediction per environment row (NaN where a row is absent or not predicted)."""
    label = np.full(n_env, np.nan)
    pred = np.full(n_env, np.nan)
    fold = np.full(n_env, -1)
    n_rows = 0
    with open(path, newline="") as fh:
        for rec in csv.DictReader(fh):
            r = int(rec["row"])
            if not 0 <= r < n_env:
                raise SystemExit(f"{path}: row {r} outside the dataset's {n_env} environments")
            label[r] = float(rec["label_eV"])
            pred[r] = float(rec["prediction_eV"]) if rec["prediction_eV"] not in ("", "nan", "NaN") else np.nan
            fold[r] = int(rec["fold"])
            n_rows += 1
    return dict(label=label, pred=pred, fold=fold, n_rows=np.asarray(n_rows))


def representation_name(path: Path) -> str:
    """``cv_AB2.predictions.csv`` -> ``AB2``."""
    stem = path.name.split(".")[0]
    return stem[3:] if stem.startswith("cv_") else stem


# -- statistics ------------------------------------------------------------------------------------------
def group_means(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Each element replaced by the mean of ``values`` over its key."""
    _, inv = np.unique(keys, return_inverse=True)
    sums = np.bincount(inv, weights=values)
    counts = np.bincount(inv)
    return (sums / counts)[inv]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x))) if x.size else math.nan


def fmt(x: float, digits: int = 3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def groupings(env: dict[str, np.ndarray]) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """(title, [(group label, mask), ...]) for by-order, by-level and by-(order, level)."""
    order, level = env["order"], env["level"]
    orders = [o for o in ORDERS if (order == o).any()] + sorted(set(order) - set(ORDERS))
    levels = [lv for lv in LEVELS if (level == lv).any()] + sorted(set(level) - set(LEVELS))
    by_order = [(o, order == o) for o in orders]
    by_level = [(lv, level == lv) for lv in levels]
    by_both = [(f"{o} / {lv}", (order == o) & (level == lv)) for o in orders for lv in levels
               if ((order == o) & (level == lv)).any()]
    return [("order", by_order), ("level", by_level), ("(order, level)", by_both)]


# -- report sections -------------------------------------------------------------------------------------
def dataset_section(env: dict[str, np.ndarray], y: np.ndarray, kind: str) -> str:
    """Model-free label statistics and variance decomposition (``y``: labels as the models saw them)."""
    frame, net = env["frame"], env["net"]
    out = ["## Labels (model-free)", "",
           f"{int(env['n_frames'])} frames, {len(y)} Zn environments, {len(np.unique(net))} nets. "
           f"Labels = {kind} (eV/Zn), as in the CV.", "",
           "Oracle predictors, in-sample, computed within each group: *net-mean* predicts every environment "
           "by the mean label of its net (among the group's frames), *frame-mean* by the mean label of its "
           "frame. Their RMSEs are the within-net and within-frame RMS deviations: a model that sees only "
           "which net (or which frame) an environment belongs to cannot do better. "
           "% var within frame = within-frame MS / total variance; the rest lies between frames.", ""]
    header = ["group", "n env", "n frames", "mean", "std", "RMSE net-mean", "RMSE frame-mean",
              "% var between nets", "% var within frame"]
    for title, groups in [("all", [("all", np.ones(len(y), bool))]), *groupings(env)]:
        rows = []
        for name, m in groups:
            yy = y[m]
            var = float(np.var(yy))
            within_net = yy - group_means(yy, net[m])
            within_frame = yy - group_means(yy, frame[m])
            rows.append([name, str(int(m.sum())), str(len(np.unique(frame[m]))), fmt(yy.mean()), fmt(yy.std()),
                         fmt(rms(within_net)), fmt(rms(within_frame)),
                         fmt(100 * (1 - np.mean(within_net ** 2) / var), 1) if var > 0 else "—",
                         fmt(100 * np.mean(within_frame ** 2) / var, 1) if var > 0 else "—"])
        out += [f"### by {title}" if title != "all" else "### all environments", "", table(header, rows), ""]
    return "\n".join(out)


def error_rows(groups, y, p, err, frame, net, total_sse):
    rows = []
    for name, m in groups:
        mm = m & np.isfinite(p)
        if not mm.any():
            continue
        e = err[mm]
        frame_err = group_means(e, frame[mm])          # per-frame mean error, broadcast
        within_err = e - frame_err
        yd = y[mm] - group_means(y[mm], frame[mm])     # within-frame label deviation
        pd = p[mm] - group_means(p[mm], frame[mm])     # within-frame prediction deviation
        corr = (float(np.corrcoef(yd, pd)[0, 1]) if yd.std() > 0 and pd.std() > 0 else math.nan)
        rows.append([name, str(int(mm.sum())), fmt(rms(e)), fmt(e.mean()), fmt(y[mm].std()),
                     fmt(rms(y[mm] - group_means(y[mm], net[mm]))),
                     fmt(100 * float(np.sum(e * e)) / total_sse, 1),
                     fmt(rms(frame_err)), fmt(rms(within_err)), fmt(corr, 2)])
    return rows


def model_section(name: str, env: dict[str, np.ndarray], pr: dict[str, np.ndarray]) -> str:
    y, p = pr["label"], pr["pred"]
    frame, net, order, level = env["frame"], env["net"], env["order"], env["level"]
    ok = np.isfinite(p) & np.isfinite(y)
    err = p - y
    total_sse = float(np.sum(err[ok] ** 2))
    folds = sorted(set(pr["fold"][ok].tolist()))
    fold_rmse = ", ".join(f"{rms(err[ok & (pr['fold'] == f)]):.4f}" for f in folds)
    out = [f"## {name}", "",
           f"{int(ok.sum())} predicted environments of {len(y)}; test RMSE {rms(err[ok]):.4f} eV "
           f"(mean of per-fold RMSEs {np.mean([rms(err[ok & (pr['fold'] == f)]) for f in folds]):.4f}; "
           f"folds: {fold_rmse}), bias {err[ok].mean():+.4f} eV, label std {y[ok].std():.4f} eV.", "",
           "Columns: RMSE and bias (mean of prediction − label) in eV; *label std* within the group; "
           "*net-mean RMSE* = RMSE of the in-sample per-net-mean oracle in the group; *% SSE* = the group's "
           "share of the total squared error; the error split into its per-frame mean (*frame-mean err RMS*) "
           "and the rest (*within-frame err RMS*; the two add in quadrature to the RMSE); *r within frame* = "
           "correlation of prediction and label deviations from their frame means (does the model rank the "
           "Zn of one frame?).", ""]
    header = ["group", "n", "RMSE", "bias", "label std", "net-mean RMSE", "% SSE", "frame-mean err RMS",
              "within-frame err RMS", "r within frame"]
    out += ["### all", "", table(header, error_rows([("all", ok)], y, p, err, frame, net, total_sse)), ""]
    for title, groups in groupings(env):
        out += [f"### by {title}", "", table(header, error_rows(groups, y, p, err, frame, net, total_sse)), ""]
    rows = []
    for sname, rule in SUBSETS.items():
        m = rule(order, level) & ok
        if m.any():
            rows.append([sname, str(int(m.sum())), fmt(rms(err[m])), fmt(err[m].mean()), fmt(y[m].std()),
                         fmt(100 * float(np.sum(err[m] ** 2)) / total_sse, 1)])
    out += ["### subsets (same CV predictions, models trained on all orders)", "",
            table(["subset", "n", "RMSE", "bias", "label std", "% SSE"], rows), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="labelled atomistic extxyz the CV ran on")
    ap.add_argument("--predictions", required=True, nargs="+", type=Path,
                    help="cggpr cv prediction CSVs (row, fold, label_eV, prediction_eV)")
    ap.add_argument("--names", nargs="+", help="representation names (default: from the CSV file names)")
    ap.add_argument("-o", "--output", required=True, type=Path, help="markdown report to write")
    args = ap.parse_args(argv)
    names = args.names or [representation_name(p) for p in args.predictions]
    if len(names) != len(args.predictions):
        ap.error("--names needs one name per predictions file")

    env = load_environments(args.data)
    n_env = len(env["e_local"])
    y_data, y_kind = None, ""
    checks, sections = [], []
    for name, path in zip(names, args.predictions, strict=True):
        pr = load_predictions(path, n_env)
        n_rows = int(pr["n_rows"])
        if n_rows != n_env:
            raise SystemExit(f"{path}: {n_rows} rows but {args.data} has {n_env} environments")
        # the CV labels are e_local, with or without the reference energy subtracted (cggpr cv --reference)
        candidates = {"e_local": env["e_local"], "e_local − reference_energy": env["e_local"] - env["reference"]}
        diffs = {k: float(np.nanmax(np.abs(pr["label"] - v))) for k, v in candidates.items()}
        kind = min(diffs, key=diffs.get)
        if not diffs[kind] < 1e-6:
            raise SystemExit(f"{path}: labels differ from the dataset's e_local by up to {diffs['e_local']:.3g} eV "
                             f"(from e_local - reference_energy by {diffs['e_local − reference_energy']:.3g} eV): "
                             f"rows do not line up with {args.data}")
        if y_data is None:
            y_data, y_kind = candidates[kind], kind
        checks.append(f"* {name}: `{path}`: {n_rows} rows = {n_env} environments; labels match "
                      f"{kind} (max |diff| {diffs[kind]:.1e} eV); "
                      f"{int(np.isnan(pr['pred']).sum())} rows without prediction.")
        sections.append(model_section(name, env, pr))

    text = "\n".join([
        "# Error breakdown by rattle order and level", "",
        f"Data: `{args.data}`.", "", *checks, "",
        dataset_section(env, y_data, y_kind), *sections])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
