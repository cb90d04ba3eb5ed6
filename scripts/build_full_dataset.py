"""Build the full labelled dataset from every usable shared net (IZA + CHIC-1), smallest first.

Not a test: it takes hours for all nets. It is resumable (re-run the same command) and writes
``OUT/atomistic.extxyz``, ``OUT/cg.extxyz``, ``OUT/summary.json`` and ``OUT/report.txt``.

    python scripts/build_full_dataset.py -o /work/runs/full --workers 2 --seed 0 \
        [--reuse-relaxed /work/runs/default] [--max-zn 96] [--zni ../shared/data/zif-structures/zni.cif]

``--reuse-relaxed`` copies relaxed structures of another build with the same seed (the
relaxation depends only on the net, the seed and the relaxation settings), and ``--zni``
re-derives the zni reference energy (mean MOF-FF local energy per Zn of relaxed zni).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def zni_reference(path: Path) -> float:
    """Mean MOF-FF local energy per Zn (eV) of the relaxed structure in ``path``."""
    from ase.io import read

    from ase_cggpr.labels import local_energies
    from ase_cggpr.mofff.relax import relax

    result = relax(read(path))
    print(result.message, flush=True)
    return float(np.mean(local_energies(result.atoms)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--nets", nargs="*", type=Path,
                        default=[SHARED / "nets" / "iza", SHARED / "nets" / "chic1"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--max-zn", type=int, default=None)
    parser.add_argument("--reuse-relaxed", type=Path, default=None)
    parser.add_argument("--zni", type=Path, default=None)
    parser.add_argument("--merge-only", action="store_true",
                        help="only merge the nets finished so far (e.g. while a build runs)")
    args = parser.parse_args()

    from ase_cggpr.build import BuildConfig, build_dataset, merge, read_nets
    from ase_cggpr.progress import progress_bar

    t0 = time.perf_counter()
    nets, rejected = read_nets(args.nets)
    nets.sort(key=lambda n: (n.n_a, n.name))
    print(f"{len(nets)} clean AB2 nets, {len(rejected)} rejected "
          f"(read in {time.perf_counter() - t0:.0f} s)", flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "rejected_nets.json").write_text(json.dumps(rejected, indent=1))
    if args.zni:
        print(f"zni reference: {zni_reference(args.zni):.6f} eV per Zn", flush=True)
    if args.reuse_relaxed:
        target = args.output / "relaxed"
        target.mkdir(parents=True, exist_ok=True)
        for path in (args.reuse_relaxed / "relaxed").glob("*.extxyz"):
            if not (target / path.name).exists():
                shutil.copy2(path, target / path.name)
    config = BuildConfig(batches=args.batches, seed=args.seed, max_zn=args.max_zn)
    t1 = time.perf_counter()
    if args.merge_only:
        summary = merge(args.output, [n.name for n in nets])
    else:
        with progress_bar(len(nets), "nets") as update:
            summary = build_dataset(nets, args.output, config, workers=args.workers,
                                    progress=update)
    wall = time.perf_counter() - t1
    summary.pop("nets")
    summary["wall_seconds"] = round(wall, 1)
    summary["rejected_nets"] = rejected
    text = json.dumps(summary, indent=1)
    (args.output / "report.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
