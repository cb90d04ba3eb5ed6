"""Label the stored MOF-FF relaxations themselves as training / test frames (issue 18).

The build's ``rattle=none`` frames are ideal linkers re-decorated on the relaxed beads, on average 42 meV per
Zn above the relaxed structure, so the dataset never contained a MOF-FF-relaxed atomistic frame. This script
labels every stored relaxation (``datasets/full-build/relaxed``) with per-atom MOF-FF energies exactly as the
build labels its frames (same decorator connectivity, same local energies, same zni reference) and writes

    OUT/relaxed_atomistic.extxyz   (info: net, framework_type, rattle='relaxed', order='relaxed', relax_seconds,
                                    mofff_energy, reference_energy, structure_id; arrays: e_local on the Zn)
    OUT/relaxed_cg.extxyz          (the Si/O bead structures of the same frames)

    python scripts/label_relaxed_frames.py -o OUT [--workers 2]

``framework_type`` is the net's coordination-sequence key, the same as in the build's merged files.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def label_one(net, store: Path, reference_energy: float):
    from ase.io import read

    from ase_cggpr.dataset.decorate import decorate
    from ase_cggpr.dataset.pipeline import (
        align_restored,
        bond_shifts,
        coarse_grained_of,
        core_connectivity,
        local_energies_of,
        safe_name,
    )
    from ase_cggpr.mofff import MOFFFCalculator

    path = store / "relaxed" / f"{safe_name(net.name)}.extxyz.gz"
    with gzip.open(path, "rt") as handle:
        relaxed = read(handle, format="extxyz")
    dec = decorate(net)
    atoms = align_restored(relaxed, dec, net.name)
    connectivity = core_connectivity(dec, net.name)
    bonds, shifts = np.array(dec.bonds), bond_shifts(dec, net)
    bonds = matched_zn_n_bonds(atoms, dec, bonds, shifts, net.name)
    calc = MOFFFCalculator(bonds=[tuple(b) for b in bonds.tolist()], shifts=shifts)
    try:
        atoms.calc = calc
        energies = np.array(atoms.get_potential_energies(), dtype=float)
        atoms.calc = None
    finally:
        calc.close()
    labelled = atoms.copy()
    labelled.arrays["energies"] = energies
    e_local = local_energies_of(labelled, connectivity)
    message = str(relaxed.info.get("relax_message", ""))
    match = re.search(r"in ([0-9.]+) s", message)
    info = dict(net=net.name, framework_type=net.framework_type, rattle="relaxed", order="relaxed", batch=0,
                relax_converged=bool(relaxed.info.get("relax_converged", False)),
                relax_seconds=float(match.group(1)) if match else float("nan"),
                reference_energy=reference_energy, mofff_energy=float(energies.sum()))
    per_atom = np.full(len(atoms), np.nan)
    per_atom[connectivity.metal_indices] = e_local
    out = atoms.copy()
    out.info = dict(info)
    out.arrays["e_local"] = per_atom
    cg = coarse_grained_of(atoms, connectivity)
    cg_local = np.full(len(cg), np.nan)
    cg_local[: dec.n_zn] = e_local
    cg.info = dict(info)
    cg.arrays["e_local"] = cg_local
    return out, cg


def matched_zn_n_bonds(atoms, dec, bonds, shifts, name, longest: float = 2.6):
    """The decorator's bonds with each Zn-N bond on the N atom that the stored relaxation bonds to Zn.

    Since the relaxations were stored, the decorator places some linkers flipped (N1 <-> N3, C4 <-> C5,
    H4 <-> H5: the same ring centroid, the same bead, so the build's frames are unchanged), so for those
    linkers the decorator's Zn-N bond names the linker's other N (4.2 A away in the relaxed structure). Each
    Zn-N bond longer than ``longest`` is moved to the other N of the same linker; every bond is then checked."""
    b = bonds.copy()
    symbols = np.array(atoms.get_chemical_symbols())
    cell = atoms.cell.array

    def length(i, j, k):
        return float(np.linalg.norm(atoms.positions[j] + shifts[k] @ cell - atoms.positions[i]))

    owner = np.empty(len(atoms), dtype=int)
    owner[:] = -1
    for k in range(len(dec.linker_zn)):
        owner[dec.linker_atoms(k)] = k
    for k, (i, j) in enumerate(b):
        zn, n = (i, j) if symbols[i] == "Zn" else (j, i)
        if symbols[zn] != "Zn" or symbols[n] != "N" or length(i, j, k) <= longest:
            continue
        linker = dec.linker_atoms(owner[n])
        other = [a for a in linker if symbols[a] == "N" and a != n]
        b[k] = (zn, other[0]) if i == zn else (other[0], zn)
    lengths = np.array([length(i, j, k) for k, (i, j) in enumerate(b)])
    if lengths.max() > longest:
        raise ValueError(f"{name}: bond of {lengths.max():.2f} A after matching the linkers' N atoms")
    return b


def _task(args):
    net, store, reference = args
    try:
        return net.name, label_one(net, store, reference), None
    except Exception as error:  # noqa: BLE001 - one bad net never loses the rest
        return net.name, None, f"{type(error).__name__}: {error}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--store", type=Path, default=ROOT / "datasets" / "full-build")
    parser.add_argument("--nets", nargs="*", type=Path, default=[SHARED / "nets" / "iza", SHARED / "nets" / "chic1"])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    from ase.io import write

    from ase_cggpr.dataset import BuildConfig, read_nets

    t0 = time.perf_counter()
    nets, _ = read_nets(args.nets, cache=True)
    nets.sort(key=lambda n: (n.n_a, n.name))
    reference = BuildConfig().reference_energy
    print(f"{len(nets)} nets read in {time.perf_counter() - t0:.0f} s", flush=True)
    results, failures = [], {}
    with ProcessPoolExecutor(args.workers) as pool:
        for k, (name, frames, error) in enumerate(pool.map(_task, [(n, args.store, reference) for n in nets])):
            if error:
                failures[name] = error
                print(f"{name}: {error}", file=sys.stderr, flush=True)
            else:
                results.append(frames)
            if (k + 1) % 50 == 0:
                print(f"{k + 1}/{len(nets)} nets labelled ({time.perf_counter() - t0:.0f} s)", flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    for which, index in (("atomistic", 0), ("cg", 1)):
        images = []
        for sid, pair in enumerate(results):
            image = pair[index]
            image.info["structure_id"] = sid
            images.append(image)
        tmp = args.output / f"relaxed_{which}.tmp.extxyz"
        write(tmp, images, format="extxyz")
        tmp.replace(args.output / f"relaxed_{which}.extxyz")
    n_env = sum(int(np.isfinite(p[1].arrays["e_local"]).sum()) for p in results)
    labels = np.concatenate([p[1].arrays["e_local"][np.isfinite(p[1].arrays["e_local"])] for p in results])
    print(f"{len(results)} relaxed frames, {n_env} Zn environments, {len(failures)} failures; raw local energy "
          f"{labels.mean():.3f} +- {labels.std():.3f} eV; {time.perf_counter() - t0:.0f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
