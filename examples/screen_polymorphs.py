"""Screen Zn(Im)2 polymorphs with a CG-GPR model and compare the ranking with MOF-FF's own.

Steps:
1. take real Zn(Im)2 polymorphs (DFT-optimised CIFs: zni, coi, nog, ZIF-1, ZIF-4, ZIF-6, ZIF-8(H)) and
   relax each with MOF-FF (positions and cell); their MOF-FF energy per Zn, relative to relaxed zni, is
   the reference ranking;
2. model: ``--model PATH`` (e.g. one trained on the built-in dataset), or else a small AB2 model trained
   here on randomly rattled copies of the relaxed polymorphs, labelled with MOF-FF per-atom energies (so
   the screened relaxed structures are close to, but not in, the training set: an in-distribution check;
   rattles move each Zn and each whole linker, keeping linkers intact);
3. screen the relaxed structures with :func:`ase_cggpr.screening.screen` (CSV + table), and print the
   Spearman rank correlation of predicted vs MOF-FF energy per Zn.

Small, fast mode for the test suite: ``--small`` or ``CGGPR_EXAMPLE_SMALL=1`` (4 polymorphs, a smaller
SOAP basis, few rattled copies).

Run:  python examples/screen_polymorphs.py [--small] [--model MODEL.npz] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_CIFS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "zif-structures"
POLYMORPHS = {"zni": "zni", "coi": "coi", "nog": "nog", "ZIF1": "crb", "ZIF4": "cag", "ZIF6": "gis",
              "ZIF8_H": "sod"}
SMALL_SET = ("zni", "ZIF1", "ZIF6", "ZIF8_H")


def relaxed_polymorphs(cif_dir: Path, names, *, fmax: float):
    """(name, relaxed atoms, MOF-FF energy per Zn in eV) per polymorph."""
    from ase.io import read

    from ase_cggpr.mofff import relax_mofff

    out = []
    for name in names:
        atoms = read(cif_dir / f"{name}.cif")
        result = relax_mofff(atoms, cell=True, fmax=fmax, pmax_atm=200.0)
        relaxed = result.atoms
        n_zn = int((relaxed.numbers == 30).sum())
        energy = relaxed.get_potential_energy() / n_zn
        relaxed.calc = None
        relaxed.info.update(name=name, net=POLYMORPHS[name])
        out.append((name, relaxed, energy))
        print(f"  relaxed {name:<7} ({POLYMORPHS[name]}): MOF-FF {energy:.4f} eV/Zn, {result.message[:40]}",
              flush=True)
    return out


def train_on_rattled(polymorphs, *, copies: int, reference: float, small: bool, seed: int = 0):
    """AB2 model trained on rattled, MOF-FF-labelled copies of the relaxed polymorphs."""
    from ase_cggpr.beads import coarse_grain, find_connectivity
    from ase_cggpr.dataset.rattle import rigid_rattle
    from ase_cggpr.labels import local_energies
    from ase_cggpr.model import CGGPRModel
    from ase_cggpr.mofff import MOFFFCalculator

    rng = np.random.default_rng(seed)
    maps, labels = [], []
    for _, relaxed, _ in polymorphs:
        connectivity = find_connectivity(relaxed)  # connectivity of the relaxed structure, kept for its copies
        calc = MOFFFCalculator()  # typed once on the relaxed structure; copies only move atoms
        calc.get_potential_energy(relaxed)
        for _ in range(copies):
            atoms = rigid_rattle(relaxed, connectivity, rng.uniform(0.03, 0.15), rng)
            atoms.calc = calc
            atoms.arrays["energies"] = atoms.get_potential_energies()
            atoms.calc = None
            maps.append(coarse_grain(atoms, "AB2", connectivity=connectivity))
            labels.append(local_energies(atoms, label_key="energies", connectivity=connectivity))
        calc.close()
    hypers = dict(n_max=8, l_max=4) if small else {}
    model = CGGPRModel(representation="AB2", backend="featomic", reference_energy=reference, **hypers)
    return model.fit_maps(maps, labels), len(maps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", default=os.environ.get("CGGPR_EXAMPLE_SMALL") == "1")
    parser.add_argument("--model", type=Path, help="a trained model (.npz); default: train one here")
    parser.add_argument("--cif-dir", type=Path, default=DEFAULT_CIFS)
    parser.add_argument("--out-dir", type=Path, help="folder for the relaxed structures and ranking.csv")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    from scipy.stats import spearmanr

    from ase_cggpr.model import CGGPRModel
    from ase_cggpr.screening import format_table, screen, write_csv

    if not args.cif_dir.is_dir():
        print(f"no polymorph CIFs at {args.cif_dir}; pass --cif-dir", file=sys.stderr)
        return 2
    names = SMALL_SET if args.small else tuple(POLYMORPHS)
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="cggpr-screen-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"1. MOF-FF relaxation of {len(names)} Zn(Im)2 polymorphs", flush=True)
    polymorphs = relaxed_polymorphs(args.cif_dir, names, fmax=0.01 if args.small else 1e-3)
    mofff = {name: energy for name, _, energy in polymorphs}
    reference = mofff.get("zni", 0.0)

    if args.model:
        model = CGGPRModel.load(args.model)
        print(f"2. model {args.model}: {model}")
    else:
        copies = 3 if args.small else 12
        model, n_frames = train_on_rattled(polymorphs, copies=copies, reference=reference, small=args.small)
        print(f"2. trained an AB2 model on {n_frames} rattled MOF-FF-labelled copies "
              f"({model.training_['n_environments']} Zn environments)", flush=True)

    from ase.io import write

    relaxed_dir = out_dir / "relaxed"
    relaxed_dir.mkdir(exist_ok=True)
    for name, relaxed, _ in polymorphs:
        write(relaxed_dir / f"{name}.extxyz", relaxed, format="extxyz")
    result = screen(model, [relaxed_dir], workers=args.workers)
    csv_path = write_csv(out_dir / "ranking.csv", result.rows, overwrite=True)
    print(f"3. screen of {len(result.rows)} relaxed structures ({result.per_second:.1f} structures/s), "
          f"energies per Zn relative to the model's reference ({model.reference_energy:.4f} eV/Zn):")
    print(format_table(result.rows, top=len(result.rows)))

    rows = [r for r in result.rows if not r.error]
    predicted = np.array([r.energy_per_Zn for r in rows])
    truth = np.array([mofff[r.id] - reference for r in rows])
    print(f"\n{'polymorph':<9} {'MOF-FF (eV/Zn)':>15} {'CG-GPR (eV/Zn)':>15}")
    for k in np.argsort(truth):
        print(f"{rows[k].id:<9} {truth[k]:>15.4f} {predicted[k]:>15.4f}")
    rho = spearmanr(predicted, truth).statistic
    print(f"\nSpearman rank correlation (CG-GPR vs MOF-FF, {len(rows)} polymorphs): {rho:.3f}")
    print(f"ranking: {csv_path}; total {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
