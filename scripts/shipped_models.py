"""Select the training recipe of the shipped models on held-out framework types, and train them (issue 18).

A thin command-line wrapper of :mod:`ase_cggpr.recipes` (frame kinds, recipes, the held-out split, the fit and
the held-out table are documented and tested there). Two sub-commands, both on a build folder BUILD of
``scripts/build_full_dataset.py`` in which ``scripts/label_relaxed_frames.py`` has also written the labelled
MOF-FF relaxations:

    # model selection: recipes x representation on 50 held-out framework types (seeded), a table
    python scripts/shipped_models.py select --build BUILD -o OUT --rep AB2 \
        --recipes rd+none rd+relaxed rd-shifted+relaxed relaxed --n-rd 100000 --inducing 1000

    # the shipped model: held-out validation (errors per frame kind, uncertainty calibration), then the
    # same recipe trained on every framework type, saved in the compact format with its model card
    python scripts/shipped_models.py train --build BUILD --rep AB2 --recipe rd-shifted+relaxed \
        --n-rd 200000 --inducing 2000 -o ase_cggpr/models/AB2.npz

The model card records the build files as ``BUILD/<name>`` (size and SHA-256) and the command with ``--build
BUILD``, never a machine path. Everything is seeded (``--seed``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from ase_cggpr import recipes
from ase_cggpr.errors import CGGPRError


def basis_of(args) -> dict:
    return {k: v for k, v in (("n_max", args.n_max), ("l_max", args.l_max), ("cutoff", args.cutoff),
                              ("atom_sigma", args.atom_sigma),
                              ("noise", args.noise)) if v is not None}


def recorded_command(argv: list[str]) -> str:
    """The command line as a model card records it: the build folder written BUILD, the output file by name."""
    out, skip = [], None
    for word in argv:
        if skip == "--build":
            word = recipes.BUILD_PLACEHOLDER
        elif skip in ("-o", "--output"):
            word = Path(word).name
        out.append(word)
        skip = word
    return "python scripts/shipped_models.py " + " ".join(out)


def cmd_select(args) -> int:
    t0 = time.perf_counter()
    frames = recipes.read_frames(args.build, args.rep)
    held, _, test = recipes.held_out_split(frames, args.rep, args.n_held, args.seed)
    print(f"{len(frames)} frames read ({time.perf_counter() - t0:.0f} s); {len(held)} framework types held out: "
          f"{len(test)} test frames", flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []

    def on_row(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        (args.output / f"select_{args.rep}.json").write_text(json.dumps(rows, indent=1))

    recipes.select(frames, args.rep, args.recipes, n_rd=args.n_rd, inducing=args.inducing, n_held=args.n_held,
                   seed=args.seed, basis=basis_of(args), on_row=on_row)
    return 0


def training_cost(cpu_seconds: float, wall_seconds: float) -> dict:
    """What training cost, as a card records it: CPU and wall seconds (reading the build, validation fit and
    held-out evaluation, and the final fit), this process's peak memory (GB) and the machine's 1-minute load."""
    return {"cpu_seconds": round(cpu_seconds), "wall_seconds": round(wall_seconds),
            "peak_memory_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
            "load_average": round(os.getloadavg()[0], 1),
            "includes": "reading the build, the validation fit and its held-out evaluation, the final fit"}


def cmd_train(args, argv: list[str]) -> int:
    t0, c0 = time.perf_counter(), time.process_time()
    frames = recipes.read_frames(args.build, args.rep)
    print(f"{len(frames)} frames ({time.perf_counter() - t0:.0f} s)", flush=True)
    t = time.perf_counter()
    model, report = recipes.train(frames, args.rep, args.recipe, n_rd=args.n_rd, inducing=args.inducing,
                                  n_held=args.n_held, seed=args.seed, final=args.final, basis=basis_of(args),
                                  progress=args.progress, n_test_rd=args.n_test_rd)
    print(json.dumps(report | {"seconds": round(time.perf_counter() - t)}), flush=True)
    model.training_["cost"] = training_cost(time.process_time() - c0, time.perf_counter() - t0)
    model.training_.update(
        data_files=recipes.describe_build_files(args.build, args.rep),
        dataset=("datasets/full-build (566 stored MOF-FF relaxations) rebuilt by scripts/build_full_dataset.py "
                 "--seed 0, plus the relaxations labelled by scripts/label_relaxed_frames.py"),
        command=recorded_command(argv))
    path = model.save(args.output, overwrite=args.overwrite)
    print(json.dumps({"saved": str(path), "bytes": path.stat().st_size, "n_environments":
                      model.training_["n_environments"], "total_seconds": round(time.perf_counter() - t0)}),
          flush=True)
    return 0


def cmd_use(args) -> int:
    """Store what a model is good for (``training.use``, shown on its card) and/or what training it cost
    (``training.cost``) in a model file; arrays unchanged."""
    import numpy as np

    from ase_cggpr.model import CGGPRModel

    before = CGGPRModel.load(args.output)
    with np.load(args.output, allow_pickle=False) as handle:
        arrays = {k: handle[k] for k in handle.files}
    meta = json.loads(str(arrays.pop("metadata")))
    if args.text is not None:
        meta["training"]["use"] = args.text
    if args.cost is not None:  # measured outside this script (e.g. /usr/bin/time -v of the train command)
        cpu, wall, peak = (cost_value(v) for v in args.cost)
        meta["training"]["cost"] = {"cpu_seconds": None if cpu is None else round(cpu),
                                    "wall_seconds": None if wall is None else round(wall),
                                    "peak_memory_gb": None if peak is None else round(peak, 2),
                                    "includes": args.cost_note}
    tmp = args.output.with_name(args.output.stem + ".tmp.npz")
    np.savez(tmp, metadata=np.array(json.dumps(meta, indent=1, allow_nan=False)), **arrays)
    tmp.replace(args.output)
    after = CGGPRModel.load(args.output)
    if not np.array_equal(after.regressor_.alpha_, before.regressor_.alpha_):
        raise CGGPRError(f"{args.output}: the weights changed while writing the card note")
    print(f"wrote {'training.use ' if args.text is not None else ''}"
          f"{'training.cost ' if args.cost is not None else ''}into {args.output}")
    return 0


def cost_value(text: str) -> float | None:
    """A ``use --cost`` value: a finite number >= 0, or "unknown" (stored as null: not recorded when it was trained)."""
    if text.strip().lower() == "unknown":
        return None
    try:
        value = float(text)
    except ValueError:
        raise CGGPRError(f"--cost values must be numbers >= 0 or 'unknown', got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise CGGPRError(f"--cost values must be numbers >= 0 or 'unknown', got {text!r}")
    return value


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("select", "train"):
        p = sub.add_parser(name)
        p.add_argument("--build", type=Path, required=True)
        p.add_argument("--rep", default="AB2", choices=["AB2", "A", "atomistic"])
        p.add_argument("--n-rd", type=int, default=None, help="about this many r-d environments (default: all)")
        p.add_argument("--inducing", type=int, default=1000)
        p.add_argument("--n-max", type=int, default=None, help="SOAP radial basis (default: the paper's 16)")
        p.add_argument("--l-max", type=int, default=None, help="SOAP angular basis (default: the paper's 8)")
        p.add_argument("--cutoff", type=float, default=None, help="SOAP cutoff, Å (default: the paper's optimum)")
        p.add_argument("--atom-sigma", type=float, default=None, help="SOAP atom_sigma, Å (default: the paper's)")
        p.add_argument("--noise", type=float, default=None, help="GPR noise, eV (default: the paper's 0.2)")
        p.add_argument("--n-held", type=int, default=50)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("-o", "--output", type=Path, required=True)
        p.add_argument("--progress", action="store_true")
        if name == "select":
            p.add_argument("--recipes", nargs="+", default=["rd+none", "rd+relaxed", "rd-shifted+relaxed",
                                                            "relaxed"], choices=recipes.RECIPES)
        else:
            p.add_argument("--recipe", default="rd-shifted+relaxed", choices=recipes.RECIPES)
            p.add_argument("--overwrite", action="store_true")
            p.add_argument("--n-test-rd", type=int, default=None,
                           help="evaluate on about this many held-out r-d and d-r environments each (default: "
                                "all; an atomistic model's ~185,000 cost more than its training)")
            p.add_argument("--final", choices=["all", "validated"], default="all",
                           help="ship a model retrained on every framework type (all), or the validated model "
                                "itself, which never saw the held-out types (validated: half the cost)")
    p = sub.add_parser("use", help="store what a model is good for (training.use) and/or what it cost to train "
                                   "(training.cost) in its card")
    p.add_argument("-o", "--output", type=Path, required=True, help="the model file")
    p.add_argument("--text", help="what the model is good for (training.use)")
    p.add_argument("--cost", nargs=3, metavar=("CPU_S", "WALL_S", "PEAK_GB"),
                   help="what training cost (training.cost), if the train command did not record it; a value not "
                        "measured then: unknown")
    p.add_argument("--cost-note", default="the whole train command", help="what --cost covers")
    args = parser.parse_args(argv)
    if args.command == "use" and args.text is None and args.cost is None:
        parser.error("use: give --text and/or --cost")
    try:
        if args.command == "use":
            return cmd_use(args)
        return cmd_select(args) if args.command == "select" else cmd_train(args, argv)
    except (CGGPRError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
