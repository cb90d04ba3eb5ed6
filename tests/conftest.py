"""Shared test data and fixtures.

Two sources of data:

* **The package's built-in dataset** (``ase_cggpr/data/default_{atomistic,cg}.extxyz.gz``, installed with the
  package; ``ase_cggpr/data/README.md``): 364 MOF-FF-labelled Zn(Im)2 frames of 32 nets. It is the default
  fixture of every behaviour test (models, calculator, forces, CLI, screening, evaluation), so the suite runs
  in a fresh clone.
* **The authors' reference files** ``../shared/data`` (``mofff-reference``, ``paper``, ``nets``,
  ``zif-structures``, ``mofff``): only the tests that compare with them use the ``shared_data`` fixture, and
  they skip with a clear reason when the folder is absent. ``CGGPR_SHARED_DATA=<folder>`` points at another
  copy; ``CGGPR_SHARED_DATA=/nonexistent python -m pytest -rs`` simulates a fresh clone in a developer checkout.
"""

from __future__ import annotations

import os
import signal
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

# The tests send real Ctrl-Cs (SIGINT) to the commands they start, which must react as in a terminal. A test run
# started in the background by a non-interactive shell (`pytest ... &`, nohup) has SIGINT ignored, and a child keeps
# an ignored signal across exec, so its Python would never see the Ctrl-C: give the run Python's own handler back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SHARED_DATA = Path(os.environ.get("CGGPR_SHARED_DATA")
                   or Path(__file__).resolve().parents[1].parent / "shared" / "data")

# The three frames most tests train and predict on: net YUG (16 Zn, space group C2 when ideal), the ideal `d`
# frame, a small `r-d` and a small `d-r` rattle. Like the authors' three cag frames: two to train, one held out.
NET = "YUG"
NET_FRAMES = (("d", "none"), ("r-d", "small"), ("d-r", "small"))
SMALL = dict(n_max=6, l_max=3)  # small SOAP bases keep the suite fast; the tests do not need the paper's basis


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data`` (or ``$CGGPR_SHARED_DATA``); skips the test when the folder is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the authors' reference data is not available at {SHARED_DATA} "
                    "(only developer checkouts and CI have ../shared/data; set CGGPR_SHARED_DATA to use another copy)")
    return SHARED_DATA


@lru_cache(maxsize=2)
def _builtin(kind: str) -> tuple:
    import gzip
    import io

    from ase.io import read

    from ase_cggpr.io import default_dataset_path

    # decompress first: ase.io.read on the .gz path takes ~18 s for the atomistic file, this ~0.7 s
    with gzip.open(default_dataset_path(kind), "rt") as handle:
        text = handle.read()
    return tuple(read(io.StringIO(text), ":", format="extxyz"))


