"""Side-by-side benchmark: ase-cggpr's evaluation vs the paper's pipeline (and gap_fit), same data, same N.

For each training size N, a grouped 5-fold CV of the AB2 model (local-environment energy) is run by

* ``paper``:   quippy SOAP recomputed for every fold (training and test structures), then pyGPs 1.3.5
               ``GPR`` with ``Poly(d=4)`` (offset 1, unit signal variance), a constant mean equal to the
               training mean, noise 0.2 eV, ``getPosterior`` and ``predict``, as in the paper's code;
* ``exact``:   SOAP once (cached), ase-cggpr exact GPR in float64 (blocked kernel, in-place Cholesky);
* ``mixed``:   the same with the float32 Cholesky refined to float64 accuracy;
* ``sparse``:  projected-process GPR on M farthest-point inducing environments (``--inducing``);
* ``shared``:  SOAP once, one kernel for all folds (``shared_kernel_cv``, mixed precision). With this method
               every method uses its protocol: per-fold samples of N/(k-1) environments, fold k tested on
               its own sample and trained on the others' (e.g. ``--methods paper,shared,sparse``);
* ``gap_fit``: (``--gap-fit``) quippy's gap_fit on the same SOAP with ``local_property`` labels and a
               dot-product kernel ``(x.x')**4`` (GAP has no offset; the nearest it offers), sparse on
               ``min(N, --gap-sparse)`` CUR points, predicted through quippy's Potential per-atom energies.

Wall time includes the SOAP computation of each pipeline (once for ase-cggpr, per fold for the paper).
Folds, training samples and labels are identical for every method. Data: ``--data`` extxyz files
(``energies`` per atom or ``e_local`` per Zn; ``structure_id`` groups), or, without ``--data``, rattled
copies of the shared Zn(Im)2 crystal structures with a geometric per-atom energy (harmonic Zn-N and C-N
bonds; generated, written to ``--workdir``, for timing and agreement only).

    OPENBLAS_NUM_THREADS=2 python benchmarks/bench_gpr.py --sizes 1000,2000,4000 --paper-max 4000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from ase_cggpr.evaluation import SoapCache, fit_fold, group_folds, read_environments, rmse
from ase_cggpr.spec import ModelSpec

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NETS = ("zni", "coi", "nog", "ZIF4", "ZIF1", "ZIF6", "ZIF8_H")


def geometric_energies(atoms) -> np.ndarray:
    """Per-atom energies (eV): 5 (d - 2.0)^2 per Zn-N bond on Zn, 0.5 (d - 1.35)^2 per C-N bond on N."""
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, {("Zn", "N"): 2.6, ("N", "C"): 1.6})
    symbols = np.array(atoms.get_chemical_symbols())
    energies = np.zeros(len(atoms))
    zn = (symbols[i] == "Zn") & (symbols[j] == "N")
    np.add.at(energies, i[zn], 5.0 * (d[zn] - 2.0) ** 2)
    nc = (symbols[i] == "N") & (symbols[j] == "C")
    np.add.at(energies, i[nc], 0.5 * (d[nc] - 1.35) ** 2)
    return energies


def rattled_dataset(n_environments: int, path: Path, *, seed: int = 0) -> Path:
    """Rattled, randomly strained copies of the shared crystal structures (one group per net and copy block)."""
    from ase.io import read, write

    from ase_cggpr.beads import find_connectivity

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bases = [read(SHARED / "zif-structures" / f"{n}.cif") for n in NETS]
    frames, count, k = [], 0, 0
    while count < n_environments:
        base = bases[k % len(bases)]
        atoms = base.copy()
        strain = np.eye(3) + rng.normal(0, 0.01, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.rattle(rng.uniform(0.005, 0.03), seed=int(rng.integers(1 << 30)))
        try:
            topology = find_connectivity(atoms)
        except ValueError:
            k += 1
            continue
        atoms.arrays["energies"] = geometric_energies(atoms)
        # 10 copies of a net share a group (like rattled copies of one hZIF net)
        atoms.info["structure_id"] = f"{NETS[k % len(NETS)]}-{k // (10 * len(NETS))}"
        frames.append(atoms)
        count += topology.n_metals
        k += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, frames, format="extxyz")
    return path


def paper_pipeline(env, spec, folds, train_rows, test_rows):
    """quippy SOAP per fold + pyGPs GPR(Poly(d=4)) getPosterior/predict; out-of-fold predictions."""
    import pyGPs

    from ase_cggpr.descriptors import soap_vectors

    maps = env.maps(spec.representation)
    starts = np.concatenate([[0], np.cumsum([len(m.centre_indices) for m in maps])])
    predictions = np.full(len(env), np.nan)
    for train, test in zip(train_rows, test_rows, strict=True):
        def vectors(rows):
            owners = np.unique(env.owner[rows])
            X = soap_vectors([maps[o] for o in owners], spec)  # recomputed for this fold
            local = np.concatenate([np.arange(starts[o], starts[o + 1]) for o in owners])
            position = {r: i for i, r in enumerate(local.tolist())}
            return X[[position[r] for r in rows.tolist()]]

        Xtr, Xte = vectors(train), vectors(test)
        y = env.labels[train]
        model = pyGPs.GPR()
        model.setPrior(mean=pyGPs.mean.Const(float(y.mean())), kernel=pyGPs.cov.Poly(d=4))
        model.setNoise(log_sigma=float(np.log(spec.noise)))
        model.getPosterior(Xtr, y.reshape(-1, 1), der=False)
        ym, *_ = model.predict(Xte)
        predictions[test] = np.asarray(ym).ravel()
    return predictions


def gap_fit_pipeline(env, spec, train_rows, test_rows, workdir: Path, n_sparse: int):
    """gap_fit on per-Zn local_property labels (AB2 beads), predictions from quippy Potential per-atom energies."""
    from ase.io import write
    from quippy.potential import Potential

    maps = env.maps(spec.representation)
    starts = np.concatenate([[0], np.cumsum([len(m.centre_indices) for m in maps])])
    predictions = np.full(len(env), np.nan)
    soap = (f"soap cutoff={spec.cutoff} cutoff_transition_width={spec.cutoff_transition_width} "
            f"atom_sigma={spec.atom_sigma} n_max={spec.n_max} l_max={spec.l_max} n_species=2 species_Z={{{{14 8}}}} "
            f"n_Z=1 Z={{{{14}}}} covariance_type=dot_product zeta={spec.zeta} delta=1.0 add_species=F "
            f"n_sparse={n_sparse} sparse_method=cur_points")
    for k, (train, test) in enumerate(zip(train_rows, test_rows, strict=True)):
        frames = []
        owners = np.unique(env.owner[train])
        for o in owners:
            s = maps[o].structure.copy()
            values = np.zeros(len(s))
            rows = np.arange(starts[o], starts[o + 1])
            keep = np.isin(rows, train)
            values[maps[o].centre_indices] = env.labels[rows]
            mask = np.zeros(len(s), dtype=bool)
            mask[maps[o].centre_indices[keep]] = True
            s.arrays["e_local"] = values
            s.arrays["local_property_mask"] = mask
            frames.append(s)
        train_file = workdir / f"gap_train_{k}.xyz"
        write(train_file, frames, format="extxyz")
        gap_xml = workdir / f"gap_{k}.xml"
        command = ["gap_fit", f"at_file={train_file}", f"gap={{{soap}}}", "default_sigma={0.2 0.0 0.0 0.0}",
                   f"default_local_property_sigma={spec.noise}", "local_property_parameter_name=e_local",
                   "e0=0.0", f"gp_file={gap_xml}", "sparse_jitter=1e-8"]
        subprocess.run(command, check=True, capture_output=True, cwd=workdir)
        potential = Potential(param_filename=str(gap_xml))
        for o in np.unique(env.owner[test]):
            s = maps[o].structure.copy()
            s.calc = potential
            per_atom = s.get_potential_energies()
            rows = np.arange(starts[o], starts[o + 1])
            predictions[rows] = per_atom[maps[o].centre_indices]
    return predictions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="*", help="extxyz training files (default: generated rattled copies)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench"))
    parser.add_argument("--representation", default="AB2")
    parser.add_argument("--sizes", default="1000,2000,4000", help="training sizes N (comma-separated)")
    parser.add_argument("--paper-max", type=int, default=4000, help="largest N for the paper's pipeline")
    parser.add_argument("--methods", default="paper,exact,mixed,sparse")
    parser.add_argument("--gap-fit", action="store_true", help="also run gap_fit")
    parser.add_argument("--inducing", type=int, default=4000)
    parser.add_argument("--selection", default="fps", choices=["fps", "cur", "random"],
                        help="how the sparse solver picks inducing environments")
    parser.add_argument("--gap-max", type=int, default=2000, help="largest N for gap_fit")
    parser.add_argument("--gap-sparse", type=int, default=2000, help="gap_fit sparse points")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",") + (["gap_fit"] if args.gap_fit else [])
    n_needed = int(max(sizes) * args.folds / (args.folds - 1) * 1.05) + 100
    data = args.data or [rattled_dataset(n_needed, args.workdir / f"rattled_{n_needed}.extxyz", seed=args.seed)]
    t0 = time.perf_counter()
    env = read_environments(data)
    spec = ModelSpec(representation=args.representation)
    print(f"# data: {len(env)} environments, {len(env.structures)} structures, {env.n_groups} groups "
          f"(read in {time.perf_counter() - t0:.0f} s); {spec.representation} cutoff {spec.cutoff} "
          f"atom_sigma {spec.atom_sigma} n_max {spec.n_max} l_max {spec.l_max} noise {spec.noise}; "
          f"{args.folds}-fold grouped CV; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}",
          flush=True)
    folds = group_folds(env.groups, args.folds, seed=args.seed)
    from ase_cggpr.evaluation import _training_rows, fold_samples, sample_training_rows, shared_kernel_cv

    print(f"{'method':>8} {'N':>6} {'time (s)':>9} {'test RMSE (meV)':>16} {'vs paper: speed-up':>19} "
          f"{'RMS diff of predictions (meV)':>30}", flush=True)
    for n in sizes:
        if "shared" in methods:  # the shared-kernel protocol for every method
            samples = fold_samples(folds, n, seed=args.seed)
            train_rows = [sample_training_rows(samples, k, n)[2] for k in range(args.folds)]
            test_rows = samples
        else:
            train_rows = [_training_rows(folds, k, n, args.seed) for k in range(args.folds)]
            test_rows = [np.flatnonzero(folds == k) for k in range(args.folds)]
        tested = np.concatenate(test_rows)
        reference = None
        for method in methods:
            if (method == "paper" and n > args.paper_max) or (method == "gap_fit" and n > args.gap_max):
                continue
            start = time.perf_counter()
            if method == "paper":
                predictions = paper_pipeline(env, spec, folds, train_rows, test_rows)
            elif method == "gap_fit":
                with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                    predictions = gap_fit_pipeline(env, spec, train_rows, test_rows, Path(tmp),
                                                   n_sparse=min(n, args.gap_sparse))
            elif method == "shared":
                X = SoapCache(None).vectors(env, spec)  # SOAP once, inside the timing
                result = shared_kernel_cv(X, env.labels, env.groups, spec, sizes=[n], seed=args.seed, folds=folds)[0]
                predictions = result.predictions
                del X
            else:
                X = SoapCache(None).vectors(env, spec)  # SOAP once, inside the timing
                solver, options = (("sparse", {"n_inducing": args.inducing, "selection": args.selection})
                                   if method == "sparse"
                                   else ("exact", {"precision": "mixed" if method == "mixed" else "float64"}))
                predictions = np.full(len(env), np.nan)
                for train, test in zip(train_rows, test_rows, strict=True):  # the rows every method uses
                    model = fit_fold(X, env.labels, train, spec, solver=solver, solver_options=options)
                    predictions[test] = model.regressor_.predict(X[test]) + model.reference_energy
                    del model
                del X
            seconds = time.perf_counter() - start
            error = np.mean([rmse(predictions[t], env.labels[t]) for t in test_rows])
            if method == "paper":
                reference = (seconds, predictions)
            speed = f"{reference[0] / seconds:.1f}x" if reference else "-"
            diff = f"{1000 * rmse(predictions[tested], reference[1][tested]):.3g}" if reference else "-"
            print(f"{method:>8} {n:>6} {seconds:>9.1f} {1000 * error:>16.3f} {speed:>19} {diff:>30}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
