"""CG relaxation with a model against the stored MOF-FF relaxations, on framework types the model never saw.

For N nets of ``datasets/full-build/relaxed/*.extxyz.gz`` (each with ``info`` ``energy_per_zn``, the MOF-FF
energy per Zn of the relaxed structure, and ``relax_message`` with the time it took) whose framework type is
held out of the model's training, start from the idealised net (``../shared/data/nets`` read with
:func:`ase_cggpr.dataset.nets.read_nets`: Si/O beads, mean A-B distance 3.24 Å), relax it with
:func:`ase_cggpr.relax.relax` on the model's energy surface and print a table:

    net, MOF-FF relaxed E/Zn, CG prediction at the MOF-FF minimum, CG-relaxed E/Zn, error, MOF-FF time, CG time

Energies are per Zn relative to the model's reference energy, like its labels (the build writes raw MOF-FF
local energies with ``reference_energy`` = the zni mean local energy, ``ZNI_REFERENCE_ENERGY``; ``cggpr train
--reference auto`` subtracts it), so the MOF-FF column is ``energy_per_zn - model.reference_energy``.

Held-out framework types (pick one):

* ``--train-data FILES``: the frames the model was trained on; every net and framework type in them
  (``info['net']``, ``info['framework_type']``; a training net without a type is typed from its net file) is
  excluded;
* nothing, for a shipped model validated on held-out types (``held_out_validation.model == "this model"``): the
  held-out nets listed in its card (``held_out_validation.nets`` and ``framework_type_keys``);
* ``--held-out-split N_HELD:SEED``: the split of ``scripts/shipped_models.py`` (``split_types`` over the framework
  types of every clean shared net; reads all nets, a few minutes; the default for a card without net names);
* ``--held-out-types T1,T2,...``: explicit coordination-sequence keys.

The cell is relaxed when the calculator has stress; otherwise positions only in the idealised cell (flagged in
the table: the comparison then mixes model error with the missing cell relaxation).

    python scripts/cg_relax_vs_mofff.py AB2 --n 20 --seed 0
    python scripts/cg_relax_vs_mofff.py model.npz --train-data train_cg.extxyz --n 2

Shipped AB2 n16/l8 -> n12/l6 (issue 29), ``--n 20 --seed 0 --max-zn 66`` (the same 20 held-out nets), run side by side
at load 7-26: median 9.7 -> 12.0 CPU s per net (mean 19.5 -> 16.1, total 379 -> 324 s; the per-step cost falls to
0.55-0.9x, but the new surface takes more BFGS steps on 8 nets: per-net CPU ratio median 0.78, range 0.30-2.34); median
|error| 34.5 -> 40.4 meV/Zn; Spearman 0.25 -> 0.44; converged 20 -> 19 (BEC stops at 500 steps).

Symmetric relaxation (``relax(symmetry=True)``, the default since issue 29 item 2), AB2, same command, before / after
in the same machine state (load 10-20 on 2 cores; the before run 46 min wall, the after run 9.5 min): median CPU per
net 9.24 -> 3.34 s (total 375 -> 118 s), model calls per net 74 -> 56 (the symmetric calls are 3-5 x cheaper), median
|error| 34.5 -> 31.4 meV/Zn, Spearman +0.25 -> +0.38, 20/20 converged, peak RSS 0.87 -> 0.50 GB. The model at the
MOF-FF minima (column CG@MOF-FF): median |error| 9.9 meV/Zn, Spearman +0.89: the ranking is lost in the relaxation
on the model's surface (its minima lie 30-140 meV/Zn below its energy at the MOF-FF minima, by a different amount
per net; relaxing from the MOF-FF beads gives Spearman 0.89 on 7 nets but 87 meV/Zn lower energies), and SOD stays
at its idealised high-symmetry stationary point (+185 meV/Zn; the full-space relaxation stops there too).
AB2-fast after (same state): median 2.89 s CPU, 76 calls per net, median |error| 27.2 meV/Zn, Spearman +0.31 (at the
MOF-FF minima 10.3 meV/Zn, +0.84).
BFGS in the space group's reduced coordinates (issue 29, this session; ``--before 1a1f85b``: each net relaxed with
both versions, alternating, in one process, load ~16): median CPU per net 4.14 -> 2.74 s (total 130 -> 59 s; per-net
ratio median 0.61, range 0.15-0.85), calls 56 -> 50 per net, median |error| 31.4 -> 32.8 meV/Zn, Spearman 0.38 ->
0.25; 15 nets within 0.2 meV/Zn of before, FRA +72 meV/Zn (another symmetric stationary point), AEN +6.6, AFR +2.3,
BEC -9.3, AEL -8.4; 20/20 converged; 1943 s wall for both. AB2-fast after (same command, load ~16): median 1.87 s CPU
per net (was 2.89 s), 57 calls, median |error| 27.7 meV/Zn, Spearman +0.31 (at the MOF-FF minima 10.3, +0.84).
Open question: the full-space relaxation from the idealised net rattled by 0.05 Å (like
MOF-FF's pre-rattle; ``symmetry=False``) ends lower on the model's surface (MTW -73, AFI -68, BIK -103 meV/Zn against
MOF-FF; SOD escapes its saddle: -34 instead of +185) at 2-10 x the CPU; over the first 17 held-out nets of at most 32 Zn
(not the 20 above) it gives median |error| 33.9 meV/Zn, Spearman +0.56: not yet compared on the same nets.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "datasets" / "full-build" / "relaxed"
NETS = ROOT.parent / "shared" / "data" / "nets"


def mofff_seconds(message: str) -> float:
    match = re.search(r"in ([0-9.]+) s", message or "")
    return float(match.group(1)) if match else float("nan")


def net_files(nets_dir: Path) -> dict[str, Path]:
    """Net name -> file, without reading the files: IZA ``NAME.cif``; CHIC-1 multi-block ``stem:block``."""
    return {p.stem: p for p in sorted(nets_dir.rglob("*.cif"))}


def file_of(name: str, files: dict[str, Path]) -> Path | None:
    return files.get(name.split(":")[0])


def read_named_nets(names, files):
    """The named nets (idealised, scaled), reading each needed file once."""
    from ase_cggpr.dataset.nets import read_nets

    by_file: dict[Path, set[str]] = {}
    for name in names:
        path = file_of(name, files)
        if path is not None:
            by_file.setdefault(path, set()).add(name)
    out = {}
    for path, wanted in by_file.items():
        nets, _ = read_nets([path])
        out.update({n.name: n for n in nets if n.name in wanted})
    return out


def framework_type(net) -> str:
    from ase_cggpr.dataset.nets import framework_type_key

    return str(framework_type_key(net))


def held_out_from_split(spec: str, files) -> set[str]:
    """scripts/shipped_models.py's split_types over every clean shared net's framework type."""
    from ase_cggpr.dataset.nets import read_nets
    from ase_cggpr.io import held_out_groups

    n_held, seed = (int(v) for v in spec.split(":"))
    nets, _ = read_nets(sorted(set(files.values())))
    types = sorted({framework_type(n) for n in nets})
    return set(held_out_groups(types, min(n_held, len(types) // 5), seed=seed).tolist())


def training_exclusions(paths, files) -> tuple[set[str], set[str]]:
    """(net names, framework types) of the training frames."""
    from ase_cggpr.io import framework_type_of, iter_structures

    names, types = set(), set()
    for atoms in iter_structures(paths):
        if "net" in atoms.info:
            names.add(str(atoms.info["net"]))
        kind = framework_type_of(atoms)
        if kind is not None:
            types.add(kind)
    untyped = names if not types else set()
    types |= {framework_type(n) for n in read_named_nets(untyped, files).values()}
    return names, types


def _counting(method, calls: list[int]):
    def counting(self, *a, **k):
        calls[0] += 1
        return method(self, *a, **k)

    return counting


def _relax_of_revision(rev: str):
    """``ase_cggpr.relax.relax`` as it was at git revision ``rev`` (loaded as a module of the package)."""
    import importlib.util
    import subprocess
    import tempfile

    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:ase_cggpr/relax.py"], check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "relax_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("ase_cggpr._relax_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.relax


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model file or shipped name")
    parser.add_argument("--n", type=int, default=10, help="number of nets (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="which held-out nets are drawn (seeded)")
    parser.add_argument("--nets", nargs="*", help="these nets (still checked to be held out)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--train-data", nargs="+", help="the model's training frames (types excluded)")
    group.add_argument("--held-out-split", metavar="N_HELD:SEED")
    group.add_argument("--held-out-types", help="comma-separated framework-type keys")
    parser.add_argument("--store", type=Path, default=STORE)
    parser.add_argument("--nets-dir", type=Path, default=NETS)
    parser.add_argument("--max-zn", type=int, default=None, help="skip nets with more Zn")
    parser.add_argument("--fmax", type=float, default=0.01)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--optimizer", default="BFGS", choices=["BFGS", "FIRE"],
                        help="BFGS: ase_cggpr.relax's (initial Hessian relax.BFGS_ALPHA for beads)")
    parser.add_argument("--before", metavar="REV",
                        help="also relax each net with ase_cggpr/relax.py of git revision REV (same process, "
                             "alternating) and print the per-net CPU ratio after / before")
    args = parser.parse_args(argv)

    from ase.io import read

    from ase_cggpr.calculator import CGGPRCalculator
    from ase_cggpr.errors import CGGPRError
    from ase_cggpr.model import CGGPRModel
    from ase_cggpr.relax import relax

    t0 = time.perf_counter()
    relax_before = _relax_of_revision(args.before) if args.before else None
    model = CGGPRModel.load(args.model)
    calc = CGGPRCalculator(model)  # relax() asks for the std of the final state only
    calls = [0]  # model evaluations (calculator calls) of the current relaxation
    original_calculate = calc.calculate

    def counting_calculate(*a, **k):
        calls[0] += 1
        return original_calculate(*a, **k)

    calc.calculate = counting_calculate
    from ase_cggpr import relax as relax_module

    for module in (relax_module, sys.modules.get("ase_cggpr._relax_before")):
        symmetric_class = getattr(module, "SymmetricCalculator", None)
        if symmetric_class is not None:  # the symmetric relaxation's calls (one Zn per orbit) are model calls too
            symmetric_class.calculate = _counting(symmetric_class.calculate, calls)
    cell = "stress" in calc.implemented_properties
    files = net_files(args.nets_dir)
    excluded_names: set[str] = set()
    held_nets: set[str] | None = None
    if args.train_data:
        excluded_names, excluded_types = training_exclusions(args.train_data, files)
        held: set[str] | None = None
        how = f"framework types of {len(excluded_names)} training nets excluded ({len(excluded_types)} types)"
    else:
        excluded_types = set()
        split = args.held_out_split
        card = (model.training_ or {}).get("held_out_validation") or {}
        if split is None and args.held_out_types is None:
            if card.get("model") != "this model":
                print("cannot tell which framework types the model never saw: give --train-data, --held-out-split "
                      "or --held-out-types (the model card records no held-out validation of this model itself)",
                      file=sys.stderr)
                return 2
            split = f"{card['framework_types']}:{card['seed']}"
        if args.held_out_split is None and args.held_out_types is None and card.get("nets"):
            held_nets = set(card["nets"])  # the card lists the held-out nets and their framework types
            held = {str(k) for k in card.get("framework_type_keys", [])} or None
            how = f"{len(held_nets)} held-out nets of the model card ({len(held or ())} framework types)"
        elif args.held_out_types is not None:
            held = {t.strip() for t in args.held_out_types.split(",") if t.strip()}
            how = f"{len(held)} given framework types"
        else:
            held = held_out_from_split(split, files)
            how = f"{len(held)} framework types held out by split {split}"
    stored = {p.name[: -len(".extxyz.gz")]: p for p in sorted(args.store.glob("*.extxyz.gz"))}
    candidates = [n for n in (args.nets or sorted(stored)) if n in stored and file_of(n, files) is not None
                  and n not in excluded_names and (held_nets is None or n in held_nets)]
    rng = np.random.default_rng(args.seed)
    order = candidates if args.nets else [candidates[k] for k in rng.permutation(len(candidates))]
    print(f"model {args.model} ({model.spec.representation}, reference {model.reference_energy:+.6f} eV/Zn); "
          f"{how}; cell relaxed: {cell}", flush=True)
    chosen, nets = [], {}
    for start in range(0, len(order), max(args.n, 1)):  # read nets in batches until N held-out ones are found
        batch = read_named_nets(order[start:start + max(args.n, 1)], files)
        for name in order[start:start + max(args.n, 1)]:
            net = batch.get(name)
            if net is None or (args.max_zn is not None and net.n_a > args.max_zn):
                continue
            kind = framework_type(net)
            if (held is not None and kind not in held) or kind in excluded_types:
                continue
            chosen.append(name)
            nets[name] = net
            if len(chosen) == args.n:
                break
        if len(chosen) == args.n:
            break
    header = (f"{'net':<28} {'n_Zn':>4} {'MOF-FF E/Zn':>11} {'CG@MOF-FF':>10} {'CG-relaxed':>10} {'std':>6} "
              f"{'error':>7} {'conv':>4} {'steps':>5} {'calls':>5} {'MOF-FF s':>8} {'CG s':>6} {'CG cpu':>6}")
    print(header)
    errors, pairs, times, at_minimum, compared = [], [], [], [], []
    for name in chosen:
        with gzip.open(stored[name], "rt") as handle:
            relaxed = read(handle, format="extxyz")
        e_mofff = float(relaxed.info["energy_per_zn"]) - model.reference_energy
        t_mofff = mofff_seconds(str(relaxed.info.get("relax_message", "")))
        try:
            at_min = float(np.mean(model.compute(relaxed).local_energies))
            start = nets[name].atoms.copy()
            start.info = {"name": name}
            calls[0] = 0
            cpu = time.process_time()
            result = relax(start, calc, cell=cell, fmax=args.fmax, max_steps=args.max_steps,
                           optimizer=args.optimizer)
            cpu = time.process_time() - cpu
        except CGGPRError as error:
            print(f"{name[:28]:<28} error: {error}")
            continue
        if relax_before is not None:
            n_new = calls[0]
            calls[0] = 0
            cpu_before = time.process_time()
            before = relax_before(start, calc, cell=cell, fmax=args.fmax, max_steps=args.max_steps,
                                  optimizer=args.optimizer)
            cpu_before = time.process_time() - cpu_before
            compared.append((cpu, cpu_before, result.energy_per_metal, before.energy_per_metal, e_mofff))
            print(f"  before ({args.before}): {before.energy_per_metal:+.4f} eV/Zn, {before.n_steps} steps, "
                  f"{calls[0]} calls, {cpu_before:.2f} s CPU; after / before CPU {cpu / cpu_before:.2f}")
            calls[0] = n_new
        err = result.energy_per_metal - e_mofff
        errors.append(err)
        pairs.append((result.energy_per_metal, e_mofff))
        at_minimum.append(at_min)
        times.append((result.seconds, cpu, calls[0]))
        print(f"{name[:28]:<28} {result.n_metals:>4d} {e_mofff:>+11.4f} {at_min:>+10.4f} "
              f"{result.energy_per_metal:>+10.4f} {result.energy_std:>6.3f} {err:>+7.4f} "
              f"{'yes' if result.converged else 'no':>4} {result.n_steps:>5d} {calls[0]:>5d} {t_mofff:>8.1f} "
              f"{result.seconds:>6.1f} "
              f"{cpu:>6.1f}",
              flush=True)
    if errors:
        e = np.array(errors)
        print(f"{len(e)} nets: error (CG-relaxed - MOF-FF relaxed) mean {e.mean():+.4f}, RMSE "
              f"{np.sqrt(np.mean(e ** 2)):.4f} eV/Zn; {time.perf_counter() - t0:.0f} s in all"
              + ("" if cell else "; positions only (the calculator has no stress): cells stay idealised"))
        from scipy.stats import spearmanr

        cg, ref = np.array(pairs).T
        wall, cpu, n_calls = np.array(times).T
        rho = float(spearmanr(cg, ref).statistic) if len(e) > 2 else float("nan")
        print(f"median |error| {1000 * np.median(np.abs(e)):.1f} meV/Zn, Spearman {rho:+.2f} (CG-relaxed vs MOF-FF "
              f"relaxed E/Zn); CG relaxation median {np.median(wall):.2f} s wall, {np.median(cpu):.2f} s CPU "
              f"(max {wall.max():.1f} s, {cpu.max():.1f} s) per net, median {np.median(n_calls):.0f} model calls "
              f"per net (total CPU {cpu.sum():.0f} s)")
        at = np.array(at_minimum)
        print(f"the model at the MOF-FF minimum (no CG relaxation): median |error| "
              f"{1000 * np.median(np.abs(at - ref)):.1f} meV/Zn, Spearman {float(spearmanr(at, ref).statistic):+.2f}")
    if compared:
        from scipy.stats import spearmanr

        after, before, e_after, e_before, ref = np.array(compared).T
        ratio = after / before
        print(f"before ({args.before}) -> after, same process: median CPU per net {np.median(before):.2f} -> "
              f"{np.median(after):.2f} s (total {before.sum():.0f} -> {after.sum():.0f} s); per-net ratio median "
              f"{np.median(ratio):.2f} (range {ratio.min():.2f}-{ratio.max():.2f}); median |error| "
              f"{1000 * np.median(np.abs(e_before - ref)):.1f} -> {1000 * np.median(np.abs(e_after - ref)):.1f} "
              f"meV/Zn; Spearman {float(spearmanr(e_before, ref).statistic):+.2f} -> "
              f"{float(spearmanr(e_after, ref).statistic):+.2f}; nets whose energy moved by > 2 meV/Zn: "
              f"{int(np.sum(np.abs(e_after - e_before) > 0.002))}")
    if len(chosen) < args.n:
        print(f"only {len(chosen)} held-out nets found of {args.n} asked for", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
