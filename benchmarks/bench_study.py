"""The paper's main study, timed: atomistic, AB2 and A-only, 5-fold grouped CV at N training environments.

Reads the data once, then per representation (each at its paper-optimal cutoff and atom_sigma):
SOAP of the environments the CV samples (``--describe sampled``, the default: N * k / (k - 1) of them) or of
every environment (``--describe all``), featomic, written to a fresh cache folder, memory-mapped; then a
shared-kernel 5-fold CV (:func:`ase_cggpr.evaluation.shared_kernel_cv`: one kernel of the per-fold
samples, float32 Cholesky refined to float64 per fold). Prints a table with the phases' wall times
and peak memory, writes ``OUT/cv_<rep>.json`` and ``OUT/cv_<rep>.predictions.csv``.

    OPENBLAS_NUM_THREADS=2 python benchmarks/bench_study.py DATA.extxyz -o runs/study3 --n-train 32000

Small check (seconds): ``--n-train 400 --n-max 6 --l-max 4`` on ``ase_cggpr/data/default_atomistic.extxyz.gz``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--n-train", type=int, default=32000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--representations", default="atomistic,AB2,A")
    parser.add_argument("--precision", default="mixed", choices=["mixed", "float64"])
    parser.add_argument("--n-max", type=int, default=16)
    parser.add_argument("--l-max", type=int, default=8)
    parser.add_argument("--keep-cache", action="store_true", help="keep the SOAP files (default: delete)")
    parser.add_argument("--describe", default="sampled", choices=["sampled", "all"],
                        help="SOAP of the sampled environments only, or of all of them")
    args = parser.parse_args()

    from ase_cggpr.evaluation import SoapCache, read_environments, sampled_vectors, shared_kernel_cv
    from ase_cggpr.spec import ModelSpec

    args.output.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter
    t_all = clock()
    env = read_environments(args.data)
    t_read = clock() - t_all
    print(f"# {len(env)} environments, {len(env.structures)} structures, {env.n_groups} groups; "
          f"read + topology {t_read:.1f} s", flush=True)
    cache_dir = args.output / "soap-cache"
    rows = []
    for rep in args.representations.split(","):
        spec = ModelSpec(representation=rep, n_max=args.n_max, l_max=args.l_max)
        t0 = clock()
        cache = SoapCache(cache_dir)
        if args.describe == "all":
            X = cache.vectors(env, spec)
            described = X.shape[0]
        else:
            X = sampled_vectors(env, spec, cache, args.n_train, n_folds=args.folds, seed=args.seed)
            described = len(X.rows)
        t_soap = clock() - t0
        print(f"{rep}: SOAP of {described} of {len(env)} environments (dimension {X.shape[1]}) in {t_soap:.1f} s",
              flush=True)
        t1 = clock()
        result = shared_kernel_cv(X, env.labels, env.groups, spec, sizes=[args.n_train], n_folds=args.folds,
                                  seed=args.seed, precision=args.precision,
                                  log=lambda m: print("  " + m, flush=True))[0]
        t_cv = clock() - t1
        result.save(args.output / f"cv_{rep}.json", predictions=args.output / f"cv_{rep}.predictions.csv")
        rows.append({"representation": rep, "cutoff": spec.cutoff, "atom_sigma": spec.atom_sigma,
                     "dimension": int(X.shape[1]), "n_train": max(result.n_train),
                     "n_test_per_fold": int(sum(result.predictions == result.predictions) // args.folds),
                     "train_rmse": result.mean_train_rmse, "test_rmse": result.mean_test_rmse,
                     "soap_s": round(t_soap, 1), "cv_s": round(t_cv, 1), "peak_rss_gb": round(peak_rss_gb(), 1)})
        del X
        if not args.keep_cache:
            shutil.rmtree(cache_dir, ignore_errors=True)
    total = clock() - t_all
    header = ("representation", "cutoff", "atom_sigma", "dimension", "n_train", "n_test_per_fold", "train_rmse",
              "test_rmse", "soap_s", "cv_s", "peak_rss_gb")
    print("  ".join(f"{h:>15}" for h in header))
    for r in rows:
        print("  ".join(f"{r[h]:>15.4f}" if isinstance(r[h], float) and h.endswith("rmse") else f"{r[h]!s:>15}"
                        for h in header))
    print(f"# total wall time {total:.1f} s ({total / 60:.1f} min) including reading ({t_read:.1f} s)")
    (args.output / "study.json").write_text(json.dumps({"rows": rows, "total_seconds": total,
                                                        "read_seconds": t_read, "args": {
                                                            k: str(v) for k, v in vars(args).items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
