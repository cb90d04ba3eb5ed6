"""Benchmark (not a test): streamed sparse GPR on every environment of the full dataset, held-out frameworks.

    OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 /usr/bin/time -v python benchmarks/bench_sparse_full.py \\
        --data runs/h7/base_rebuild/cg.extxyz -o OUT --mode sparse --inducing 8000
    ... --mode exact --n-exact 32000      # exact GPR on 32,000 training environments of the same split

``--data``: ``cg.extxyz`` (AB2 beads, labels ``e_local`` on the A (Si) sites) or ``atomistic.extxyz`` of
``scripts/build_full_dataset.py`` (``--representation atomistic``; labels ``e_local`` on Zn). The file is
read with ``ase.io.iread`` (never all frames at once): pass 0 records each frame's group (``info
'framework_type'``, legacy ``'topology'``) and number of environments; whole groups are held out
(``--test-fraction`` of the framework types, seeded, :func:`ase_cggpr.io.split_by_group`).

``sparse``: :func:`ase_cggpr.streaming.fit_sparse_stream` on every training environment: inducing
environments by FPS from a reservoir sample of a seeded random subset of the training frames, then one
streamed pass (``--chunk`` frames described at a time) accumulating the projected-process terms.
``exact``: :class:`ase_cggpr.regression.ExactGPR` on ``--n-exact`` training environments of random whole
training frames (as benchmarks/bench_train_paper_scale.py). Both predict every held-out environment and
write ``OUT/<mode>.json`` (times per phase, peak RSS, load average, held-out RMSE overall and per rattle).

Measured 2026-12-02 on the rebuilt dataset (11,850 frames, 723,701 environments, 249 framework types; 50
types held out: 9,242 training frames = 596,638 environments; error on 600 seeded frames of the held-out
types, 30,667 environments, ``--max-test-frames 600``), 2 cores shared with other jobs (load 2-12):

=============================  =========  ==========  ============  ======================================
run                            threads    train       peak RSS      held-out RMSE (none/small/medium/large)
=============================  =========  ==========  ============  ======================================
sparse M = 2,000, all 596,638  2          20.0 min    3.4 GB        0.187 eV (0.133/0.126/0.131/0.361)
exact N = 32,000               1          19.5 min    9.9 GB        0.200 eV (0.146/0.133/0.137/0.390)
=============================  =========  ==========  ============  ======================================

Cost of the sparse pass: ``N (2 M D + 2 M^2)`` flops (D = 4,752): at M = 8,000 about 2e8 per environment,
1.2e14 for the training split; measured 340-380 environments/s on the 2 cores at load 2-3 (70 GF/s), 55/s
at load 12.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def group_of(atoms) -> str:
    info = atoms.info
    for key in ("framework_type", "topology", "net"):
        if key in info:
            return str(info[key])
    raise SystemExit("frame without info 'framework_type'/'topology'/'net'")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--mode", choices=["sparse", "exact"], default="sparse")
    parser.add_argument("--representation", default="AB2")
    parser.add_argument("--inducing", type=int, default=8000)
    parser.add_argument("--reservoir", type=int, default=None, help="default 3 x inducing")
    parser.add_argument("--n-exact", type=int, default=32000)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--chunk", type=int, default=64, help="frames described at a time (at most)")
    parser.add_argument("--chunk-rows", type=int, default=4096,
                        help="environments described at a time (at most, unless one frame has more)")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first frames (smoke runs)")
    parser.add_argument("--max-test-frames", type=int, default=None,
                        help="predict a seeded random subset of this many held-out frames (of the held-out types)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.2)
    args = parser.parse_args()

    from ase.io import iread

    from ase_cggpr import CGGPRModel
    from ase_cggpr.io import split_by_group
    from ase_cggpr.regression import ExactGPR
    from ase_cggpr.spec import ModelSpec
    from ase_cggpr.streaming import RESERVOIR_PER_INDUCING, Accumulator, fit_sparse_stream, sample_structures

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter
    model = CGGPRModel(ModelSpec(representation=args.representation, noise=args.noise))
    spec = model.spec
    centre = "Zn" if args.representation == "atomistic" else "Si"
    result: dict = {"mode": args.mode, "data": str(args.data), "representation": args.representation,
                    "threads": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
                    "load_average_start": os.getloadavg(), "argv": sys.argv}
    del Accumulator

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def frames(wanted: np.ndarray | None = None):
        """The frames (index, Atoms) of the file whose index is in ``wanted`` (sorted), streamed."""
        keep = None if wanted is None else set(int(k) for k in wanted)
        for index, atoms in enumerate(iread(str(args.data), ":")):
            if args.max_frames is not None and index >= args.max_frames:
                return
            if keep is None or index in keep:
                yield index, atoms

    def labels(atoms) -> np.ndarray:
        return np.asarray(atoms.arrays["e_local"][atoms.symbols == centre], dtype=float)

    def chunks(wanted: np.ndarray, *, with_labels: bool = True, note: str = ""):
        """(X, y) per chunk of ``args.chunk`` frames of ``wanted``."""
        batch: list = []
        done = [0, 0]  # frames done, environments in the batch

        def flush():
            maps = [model.bead_map(a) for a in batch]
            X = model.vectors(maps)
            y = np.concatenate([labels(a) for a in batch])
            done[0] += len(batch)
            if done[0] % (args.chunk * 20) < args.chunk:
                log(f"{note}: {done[0]} / {len(wanted)} frames, peak RSS {peak_rss_gb():.2f} GB")
            batch.clear()
            done[1] = 0
            return X, y - reference

        for _, atoms in frames(wanted):
            n_atoms = int((atoms.symbols == centre).sum())
            if batch and done[1] + n_atoms > args.chunk_rows:
                yield flush()
            batch.append(atoms)
            done[1] += n_atoms
            if len(batch) == args.chunk:
                yield flush()
        if batch:
            yield flush()

    # pass 0: groups and counts
    t = clock()
    groups, counts, refs = [], [], set()
    for _, atoms in frames():
        groups.append(group_of(atoms))
        counts.append(int((atoms.symbols == centre).sum()))
        if "reference_energy" in atoms.info:
            refs.add(float(atoms.info["reference_energy"]))
    reference = refs.pop() if len(refs) == 1 else 0.0
    groups, counts = np.array(groups), np.array(counts)
    train_idx, test_idx = split_by_group(groups, args.test_fraction, seed=args.seed)
    if args.max_test_frames is not None and args.max_test_frames < len(test_idx):
        test_idx = np.sort(np.random.default_rng([args.seed, 7]).choice(test_idx, args.max_test_frames,
                                                                        replace=False))
    result.update(frames=len(counts), environments=int(counts.sum()), framework_types=len(set(groups)),
                  train_frames=len(train_idx), train_environments=int(counts[train_idx].sum()),
                  test_frames=len(test_idx), test_environments=int(counts[test_idx].sum()),
                  test_framework_types=len(set(groups[test_idx])),
                  held_out_framework_types=len(set(groups)) - len(set(groups[train_idx])), reference_energy=reference,
                  index_s=round(clock() - t, 1))
    log(f"index: {result['frames']} frames, {result['environments']} environments, {result['framework_types']} "
        f"framework types; train {result['train_frames']} frames / {result['train_environments']} env, test "
        f"{result['test_frames']} frames / {result['test_environments']} env ({result['test_framework_types']} "
        f"framework types held out) in {result['index_s']} s")

    t = clock()
    if args.mode == "sparse":
        reservoir = args.reservoir or RESERVOIR_PER_INDUCING * args.inducing
        sample = train_idx[sample_structures(counts[train_idx], 4 * reservoir, seed=args.seed)]
        result.update(inducing=args.inducing, reservoir=reservoir, sample_frames=len(sample),
                      sample_environments=int(counts[sample].sum()))
        log(f"sparse M={args.inducing}: reservoir {reservoir} from {len(sample)} sampled training frames")
        rows_done = [0, clock()]

        def progress(n: int) -> None:
            rows_done[0] += n
            if rows_done[0] // 20000 != (rows_done[0] - n) // 20000:
                rate = rows_done[0] / (clock() - rows_done[1])
                left = (result["train_environments"] - rows_done[0]) / rate
                log(f"accumulated {rows_done[0]} / {result['train_environments']} environments ({rate:.0f}/s, "
                    f"~{left / 60:.0f} min left), peak RSS {peak_rss_gb():.2f} GB, load {os.getloadavg()[0]:.1f}")

        def training_stream():
            rows_done[1] = clock()
            return chunks(train_idx, note="train pass")

        gpr = fit_sparse_stream(training_stream, sample=lambda: chunks(sample, note="sample pass"),
                                zeta=spec.zeta, offset=spec.offset, noise=spec.noise, n_inducing=args.inducing,
                                seed=args.seed, reservoir=reservoir, progress=progress)
        result["train_phases_s"] = {k: round(v, 1) for k, v in gpr.timings_.items()}
        result["n_train"] = int(gpr.n_train_)
    else:
        order = np.random.default_rng(args.seed).permutation(train_idx)
        take = int(np.searchsorted(np.cumsum(counts[order]), args.n_exact)) + 1
        chosen = np.sort(order[:take])
        Xs, ys = [], []
        for X, y in chunks(chosen, note="exact subset"):
            Xs.append(X)
            ys.append(y)
        X, y = np.vstack(Xs), np.concatenate(ys)
        del Xs
        X, y = X[:args.n_exact], y[:args.n_exact]
        result["describe_s"] = round(clock() - t, 1)
        log(f"exact: {X.shape[0]} environments from {len(chosen)} frames described in {result['describe_s']} s")
        gpr = ExactGPR(zeta=spec.zeta, offset=spec.offset, noise=spec.noise).fit(X, y)
        del X
        result["n_train"] = int(len(y))
        result["train_phases_s"] = {k: round(v, 1) for k, v in getattr(gpr, "timings_", {}).items()}
    result["train_s"] = round(clock() - t, 1)
    result["train_peak_rss_gb"] = round(peak_rss_gb(), 2)
    log(f"trained in {result['train_s']} s {result['train_phases_s']}, peak RSS {result['train_peak_rss_gb']} GB")
    params, arrays = gpr.get_state()
    result["model_arrays_mb"] = round(sum(a.nbytes for a in arrays.values()) / 1e6, 1)

    # held-out framework types
    t = clock()
    errors, kinds = [], []
    for _index, atoms in frames(test_idx):
        X = model.vectors([model.bead_map(atoms)])
        errors.append(gpr.predict(X) - (labels(atoms) - reference))
        kinds.append(np.full(len(errors[-1]), str(atoms.info.get("rattle", "?"))))
    errors, kinds = np.concatenate(errors), np.concatenate(kinds)
    result["predict_s"] = round(clock() - t, 1)
    result["held_out_rmse_ev"] = round(float(np.sqrt(np.mean(errors**2))), 4)
    result["held_out_mean_error_ev"] = round(float(errors.mean()), 4)
    result["held_out_rmse_by_rattle_ev"] = {str(k): round(float(np.sqrt(np.mean(errors[kinds == k] ** 2))), 4)
                                            for k in sorted(set(kinds))}
    result["peak_rss_gb"] = round(peak_rss_gb(), 2)
    result["load_average_end"] = os.getloadavg()
    log(f"held-out RMSE {result['held_out_rmse_ev']} eV on {errors.size} environments "
        f"{result['held_out_rmse_by_rattle_ev']} (predict {result['predict_s']} s)")
    (out / f"{args.mode}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
