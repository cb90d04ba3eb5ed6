"""Coarse-grained relaxation with CG-GPR forces, checked with MOF-FF before and after.

Steps:
1. relax a Zn(Im)2 polymorph with MOF-FF (the reference minimum);
2. model: ``--model PATH``, or else an AB2 model trained here on bead-rattled copies of that minimum
   (each Zn and each whole linker displaced at random), labelled with MOF-FF per-atom energies;
3. rattle the minimum the same way (a distorted structure, not in the training set), coarse-grain it to
   Si/O beads and relax the beads with an ASE optimiser using ``CGGPRCalculator`` forces (minus the
   gradient of the learned coarse-grained energy: Zn sites and linker-ring centroids move);
4. map back: every Zn moves with its A bead, every linker rigidly with its B bead (the CG model carries
   no information about internal linker motions), and compare MOF-FF energies per Zn before and after.

Small, fast mode for the test suite: ``--small`` or ``CGGPR_EXAMPLE_SMALL=1`` (ZIF-6, 136 atoms, a smaller
SOAP basis, few training copies).

Run:  python examples/cg_relaxation.py [--small] [--model MODEL.npz] [--polymorph zni]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_CIFS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "zif-structures"


def mofff_per_zn(atoms, calc) -> float:
    return calc.get_potential_energy(atoms) / int((atoms.numbers == 30).sum())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", default=os.environ.get("CGGPR_EXAMPLE_SMALL") == "1")
    parser.add_argument("--model", type=Path, help="a trained AB2 model (.npz); default: train one here")
    parser.add_argument("--polymorph", help="CIF stem in --cif-dir (default: ZIF6 small, zni otherwise)")
    parser.add_argument("--cif-dir", type=Path, default=DEFAULT_CIFS)
    parser.add_argument("--rattle", type=float, default=0.15, help="bead rattle std (Å) of the start")
    parser.add_argument("--fmax", type=float, default=0.01, help="optimiser force criterion (eV/Å)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from ase.io import read
    from ase.optimize import BFGS

    from ase_cggpr.beads import coarse_grain, find_connectivity
    from ase_cggpr.calculator import CGGPRCalculator
    from ase_cggpr.dataset.rattle import rigid_rattle
    from ase_cggpr.labels import local_energies
    from ase_cggpr.model import CGGPRModel
    from ase_cggpr.mofff import MOFFFCalculator, relax_mofff

    name = args.polymorph or ("ZIF6" if args.small else "zni")
    path = args.cif_dir / f"{name}.cif"
    if not path.exists():
        print(f"no CIF at {path}; pass --cif-dir/--polymorph", file=sys.stderr)
        return 2
    start_time = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    minimum = relax_mofff(read(path), cell=True, fmax=0.01 if args.small else 1e-3, pmax_atm=200.0).atoms
    minimum.calc = None
    connectivity = find_connectivity(minimum, name=name)
    mofff = MOFFFCalculator()  # typed once on the minimum; later structures only move atoms
    e_min = mofff_per_zn(minimum, mofff)
    print(f"1. MOF-FF minimum of {name}: {len(minimum)} atoms, {connectivity.n_metals} Zn, {e_min:.4f} eV/Zn")

    if args.model:
        model = CGGPRModel.load(args.model)
    else:
        copies = 8 if args.small else 40
        maps, labels = [], []
        for _ in range(copies):
            atoms = rigid_rattle(minimum, connectivity, rng.uniform(0.03, 0.2), rng)
            atoms.arrays["energies"] = mofff.get_potential_energies(atoms)
            maps.append(coarse_grain(atoms, "AB2", connectivity=connectivity))
            labels.append(local_energies(atoms, label_key="energies", connectivity=connectivity))
        hypers = dict(n_max=8, l_max=4) if args.small else {}
        model = CGGPRModel(representation="AB2", backend="featomic", reference_energy=e_min, **hypers)
        model.fit_maps(maps, labels)
        print(f"2. trained an AB2 model on {copies} bead-rattled MOF-FF-labelled copies "
              f"({model.training_['n_environments']} Zn environments)")

    start = rigid_rattle(minimum, connectivity, args.rattle, np.random.default_rng(args.seed + 1000))
    beads = coarse_grain(start, "AB2", connectivity=connectivity).structure
    initial_beads = beads.positions.copy()
    beads.calc = CGGPRCalculator(model)
    n_zn = connectivity.n_metals
    e_cg_before = beads.get_potential_energy() / n_zn
    f_before = np.linalg.norm(beads.get_forces(), axis=1).max()
    optimiser = BFGS(beads, logfile=None)
    converged = optimiser.run(fmax=args.fmax, steps=300)
    e_cg_after = beads.get_potential_energy() / n_zn
    f_after = np.linalg.norm(beads.get_forces(), axis=1).max()
    print(f"3. CG relaxation of the rattled structure ({len(beads)} beads, BFGS, fmax {args.fmax} eV/Å): "
          f"{optimiser.get_number_of_steps()} steps, converged {bool(converged)}")
    print(f"   CG-GPR energy {e_cg_before:+.4f} -> {e_cg_after:+.4f} eV/Zn (relative to the model reference), "
          f"max bead force {f_before:.3f} -> {f_after:.4f} eV/Å")

    shift = beads.positions - initial_beads
    after = start.copy()
    after.positions[connectivity.metal_indices] += shift[:n_zn]
    for k, linker in enumerate(connectivity.linkers):
        after.positions[linker] += shift[n_zn + k]
    e_before, e_after = mofff_per_zn(start, mofff), mofff_per_zn(after, mofff)
    def rms(a):  # RMS distance from the minimum, overall translation removed
        d = a.positions - minimum.positions
        return float(np.sqrt(np.mean(np.sum((d - d.mean(axis=0)) ** 2, axis=1))))

    print("4. MOF-FF energy per Zn, relative to the MOF-FF minimum:")
    print(f"   rattled start     {e_before - e_min:+.4f} eV/Zn   (RMS distance from minimum {rms(start):.3f} Å)")
    print(f"   after CG relax    {e_after - e_min:+.4f} eV/Zn   (RMS distance from minimum {rms(after):.3f} Å)")
    print(f"   MOF-FF energy recovered by the CG relaxation: "
          f"{(e_before - e_after) / max(e_before - e_min, 1e-12):.0%}; total {time.perf_counter() - start_time:.1f} s")
    mofff.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
