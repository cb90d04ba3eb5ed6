"""Which recipe, scale and solver the shipped atomistic model needs (issue 31 item 1): a held-out study.

On the shipped models' held-out split (:func:`ase_cggpr.recipes.held_out_split`, 50 framework types, seed 0) of a
labelled MOF-FF build (``scripts/build_full_dataset.py`` + ``scripts/label_relaxed_frames.py``), two steps:

    # 1. a seeded pool of training environments per frame kind and a held-out test sample, their SOAP vectors
    #    (the shipped atomistic basis, or --n-max/--l-max/--cutoff), and the two kernel matrices
    #    pool x pool and test x pool, cached in OUT (float32 .npy, memory-mapped afterwards)
    python benchmarks/atomistic_recipes.py prepare --build BUILD -o OUT \
        --pool relaxed=4000 none=2000 r-d=3000 d-r=1500 --test none=1500 r-d=1500 d-r=1500

    # 2. candidates fitted from the cached kernels (exact GPR on N pool environments, or the projected-process
    #    sparse GPR on M of them), each evaluated on the held-out sample: the table per frame kind
    python benchmarks/atomistic_recipes.py study -o OUT

    # 3. the held-out relaxed frameworks one sparse candidate gets wrong, and whether its own latent std (the
    #    projected-process variance) flags them: per-framework errors and max std, the relaxed RMSE with all
    #    frameworks, without the worst, and on the trusted ones only (std <= the 99th percentile of the test
    #    environments' std, the shipped trust rule); OUT/outliers.json
    python benchmarks/atomistic_recipes.py outliers -o OUT --candidate rd+none+relaxed:9000:sparse=3000:noise=0.1

Every held-out relaxed environment is in the test sample (so the per-framework RMSE and Spearman of the relaxed
frames are those of the shipped cards); none, r-d and d-r test environments are a seeded random sample. The
training rows of a candidate are the first N of a seeded permutation of the pool rows of the recipe's frame kinds
(``rd-shifted+relaxed``: r-d labels lowered by the net's linker-relaxation shift, as
:func:`ase_cggpr.recipes.training_set`). Sparse candidates draw their M inducing environments at random from the
training rows (the shipped models use farthest-point sampling from a reservoir). Kernel: the package's
``(1 + x.x')**4`` on normalised SOAP vectors, noise 0.2 eV unless a candidate sets it.

Printed per candidate and frame kind: RMSE per Zn (meV), mean error (meV), for relaxed frames the per-framework
RMSE and Spearman, and the fit's CPU seconds and peak memory (the cached kernels are shared: the cost of
``prepare`` is reported once). Results go to ``OUT/study.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg
from scipy.stats import spearmanr

from ase_cggpr import recipes
from ase_cggpr.model import CGGPRModel

KERNEL_BLOCK = 2048


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _parse_sizes(words: list[str]) -> dict[str, int]:
    out = {}
    for word in words:
        kind, _, n = word.partition("=")
        if kind not in recipes.KINDS or not n.isdigit():
            raise SystemExit(f"Error: size {word!r} is not KIND=N with KIND one of {recipes.KINDS}")
        out[kind] = int(n)
    return out


def _env_table(frames: list, kind: str) -> tuple[list, np.ndarray]:
    """(frames of the kind, owner frame index of each of their environments, in centre order)."""
    chosen = [a for a in frames if a.info["kind"] == kind]
    owner = np.concatenate([np.full(len(recipes.site_labels(a)), k) for k, a in enumerate(chosen)]) \
        if chosen else np.zeros(0, int)
    return chosen, owner


def _describe(model: CGGPRModel, frames: list, owner: np.ndarray, rows: np.ndarray, out: np.ndarray,
              start: int) -> None:
    """SOAP vectors of the environments ``rows`` (sorted; ``owner``: each environment's frame) of ``frames`` into
    ``out[start:]`` (float32); only the frames holding a selected environment are mapped."""
    starts = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(frames)))])
    needed = np.unique(owner[rows])
    maps = [model.bead_map(frames[k], name=f"{frames[k].info['net']}/{frames[k].info['kind']}") for k in needed]
    sizes = starts[needed + 1] - starts[needed]
    new_starts = np.concatenate([[0], np.cumsum(sizes)])
    local = new_starts[np.searchsorted(needed, owner[rows])] + rows - starts[owner[rows]]
    for begin in range(0, len(local), 2000):
        block = local[begin:begin + 2000]
        out[start + begin:start + begin + len(block)] = model.selected_vectors(maps, block).astype(np.float32)


def cmd_prepare(args) -> int:
    t0, c0 = time.perf_counter(), time.process_time()
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    frames = recipes.read_frames(args.build, "atomistic")
    shifts = recipes.linker_relaxation_shift(frames)
    held, train, test = recipes.held_out_split(frames, "atomistic", args.n_held, args.seed)
    del frames
    print(f"read and split: {time.process_time() - c0:.0f} CPU s; {len(held)} held-out types, "
          f"{len(train)} training and {len(test)} test frames", flush=True)
    basis = {k: v for k, v in (("n_max", args.n_max), ("l_max", args.l_max), ("cutoff", args.cutoff)) if v}
    model = CGGPRModel(representation="atomistic", reference_energy=float(train[0].info["reference_energy"]),
                       **basis)
    model._training_species_of([model.bead_map(a) for a in train[:1] + test[:1]])
    rng = np.random.default_rng([args.seed, 31, 1])
    meta: dict[str, list] = {"role": [], "kind": [], "label": [], "shift": [], "net": [], "frame": []}
    plan = []  # (frames, sorted rows) per block, in the order the vectors are written
    for role, sizes, pool in (("train", args.pool, train), ("test", args.test, test)):
        for kind in recipes.KINDS:
            chosen, owner = _env_table(pool, kind)
            if not len(owner):
                continue
            n = len(owner) if (role == "test" and kind == "relaxed") else min(sizes.get(kind, 0), len(owner))
            if n == 0:
                continue
            rows = np.sort(rng.choice(len(owner), size=n, replace=False))
            labels = np.concatenate([recipes.site_labels(a) for a in chosen])
            starts = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(chosen)))])
            for r in rows:
                a = chosen[owner[r]]
                delta = shifts.get(a.info["net"])
                meta["role"].append(role)
                meta["kind"].append(kind)
                meta["label"].append(float(labels[r]))
                meta["shift"].append(float(delta[r - starts[owner[r]]]) if delta is not None and kind == "r-d"
                                     and len(delta) == starts[owner[r] + 1] - starts[owner[r]] else float("nan"))
                meta["net"].append(str(a.info["net"]))
                meta["frame"].append(f"{role}/{kind}/{owner[r]}")
            plan.append((chosen, owner, rows))
    n_rows = len(meta["label"])
    dim = len(model.selected_vectors([model.bead_map(train[0])], np.array([0]))[0])
    X = np.lib.format.open_memmap(out / "soap.npy", mode="w+", dtype=np.float32, shape=(n_rows, dim))
    filled, c1 = 0, time.process_time()
    for chosen, owner, rows in plan:
        _describe(model, chosen, owner, rows, X, filled)
        filled += len(rows)
        print(f"  SOAP {filled}/{n_rows} ({time.process_time() - c1:.0f} CPU s)", flush=True)
    soap_cpu = time.process_time() - c1
    X.flush()
    role = np.array(meta["role"])
    pool_idx, test_idx = np.flatnonzero(role == "train"), np.flatnonzero(role == "test")
    c2 = time.process_time()
    kern = {}
    for name, rows_a in (("K_pool", pool_idx), ("K_test", test_idx)):
        K = np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=np.float32,
                                      shape=(len(rows_a), len(pool_idx)))
        P = np.asarray(X[pool_idx[0]:pool_idx[-1] + 1])
        for b in range(0, len(rows_a), KERNEL_BLOCK):
            A = np.asarray(X[rows_a[b]:rows_a[min(b + KERNEL_BLOCK, len(rows_a)) - 1] + 1])
            block = A @ P.T
            block += 1.0
            np.power(block, 4, out=block)
            K[b:b + len(A)] = block
        K.flush()
        del K, P
        kern[name] = time.process_time() - c2
    meta.update(spec=model.spec.to_dict() if hasattr(model.spec, "to_dict") else str(model.spec),
                held_out_types=sorted(held), seed=args.seed, n_held=args.n_held,
                reference_energy=model.reference_energy, dimension=int(dim),
                cost={"soap_cpu_s": round(soap_cpu), "soap_ms_per_env": 1000 * soap_cpu / n_rows,
                      "kernel_cpu_s": round(time.process_time() - c2), "total_cpu_s": round(time.process_time() - c0),
                      "wall_s": round(time.perf_counter() - t0), "peak_gb": _peak_gb()})
    (out / "pool.json").write_text(json.dumps(meta))
    print(json.dumps(meta["cost"]), flush=True)
    return 0


# -- study -----------------------------------------------------------------------------------------------------

def _candidates(spec: list[str]) -> list[dict]:
    """``recipe:N[:sparse=M][:noise=S]`` words."""
    out = []
    for word in spec:
        parts = word.split(":")
        cand = {"recipe": parts[0], "n": int(parts[1]), "m": None, "noise": 0.2}
        for p in parts[2:]:
            key, _, value = p.partition("=")
            cand["m" if key == "sparse" else key] = int(value) if key == "sparse" else float(value)
        if cand["recipe"] not in recipes.RECIPES:
            raise SystemExit(f"Error: candidate {word!r}: unknown recipe")
        out.append(cand)
    return out


DEFAULT_CANDIDATES = [  # for the default pool (relaxed 4000, none 2000, r-d 3000, d-r 1500), most telling first
    # recipes at equal N (exact)
    "rd+none+relaxed:4000", "all:4000", "rd-shifted+relaxed:4000", "relaxed:4000", "rd+relaxed:4000",
    # learning curve of the best recipe, and the whole pool
    "rd+none+relaxed:1000", "rd+none+relaxed:2000", "rd+none+relaxed:9000", "all:10500",
    # sparse against exact at the same N, and the noise
    "rd+none+relaxed:9000:sparse=1000", "rd+none+relaxed:9000:sparse=3000",
    "rd+none+relaxed:9000:noise=0.1", "rd+none+relaxed:9000:noise=0.05",
]


def _metrics(pred: np.ndarray, meta: dict, test: np.ndarray) -> dict:
    kind = np.array(meta["kind"])[test]
    label = np.array(meta["label"])[test]
    frame = np.array(meta["frame"])[test]
    out = {}
    for k in recipes.KINDS:
        sel = kind == k
        if not sel.any():
            continue
        err = pred[sel] - label[sel]
        row = {"environments": int(sel.sum()), "rmse_meV": 1000 * float(np.sqrt(np.mean(err**2))),
               "bias_meV": 1000 * float(err.mean())}
        if k == "relaxed":
            names, inv = np.unique(frame[sel], return_inverse=True)
            p = np.bincount(inv, pred[sel]) / np.bincount(inv)
            t = np.bincount(inv, label[sel]) / np.bincount(inv)
            row.update(frameworks=len(names), rmse_per_framework_meV=1000 * float(np.sqrt(np.mean((p - t) ** 2))),
                       spearman=float(spearmanr(p, t).statistic))
        out[k] = row
    return out


def fit_candidate(cand: dict, meta: dict, K_pool: np.ndarray, K_test: np.ndarray, seed: int) -> dict:
    c0, t0 = time.process_time(), time.perf_counter()
    role = np.array(meta["role"])
    pool = np.flatnonzero(role == "train")
    kind = np.array(meta["kind"])[pool]
    label = np.array(meta["label"])[pool]
    shift = np.array(meta["shift"])[pool]
    kinds = recipes.RECIPE_KINDS[cand["recipe"]]
    ok = np.isin(kind, list(kinds))
    if cand["recipe"] == "rd-shifted+relaxed":
        ok &= (kind != "r-d") | np.isfinite(shift)
        label = np.where(kind == "r-d", label - np.nan_to_num(shift), label)
    eligible = np.flatnonzero(ok)
    order = np.random.default_rng([seed, 31, 2]).permutation(eligible)
    idx = np.sort(order[: cand["n"]])
    y = label[idx]
    mean = float(y.mean())
    noise2 = cand["noise"] ** 2
    if cand["m"] is None:  # exact
        K = np.asarray(K_pool[np.ix_(idx, idx)], dtype=np.float64)
        K.flat[:: len(idx) + 1] += noise2
        factor = scipy.linalg.cho_factor(K, lower=True, overwrite_a=True, check_finite=False)
        alpha = scipy.linalg.cho_solve(factor, y - mean, check_finite=False)
        del K, factor
        basis = idx
    else:  # projected process on M random training rows
        ind = np.sort(np.random.default_rng([seed, 31, 3]).choice(idx, size=min(cand["m"], len(idx)),
                                                                 replace=False))
        Kmn = np.asarray(K_pool[np.ix_(ind, idx)], dtype=np.float64)
        Kmm = np.asarray(K_pool[np.ix_(ind, ind)], dtype=np.float64)
        A = noise2 * Kmm + Kmn @ Kmn.T
        A.flat[:: len(ind) + 1] += 1e-8 * float(np.mean(np.diag(A)))
        alpha = scipy.linalg.solve(A, Kmn @ (y - mean), assume_a="pos", check_finite=False)
        basis = ind
    fit_cpu = time.process_time() - c0
    test = np.flatnonzero(role == "test")
    pred = np.zeros(len(test))
    for b in range(0, len(test), 4096):
        pred[b:b + 4096] = np.asarray(K_test[b:b + 4096][:, basis], dtype=np.float64) @ alpha + mean
    return {"candidate": cand, "n_train": int(len(idx)),
            "kinds_in_training": {k: int(np.sum(kind[idx] == k)) for k in recipes.KINDS},
            "fit_cpu_s": round(fit_cpu, 1), "wall_s": round(time.perf_counter() - t0, 1), "peak_gb": _peak_gb(),
            "metrics": _metrics(pred, meta, test)}


def _print_row(row: dict) -> None:
    c = row["candidate"]
    name = f"{c['recipe']} N={row['n_train']}" + (f" sparse M={c['m']}" if c["m"] else " exact") + \
        (f" noise={c['noise']}" if c["noise"] != 0.2 else "")
    cells = []
    for k in recipes.KINDS:
        m = row["metrics"].get(k)
        if m:
            extra = (f" fw {m['rmse_per_framework_meV']:.0f} rho {m['spearman']:.2f}" if k == "relaxed" else "")
            cells.append(f"{k} {m['rmse_meV']:.1f}/{m['bias_meV']:+.1f}{extra}")
    print(f"{name:48s} | " + " | ".join(cells) + f" | fit {row['fit_cpu_s']:.0f} CPU s", flush=True)


def cmd_study(args) -> int:
    meta = json.loads((args.output / "pool.json").read_text())
    print(f"cache: {meta['cost']}  (RMSE/mean error in meV per Zn; relaxed: per-framework RMSE, Spearman)")
    K_pool = np.load(args.output / "K_pool.npy", mmap_mode="r")
    K_test = np.load(args.output / "K_test.npy", mmap_mode="r")
    result_path = args.output / "study.json"
    rows = json.loads(result_path.read_text()) if result_path.exists() and not args.fresh else []
    done = {json.dumps(r["candidate"], sort_keys=True) for r in rows}
    for r in rows:
        _print_row(r)
    for cand in _candidates(args.candidates or DEFAULT_CANDIDATES):
        if json.dumps(cand, sort_keys=True) in done:
            continue
        row = fit_candidate(cand, meta, K_pool, K_test, meta["seed"])
        rows.append(row)
        _print_row(row)
        result_path.write_text(json.dumps(rows, indent=1))
    return 0


# -- outliers --------------------------------------------------------------------------------------------------

def cmd_outliers(args) -> int:
    """The held-out relaxed frameworks far off for a candidate: its per-framework errors and latent std (the
    projected-process variance of :mod:`ase_cggpr.regression`'s sparse GPR, from the cached kernels), the relaxed RMSE
    with and without them, and with a frame flagged when any of its environments' latent std exceeds the 99th
    percentile of the held-out test environments' (the shipped trust rule,
    :data:`ase_cggpr.uncertainty.THRESHOLD_RULE`).
    ``args.candidate``: one ``recipe:N[:sparse=M][:noise=S]`` word (sparse only)."""
    meta = json.loads((args.output / "pool.json").read_text())
    K_pool = np.load(args.output / "K_pool.npy", mmap_mode="r")
    K_test = np.load(args.output / "K_test.npy", mmap_mode="r")
    cand = _candidates([args.candidate])[0]
    if cand["m"] is None:
        raise SystemExit("Error: the outliers table needs a sparse candidate (:sparse=M)")
    c0 = time.process_time()
    role = np.array(meta["role"])
    pool = np.flatnonzero(role == "train")
    kind_pool = np.array(meta["kind"])[pool]
    label = np.array(meta["label"])[pool]
    eligible = np.flatnonzero(np.isin(kind_pool, list(recipes.RECIPE_KINDS[cand["recipe"]])))
    idx = np.sort(np.random.default_rng([meta["seed"], 31, 2]).permutation(eligible)[: cand["n"]])
    ind = np.sort(np.random.default_rng([meta["seed"], 31, 3]).choice(idx, size=min(cand["m"], len(idx)),
                                                                       replace=False))
    y = label[idx]
    mean = float(y.mean())
    noise2 = cand["noise"] ** 2
    Kmn = np.asarray(K_pool[np.ix_(ind, idx)], dtype=np.float64)
    Kmm = np.asarray(K_pool[np.ix_(ind, ind)], dtype=np.float64)
    A = noise2 * Kmm + Kmn @ Kmn.T
    A.flat[:: len(ind) + 1] += 1e-8 * float(np.mean(np.diag(A)))
    alpha = scipy.linalg.solve(A, Kmn @ (y - mean), assume_a="pos", check_finite=False)
    # variance factors as the package's (ase_cggpr.regression.exact.nystrom_variance_factors): Lm = chol(K_mm +
    # jitter), La = chol(noise^2 I + V V^T), V = Lm^-1 K_mn; the jitter grows until K_mm (float32 here) factors
    jitter, scale = 1e-10, float(np.mean(np.diag(Kmm)))
    while True:
        trial = Kmm.copy()
        trial.flat[:: len(ind) + 1] += jitter * scale
        try:
            L_mm = scipy.linalg.cholesky(trial, lower=True, check_finite=False)
            break
        except np.linalg.LinAlgError:
            jitter *= 10
    V = scipy.linalg.solve_triangular(L_mm, Kmn, lower=True, check_finite=False)
    del Kmn, trial
    B = V @ V.T
    B.flat[:: len(ind) + 1] += noise2
    del V
    L_a = scipy.linalg.cholesky(B, lower=True, check_finite=False)
    test = np.flatnonzero(role == "test")
    kind = np.array(meta["kind"])[test]
    truth = np.array(meta["label"])[test]
    frame = np.array(meta["frame"])[test]
    net = np.array(meta["net"])[test]
    pred, std = np.zeros(len(test)), np.zeros(len(test))
    k_self = 2.0**4  # (1 + x.x)^4 of a normalised vector
    for b in range(0, len(test), 4096):
        Kxm = np.asarray(K_test[b:b + 4096][:, ind], dtype=np.float64)
        pred[b:b + len(Kxm)] = Kxm @ alpha + mean
        v1 = scipy.linalg.solve_triangular(L_mm, Kxm.T, lower=True, check_finite=False)
        v2 = scipy.linalg.solve_triangular(L_a, v1, lower=True, check_finite=False)
        std[b:b + len(Kxm)] = np.sqrt(np.maximum(k_self - np.sum(v1**2, 0) + noise2 * np.sum(v2**2, 0), 0.0))
    threshold = float(np.quantile(std, 0.99))
    err = pred - truth
    rel = kind == "relaxed"
    names, inv = np.unique(frame[rel], return_inverse=True)
    counts = np.bincount(inv)
    fw_err = np.bincount(inv, err[rel]) / counts
    fw_std = np.array([std[rel][inv == k].max() for k in range(len(names))])
    fw_truth = np.bincount(inv, truth[rel]) / counts
    fw_net = np.array([net[rel][inv == k][0] for k in range(len(names))])
    order = np.argsort(-np.abs(fw_err))

    def rmse_of(keep_fw: np.ndarray) -> dict:
        keep = keep_fw[inv]
        e = err[rel][keep]
        return {"frameworks": int(keep_fw.sum()), "environments": int(keep.sum()),
                "rmse_meV": 1000 * float(np.sqrt(np.mean(e**2))), "bias_meV": 1000 * float(e.mean()),
                "spearman": float(spearmanr(fw_err[keep_fw] + fw_truth[keep_fw], fw_truth[keep_fw]).statistic)}

    worst = {fw_net[k] for k in order[: args.worst]}
    flagged = fw_std > threshold
    frame_flag = {f: bool(flagged[k]) for k, f in enumerate(names)}
    out = {"candidate": cand, "variance_jitter": jitter, "threshold_eV": threshold,
           "std_median_eV": float(np.median(std)),
           "relaxed_all": rmse_of(np.ones(len(names), bool)),
           f"relaxed_without_worst_{args.worst}": rmse_of(~np.isin(fw_net, list(worst))),
           "relaxed_trusted": rmse_of(~flagged),
           "flagged": [str(fw_net[k]) for k in np.flatnonzero(flagged)],
           "per_kind_trusted": {},
           "worst": [{"net": str(fw_net[k]), "error_eV": float(fw_err[k]), "label_eV": float(fw_truth[k]),
                      "max_std_eV": float(fw_std[k]), "flagged": bool(flagged[k])} for k in order[:10]],
           "cpu_s": round(time.process_time() - c0, 1), "peak_gb": _peak_gb()}
    for k in recipes.KINDS:
        sel = kind == k
        if sel.any():
            f = np.array([frame_flag.get(x, False) for x in frame[sel]]) if k == "relaxed" else std[sel] > threshold
            e = err[sel][~f]
            out["per_kind_trusted"][k] = {"environments_flagged": int(f.sum()), "of": int(sel.sum()),
                                          "rmse_meV": 1000 * float(np.sqrt(np.mean(e**2))),
                                          "bias_meV": 1000 * float(e.mean())}
    (args.output / "outliers.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--build", type=Path, required=True)
    p.add_argument("--pool", nargs="+", default=["relaxed=4000", "none=2000", "r-d=3000", "d-r=1500"])
    p.add_argument("--test", nargs="+", default=["none=1500", "r-d=1500", "d-r=1500"])
    p.add_argument("--n-max", type=int)
    p.add_argument("--l-max", type=int)
    p.add_argument("--cutoff", type=float)
    p.add_argument("--n-held", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, required=True)
    s = sub.add_parser("study")
    s.add_argument("-o", "--output", type=Path, required=True)
    s.add_argument("--candidates", nargs="+", help="recipe:N[:sparse=M][:noise=S] (default: the study's list)")
    s.add_argument("--fresh", action="store_true", help="ignore the results already in OUT/study.json")
    o = sub.add_parser("outliers", help="per-framework errors and latent std of one sparse candidate")
    o.add_argument("-o", "--output", type=Path, required=True)
    o.add_argument("--candidate", default="rd+none+relaxed:9000:sparse=3000:noise=0.1")
    o.add_argument("--worst", type=int, default=2, help="also report the RMSE without this many worst frameworks")
    args = parser.parse_args(argv)
    if args.command == "outliers":
        return cmd_outliers(args)
    if args.command == "prepare":
        args.pool, args.test = _parse_sizes(args.pool), _parse_sizes(args.test)
        return cmd_prepare(args)
    return cmd_study(args)


if __name__ == "__main__":
    sys.exit(main())
