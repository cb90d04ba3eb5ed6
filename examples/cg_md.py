"""Molecular dynamics of a coarse-grained ZIF on a CG-GPR energy surface (NVT, NVE, NPT).

The bead structure (AB2 beads: Si = Zn site, O = imidazolate-ring bead) comes from the package's built-in
coarse-grained frames (``ase_cggpr.io.default_dataset_path("cg")``, the ideal frame of one net, small cell).
Bead masses are physical: an A bead weighs a Zn atom (65.38 u), a B bead an imidazolate C3H3N2 (67.07 u).
Energies, forces and stress come from ``CGGPRCalculator`` (minus the gradient of the *learned* CG energy and
its strain derivative).

Steps:
1. model: ``--model PATH_OR_NAME``; default the shipped ``"AB2"`` model, or, if it is not installed (or with
   ``--model tiny``), a tiny AB2 model trained here in seconds on the built-in cg frames (label ``e_local``);
2. NVT: ``ase.md.langevin.Langevin`` at ``--temperature`` from Maxwell-Boltzmann velocities (seeded);
3. NVE: ``ase.md.verlet.VelocityVerlet`` from the end of the NVT run; the drift of the total energy
   (max |E_tot(t) - E_tot(0)| per bead) measures how consistent forces and energies are and how good the
   time step is;
4. NPT: ``ase.md.nptberendsen.NPTBerendsen`` (isotropic Berendsen barostat at 1 atm, Berendsen thermostat;
   it needs the stress) from the end of the NVT run; the mean lattice parameters and volume over the second
   half of the run are reported, with the start's.

Small, fast mode for the test suite: ``CGGPR_EXAMPLE_SMALL=1`` (fewer steps). ``--json PATH`` writes the
numbers (for tests and scripts).

Run:  python examples/cg_md.py [--model AB2] [--net EDI] [--steps 100] [--temperature 300] [--timestep 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

ZN_MASS = 65.38  # u
IMIDAZOLATE_MASS = 3 * 12.011 + 3 * 1.008 + 2 * 14.007  # C3H3N2 = 67.071 u
BAR_IN_EV_PER_A3 = 1e5 / 1.602176634e11  # 1 bar in eV/Å^3
ZIF_BULK_MODULUS_GPA = 5.0  # order of magnitude of ZIF bulk moduli; only sets the barostat's coupling rate


def load_cg_frame(net: str):
    """The ideal (``order='d'``, ``rattle='none'``) built-in cg frame of ``net`` (a copy, no calculator)."""
    import gzip
    import io

    from ase.io import read

    from ase_cggpr.io import default_dataset_path

    with gzip.open(default_dataset_path("cg"), "rt") as handle:
        frames = read(io.StringIO(handle.read()), ":", format="extxyz")
    for atoms in frames:
        if atoms.info.get("net") == net and atoms.info.get("rattle") == "none":
            return atoms.copy(), frames
    nets = sorted({str(a.info.get("net")) for a in frames})
    raise SystemExit(f"no ideal built-in cg frame of net {net!r}; nets: {', '.join(nets)}")


def get_model(name, frames, quiet):
    from ase_cggpr.model import CGGPRModel
    from ase_cggpr.pretrained import available

    if name is None and "AB2" in available():
        name = "AB2"
    if name is not None and name != "tiny":
        return CGGPRModel.load(name), str(name)
    t0 = time.perf_counter()
    train = [a for a in frames if a.info.get("rattle") in ("none", "small")][:40]
    model = CGGPRModel(representation="AB2", backend="featomic", n_max=6, l_max=3,
                       reference_energy=float(train[0].info.get("reference_energy", 0.0)))
    model.fit(train, label_key="e_local")
    if not quiet:
        print(f"   trained a tiny AB2 model on {len(train)} built-in cg frames in {time.perf_counter() - t0:.1f} s")
    return model, "tiny AB2 (trained here)"


def run_dynamics(dynamics, steps: int, what: str) -> bool:
    """Run ``steps`` steps; on a model error (e.g. the bead net broke) print one line and return False."""
    from ase_cggpr.errors import CGGPRError

    try:
        dynamics.run(steps)
    except CGGPRError as error:
        print(f"error: {what} stopped: {error}", file=sys.stderr)
        return False
    return True


def main(argv=None) -> int:
    small = os.environ.get("CGGPR_EXAMPLE_SMALL") == "1"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model file or shipped name, or 'tiny' (train a tiny AB2 model here); "
                        "default: the shipped AB2 model if installed, else 'tiny'")
    parser.add_argument("--net", default="EDI", help="net of the built-in cg frame (default EDI: 5 Zn, 15 beads)")
    parser.add_argument("--steps", type=int, default=30 if small else 100, help="steps of each of NVT, NVE, NPT")
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--timestep", type=float, default=2.0, help="fs")
    parser.add_argument("--friction", type=float, default=0.02, help="Langevin friction (1/fs)")
    parser.add_argument("--pressure", type=float, default=1.01325, help="NPT pressure (bar)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the measured numbers to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    args = parser.parse_args(argv)
    if args.steps < 2 or args.timestep <= 0 or args.temperature <= 0:
        parser.error("--steps must be >= 2, --timestep and --temperature > 0")

    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.nptberendsen import NPTBerendsen
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    from ase_cggpr.calculator import CGGPRCalculator
    from ase_cggpr.errors import CGGPRError

    t_start = time.perf_counter()
    atoms, frames = load_cg_frame(args.net)
    try:
        model, model_name = get_model(args.model, frames, args.quiet)
    except CGGPRError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    atoms.calc = None
    atoms.set_masses(np.where(atoms.numbers == 14, ZN_MASS, IMIDAZOLATE_MASS))
    n_zn = int((atoms.numbers == 14).sum())
    n = len(atoms)
    dt = args.timestep * units.fs
    rng = np.random.default_rng(args.seed)
    log = (lambda *a: None) if args.quiet else print
    log(f"1. {args.net}: {n} beads ({n_zn} Zn), cell {np.round(atoms.cell.cellpar(), 2).tolist()}; "
        f"model {model_name}")

    def calc():
        return CGGPRCalculator(model, return_std=False)

    # 2. NVT
    atoms.calc = calc()
    with warnings.catch_warnings():  # ASE 3.29 suggests thermalize_momenta; this call works in older ASE too
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())  # ASE's recommended way to keep the centre of mass fixed under Langevin
    nvt = Langevin(atoms, dt, temperature_K=args.temperature, friction=args.friction / units.fs, fixcm=False,
                   rng=rng)
    e_nvt, t_nvt = [], []

    def record_nvt():
        e_nvt.append(atoms.get_potential_energy() / n_zn)
        t_nvt.append(atoms.get_temperature())

    nvt.attach(record_nvt, interval=1)
    t0 = time.perf_counter()
    if not run_dynamics(nvt, args.steps, "NVT"):
        return 1
    half = len(t_nvt) // 2
    log(f"2. NVT Langevin {args.steps} x {args.timestep} fs at {args.temperature:g} K: mean T (2nd half) "
        f"{np.mean(t_nvt[half:]):.0f} K, E_pot {e_nvt[0]:+.4f} -> {e_nvt[-1]:+.4f} eV/Zn "
        f"({time.perf_counter() - t0:.1f} s)")
    equilibrated = atoms.copy()
    equilibrated.set_velocities(atoms.get_velocities())

    # 3. NVE
    nve_atoms = equilibrated.copy()
    nve_atoms.set_velocities(equilibrated.get_velocities())
    nve_atoms.calc = calc()
    e_tot = []
    nve = VelocityVerlet(nve_atoms, dt)
    nve.attach(lambda: e_tot.append(nve_atoms.get_total_energy()), interval=1)
    t0 = time.perf_counter()
    if not run_dynamics(nve, args.steps, "NVE"):
        return 1
    e_tot = np.asarray(e_tot)
    drift = float(np.max(np.abs(e_tot - e_tot[0])) / n)
    slope = float(np.polyfit(np.arange(len(e_tot)) * args.timestep, e_tot / n, 1)[0]) * 1000.0  # eV/bead/ps
    log(f"3. NVE VelocityVerlet {args.steps} steps: total energy max |drift| {drift * 1e3:.3f} meV/bead, "
        f"linear drift {slope * 1e3:+.3f} meV/bead/ps ({time.perf_counter() - t0:.1f} s)")

    # 4. NPT
    npt_atoms = equilibrated.copy()
    npt_atoms.set_velocities(equilibrated.get_velocities())
    npt_atoms.calc = calc()
    compressibility = 1.0 / (ZIF_BULK_MODULUS_GPA * 1e4)  # 1/bar
    npt = NPTBerendsen(npt_atoms, dt, temperature_K=args.temperature, pressure_au=args.pressure * BAR_IN_EV_PER_A3,
                       taut=100 * units.fs, taup=500 * units.fs,
                       compressibility_au=compressibility / BAR_IN_EV_PER_A3)
    volumes, lengths = [], []

    def record_npt():
        volumes.append(npt_atoms.get_volume())
        lengths.append(npt_atoms.cell.lengths())

    npt.attach(record_npt, interval=1)
    t0 = time.perf_counter()
    if not run_dynamics(npt, args.steps, "NPT"):
        return 1
    v0 = float(equilibrated.get_volume())
    half = len(volumes) // 2
    mean_volume = float(np.mean(volumes[half:]))
    mean_lengths = np.mean(lengths[half:], axis=0)
    log(f"4. NPT Berendsen {args.steps} steps at {args.pressure:g} bar: volume {v0:.1f} -> mean (2nd half) "
        f"{mean_volume:.1f} Å^3 ({(mean_volume / v0 - 1) * 100:+.2f} %), lattice a b c "
        f"{np.round(equilibrated.cell.lengths(), 3).tolist()} -> {np.round(mean_lengths, 3).tolist()} Å, "
        f"final stress {np.round(npt_atoms.get_stress() / BAR_IN_EV_PER_A3, 0).tolist()} bar "
        f"({time.perf_counter() - t0:.1f} s)")

    summary = dict(net=args.net, model=model_name, n_beads=n, n_zn=n_zn, steps=args.steps,
                   timestep_fs=args.timestep, temperature_K=args.temperature,
                   nvt_mean_temperature=float(np.mean(t_nvt[len(t_nvt) // 2:])),
                   nvt_energy_per_zn=[float(e) for e in e_nvt],
                   nve_total_energy=[float(e) for e in e_tot], nve_max_drift_per_bead=drift,
                   nve_linear_drift_per_bead_per_ps=slope,
                   npt_initial_volume=v0, npt_volumes=[float(v) for v in volumes], npt_mean_volume=mean_volume,
                   npt_mean_lengths=[float(x) for x in mean_lengths], seconds=time.perf_counter() - t_start)
    print(f"summary: {args.net} {n} beads, NVE drift {drift * 1e3:.3f} meV/bead over {args.steps} steps, "
          f"NPT mean volume {mean_volume:.1f} Å^3 (start {v0:.1f}), total {summary['seconds']:.1f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
