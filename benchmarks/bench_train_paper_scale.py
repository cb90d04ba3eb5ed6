"""Benchmark (not a test): exact GPR training at the paper's scale, N = 32,000 AB2 environments, float64.

Run with two BLAS threads (the setting in which LAPACK's own dpotrf used to segfault at N >= 16,000-24,000)::

    OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 python benchmarks/bench_train_paper_scale.py \\
        --data runs/full/cg.extxyz -o runs/bench32k [--n-envs 32000] [--precision mixed] \
        [--compare-exact]

``--data`` is the coarse-grained file of the full build (``scripts/build_full_dataset.py -o DIR`` writes
``DIR/cg.extxyz``; see ``datasets/full-build/README.md``). The script

1. draws whole frames at random (seeded) until they hold at least ``--n-envs`` Zn environments and writes them
   to ``OUT/ab2_<n>.extxyz`` (the "32,000-environment AB2 set"); 50 other frames are kept for prediction;
2. trains on it exactly as ``cggpr train OUT/ab2_<n>.extxyz -o OUT/model.npz --label-key e_local
   --n-train <n>`` does (:func:`ase_cggpr.training.train_model`), timing the phases;
3. saves the model, loads it back, and times the first ``CGGPRCalculator`` energy (with std) on a held-out frame
   and a batch prediction with std of the 50 held-out frames;
4. with ``--compare-exact``: refits the same N with the exact variance (keeping the N x N factor) and compares the
   model's Nyström std with the exact std on the held-out environments.

Prints wall times, peak RSS (``resource.getrusage``) and the machine's load average, and writes
``OUT/bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="coarse-grained extxyz of the full build")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--n-envs", type=int, default=32000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=["float64", "mixed"], default="float64")
    parser.add_argument("--compare-exact", action="store_true")
    args = parser.parse_args()

    from ase.io import read, write

    from ase_cggpr import CGGPRCalculator, CGGPRModel
    from ase_cggpr.regression import ExactGPR
    from ase_cggpr.training import train_model

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"threads": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
                    "load_average_start": os.getloadavg()}
    try:
        from threadpoolctl import threadpool_info

        result["blas"] = [(i["filepath"].rsplit("/", 1)[-1], i["version"], i["num_threads"])
                          for i in threadpool_info()]
    except ImportError:
        pass
    clock = time.perf_counter
    t = clock()
    frames = read(args.data, ":")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(frames))
    chosen, n_env = [], 0
    for k in order:
        if n_env >= args.n_envs:
            break
        chosen.append(int(k))
        n_env += int((frames[k].symbols == "Si").sum())
    rest = [int(k) for k in order[len(chosen):len(chosen) + 50]]
    subset = out / f"ab2_{args.n_envs}.extxyz"
    if not subset.exists():
        write(subset, [frames[k] for k in sorted(chosen)])
    held_out = [frames[k] for k in rest]
    del frames
    result.update(data=str(args.data), subset=str(subset), subset_frames=len(chosen), subset_environments=n_env,
                  prepare_s=round(clock() - t, 1))
    print(f"{len(chosen)} frames, {n_env} environments -> {subset} ({result['prepare_s']} s)", flush=True)

    t = clock()
    model, report = train_model([subset], representation="AB2", label_key="e_local", n_train=args.n_envs,
                                seed=args.seed, precision=args.precision, progress=False)
    result["train_s"] = round(clock() - t, 1)
    result["precision"] = args.precision
    result["train_phases_s"] = {k: round(v, 1) for k, v in model.regressor_.timings_.items()}
    result["train_peak_rss_gb"] = round(peak_rss_gb(), 2)
    result["variance"] = model.regressor_.variance_
    result["report"] = {k: v for k, v in report.items() if k != "files"}
    print(f"trained in {result['train_s']} s {result['train_phases_s']}, peak RSS {result['train_peak_rss_gb']} GB, "
          f"variance {result['variance']}", flush=True)

    path = out / "model.npz"
    t = clock()
    model.save(path, overwrite=True)
    result["save_s"] = round(clock() - t, 1)
    result["model_file_mb"] = round(path.stat().st_size / 1e6, 1)
    t = clock()
    loaded = CGGPRModel.load(path)
    result["load_s"] = round(clock() - t, 1)
    atoms = held_out[0].copy()
    t = clock()
    atoms.calc = CGGPRCalculator(loaded)
    energy = atoms.get_potential_energy()
    std = atoms.calc.get_property("local_energy_std", atoms)
    result["first_calculator_energy_s"] = round(clock() - t, 2)
    t = clock()
    means, stds = loaded.predict(held_out, return_std=True)
    result["predict_50_frames_with_std_s"] = round(clock() - t, 2)
    truth = np.concatenate([a.arrays["e_local"][a.symbols == "Si"] for a in held_out]) - loaded.reference_energy
    result["held_out_environments"] = int(truth.size)
    result["held_out_rmse_ev"] = round(float(np.sqrt(np.mean((np.concatenate(means) - truth) ** 2))), 4)
    result["peak_rss_gb"] = round(peak_rss_gb(), 2)
    print(f"save {result['save_s']} s ({result['model_file_mb']} MB), load {result['load_s']} s, first calculator "
          f"energy with std {result['first_calculator_energy_s']} s (E={energy:.3f} eV, max std {std.max():.4f}), "
          f"50 frames with std {result['predict_50_frames_with_std_s']} s, held-out RMSE "
          f"{result['held_out_rmse_ev']} eV", flush=True)

    if args.compare_exact:
        X_test = loaded.vectors([loaded.bead_map(a) for a in held_out])
        _, s_ny = loaded.regressor_.predict(X_test, return_std=True)
        X, y = model.regressor_.X_, model.regressor_.y_
        del loaded
        t = clock()
        exact = ExactGPR(variance="exact").fit(X, y)
        _, s_ex = exact.predict(X_test, return_std=True)
        diff = s_ny - s_ex
        result["compare_exact"] = {
            "refit_and_predict_s": round(clock() - t, 1), "exact_std_median_ev": round(float(np.median(s_ex)), 5),
            "max_abs_diff_ev": round(float(np.abs(diff).max()), 5),
            "mean_abs_diff_ev": round(float(np.abs(diff).mean()), 5),
            "median_rel_diff": round(float(np.median(np.abs(diff) / s_ex)), 4),
            "max_rel_diff": round(float(np.max(np.abs(diff) / s_ex)), 4)}
        result["peak_rss_gb"] = round(peak_rss_gb(), 2)
        print(f"Nyström vs exact std on {len(s_ex)} held-out environments: {result['compare_exact']}", flush=True)
    result["load_average_end"] = os.getloadavg()
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
