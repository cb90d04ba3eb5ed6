"""Train an AB2 model on the built-in dataset, save it, and use it as an ASE calculator.

    python examples/train_and_calculate.py            # a few hundred training environments
    python examples/train_and_calculate.py --small    # what the test suite runs (seconds)
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
from ase.io import read

from ase_cggpr import CGGPRCalculator, CGGPRModel, local_energies
from ase_cggpr.io import default_dataset_path, split_by_group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="train on 100 environments only")
    args = parser.parse_args()

    frames = read(default_dataset_path("atomistic"), ":")
    groups = np.array([a.info["structure_id"] for a in frames])
    train_idx, test_idx = split_by_group(groups, 0.25, seed=0)
    train = [frames[i] for i in train_idx]
    test = [frames[i] for i in test_idx][: 5 if args.small else None]

    model = CGGPRModel(representation="AB2", reference_energy=float(frames[0].info.get("reference_energy", 0.0)))
    model.fit(train, label_key="energies", n_train=100 if args.small else 1000, seed=0)

    with tempfile.TemporaryDirectory() as tmp:
        path = model.save(Path(tmp) / "ab2.npz")
        calc = CGGPRCalculator(model_path=path)
        errors = []
        for atoms in test:
            truth = local_energies(atoms, label_key="energies") - model.reference_energy
            atoms = atoms.copy()  # (the copy has no calculator results, so the labels are read first)
            atoms.calc = calc
            energy = atoms.get_potential_energy()
            predicted = atoms.calc.results["local_energies"]
            errors.append(predicted - truth)
            print(f"{atoms.info.get('net', '?'):>6} {atoms.info.get('rattle', ''):>7}: E = {energy:9.4f} eV, "
                  f"per Zn {predicted.mean():7.4f} (MOF-FF {truth.mean():7.4f}), max std "
                  f"{atoms.calc.get_property('local_energy_std', atoms).max():.3f} eV")
    rmse = float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
    print(f"held-out RMSE per Zn: {rmse:.4f} eV over {len(test)} structures")


if __name__ == "__main__":
    main()
