"""Safe output files: checked before the work, written to a temporary file, published atomically.

Every file the package writes for a user (models, predictions, rankings, labelled data, reports) goes
through :func:`atomic_output`:

- :func:`check_output` runs *before* any computation: the folder must exist and be writable, the path must
  not be a directory, and an existing file is refused unless ``force``;
- while the work runs, a lock file ``.NAME.lock`` (holding the process id, hard-linked into place from a
  complete file so it never exists empty) stops a second process from writing the same output; a lock
  whose process is dead is taken over; it is removed on any exit, an interrupt while it is taken included;
  what a writer killed with SIGKILL left beside the output (its ``.NAME.lock.PID.*`` and temporary file)
  is removed by the next writer of the same output, once it holds the lock;
- the data go to a hidden temporary file in the same folder, removed on any exit (error, Ctrl-C, SIGTERM
  turned into an exception by the CLI);
- on success the temporary file becomes ``path`` in one step: ``os.replace`` with ``force``, otherwise
  ``os.link`` (which fails if ``path`` appeared meanwhile), so an existing file is never overwritten
  without ``force`` and never left half-written.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
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


def _holder(lock: Path) -> int:
    """The process id written in ``lock``; 0 if the file is empty, unreadable or holds no number."""
    try:
        return int(lock.read_text().strip() or "0")
    except (OSError, ValueError):
        return 0


def _write_pid(name: Path) -> None:
    """Create ``name`` exclusively and write this process's id into it."""
    fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(str(os.getpid()))


class _LockState:
    """What one :func:`output_lock` call has put on disk, for its cleanup (no file descriptor to lose)."""

    def __init__(self) -> None:
        self.direct = False  # the lock was created in place (file systems without hard links)
        self.trying = False  # inside that creation: the lock may exist, empty, without ``direct`` being set


def _acquire(path: Path, lock: Path, mine: Path, state: _LockState) -> None:
    """Put a lock file holding this process's id at ``lock``, or raise :class:`OutputError` naming ``path``.

    The id is written complete to ``mine`` (a name no other call uses) and ``mine`` is hard-linked to
    ``lock``: the link fails if ``lock`` exists, and a lock never exists empty. Whether ``lock`` is this
    call's is then a question the file system answers (same inode as ``mine``), not a variable that an
    interrupt between the system call and the assignment can leave unset.
    """
    _write_pid(mine)
    links = True
    for _attempt in range(3):
        try:
            if links:
                os.link(mine, lock)
            else:
                state.trying = True
                _write_pid(lock)
                state.direct = True
            return
        except FileExistsError:
            state.trying = False
            pid = _holder(lock)
            if pid and _pid_alive(pid) and pid != os.getpid():
                raise OutputError(f"{path} is being written by another process (pid {pid}); "
                                  f"wait for it or remove {lock}") from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # stale lock: its process is gone (or it holds no process id)
        except OSError:
            if not links:
                raise
            links = False  # a file system without hard links: create the lock in place, exclusively
    raise OutputError(f"cannot lock {path}: remove {lock} if no other process is writing it")


def _release(lock: Path, mine: Path, state: _LockState, owner: int) -> None:
    """Remove ``lock`` if this call put it there (whatever moment it was interrupted at), then ``mine``.

    Idempotent, so an interrupted release can simply be run again. Nothing happens in a process forked
    from ``owner`` (a worker must not remove its parent's lock).
    """
    if os.getpid() != owner:
        return
    with contextlib.suppress(OSError):
        if os.path.samefile(lock, mine):
            lock.unlink()
    if state.direct or state.trying:
        with contextlib.suppress(OSError):
            if _holder(lock) == os.getpid() or (state.trying and lock.stat().st_size == 0):
                lock.unlink()
    with contextlib.suppress(FileNotFoundError):
        mine.unlink()


def _stale_files(path: Path) -> list[Path]:
    """Files a killed writer of ``path`` left beside it (SIGKILL runs no cleanup): its ``.NAME.lock.PID.HEX``
    and its temporary ``.STEM.PID.tmpSUFFIX`` (with ``model.save``'s ``.part.npz``), whose process is dead."""
    folder = path.parent if str(path.parent) else Path(".")
    patterns = (re.compile(rf"\.{re.escape(path.name)}\.lock\.(\d+)\.[0-9a-f]+"),
                re.compile(rf"\.{re.escape(path.stem)}\.(\d+)\.tmp{re.escape(path.suffix)}(\.part\.npz)?"))
    stale = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            for pattern in patterns:
                match = pattern.fullmatch(entry.name)
                if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
                    stale.append(folder / entry.name)
    return stale


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold ``.NAME.lock`` beside ``path`` for the duration of the block (exclusive across processes).

    The lock holds the writer's process id; a lock whose process is dead (or that holds no id) is taken
    over. Cleanup is armed before any file is created, and it asks the file system which files are this
    call's, so a Ctrl-C or SIGTERM at any moment of taking the lock leaves nothing behind. A process forked
    while the lock is held (worker pools) never removes it: only the process that took it does.
    """
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    owner = os.getpid()
    mine = path.with_name(f".{path.name}.lock.{owner}.{secrets.token_hex(4)}")
    state = _LockState()
    try:
        _acquire(path, lock, mine, state)
        for stale in _stale_files(path):  # only the lock holder sweeps: no live writer of ``path`` is left
            _remove(stale)
        yield lock
    finally:  # the retry sits here, not in a helper: an interrupt can land on entering any function
        try:
            _release(lock, mine, state, owner)
        except BaseException:  # an interrupt inside the release (the block had ended): finish it, go on
            _release(lock, mine, state, owner)
            raise


def _remove(path: Path) -> None:
    """Remove ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


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
        finally:  # as in output_lock: an interrupt inside the removal does not leave the file behind
            try:
                _remove(tmp)
            except BaseException:
                _remove(tmp)
                raise
