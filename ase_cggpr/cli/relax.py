"""``cggpr relax``: relax structures on a model's energy surface (:func:`ase_cggpr.relax.relax`)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click
from ase.io import write

from ..calculator import CGGPRCalculator
from ..errors import CGGPRError
from ..io import iter_structures
from ..model import CGGPRModel
from ..outputs import atomic_output
from ..relax import relax
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
from .partial import check_structures, claim_partial, finished_with_failures

CSV_COLUMNS = ("name", "energy_per_Zn_eV", "std", "converged", "steps", "seconds", "n_defective", "n_untrusted")


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
    OUT.csv gets name, energy_per_Zn_eV (eV, relative to the model's reference), std, converged, steps, seconds,
    n_defective and n_untrusted (coordination-defective metal sites, and those plus the sites with a defect
    within the model's cutoff, of the relaxed state; their local energies are extrapolations).
    Every structure is read and mapped before any relaxation (one that cannot be stops the command, nothing
    computed). A relaxation that fails does not stop the others: the finished ones then go to
    OUT.partial.extxyz and OUT.partial.csv (with an error column and row for each failure), exit code 1.
    """
    table = csv_path(output)
    if table == output:
        raise click.BadParameter(f"{output} ends in .csv, the name of the table written next to it; give the "
                                 "extxyz file name (e.g. relaxed.extxyz)", param_hint="'-o' / '--output'")
    claim_outputs(output, table, force=force)
    partial, partial_table = claim_partial(output, table)
    model = CGGPRModel.load(model_path)
    calc = CGGPRCalculator(model, return_std=True, defects=defects)
    if cell and "stress" not in calc.implemented_properties:
        raise CGGPRError("cell relaxation needs the stress of the model's energy, which this version's calculator "
                         "does not implement; use --fixed-cell")
    frames = list(iter_structures(structures))
    if not frames:
        raise CGGPRError(f"no structures in {', '.join(structures)}: nothing to relax")
    # every structure mapped before any relaxation
    check_structures(frames, lambda atoms: model.bead_map(atoms, defects=defects), "relaxed")
    results, failures = [], []
    for atoms in frames:
        try:
            result = relax(atoms, calc, fmax=fmax, smax=smax, cell=cell, max_steps=max_steps, optimizer=optimizer)
        except (CGGPRError, MemoryError) as error:  # e.g. the bead net broke: the other structures go on
            reason = " ".join(str(error).split())
            results.append((atoms.info["name"], reason))
            failures.append((atoms.info["name"], reason))
            if not quiet:
                click.echo(f"{atoms.info['name']}: FAILED: {reason}")
            continue
        results.append(result)
        if not quiet:
            click.echo(f"{result.name}: {result.message}")
    done = [r for r in results if not isinstance(r, tuple)]
    if failures and not done:
        raise finished_with_failures(failures, len(frames), "relaxed", [])
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS + (("error",) if failures else ()))
    for r in results:
        if isinstance(r, tuple):  # an error row, as in screen's ranking
            writer.writerow([r[0], "", "", "", "", "", "", "", r[1]])
        else:
            writer.writerow([r.name, f"{r.energy_per_metal:.6f}", f"{r.energy_std:.6f}", int(r.converged), r.n_steps,
                             f"{r.seconds:.2f}", r.n_defective, r.n_untrusted] + ([""] if failures else []))
    # a run with failures writes what finished under partial names (replacing an earlier run's partial files)
    out, out_table, overwrite = (partial, partial_table, True) if failures else (output, table, force)
    with atomic_output(out, force=overwrite) as tmp, atomic_output(out_table, force=overwrite) as tmp_csv:
        images = []
        for r in done:
            image = r.atoms.copy()
            image.calc = None
            images.append(image)
        write(tmp, images, format="extxyz")
        tmp_csv.write_text(text.getvalue())
    if failures:
        raise finished_with_failures(failures, len(frames), "relaxed", [out, out_table])
    if not quiet:
        n_ok = sum(r.converged for r in results)
        click.echo(f"relaxed {len(results)} structure(s), {n_ok} converged: {output}, {table}")
