"""Build the full labelled dataset from every usable shared net (IZA + CHIC-1): the smallest cell of
every topology first (smallest first), then the other cells of the same topologies.

Not a test: it takes hours for all nets. It is resumable (re-run the same command) and writes
``OUT/atomistic.extxyz``, ``OUT/cg.extxyz``, ``OUT/summary.json`` and ``OUT/report.txt``.

    python scripts/build_full_dataset.py -o runs/full --workers 2 --seed 0 [--stop-after 160] \
        [--max-zn 96] [--zni ../shared/data/zif-structures/zni.cif]

ACE-labelled build (``--labeller ace:PATH``, python-ace installed; store ``datasets/ace-build``): each net's ACE
relaxation starts from its MOF-FF relaxation in ``datasets/full-build`` (``--start-store``), 3-5 times fewer
optimiser steps than from the decorated net; the relaxed structures are labelled too (frames with rattle and order
"relaxed"); one worker on a shared machine:

    OPENBLAS_NUM_THREADS=1 python scripts/build_full_dataset.py -o runs/ace --workers 1 --seed 0 \
        --labeller ace:../shared/data/ace/zif-ace-24.yaml --stop-after 100

ZIF-8-family build (issue 33; ``--linker mIm`` or ``mixed:FRACTION``, store ``datasets/mim-build``): the 70 CHIC-1 ZIF
nets and the 50 smallest IZA nets (``--selection zif8``), MOF-FF's CH3 set, linkers as relaxed:

    OPENBLAS_NUM_THREADS=1 python scripts/build_full_dataset.py -o runs/mim --workers 1 --seed 0 --linker mIm \
        --stop-after 100

``--status -o OUT`` reports how far the build in OUT has come (without reading the nets again).
``--zni`` re-derives the zni reference energy (mean MOF-FF local energy per Zn of relaxed zni).
Relaxations of another build folder are taken over through the store, which checks that they were
made with the same settings: ``--store-only -o OTHER_BUILD`` adds them, the next run restores them.

The MOF-FF relaxations are 98% of the build's cost (about 14 hours of 2-core time for all
566 nets) and a session's run folder does not outlive the session, so the relaxed structures
are kept in the repository: ``--store`` (default ``datasets/full-build``) holds them gzipped
with the settings they were made with (``store.json``). Each run first restores the stored
relaxations into the output folder (when the settings match) and, at the end (or with
``--store-only``), adds the new ones to the store. Labelling the frames of a net whose
relaxation is stored takes seconds, so the build advances from one session to the next.
Each new relaxation is stored as soon as its net is finished, and ``--stop-after MINUTES`` makes
a run end (merged, stored, reported) before a deadline instead of being cut off in the middle of
a relaxation: a net is only started if its estimated relaxation time fits in what is left.

The store also keeps every net's label counts and sums (``labels.json``: kept / screened / filtered frames and,
per rattle level, Zn environments and the sum and sum of squares of their local energies). Each run compares
its nets with it and reports in ``report.txt`` (``compared_with_store``) which nets are identical and which
differ, so a rebuild that does not reproduce the recorded dataset says where. ``--record-labels`` writes the
file from the run (only when every net is done).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ase_cggpr.dataset.pipeline import read_markers, relax_rate, relax_wall_seconds

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def zni_reference(path: Path) -> float:
    """Mean MOF-FF local energy per Zn (eV) of the relaxed structure in ``path``."""
    from ase.io import read

    from ase_cggpr.labels import local_energies
    from ase_cggpr.mofff import relax_mofff

    result = relax_mofff(read(path))
    print(result.message, flush=True)
    return float(np.mean(local_energies(result.atoms)))


N_SMALLEST_IZA = 50


def zif8_selection(nets: list) -> list:
    """The ZIF-8-family build's nets (issue 33): every CHIC-1 ZIF net (``ZIFs:...``, 70 blocks) and the
    ``N_SMALLEST_IZA`` smallest IZA nets by Zn sites (then name), from the usable nets read."""
    zifs = [n for n in nets if n.name.startswith("ZIFs:")]
    iza = sorted((n for n in nets if n.source == "iza" or "/iza/" in str(n.source)), key=lambda n: (n.n_a, n.name))
    return zifs + iza[:N_SMALLEST_IZA]


def build_status(out_dir: Path) -> dict:
    """Progress of a build folder, from its ``nets.json`` (written by each run) and its finished-net markers:
    nets and Zn sites done, topologies covered, what is left (first cells of topologies, repeat cells) and
    the relaxation rate so far (worker-seconds per Zn site)."""
    listing = out_dir / "nets.json"
    if not listing.exists():
        raise SystemExit(f"{listing} not found: run the build once (it writes the list of nets it read)")
    nets = json.loads(listing.read_text())
    markers = {m["net"]: m for m in read_markers(out_dir)}
    seen: set[str] = set()
    left = {"first_cells": [], "repeat_cells": []}
    for net in nets:  # build order: the first net of a topology is its smallest cell
        first = net["framework_type"] not in seen
        seen.add(net["framework_type"])
        if net["name"] not in markers:
            left["first_cells" if first else "repeat_cells"].append(net)
    done = [m for m in markers.values() if m.get("status") == "done"]
    rate = relax_rate(done) or 0.0  # including nets relaxed in earlier runs
    framework_type = {n["name"]: n["framework_type"] for n in nets}
    status = dict(
        nets=len(nets), nets_done=len(done),
        nets_failed=sorted(m["net"] for m in markers.values() if m.get("status") == "failed"),
        zn=sum(n["n_zn"] for n in nets), zn_done=sum(m["n_zn"] for m in done),
        topologies=len(seen), topologies_done=len({framework_type.get(m["net"]) for m in done}),
        relax_seconds_per_zn=round(rate, 2),
        not_converged=sum(not m.get("relax_converged", True) for m in done),
    )
    for kind, todo in left.items():
        zn = sum(n["n_zn"] for n in todo)
        status[kind + "_left"] = dict(nets=len(todo), zn=zn, worker_hours=round(zn * rate / 3600, 1),
                                      largest=[f"{n['name']} ({n['n_zn']} Zn)" for n in
                                               sorted(todo, key=lambda n: n["n_zn"])[-5:]])
    return status


LABELS = "labels.json"
#: per-net counts compared exactly; label sums to this tolerance (eV, per Zn environment)
COUNTS = ("generated", "screened_out", "energy_filtered", "kept")
SUM_TOLERANCE = 1e-8


def net_labels(summary: dict) -> dict:
    """The parts of a net's summary that define its labelled frames (counts; per level n, sum, sumsq)."""
    out = {k: summary.get(k) for k in COUNTS}
    out["label_stats"] = {lvl: {k: st[k] for k in ("n", "sum", "sumsq")}
                          for lvl, st in sorted(summary.get("label_stats", {}).items())}
    return out


