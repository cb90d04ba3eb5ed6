"""Choose the CG relaxation strategy by measurement (issue 29 item 2): optimisers and tolerances on held-out nets.

    OPENBLAS_NUM_THREADS=1 python benchmarks/relax_strategies.py AB2 --n 6 --max-zn 24 \
        --strategies bfgs-0.01 fire-0.01 precon-0.01 bfgs-0.05

For the held-out nets of ``scripts/cg_relax_vs_mofff.py`` (the shipped model's card, at most ``--max-zn`` Zn),
relax the idealised net (positions and cell, ``FrechetCellFilter`` unless the strategy says otherwise) with each
strategy and print per net and strategy: wall and CPU seconds, model evaluations, the relaxed energy per Zn and its
error against the stored MOF-FF relaxation; then per strategy the median time, median |error| and the Spearman
rank correlation over the nets. A strategy is ``NAME-FMAX`` with NAME one of :data:`STRATEGIES`.

n12/l6 AB2 (issue 29), ``AB2 --n 4 --max-zn 28 --strategies relax-0.01 pos-then-cell-0.01 bfgs-a5-0.01 relax-0.03``
(load 4-7; model evaluations / CPU s): relax-0.01 MTW 256 / 21.7, SBN 22 / 0.9, MON 28 / 1.5, AFI 37 / 2.5;
pos-then-cell 204 (MTW not converged) / 42 / 47 / 76; bfgs-a5 176 / 28 / 29 / 50 (MTW stays in the start's basin,
+84 meV/Zn above relax's minimum); relax-0.03 240 / 21 / 28 / 37 at the same energies (within 0.3 meV/Zn). The
current relax (BFGS, initial Hessian 10, fmax 0.01) stays the default; precon (PreconLBFGS + FrechetCellFilter) on
the n16/l8 model stalled on MTW ("not downhill").

Issue 29 item 2 (n16/l8 AB2, symmetric relaxation; per-net runs under load 10-20): relaxing in the space group
(``relax(symmetry=True)``: ``SymmetricCalculator``, one Zn per orbit) takes the same steps to the same energies
(MTW 78 -> 76 steps, 10.6 -> 6.8 s CPU; AFR 93 -> 91, 13.4 -> 6.4 s) at 3-5 x fewer SOAP centres per call. BFGS from
the numerical Hessian in the symmetric subspace (k <= 60 degrees of freedom, k model calls): steps AEN 80 -> 63,
BEC 91 -> 28, BIK 48 -> 26, ITW 82 -> 35, AWW 33 -> 20, SBN 17 -> 9, CPU -30% to +10% (the k calls cost what the
saved steps did on some nets). FrechetCellFilter exp_cell_factor sqrt(N) or 3 instead of N: SBN 17 -> 11, AFR 91 -> 60,
MTW 76 -> 172 steps (a lower minimum): not adopted; 1 breaks (cell steps too large). Looser fmax does not improve
the ranking (20 nets, energy where the logged fmax first drops below: 0.1 -> Spearman 0.21, 0.05 -> 0.20, 0.02 ->
0.25, converged at 0.01 -> 0.39): fmax stays 0.01.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("cg_relax_vs_mofff", ROOT / "scripts" / "cg_relax_vs_mofff.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def held_out_nets(model, n: int, max_zn: int, seed: int):
    """(name, idealised net Atoms, MOF-FF relaxed E/Zn relative to the reference) of n held-out nets."""
    from ase.io import read

    s = _script()
    files = s.net_files(s.NETS)
    card = model.training_["held_out_validation"]
    held_nets = set(card["nets"])
    stored = {p.name[: -len(".extxyz.gz")]: p for p in sorted(s.STORE.glob("*.extxyz.gz"))}
    candidates = [k for k in sorted(stored) if k in held_nets and s.file_of(k, files) is not None]
    rng = np.random.default_rng(seed)
    order = [candidates[k] for k in rng.permutation(len(candidates))]
    nets = s.read_named_nets(order, files)
    out = []
    for name in order:
        net = nets.get(name)
        if net is None or net.n_a > max_zn:
            continue
        with gzip.open(stored[name], "rt") as handle:
            relaxed = read(handle, format="extxyz")
        start = net.atoms.copy()
        start.info = {"name": name}
        out.append((name, start, float(relaxed.info["energy_per_zn"]) - model.reference_energy))
        if len(out) == n:
            break
    return out


STRATEGIES = ("relax", "bfgs", "fire", "lbfgs", "precon", "bfgsls", "bfgs-a<ALPHA>", "pos-then-cell")


def run(strategy: str, start, calc, fmax: float, max_steps: int, smax: float = 1e-4):
    """Relax a copy of ``start``; (E/Zn, converged, model evaluations, wall s, CPU s)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS, FIRE, LBFGS, BFGSLineSearch
    from ase.optimize.precon import Exp, PreconLBFGS

    from ase_cggpr.relax import relax

    evaluations = [0]
    original = calc.calculate

    def counting(*args, **kwargs):
        evaluations[0] += 1
        return original(*args, **kwargs)

    calc.calculate = counting
    t, c = time.perf_counter(), time.process_time()
    try:
        if strategy == "relax":  # ase_cggpr.relax.relax as it is
            result = relax(start, calc, fmax=fmax, max_steps=max_steps, smax=smax)
            e, ok = result.energy_per_metal, result.converged
        else:
            atoms = start.copy()
            atoms.calc = calc
            n_zn = int((atoms.numbers == 14).sum())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if strategy == "pos-then-cell":
                    BFGS(atoms, logfile=None).run(fmax=fmax * 5, steps=max_steps)
                    opt = BFGS(FrechetCellFilter(atoms), logfile=None)
                elif strategy == "precon":
                    opt = PreconLBFGS(FrechetCellFilter(atoms), precon=Exp(A=3), logfile=None)
                else:
                    alpha = strategy.startswith("bfgs-a")  # bfgs-a<ALPHA>: BFGS with initial Hessian ALPHA
                    cls = BFGS if alpha else {"bfgs": BFGS, "fire": FIRE, "lbfgs": LBFGS,
                                              "bfgsls": BFGSLineSearch}[strategy]
                    kwargs = {"alpha": float(strategy[6:] or 10.0)} if alpha else {}
                    opt = cls(FrechetCellFilter(atoms), logfile=None, **kwargs)
                opt.run(fmax=fmax, steps=max_steps)
            f = np.linalg.norm(atoms.get_forces(), axis=1).max()
            s = np.abs(atoms.get_stress()).max()
            e = atoms.get_potential_energy() / n_zn
            ok = bool(f < fmax * 1.0001 and s < max(smax, fmax / 100))
    finally:
        calc.calculate = original
    return e, ok, evaluations[0], time.perf_counter() - t, time.process_time() - c


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="AB2")
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--max-zn", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--strategies", nargs="+", default=["relax-0.01", "precon-0.01", "bfgs-0.05"])
    args = parser.parse_args(argv)

    from ase_cggpr import CGGPRCalculator, CGGPRModel

    model = CGGPRModel.load(args.model)
    nets = held_out_nets(model, args.n, args.max_zn, args.seed)
    print(f"{len(nets)} held-out nets: " + ", ".join(f"{n} ({int((a.numbers == 14).sum())} Zn)" for n, a, _ in nets),
          flush=True)
    table = {s: [] for s in args.strategies}
    for name, start, e_ref in nets:
        for strategy in args.strategies:
            kind, fmax = strategy.rsplit("-", 1)
            calc = CGGPRCalculator(model)
            e, ok, n_eval, wall, cpu = run(kind, start, calc, float(fmax), args.max_steps)
            table[strategy].append((e, e_ref, wall, cpu))
            print(f"{name:<24} {strategy:<16} E/Zn {e:+.4f} MOF-FF {e_ref:+.4f} err {e - e_ref:+.4f} "
                  f"{'conv' if ok else 'NOT'} evals {n_eval:4d} wall {wall:6.1f} s cpu {cpu:6.1f} s", flush=True)
    for strategy, rows in table.items():
        e, ref, wall, cpu = (np.array(x) for x in zip(*rows, strict=True))
        print(f"{strategy:<16} median wall {np.median(wall):6.1f} s, cpu {np.median(cpu):6.1f} s; median |err| "
              f"{1000 * np.median(np.abs(e - ref)):5.1f} meV/Zn; Spearman {spearman(e, ref):+.2f} over {len(e)} nets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
