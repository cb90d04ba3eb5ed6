"""Worker processes that die with their parent.

A process pool's workers outlive a parent killed with SIGKILL (``kill -9``, the out-of-memory killer): nothing
tells them, and a worker busy with a long MOF-FF relaxation or SOAP computation runs on, and may wait forever
for its next task. :func:`die_with_parent` is called first thing in a worker (e.g. as the pool's
``initializer``):

- on Linux it asks the kernel to send the worker SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``),
  which acts at once, even while the worker is inside C code;
- everywhere (and in case the kernel's signal is missed: it is tied to the thread that started the worker)
  a daemon thread checks every ``interval`` seconds whether the parent is still the original one
  (``os.getppid()`` changes when a parent dies and the orphan is adopted) and ends the process if not.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def _prctl_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    return False


def _watch(parent: int, interval: float) -> None:
    while True:
        time.sleep(interval)
        if os.getppid() != parent:
            os._exit(1)  # no cleanup: the parent that would collect our work is gone


def die_with_parent(parent: int | None = None, *, interval: float = 1.0) -> None:
    """Make this process end when its parent (``parent``, default: the current one) dies."""
    parent = os.getppid() if parent is None else int(parent)
    _prctl_pdeathsig()
    if os.getppid() != parent:  # the parent died before we could ask
        os._exit(1)
    threading.Thread(target=_watch, args=(parent, interval), name="die-with-parent", daemon=True).start()
