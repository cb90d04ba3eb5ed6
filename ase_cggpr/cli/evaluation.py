"""Evaluation commands: cv, learning-curve, grid-search, cross-hyper, report: option parsing and output checks
only; the work is in :mod:`ase_cggpr.evaluation` (the report in :mod:`ase_cggpr.evaluation.report`)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from ..errors import CGGPRError, ModelError
from ..evaluation import (
    LC_FIELDS,
    PAPER_SIZES,
    SoapCache,
    cross_hyper_table,
    cross_validate,
    grid_csv_fields,
    grid_search,
    learning_curve,
    optimum,
    read_csv,
    read_environments,
    sampled_vectors,
    usable_sizes,
    write_csv,
)
from ..evaluation.report import GRID_INPUT_FIELDS, build_report, optimum_of, read_input
from ..outputs import check_output, output_lock
from ..regression import solver_options as regression_solver_options
from ..spec import PAPER_OPTIMUM, ModelSpec, canonical_representation
from ._group import main
from .options import (
    OUTPUT_FILE,
    REPRESENTATION,  # noqa: F401  (re-exported: the representation choice, defined once in options)
    FloatList,
    check_folder,
    claim_outputs,
    cli_errors,
    force_option,
    hold,
    label_key_option,
    quiet_option,
    solver_options,
    spec_options,
)


def _floats(text: str) -> list[float]:
    """'3,4.5,6' or 'start:stop:step' (inclusive stop) -> floats (click.BadParameter when malformed)."""
    return FloatList(positive=False).convert(text, None, None)


def _info_filter(items: tuple[str, ...], option: str) -> dict[str, list[str]]:
    """('order=d,r-d', ...) -> {'order': ['d', 'r-d']}."""
    chosen: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise click.BadParameter(f"expected KEY=V1[,V2...], got {item!r}", param_hint=option)
        chosen.setdefault(key, []).extend(v for v in values.split(",") if v)
    return chosen


def _sizes(ctx, param, value):
    """--sizes: comma-separated positive integers."""
    if value is None:
        return None
    try:
        sizes = [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers, e.g. 100,1000", ctx=ctx,
                                 param=param) from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"{value!r}: expected positive training sizes", ctx=ctx, param=param)
    return sizes


def data_options(function):
    """Options shared by every command that reads a training set and runs a CV."""
    options = [
        click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False)),
        spec_options,
        click.option("--target", type=click.Choice(["local", "metal"]), default="local", show_default=True,
                     help="Local-environment energy or Zn-only energy."),
        label_key_option(None, "Per-atom energies or per-metal labels (default: first of energies, energy, "
                               "e_local, e_local_mofff)."),
        click.option("--group-key", help="atoms.info key of the CV group (default: the first of topology, "
                                         "structure_id, net, name present)."),
        click.option("--select", multiple=True, metavar="KEY=V1[,V2]",
                     help="Use only frames whose atoms.info[KEY] is one of the values (repeatable)."),
        click.option("--exclude", multiple=True, metavar="KEY=V1[,V2]",
                     help="Leave out frames whose atoms.info[KEY] is one of the values, e.g. order=d-r."),
        click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        solver_options,
        click.option("--selection", type=click.Choice(["fps", "cur", "random"]), default="fps", show_default=True,
                     help="Sparse solver: how inducing environments are chosen."),
        click.option("--shared-kernel", is_flag=True,
                     help="Exact solver with a training size: compute one kernel for all folds (and sizes) and "
                     "test on a seeded sample of N/(folds-1) environments per fold; much faster at large N."),
        click.option("--cache-dir", type=click.Path(path_type=Path),
                     help="Keep SOAP vectors on disk here (keyed by structures and SOAP hyperparameters)."),
        quiet_option,
    ]
    for option in reversed(options):
        function = option(function)
    return function


class Setup:
    """Parsed shared options: environments, spec, solver settings, cache."""

    def __init__(self, data, representation, cutoff, atom_sigma, n_max, l_max, noise, descriptor_backend, target,
                 label_key, group_key, select, exclude, folds, seed, solver, precision, inducing, selection,
                 shared_kernel, cache_dir, quiet):
        self.quiet = quiet
        if shared_kernel and solver != "exact":
            raise click.UsageError("--shared-kernel needs --solver exact")
        if cache_dir is not None:
            check_folder(cache_dir, "cache folder")
        self.spec = ModelSpec(representation=representation, cutoff=cutoff, atom_sigma=atom_sigma, n_max=n_max,
                              l_max=l_max, noise=noise, backend=descriptor_backend)
        self.env = read_environments(list(data), label_key=label_key, target=target, group_key=group_key,
                                     select=_info_filter(select, "--select"),
                                     exclude=_info_filter(exclude, "--exclude"))
        self.folds, self.seed, self.solver = folds, seed, solver
        self.shared_kernel = shared_kernel
        if solver == "exact":
            self.solver_options = regression_solver_options(solver, precision=precision)
        else:
            self.solver_options = regression_solver_options(solver, inducing=inducing, selection=selection, seed=seed)
        self.cache = SoapCache(cache_dir, progress=not quiet)
        self.log(f"{len(self.env)} environments in {len(self.env.structures)} structures, "
                 f"{self.env.n_groups} groups (by {self.env.group_by}); target {target}")

    def log(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)

    def vectors(self, largest: int | None):
        """SOAP vectors for a CV up to ``largest`` training environments: with --shared-kernel only those of
        the sampled environments, otherwise all (cached)."""
        if self.shared_kernel and largest is not None:
            return sampled_vectors(self.env, self.spec, self.cache, largest, n_folds=self.folds, seed=self.seed)
        return self.cache.vectors(self.env, self.spec)

    def cv_kwargs(self) -> dict:
        return {"n_folds": self.folds, "seed": self.seed, "solver": self.solver,
                "solver_options": self.solver_options}


SETUP_NAMES = ("data", "representation", "cutoff", "atom_sigma", "n_max", "l_max", "noise", "descriptor_backend",
               "target", "label_key", "group_key", "select", "exclude", "folds", "seed", "solver", "precision",
               "inducing", "selection", "shared_kernel", "cache_dir", "quiet")


def with_setup(function):
    @functools.wraps(function)
    def wrapper(**kwargs):
        setup = Setup(**{k: kwargs.pop(k) for k in SETUP_NAMES})
        return function(setup, **kwargs)

    return wrapper


def protect_output(outputs=lambda kwargs: [kwargs.get("output")]):
    """Add ``--force``; check (and lock for the command's duration) every output before any work.

    ``outputs(kwargs)`` lists the files the command will write; the command receives ``force``.
    """

    def decorate(function):
        @functools.wraps(function)
        def wrapper(**kwargs):
            claim_outputs(*outputs(kwargs), force=kwargs["force"])
            return function(**kwargs)

        return force_option(wrapper)

    return decorate


def _needs_n_train(setup, n_train) -> None:
    if setup.shared_kernel and n_train is None:
        raise click.UsageError("--shared-kernel needs --n-train")


def _cv_outputs(kwargs) -> list[Path]:
    output = kwargs["output"]
    return [output, kwargs.get("predictions") or output.with_suffix(".predictions.csv")]


@main.command()
@data_options
@click.option("--n-train", type=click.IntRange(min=1),
              help="Cap on training environments per fold (drawn at random, seeded).")
@click.option("-o", "--output", type=OUTPUT_FILE, default=Path("cv.json"), show_default=True,
              help="JSON summary (per-fold and mean train/test RMSE).")
@click.option("--predictions", type=OUTPUT_FILE,
              help="CSV of out-of-fold predictions (default: OUTPUT with suffix .predictions.csv).")
@cli_errors
@protect_output(_cv_outputs)
@with_setup
def cv(setup, n_train, output, predictions, force):
    """Grouped k-fold cross-validation of one model on DATA (extxyz files)."""
    _needs_n_train(setup, n_train)
    X = setup.vectors(n_train)
    result = cross_validate(X, setup.env.labels, setup.env.groups, setup.spec, n_train=n_train,
                            target=setup.env.target, shared_kernel=setup.shared_kernel, log=setup.log,
                            **setup.cv_kwargs())
    result.save(output, predictions=predictions or output.with_suffix(".predictions.csv"), overwrite=force)
    click.echo(f"{setup.spec.representation}: test RMSE {result.mean_test_rmse:.4f} eV, train "
               f"{result.mean_train_rmse:.4f} eV ({result.n_folds} folds, N = {max(result.n_train)}, "
               f"{result.seconds:.1f} s) -> {output}")


@main.command("learning-curve")
@data_options
@click.option("--sizes", callback=_sizes, help="Comma-separated training sizes (default: the paper's 7 ... 32000).")
@click.option("-o", "--output", type=OUTPUT_FILE, default=Path("learning_curve.csv"),
              show_default=True)
@cli_errors
@protect_output()
@with_setup
def learning_curve_command(setup, sizes, output, force):
    """RMSE vs number of training environments (grouped k-fold CV per size)."""
    sizes = sizes or list(PAPER_SIZES)
    X = setup.vectors(usable_sizes(setup.env.groups, sizes, n_folds=setup.folds, seed=setup.seed)[-1])
    rows = learning_curve(X, setup.env.labels, setup.env.groups, setup.spec, sizes=sizes, log=setup.log,
                          shared_kernel=setup.shared_kernel, **setup.cv_kwargs())
    write_csv(output, rows, LC_FIELDS, overwrite=force)
    last = rows[-1]
    click.echo(f"{setup.spec.representation}: N = {last['numb_training_atoms']} test RMSE "
               f"{last['av_test_rmse']:.4f} eV ({len(rows)} sizes) -> {output}")


def _claim_grid_csv(path: Path) -> None:
    """The grid CSV is appended to (resumable): a new file in a writable folder, or an existing grid CSV.

    It is locked for the command's duration (two searches appending to one file would duplicate points)."""
    if path.exists() and not path.is_dir():
        grid_csv_fields(path)
        if read_csv(path):  # its points must be numbers: they are compared with the new ones
            read_input(path, "grid-search CSV", read_csv, GRID_INPUT_FIELDS)
        if not os.access(path, os.W_OK):
            raise CGGPRError(f"cannot append to {path}: the file is not writable")
        check_output(path, force=True)  # folder checks
    else:
        check_output(path)
    hold(click.get_current_context(), output_lock(path), path)


@main.command("grid-search")
@data_options
@click.option("--cutoffs", required=True, type=FloatList(), help="Cutoffs (Å): '3,4,5' or 'start:stop:step'.")
@click.option("--sigmas", required=True, type=FloatList(),
              help="atom_sigma values (Å): '0.2,0.5' or 'start:stop:step'.")
@click.option("--noises", type=FloatList(), help="Noise values (eV), default the --noise value.")
@click.option("--n-train", type=click.IntRange(min=1), help="Cap on training environments per fold.")
@click.option("-o", "--output", type=OUTPUT_FILE, default=Path("grid.csv"), show_default=True,
              help="CSV, appended point by point; existing points are not recomputed (resumable).")
@cli_errors
def grid_search_command(output, **kwargs):
    """Grid search over cutoff x atom_sigma (x noise), resumable, results as CSV; prints the optimum.

    With --shared-kernel and --n-train every point is evaluated on the same seeded per-fold samples and
    only their SOAP vectors are computed (fast for wide grids on large data).
    """
    _claim_grid_csv(output)
    new = not output.exists()
    try:
        return with_setup(_grid_search)(output=output, **kwargs)
    except BaseException:
        if new and output.exists() and len(output.read_text().splitlines()) <= 1:
            output.unlink()  # a failed first run leaves no header-only file behind
        raise


def _grid_search(setup, cutoffs, sigmas, noises, n_train, output):
    _needs_n_train(setup, n_train)
    for cutoff in cutoffs:  # every point is a valid model before the first is computed
        for sigma in sigmas:
            for noise in noises or [setup.spec.noise]:
                try:
                    setup.spec.replace(cutoff=cutoff, atom_sigma=sigma, noise=noise)
                except ModelError as error:
                    raise ModelError(f"grid point cutoff {cutoff:g} Å, atom_sigma {sigma:g} Å, noise {noise:g} eV: "
                                     f"{error}") from None
    rows = grid_search(setup.env, setup.spec, cutoffs=cutoffs, atom_sigmas=sigmas, noises=noises or None,
                       csv_path=output, n_train=n_train, cache=setup.cache, shared_kernel=setup.shared_kernel,
                       log=setup.log, **setup.cv_kwargs())
    best = optimum(rows)
    click.echo(f"{setup.spec.representation} optimum: cutoff {best['cutoff']} Å, atom_sigma {best['atom_sigma']} Å, "
               f"noise {best['noise']} eV: test RMSE {best['test_rmse']:.4f} eV ({len(rows)} points) -> {output}")


def _optima(ctx, param, items):
    """--optimum REP=CUTOFF,SIGMA (repeatable) -> {representation: (cutoff, sigma)}."""
    chosen = {}
    for item in items:
        rep, _, values = item.partition("=")
        numbers = FloatList().convert(values, param, ctx) if values else []
        if len(numbers) != 2:
            raise click.BadParameter(f"{item!r}: expected REP=CUTOFF,SIGMA, e.g. AB2=8.0,0.3", ctx=ctx, param=param)
        try:
            chosen[canonical_representation(rep)] = (numbers[0], numbers[1])
        except (CGGPRError, ValueError, KeyError) as error:
            raise click.BadParameter(f"{item!r}: {error}", ctx=ctx, param=param) from None
    return chosen


def _grid_optima(paths) -> dict:
    """Each representation's optimum in grid-search CSVs (one line naming a file that is not one)."""
    chosen = {}
    for path in paths:
        grid_csv_fields(path)
        rows = read_input(path, "grid-search CSV", read_csv, GRID_INPUT_FIELDS)
        for rep in {str(r["representation"]) for r in rows}:
            best = optimum_of([r for r in rows if str(r["representation"]) == rep], [path])
            chosen[canonical_representation(rep)] = (best["cutoff"], best["atom_sigma"])
    return chosen


@main.command("cross-hyper")
@data_options
@click.option("--optimum", "optima", multiple=True, callback=_optima, metavar="REP=CUTOFF,SIGMA",
              help="REP=CUTOFF,SIGMA (repeatable); default the paper's optima, or from --grid files.")
@click.option("--grid", "grids", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Grid-search CSVs to take each representation's optimum from.")
@click.option("--diagonal-only", is_flag=True, help="Each representation with its own optimum only.")
@click.option("--n-train", type=click.IntRange(min=1), help="Cap on training environments per fold.")
@click.option("-o", "--output", type=OUTPUT_FILE, default=Path("table1.csv"), show_default=True)
@cli_errors
@protect_output()
@with_setup
def cross_hyper(setup, optima, grids, diagonal_only, n_train, output, force):
    """The paper's Table 1: each representation with each representation's optimal hyperparameters."""
    chosen = dict(PAPER_OPTIMUM)
    chosen.update(_grid_optima(grids))
    chosen.update(optima)
    _needs_n_train(setup, n_train)
    rows = cross_hyper_table(setup.env, chosen, base=setup.spec, n_train=n_train, cache=setup.cache,
                             diagonal_only=diagonal_only, shared_kernel=setup.shared_kernel, log=setup.log,
                             **setup.cv_kwargs())
    write_csv(output, rows, overwrite=force)
    for r in rows:
        click.echo(f"{r['representation']:>9} with {r['hypers_of']:>9} hypers ({r['cutoff']}, {r['atom_sigma']}): "
                   f"test {r['test_rmse']:.4f} eV")
    click.echo(f"-> {output}")


@main.command()
@click.option("--cv", "cv_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="cv JSON summaries (from `cggpr cv`); parity plots from their predictions.")
@click.option("--learning-curve", "lc_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="learning-curve CSVs.")
@click.option("--grid", "grid_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="grid-search CSVs.")
@click.option("--table", "table_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="cross-hyper CSVs (Table 1).")
@click.option("--paper", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The paper's data folder (new_learning_curve/, new_grid_search/) to show beside.")
@click.option("-o", "--output", type=OUTPUT_FILE, default=Path("report.md"), show_default=True,
              help="report.md or report.html; figures go to a folder beside it.")
@quiet_option
@cli_errors
@protect_output()
def report(cv_files, lc_files, grid_files, table_files, paper, output, force, quiet):
    """One markdown or HTML page with the tables and figures of earlier cv/learning-curve/grid runs.

    The figures go to the folder OUTPUT-stem_figures beside it, which belongs to the report (report.md and
    report.html share it): its figures are replaced by each report.
    """
    path = build_report(output, cv_files=cv_files, lc_files=lc_files, grid_files=grid_files,
                        table_files=table_files, paper=paper, overwrite=force)
    if not quiet:
        click.echo(f"report -> {path}")
