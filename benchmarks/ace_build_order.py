"""Which nets should the ACE build relax next (issue 30 item 3)? A MOF-FF proxy: the shipped AB2 recipe trained
on the MOF-FF labels of a subset of nets, with the held-out protocol of ``scripts/ace_models.py`` (``types // 5``
framework types held out, seeded), for subsets the ACE build could have finished:

- ``order:K``: the first K nets of the build order (``unique_topologies_first``: the smallest cell of each
  framework type, then the repeats), i.e. continuing the build as it runs;
- ``maxzn:N``: every net with at most N Zn (a ``--max-zn N`` build);
- ``store:PATH``: the nets of an ACE relaxation store (``datasets/ace-build``), plus ``store:PATH+K``: those and the
  next K nets of the build order not in it.

The MOF-FF build has every net, so the curve says how many nets (and which) the held-out targets need before the
ACE build spends the hours; ACE labels were as hard or harder than MOF-FF's on the same nets (the control in
``datasets/ace-build/README.md``), so the proxy is optimistic.

    python benchmarks/ace_build_order.py --build runs/full --relaxed runs/full-relaxed/relaxed_cg.extxyz \\
        --subsets order:76 order:150 maxzn:16 --seeds 0 1 -o order.json

Run under ``/usr/bin/time -v`` for the peak memory.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from ase.io import iread

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ase_cggpr import recipes  # noqa: E402


def stored(store: Path) -> list[str]:
    """Names of the nets relaxed in an ACE store (``relaxed-*/<net>.extxyz.gz``, ``net=`` of the comment line)."""
    names = []
    for path in sorted(store.glob("relaxed-*/*.extxyz.gz")):
        with gzip.open(path, "rt") as handle:
            handle.readline()
            names.append(re.search(r'\bnet=("[^"]*"|\S+)', handle.readline()).group(1).strip('"'))
    return names


def subset(nets: list[dict], spec: str) -> list[str]:
    """Net names of a subset spec (``order:K``, ``maxzn:N``, ``store:PATH[+K]``) of ``nets`` in build order."""
    kind, _, value = spec.partition(":")
    if kind == "store":
        path, _, more = value.partition("+")
        names = stored(Path(path))
        rest = [n["name"] for n in nets if n["name"] not in set(names)]
        return names + rest[: int(more or 0)]
    if kind == "order":
        return [n["name"] for n in nets[: int(value)]]
    if kind == "maxzn":
        return [n["name"] for n in nets if n["n_zn"] <= int(value)]
    raise SystemExit(f"unknown subset {spec!r}: use order:K or maxzn:N")


def load(build: Path, relaxed: Path, names: list[str], framework_type: dict[str, str]) -> list:
    """The MOF-FF cg frames and labelled relaxations of ``names``, with their framework types."""
    wanted = set(names)
    frames = []
    for name in names:
        path = build / "frames" / f"{name.replace(':', '_')}.cg.extxyz"
        if path.is_file() and path.stat().st_size:
            frames.extend(iread(path, index=":", format="extxyz"))
    frames.extend(a for a in iread(relaxed, index=":", format="extxyz") if a.info["net"] in wanted)
    for atoms in frames:
        atoms.info["framework_type"] = framework_type[atoms.info["net"]]
    return recipes.prepare_frames(frames)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", type=Path, required=True, help="a MOF-FF build folder (frames/, nets.json)")
    parser.add_argument("--relaxed", type=Path, required=True, help="relaxed_cg.extxyz (label_relaxed_frames.py)")
    parser.add_argument("--subsets", nargs="+", default=["order:76", "order:150", "maxzn:16"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-rd", type=int, default=30000)
    parser.add_argument("--inducing", type=int, default=1000)
    parser.add_argument("--exclude", nargs="+", default=[], metavar="PATTERN",
                        help="leave out the nets matching these shell patterns (as scripts/ace_models.py --exclude)")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    nets = json.loads((args.build / "nets.json").read_text())
    framework_type = {n["name"]: n["framework_type"] for n in nets}
    n_zn = {n["name"]: n["n_zn"] for n in nets}
    result: dict = {"command": " ".join(sys.argv), "rows": []}
    for spec in args.subsets:
        names = [n for n in subset(nets, spec) if not any(fnmatch.fnmatchcase(n, p) for p in args.exclude)]
        t = time.perf_counter()
        frames = load(args.build, args.relaxed, names, framework_type)
        load_seconds = time.perf_counter() - t
        for seed in args.seeds:
            t = time.perf_counter()
            _, report = recipes.train(frames, "AB2", "rd-shifted+relaxed", n_rd=args.n_rd, inducing=args.inducing,
                                      seed=seed, final="validated")
            relaxed = report["held_out"]["relaxed"]
            row = {"subset": spec, "excluded": args.exclude, "seed": seed, "nets": len(names),
                   "zn": int(sum(n_zn[n] for n in names)),
                   "types": len({framework_type[n] for n in names}), "frames": len(frames),
                   "relaxed_rmse_per_framework_meV": round(1000 * relaxed["rmse_per_framework"], 1),
                   "relaxed_median_abs_meV": round(1000 * relaxed["median_abs_per_framework"], 1),
                   "relaxed_bias_meV": round(1000 * relaxed["bias"], 1),
                   "relaxed_spearman": round(relaxed["spearman"], 3),
                   "worst": relaxed["worst_framework"],
                   "worst_meV": round(1000 * relaxed["worst_framework_error"], 1),
                   "none_rmse_meV": round(1000 * report["held_out"].get("none", {}).get("rmse", np.nan), 1),
                   "seconds": round(time.perf_counter() - t + load_seconds)}
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
