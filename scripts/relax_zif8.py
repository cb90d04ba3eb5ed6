"""Relax ZIF-8 (Zn(mIm)2, sod) with MOF-FF and compare it with its own Im analogue, relaxed the same way.

The DFT-optimised ZIF-8 CIF (``../shared/data/zif-structures/ZIF8_CH3.cif``, the bcc primitive cell, 6 Zn) is
turned into its cubic conventional cell (12 Zn, orthogonal: LAMMPS' ``box/relax`` works best there) and
relaxed with :func:`ase_cggpr.mofff.relax_mofff` (positions and cell lengths at zero pressure, the package's
convergence check: max force < ``--fmax``, max |P_ii| < ``--pmax``).  Its Im analogue is the same
framework with each methyl replaced by an H on C2 (along C2->CH3, C-H 1.0989 Å, the H set's r0), relaxed the
same way.  Prints, and with ``-o`` writes as JSON (plus the relaxed structures as extxyz beside it), the
MOF-FF energy per Zn of both, their difference, cell lengths and convergence.

Note: the two energies come from two different parameter sets (CH3 and H, Dürholt et al. 2019) with
different charges and ring terms, so their difference is not a substitution energy with a common zero; it is
the number the issue asks for (energy per Zn relative to its own Im analogue).

    python scripts/relax_zif8.py                       # uses ../shared/data
    python scripts/relax_zif8.py --cif ZIF8_CH3.cif -o zif8_relax.json --im-cif ZIF8_H.cif
    python scripts/relax_zif8.py --store-reference [--force]   # the package's ZIF-8 reference (issue 33)

``--store-reference`` writes ZIF-8 relaxed with MOF-FF and its MOF-FF energy into the package, beside the Im
references: ``ase_cggpr/data/real_zifs/zif8_mofff_relaxed.extxyz`` (info: name, framework_type, labeller,
mofff_energy_per_zn, reference_energy, relax_converged; arrays: e_local on the Zn, the MOF-FF CH3 set's local
energy per Zn) and ``zif8_mofff_reference.json`` (energy per Zn as the dataset labels are: mean local energy per
Zn minus ``BuildConfig().reference_energy``, the Im-relaxed zni; source, command, commit, date, convergence).

Measured (2026-12-02, cubic cells, fmax 1e-3 eV/Å, pmax 50 atm; 22 s, 140 MB): ZIF-8 -7.764209 eV/Zn
(a = 17.0907 Å, from 17.0291), its Im analogue -0.431710 eV/Zn (a = 16.9716 Å), difference -7.332499 eV/Zn;
the DFT ZIF-8(H) CIF relaxed the same way: -0.431710 eV/Zn (a = 16.9709 Å), the Im analogue's minimum.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from ase import Atoms

DEFAULT_CIF = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "zif-structures" / "ZIF8_CH3.cif"
D_C2H = 1.0989  # Å, H set r0 of c3_h1n2-h1_c1S


def read_cif(path: Path) -> Atoms:
    from ase.io import read

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ASE: "crystal system 'triclinic' is not interpreted" for P1
        return read(path)


def conventional(atoms: Atoms) -> Atoms:
    """The cubic cell of a bcc primitive cell (rows a1, a2, a3 with a_i . a_j = -a^2/4): M = [[0,1,1],...]."""
    from ase.build import make_supercell

    M = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    conv = M @ atoms.cell.array
    lengths = np.linalg.norm(conv, axis=1)
    if not np.allclose(conv @ conv.T, np.diag(lengths**2), atol=1e-3 * lengths.max() ** 2):
        return atoms.copy()  # not a bcc primitive cell: relax it as given
    out = make_supercell(atoms, M)
    R = np.linalg.solve(out.cell.array, np.diag(lengths))  # rotate onto the axes
    out.positions = out.positions @ R
    out.set_cell(np.diag(lengths), scale_atoms=False)
    out.wrap()
    return out


def replace_methyls_by_h(atoms: Atoms) -> Atoms:
    """The Im analogue: every methyl on a C bonded to two N becomes an H on that C (along C2->CH3)."""
    from ase.neighborlist import neighbor_list

    i, j, D = neighbor_list("ijD", atoms, {("C", "N"): 1.6, ("C", "C"): 1.6, ("C", "H"): 1.25})
    sym = np.array(atoms.get_chemical_symbols())
    out = atoms.copy()
    remove = []
    for c2 in np.flatnonzero(sym == "C"):
        partners = j[i == c2]
        if (sym[partners] == "N").sum() != 2:
            continue
        methyl = [x for x in partners if sym[x] == "C"]
        if not methyl:
            continue
        (me,) = methyl
        u = D[(i == c2) & (j == me)][0]
        out.positions[me] = atoms.positions[c2] + D_C2H * u / np.linalg.norm(u)
        out.symbols[me] = "H"
        remove += [int(h) for h in j[i == me] if sym[h] == "H"]
    del out[remove]
    return out


def relax_one(atoms: Atoms, name: str, fmax: float, pmax: float, verbose: bool) -> dict:
    from ase_cggpr.mofff import relax_mofff

    t0 = time.perf_counter()
    res = relax_mofff(atoms, cell=True, fmax=fmax, pmax_atm=pmax, verbose=verbose)
    n_zn = int((atoms.numbers == 30).sum())
    out = res.atoms
    e0 = atoms.copy()
    from ase_cggpr.mofff import MOFFFCalculator

    e0.calc = MOFFFCalculator()
    return {
        "name": name, "n_atoms": len(atoms), "n_zn": n_zn, "formula": atoms.get_chemical_formula(),
        "energy_per_zn_eV": out.get_potential_energy() / n_zn,
        "energy_per_zn_unrelaxed_eV": e0.get_potential_energy() / n_zn,
        "cell_lengths_A": [float(x) for x in out.cell.lengths()],
        "cell_lengths_start_A": [float(x) for x in atoms.cell.lengths()],
        "converged": bool(res.converged), "max_force_eV_A": res.max_force,
        "max_pressure_atm": res.max_pressure_atm, "n_steps": res.n_steps, "message": res.message,
        "seconds": time.perf_counter() - t0, "_atoms": out,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cif", type=Path, default=DEFAULT_CIF, help="ZIF-8 CIF (default: ../shared/data)")
    ap.add_argument("-o", "--output", type=Path, help="JSON report (relaxed structures beside it, .extxyz)")
    ap.add_argument("--fmax", type=float, default=1e-3, help="force criterion, eV/Å (default 1e-3)")
    ap.add_argument("--pmax", type=float, default=50.0, help="pressure criterion, atm (default 50)")
    ap.add_argument("--im-cif", type=Path,
                    help="also relax this Zn(Im)2 CIF the same way as a cross-check of the Im analogue "
                         "(e.g. ../shared/data/zif-structures/ZIF8_H.cif, the DFT ZIF-8(H))")
    ap.add_argument("--primitive", action="store_true", help="relax the CIF's cell as given (not the cubic one)")
    ap.add_argument("--force", action="store_true", help="overwrite existing outputs")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--store-reference", action="store_true",
                    help="write ZIF-8 relaxed with MOF-FF and its reference energy into ase_cggpr/data/real_zifs "
                         "(zif8_mofff_relaxed.extxyz, zif8_mofff_reference.json)")
    args = ap.parse_args(argv)
    from ase_cggpr.outputs import atomic_output, check_output

    if not args.cif.is_file():
        print(f"Error: {args.cif}: no such file (give --cif)", file=sys.stderr)
        return 1
    xyz = None
    if args.output:
        check_output(args.output, force=args.force)
        xyz = args.output.with_suffix(".extxyz")
        check_output(xyz, force=args.force)
    cif = read_cif(args.cif)
    mim = cif.copy() if args.primitive else conventional(cif)
    im = replace_methyls_by_h(mim)
    results = [relax_one(mim, "ZIF-8 Zn(mIm)2", args.fmax, args.pmax, args.verbose),
               relax_one(im, "ZIF-8 Im analogue Zn(Im)2", args.fmax, args.pmax, args.verbose)]
    if args.im_cif:
        other = read_cif(args.im_cif)
        results.append(relax_one(other if args.primitive else conventional(other), args.im_cif.stem,
                                 args.fmax, args.pmax, args.verbose))
    report = {
        "cif": str(args.cif), "fmax_eV_A": args.fmax, "pmax_atm": args.pmax,
        "structures": [{k: v for k, v in r.items() if k != "_atoms"} for r in results],
        "energy_per_zn_mIm_minus_Im_eV": results[0]["energy_per_zn_eV"] - results[1]["energy_per_zn_eV"],
    }
    for r in report["structures"]:
        print(f"{r['name']:28s} {r['formula']:14s} E/Zn {r['energy_per_zn_eV']:12.6f} eV "
              f"(unrelaxed {r['energy_per_zn_unrelaxed_eV']:.6f})  a,b,c "
              f"{' '.join(f'{x:.4f}' for x in r['cell_lengths_A'])} Å  converged {r['converged']} "
              f"(fmax {r['max_force_eV_A']:.1e} eV/Å, |P| {r['max_pressure_atm']:.1f} atm, {r['seconds']:.1f} s)")
    print(f"E/Zn(mIm) - E/Zn(Im analogue) = {report['energy_per_zn_mIm_minus_Im_eV']:.6f} eV")
    if args.output:
        from ase.io import write

        with atomic_output(xyz, force=args.force) as tmp:
            write(tmp, [r["_atoms"] for r in results], format="extxyz")
        with atomic_output(args.output, force=args.force) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
    if args.store_reference:
        store_reference(results[0], args, argv)
    return 0 if all(r["converged"] for r in results) else 2


REAL_ZIFS = Path(__file__).resolve().parents[1] / "ase_cggpr" / "data" / "real_zifs"


def store_reference(result: dict, args, argv: list[str] | None) -> None:
    """Write ``zif8_mofff_relaxed.extxyz`` and ``zif8_mofff_reference.json`` (see the module docstring)."""
    import datetime
    import subprocess

    from ase.io import write

    from ase_cggpr.dataset import BuildConfig
    from ase_cggpr.labels import local_energies
    from ase_cggpr.mofff import MOFFFCalculator
    from ase_cggpr.outputs import atomic_output, check_output

    xyz, ref = REAL_ZIFS / "zif8_mofff_relaxed.extxyz", REAL_ZIFS / "zif8_mofff_reference.json"
    for path in (xyz, ref):
        check_output(path, force=args.force)
    atoms = result["_atoms"].copy()
    calc = MOFFFCalculator()
    atoms.calc = calc
    energies = np.array(atoms.get_potential_energies(), dtype=float)
    total = float(atoms.get_potential_energy())
    atoms.calc = None
    labelled = atoms.copy()
    labelled.arrays["energies"] = energies
    e_local = local_energies(labelled, name="ZIF-8")
    reference = float(BuildConfig().reference_energy)
    zn = np.flatnonzero(atoms.numbers == 30)
    out = atoms.copy()
    out.info = dict(name="ZIF8_CH3", framework_type="sod", labeller="mofff", linker="mIm",
                    mofff_energy_per_zn=total / len(zn), reference_energy=reference,
                    relax_converged=bool(result["converged"]))
    per_atom = np.full(len(out), np.nan)
    per_atom[zn] = e_local
    out.arrays["e_local"] = per_atom
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=REAL_ZIFS).stdout.strip()
    except OSError:
        commit = ""
    data = {
        "description": "MOF-FF (CH3 set) energy per Zn (eV) of ZIF-8, Zn(mIm)2 sod, after MOF-FF relaxation of "
                       "positions and cell lengths (cubic cell, 12 Zn), as the dataset labels are: mean local "
                       "energy per Zn minus reference_energy_eV (Im-relaxed zni; the CH3 set's zero lies about "
                       "7.3 eV per Zn below the H set's)",
        "source": "ZIF8_CH3.cif: Dürholt, Fraux, Coudert, Schmid, J. Chem. Theory Comput. 2019, 15, 2420, supporting "
                  "information (DFT-optimised structures), CC BY 4.0; relaxed here with MOF-FF (ase_cggpr.mofff)",
        "command": "python scripts/relax_zif8.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "package_commit": commit,
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "reference_energy_eV": reference, "fmax_eV_A": args.fmax, "pmax_atm": args.pmax,
        "name": "ZIF8_CH3", "framework_type": "sod", "n_atoms": len(out), "n_zn": int(len(zn)),
        "formula": out.get_chemical_formula(),
        "energy_per_zn_relaxed_eV": float(np.mean(e_local)) - reference,
        "mofff_total_energy_per_zn_eV": total / len(zn),
        "local_energy_std_relaxed_eV": float(np.std(e_local)),
        **{k: result[k] for k in ("converged", "max_force_eV_A", "max_pressure_atm", "n_steps", "message",
                                  "seconds", "cell_lengths_A", "cell_lengths_start_A")},
    }
    with atomic_output(xyz, force=args.force) as tmp:
        write(tmp, out, format="extxyz")
    with atomic_output(ref, force=args.force) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {xyz.name} and {ref.name}: {data['energy_per_zn_relaxed_eV']:.6f} eV per Zn above Im zni "
          f"(MOF-FF total {data['mofff_total_energy_per_zn_eV']:.6f} eV per Zn)")


if __name__ == "__main__":
    sys.exit(main())
