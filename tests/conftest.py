"""Shared test helpers.

``shared_data``: the developers' reference data folder ``../shared/data`` (next to the project root);
tests that use it are skipped with a clear reason when it is absent (e.g. in a fresh clone).
"""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data``; skips the test when the folder is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared reference data not available at {SHARED_DATA} "
                    "(only developer checkouts and CI have ../shared/data)")
    return SHARED_DATA


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, timeout: float = 120):
    """Run ``examples/<name>`` in its small mode (``CGGPR_EXAMPLE_SMALL=1``); the finished process."""
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "CGGPR_EXAMPLE_SMALL": "1"})
