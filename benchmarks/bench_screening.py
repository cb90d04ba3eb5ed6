"""Benchmark of screening: throughput (structures per second), symmetry speed-up, calibration, rank correlation.

Data (all generated here with MOF-FF, needs LAMMPS and the shared polymorph CIFs):
* the 7 Zn(Im)2 polymorphs (zni, coi, nog, ZIF-1, ZIF-4, ZIF-6, ZIF-8(H)) relaxed with MOF-FF;
* training set: bead-rattled copies of each (every Zn and whole linker displaced, std 0.03-0.2 Å),
  labelled with MOF-FF per-atom energies -> per-Zn local energies; an AB2 model (paper defaults,
  featomic backend) is fitted on them;
* held-out set: further rattled copies (other random seeds) for the uncertainty calibration;
* screen set: >= 200 structures (rattled copies + the relaxed polymorphs) in one extxyz file, screened
  with 1 and 2 worker processes; then the relaxed polymorphs' ranking vs MOF-FF (Spearman);
* symmetry: the original (symmetric) CIFs, symmetrised with spglib tolerance 1e-3 Å, predicted with and
  without the reduction to one Zn per orbit.

Run:  python benchmarks/bench_screening.py [--train-copies 20] [--screen-copies 30] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

CIFS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "zif-structures"
POLYMORPHS = {"zni": "zni", "coi": "coi", "nog": "nog", "ZIF1": "crb", "ZIF4": "cag", "ZIF6": "gis",
              "ZIF8_H": "sod"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-copies", type=int, default=20)
    parser.add_argument("--test-copies", type=int, default=8)
    parser.add_argument("--screen-copies", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from ase.io import read, write
    from ase.spacegroup.symmetrize import refine_symmetry
    from scipy.stats import spearmanr

    from ase_cggpr.beads import coarse_grain, find_connectivity
    from ase_cggpr.dataset.rattle import rigid_rattle
    from ase_cggpr.labels import local_energies
    from ase_cggpr.model import CGGPRModel
    from ase_cggpr.mofff import MOFFFCalculator, relax_mofff
    from ase_cggpr.screening import calibrate, format_table, predict_symmetric, screen

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    relaxed, mofff_energy, connectivities, calcs = {}, {}, {}, {}
    for name in POLYMORPHS:
        atoms = relax_mofff(read(CIFS / f"{name}.cif"), cell=True, fmax=1e-3, pmax_atm=50.0).atoms
        n_zn = int((atoms.numbers == 30).sum())
        mofff_energy[name] = atoms.get_potential_energy() / n_zn
        atoms.calc = None
        atoms.info.update(name=name, net=POLYMORPHS[name])
        relaxed[name], connectivities[name] = atoms, find_connectivity(atoms, name=name)
        calcs[name] = MOFFFCalculator()
        calcs[name].get_potential_energy(atoms)
    reference = mofff_energy["zni"]
    print(f"MOF-FF relaxation of {len(relaxed)} polymorphs: {time.perf_counter() - t0:.1f} s")

    def labelled_copies(n):
        maps, labels, frames = [], [], []
        for name, atoms in relaxed.items():
            for _ in range(n):
                copy = rigid_rattle(atoms, connectivities[name], rng.uniform(0.03, 0.2), rng)
                copy.arrays["energies"] = calcs[name].get_potential_energies(copy)
                maps.append(coarse_grain(copy, "AB2", connectivity=connectivities[name]))
                labels.append(local_energies(copy, label_key="energies", connectivity=connectivities[name]))
                frames.append(copy)
        return maps, labels, frames

    t0 = time.perf_counter()
    train_maps, train_labels, _ = labelled_copies(args.train_copies)
    test_maps, test_labels, _ = labelled_copies(args.test_copies)
    print(f"MOF-FF labels of {len(train_maps)} training + {len(test_maps)} held-out copies: "
          f"{time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    model = CGGPRModel(representation="AB2", backend="featomic", reference_energy=reference)
    model.fit_maps(train_maps, train_labels)
    print(f"AB2 model (paper defaults, featomic) on {model.training_['n_environments']} environments: "
          f"{time.perf_counter() - t0:.1f} s")

    calibration = calibrate(model, test_maps, test_labels)
    print("\n== calibration on held-out rattled copies ==")
    print(calibration.table())

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "screen.extxyz"
        frames = []
        for name, atoms in relaxed.items():
            for k in range(args.screen_copies):
                copy = rigid_rattle(atoms, connectivities[name], rng.uniform(0.03, 0.2), rng)
                copy.info.update(name=f"{name}-rattled-{k}", net=POLYMORPHS[name])
                frames.append(copy)
            frames.append(atoms)
        write(path, frames, format="extxyz")
        n = len(frames)
        del frames
        print(f"\n== screen of {n} structures (AB2, featomic, symmetry reduction on) ==")
        results = {}
        for workers in sorted({1, args.workers}):
            result = screen(model, [path], threshold=calibration.threshold, workers=workers)
            results[workers] = result
            print(f"workers={workers}: {result.seconds:.1f} s, {result.per_second:.2f} structures/s "
                  f"({result.n_ok} ok, {sum(r.trusted for r in result.rows)} trusted)")
        result = results[args.workers]
        print(format_table(result.rows, top=8))
        rows = {r.id: r for r in result.rows}
        names = list(relaxed)
        predicted = [rows[name].energy_per_Zn for name in names]
        truth = [mofff_energy[name] - reference for name in names]
        print(f"\n{'polymorph':<9} {'MOF-FF (eV/Zn)':>15} {'CG-GPR (eV/Zn)':>15} {'max std':>8}")
        for k in np.argsort(truth):
            print(f"{names[k]:<9} {truth[k]:>15.4f} {predicted[k]:>15.4f} {rows[names[k]].max_std:>8.4f}")
        print(f"Spearman rank correlation (relaxed polymorphs, CG-GPR vs MOF-FF): "
              f"{spearmanr(predicted, truth).statistic:.3f}")

    print("\n== symmetry reduction (original CIFs, symmetrised at 1e-3 Å) ==")
    print(f"{'structure':<9} {'n_Zn':>5} {'unique':>6} {'full (ms)':>10} {'reduced (ms)':>12} {'speed-up':>8} "
          f"{'max |dE| (eV)':>13}")
    total_full = total_reduced = 0.0
    for name in POLYMORPHS:
        atoms = read(CIFS / f"{name}.cif")
        refine_symmetry(atoms, symprec=1e-3)
        bead_map = model.bead_map(atoms)
        timings = {}
        for symmetry in (False, True):
            predict_symmetric(model, bead_map, symmetry=symmetry)  # warm-up
            t0 = time.perf_counter()
            for _ in range(3):
                mean, _, n_unique = predict_symmetric(model, bead_map, symmetry=symmetry)
            timings[symmetry] = ((time.perf_counter() - t0) / 3, mean, n_unique)
        full, reduced = timings[False], timings[True]
        total_full += full[0]
        total_reduced += reduced[0]
        print(f"{name:<9} {len(full[1]):>5} {reduced[2]:>6} {full[0] * 1e3:>10.1f} {reduced[0] * 1e3:>12.1f} "
              f"{full[0] / reduced[0]:>8.2f} {np.abs(full[1] - reduced[1]).max():>13.2e}")
    print(f"all 7: {total_full * 1e3:.0f} ms -> {total_reduced * 1e3:.0f} ms, speed-up "
          f"{total_full / total_reduced:.2f}x")
    for calc in calcs.values():
        calc.close()


if __name__ == "__main__":
    main()
