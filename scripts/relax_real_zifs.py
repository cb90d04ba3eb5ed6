"""Relax the 7 real Zn(Im)2 structures with MOF-FF and write the demo's bundled reference data.

Input: the DFT-optimised CIFs of Dürholt, Fraux, Coudert, Schmid, J. Chem. Theory Comput. 2019, 15, 2420
(supporting information, CC BY 4.0) in ``../shared/data/zif-structures``: ZIF1, ZIF4, ZIF6, ZIF8_H, coi, nog,
zni (ZIF8_CH3 is Zn(mIm)2, not Zn(Im)2, and is left out).

Each CIF, as given, is evaluated once with MOF-FF (single point) and relaxed with
:func:`ase_cggpr.mofff.relax_mofff` (positions and cell lengths at zero pressure) under the dataset build's
convergence criteria (``BuildConfig().fmax`` eV/Å, ``BuildConfig().pmax_atm`` atm). Energies are the
dataset's labels: the mean MOF-FF local energy per Zn (:func:`ase_cggpr.labels.local_energies`) minus
``BuildConfig().reference_energy`` (relaxed zni), in eV.

Writes into ``--out`` (default ``ase_cggpr/data/real_zifs``):
  ``<name>.cif``            the CIFs, copied byte for byte
  ``mofff_relaxed.extxyz``  the relaxed structures (info: name, framework_type, mofff_energy_per_zn)
  ``mofff_reference.json``  per structure: E/Zn of the CIF and of the relaxed structure, relax time,
                            convergence (max force, max |P_ii|), cell, and the command that made the file

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python scripts/relax_real_zifs.py --workers 2 [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CIFS = ROOT.parent / "shared" / "data" / "zif-structures"
DEFAULT_OUT = ROOT / "ase_cggpr" / "data" / "real_zifs"
#: the 7 Zn(Im)2 structures and their framework type (three-letter net)
STRUCTURES = {"ZIF1": "crb", "ZIF4": "cag", "ZIF6": "gis", "ZIF8_H": "sod", "coi": "coi", "nog": "nog",
              "zni": "zni"}
SOURCE = ("Dürholt, Fraux, Coudert, Schmid, J. Chem. Theory Comput. 2019, 15, 2420, supporting information "
          "(DFT-optimised structures), CC BY 4.0")


def read_cif(path: Path):
    from ase.io import read

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ASE: "crystal system 'triclinic' is not interpreted" for P1
        return read(path)


def energy_per_zn(atoms, energies: np.ndarray, reference: float) -> tuple[float, list[float]]:
    """The dataset label of a structure: mean local energy per Zn minus the reference (eV), and the locals."""
    from ase_cggpr.labels import local_energies

    labelled = atoms.copy()
    labelled.calc = None
    labelled.arrays["energies"] = np.asarray(energies, float)
    e_local = local_energies(labelled, label_key="energies")
    return float(e_local.mean() - reference), [float(x) for x in e_local]


def relax_one(job: tuple[str, str, float, float, float, str]) -> dict:
    name, cif, fmax, pmax, reference, labeller_spec = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    atoms = read_cif(Path(cif))
    n_zn = int((atoms.numbers == 30).sum())
    sp = atoms.copy()
    if labeller_spec == "mofff":  # MOF-FF through LAMMPS, as the bundled reference was made
        from ase_cggpr.mofff import MOFFFCalculator, relax_mofff

        sp.calc = MOFFFCalculator()
        e_cif, _ = energy_per_zn(atoms, sp.get_potential_energies(), reference)
        sp.calc.close()
        t0 = time.perf_counter()
        result = relax_mofff(atoms, cell=True, fmax=fmax, pmax_atm=pmax)
    else:  # any other labeller (ACE): ASE LBFGS/FIRE with FrechetCellFilter, the same criteria
        from ase_cggpr.labellers import labeller_from_spec

        labeller = labeller_from_spec(labeller_spec)
        sp.calc = labeller.make_calculator()
        e_cif, _ = energy_per_zn(atoms, sp.get_potential_energies(), reference)
        t0 = time.perf_counter()
        result = labeller.relax(atoms, cell=True, fmax=fmax, pmax_atm=pmax)
    seconds = time.perf_counter() - t0
    relaxed = result.atoms
    e_relaxed, e_local = energy_per_zn(relaxed, relaxed.get_potential_energies(), reference)
    out = relaxed.copy()
    out.calc = None
    prefix = "mofff" if labeller_spec == "mofff" else labeller_spec.split(":", 1)[0]
    out.info.update(name=name, framework_type=STRUCTURES[name], reference_energy=reference,
                    relax_converged=bool(result.converged), **{f"{prefix}_energy_per_zn": e_relaxed})
    return {
        "name": name, "framework_type": STRUCTURES[name], "cif": f"{name}.cif", "n_atoms": len(atoms),
        "n_zn": n_zn, "formula": atoms.get_chemical_formula(),
        "energy_per_zn_cif_eV": e_cif, "energy_per_zn_relaxed_eV": e_relaxed,
        "local_energy_std_relaxed_eV": float(np.std(e_local)),
        "relax_seconds": seconds, "converged": bool(result.converged),
        "max_force_eV_A": float(result.max_force), "max_pressure_atm": float(result.max_pressure_atm),
        "n_steps": int(result.n_steps), "message": result.message,
        "cell_lengths_cif_A": [float(x) for x in atoms.cell.lengths()],
        "cell_lengths_relaxed_A": [float(x) for x in relaxed.cell.lengths()],
        "volume_change": float(relaxed.get_volume() / atoms.get_volume() - 1.0),
        "_atoms": out,
    }


def main(argv: list[str] | None = None) -> int:
    from ase_cggpr.dataset.pipeline import BuildConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cifs", type=Path, default=DEFAULT_CIFS, help="folder of the CIFs (default ../shared/data)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default ase_cggpr/data/real_zifs)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", nargs="+", choices=sorted(STRUCTURES), help="a subset (for a quick check)")
    ap.add_argument("--force", action="store_true", help="overwrite existing outputs")
    ap.add_argument("--labeller", default="mofff", metavar="{mofff,ace:PATH}",
                    help="mofff (default: mofff_relaxed.extxyz, mofff_reference.json) or ace:PATH (python-ace, "
                         "optional non-commercial extra: ace_relaxed.extxyz, ace_reference.json; energies relative "
                         "to the labeller's own relaxed zni)")
    args = ap.parse_args(argv)
    from ase_cggpr.errors import OptionError
    from ase_cggpr.labellers import labeller_from_spec

    try:
        labeller = labeller_from_spec(args.labeller)
        labeller.check_available()
    except (OptionError, ImportError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    from ase.io import write

    from ase_cggpr.outputs import atomic_output, check_output

    config = BuildConfig()
    names = args.only or list(STRUCTURES)
    missing = [n for n in names if not (args.cifs / f"{n}.cif").is_file()]
    if missing:
        print(f"Error: {args.cifs}: missing {', '.join(f'{n}.cif' for n in missing)} (give --cifs)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = labeller.name
    xyz, js = args.out / f"{prefix}_relaxed.extxyz", args.out / f"{prefix}_reference.json"
    for path in (xyz, js):
        check_output(path, force=args.force)
    command = "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python scripts/relax_real_zifs.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    reference = config.reference_energy if prefix == "mofff" else labeller.reference_energy()
    spec = "mofff" if prefix == "mofff" else f"{prefix}:{labeller.path}"
    jobs = [(n, str(args.cifs / f"{n}.cif"), config.fmax, config.pmax_atm, reference, spec) for n in names]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        results = list(pool.map(relax_one, jobs))
    wall = time.perf_counter() - t0
    for r in results:
        print(f"{r['name']:7s} {r['framework_type']}  {r['n_zn']:3d} Zn  "
              f"E/Zn CIF {1000 * r['energy_per_zn_cif_eV']:8.1f} meV  "
              f"relaxed {1000 * r['energy_per_zn_relaxed_eV']:8.1f} meV  {r['relax_seconds']:6.1f} s  "
              f"converged {r['converged']} (fmax {r['max_force_eV_A']:.1e} eV/Å, "
              f"|P| {r['max_pressure_atm']:.1f} atm)",
              flush=True)
    for n in names:
        shutil.copyfile(args.cifs / f"{n}.cif", args.out / f"{n}.cif")
    report = {
        "labeller": labeller.provenance(),
        "description": (f"{prefix} energy per Zn (eV) of the real Zn(Im)2 structures, as the dataset labels are: mean "
                        "local energy per Zn minus reference_energy_eV (relaxed zni); 'cif' is a single point on the "
                        f"CIF as given, 'relaxed' after {prefix} relaxation of positions and cell"),
        "source": SOURCE,
        "command": command,
        "package_commit": _commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reference_energy_eV": reference,
        "fmax_eV_A": config.fmax, "pmax_atm": config.pmax_atm,
        "wall_seconds": wall, "workers": args.workers,
        "structures": [{k: v for k, v in r.items() if k != "_atoms"} for r in results],
    }
    with atomic_output(xyz, force=args.force) as tmp:
        write(tmp, [r["_atoms"] for r in results], format="extxyz")
    with atomic_output(js, force=args.force) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {js} and {xyz} ({wall:.0f} s)")
    return 0 if all(r["converged"] for r in results) else 2


def _commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
