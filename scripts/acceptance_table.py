"""Issue 31's acceptance table, from the shipped models' cards alone (works on a fresh clone, in seconds):

    python scripts/acceptance_table.py [--models AB2 A AB2-fast atomistic] [--json]

Per shipped model x frame kind:

* the model's held-out validation (``training.held_out_validation``: every net of 50 framework types it never saw,
  ``scripts/shipped_models.py train``): RMSE and mean error per Zn (meV), and for relaxed frameworks the Spearman
  rank correlation of the frameworks' energy per Zn;
* the calibration check (``calibration.held_out_table``, ``scripts/calibrate_shipped.py fit``: nets of at most 80 Zn
  of 41 of those types, each type's std from a calibration fitted without it): RMSE, mean error, Spearman over the
  frames' energy per Zn, the fractions within 1 and 2 calibrated std, and how many of the cells over the 4 draws of
  the folds (``other_splits``) are in the issue's target (68 +- 7% and 95 +- 4%; the d-r kind is not counted for the
  coarse-grained models: they flag it instead);

then each model's trust threshold, training cost (``training.cost``; "unknown" when it was not recorded) and, for the
coarse-grained models, the applicability rule and its flagging numbers on atom-rattled frames of framework types the
threshold was not chosen on (per Zn and per structure, every draw of the folds). Energies in meV per Zn.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ase_cggpr.errors import CGGPRError
from ase_cggpr.model import CGGPRModel
from ase_cggpr.pretrained import cost_line

KINDS = ("relaxed", "none", "r-d", "d-r")
#: The issue's targets for the fractions within 1 and 2 std.
TARGET_1, TARGET_2, TOLERANCE_1, TOLERANCE_2 = 0.68, 0.95, 0.07, 0.04


def in_target(within_1: float | None, within_2: float | None) -> bool:
    """Both fractions within the issue's target (68 +- 7%, 95 +- 4%)."""
    return (within_1 is not None and within_2 is not None and abs(within_1 - TARGET_1) <= TOLERANCE_1
            and abs(within_2 - TARGET_2) <= TOLERANCE_2)


def model_rows(name: str) -> dict:
    """Everything the table shows for one shipped model (numbers as stored: eV and fractions)."""
    model = CGGPRModel.load(name)
    training, calibration = model.training_, model.calibration_ or {}
    validation = training.get("held_out_validation", {}).get("metrics", {})
    table = calibration.get("held_out_table") or {}
    coarse = model.spec.representation != "atomistic"
    counted = [k for k in KINDS if k in table and not (coarse and k == "d-r")]
    draws = [{k: table[k]["within_1sigma"] and [table[k]["within_1sigma"], table[k]["within_2sigma"]]
              for k in counted}]
    draws += [split.get("within", {}) for split in calibration.get("other_splits") or []]
    cells = [in_target(*draw[k]) for draw in draws for k in counted if draw.get(k)]
    rule = calibration.get("applicability") or {}
    flagging = []
    if rule:
        flagging.append(rule.get("checked_on", {}))
        flagging += [split.get("applicability", {}).get("checked_on", {})
                     for split in calibration.get("other_splits") or []]
    return {"name": name, "representation": model.spec.representation, "validation": validation, "table": table,
            "cells_in_target": sum(cells), "cells": len(cells), "threshold": calibration.get("threshold"),
            "cost": training.get("cost"), "rule": {k: rule.get(k) for k in ("measure", "threshold", "std_margin")}
            if rule else None, "flagging": flagging, "use": training.get("use")}


def _meV(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{1000 * value:+.0f}" if sign else f"{1000 * value:.0f}"


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_rows(rows: list[dict]) -> str:
    lines = ["held-out errors and calibration per shipped model x frame kind (meV per Zn; validation: every net of "
             "the 50 held-out framework types; calibration check: 41 of those types, <= 80 Zn, each type's std "
             "from a calibration fitted without it; * = within 1/2 std in the target 68+-7% / 95+-4%)",
             f"{'model':9s} {'kind':8s} | {'valid. RMSE':>11s} {'mean':>6s} {'Spearman':>8s} | {'check RMSE':>10s} "
             f"{'mean':>6s} {'Spearman':>8s} {'in 1 std':>8s} {'in 2 std':>8s}"]
    for row in rows:
        for kind in KINDS:
            v, t = row["validation"].get(kind, {}), row["table"].get(kind, {})
            if not v and not t:
                continue
            mark = "*" if in_target(t.get("within_1sigma"), t.get("within_2sigma")) else ""
            lines.append(f"{row['name']:9s} {kind:8s} | {_meV(v.get('rmse')):>11s} {_meV(v.get('bias'), True):>6s} "
                         f"{_number(v.get('spearman'), '.3f'):>8s} | {_meV(t.get('rmse')):>10s} "
                         f"{_meV(t.get('bias'), True):>6s} {_number(t.get('spearman'), '.3f'):>8s} "
                         f"{_number(t.get('within_1sigma'), '.1%'):>8s} {_number(t.get('within_2sigma'), '.1%'):>8s}"
                         f"{mark}")
    lines.append("")
    for row in rows:
        lines.append(f"{row['name']}: calibration cells in target {row['cells_in_target']} of {row['cells']} (kinds x "
                     f"4 draws of the folds{'; d-r not counted: flagged' if row['rule'] else ''}); trust threshold "
                     f"{_meV(row['threshold'])} meV calibrated std")
        lines.append(f"  training cost: {cost_line(row['cost'])}")
        if row["rule"]:
            margin = row["rule"].get("std_margin") or 0
            lines.append(f"  applicability: not trusted when a Zn's unseen linker strain energy > "
                         f"{_meV(row['rule']['threshold'])} meV" + (f" + {margin:g} x its calibrated std" if margin
                                                                       else ""))
            for what in ("per_Zn", "per_frame"):
                shares = [f.get(what, {}) for f in row["flagging"] if f.get(what)]
                if not shares:
                    continue
                big = ", ".join(_number(s.get("flagged_error_above_100meV"), ".0%") for s in shares)
                small = ", ".join(_number(s.get("flagged_error_below_30meV"), ".0%") for s in shares)
                lines.append(f"    d-r {what.replace('_', ' ')}: flagged {big} of "
                             f"{shares[0].get('n_error_above_100meV')} with |error| > 100 meV (target >= 90%); "
                             f"{small} of "
                             f"{shares[0].get('n_error_below_30meV')} with |error| < 30 meV (target <= 10%)")
        if row["use"]:
            lines.append(f"  use: {row['use']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["atomistic", "AB2", "AB2-fast", "A"])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        rows = [model_rows(name) for name in args.models]
    except (CGGPRError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=1) if args.json else format_rows(rows))
    if not args.json:
        print(f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