def builtin_frames(kind: str = "atomistic", **info) -> list:
    """Fresh copies of the built-in frames (``kind`` "atomistic" or "cg") whose ``info`` matches ``info``.

    Copies keep the per-atom labels: atomistic ``energies`` (ASE keeps them in ``calc.results``) and
    ``e_local``; coarse-grained ``e_local`` on Si. Values of ``info`` may be one value or a tuple of values.
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for atoms in _builtin(kind):
        if all(atoms.info.get(k) in (v if isinstance(v, tuple) else (v,)) for k, v in info.items()):
            copy = atoms.copy()
            if atoms.calc is not None:
                copy.calc = SinglePointCalculator(copy, **{k: np.copy(v) for k, v in atoms.calc.results.items()})
            out.append(copy)
    return out


def net_frames(kind: str = "atomistic") -> list:
    """The three frames of ``NET`` (see ``NET_FRAMES``), each with its own ``structure_id`` (``YUG-0``..2) and
    ``info['topology'] = 'YUG'`` (as in the authors' cag frames: one framework, three structures)."""
    frames = []
    for k, (order, rattle) in enumerate(NET_FRAMES):
        (atoms,) = builtin_frames(kind, net=NET, order=order, rattle=rattle, batch=(0, 1))
        atoms.info["structure_id"] = f"{NET}-{k}"
        atoms.info["topology"] = NET
        atoms.info["name"] = f"{NET}-{order}-{rattle}"
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def frames() -> list:
    """The three atomistic frames of ``net_frames()`` (fresh copies per test module)."""
    return net_frames("atomistic")


@pytest.fixture(scope="module")
def cg_frames() -> list:
    """The coarse-grained versions of ``frames`` (Si = Zn site, O = ring centroid; label ``e_local``)."""
    return net_frames("cg")


@pytest.fixture(scope="session")
def small_models() -> dict:
    """Featomic models with small SOAP bases, one per representation, trained once per session on the first
    two ``net_frames()`` (32 environments, label ``energies``). Tests must not modify them."""
    from ase_cggpr.model import CGGPRModel

    train = net_frames("atomistic")[:2]
    hypers = {"atomistic": dict(SMALL, n_max=5, cutoff=5.0), "AB2": SMALL, "A": SMALL}
    return {rep: CGGPRModel(representation=rep, backend="featomic", **h).fit(train, label_key="energies")
            for rep, h in hypers.items()}


def methylated(atoms, name: str | None = None):
    """A copy of an atomistic Zn(Im)2 structure with every imidazolate turned into 2-methylimidazolate (ZIF-8's
    linker, C4H5N2): the H on each C bonded to two N is replaced by a CH3 group (C-C 1.49 Å, C-H 1.09 Å,
    tetrahedral). Built from the built-in data for tests of an unsupported linker."""
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    i, j, D = neighbor_list("ijD", atoms, {("C", "N"): 1.6, ("C", "H"): 1.25})
    symbols = np.array(atoms.get_chemical_symbols())
    out = atoms.copy()
    out.calc = None
    remove, add = [], []
    for c in np.flatnonzero(symbols == "C"):
        partners = j[i == c]
        if (symbols[partners] == "N").sum() != 2:
            continue
        (h_index,) = partners[symbols[partners] == "H"]
        u = D[(i == c) & (j == h_index)][0]
        u = u / np.linalg.norm(u)
        v = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
        v /= np.linalg.norm(v)
        w = np.cross(u, v)
        methyl = atoms.positions[c] + 1.49 * u
        add.append(("C", methyl))
        for phi in (0.0, 2 * np.pi / 3, 4 * np.pi / 3):
            add.append(("H", methyl + 1.09 * (u / 3 + np.sqrt(8) / 3 * (np.cos(phi) * v + np.sin(phi) * w))))
        remove.append(int(h_index))
    del out[remove]
    out += Atoms([s for s, _ in add], positions=[p for _, p in add], cell=out.cell, pbc=out.pbc)
    out.wrap()
    if name:
        out.info["name"] = name
    return out


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, timeout: float = 600):
    """Run ``examples/<name>`` in its small mode (``CGGPR_EXAMPLE_SMALL=1``); the finished process."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "CGGPR_EXAMPLE_SMALL": "1"})


class _CountingRegressor:
    """The model's own regressor, counting the calls that compute a variance (``predict(return_std=True)``);
    every number still comes from the real regressor."""

    def __init__(self, regressor):
        self._regressor, self.variance_calls = regressor, 0

    def predict(self, X, **kwargs):
        self.variance_calls += bool(kwargs.get("return_std"))
        return self._regressor.predict(X, **kwargs)

    def __getattr__(self, name):
        return getattr(self._regressor, name)


def counted_model(model) -> tuple:
    """A shallow copy of ``model`` whose regressor counts its variance calls: (copy, counter)."""
    import copy

    counted = copy.copy(model)  # shallow: shares the fitted arrays, own regressor attribute
    counted.regressor_ = _CountingRegressor(model.regressor_)
    return counted, counted.regressor_
