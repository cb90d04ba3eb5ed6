"""A shipped model's errors on its held-out relaxed frameworks, on all of them and on subsets (issue 31 item 1).

Predicts the MOF-FF-relaxed frames of the nets a shipped model's card lists as held out
(``training.held_out_validation.nets``) from a build folder (``relaxed_cg.extxyz`` or ``relaxed_atomistic.extxyz``)
and prints the RMSE per Zn (meV), mean error (meV) and Spearman over frameworks: on all of them, without the nets of
``--without``, without those ``flagged`` in an ``atomistic_recipes.py outliers`` JSON (``--flagged``), and on the
frameworks the model itself trusts (:func:`ase_cggpr.applicability.trust` with the model's stored threshold, as
``cggpr screen``; the nets it does not trust are listed with their error):

    python benchmarks/held_out_relaxed_by_model.py --build BUILD --model AB2 \\
        --without other_AB2:3_ICSD92583 other_AB2:2_ICSD291208 --flagged docs/results/atomistic_outliers_pilot.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from ase.io import iread
from scipy.stats import spearmanr

from ase_cggpr import recipes
from ase_cggpr.applicability import trust
from ase_cggpr.model import CGGPRModel
from ase_cggpr.uncertainty import default_threshold


def table(errors: dict[str, np.ndarray], labels: dict[str, float], keep: list[str]) -> dict:
    """RMSE and mean error per Zn (meV) over the environments of ``keep``, Spearman over their energy per Zn."""
    e = np.concatenate([errors[n] for n in keep])
    pred = [errors[n].mean() + labels[n] for n in keep]
    true = [labels[n] for n in keep]
    return {"frameworks": len(keep), "rmse_meV": round(1000 * float(np.sqrt(np.mean(e**2))), 1),
            "bias_meV": round(1000 * float(e.mean()), 1), "spearman": round(float(spearmanr(pred, true).statistic), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", type=Path, required=True)
    parser.add_argument("--model", default="AB2", help="a shipped model's name or a model file")
    parser.add_argument("--without", nargs="*", default=[], help="nets left out of the second line")
    parser.add_argument("--flagged", type=Path, help="an atomistic_recipes.py outliers JSON: its flagged nets")
    args = parser.parse_args(argv)
    c0 = time.process_time()
    model = CGGPRModel.load(args.model)
    nets = set(model.training_["held_out_validation"]["nets"])
    which = "atomistic" if model.spec.representation == "atomistic" else "cg"
    frames = [a for a in iread(args.build / f"relaxed_{which}.extxyz", index=":") if a.info["net"] in nets]
    maps = [model.bead_map(a) for a in frames]
    means, stds = model.predict_maps(maps, return_std=True)
    threshold, _ = default_threshold(model)
    untrusted = {str(a.info["net"]): trust(model, a, bm.connectivity, std, threshold)[1]
                 for a, bm, std in zip(frames, maps, stds, strict=True)}
    untrusted = {net: why for net, why in untrusted.items() if why}
    errors = {str(a.info["net"]): m + model.reference_energy - recipes.site_labels(a)
              for a, m in zip(frames, means, strict=True)}
    labels = {str(a.info["net"]): float(recipes.site_labels(a).mean()) for a in frames}
    everything = sorted(errors)
    rows = {"all": table(errors, labels, everything)}
    if args.without:
        rows["without " + ", ".join(args.without)] = table(errors, labels,
                                                            [n for n in everything if n not in args.without])
    if args.flagged:
        flagged = set(json.loads(args.flagged.read_text())["flagged"])
        rows["without the flagged"] = table(errors, labels, [n for n in everything if n not in flagged])
        rows["flagged, error per framework (meV)"] = {n: round(1000 * float(errors[n].mean())) for n in sorted(flagged)
                                                       if n in errors}
    rows["trusted by the model"] = table(errors, labels, [n for n in everything if n not in untrusted])
    rows["not trusted, error per framework (meV)"] = {n: round(1000 * float(errors[n].mean())) for n in untrusted}
    print(json.dumps({"model": args.model, "threshold_eV": threshold, "rows": rows,
                      "cpu_s": round(time.process_time() - c0, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