def labels_text(summaries: list[dict]) -> str:
    """``labels.json`` text: one line per net, in build order (readable diffs)."""
    lines = [f"{json.dumps(s['net'])}: {json.dumps(net_labels(s))}" for s in summaries]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def compare_labels(recorded: dict, summaries: list[dict]) -> dict:
    """Nets whose counts and label sums equal the recorded ones (sums to SUM_TOLERANCE x n eV), and the others
    with what differs."""
    same, differ, missing = [], {}, []
    for s in summaries:
        name = s["net"]
        if name not in recorded:
            missing.append(name)
            continue
        old, new = recorded[name], net_labels(s)
        diffs = [f"{k} {old[k]} -> {new[k]}" for k in COUNTS if old[k] != new[k]]
        for lvl in sorted(set(old["label_stats"]) | set(new["label_stats"])):
            a, b = old["label_stats"].get(lvl), new["label_stats"].get(lvl)
            if a is None or b is None or a["n"] != b["n"]:
                diffs.append(f"{lvl} n {a and a['n']} -> {b and b['n']}")
            elif abs(a["sum"] - b["sum"]) > SUM_TOLERANCE * max(a["n"], 1):
                diffs.append(f"{lvl} sum {a['sum']:.9f} -> {b['sum']:.9f}")
        if diffs:
            differ[name] = "; ".join(diffs)
        else:
            same.append(name)
    return dict(identical=len(same), differ=differ, not_recorded=missing,
                recorded_not_built=sorted(set(recorded) - {s["net"] for s in summaries}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument("--nets", nargs="*", type=Path,
                        default=[SHARED / "nets" / "iza", SHARED / "nets" / "chic1"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--max-zn", type=int, default=None)
    parser.add_argument("--zni", type=Path, default=None)
    parser.add_argument("--status", action="store_true",
                        help="only report the progress of the build in --output (nets, Zn sites, topologies "
                             "done and left, relaxation rate) and exit")
    parser.add_argument("--merge-only", action="store_true",
                        help="only merge the nets finished so far (e.g. while a build runs), smallest first, "
                             "without topology keys")
    parser.add_argument("--store", type=Path, default=None,
                        help="folder of gzipped relaxed structures kept between runs (default: datasets/full-build "
                             "for MOF-FF, datasets/ace-build for --labeller ace:PATH)")
    parser.add_argument("--labeller", default="mofff", metavar="{mofff,ace:PATH}",
                        help="calculator that relaxes and labels (see cggpr dataset build --help)")
    parser.add_argument("--start-store", type=Path, default=ROOT / "datasets" / "full-build",
                        help="for a labeller other than mofff: start each relaxation from the net's MOF-FF relaxation "
                             "in this store (default datasets/full-build); 'none': from the decorated net")
    parser.add_argument("--no-store", action="store_true", help="neither restore nor store relaxations")
    parser.add_argument("--store-only", action="store_true",
                        help="only add the relaxations finished so far to the store (e.g. while a build runs)")
    parser.add_argument("--stop-after", type=float, default=None, metavar="MINUTES",
                        help="end within this many minutes of the start: a net is relaxed only if its estimated "
                             "time fits in what is left; the rest are deferred to the next run")
    parser.add_argument("--linker", default="Im", metavar="{Im,mIm,mixed:FRACTION}",
                        help="linker on the B sites (issue 33): Im (default), mIm (Zn(mIm)2, ZIF-8's) or "
                             "mixed:FRACTION; for mIm and mixed the default nets are the ZIF-8-family selection "
                             "(--selection zif8) and "
                             "the default store datasets/mim-build (one folder per linker inside it)")
    parser.add_argument("--selection", choices=["all", "zif8"], default=None,
                        help="all: every usable shared net (default for Im); zif8: the 70 CHIC-1 ZIF nets and the "
                             f"{N_SMALLEST_IZA} smallest usable IZA nets (default for mIm and mixed)")
    parser.add_argument("--record-labels", action="store_true",
                        help=f"write the per-net label counts and sums of this run to STORE/{LABELS} (the reference "
                             "later rebuilds are compared with); only when every net is done")
    args = parser.parse_args()
    t_start = time.perf_counter()
    if args.status:
        print(json.dumps(build_status(args.output), indent=1))
        return 0

    from ase_cggpr.dataset import (
        BuildConfig,
        build_dataset,
        merge,
        read_nets,
        restore_relaxed,
        store_relaxed,
        unique_topologies_first,
    )
    from ase_cggpr.errors import OptionError
    from ase_cggpr.labellers import labeller_from_spec
    from ase_cggpr.progress import progress_bar

    try:
        labeller = labeller_from_spec(args.labeller)
        labeller.check_available()
    except (OptionError, ImportError) as exc:
        raise SystemExit(str(exc)) from None
    from ase_cggpr.dataset.pipeline import normalise_linker

    try:
        args.linker = normalise_linker(args.linker)
    except ValueError as exc:
        raise SystemExit(f"--linker: {exc}") from None
    if args.selection is None:
        args.selection = "all" if args.linker == "Im" else "zif8"
    if args.store is None:
        if args.linker != "Im":
            args.store = ROOT / "datasets" / "mim-build"
        else:
            args.store = ROOT / "datasets" / ("full-build" if labeller.name == "mofff" else f"{labeller.name}-build")
    from_mofff = labeller.name != "mofff" and str(args.start_store).lower() != "none"
    config = BuildConfig(batches=args.batches, seed=args.seed, max_zn=args.max_zn, labeller=labeller,
                         relax_start="mofff" if from_mofff else "decorated",
                         include_relaxed=labeller.name != "mofff",  # ACE: the relaxed frames are labelled too
                         linker=args.linker)
    if args.store_only:
        print(f"stored {store_relaxed(args.output, args.store, config)} new relaxations in {args.store}")
        return 0
    if args.merge_only:  # the finished nets, in build order, without re-reading the CIFs
        finished = read_markers(args.output)
        finished.sort(key=lambda s: (s["n_zn"], s["net"]))
        summary = merge(args.output, [s["net"] for s in finished])
        summary.pop("nets")
        print(json.dumps(summary, indent=1))
        return 0
    t0 = time.perf_counter()
    nets, rejected = read_nets(args.nets, cache=True)
    if args.selection == "zif8":
        nets = zif8_selection(nets)
    nets = unique_topologies_first(nets)
    print(f"{len(nets)} clean AB2 nets, {len(rejected)} rejected "
          f"(read in {time.perf_counter() - t0:.0f} s)", flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "rejected_nets.json").write_text(json.dumps(rejected, indent=1))
    (args.output / "nets.json").write_text(json.dumps(  # build order, for --status
        [dict(name=n.name, n_zn=n.n_a, framework_type=n.framework_type, source=n.source) for n in nets], indent=0))
    if args.zni:
        print(f"zni reference: {zni_reference(args.zni):.6f} eV per Zn", flush=True)
    if not args.no_store:
        try:
            n = restore_relaxed(args.store, args.output, config)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        print(f"restored {n} relaxations from {args.store}", flush=True)
    if from_mofff:
        from ase_cggpr.dataset import restore_starts

        n = restore_starts(args.start_store, args.output, config)
        print(f"restored {n} MOF-FF relaxations from {args.start_store} as starting structures", flush=True)
    def keep(net_summary: dict) -> None:  # store each new relaxation as soon as its net is finished
        if not args.no_store and net_summary["relaxed_in_this_run"]:
            store_relaxed(args.output, args.store, config)

    budget = None if args.stop_after is None else args.stop_after * 60 - (time.perf_counter() - t_start)
    t1 = time.perf_counter()
    with progress_bar(len(nets), "nets") as update:
        summary = build_dataset(nets, args.output, config, workers=args.workers, progress=update,
                                time_budget=None if budget is None else max(budget, 0.0),
                                on_net_done=keep)
    wall = time.perf_counter() - t1
    if summary["deferred"]:
        print(f"{len(summary['deferred'])} nets deferred to the next run (--stop-after)", flush=True)
    if not args.no_store:
        print(f"stored {store_relaxed(args.output, args.store, config)} new relaxations in {args.store}",
              flush=True)
    per_net = summary.pop("nets")
    summary["wall_seconds"] = round(wall, 1)
    # relaxation time of every finished net, including those relaxed in earlier runs
    summary["relax_seconds_all_runs"] = round(sum(t for s in per_net if (t := relax_wall_seconds(s)) is not None), 1)
    summary["rejected_nets"] = rejected
    recorded_path = args.store / LABELS
    if not args.no_store and recorded_path.exists():
        summary["compared_with_store"] = compare_labels(json.loads(recorded_path.read_text()), per_net)
    if args.record_labels:
        if summary["n_done"] != len(per_net):
            print(f"not recording labels: {len(per_net) - summary['n_done']} nets are not done", flush=True)
        else:
            recorded_path.write_text(labels_text(per_net))
            print(f"recorded the labels of {len(per_net)} nets in {recorded_path}", flush=True)
    text = json.dumps(summary, indent=1)
    (args.output / "report.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
