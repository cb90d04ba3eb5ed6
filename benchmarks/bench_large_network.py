"""A large defective Zn(Im)2 network (issue 28 item 4): build it, map it, predict it (time per stage).

    OPENBLAS_NUM_THREADS=1 /usr/bin/time -v python benchmarks/bench_large_network.py [--repeat 6 6 3]
        [--remove 13] [--add 3] [--models AB2] [--input beads|atoms] [--forces] [--write DIR]

The network: the shipped ZIF-4 cell (cag, 16 Zn, 272 atoms) repeated ``--repeat`` times (6 x 6 x 3: 1,728 Zn,
29,376 atoms, 5,184 AB2 beads, the size of the issue's annealed amorphous network), ``--remove`` linkers
deleted at random (seeded; each makes two 3-coordinated Zn: 13 give 26 Zn = 1.5 %) and ``--add`` extra
linkers, each bound to one Zn of a different cell (5-coordinated) and dangling. Stages timed (s): the
build, the flagged connectivity of the atoms and of the AB2 beads, then per model (a shipped name or a file)
``model.compute`` through a fresh :class:`~ase_cggpr.calculator.CGGPRCalculator`: energy (the first call maps
the structure), then energy + forces (``--forces``), with the number of defective and untrusted sites.
``--input beads`` feeds coarse-grained models the bead structure (atomistic models always get the atoms).
``--write DIR`` writes ``DIR/defective_atoms.extxyz`` and ``DIR/defective_beads.extxyz`` for ``cggpr predict``.
The peak memory is the process's (``/usr/bin/time -v``: maximum resident set size; also printed from
``resource``).

Measured 2026-12-07 (2 cores shared with ~6 other jobs, so wall times are inflated; OPENBLAS_NUM_THREADS=1),
6 x 6 x 3, 13 linkers removed, 3 added (29,296 atoms, 5,174 beads, 29 defective Zn): build 6 s, flagged
connectivity 4-5 s (atoms) / 0.3 s (beads); shipped AB2 on the beads: energy 8.9 s (531 of 1,728 Zn untrusted),
energy + forces 36.5 s, peak RSS 4.1 GB; shipped atomistic on the atoms: energy 27-45 s (498 untrusted), energy +
forces 251 s, peak RSS 9.2 GB. ``cggpr predict AB2`` beads 15.5 s / 0.5 GB, atoms 18.5 s / 0.5 GB;
``cggpr predict atomistic`` atoms 34 s / 1.3 GB.

After the batched descriptor gradients (issue 29; ``featomic.GRADIENT_CENTRES_PER_BATCH`` = 192 centres; load 4-9,
CPU times): 6 x 6 x 3 AB2 energy + forces 9.0 -> 8.4 s CPU, peak RSS 4.1 -> 1.2 GB (energy 1.9-2.1 s). Defect-free
cag supercells (``--remove 0 --add 0 --forces --calls 5``), best e+f CPU: 1x 0.063 s (3.96 ms per Zn, 0.31 GB),
2x2x2 0.467 s (3.65 ms, 0.58 GB), 3x3x3 1.865 s (4.32 ms, 1.0 GB): linear in the number of Zn.

Shipped AB2 retrained at n12/l6 (issue 29), 6 x 6 x 3 defaults, ``--forces --calls 2``, load ~20, old file then new
file (separate processes, back to back): energy 2.5 -> 1.3 s CPU, energy + forces best CPU 8.57 -> 4.18 s (4.96 ->
2.42 ms per Zn), peak RSS (``/usr/bin/time -v``) 1.20 -> 0.68 GB.

Issue 29 (2026-12-08, load ~16, ``--models AB2-fast AB2 --forces --calls 2``, calculator unchanged this session):
5,174 beads energy + forces best CPU AB2-fast 4.50 s (2.61 ms per Zn), peak RSS 0.66 GB; AB2 10.4 s (6.02 ms per
Zn), 1.33 GB. Floor from the 48-bead cell's per-centre costs (bench_calculator.py): featomic gradients + kernel
gradient ~2.0 / ~4.0 ms per Zn = ~3.5 / ~6.9 s for 1,728 Zn, against the target of 1 s.
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ZIF4 = ROOT / "ase_cggpr" / "data" / "real_zifs" / "ZIF4.cif"
#: Rotation (quaternion x, y, z, w) of a copy of the cell's linker 0 about the first Zn it binds that keeps
#: every new atom >= 1.85 Å from the others, one N bound to that Zn and the other > 2.6 Å from every metal
#: (tests/test_defects.py asserts it).
ADDED_ROTATION = [-0.19260605199742747, 0.7514456824716454, -0.5351573616372206, 0.33442322484267784]


def build(repeat: tuple[int, int, int], n_remove: int, n_add: int, seed: int = 0):
    """(defective atoms, number of Zn) of the ZIF-4 supercell with linkers removed and added."""
    from ase import Atoms
    from ase.geometry import get_distances
    from ase.io import read
    from scipy.spatial.transform import Rotation

    from ase_cggpr.beads import find_connectivity

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cell = read(ZIF4)
    top = find_connectivity(cell)
    metal = top.metal_indices[top.linker_metals[0, 0]]
    linker = top.linkers[0]
    vectors, _ = get_distances(cell.positions[metal], cell.positions[linker], cell=cell.cell, pbc=True)
    extra = Atoms(np.array(cell.get_chemical_symbols())[linker].tolist(),
                  positions=cell.positions[metal] + vectors[0] @ Rotation.from_quat(ADDED_ROTATION).as_matrix().T)
    big = cell.repeat(repeat)
    n_cells = int(np.prod(repeat))
    rng = np.random.default_rng(seed)
    add_cells = rng.choice(n_cells, size=n_add, replace=False)
    # ase's repeat: blocks of len(cell) atoms, cell by cell, each translated by a lattice vector
    shifts = big.positions[np.arange(n_cells) * len(cell)] - cell.positions[0]
    supercell = find_connectivity(big)
    used = {int(metal + k * len(cell)) for k in add_cells}  # the Zn that get an extra linker keep their own
    removed = []
    while len(removed) < n_remove:  # random linkers of the supercell, no two sharing a Zn
        j = int(rng.integers(len(supercell.linkers)))
        zn = {int(supercell.metal_indices[m]) for m in supercell.linker_metals[j]}
        if zn & used:
            continue
        used |= zn
        removed.append(supercell.linkers[j])
    for k in add_cells:
        big += Atoms(extra.symbols, positions=extra.positions + shifts[k])
    if removed:
        del big[np.concatenate(removed).tolist()]
    big.info["name"] = f"ZIF-4 {'x'.join(map(str, repeat))} -{n_remove}+{n_add} linkers"
    return big, len(top.metal_indices) * n_cells


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
    """Wall and CPU seconds since creation (the CPU time shows contention on a shared machine)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __str__(self) -> str:
        return f"{time.perf_counter() - self.wall:.1f} s (CPU {time.process_time() - self.cpu:.1f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, nargs=3, default=(6, 6, 3))
    parser.add_argument("--remove", type=int, default=13)
    parser.add_argument("--add", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=["AB2"])
    parser.add_argument("--input", choices=["beads", "atoms"], default="beads")
    parser.add_argument("--forces", action="store_true")
    parser.add_argument("--write", type=Path)
    parser.add_argument("--calls", type=int, default=1, help="energy + forces calls (the best CPU time is printed)")
    args = parser.parse_args()

    from ase.io import write

    from ase_cggpr.beads import coarse_grain, find_connectivity
    from ase_cggpr.calculator import CGGPRCalculator
    from ase_cggpr.errors import DefectWarning
    from ase_cggpr.model import CGGPRModel

    warnings.simplefilter("ignore", DefectWarning)
    t = Clock()
    atoms, n_zn = build(tuple(args.repeat), args.remove, args.add)
    print(f"build: {len(atoms)} atoms, {n_zn} Zn, {t}")
    t = Clock()
    top = find_connectivity(atoms, defects="flag")
    print(f"connectivity (atoms, flagged): {t}; "
          f"{top.defects.summary(top.metal_indices, top.metal_symbols, limit=3) if top.defects else 'no defects'}")
    beads = coarse_grain(atoms, "AB2", connectivity=top).structure
    t = Clock()
    bead_top = find_connectivity(beads, defects="flag")
    print(f"connectivity (beads, flagged): {len(beads)} beads, {t}; "
          f"{len(bead_top.defects.defective_metals) if bead_top.defects else 0} defective A sites")
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        write(args.write / "defective_atoms.extxyz", atoms)
        write(args.write / "defective_beads.extxyz", beads)
        print(f"wrote {args.write}/defective_atoms.extxyz and defective_beads.extxyz")
    for name in args.models:
        t = Clock()
        model = CGGPRModel.load(name)
        print(f"[{name}] load {t}")
        kind = "atoms" if model.spec.representation == "atomistic" or args.input == "atoms" else "beads"
        structure = (atoms if kind == "atoms" else beads).copy()
        structure.calc = calc = CGGPRCalculator(model, return_std=False)
        t = Clock()
        energy = structure.get_potential_energy()
        trust = calc.site_trust
        print(f"[{name}] energy on {len(structure)} {kind}: "
              f"{t}; E = {energy:.3f} eV, trusted-sites sum "
              f"{float(calc.results['local_energies'][trust.trusted].sum()):.3f} eV; {trust.n_defective} defective, "
              f"{trust.n_untrusted} untrusted of {trust.n_sites}; peak RSS {peak_mb():.0f} MB")
        if args.forces:
            best = np.inf
            for _ in range(args.calls):
                structure.positions[0] += 1e-4  # a new structure for the calculator (its mapping is reused)
                t = Clock()
                forces = structure.get_forces()
                best = min(best, time.process_time() - t.cpu)
            print(f"[{name}] energy + forces: {t}; best CPU of {args.calls}: {best:.3f} s ({1000 * best / n_zn:.2f} ms "
                  f"per Zn); max |F| {np.linalg.norm(forces, axis=1).max():.3f} eV/Å; peak RSS {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
