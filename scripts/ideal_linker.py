"""Derive a labeller's own ideal imidazolate from its relaxed zni and store it in ``ase_cggpr/data/ideal_linkers.json``.

A dataset build decorates nets with an ideal imidazolate (:func:`ase_cggpr.dataset.decorate.ideal_linker`). MOF-FF's
(the package constants, DFT-optimised ZIF-8(H) of Dürholt et al. 2019) is 0.038 Å RMS (intra-linker distances)
from ACE zif-ace-24's relaxed imidazolate, so ACE frames built with it carry a linker strain of their own. This
script measures the mean internal geometry (5 bond lengths, 2 angles; :func:`ase_cggpr.dataset.decorate.
measure_im_geometry`) of the linkers of one structure relaxed with the labeller (default: zni of the bundled
``ace_relaxed.extxyz``, made by ``scripts/relax_real_zifs.py --labeller ace:PATH``) and records it under the
potential's SHA-256 (taken from the companion ``<labeller>_reference.json``) with its provenance, and the RMS
distance of every bundled relaxed structure's linkers from MOF-FF's ideal linker and from the new one.
Only the geometry is stored, never the potential file.

    python scripts/ideal_linker.py [--relaxed ase_cggpr/data/real_zifs/ace_relaxed.extxyz] [--structure zni]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from ase.io import read

from ase_cggpr.beads import find_connectivity
from ase_cggpr.dataset.decorate import IM_GEOMETRY, ideal_linker, measure_im_geometry
from ase_cggpr.linker_geometry import linker_rmsd

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RELAXED = ROOT / "ase_cggpr" / "data" / "real_zifs" / "ace_relaxed.extxyz"
DEFAULT_OUT = ROOT / "ase_cggpr" / "data" / "ideal_linkers.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--relaxed", type=Path, default=DEFAULT_RELAXED,
                        help="extxyz of structures relaxed with the labeller (info 'name'); its labeller and "
                             "potential SHA-256 are read from <labeller>_reference.json beside it")
    parser.add_argument("--structure", default="zni", help="which structure's linkers to average (default zni)")
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    reference = args.relaxed.with_name(args.relaxed.name.replace("_relaxed.extxyz", "_reference.json"))
    try:
        frames = read(args.relaxed, ":", format="extxyz")
        provenance = json.loads(reference.read_text())["labeller"]
    except (OSError, ValueError, KeyError) as error:
        print(f"error: cannot read {args.relaxed} and its {reference.name}: {error}", file=sys.stderr)
        return 1
    by_name = {a.info.get("name"): a for a in frames}
    if args.structure not in by_name:
        print(f"error: {args.relaxed} has no structure named {args.structure!r} ({', '.join(map(str, by_name))})",
              file=sys.stderr)
        return 1
    measured = measure_im_geometry(by_name[args.structure], find_connectivity(by_name[args.structure]))
    geometry = {k: round(measured[k], 6) for k in IM_GEOMETRY}
    new, mofff = ideal_linker(**geometry), ideal_linker()
    rms = {}
    for name, atoms in by_name.items():
        con = find_connectivity(atoms)
        rms[name] = {"mofff_ideal": round(float(np.sqrt(np.nanmean(linker_rmsd(atoms, con) ** 2))), 5),
                     "this_ideal": round(float(np.sqrt(np.nanmean(linker_rmsd(atoms, con, new) ** 2))), 5)}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    entry = {
        "labeller": provenance.get("labeller"), "potential": provenance.get("potential"),
        "geometry": geometry,
        "spread": {k: round(measured[f"{k}_std"], 6) for k in IM_GEOMETRY},
        "n_linkers": measured["n_linkers"],
        "source": f"mean over the {measured['n_linkers']} imidazolates of {args.structure} in "
                  f"{args.relaxed.relative_to(ROOT) if args.relaxed.is_relative_to(ROOT) else args.relaxed.name}"
                  f" (relaxed with this potential, positions and cell)",
        "rms_intra_linker_distance_A": rms,
        "command": " ".join(["python scripts/ideal_linker.py",
                             shlex.join(argv if argv is not None else sys.argv[1:])]).strip(),
        "package_commit": commit,
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data.setdefault("description", "Each labeller's own ideal imidazolate (Zn(Im)2 builds decorate nets with it; "
                    "ase_cggpr.dataset.config.im_geometry_of), keyed by the potential file's SHA-256: bond lengths "
                    "(Å) and angles (degrees) of ase_cggpr.dataset.decorate.ideal_linker. MOF-FF keeps the "
                    "package's constants (decorate.IM_GEOMETRY). Made by scripts/ideal_linker.py.")
    data.setdefault("potentials", {})[provenance["sha256"]] = entry
    args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({"mofff": {k: round(v, 4) for k, v in IM_GEOMETRY.items()}, "new": geometry}, indent=1))
    print(f"max |difference| of the in-plane coordinates from MOF-FF's: {np.abs(new - mofff).max():.4f} Å")
    for name, r in rms.items():
        print(f"{name:8s} linker RMS from MOF-FF's ideal {r['mofff_ideal']:.4f} Å, "
              f"from this one {r['this_ideal']:.4f} Å")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
