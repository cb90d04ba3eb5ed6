"""Core commands: train, predict, coarse-grain, info, demo."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click
import numpy as np
from ase.io import write

from ..beads import coarse_grain, find_connectivity
from ..demo import DEFAULT_MODELS, demo_outputs, run_demo, run_mim_demo
from ..errors import CGGPRError
from ..io import iter_structures
from ..model import CGGPRModel
from ..outputs import atomic_output, check_output
from ..pretrained import available, card, format_card
from ..progress import progress_bar
from ..training import train_model
from ..uncertainty import calibrated_std
from ._group import main
from .options import (
    MODEL_ARGUMENT,
    OUTPUT_FILE,
    REPRESENTATION,
    FiniteFloat,
    check_folder,
    claim_outputs,
    cli_errors,
    defects_option,
    force_option,
    label_key_option,
    quiet_option,
    spec_options,
)
from .partial import check_structures, claim_partial, finished_with_failures

__all__ = ["REPRESENTATION", "cli_errors", "echo", "refuse_overwrite"]


def refuse_overwrite(path: Path, force: bool) -> None:
    """Refuse an output that cannot be written (see :func:`ase_cggpr.outputs.check_output`), before any work."""
    check_output(path, force=force)


def echo(message: str, quiet: bool) -> None:
    if not quiet:
        click.echo(message)


def save_model(model, output: Path, *, force: bool) -> Path:
    """Write ``model`` to ``output`` through a temporary file published atomically (nothing left on failure)."""
    with atomic_output(output, force=force) as tmp:
        try:
            model.save(tmp, overwrite=True)
        finally:  # model.save's own temporary name, if it was interrupted
            with contextlib.suppress(FileNotFoundError):
                tmp.with_name(tmp.name + ".part.npz").unlink()
    return output


@main.command()
@click.argument("data", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=OUTPUT_FILE, help="Model file to write (.npz).")
@spec_options
@label_key_option()
@click.option("--target", type=click.Choice(["local", "metal"]), default="local", show_default=True,
              help="Local-environment energy, or the metal-only energy.")
@click.option("--reference", default="auto", show_default=True,
              help="Reference energy per metal (eV): a number, 'none', or 'auto' (the data's reference_energy).")
@click.option("--n-train", type=click.IntRange(min=1), help="Train on this many environments, drawn at random.")
@click.option("--test-fraction", type=FiniteFloat(0, 1, min_open=True, max_open=True),
              help="Hold out this fraction (0 < f < 1) of structure groups; report test RMSE.")
@click.option("--group-key", help="atoms.info key of the structure groups held out whole (default: framework_type, "
                                  "else structure_id).")
@click.option("--solver", type=click.Choice(["exact", "sparse"]),
              help="Regression solver (default: exact).")
@click.option("--inducing", type=click.IntRange(min=1), metavar="M",
              help="Sparse solver: number of inducing environments M.")
@click.option("--precision", type=click.Choice(["float64", "mixed"]),
              help="Exact solver: float64 (default), or float32 Cholesky refined to float64 accuracy.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--energy-key", help="Learn local energies from each structure's total energy (eV) under this name "
                                   "(extxyz info / calculator results, e.g. 'energy'), instead of --label-key; "
                                   "sparse solver.")
@click.option("--forces-key", help="With --energy-key: also learn the per-atom forces (eV/Å) under this name "
                                   "(e.g. 'forces'); atomistic models only.")
@click.option("--force-noise", type=FiniteFloat(0, None, min_open=True), metavar="EV_PER_A",
              help="Noise of a force component (eV/Å) with --forces-key  [default: 0.1]")
@force_option
@quiet_option
@cli_errors
def train(data, output, representation, cutoff, atom_sigma, n_max, l_max, noise, descriptor_backend, label_key,
          target, reference, n_train, test_fraction, group_key, solver, inducing, precision, seed, energy_key,
          forces_key, force_noise, force, quiet):
    """Train a model on DATA (extxyz files, folders or globs) and save it to OUTPUT."""
    if output.suffix != ".npz":
        output = output.with_name(output.name + ".npz")
    claim_outputs(output, force=force)
    model, report = train_model(
        data, representation=representation, label_key=label_key, target=target, cutoff=cutoff,
        atom_sigma=atom_sigma, n_max=n_max, l_max=l_max, noise=noise, backend=descriptor_backend,
        reference=reference, n_train=n_train, test_fraction=test_fraction, group_key=group_key, seed=seed,
        progress=not quiet, solver=solver, inducing=inducing, precision=precision or "float64",
        **{k: v for k, v in (("energy_key", energy_key), ("forces_key", forces_key), ("force_noise", force_noise))
           if v is not None})
    save_model(model, output, force=force)
    if not quiet:
        for key, value in report.items():
            click.echo(f"{key:>24}: {value}")
        click.echo(f"{'model':>24}: {output}")


@main.command()
@MODEL_ARGUMENT
@click.argument("structures", nargs=-1, required=True)
@click.option("-o", "--output", type=OUTPUT_FILE, help="extxyz file with per-metal predictions.")
@defects_option
@force_option
@quiet_option
@cli_errors
def predict(model_path, structures, output, defects, force, quiet):
    """Predict per-metal local energies (and std) of STRUCTURES with MODEL.

    The output extxyz holds per-atom arrays ``cggpr_local_energy`` and ``cggpr_local_energy_std`` (eV, on
    metal atoms; NaN elsewhere) and info ``cggpr_energy`` (total, eV) and ``cggpr_energy_per_metal``.
    Every structure is read and mapped before any prediction (one that cannot be stops the command, nothing
    computed); if a prediction fails, the others go on and the finished ones go to OUTPUT's .partial name
    (predictions.extxyz -> predictions.partial.extxyz), exit code 1.

    Coordination defects (--defects flag, the default): every metal is predicted; the per-atom array
    ``cggpr_site_state`` is 0 for a trusted metal, 1 for one with a defect within the model's cutoff, 2 for a
    defective one (-1 on non-metal atoms), and info ``cggpr_n_defective``, ``cggpr_n_untrusted`` and
    ``cggpr_energy_trusted`` (sum over trusted metals, eV) go with ``cggpr_energy``, which stays the sum over
    all metals (the untrusted ones as the model's extrapolation). Each defective structure is named on stderr.
    """
    claim_outputs(output, force=force)
    partial = claim_partial(output)
    model = CGGPRModel.load(model_path)
    rows, failures, done = [], [], []
    frames = list(iter_structures(structures))
    if not frames:
        raise CGGPRError(f"no structures in {', '.join(structures)}: nothing to predict")
    # every structure mapped before any prediction
    maps = check_structures(frames, lambda atoms: model.bead_map(atoms, defects=defects), "predicted")
    with progress_bar(len(frames), "predict", enabled=not quiet) as update:
        for atoms, bead_map in zip(frames, maps, strict=True):
            try:
                trust = model.site_trust(bead_map)
                (mean,), (std,) = model.predict_maps([bead_map], return_std=True)
                std = calibrated_std(model, std, atoms, bead_map.connectivity)  # its variance calibration
                if not (np.isfinite(mean).all() and np.isfinite(std).all()):
                    raise CGGPRError(f"structure {bead_map.name!r}: the prediction is not finite (NaN or infinite "
                                     "energy or std)")
            except (CGGPRError, MemoryError) as error:  # the other structures go on
                reason = " ".join(str(error).split())
                failures.append((bead_map.name, reason))
                rows.append((bead_map.name, reason))
                update(1)
                continue
            metals = bead_map.connectivity.metal_indices
            for key, values in (("cggpr_local_energy", mean), ("cggpr_local_energy_std", std)):
                column = np.full(len(atoms), np.nan)
                column[metals] = values
                atoms.arrays[key] = column
            atoms.info["cggpr_energy"] = float(mean.sum())
            atoms.info["cggpr_energy_per_metal"] = float(mean.mean())
            if not trust.all_trusted:
                state = np.full(len(atoms), -1, dtype=int)
                state[metals] = trust.site_state()
                atoms.arrays["cggpr_site_state"] = state
                atoms.info.update(cggpr_n_defective=trust.n_defective, cggpr_n_untrusted=trust.n_untrusted,
                                  cggpr_energy_trusted=float(mean[trust.trusted].sum()))
                if not quiet:
                    click.echo(trust.summary(), err=True)
            atoms.calc = None
            done.append(atoms)
            rows.append((bead_map.name, len(metals), mean.sum(), mean.mean(), std.max(), trust.n_defective,
                         trust.n_untrusted))
            update(1)
    written = []
    if output is not None and done:  # with failures: what finished, under the partial name
        written = [partial[0] if failures else output]
        with atomic_output(written[0], force=force or bool(failures)) as tmp:
            write(tmp, done, format="extxyz")
    if not quiet:
        click.echo(f"{'structure':<32} {'n_metal':>7} {'E (eV)':>12} {'E/metal (eV)':>13} {'max std':>8} "
                   f"{'defective':>9} {'untrusted':>9}")
        for row in rows:
            if len(row) == 2:
                click.echo(f"{row[0][:32]:<32} FAILED: {row[1]}")
                continue
            name, n, total, per, smax, n_bad, n_untrusted = row
            click.echo(f"{name[:32]:<32} {n:>7d} {total:>12.4f} {per:>13.4f} {smax:>8.4f} {n_bad:>9d} "
                       f"{n_untrusted:>9d}")
    if failures:
        raise finished_with_failures(failures, len(frames), "predicted", written)


@main.command("coarse-grain")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=OUTPUT_FILE, help="extxyz file of beads.")
@click.option("--representation", type=click.Choice(["AB2", "A"], case_sensitive=False), default="AB2",
              show_default=True)
@defects_option
@force_option
@quiet_option
@cli_errors
def coarse_grain_command(inputs, output, representation, defects, force, quiet):
    """Write bead structures of INPUTS (Si = metal site, O = linker bead) for inspection.

    Coordination defects (--defects flag, the default) are mapped as they are (a 3-coordinated Zn becomes an A
    bead with 3 B beads, a dangling linker a B bead bonded to one A) and each defective structure is named on
    stderr; --defects refuse rejects them."""
    claim_outputs(output, force=force)
    beads = []
    for atoms in iter_structures(inputs):
        connectivity = find_connectivity(atoms, defects=defects)
        if connectivity.defects and not quiet:
            click.echo(f"structure {connectivity.name!r}: "
                       + connectivity.defects.summary(connectivity.metal_indices, connectivity.metal_symbols),
                       err=True)
        beads.append(coarse_grain(atoms, representation, connectivity=connectivity).structure)
    if not beads:
        raise CGGPRError(f"no structures in {', '.join(inputs)}: nothing to coarse-grain")
    with atomic_output(output, force=force) as tmp:
        write(tmp, beads, format="extxyz")
    if not quiet:
        click.echo(f"wrote {len(beads)} bead structure(s) to {output}")


@main.command()
@MODEL_ARGUMENT
@quiet_option
@cli_errors
def info(model_path, quiet):
    """Print a saved model's metadata (JSON); with -q print nothing (the exit code says whether MODEL loads)."""
    metadata = CGGPRModel.load(model_path).metadata_
    if not quiet:
        click.echo(json.dumps(metadata, indent=1))


@main.command()
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), default=Path("cggpr-demo"), show_default=True,
              help="Folder for the ranking table, the figure and the model of the training step.")
