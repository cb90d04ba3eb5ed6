"""Time the SOAP backends: ms per centre, each representation, each backend, same structures, one run.

    python benchmarks/bench_descriptors.py [--repeat 3] [--cg FILE] [--atomistic FILE]

Defaults are the MOF-FF reference frames in ``shared/data/mofff-reference`` (3 cag frames, 16 Zn / A
centres each): the atomistic frames for the atomistic representation, the coarse-grained ones for AB2 and,
without their O beads, for A-only. Hyperparameters are the paper's optima (n_max 16, l_max 8).

Columns: vectors (normalised SOAP, what training and energy prediction need) and gradients (quippy:
``calc(grad=True)``; featomic: :func:`compute_gradients` plus the contraction with a dE/dx per centre,
i.e. what a force evaluation needs). Times are the best of ``--repeat`` runs, after one warm-up run that
also builds featomic's radial splines (reported separately as a one-off set-up cost). The last column is
the largest element-wise difference between the two backends' vectors.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from ase.io import read

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ase_cggpr.descriptors import featomic as featomic_backend  # noqa: E402
from ase_cggpr.descriptors import quippy as quippy_backend  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "mofff-reference"
HYPERS = {
    "atomistic": ((30, 7, 6, 1), (30,), 6.75, 0.5),
    "AB2": ((14, 8), (14,), 9.0, 0.2),
    "A": ((14,), (14,), 13.5, 0.8),
}


def best_of(repeat: int, function, *args, **kwargs) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times)


def quippy_gradients(frames, kwargs):
    descriptor = quippy_backend._descriptor(quippy_backend.descriptor_string(**kwargs))
    for atoms in frames:
        descriptor.calc(atoms, grad=True)


def featomic_forces(frames, kwargs, rng):
    for atoms in frames:
        gradients = featomic_backend.compute_gradients(atoms, **kwargs)
        gradients.contract(rng.normal(size=gradients.vectors.shape))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cg", type=Path, default=DATA / "cag_pressure_cg_3frames.xyz")
    parser.add_argument("--atomistic", type=Path, default=DATA / "cag_pressure_atomistic_3frames.xyz")
    args = parser.parse_args()
    for path in (args.cg, args.atomistic):
        if not path.exists():
            sys.exit(f"structure file not found: {path}")

    cg = read(args.cg, ":")
    frames_by_representation = {
        "atomistic": read(args.atomistic, ":"),
        "AB2": cg,
        "A": [atoms[atoms.numbers == 14] for atoms in cg],
    }
    rng = np.random.default_rng(0)
    threads = os.environ.get("RAYON_NUM_THREADS", str(os.cpu_count()))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{len(cg)} frames; {os.cpu_count()} cores, load average {load}; featomic threads: {threads}; "
          f"best of {args.repeat}; times in ms per centre")
    header = (f"{'representation':<15}{'centres':>8}{'D':>7}{'quippy vec':>12}{'featomic vec':>14}{'speed-up':>10}"
              f"{'quippy grad':>13}{'featomic grad':>15}{'speed-up':>10}{'setup s':>9}{'max|dx|':>10}")
    print(header)
    print("-" * len(header))
    for representation, frames in frames_by_representation.items():
        species, centres, cutoff, sigma = HYPERS[representation]
        kwargs = dict(species=species, centre_species=centres, cutoff=cutoff, atom_sigma=sigma, n_max=16,
                      l_max=8, cutoff_transition_width=0.5)
        start = time.perf_counter()
        fast = featomic_backend.compute(frames, **kwargs)  # warm-up: builds the splines and the calculator
        setup = time.perf_counter() - start
        reference = quippy_backend.compute(frames, **kwargs)
        n_centres, dimension = reference.shape
        quippy_vectors = best_of(args.repeat, quippy_backend.compute, frames, **kwargs)
        featomic_vectors = best_of(args.repeat, featomic_backend.compute, frames, **kwargs)
        quippy_grad = best_of(args.repeat, quippy_gradients, frames, kwargs)
        featomic_grad = best_of(args.repeat, featomic_forces, frames, kwargs, rng)
        per_centre = 1e3 / n_centres
        print(f"{representation:<15}{n_centres:>8}{dimension:>7}"
              f"{quippy_vectors * per_centre:>12.2f}{featomic_vectors * per_centre:>14.2f}"
              f"{quippy_vectors / featomic_vectors:>9.1f}x"
              f"{quippy_grad * per_centre:>13.2f}{featomic_grad * per_centre:>15.2f}"
              f"{quippy_grad / featomic_grad:>9.1f}x{setup:>9.2f}{np.abs(fast - reference).max():>10.1e}")


if __name__ == "__main__":
    main()
