"""Commands ``screen`` (rank many structures by predicted energy per Zn) and ``calibrate`` (uncertainty)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import OptionError
from ..io import iter_structures, load_labelled
from ..model import CGGPRModel
from ..screening import Calibration, check_symprec, check_threshold, format_table, progress_path, screen_to_csv
from ..screening import calibrate as run_calibrate
from ._group import main
from .options import MODEL_ARGUMENT, chunk_size_option, claim_outputs, cli_errors, defects_option, runner_options


def _option(check):
    """A click callback running one of the screen's option checks (a bad value is a usage error, exit 2)."""
    def callback(ctx, param, value):
        if value is None:
            return value
        try:
            return check(value)
        except OptionError as error:
            raise click.BadParameter(str(error)) from None

    return callback


def _check_threshold(value):
    return check_threshold(value)


def _check_symprec(value):
    return check_symprec(value)


@main.command()
@MODEL_ARGUMENT
@click.argument("structures", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="CSV ranking to write.")
@click.option("-j", "--workers", type=click.IntRange(min=1), default=min(2, os.cpu_count() or 1),
              show_default=True, help="Worker processes (structures are screened in parallel).")
@click.option("--threshold", type=float, callback=_option(_check_threshold),
              help="Per-Zn std (eV, finite, >= 0) above which a structure is not trusted; default: --calibration, "
                   "the model's stored calibration, else the model's noise sigma.")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Calibration JSON written by 'cggpr calibrate' (its threshold is used).")
@click.option("--no-symmetry", is_flag=True, help="Compute every Zn site (no reduction by spglib symmetry).")
@click.option("--symprec", type=float, default=1e-3, show_default=True, callback=_option(_check_symprec),
              help="spglib tolerance (Å, in (0, 1)).")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True, help="Rows of the ranking to print.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted screen into OUTPUT: the rows in OUTPUT.progress.jsonl are not computed "
                   "again.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file (and discard an interrupted "
                                            "screen's progress unless --resume).")
@click.option("--relax", is_flag=True, help="Relax every structure (positions and cell) on MODEL's energy surface "
                                            "before ranking it (ase_cggpr.relax; fmax 0.05 eV/Å, <= 200 steps).")
@runner_options
@chunk_size_option
@defects_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or table.")
@cli_errors
def screen(model_path, structures, output, workers, threshold, calibration, no_symmetry, symprec, top, resume,
           force, relax, defects, quiet):
    """Rank STRUCTURES (CIF/extxyz files, folders, globs) by MODEL's predicted energy per Zn.

    Energies are per Zn relative to the model's reference (e.g. relaxed zni). Structures that cannot be
    read or mapped get a row with the error; untrusted ones (an environment's std above the threshold)
    are listed after the trusted ranking, and so are structures with coordination defects (columns
    n_defective_Zn, n_untrusted_Zn; with --defects refuse they are error rows). Rows are saved to
    OUTPUT.progress.jsonl as they finish, so an interrupted screen continues with --resume; a worker process
    that dies (e.g. out of memory) is replaced and its structure screened again (at most 3 times, then an
    error row). --scheduler/--cluster run the screen on a Dask cluster (README: Running on a cluster).
    """
    claim_outputs(output, force=force)  # checked and locked before any work
    if threshold is None and calibration is not None:
        threshold = Calibration.load(calibration).threshold
    model = CGGPRModel.load(model_path)
    if resume and not progress_path(output).exists() and not quiet:
        click.echo(f"nothing to resume ({progress_path(output)} does not exist): screening everything", err=True)
    result = screen_to_csv(model, structures, output, force=force, resume=resume, threshold=threshold,
                           symmetry=not no_symmetry, symprec=symprec, workers=workers, progress=not quiet,
                           relax=relax, defects=defects)
    if result.invalid_progress:
        click.echo(f"warning: {len(result.invalid_progress)} row(s) of {progress_path(output)} were not valid and "
                   f"were computed again ({result.invalid_progress[0]}"
                   f"{'; ...' if len(result.invalid_progress) > 1 else ''})", err=True)
    if not quiet:
        click.echo(format_table(result.rows, top))
        n_trusted = sum(r.trusted and not r.error for r in result.rows)
        extra = f"; {result.n_resumed} taken from the interrupted screen" if result.n_resumed else ""
        if result.n_worker_deaths:
            extra += f"; {result.n_worker_deaths} worker process death(s) (structures screened again)"
        click.echo(f"{len(result.rows)} structures in {result.seconds:.1f} s ({result.per_second:.2f}/s): "
                   f"{n_trusted} trusted, {result.n_ok - n_trusted} not trusted, "
                   f"{len(result.rows) - result.n_ok} errors; threshold {result.threshold:.4f} eV "
                   f"({result.threshold_source}){extra}; ranking: {output}")


@main.command()
@MODEL_ARGUMENT
@click.argument("data", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Calibration JSON to write.")
@click.option("--label-key", default="energies", show_default=True,
              help="Per-atom energy array (local energies are formed) or per-site local-energy array.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("-q", "--quiet", is_flag=True)
@cli_errors
def calibrate(model_path, data, output, label_key, force, quiet):
    """Calibrate MODEL's per-Zn std on held-out labelled DATA: fractions within 1 and 2 sigma, threshold."""
    claim_outputs(output, force=force)
    model = CGGPRModel.load(model_path)
    labelled = load_labelled(iter_structures(data), representation=model.spec.representation,
                             label_key=label_key)
    result = run_calibrate(model, labelled.maps(), labelled.structure_labels, progress=not quiet)
    if output is not None:
        result.save(output, overwrite=force)
    click.echo(result.table())
