"""Cross-validation's shared kernel: the kernel of a few row blocks computed once and reused by many exact fits
(:class:`BlockKernel`; :func:`ase_cggpr.evaluation.cv.shared_kernel_cv`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..kernels import PolynomialKernel
from ..regression import ExactGPR, Progress


class BlockKernel:
    """Kernel matrix of a few row blocks of vectors, computed once and reused by many exact GPR fits.

    For cross-validation and learning curves on the same environments: block ``i`` holds the environments
    sampled from fold ``i``; a fit on the first ``counts[j]`` rows of the blocks ``j`` in a subset reads
    its kernel from here (:meth:`tiles`) instead of recomputing it, and predicts the rows of another
    block from the same matrix (:meth:`predict`). Holds the lower triangle of blocks in float64:
    ``(sum of block sizes)^2 / 2 * 8`` bytes (7.7 GB for 5 blocks of 8,000), independent of the descriptor
    dimension. ``vectors(i)`` returns block ``i``'s (n_i, D) rows (e.g. rows of a memory-mapped array).
    """

    def __init__(self, vectors: Callable[[int], np.ndarray], n_blocks: int, *, zeta: int = 4,
                 offset: float = 1.0, progress: Progress = None):
        self.kernel = PolynomialKernel(zeta, offset)
        self.zeta, self.offset = self.kernel.zeta, self.kernel.offset
        self._tiles: dict[tuple[int, int], np.ndarray] = {}
        self.sizes = []
        for i in range(n_blocks):  # two blocks of vectors in memory at a time
            X_i = np.ascontiguousarray(vectors(i), dtype=np.float64)
            self.sizes.append(X_i.shape[0])
            for j in range(i + 1):
                X_j = X_i if j == i else np.ascontiguousarray(vectors(j), dtype=np.float64)
                self._tiles[i, j] = self.kernel(X_i, X_j)
                del X_j
                if progress is not None:
                    progress(1)
            del X_i

    def tile(self, i: int, j: int, n_i: int, n_j: int) -> np.ndarray:
        """K(first n_i rows of block i, first n_j rows of block j), a view."""
        return self._tiles[i, j][:n_i, :n_j] if i >= j else self._tiles[j, i][:n_j, :n_i].T

    def tiles(self, blocks: Sequence[int], counts: Sequence[int]) -> dict[tuple[int, int], np.ndarray]:
        """Lower-triangle tiles of the kernel of the first ``counts[a]`` rows of ``blocks[a]`` (ascending)."""
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return {(int(offsets[a]), int(offsets[b])): self.tile(blocks[a], blocks[b], counts[a], counts[b])
                for a in range(len(blocks)) for b in range(a + 1) if counts[a] and counts[b]}

    def fit(self, blocks: Sequence[int], counts: Sequence[int], y: np.ndarray, *, noise: float = 0.2,
            precision: str = "mixed", **options) -> ExactGPR:
        """Exact GPR on the first ``counts[a]`` rows of ``blocks[a]``; y (eV) in that order."""
        gpr = ExactGPR(zeta=self.zeta, offset=self.offset, noise=noise, precision=precision, **options)
        return gpr.fit_tiles(self.tiles(blocks, counts), y)

    def predict(self, gpr: ExactGPR, blocks: Sequence[int], counts: Sequence[int], target: int,
                n_target: int | None = None) -> np.ndarray:
        """Predictive mean (eV) of ``gpr`` (fitted by :meth:`fit` on blocks/counts) for block ``target``."""
        n_target = self.sizes[target] if n_target is None else n_target
        mean = np.full(n_target, gpr.mean_)
        start = 0
        for block, count in zip(blocks, counts, strict=True):
            mean += self.tile(target, block, n_target, count) @ gpr.alpha_[start:start + count]
            start += count
        return mean
