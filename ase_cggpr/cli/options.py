"""Shared pieces of every ``cggpr`` command: the error handler, option decorators and output claims.

Errors (:func:`cli_errors`, also applied once to the whole group in :mod:`._group`):

- a user error (:class:`~ase_cggpr.errors.CGGPRError`, a missing/existing/unreadable file, an ``OSError``
  naming a file, a missing optional extra, memory exhausted) is one line ``Error: ...`` naming the file or
  structure and the problem, exit code 1; click's usage errors keep exit code 2;
- Ctrl-C (and SIGTERM, turned into the same) prints ``Error: interrupted``, exit code 130, after every
  ``finally`` ran (temporary output files of :mod:`ase_cggpr.outputs` are removed);
- anything else is a bug: the traceback is printed, then one line saying so, with the version, exit 1.

Outputs (:func:`claim_outputs`): every file a command will write is checked before any work (folder exists
and is writable, not a directory, not an existing file unless ``--force``) and locked for the command's
duration, so a second command writing the same file fails at once instead of after its work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import io
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import click

from ..errors import CGGPRError, OptionError
from ..outputs import OutputError, check_output, output_lock
from ..pretrained import available, resolve, shadowing
from ..tasks import Runner, as_runner, check_available, check_chunk_size
from ..version import __version__

# -- errors -------------------------------------------------------------------------------------------------------


class Interrupted(click.ClickException):
    """Ctrl-C or SIGTERM: exit code 130 (128 + SIGINT), as shells report an interrupted command."""

    exit_code = 130


class InternalError(click.ClickException):
    """An exception that is not a user error: a bug in ase-cggpr (the traceback was printed)."""

    exit_code = 1


#: ``OSError`` codes that describe the user's system, not a bug, even without a file name
_SYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EMFILE}


def one_line(text: str) -> str:
    """Collapse a message to one line (the CLI prints one line per error)."""
    parts = [p.strip() for p in str(text).splitlines() if p.strip()]
    return "; ".join(parts)


def user_message(error: BaseException) -> str | None:
    """The one-line message of a user error, or None if ``error`` is a bug."""
    if isinstance(error, CGGPRError):
        return one_line(str(error)) or type(error).__name__
    if isinstance(error, OSError):
        filename = getattr(error, "filename", None)
        reason = error.strerror or (str(error.args[0]) if error.args else "") or type(error).__name__
        if filename is not None:
            second = getattr(error, "filename2", None)
            where = f"{filename} -> {second}" if second is not None else f"{filename}"
            return one_line(f"{where}: {reason}")
        if isinstance(error, FileNotFoundError | FileExistsError | PermissionError | IsADirectoryError
                      | NotADirectoryError) or error.errno in _SYSTEM_ERRNOS:
            return one_line(str(error)) or type(error).__name__
        return None
    if isinstance(error, MemoryError):
        detail = str(error) or "an array did not fit"
        return one_line(f"out of memory ({detail}); use fewer environments (--n-train) or smaller descriptors")
    if isinstance(error, ImportError) and "pip install" in str(error):  # an optional extra is missing
        return one_line(str(error))
    return None


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises KeyboardInterrupt (so ``finally`` blocks clean up)."""
    if threading.current_thread() is not threading.main_thread() or getattr(_sigterm_as_interrupt, "active", False):
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the cleanup
        raise KeyboardInterrupt("SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not settable here (embedded interpreter)
        yield
        return
    _sigterm_as_interrupt.active = True
    try:
        yield
    finally:
        _sigterm_as_interrupt.active = False
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def error_handler() -> Iterator[None]:
    """Turn every exception of a command into click's one-line error with the right exit code."""
    with _sigterm_as_interrupt():
        try:
            yield
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # the reader of our output went away (`cggpr ... | head`): stop quietly
            _silence_stdout()
            raise click.exceptions.Exit(141) from None  # 128 + SIGPIPE, as shells report it
        except KeyboardInterrupt as error:
            how = " (SIGTERM)" if error.args == ("SIGTERM",) else ""
            raise Interrupted(f"interrupted{how}; unfinished output files were removed") from None
        except Exception as error:
            message = user_message(error)
            if message is not None:
                raise click.ClickException(message) from None
            traceback.print_exc(file=sys.stderr)
            raise InternalError(
                f"internal error {type(error).__name__}: {one_line(str(error))[:300]}; this is a bug in "
                f"ase-cggpr {__version__}, please report it with the traceback above") from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


def cli_errors(function):
    """Decorator for a click command callback: the one error handler of every ``cggpr`` command."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with error_handler():
            return function(*args, **kwargs)

    return wrapper


# -- outputs ------------------------------------------------------------------------------------------------------


def claim_outputs(*paths: Path | str | None, force: bool = False) -> list[Path]:
    """Check every output a command will write (before any work) and lock it until the command ends.

    Returns the paths (``None`` entries dropped). Needs a click context (the locks are released when the
    command's context closes, on any exit).
    """
    chosen = [Path(p) for p in paths if p is not None]
    seen = set()
    for path in chosen:
        key = os.path.abspath(path)
        if key in seen:
            raise click.UsageError(f"{path} is given for two outputs")
        seen.add(key)
        check_output(path, force=force)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        for path in chosen:
            hold(ctx, output_lock(path), path)
    return chosen


def hold(ctx: click.Context, lock, path: Path) -> None:
    """Enter ``lock`` (an :func:`~ase_cggpr.outputs.output_lock`) for the command's duration; creating the
    lock file is also the real test that the folder is writable (``os.access`` says yes to root everywhere)."""
    try:
        ctx.with_resource(lock)
    except OutputError:
        raise
    except OSError as error:
        folder = Path(path).parent if str(Path(path).parent) else Path(".")
        raise OutputError(f"cannot write {path}: folder {folder} is not writable "
                          f"({error.strerror or error})") from None


def check_folder(path: Path | str, what: str = "output folder") -> Path:
    """An output folder: an existing writable directory, or a new one whose parent exists and is writable."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise CGGPRError(f"{what} {path} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise CGGPRError(f"{what} {path} is not writable")
        return path
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CGGPRError(f"cannot create {what} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CGGPRError(f"cannot create {what} {path}: folder {parent} is not writable")
    return path


def check_build_folder(path: Path | str, marker: str = "manifest.json") -> Path:
    """A dataset build's output folder: new, empty, or an earlier build (holding ``marker``) to resume.

    An existing folder with other files is refused: the build writes atomistic.extxyz, cg.extxyz, ... into it
    and would replace files that are not its own."""
    if not str(path).strip():
        raise click.BadParameter("the folder name is empty", param_hint="'-o' / '--output'")
    path = check_folder(path)
    own = {"relaxed", "frames"}  # restored relaxations may precede the manifest
    if path.is_dir() and not (path / marker).is_file() and any(p.name not in own for p in path.iterdir()):
        raise CGGPRError(f"output folder {path} holds other files and no {marker} (it is not a dataset build to "
                         "resume); give a new or empty folder")
    return path


# -- parameter types ----------------------------------------------------------------------------------------------


class FiniteFloat(click.ParamType):
    """A finite float within optional bounds (click's FloatRange lets NaN through)."""

    name = "float"

    def __init__(self, min: float | None = None, max: float | None = None, *, min_open: bool = False,
                 max_open: bool = False):
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def describe(self) -> str:
        low = "" if self.min is None else f"{self.min}{' <' if self.min_open else ' <='} "
        high = "" if self.max is None else f"{' <' if self.max_open else ' <='} {self.max}"
        return f"{low}x{high}" if (low or high) else "a finite number"

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
            if not math.isfinite(number):
                self.fail(f"{value!r} is not a finite number", param, ctx)
        too_low = self.min is not None and (number <= self.min if self.min_open else number < self.min)
        too_high = self.max is not None and (number >= self.max if self.max_open else number > self.max)
        if too_low or too_high:
            self.fail(f"{value} is not in the range {self.describe()}", param, ctx)
        return number


POSITIVE = FiniteFloat(0, min_open=True)


class OutputFile(click.ParamType):
    """An output file name (a Path): refuses '', '.', '..' and paths ending in '/' at parse time."""

    name = "file"

    def convert(self, value, param, ctx):
        if isinstance(value, Path):
            value = str(value)
        text = str(value)
        path = Path(text)
        if not text.strip():
            self.fail("the file name is empty", param, ctx)
        if text.endswith(("/", os.sep)) or path.name in ("", ".", ".."):
            self.fail(f"{text!r} names a folder, not a file", param, ctx)
        return path


OUTPUT_FILE = OutputFile()


class FloatList(click.ParamType):
    """'3,4.5,6' or 'start:stop:step' (stop included) -> a list of finite floats (``positive``: all > 0)."""

    name = "values"
    max_points = 10_000

    def __init__(self, *, positive: bool = True):
        self.positive = positive

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        text = str(value).strip()
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                self.fail(f"{text!r}: a range is 'start:stop:step' (three numbers)", param, ctx)
            try:
                start, stop, step = (float(v) for v in parts)
            except ValueError:
                self.fail(f"{text!r}: 'start:stop:step' must be three numbers", param, ctx)
            if not all(math.isfinite(v) for v in (start, stop, step)):
                self.fail(f"{text!r}: start, stop and step must be finite", param, ctx)
            if step <= 0:
                self.fail(f"{text!r}: the step must be > 0", param, ctx)
            if stop < start:
                self.fail(f"{text!r}: stop is below start", param, ctx)
            count = int(math.floor((stop - start) / step + 1e-9)) + 1
            if count > self.max_points:
                self.fail(f"{text!r} has {count} values (at most {self.max_points})", param, ctx)
            values = [round(start + k * step, 10) for k in range(count)]
        else:
            values = []
            for item in text.split(","):
                if not item.strip():
                    continue
                try:
                    number = float(item)
                except ValueError:
                    self.fail(f"{item.strip()!r} is not a number (expected '3,4.5,6' or 'start:stop:step')",
                              param, ctx)
                if not math.isfinite(number):
                    self.fail(f"{item.strip()!r} is not a finite number", param, ctx)
                values.append(number)
            if not values:
                self.fail(f"{text!r} holds no values", param, ctx)
        if self.positive and any(v <= 0 for v in values):
            self.fail(f"{text!r}: every value must be > 0", param, ctx)
        return values


#: per-atom array names that ASE manages itself: never a label
RESERVED_ARRAYS = frozenset({"positions", "numbers", "momenta", "masses", "initial_charges", "initial_magmoms",
                             "tags", "species", "pos", "Z"})


def _label_key(ctx, param, value):
    """Validate a label array name (non-empty, one extxyz word)."""
    if value is None:
        return value
    if not value.strip() or value != value.strip() or any(c in value for c in " \t\"'=,"):
        raise click.BadParameter(f"{value!r} is not a usable array name (non-empty, no spaces, quotes, "
                                 "'=' or ',')", ctx=ctx, param=param)
    return value


# -- option decorators --------------------------------------------------------------------------------------------

REPRESENTATION = click.Choice(["atomistic", "AB2", "A"], case_sensitive=False)


def _apply(function, options):
    for option in reversed(options):
        function = option(function)
    return function


def spec_options(function):
    """The model specification: --representation, --cutoff, --atom-sigma, --n-max, --l-max, --noise,
    --descriptor-backend (the same for train and every evaluation command)."""
    return _apply(function, [
        click.option("--representation", type=REPRESENTATION, default="AB2", show_default=True,
                     help="atomistic, AB2 (metal + linker beads) or A (metal sites only)."),
        click.option("--cutoff", type=POSITIVE, help="SOAP cutoff (Å); default: the paper's optimum."),
        click.option("--atom-sigma", type=POSITIVE, help="SOAP Gaussian width (Å); default: the paper's optimum."),
        click.option("--n-max", type=click.IntRange(min=1), default=16, show_default=True),
        click.option("--l-max", type=click.IntRange(min=0), default=8, show_default=True),
        click.option("--noise", type=POSITIVE, default=0.2, show_default=True, help="GP noise sigma (eV)."),
        click.option("--descriptor-backend", type=click.Choice(["featomic", "quippy"]), default="featomic",
                     show_default=True),
    ])


def solver_options(function):
    """--solver, --precision, --inducing (the regression solver's settings)."""
    return _apply(function, [
        click.option("--solver", type=click.Choice(["exact", "sparse"]), default="exact", show_default=True),
        click.option("--precision", type=click.Choice(["float64", "mixed"]), default="float64", show_default=True,
                     help="Exact solver: float64, or float32 Cholesky refined to float64 accuracy."),
        click.option("--inducing", type=click.IntRange(min=1), default=4000, show_default=True,
                     help="Sparse solver: number of inducing environments M."),
    ])


def label_key_option(default: str | None = "energies", help: str | None = None):
    """--label-key (one name for every command)."""
    return click.option("--label-key", "label_key", default=default, show_default=default is not None,
                        callback=_label_key,
                        help=help or "Per-atom energy array (local energies are formed) or per-site local-energy "
                                     "array.")


def quiet_option(function):
    return click.option("-q", "--quiet", is_flag=True, help="No progress output or summary.")(function)


def force_option(function):
    return click.option("--force", is_flag=True, help="Overwrite existing output files.")(function)


def defects_option(function):
    """``--defects flag|refuse``: what prediction does with coordination defects (:mod:`ase_cggpr.defects`)."""
    return click.option(
        "--defects", type=click.Choice(["flag", "refuse"]), default="flag", show_default=True,
        help="Coordination defects (a Zn with 3 or 5 N, a dangling linker: amorphous networks): 'flag' predicts "
             "every site and marks the defective ones, and those with a defect within the model's cutoff, "
             "untrusted; 'refuse' rejects the structure.")(function)


def workers_option(default: int = 1, help: str = "Worker processes."):
    return click.option("-j", "--workers", type=click.IntRange(min=1), default=default, show_default=True,
                        help=help)


class ModelSource(click.ParamType):
    """A MODEL argument: a model file, or the name of a model that ships with the package (``AB2``, ...)."""

    name = "model"

    def convert(self, value, param, ctx):
        path = resolve(value)
        if path.is_file():
            return path
        if shadowing(value):  # a folder named like a shipped model
            self.fail(f"{value!r} is not a model file: {shadowing(value)}", param, ctx)
        if path.is_dir():
            self.fail(f"{value!r} is a folder, not a model file", param, ctx)
        shipped = ", ".join(available()) or "none in this installation"
        self.fail(f"{value!r} is neither a model file nor the name of a shipped model ({shipped})", param, ctx)


MODEL_ARGUMENT = click.argument("model_path", metavar="MODEL", type=ModelSource())


def _cluster_option_value(ctx, param, values) -> dict:
    options = {}
    for item in values:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE (e.g. cores=8, memory=16GB)", ctx, param)
        value: object = text
        for convert in (int, float):
            with contextlib.suppress(ValueError):
                value = convert(text)
                break
        options[key.strip().replace("-", "_")] = value
    return options


def _chunk_size_value(ctx, param, value):
    if value is None:
        return None
    try:
        return check_chunk_size("auto" if value.strip().lower() == "auto" else int(value))
    except (ValueError, OptionError):
        raise click.BadParameter(f"{value!r} is not an integer >= 1 or 'auto'", ctx, param) from None


def chunk_size_option(function):
    """``--chunk-size N|auto``: structures sent to a worker as one task (ase_cggpr.tasks); the command receives
    ``workers`` as a :class:`~ase_cggpr.tasks.Runner` with that ``chunk_size`` when it is given. Apply it under
    :func:`runner_options` (it reads the Runner that one builds)."""

    @functools.wraps(function)
    def wrapper(*args, chunk_size, **kwargs):
        if chunk_size is not None:
            kwargs["workers"] = dataclasses.replace(as_runner(kwargs["workers"]), chunk_size=chunk_size)
        return function(*args, **kwargs)

    return click.option("--chunk-size", metavar="N|auto", callback=_chunk_size_value,
                        help="Structures per task sent to a worker (-j > 1 or a Dask cluster). Default auto: chunks "
                             "of about 1 s of work, sized from the measured times (docs/cluster.md).")(wrapper)


def runner_options(function):
    """``--scheduler``, ``--cluster``, ``--jobs``, ``--cluster-option``: run the tasks on a Dask cluster
    (:mod:`ase_cggpr.tasks`) instead of the ``-j/--workers`` local processes. The command receives ``workers`` as an
    int (local processes) or a :class:`~ase_cggpr.tasks.Runner`."""

    @functools.wraps(function)
    def wrapper(*args, scheduler, cluster, jobs, cluster_option, **kwargs):
        if scheduler is not None or cluster is not None:
            kwargs["workers"] = Runner(scheduler=scheduler, cluster=cluster, jobs=jobs, cluster_options=cluster_option)
            check_available(kwargs["workers"])  # the install hint (or no sbatch) before any work
        return function(*args, **kwargs)

    options = [
        click.option("--scheduler", metavar="ADDRESS",
                     help="Run the tasks on a running Dask cluster: its scheduler's address (tcp://host:8786) or "
                          "scheduler file (needs pip install '.[cluster]'; -j is then ignored)."),
        click.option("--cluster", type=click.Choice(["slurm", "pbs"]),
                     help="Start Dask workers as SLURM or PBS batch jobs (dask-jobqueue; pip install '.[cluster]')."),
        click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Batch jobs to start with --cluster."),
        click.option("--cluster-option", multiple=True, metavar="KEY=VALUE", callback=_cluster_option_value,
                     help="A dask-jobqueue cluster setting for --cluster (cores=8, memory=16GB, walltime=01:00:00, "
                          "queue=..., account=...; repeatable)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
