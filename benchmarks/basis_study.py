"""SOAP basis size against accuracy and cost for the AB2 representation (issue 19 item 1: "a descriptor basis no
larger than accuracy needs").

    OPENBLAS_NUM_THREADS=1 python benchmarks/basis_study.py [--n-max 4 6 8 12 16] [--l-max 2 4 6 8]
        [--seeds 3] [--inducing 2000] [-o basis.json]

Accuracy: grouped 5-fold cross-validation by net (:func:`ase_cggpr.evaluation.cv.cross_validate`, exact GPR, the
paper's kernel and noise; AB2 at the shipped cutoff 9 Å and atom_sigma 0.2 Å) on the built-in coarse-grained data
(``ase_cggpr/data/default_cg.extxyz.gz``: 32 nets) without its ``d-r`` frames (their energy lies in linker
distortions the beads cannot see; the shipped coarse-grained models never train on them), repeated for
``--seeds`` fold assignments; the held-out RMSE (eV per Zn) is the mean over seeds, and ``dRMSE`` the mean paired
difference to the largest basis of the grid (same folds), with its standard error over the seeds x folds.

Cost, per setting, on the bead structure of the 272-atom cag cell (16 A centres, 32 B beads): featomic values,
values + position + strain gradients, the force and strain contractions, and the kernel of a sparse model of
``--inducing`` vectors of this length (random normalised vectors: the cost does not depend on their values):
mean only, and mean + gradient, each the best of ``--repeat`` (ms). ``e est`` / ``e+f+s est`` add the measured
bead mapping of that cell (``--mapping-ms``, the calculator's per-step mapping; default measured here).
``--cost-only`` skips the cross-validation.

Measured 2026-12-02 (2 shared cores, load 3-6; 2,277 environments of 32 nets; 3 seeds x 5 folds; 3 min 22 s,
0.8 GB peak), held-out RMSE against n_max 16 / l_max 8 (81.9 meV per Zn), paired difference +- s.e.:

    n_max  l_max:      2              4              6              8
    8              +64.7 +- 8.5   +64.1 +- 8.4   +63.7 +- 8.6   +63.9 +- 8.8
    10             +43.0 +- 3.0   +38.4 +- 3.5   +38.6 +- 3.0   +38.3 +- 2.9
    12              +8.1 +- 2.7    +4.5 +- 2.7    -0.5 +- 2.5    -2.2 +- 2.4
    16              +5.8 +- 2.7    -0.1 +- 2.0    -1.5 +- 1.0     0

At atom_sigma 0.2 Å GAP's equispaced Gaussians need n_max >= 12 (spacing 0.86 Å; at n_max 8, 1.3 Å, the basis
misses distances). The paper's learning curves (``../shared/data/paper/new_learning_curve``, AB2) at N = 32,000
put l_max 6 at +3.1 meV and l_max 4 at +11.4 meV against l_max 8 (N = 8,000: +1.4 and +12.1), so l_max 4 is ruled
out at scale although this small set cannot tell. Cost (``--cost-only --repeat 15``, M = 2,000; ms): n12 l6:
values 3.8, grad+strain 23.4, kernel 4.9, kernel+grad 13.5, contractions 2.1 (energy ~10, e+f+s ~40 with the
calculator's mapping); n16 l8 in the same run: 7.0, 41.5, 14.6, 35.5, 4.7 (energy ~23, e+f+s ~83).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_calculator import best_of  # noqa: E402 - the benchmarks folder is on the path from here


def dataset():
    """(bead maps, labels, nets) of the built-in cg data without d-r frames."""
    from ase.io import read

    from ase_cggpr.beads import coarse_grain

    frames = [a for a in read(ROOT / "ase_cggpr" / "data" / "default_cg.extxyz.gz", ":") if a.info["order"] != "d-r"]
    maps = [coarse_grain(a, "AB2", name=f"{a.info['net']}/{k}") for k, a in enumerate(frames)]
    labels = [np.asarray(a.arrays["e_local"][np.isfinite(a.arrays["e_local"])], dtype=float) for a in frames]
    nets = np.concatenate([[a.info["net"]] * len(y) for a, y in zip(frames, labels, strict=True)])
    return maps, np.concatenate(labels), nets


def cost(spec, bead_structure, *, inducing: int, repeat: int) -> dict[str, float]:
    from ase_cggpr.descriptors import backend_for
    from ase_cggpr.kernels import PolynomialKernel

    backend = backend_for(spec)
    out = {}
    out["values"] = best_of(lambda: backend.vectors([bead_structure]), repeat)
    out["grad+strain"] = best_of(lambda: backend.gradients(bead_structure, strain=True), repeat)
    g = backend.gradients(bead_structure, strain=True)
    rng = np.random.default_rng(0)
    Z = rng.random((inducing, g.vectors.shape[1]))
    Z /= np.linalg.norm(Z, axis=1)[:, None]
    w = rng.normal(size=inducing)
    kernel = PolynomialKernel(spec.zeta, spec.offset)
    out["kernel"] = best_of(lambda: kernel.weighted_sum(g.vectors, Z, w), repeat)
    out["kernel+grad"] = best_of(lambda: kernel.weighted_sum(g.vectors, Z, w, gradient=True), repeat)
    dE_dx = kernel.weighted_sum(g.vectors, Z, w, gradient=True)[1]

    def contractions():
        g._last = None
        g.contract(dE_dx)
        g.contract_strain(dE_dx)

    out["contractions"] = best_of(contractions, repeat)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-max", type=int, nargs="+", default=[4, 6, 8, 12, 16])
    parser.add_argument("--l-max", type=int, nargs="+", default=[2, 4, 6, 8])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--inducing", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mapping-ms", type=float, default=None)
    parser.add_argument("--cost-only", action="store_true", help="skip the cross-validation (timings only)")
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args()

    from bench_calculator import cell

    from ase_cggpr import CGGPRCalculator, CGGPRModel
    from ase_cggpr.beads import coarse_grain
    from ase_cggpr.descriptors import soap_vectors
    from ase_cggpr.evaluation.cv import cross_validate
    from ase_cggpr.evaluation.folds import group_folds
    from ase_cggpr.spec import ModelSpec

    atoms = cell()
    bead_structure = coarse_grain(atoms, "AB2").structure
    mapping = args.mapping_ms
    if mapping is None:  # the calculator's per-step cost outside the model: checks, bond list, mapping
        calc = CGGPRCalculator(CGGPRModel.load("AB2"), return_std=False)
        rng = np.random.default_rng(0)
        calc.connectivity(atoms)
        times = []
        for _ in range(args.repeat):
            a = atoms.copy()
            a.positions += rng.normal(scale=0.002, size=a.positions.shape)
            t = time.perf_counter()
            calc.model.bead_map(a, connectivity=calc.connectivity(a))
            times.append(time.perf_counter() - t)
        mapping = 1000 * min(times)
    maps, y, nets = dataset()
    print(f"{len(maps)} frames, {len(y)} environments, {len(set(nets))} nets; bead mapping {mapping:.1f} ms",
          flush=True)
    folds = [group_folds(nets, 5, seed=s) for s in range(args.seeds)]
    settings = [(n, ell) for n in sorted(args.n_max) for ell in sorted(args.l_max)]
    rows, errors = [], {}
    for n_max, l_max in settings:
        t0 = time.perf_counter()
        spec = ModelSpec(representation="AB2", n_max=n_max, l_max=l_max, species=(14, 8), centre_species=(14,))
        X = soap_vectors(maps[:1], spec) if args.cost_only else soap_vectors(maps, spec)
        fold_errors = []
        rmses = []
        for f in [] if args.cost_only else folds:
            result = cross_validate(X, y, nets, spec, folds=f)
            err = result.predictions - y
            fold_errors.append(np.array([np.sqrt(np.mean(err[f == k] ** 2)) for k in range(f.max() + 1)]))
            rmses.append(float(np.sqrt(np.mean(err**2))))
        errors[(n_max, l_max)] = np.concatenate(fold_errors) if fold_errors else np.zeros(1)
        row = {"n_max": n_max, "l_max": l_max, "D": int(X.shape[1]),
               "rmse": float(np.mean(rmses)) if rmses else float("nan"),
               "cv_seconds": round(time.perf_counter() - t0, 1)}
        row.update(cost(spec, bead_structure, inducing=args.inducing, repeat=args.repeat))
        row["e_est"] = mapping + row["values"] + row["kernel"]
        row["efs_est"] = mapping + row["grad+strain"] + row["kernel+grad"] + row["contractions"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    largest = settings[-1]
    for row in rows:
        diff = errors[(row["n_max"], row["l_max"])] - errors[largest]
        row["drmse_mean"] = float(diff.mean())
        row["drmse_se"] = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    print(f"\n| n_max | l_max | D | held-out RMSE (meV/Zn) | dRMSE vs n_max {largest[0]} l_max {largest[1]} "
          "(meV, +- s.e.) | values | grad+strain | kernel | kernel+grad | contractions | e est | e+f+s est (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n_max']} | {r['l_max']} | {r['D']} | {1000 * r['rmse']:.1f} | {1000 * r['drmse_mean']:+.1f} "
              f"+- {1000 * r['drmse_se']:.1f} | {r['values']:.1f} | {r['grad+strain']:.1f} | {r['kernel']:.1f} | "
              f"{r['kernel+grad']:.1f} | {r['contractions']:.1f} | {r['e_est']:.1f} | {r['efs_est']:.1f} |")
    if args.output is not None:
        args.output.write_text(json.dumps({"mapping_ms": mapping, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
