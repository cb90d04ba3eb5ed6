"""An interrupt at every possible moment of a save: only a complete file or nothing is ever left.

A real Ctrl-C lands at a random bytecode (tests/test_hostile_models.py sends real SIGINTs, and catches a
bad moment only now and then). Here the moment is chosen, one after the other: a profile function
(``sys.setprofile``) raises KeyboardInterrupt at the n-th function entry (or generator resumption), C call
or C return of the output machinery (``ase_cggpr.outputs`` and the ``contextlib`` managers around it): the
places where CPython raises a pending SIGINT (the eval loop checks for signals on entering a function and
after a C call returns, for instance right after ``os.open`` returned and before its result was stored).
Return events are skipped: raising there would end a frame without running its ``finally``, which no
signal can do. Python unsets a profile function that raises, so each run is one interrupt, as one Ctrl-C
is. The files are real, in a temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

from ase_cggpr import outputs
from ase_cggpr.outputs import OutputError, atomic_output, output_lock

WATCHED = {os.path.abspath(outputs.__file__), os.path.abspath(contextlib.__file__)}
CONTENT = "complete\n"


def save(folder: Path, name: str = "out.txt", *, force: bool = False) -> None:
    with atomic_output(folder / name, force=force) as tmp:
        tmp.write_text(CONTENT)


def interrupted_at(n: int, action) -> bool:
    """Run ``action`` with a KeyboardInterrupt at the n-th watched event; True if one was raised."""
    seen = 0

    def profile(frame, event, arg):
        nonlocal seen
        if event != "return" and os.path.abspath(frame.f_code.co_filename) in WATCHED:
            seen += 1
            if seen == n:
                raise KeyboardInterrupt
    sys.setprofile(profile)
    try:
        action()
    except KeyboardInterrupt:
        return True
    finally:
        sys.setprofile(None)
    return False


def count_events(action) -> int:
    seen = 0

    def profile(frame, event, arg):
        nonlocal seen
        if event != "return" and os.path.abspath(frame.f_code.co_filename) in WATCHED:
            seen += 1
    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return seen


@pytest.mark.parametrize("force", [False, True], ids=["new", "force"])
def test_an_interrupt_anywhere_in_a_save_leaves_a_complete_file_or_nothing(tmp_path, force):
    """Every watched moment of ``atomic_output`` (lock, temporary file, publish, release), one by one."""
    clean = tmp_path / "clean"
    clean.mkdir()
    total = count_events(lambda: save(clean, force=force))
    assert total > 30  # the machinery really was watched
    assert sorted(p.name for p in clean.iterdir()) == ["out.txt"]
    outcomes = set()
    for n in range(1, total + 1):
        folder = tmp_path / f"run{n}"
        folder.mkdir()
        if force:
            (folder / "out.txt").write_text("old\n")
        raised = interrupted_at(n, lambda folder=folder: save(folder, force=force))
        left = sorted(p.name for p in folder.iterdir())
        assert [name for name in left if name.startswith(".")] == [], (n, total, left)
        assert left in ([], ["out.txt"]), (n, left)
        if left:
            assert (folder / "out.txt").read_text() in ((CONTENT, "old\n") if force else (CONTENT,)), n
        outcomes.add((raised, (folder / "out.txt").read_text() if left else None))
        save(folder, "next.txt")  # the next writer is not refused by anything left behind
    # early interrupts leave nothing new, late ones (after the publish) a complete file
    assert (True, CONTENT) in outcomes and (True, "old\n" if force else None) in outcomes


def test_an_interrupt_anywhere_in_taking_a_lock_leaves_no_lock(tmp_path):
    """``output_lock`` alone (as the CLI holds it for a command's duration), including taking over a stale one."""
    path = tmp_path / "m.npz"
    stale = path.with_name(".m.npz.lock")

    def hold() -> None:
        with output_lock(path) as lock:
            assert lock.read_text() == str(os.getpid())

    for with_stale in (False, True):
        setup = (lambda: stale.write_text("0")) if with_stale else (lambda: None)
        setup()
        total = count_events(hold)
        assert total > 20
        for n in range(1, total + 1):
            setup()
            interrupted_at(n, hold)
            left = sorted(p.name for p in tmp_path.iterdir())
            if left and with_stale:  # interrupted before the stale lock was taken over: it is untouched
                assert left == [".m.npz.lock"] and stale.read_text() == "0", (n, left)
            else:
                assert left == [], (with_stale, n, left)
            hold()  # the next writer takes the lock
            assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_live_lock_is_refused_and_kept(tmp_path):
    """A lock of a live process (the parent of this one) is neither taken over nor removed."""
    path = tmp_path / "m.npz"
    lock = tmp_path / ".m.npz.lock"
    lock.write_text(str(os.getppid()))
    with pytest.raises(OutputError, match="being written by another process"):
        save(tmp_path, "m.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.npz.lock"]
    assert not path.exists()
