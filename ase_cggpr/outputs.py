"""Safe output files: checked before the work, written to a temporary file, published atomically.

Every file the package writes for a user (models, predictions, rankings, labelled data, reports) goes
through :func:`atomic_output`:

- :func:`check_output` runs *before* any computation: the folder must exist and be writable, the path must
  not be a directory, and an existing file is refused unless ``force``;
- while the work runs, a lock file ``.NAME.lock`` (created exclusively, holding the process id) stops a
  second process from writing the same output; a lock whose process is dead is taken over;
- the data go to a hidden temporary file in the same folder, removed on any exit (error, Ctrl-C, SIGTERM
  turned into an exception by the CLI);
- on success the temporary file becomes ``path`` in one step: ``os.replace`` with ``force``, otherwise
  ``os.link`` (which fails if ``path`` appeared meanwhile), so an existing file is never overwritten
  without ``force`` and never left half-written.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import CGGPRError


class OutputError(CGGPRError, OSError):
    """An output path cannot be written (missing or read-only folder, a directory, an existing file)."""


def check_output(path: str | os.PathLike, *, force: bool = False) -> Path:
    """Refuse an output path that cannot be written, before any work is done; return it as a Path."""
    path = Path(path)
    if str(path) in ("", "."):
        raise OutputError("the output path is empty")
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: folder {parent} is not writable")
    if path.exists() and not force:
        raise OutputError(f"{path} exists; pass --force (overwrite=True) to overwrite it")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"cannot overwrite {path}: the file is not writable")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold ``.NAME.lock`` beside ``path`` for the duration of the block (exclusive across processes)."""
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    acquired = False
    try:  # from the moment the lock exists it is removed on any exit, Ctrl-C while writing the pid included
        for _attempt in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(lock.read_text().strip() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid and _pid_alive(pid) and pid != os.getpid():
                    raise OutputError(f"{path} is being written by another process (pid {pid}); "
                                      f"wait for it or remove {lock}") from None
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # stale lock: its process is gone
                continue
            acquired = True
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            break
        else:
            raise OutputError(f"cannot lock {path}: remove {lock} if no other process is writing it")
        yield lock
    finally:
        if acquired:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()


def temporary_path(path: str | os.PathLike) -> Path:
    """A hidden temporary name beside ``path`` that keeps its suffix (``np.savez`` needs ``.npz``)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def publish(tmp: Path, path: Path, *, force: bool) -> None:
    """Move the finished ``tmp`` to ``path`` in one step; without ``force`` never replace an existing file."""
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputError(f"{path} was created by another process meanwhile; not overwritten "
                          "(pass --force to overwrite it)") from None
    except OSError:  # file systems without hard links: fall back to an existence check and rename
        if path.exists():
            raise OutputError(f"{path} was created by another process meanwhile; not overwritten") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``path``, on any failure it is removed.

    >>> with atomic_output("ranking.csv") as tmp:       # doctest: +SKIP
    ...     tmp.write_text(table)
    """
    path = check_output(path, force=force)
    with output_lock(path):
        tmp = temporary_path(path)
        try:
            yield tmp
            if not tmp.exists():
                raise OutputError(f"nothing was written to {path}")
            publish(tmp, path, force=force)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
