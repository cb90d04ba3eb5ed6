"""``cggpr relax``: relax structures on a model's energy surface (:func:`ase_cggpr.relax.relax`)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click

from ..errors import CGGPRError
from ._group import main
from .options import (
    MODEL_ARGUMENT,
    OUTPUT_FILE,
    POSITIVE,
    claim_outputs,
    cli_errors,
    defects_option,
    force_option,
    quiet_option,
)

CSV_COLUMNS = ("name", "energy_per_zn", "std", "converged", "steps", "seconds", "n_defective", "n_untrusted")


def csv_path(output: Path) -> Path:
    """The CSV written next to the extxyz: ``OUT`` with its suffix replaced by ``.csv``."""
    return output.with_suffix(".csv") if output.suffix else output.with_name(output.name + ".csv")


@main.command("relax")
@MODEL_ARGUMENT
@click.argument("structures", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=OUTPUT_FILE,
              help="extxyz file of the relaxed structures; a CSV of the same name (.csv) is written next to it.")
@click.option("--fmax", type=POSITIVE, default=0.01, show_default=True, help="Force criterion (eV/Å).")
@click.option("--smax", type=POSITIVE, default=1e-4, show_default=True,
              help="Stress criterion of cell relaxations (eV/Å^3).")
@click.option("--cell/--fixed-cell", default=True, show_default=True, help="Also relax the cell.")
@click.option("--max-steps", type=click.IntRange(min=0), default=500, show_default=True)
@click.option("--optimizer", type=click.Choice(["BFGS", "FIRE"], case_sensitive=False), default="BFGS",
              show_default=True)
@defects_option
@force_option
@quiet_option
@cli_errors
def relax_command(model_path, structures, output, fmax, smax, cell, max_steps, optimizer, defects, force, quiet):
    """Relax STRUCTURES on MODEL's energy surface (positions and, by default, the cell).

    Coarse-grained models relax bead structures (atomistic input is coarse-grained first); atomistic models
    relax every atom. OUT gets the relaxed structures (info: cggpr_energy_per_metal, relax_converged, ...);
    OUT.csv gets name, energy_per_zn (eV, relative to the model's reference), std, converged, steps, seconds,
    n_defective and n_untrusted (coordination-defective metal sites, and those plus the sites with a defect
    within the model's cutoff, of the relaxed state; their local energies are extrapolations).
    """
    from ase.io import write

    from ..calculator import CGGPRCalculator
    from ..io import iter_structures
    from ..model import CGGPRModel
    from ..outputs import atomic_output
    from ..relax import relax

    table = csv_path(output)
    if table == output:
        raise click.BadParameter(f"{output} ends in .csv, the name of the table written next to it; give the "
                                 "extxyz file name (e.g. relaxed.extxyz)", param_hint="'-o' / '--output'")
    claim_outputs(output, table, force=force)
    model = CGGPRModel.load(model_path)
    calc = CGGPRCalculator(model, return_std=True, defects=defects)
    if cell and "stress" not in calc.implemented_properties:
        raise CGGPRError("cell relaxation needs the stress of the model's energy, which this version's calculator "
                         "does not implement; use --fixed-cell")
    frames = list(iter_structures(structures))
    if not frames:
        raise CGGPRError(f"no structures in {', '.join(structures)}: nothing to relax")
    results = []
    for atoms in frames:
        result = relax(atoms, calc, fmax=fmax, smax=smax, cell=cell, max_steps=max_steps, optimizer=optimizer)
        results.append(result)
        if not quiet:
            click.echo(f"{result.name}: {result.message}")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in results:
        writer.writerow([r.name, f"{r.energy_per_metal:.6f}", f"{r.energy_std:.6f}", int(r.converged), r.n_steps,
                         f"{r.seconds:.2f}", r.n_defective, r.n_untrusted])
    with atomic_output(output, force=force) as tmp, atomic_output(table, force=force) as tmp_csv:
        images = []
        for r in results:
            image = r.atoms.copy()
            image.calc = None
            images.append(image)
        write(tmp, images, format="extxyz")
        tmp_csv.write_text(text.getvalue())
    if not quiet:
        n_ok = sum(r.converged for r in results)
        click.echo(f"relaxed {len(results)} structure(s), {n_ok} converged: {output}, {table}")
