"""Progress reporting for long loops: click progress bars on stderr, silenced with ``enabled=False``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import click


@contextlib.contextmanager
def progress_bar(total: int, label: str, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Context manager yielding ``update(n)``; draws a click progress bar on stderr when enabled."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar.update
