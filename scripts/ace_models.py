"""ACE-grade models (issue 30 item 4): label the ACE build's stored relaxations, train ``AB2-ace`` with the
shipped recipe on held-out framework types, check it on the real ZIFs and the a-ZIF study's DFT gaps, save it.

Re-run it whenever the ACE build store (``datasets/ace-build``) has grown: it uses every stored relaxation.

    pip install ".[ace]"
    OPENBLAS_NUM_THREADS=1 python scripts/ace_models.py --potential ../shared/data/ace/zif-ace-24.yaml \\
        -o runs/ace-models [--save ase_cggpr/models/AB2-ace.npz --overwrite]

Steps:

1. **Nets.** The nets whose ACE relaxation is in the store, written as a subset of the shared net files into
   ``OUT/nets`` (IZA files copied; the CHIC-1 multi-block files cut to the stored blocks, names unchanged), so
   the build reads 77 nets in seconds instead of all 566 in a quarter of an hour. Frame seeds depend on the net
   name only, so the frames are those of the whole build.
2. **Labels.** ``scripts/build_full_dataset.py -o OUT/build --nets OUT/nets --labeller ace:POTENTIAL
   --stop-after 0``: restores the stored relaxations, relaxes nothing new, labels each net's frames with ACE
   (the relaxed frame itself included); ``OUT/build/cg.extxyz`` is the coarse-grained dataset.
3. **Model.** :func:`ase_cggpr.recipes.train` (the shipped models' recipe ``rd-shifted+relaxed``): held-out
   validation on ``min(50, types // 5)`` framework types never seen in training (seeded), calibration on them,
   then the same recipe retrained on every framework type (``--final all``) or the validated model itself.
4. **Checks** (printed, written to ``OUT/ace_models.json`` and into the model card, ``training.checks``): the
   bundled real Zn(Im)2 structures after ACE relaxation (``ase_cggpr/data/real_zifs/ace_relaxed.extxyz``)
   predicted and ranked against ACE (``ace_reference.json``: Spearman, RMSE, mean error), and the a-ZIF study's
   DFT gaps (zni 61.0 and coi 54.7 meV per Zn below ZIF-4) on the same ACE-relaxed zni, coi and ZIF-4.
5. **Targets** (issue 30; printed as met / MISSED): held-out relaxed frameworks RMSE <= 20 meV per Zn (of each
   framework's energy per Zn), |mean error| <= 5 meV, Spearman >= 0.95; both DFT gaps within 15 meV. Ship the
   model (``--save ase_cggpr/models/AB2-ace.npz``; ``cggpr demo`` then adds it) only when they are met.
6. **Save** (``--save``): the compact model file with its card (labels, citation, licence, nets used, checks);
   no machine path (the build folder is written ``BUILD``, the potential by its file name and SHA-256).
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_NETS = ROOT.parent / "shared" / "data" / "nets"
REAL_ZIFS = ROOT / "ase_cggpr" / "data" / "real_zifs"
#: The a-ZIF study's DFT energy-volume minima: eV per Zn below ZIF-4 (issue 30).
DFT_GAPS_BELOW_ZIF4 = {"zni": 0.0610, "coi": 0.0547}
ACE_CITATION = ("labels: ACE potential zif-ace-24 (Nicholas, Thomas du Toit, Rosset, Proserpio, Goodwin, Deringer, "
                "arXiv:2503.24367 (2025); fitted to DFT for Zn(Im)2), evaluated with python-ace; method: Faure "
                "Beaulieu, Z. et al., 'A coarse-grained Gaussian-process model of zeolitic imidazolate frameworks', "
                "Chem. Commun. 2023")
ACE_LICENCE = ("MIT (model file and code, ase-cggpr); training labels computed here with the ACE potential "
               "zif-ace-24 through python-ace (Academic Software Licence, non-commercial use; not needed to use "
               "this model)")


def stored_nets(store: Path) -> list[str]:
    """Names of the nets whose relaxation is in ``store`` (``<store>/relaxed-*/<net>.extxyz.gz``), sorted."""
    names = set()
    for path in store.glob("relaxed-*/*.extxyz.gz"):
        with gzip.open(path, "rt") as handle:
            handle.readline()
            match = re.search(r'\bnet=("[^"]*"|\S+)', handle.readline())
        if match is None:
            raise SystemExit(f"{path}: no net= in its comment line; not a stored relaxation")
        names.add(match.group(1).strip('"'))
    return sorted(names)


def write_net_subset(names: list[str], shared_nets: Path, out: Path) -> int:
    """Write the shared net files restricted to ``names`` into ``out``; returns the number of nets written.

    ``NAME`` is ``iza/NAME.cif``; ``STEM:BLOCK`` is block ``BLOCK`` of ``chic1/STEM.cif``. A multi-block file
    keeps at least two blocks (a one-block file would name its net by the stem alone): the extra block is a net
    the build defers (``--stop-after 0``)."""
    from ase_cggpr.dataset.nets import _split_cif_blocks

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.cif"):
        old.unlink()
    count = 0
    for name in names:
        if ":" not in name:
            shutil.copyfile(shared_nets / "iza" / f"{name}.cif", out / f"{name}.cif")
            count += 1
    for stem in sorted({n.split(":", 1)[0] for n in names if ":" in n}):
        blocks = _split_cif_blocks((shared_nets / "chic1" / f"{stem}.cif").read_text(errors="replace"))
        wanted = [text for block, text in blocks if f"{stem}:{block}" in names]
        if len(wanted) == 1 and len(blocks) > 1:
            wanted.append(next(text for block, text in blocks if f"{stem}:{block}" not in names))
        (out / f"{stem}.cif").write_text("".join(wanted))
        count += len(wanted)
    return count


def label_stored_nets(names: list[str], store: Path, shared_nets: Path, output: Path, seed: int,
                      build_options: list[str], *, what: str) -> bool:
    """Label the frames of the stored nets ``names`` into ``output/build``: their CIFs cut into ``output/nets``
    (seconds instead of minutes of reading every net), then ``build_full_dataset.py --store STORE --stop-after 0``
    with ``build_options`` (labeller or linker), which relaxes nothing new. False (after one line) if it failed."""
    n = write_net_subset(names, shared_nets, output / "nets")
    print(f"{len(names)} nets in {store}; {n} nets written to {output / 'nets'}", flush=True)
    command = [sys.executable, str(ROOT / "scripts" / "build_full_dataset.py"), "-o", str(output / "build"),
               "--nets", str(output / "nets"), "--workers", "1", "--seed", str(seed), *build_options,
               "--store", str(store), "--stop-after", "0"]
    print(" ".join(command), flush=True)
    if subprocess.run(command).returncode != 0:
        print(f"Error: the {what} build failed (see above)", file=sys.stderr)
        return False
    return True


def real_zif_checks(model) -> dict:
    """The model on the bundled real ZIFs relaxed with ACE: energy per Zn (eV, relative to the model's
    reference) against ACE, ranking (Spearman) and the DFT gaps below ZIF-4 (eV per Zn)."""
    from ase.io import read

    from ase_cggpr.demo import spearman

    reference = json.loads((REAL_ZIFS / "ace_reference.json").read_text())
    ace = {e["name"]: e["energy_per_zn_relaxed_eV"] for e in reference["structures"]}
    predicted = {}
    for atoms in read(REAL_ZIFS / "ace_relaxed.extxyz", ":"):
        local = model.predict(atoms)
        predicted[atoms.info["name"]] = float(np.mean(local))
    names = sorted(ace, key=ace.get)
    err = np.array([predicted[n] - ace[n] for n in names])
    gaps = {}
    for name, dft in DFT_GAPS_BELOW_ZIF4.items():
        gap = predicted["ZIF4"] - predicted[name]
        gaps[name] = {"dft": dft, "ace": ace["ZIF4"] - ace[name], "model": gap, "model_minus_dft": gap - dft}
    return {"structures": {n: {"ace": ace[n], "model": predicted[n]} for n in names},
            "spearman": spearman([predicted[n] for n in names], [ace[n] for n in names]),
            "rmse": float(np.sqrt(np.mean(err**2))), "bias": float(err.mean()),
            "ace_ranking": names, "model_ranking": sorted(predicted, key=predicted.get),
            "dft_gaps_below_ZIF4": gaps,
            "what": "bundled real Zn(Im)2 structures relaxed with ACE (ace_relaxed.extxyz) vs ace_reference.json; "
                    "DFT gaps: the a-ZIF study's energy-volume minima, zni 61.0 and coi 54.7 meV per Zn below ZIF-4"}


def mofff_control_frames(frames_dir: Path, relaxed_file: Path, ace_frames: list) -> list:
    """The MOF-FF-labelled frames of the same nets as ``ace_frames`` (a MOF-FF build's ``frames/<net>.cg.extxyz``
    and its labelled relaxations ``relaxed_cg.extxyz``), each given the ACE frames' framework type of its net, so
    that :func:`ase_cggpr.recipes.held_out_split` holds out the same framework types."""
    from ase.io import iread

    from ase_cggpr import recipes

    framework_type = {a.info["net"]: a.info["framework_type"] for a in ace_frames}
    frames, missing = [], []
    for net in sorted(framework_type):
        path = frames_dir / f"{net.replace(':', '_')}.cg.extxyz"
        if not path.with_name(path.name.replace(".cg.extxyz", ".json")).is_file():
            missing.append(net)  # not finished in that build
        elif path.stat().st_size:  # empty: every frame screened out
            frames.extend(iread(path, index=":", format="extxyz"))
    frames.extend(a for a in iread(relaxed_file, index=":", format="extxyz") if a.info["net"] in framework_type)
    if missing:
        raise SystemExit(f"{frames_dir}: {len(missing)} of the nets are not finished there ({', '.join(missing[:5])}"
                         f"{', ...' if len(missing) > 5 else ''}): the control needs every net")
    for atoms in frames:
        atoms.info["framework_type"] = framework_type[atoms.info["net"]]
    return recipes.prepare_frames(frames)


def targets(report: dict) -> dict[str, bool]:
    """Issue 30's targets for shipping an ACE-grade AB2 model: on held-out relaxed frameworks RMSE <= 20 meV per
    Zn, |mean error| <= 5 meV, Spearman >= 0.95; both DFT gaps below ZIF-4 within 15 meV.

    The RMSE is that of each held-out framework's energy per Zn (``rmse_per_framework``), the quantity the
    Spearman ranks and a screen uses, not the per-site RMSE against ACE's per-Zn split of a total (not physical;
    a totals-trained model does not fit it): the table prints both."""
    relaxed = report["held_out"].get("relaxed", {})
    gaps = report["real_zifs"]["dft_gaps_below_ZIF4"]
    return {"held-out relaxed RMSE <= 20 meV/Zn (per framework)": relaxed.get("rmse_per_framework", np.inf) <= 0.020,
            "held-out relaxed |mean error| <= 5 meV": abs(relaxed.get("bias", np.inf)) <= 0.005,
            "held-out relaxed Spearman >= 0.95": relaxed.get("spearman", -1.0) >= 0.95,
            "DFT gaps below ZIF-4 within 15 meV": all(abs(g["model_minus_dft"]) <= 0.015 for g in gaps.values())}


def print_report(report: dict) -> None:
    """The held-out table, the real-ZIF ranking and the DFT gaps, in meV per Zn."""
    print("held out (framework types never seen in training):")
    for kind, m in report["held_out"].items():
        extra = ""
        if "rmse_per_framework" in m:
            extra = (f"; per framework RMSE {1000 * m['rmse_per_framework']:.1f}, median "
                     f"{1000 * m['median_abs_per_framework']:.1f}, worst {m['worst_framework']} "
                     f"{1000 * m['worst_framework_error']:.0f}")
        if "spearman" in m:
            extra += f", Spearman {m['spearman']:.3f}"
        print(f"  {kind:8s} {m['frames']:4d} frames {m['environments']:6d} Zn: RMSE {1000 * m['rmse']:.1f} meV, "
              f"mean error {1000 * m['bias']:+.1f} meV{extra}")
    cal = report["calibration"]
    print(f"calibration: threshold {1000 * cal.get('threshold', float('nan')):.1f} meV, within 1 / 2 std "
          f"{cal.get('within_1sigma', float('nan')):.0%} / {cal.get('within_2sigma', float('nan')):.0%}")
    real = report["real_zifs"]
    print("real ZIFs relaxed with ACE (meV per Zn vs ACE-relaxed zni):")
    for name, e in real["structures"].items():
        print(f"  {name:7s} ACE {1000 * e['ace']:7.1f}  model {1000 * e['model']:7.1f}")
    print(f"  Spearman {real['spearman']:.3f}, RMSE {1000 * real['rmse']:.1f} meV, mean error "
          f"{1000 * real['bias']:+.1f} meV")
    for name, g in real["dft_gaps_below_ZIF4"].items():
        print(f"  ZIF-4 - {name}: DFT {1000 * g['dft']:.1f}, ACE {1000 * g['ace']:.1f}, model {1000 * g['model']:.1f} "
              f"meV (model - DFT {1000 * g['model_minus_dft']:+.1f})")
    if "mofff_control" in report:
        print("control: the same recipe, nets and held-out types on MOF-FF labels:")
        for kind, m in report["mofff_control"]["held_out"].items():
            extra = f", Spearman {m['spearman']:.3f}" if "spearman" in m else ""
            print(f"  {kind:8s} {m['frames']:4d} frames: RMSE {1000 * m['rmse']:.1f} meV, mean error "
                  f"{1000 * m['bias']:+.1f} meV{extra}")
    for what, met in report["targets"].items():
        print(f"target {what}: {'met' if met else 'MISSED'}")


def recorded_command(argv: list[str]) -> str:
    """The command as a card records it: the potential by file name, the output folder OUT, the model by name."""
    out, previous = [], None
    for word in argv:
        if previous == "--potential":
            word = Path(word).name
        elif previous in ("-o", "--output"):
            word = "OUT"
        elif previous == "--save":
            word = Path(word).name
        out.append(word)
        previous = word if word.startswith("-") else None
    return "python scripts/ace_models.py " + " ".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--potential", type=Path, required=True, help="the ACE potential file (zif-ace-24.yaml)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="run folder (nets, build, report)")
    parser.add_argument("--store", type=Path, default=ROOT / "datasets" / "ace-build")
    parser.add_argument("--nets", type=Path, default=SHARED_NETS, help="the shared nets (iza/, chic1/)")
    parser.add_argument("--recipe", default="rd-shifted+relaxed")
    parser.add_argument("--target", choices=["local", "totals"], default="totals",
                        help="fit the per-site ACE labels, or each frame's total (default: ACE's split of a total "
                             "into per-atom energies is not physical; totals do better, see datasets/ace-build)")
    parser.add_argument("--n-rd", type=int, default=None, help="about this many r-d environments (default: all)")
    parser.add_argument("--inducing", type=int, default=1000)
    parser.add_argument("--n-held", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--final", choices=["all", "validated"], default="all")
    parser.add_argument("--no-build", action="store_true", help="use OUT/build as it is (already labelled)")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="PATTERN",
                        help="leave out the nets matching these shell patterns (e.g. 'other_AB2:*', the pathological "
                             "2-4 Zn ICSD nets), from training and held-out tests alike; the card lists them")
    parser.add_argument("--save", type=Path, default=None, help="write the model here (e.g. "
                        "ase_cggpr/models/AB2-ace.npz)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--mofff-control", type=Path, nargs=2, metavar=("FRAMES", "RELAXED"), default=None,
                        help="also train the same recipe on the MOF-FF labels of the same nets and held-out types "
                             "(a MOF-FF build's frames/ folder and its relaxed_cg.extxyz from "
                             "scripts/label_relaxed_frames.py): is it the labels or the number of nets?")
    args = parser.parse_args(argv)
    if not args.potential.is_file():
        print(f"Error: {args.potential}: no such potential file", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    build = args.output / "build"
    names = stored_nets(args.store)
    if not args.no_build and not label_stored_nets(names, args.store, args.nets, args.output, args.seed,
                                                   ["--labeller", f"ace:{args.potential}"], what="ACE"):
        return 1
    t_build = time.perf_counter() - t0

    from ase.io import iread

    from ase_cggpr import recipes
    from ase_cggpr.errors import CGGPRError

    try:
        frames = recipes.prepare_frames(list(iread(build / "cg.extxyz", index=":", format="extxyz")))
        excluded = sorted({a.info["net"] for a in frames
                           if any(fnmatch.fnmatchcase(a.info["net"], p) for p in args.exclude)})
        frames = [a for a in frames if a.info["net"] not in set(excluded)]
        if excluded:
            print(f"left out {len(excluded)} nets: {', '.join(excluded)}", flush=True)
        nets_used = sorted({a.info["net"] for a in frames})
        print(f"{len(frames)} labelled frames of {len(nets_used)} nets ({t_build:.0f} s)", flush=True)
        t = time.perf_counter()
        model, report = recipes.train(frames, "AB2", args.recipe, n_rd=args.n_rd, inducing=args.inducing,
                                      n_held=args.n_held, seed=args.seed, final=args.final, target=args.target)
        train_seconds = time.perf_counter() - t
        report["real_zifs"] = real_zif_checks(model)
    except (CGGPRError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    report.update(train_seconds=round(train_seconds), nets=len(nets_used), stored_nets=len(names),
                  frames=len(frames), excluded_nets=excluded)
    report["targets"] = targets(report)
    if args.mofff_control is not None:
        control = mofff_control_frames(*args.mofff_control, frames)
        _, control_report = recipes.train(control, "AB2", args.recipe, n_rd=args.n_rd, inducing=args.inducing,
                                          n_held=args.n_held, seed=args.seed, final="validated", target=args.target)
        report["mofff_control"] = {"frames": len(control), "held_out": control_report["held_out"]}
    (args.output / "ace_models.json").write_text(json.dumps(report, indent=1))
    print_report(report)
    print(f"trained in {train_seconds:.0f} s (build {t_build:.0f} s)", flush=True)
    if args.save is not None:
        from ase_cggpr.labellers import file_sha256

        sha = file_sha256(args.potential)
        model.training_.update(
            data_files=[{"path": f"{recipes.BUILD_PLACEHOLDER}/cg.extxyz",
                         "bytes": (build / "cg.extxyz").stat().st_size, "sha256": file_sha256(build / "cg.extxyz")}],
            dataset=(f"datasets/ace-build: the {len(nets_used)} nets relaxed with ACE so far (of 566; a preliminary "
                     "model, retrained as the ACE build grows), labelled by scripts/build_full_dataset.py --seed 0 "
                     "--labeller ace:zif-ace-24.yaml (relaxed frames included)"),
            labeller={"labeller": "ace", "potential": args.potential.name, "sha256": sha,
                      "energy": "ACE energy per Zn(Im)2 unit (eV), relative to ACE-relaxed zni"},
            citation=ACE_CITATION, licence=ACE_LICENCE,
            checks={"real_zifs": report["real_zifs"], "targets": report["targets"]}, excluded_nets=excluded,
            command=recorded_command(argv))
        path = model.save(args.save, overwrite=args.overwrite)
        print(f"saved {path} ({path.stat().st_size} bytes)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
