"""SOAP vectors of labelled environments, computed once and kept on disk (memory-mapped).

:class:`SoapCache` keys vectors by the structures' fingerprint and the spec's descriptor hyperparameters; a
request for some rows only (the shared-kernel CV's samples) describes those centres alone, through
:func:`ase_cggpr.descriptors.selected_vectors`, the package's one selected-centres SOAP helper.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..beads import coarse_grain
from ..descriptors import selected_vectors, soap_dimension, soap_vectors
from ..errors import ModelError
from ..progress import progress_bar
from ..spec import ModelSpec
from .environments import Environments


class SoapCache:
    """SOAP vectors computed once per (structure set, descriptor hyperparameters), kept on disk.

    The file name holds the representation and a SHA-256 of the structures' fingerprint and
    ``spec.descriptor_key()``, so any change of structures or SOAP hyperparameters gives a new entry
    and kernel or noise changes reuse it. ``directory=None`` keeps vectors in memory only.
    ``hits`` and ``misses`` count lookups.
    """

    #: structures described per SOAP call when writing to disk
    CHUNK = 256

    def __init__(self, directory: str | os.PathLike | None = None, *, progress: bool = False):
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.hits = 0
        self.misses = 0
        self._memory: dict[str, np.ndarray] = {}

    @staticmethod
    def key(env: Environments, spec: ModelSpec) -> str:
        payload = json.dumps({"structures": env.fingerprint(), "descriptor": spec.descriptor_key()},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def path(self, env: Environments, spec: ModelSpec) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"soap-{spec.representation}-{self.key(env, spec)}.npy"

    def has(self, env: Environments, spec: ModelSpec) -> bool:
        """Whether the vectors of every environment of ``env`` are cached (in memory or on disk)."""
        path = self.path(env, spec)
        return self.key(env, spec) in self._memory or (path is not None and path.exists())

    def vectors(self, env: Environments, spec: ModelSpec, *, rows: np.ndarray | None = None) -> np.ndarray:
        """(n_env, D) normalised SOAP vectors of ``env`` for ``spec`` (loaded or computed).

        With a cache directory the vectors are written ``CHUNK`` structures at a time into a ``.npy``
        file and returned memory-mapped (read-only), so memory does not grow with the number of
        environments (80,000 atomistic environments are 12 GB on disk, not in RAM).

        ``rows`` (sorted environment indices) asks for those environments only, (len(rows), D): they are
        taken from the full set when it is cached, and otherwise computed for the selected centres alone
        (and cached under a key that adds the rows), so a CV on a sample of 4,000 of 80,000 environments
        describes 4,000.
        """
        key = self.key(env, spec)
        path = self.path(env, spec)
        if rows is not None:
            rows = np.asarray(rows)
            if rows.ndim != 1 or (rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0
                                                  or rows[-1] >= len(env))):
                raise ModelError(f"rows must be sorted, unique environment indices in 0..{len(env) - 1}")
            if self.has(env, spec):
                return np.asarray(self.vectors(env, spec)[rows])
            digest = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]
            key = f"{key}-rows-{digest}"
            path = None if path is None else path.with_name(f"{path.stem}-rows-{digest}.npy")
        n = len(env) if rows is None else len(rows)
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        if path is not None and path.exists():
            X = self._load(path, n, soap_dimension(spec))
            if X is not None:
                self.hits += 1
                self._memory = {key: X}
                return X
        self.misses += 1
        try:
            X = self._compute(env, spec, rows, path)
        except BaseException:  # no half-written entry is left behind (error, Ctrl-C)
            if path is not None:
                with contextlib.suppress(OSError):
                    path.with_name(path.stem + f".part{os.getpid()}.npy").unlink()
            raise
        if X.shape[0] != n:
            raise ModelError(f"SOAP gave {X.shape[0]} vectors for {n} environments")
        self._memory = {key: X}  # keep one set (atomistic vectors are large)
        return X

    @staticmethod
    def _load(path: Path, n: int, d: int) -> np.ndarray | None:
        """The cached (n, d) float64 vectors at ``path``, or None (with a warning) if the entry is unusable:
        truncated, not a ``.npy`` array, pickled data, another shape or dtype. It is then computed again."""
        try:
            X = np.load(path, mmap_mode="r", allow_pickle=False)
            ok = isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype == np.float64 and X.shape == (n, d)
        except (OSError, ValueError, EOFError) as error:  # mmap past the end, bad header, pickled objects
            reason = " ".join(str(error).split()) or type(error).__name__
            ok, X = False, None
        else:
            reason = f"holds a {getattr(X, 'dtype', '?')} array of shape {getattr(X, 'shape', '?')}, not ({n}, {d})"
        if ok:
            return X
        del X
        warnings.warn(f"SOAP cache entry {path} is unusable ({reason}); computing it again", stacklevel=3)
        with contextlib.suppress(OSError):
            path.unlink()
        return None

    def _compute(self, env: Environments, spec: ModelSpec, rows: np.ndarray | None, path: Path | None) -> np.ndarray:
        """SOAP of all environments (``rows`` None) or of ``rows``, ``CHUNK`` structures per call, written into
        a memory-mapped ``path`` (or kept in memory without one)."""
        rep = spec.representation
        counts = np.bincount(env.owner, minlength=len(env.structures))
        first_row = np.concatenate([[0], np.cumsum(counts)])
        row_owner = None if rows is None else env.owner[rows]  # non-decreasing: stored structure by structure
        owners = np.arange(len(env.structures)) if rows is None else np.unique(row_owner)
        n = len(env) if rows is None else len(rows)
        label = f"SOAP {rep}" + ("" if rows is None else f" ({n} of {len(env)} environments)")
        tmp = None if path is None else path.with_name(path.stem + f".part{os.getpid()}.npy")
        X, parts, filled = None, [], 0
        with progress_bar(len(owners), label, enabled=self.progress) as update:
            for begin in range(0, len(owners), self.CHUNK):
                chunk = owners[begin:begin + self.CHUNK]
                maps = [coarse_grain(env.structures[s], rep, connectivity=env.connectivities[s]) for s in chunk]
                if rows is None:
                    block = soap_vectors(maps, spec, progress=update)
                else:  # the chunk's rows, renumbered over its maps: only those centres are described
                    lo, hi = np.searchsorted(row_owner, [chunk[0], chunk[-1] + 1])
                    offset = np.concatenate([[0], np.cumsum(counts[chunk])[:-1]])
                    local = offset[np.searchsorted(chunk, row_owner[lo:hi])] + rows[lo:hi] - first_row[row_owner[lo:hi]]
                    block = selected_vectors(maps, spec, local, chunk=len(maps), progress=update)
                if tmp is None:
                    parts.append(block)
                    continue
                if X is None:
                    X = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=(n, block.shape[1]))
                X[filled:filled + len(block)] = block[: max(0, n - filled)]
                filled += len(block)
        if tmp is None:
            return np.concatenate(parts) if parts else np.zeros((0, soap_dimension(spec)))
        if X is None or filled != n:
            raise ModelError(f"SOAP gave {filled} vectors for {n} environments")
        X.flush()
        del X
        os.replace(tmp, path)
        return np.load(path, mmap_mode="r", allow_pickle=False)