@click.option("--model", "models", multiple=True, metavar="MODEL",
              help="Screen with this model (a shipped name or a file; repeat). Default: AB2, A, atomistic.")
@click.option("--relaxed", is_flag=True, help="Screen the relaxed structures (MOF-FF's; ACE's for an ACE-grade "
              "model) instead of the CIFs as given.")
@click.option("--no-train", is_flag=True, help="Skip the short training step on the built-in data.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the training step.")
@click.option("--n-train", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Training environments of the training step.")
@click.option("--force", is_flag=True, help="Overwrite files in an existing output folder.")
@click.option("--linker", type=click.Choice(["Im", "mIm"]), default="Im", show_default=True,
              help="mIm: screen ZIF-8 and relaxed Zn(mIm)2 polymorphs with the shipped Zn(mIm)2 models (AB2-mIm) "
                   "against MOF-FF instead (ranking_mIm.csv); an error saying what to run if none ships.")
@quiet_option
@cli_errors
def demo(output_dir, models, relaxed, no_train, seed, n_train, force, linker, quiet):
    """Screen the bundled real Zn(Im)2 structures with the shipped models beside the MOF-FF and ACE rankings, say
    which model to pick for what; show the models' held-out accuracy; train a small model on the built-in data.
    With --linker mIm: ZIF-8 and relaxed Zn(mIm)2 polymorphs with the Zn(mIm)2 models."""
    if linker == "mIm":
        check_folder(output_dir)
        result = run_mim_demo(output_dir, models=tuple(models), overwrite=force)
        click.echo(result.table())
        sys.stdout.flush()
        return
    check_folder(output_dir)
    created = not output_dir.exists()
    output_dir.mkdir(exist_ok=True)
    try:
        for path in demo_outputs(output_dir, train=not no_train):
            refuse_overwrite(path, force)  # run_demo locks each while writing it
        result = run_demo(output_dir, models=tuple(models) or DEFAULT_MODELS, train=not no_train, seed=seed,
                          n_train=n_train, overwrite=force, progress=not quiet, relaxed=relaxed)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                output_dir.rmdir()  # only if still empty
        raise
    click.echo(result.table())
    sys.stdout.flush()


@main.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the cards as JSON.")
@cli_errors
def models(names, as_json):
    """List the models that ship with the package, with a model card each (training data, hyperparameters,
    solver, held-out errors per frame kind, calibration, applicability rule, training cost, citation, licence).
    NAMES: only these."""
    chosen = list(names) or available()
    if not chosen:
        click.echo("no shipped models in this installation")
        return
    cards = [card(name) for name in chosen]
    if as_json:
        click.echo(json.dumps(cards, indent=1))
    else:
        click.echo("\n\n".join(format_card(c) for c in cards))
