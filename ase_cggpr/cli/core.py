"""Core commands: train, predict, coarse-grain, info, demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from ..errors import CGGPRError
from ._group import main

REPRESENTATION = click.Choice(["atomistic", "AB2", "A"], case_sensitive=False)


def fail_on_errors(function):
    """Turn package errors into a one-line click error (exit code 1), never a traceback."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (CGGPRError, FileNotFoundError, FileExistsError) as error:
            raise click.ClickException(str(error)) from None

    return wrapper


def refuse_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; pass --force to overwrite it")


def echo(message: str, quiet: bool) -> None:
    if not quiet:
        click.echo(message)


@main.command()
@click.argument("data", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Model file to write (.npz).")
@click.option("--representation", type=REPRESENTATION, default="AB2", show_default=True)
@click.option("--label-key", default="energies", show_default=True,
              help="Per-atom energy array (local energies are formed) or per-site local-energy array.")
@click.option("--target", type=click.Choice(["local", "metal"]), default="local", show_default=True,
              help="Local-environment energy, or the metal-only energy.")
@click.option("--cutoff", type=float, help="SOAP cutoff (Å); default: the paper's optimum.")
@click.option("--atom-sigma", type=float, help="SOAP Gaussian width (Å); default: the paper's optimum.")
@click.option("--n-max", type=int, default=16, show_default=True)
@click.option("--l-max", type=int, default=8, show_default=True)
@click.option("--noise", type=float, default=0.2, show_default=True, help="GP noise sigma (eV).")
@click.option("--descriptor-backend", type=click.Choice(["featomic", "quippy"]), default="featomic",
              show_default=True)
@click.option("--reference", default="auto", show_default=True,
              help="Reference energy per metal (eV): a number, 'none', or 'auto' (the data's reference_energy).")
@click.option("--n-train", type=int, help="Train on this many environments, drawn at random.")
@click.option("--test-fraction", type=float, help="Hold out this fraction of structure groups; report test RMSE.")
@click.option("--group-key", help="atoms.info key of the structure groups held out whole (default: topology, else "
                                  "structure_id).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing model file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or summaries.")
@fail_on_errors
def train(data, output, representation, label_key, target, cutoff, atom_sigma, n_max, l_max, noise,
          descriptor_backend, reference, n_train, test_fraction, group_key, seed, force, quiet):
    """Train a model on DATA (extxyz files, folders or globs) and save it to OUTPUT."""
    from ..training import train_model

    if output.suffix != ".npz":
        output = output.with_name(output.name + ".npz")
    refuse_overwrite(output, force)
    model, report = train_model(
        data, representation=representation, label_key=label_key, target=target, cutoff=cutoff,
        atom_sigma=atom_sigma, n_max=n_max, l_max=l_max, noise=noise, backend=descriptor_backend,
        reference=reference, n_train=n_train, test_fraction=test_fraction, group_key=group_key, seed=seed,
        progress=not quiet)
    model.save(output, overwrite=True)
    if not quiet:
        for key, value in report.items():
            click.echo(f"{key:>24}: {value}")
        click.echo(f"{'model':>24}: {output}")


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("structures", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="extxyz file with per-metal predictions.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or table.")
@fail_on_errors
def predict(model_path, structures, output, force, quiet):
    """Predict per-metal local energies (and std) of STRUCTURES with MODEL.

    The output extxyz holds per-atom arrays ``cggpr_local_energy`` and ``cggpr_local_energy_std`` (eV, on
    metal atoms; NaN elsewhere) and info ``cggpr_energy`` (total, eV) and ``cggpr_energy_per_metal``.
    """
    from ase.io import write

    from ..data import iter_structures
    from ..model import CGGPRModel

    if output is not None:
        refuse_overwrite(output, force)
    model = CGGPRModel.load(model_path)
    rows = []
    frames = list(iter_structures(structures))
    from ..progress import progress_bar

    with progress_bar(len(frames), "predict", enabled=not quiet) as update:
        for atoms in frames:
            bead_map = model.bead_map(atoms)
            (mean,), (std,) = model.predict_maps([bead_map], return_std=True)
            metals = bead_map.topology.metal_indices
            for key, values in (("cggpr_local_energy", mean), ("cggpr_local_energy_std", std)):
                column = np.full(len(atoms), np.nan)
                column[metals] = values
                atoms.arrays[key] = column
            atoms.info["cggpr_energy"] = float(mean.sum())
            atoms.info["cggpr_energy_per_metal"] = float(mean.mean())
            atoms.calc = None
            rows.append((bead_map.name, len(metals), mean.sum(), mean.mean(), std.max()))
            update(1)
    if output is not None:
        write(output, frames, format="extxyz")
    if not quiet:
        click.echo(f"{'structure':<32} {'n_metal':>7} {'E (eV)':>12} {'E/metal (eV)':>13} {'max std':>8}")
        for name, n, total, per, smax in rows:
            click.echo(f"{name[:32]:<32} {n:>7d} {total:>12.4f} {per:>13.4f} {smax:>8.4f}")


@main.command("coarse-grain")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="extxyz file of beads.")
@click.option("--representation", type=click.Choice(["AB2", "A"], case_sensitive=False), default="AB2",
              show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@fail_on_errors
def coarse_grain_command(inputs, output, representation, force):
    """Write bead structures of INPUTS (Si = metal site, O = linker bead) for inspection."""
    from ase.io import write

    from ..beads import coarse_grain
    from ..data import iter_structures

    refuse_overwrite(output, force)
    beads = [coarse_grain(a, representation).structure for a in iter_structures(inputs)]
    write(output, beads, format="extxyz")
    click.echo(f"wrote {len(beads)} bead structure(s) to {output}")


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@fail_on_errors
def info(model_path):
    """Print a saved model's metadata (JSON)."""
    from ..model import CGGPRModel

    click.echo(json.dumps(CGGPRModel.load(model_path).metadata_, indent=1))


@main.command()
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), default=Path("cggpr-demo"), show_default=True,
              help="Folder for the parity plot and the three models.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--n-train", type=int, help="Cap on training environments per model.")
@click.option("--force", is_flag=True, help="Overwrite files in an existing output folder.")
@click.option("-q", "--quiet", is_flag=True)
@fail_on_errors
def demo(output_dir, seed, n_train, force, quiet):
    """Train atomistic, AB2 and A-only models on the built-in dataset; compare held-out RMSE."""
    from ..demo import run_demo

    result = run_demo(output_dir, seed=seed, n_train=n_train, overwrite=force, progress=not quiet)
    click.echo(result.table())
    if result.plot_path:
        click.echo(f"parity plot: {result.plot_path}")
    sys.stdout.flush()
