"""Memory-bounded (streamed) training of the projected-process sparse GPR.

:class:`~ase_cggpr.regression.SparseGPR` ``.fit(X, y)`` needs every training vector in memory (N x D float64:
723,701 AB2 environments x 4,752 = 27.5 GB). :func:`fit_sparse_stream` fits the same model from a stream of
descriptor chunks and never holds more than one chunk:

1. **inducing environments**: a seeded reservoir sample (algorithm R, :class:`Reservoir`) of at most
   ``reservoir`` vectors (default 3 M) is kept from a first stream (all of the data, or, in
   :func:`fit_streamed`, a seeded random subset of the structures holding about 4 x the reservoir);
   the M inducing environments are chosen from it by SparseGPR's own ``select`` (FPS, CUR or random,
   seeded);
2. **projected-process terms**, over the whole training stream, block by block (``block_size`` rows):
   with ``K_mm + jitter = L_m L_m^T`` and ``V = L_m^-1 K_mn`` (the whitened kernel rows), ``sum V V^T``
   (BLAS ``syrk`` into one M x M float64 matrix), ``sum V y``, ``sum V 1`` and the label sums;
3. **solve in M x M** (:func:`solve_projected`, through SparseGPR's blocked-Cholesky ``_chol``):
   ``A = noise^2 I + sum V V^T = L_a L_a^T``, ``alpha = L_m^-T A^-1 sum V (y - mean)``.

This is SparseGPR.fit's algebra term for term, so the result *is* a SparseGPR (built by ``from_state``:
same ``get_state``, save/load, predict, screen) and equals SparseGPR.fit on the same vectors when the
reservoir holds them all (predictions to ~1e-11 eV; tests/test_streaming.py). The unwhitened form
(accumulate ``K_mn K_nm`` and solve ``(noise^2 K_mm + K_mn K_nm) alpha = K_mn y`` at the end) costs one
triangular solve less per block but is not usable: with K_mm as ill-conditioned as FPS-chosen SOAP
environments make it, its M x M system is indefinite to rounding (measured: predictions off by 2e-6 eV
at M = 300, Cholesky failure at M = 1,500 of 2,000).

Memory: ``reservoir x D`` (the sample pass only) + 3 M x M float64 + ``M x D`` + a ``block_size x M`` block +
one descriptor chunk, whatever N. Time: ``N (2 M D + 2 M^2)`` flops (kernel rows, triangular solve, syrk).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from scipy.linalg import blas

from .descriptors import backend_for, soap_vectors
from .errors import ModelError
from .inducing import cluster_vectors, environment_clusters
from .progress import progress_bar
from .regression import SparseGPR, check_labels, check_memory, inducing_factor
from .regression.linalg import _lower_solve

Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
Progress = Callable[[int], None] | None

#: default reservoir size per inducing environment (the pool the M inducing points are chosen from)
RESERVOIR_PER_INDUCING = 3


class Reservoir:
    """Seeded uniform sample (algorithm R) of at most ``size`` rows of a stream of (n, D) chunks.

    While the stream has at most ``size`` rows, the sample is all of them in stream order. ``ids``, when given
    with a chunk, are kept with its rows (:attr:`ids`: the ids of the sampled rows), so a chosen row can be
    traced back to its structure and centre.
    """

    def __init__(self, size: int, *, seed: int = 0):
        if int(size) < 1:
            raise ModelError(f"reservoir size must be at least 1, got {size!r}")
        self.size = int(size)
        self.rng = np.random.default_rng([int(seed), 0x5EED])
        self.seen = 0
        self.rows: np.ndarray | None = None
        self.row_ids: np.ndarray | None = None

    def add(self, X: np.ndarray, ids: np.ndarray | None = None) -> None:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ModelError(f"descriptor chunk must be (n, D), got shape {X.shape}")
        if self.rows is None:
            self.rows = np.empty((self.size, X.shape[1]))
        elif X.shape[1] != self.rows.shape[1]:
            raise ModelError(f"descriptor chunk has {X.shape[1]} columns, the stream had {self.rows.shape[1]}")
        n = X.shape[0]
        if ids is not None:
            ids = np.asarray(ids, dtype=np.int64)
            if ids.shape != (n,):
                raise ModelError(f"need one id per row ({n}), got shape {ids.shape}")
            if self.row_ids is None:
                self.row_ids = np.full(self.size, -1, dtype=np.int64)
        fill = max(0, min(n, self.size - self.seen))
        if fill:
            self.rows[self.seen:self.seen + fill] = X[:fill]
            if ids is not None:
                self.row_ids[self.seen:self.seen + fill] = ids[:fill]
        if fill < n:
            t = self.seen + np.arange(fill, n)  # 0-based stream positions of the rows not stored yet
            j = self.rng.integers(0, t + 1)
            for k in np.flatnonzero(j < self.size):
                self.rows[j[k]] = X[fill + k]
                if ids is not None:
                    self.row_ids[j[k]] = ids[fill + k]
        self.seen += n

    @property
    def ids(self) -> np.ndarray | None:
        """The ids of the sampled rows (None if the chunks came without ids)."""
        return None if self.row_ids is None else self.row_ids[:min(self.seen, self.size)]

    def sample(self) -> np.ndarray:
        if self.rows is None or self.seen == 0:
            raise ModelError("no training environments in the stream")
        return self.rows[:min(self.seen, self.size)]


class Accumulator:
    """Running projected-process terms of a stream against fixed inducing vectors Z (M, D)."""

    def __init__(self, Z: np.ndarray, Lm: np.ndarray, kernel: Callable[[np.ndarray, np.ndarray], np.ndarray], *,
                 block_size: int = 2048):
        self.Z = np.ascontiguousarray(Z, dtype=np.float64)
        self.Lm = Lm
        m = self.Z.shape[0]
        self.kernel, self.block_size = kernel, int(block_size)
        self.G = np.zeros((m, m), order="F")  # lower triangle of V V^T, V = L_m^-1 K_mn
        self.Ky = np.zeros(m)
        self.K1 = np.zeros(m)
        self.n = 0
        self.weight_sum = 0.0  # sum of the row weights (= n for unweighted rows)
        self.sum_y = 0.0
        self.sum_y2 = 0.0
        self.min_y = np.inf
        self.max_y = -np.inf
        self.per_site: list[float] = []  # totals only: each structure's total per site
        self.n_force_components = 0

    def add(self, X: np.ndarray, y: np.ndarray, progress: Progress = None, *,
            weights: np.ndarray | None = None) -> None:
        """Add labelled rows. ``weights`` (n,), positive: row i counts as ``weights[i]`` identical rows (its noise
        variance ``noise^2 / w_i``); the result equals repeating a row w times when w is an integer, for the
        cost of one row (the label mean is the weighted mean, as with repeats)."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[1] != self.Z.shape[1]:
            raise ModelError(f"need a chunk X (n, {self.Z.shape[1]}) with matching y (n,), got {X.shape} and "
                             f"{y.shape}")
        if not np.isfinite(X).all():
            raise ModelError("training vectors contain NaN or inf")
        check_labels(y)
        w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != y.shape or not (np.isfinite(w).all() and (w > 0).all()):
            raise ModelError(f"row weights must be {y.size} finite positive numbers, got shape {w.shape}")
        root = np.sqrt(w)
        for start in range(0, X.shape[0], self.block_size):
            rows, yb = X[start:start + self.block_size], y[start:start + self.block_size]
            rb = root[start:start + self.block_size]
            K = _lower_solve(self.Lm, self.kernel(self.Z, rows))
            if weights is not None:
                K *= rb[None, :]  # the row's whitened kernel row scaled by sqrt(w): w copies of it in V V^T
            K = np.ascontiguousarray(K)  # V (m, b), C order; V.T is F-ordered (b, m)
            # syrk(trans=1) gives V V^T, added into G in place
            self.G = blas.dsyrk(1.0, K.T, beta=1.0, c=self.G, trans=1, lower=1, overwrite_c=1)
            if weights is None:  # the unweighted sums exactly as before weights existed (bit for bit)
                self.Ky += K @ yb
                self.K1 += K.sum(axis=1)
            else:
                self.Ky += K @ (yb * rb)
                self.K1 += K @ rb
            if progress is not None:
                progress(rows.shape[0])
        self.n += y.size
        self.weight_sum += float(y.size) if weights is None else float(w.sum())
        if y.size:
            self.sum_y += float(y.sum()) if weights is None else float(w @ y)
            self.sum_y2 += float(y @ y) if weights is None else float(w @ (y * y))
            self.min_y = min(self.min_y, float(y.min()))
            self.max_y = max(self.max_y, float(y.max()))

    def add_totals(self, X: np.ndarray, owner: np.ndarray, totals: np.ndarray, counts: np.ndarray,
                   progress: Progress = None) -> None:
        """Add whole structures observed through their total energies (sum-of-local-energies rows).

        ``X`` (n, D): the environments (metal sites) of the structures of this chunk, in structure order;
        ``owner`` (n,): each row's structure (0..S-1 within the chunk, ascending); ``totals`` (S,): each
        structure's total energy (eV, reference already subtracted); ``counts`` (S,): its number of sites.

        Structure s is one observation ``Y_s = sum_{i in s} e(x_i) + noise_s`` with noise variance
        ``noise^2 n_s`` (independent per-site errors of standard deviation ``noise`` summed over its sites).
        Its whitened row is ``v_s = sum_{i in s} L_m^-1 k_m(x_i)``; multiplying the normal equations by
        ``noise^2`` turns the per-structure noise into the weights ``1 / n_s``, i.e. the row
        ``u_s = v_s / sqrt(n_s)`` and target ``Y_s / sqrt(n_s)``, so the accumulated terms (``G``, ``Ky``,
        ``K1``) and :func:`solve_projected` are SparseGPR's own with ``noise^2 I + sum u u^T``. ``K1``
        accumulates ``u_s sqrt(n_s)`` (the rows of a constant per-site mean), and :attr:`mean` is then the
        weighted least-squares per-site offset ``sum Y_s / sum n_s``.
        """
        X = np.asarray(X, dtype=np.float64)
        owner = np.asarray(owner, dtype=np.int64).ravel()
        totals = np.asarray(totals, dtype=np.float64).ravel()
        counts = np.asarray(counts, dtype=np.int64).ravel()
        n_structures = totals.shape[0]
        if X.ndim != 2 or X.shape[1] != self.Z.shape[1] or owner.shape != (X.shape[0],) or \
                counts.shape != (n_structures,) or np.any(counts < 1) or \
                not np.array_equal(np.bincount(owner, minlength=n_structures), counts):
            raise ModelError(f"need a chunk X (n, {self.Z.shape[1]}) with one owner per row and one total and "
                             f"site count per structure, got {X.shape}, {owner.shape}, {totals.shape}, "
                             f"{counts.shape}")
        if not np.isfinite(X).all():
            raise ModelError("training vectors contain NaN or inf")
        if not np.isfinite(totals).all():
            raise ModelError("total energies contain NaN or inf")
        U = np.zeros((self.Z.shape[0], n_structures))
        for start in range(0, X.shape[0], self.block_size):
            rows = X[start:start + self.block_size]
            V = _lower_solve(self.Lm, self.kernel(self.Z, rows))  # (m, b)
            U += V @ np.eye(n_structures)[owner[start:start + self.block_size]]  # sum over each structure's rows
            if progress is not None:
                progress(rows.shape[0])
        root = np.sqrt(counts.astype(np.float64))
        U /= root
        U = np.ascontiguousarray(U)
        self.G = blas.dsyrk(1.0, U.T, beta=1.0, c=self.G, trans=1, lower=1, overwrite_c=1)
        self.Ky += U @ (totals / root)
        self.K1 += U @ root
        per_site = totals / counts
        self.n += int(counts.sum())
        self.weight_sum += float(counts.sum())
        self.sum_y += float(totals.sum())
        self.per_site.extend(per_site.tolist())
        self.min_y = min(self.min_y, float(per_site.min()))
        self.max_y = max(self.max_y, float(per_site.max()))

    def add_forces(self, gradients, forces: np.ndarray, *, weight: float, batch: int = 32,
                   progress: Progress = None) -> None:
        """Add the force components of one structure (eV/Å, (n_atoms, 3)) as gradient rows.

        ``gradients``: the structure's descriptor gradients (:class:`~ase_cggpr.descriptors.DescriptorGradients`
        with ``contract_many``, e.g. featomic's), whose centres are the structure's metal sites. The model's
        force on atom j is ``F_j = -sum_i sum_m alpha_m d k(x_i, z_m) / d r_j``, so component (j, c) is the
        observation of the row ``-d/dr_jc sum_i k_m(x_i)`` (M values: one contraction of the kernel gradients
        ``zeta (offset + x_i . z_m)^(zeta - 1) z_m`` per inducing environment, ``batch`` at a time) with noise
        variance ``noise^2 / weight^2`` (``weight = noise / force_noise``). Whitened and weighted like
        :meth:`add_totals`; a constant mean has no force, so ``K1`` is unchanged.
        """
        forces = np.asarray(forces, dtype=np.float64)
        X = np.asarray(gradients.vectors, dtype=np.float64)
        if forces.shape != (gradients.n_atoms, 3):
            raise ModelError(f"forces have shape {forces.shape}, expected ({gradients.n_atoms}, 3)")
        if not np.isfinite(forces).all():
            raise ModelError("forces contain NaN or inf")
        del X
        K = kernel_position_gradient(gradients, self.Z, self.kernel, batch=batch)
        U = np.ascontiguousarray(_lower_solve(self.Lm, K)) * (-float(weight))
        self.G = blas.dsyrk(1.0, U.T, beta=1.0, c=self.G, trans=1, lower=1, overwrite_c=1)
        self.Ky += U @ (forces.ravel() * float(weight))
        self.n_force_components += forces.size
        if progress is not None:
            progress(1)

    @property
    def mean(self) -> float:
        return self.sum_y / self.weight_sum

    @property
    def std(self) -> float:
        """Standard deviation of the labels (per site; from totals: of the structures' totals per site)."""
        if self.per_site:
            return float(np.std(self.per_site))
        return float(np.sqrt(max(self.sum_y2 / self.weight_sum - self.mean**2, 0.0)))


def kernel_position_gradient(gradients, Z: np.ndarray, kernel, *, batch: int = 32) -> np.ndarray:
    """``d/dr sum_i k(x_i, z_m)`` for every inducing vector z_m (rows of Z) and every atom coordinate of one
    structure: (M, 3 n_atoms), coordinates in (atom, xyz) order; eV/Å per unit weight.

    The kernel gradient ``d k / d x_i = zeta (offset + x_i . z_m)^(zeta - 1) z_m`` of each centre is carried to
    the positions by the descriptor gradients' ``contract_many`` (``batch`` inducing vectors at a time), the
    same chain rule as the model's forces."""
    X = np.asarray(gradients.vectors, dtype=np.float64)
    zeta, offset = kernel.zeta, kernel.offset
    coefficient = zeta * (offset + Z @ X.T) ** (zeta - 1)  # (M, n_centres): d k / d (x . z)
    m = Z.shape[0]
    K = np.empty((m, 3 * gradients.n_atoms))
    for start in range(0, m, batch):
        stop = min(start + batch, m)
        dk_dx = coefficient[start:stop, :, None] * Z[start:stop, None, :]  # (B, n_centres, D)
        K[start:stop] = gradients.contract_many(dk_dx).reshape(stop - start, -1)
    return K


def sparse_stream_bytes(m: int, d: int, *, reservoir: int, block_size: int = 2048, chunk_rows: int = 8192) -> int:
    """Peak bytes of :func:`fit_sparse_stream`: reservoir, 4 M x M matrices, the inducing vectors, a kernel block
    and a descriptor chunk of ``chunk_rows`` rows."""
    return 8 * (reservoir * d + 4 * m * m + m * d + block_size * m + chunk_rows * d)


def solve_projected(gpr: SparseGPR, Z: np.ndarray, acc: Accumulator) -> SparseGPR:
    """The fitted SparseGPR (through ``from_state``) from the accumulated whitened terms, in M x M:
    ``A = noise^2 I + sum V V^T = L_a L_a^T``, ``alpha = L_m^-T A^-1 sum V (y - mean)``, as SparseGPR.fit."""
    m = Z.shape[0]
    A = np.tril(acc.G)
    acc.G = None
    A += np.tril(A, -1).T  # full symmetric sum V V^T (C order)
    A.flat[:: m + 1] += gpr.noise**2
    La = SparseGPR._chol(A)
    mean = acc.mean
    b = (acc.Ky - mean * acc.K1)[:, None]  # L_m^-1 K_mn (y - mean)
    w = _lower_solve(La, _lower_solve(La, b), trans=True)
    alpha = _lower_solve(acc.Lm, w, trans=True)[:, 0]
    gpr.Z_, gpr.alpha_, gpr.Lm_, gpr.La_, gpr.mean_ = Z, alpha, acc.Lm, La, mean
    return SparseGPR.from_state(*gpr.get_state())  # SparseGPR's own state, validated by from_state


def fit_sparse_stream(chunks: Chunks, *, sample: Chunks | None = None, zeta: int = 4, offset: float = 1.0,
                      noise: float = 0.2, n_inducing: int = 4000, selection: str = "fps", seed: int = 0,
                      jitter: float = 1e-10, block_size: int = 2048, reservoir: int | None = None,
                      memory_budget: float | None = None, progress: Progress = None,
                      sample_progress: Progress = None,
                      inducing_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
                      totals: bool = False, extra: Callable[[Accumulator], None] | None = None) -> SparseGPR:
    """Fit a :class:`~ase_cggpr.regression.SparseGPR` from a stream of (X chunk (n, D), y chunk (n,)), or of
    (X, y, w) with per-row weights w (n,) (:meth:`Accumulator.add`: a row of weight w counts as w copies, its
    noise variance ``noise^2 / w``).

    ``chunks()`` is called once and must yield the whole training set; ``sample()`` (default ``chunks``)
    yields the stream the inducing environments are drawn from (only X is used). ``reservoir`` (default
    3 M) bounds that sample. ``progress(rows)`` after each kernel block of the training pass,
    ``sample_progress(rows)`` after each chunk of the sample pass. The returned regressor records
    ``timings_`` (s), ``n_train_`` and the label statistics ``label_stats_`` (raw y).

    A sample stream may yield (X, y, ids) with one integer id per row; the ids of the chosen inducing rows are
    then ``inducing_ids_``, and ``inducing_vectors(ids)``, if given, replaces their vectors (e.g. by those of
    the environments' clusters, :mod:`ase_cggpr.inducing`) before the projected-process pass.

    ``totals``: the training stream yields whole structures observed through their total energies,
    (X (n, D), owner (n,), totals (S,) eV, counts (S,)) per chunk (:meth:`Accumulator.add_totals`: the
    sum-of-local-energies rows, noise variance ``noise^2 n_s`` per structure); the inducing environments are
    still single environments from ``sample``, and the fitted regressor predicts local energies as ever.
    ``extra(acc)``, if given, adds further rows (e.g. :meth:`Accumulator.add_forces`) after the stream.
    """
    gpr = SparseGPR(zeta=zeta, offset=offset, noise=noise, n_inducing=n_inducing, selection=selection, seed=seed,
                    jitter=jitter, block_size=block_size, memory_budget=memory_budget)
    size = int(reservoir) if reservoir is not None else RESERVOIR_PER_INDUCING * gpr.n_inducing
    size = max(size, gpr.n_inducing)
    clock = time.perf_counter
    timings: dict[str, float] = {}
    t = clock()
    pool = Reservoir(size, seed=seed)
    checked = False
    for item in (sample or chunks)():
        X = item[0] if isinstance(item, tuple) else item
        ids = item[2] if isinstance(item, tuple) and len(item) > 2 else None
        if not checked:
            d = np.shape(X)[1]
            check_memory(sparse_stream_bytes(gpr.n_inducing, d, reservoir=size, block_size=block_size,
                                             chunk_rows=max(len(X), 1)),
                         f"streamed sparse GPR with {gpr.n_inducing} inducing environments (reservoir {size})",
                         budget=memory_budget)
            checked = True
        pool.add(X, ids)
        if sample_progress is not None:
            sample_progress(len(X))
    candidates = pool.sample()
    if not np.isfinite(candidates).all():
        raise ModelError("training vectors contain NaN or inf")
    timings["sample"] = clock() - t
    t = clock()
    chosen = gpr.select(candidates)
    Z = np.ascontiguousarray(candidates[chosen])
    inducing_ids = None if pool.ids is None else pool.ids[chosen]
    del candidates, pool
    if inducing_vectors is not None:
        if inducing_ids is None:
            raise ModelError("inducing_vectors needs a sample stream that yields (X, y, ids)")
        Z = np.ascontiguousarray(inducing_vectors(inducing_ids), dtype=np.float64)
    timings["select"] = clock() - t
    t = clock()
    acc = Accumulator(Z, inducing_factor(gpr, Z), gpr.kernel, block_size=block_size)
    for item in chunks():
        if totals:
            acc.add_totals(*item, progress=progress)
        else:  # (X, y) or (X, y, row weights)
            acc.add(item[0], item[1], progress, weights=item[2] if len(item) > 2 else None)
    if extra is not None:
        extra(acc)
    if acc.n == 0:
        raise ModelError("no training environments in the stream")
    timings["accumulate"] = clock() - t
    t = clock()
    stats = {"n": acc.n, "mean": acc.mean, "std": acc.std, "min": acc.min_y, "max": acc.max_y,
             "n_force_components": acc.n_force_components}
    fitted = solve_projected(gpr, Z, acc)
    timings["solve"] = clock() - t
    fitted.timings_ = timings
    fitted.n_train_ = stats["n"]
    fitted.label_stats_ = stats
    fitted.inducing_ids_ = inducing_ids
    fitted.memory_budget = gpr.memory_budget
    return fitted


def array_chunks(X: np.ndarray, y: np.ndarray, rows: int = 4096) -> Chunks:
    """A chunk stream over in-memory arrays (tests, and callers that already hold X)."""
    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(y), rows):
            yield X[start:start + rows], y[start:start + rows]
    return gen


def _structure_blocks(counts: np.ndarray, owners: np.ndarray, chunk: int, chunk_rows: int) -> list[np.ndarray]:
    """``owners`` (structure indices) cut into consecutive blocks: at least one structure each, then up to
    ``chunk`` structures while their ``counts`` sum to at most ``chunk_rows``."""
    blocks, begin = [], 0
    while begin < len(owners):  # greedy: at least one structure, then while within both limits
        stop = begin + 1
        total = counts[owners[begin]]
        while stop < len(owners) and stop - begin < chunk and total + counts[owners[stop]] <= chunk_rows:
            total += counts[owners[stop]]
            stop += 1
        blocks.append(owners[begin:stop])
        begin = stop
    return blocks


def total_chunks(describe: Callable[[Sequence], np.ndarray], maps: Sequence, totals: np.ndarray, *,
                 chunk: int = 64, chunk_rows: int = 4096, progress: Progress = None) -> Chunks:
    """A chunk stream of whole structures for :meth:`Accumulator.add_totals`: (X (n, D) every centre of up to
    ``chunk`` structures, owner (n,) 0..S-1, their totals (S,) eV, their site counts (S,))."""
    counts = np.array([len(m.centre_indices) for m in maps])
    totals = np.asarray(totals, dtype=np.float64)
    blocks = _structure_blocks(counts, np.arange(len(maps)), chunk, chunk_rows)

    def gen():
        for block in blocks:
            X = describe([maps[k] for k in block])
            if progress is not None:
                progress(len(block))
            yield X, np.repeat(np.arange(len(block)), counts[block]), totals[block], counts[block]
    return gen


def map_chunks(describe: Callable[[Sequence], np.ndarray], maps: Sequence, y: np.ndarray, rows: np.ndarray, *,
               structures: Sequence[int] | None = None, chunk: int = 64, chunk_rows: int = 4096,
               progress: Progress = None, with_ids: bool = False, weights: np.ndarray | None = None) -> Chunks:
    """A chunk stream over bead maps: up to ``chunk`` structures, and no more than ``chunk_rows``
    environments unless one structure has more, described at a time by ``describe(maps)`` ((n, D), all
    centres in map order), keeping only the environments ``rows`` (sorted global indices; ``y`` the labels of
    all environments). ``structures``: only these map indices (sorted), e.g. a sample. ``with_ids``: yield
    (X, y, ids), ids the global environment indices of the rows. ``weights`` (per environment, like ``y``; not
    with ``with_ids``): yield (X, y, w), the rows' weights (:meth:`Accumulator.add`)."""
    if weights is not None and with_ids:
        raise ModelError("map_chunks: weights and with_ids cannot be combined")
    counts = np.array([len(m.centre_indices) for m in maps])
    starts = np.concatenate([[0], np.cumsum(counts)])
    keep = np.zeros(starts[-1], dtype=bool)
    keep[rows] = True
    owners = np.unique(np.searchsorted(starts[1:], rows, side="right")) if structures is None else \
        np.asarray(structures, dtype=int)

    blocks = _structure_blocks(counts, owners, chunk, chunk_rows)

    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for block in blocks:
            X = describe([maps[k] for k in block])
            index = np.concatenate([np.arange(starts[k], starts[k + 1]) for k in block])
            mask = keep[index]
            if progress is not None:
                progress(len(block))
            if mask.any():
                if with_ids:
                    yield (X if mask.all() else X[mask]), y[index[mask]], index[mask]
                elif weights is not None:
                    yield (X if mask.all() else X[mask]), y[index[mask]], weights[index[mask]]
                else:
                    yield (X if mask.all() else X[mask]), y[index[mask]]
    return gen


def sample_structures(counts: Sequence[int], n_rows: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of structures drawn at random (seeded) until they hold at least ``n_rows`` rows (all
    structures if they hold fewer)."""
    counts = np.asarray(counts)
    if counts.sum() <= n_rows:
        return np.arange(len(counts))
    order = np.random.default_rng([int(seed), 0x5A4D]).permutation(len(counts))
    take = int(np.searchsorted(np.cumsum(counts[order]), n_rows)) + 1
    return np.sort(order[:take])


#: SparseGPR keyword options a model's ``solver_options`` may hold
_SPARSE_OPTIONS = ("n_inducing", "selection", "seed", "jitter", "block_size", "memory_budget")


@dataclasses.dataclass
class StreamedFit:
    """What :func:`fit_streamed` returns, for the model to record (:meth:`ase_cggpr.model.CGGPRModel._set_fitted`):
    the fitted :class:`~ase_cggpr.regression.SparseGPR`, the inducing environments as clusters
    (:mod:`ase_cggpr.inducing`) and the training summary (numbers of structures and environments, label
    statistics in eV, the reservoir)."""

    regressor: SparseGPR
    clusters: list
    training: dict[str, Any]


def fit_streamed(spec, solver_options: dict[str, Any], maps: Sequence, y: np.ndarray, rows: np.ndarray, *,
                 reference_energy: float = 0.0, chunk: int = 64, chunk_rows: int = 4096, progress: bool = False,
                 totals: np.ndarray | None = None, forces: Sequence[np.ndarray | None] | None = None,
                 force_noise: float = 0.1, weights: np.ndarray | None = None) -> StreamedFit:
    """Fit a sparse GPR (``solver_options``: :class:`~ase_cggpr.regression.SparseGPR` options) on ``spec``'s SOAP
    vectors of the environments ``rows`` of ``maps`` without ever holding their N x D descriptors: ``chunk``
    structures (at most ``chunk_rows`` environments unless one structure has more) are described at a time, twice
    at most (once for the reservoir sample the inducing environments come from, a seeded random subset of the
    structures holding about 4 x the reservoir; once for the projected-process terms). Labels ``y`` are raw
    (eV); ``reference_energy`` (eV per metal) is subtracted. Returns the fit for the model to record; nothing
    is written into a model.

    ``totals`` (one total energy per map, eV, raw): learn the local energies from the structures' totals
    instead of per-environment labels ``y`` (ignored; ``rows`` must be every environment): the
    sum-of-local-energies rows of :meth:`Accumulator.add_totals`, each total less ``reference_energy`` per
    site. The inducing environments are drawn as for local labels. ``forces`` (with ``totals``; atomistic
    models only): per map, its (n_atoms, 3) forces in eV/Å or None, added as gradient rows with noise
    ``force_noise`` eV/Å per component (:meth:`Accumulator.add_forces`). ``weights`` (one per environment, like
    ``y``; local labels only): each environment's weight, its noise variance ``noise^2 / w`` (w = 16: as if it
    were repeated 16 times, for the cost of one row; the inducing sample is unweighted)."""
    if weights is not None:
        if totals is not None:
            raise ModelError("per-environment weights are for local labels, not totals")
        weights = np.asarray(weights, dtype=float)
        if weights.shape != np.shape(y) or not (np.isfinite(weights).all() and (weights > 0).all()):
            raise ModelError(f"need one finite positive weight per environment ({np.shape(y)[0]}), got "
                             f"shape {weights.shape}")
    options = {k: v for k, v in solver_options.items() if k in _SPARSE_OPTIONS}
    unknown = sorted(set(solver_options) - set(_SPARSE_OPTIONS))
    if unknown:
        raise ModelError(f"unknown sparse solver option(s) {unknown}; known: {list(_SPARSE_OPTIONS)}")
    template = SparseGPR(zeta=spec.zeta, offset=spec.offset, noise=spec.noise, **options)
    counts = np.array([len(m.centre_indices) for m in maps])
    starts = np.concatenate([[0], np.cumsum(counts)])
    owners = np.unique(np.searchsorted(starts[1:], rows, side="right"))
    in_rows = np.zeros(starts[-1], dtype=bool)
    in_rows[rows] = True
    reservoir = RESERVOIR_PER_INDUCING * template.n_inducing
    rows_per_owner = np.add.reduceat(in_rows.astype(int), starts[:-1])[owners] if len(maps) else counts
    sample = owners[sample_structures(rows_per_owner, 4 * reservoir, seed=template.seed)]
    y_shifted = np.asarray(y, dtype=float) - reference_energy

    def describe(block):
        return soap_vectors(block, spec)

    with progress_bar(len(sample), "SOAP (inducing sample)", enabled=progress) as update_sample, \
            progress_bar(int(len(rows)), "sparse GPR", enabled=progress) as update:
        sample_stream = map_chunks(describe, maps, y_shifted, rows, structures=sample, chunk=chunk,
                                   chunk_rows=chunk_rows, with_ids=True)
        clusters: list = []

        def inducing_vectors(ids: np.ndarray) -> np.ndarray:
            # each inducing environment as its cluster of neighbours within the cutoff, kept by the model
            # (the compact file format, ase_cggpr.inducing); Z is the clusters' own vectors (equal to rounding)
            owner = np.searchsorted(starts[1:], ids, side="right")
            clusters[:] = [None] * len(ids)
            for k in np.unique(owner):
                where = np.flatnonzero(owner == k)
                centres = np.asarray(maps[k].centre_indices)[ids[where] - starts[k]]
                found = environment_clusters(maps[k].structure, centres, spec.cutoff)
                for p, cluster in zip(where, found, strict=True):
                    clusters[p] = cluster
            return cluster_vectors(clusters, spec)

        if totals is None:
            stream = map_chunks(describe, maps, y_shifted, rows, structures=owners, chunk=chunk,
                                chunk_rows=chunk_rows, weights=weights)
        else:
            shifted = np.asarray(totals, dtype=float) - reference_energy * counts
            stream = total_chunks(describe, maps, shifted, chunk=chunk, chunk_rows=chunk_rows)
        extra = None
        if forces is not None and any(f is not None for f in forces):
            backend = backend_for(spec)
            weight = template.noise / float(force_noise)

            def extra(acc: Accumulator) -> None:
                with progress_bar(sum(f is not None for f in forces), "force rows", enabled=progress) as tick:
                    for m, f in zip(maps, forces, strict=True):
                        if f is None:
                            continue
                        gradients = backend.gradients(m.structure)
                        if not hasattr(gradients, "contract_many"):
                            raise ModelError(f"training on forces needs the featomic descriptor backend; "
                                             f"{backend.name!r} has no batched gradient contraction")
                        if not np.array_equal(np.asarray(gradients.centres), np.asarray(m.centre_indices)):
                            raise ModelError(f"structure {m.name!r}: descriptor centres do not match the metal "
                                             "sites")
                        try:
                            acc.add_forces(gradients, f, weight=weight, progress=tick)
                        except ModelError as error:
                            raise ModelError(f"structure {m.name!r}: {error}") from None

        regressor = fit_sparse_stream(stream, sample=sample_stream, zeta=template.zeta, offset=template.offset,
                                      noise=template.noise, n_inducing=template.n_inducing,
                                      selection=template.selection, seed=template.seed, jitter=template.jitter,
                                      block_size=template.block_size, memory_budget=template.memory_budget,
                                      reservoir=reservoir, progress=update, sample_progress=update_sample,
                                      inducing_vectors=inducing_vectors, totals=totals is not None,
                                      extra=extra)
    stats = regressor.label_stats_
    training = {"n_structures": int(len(owners)), "n_environments": int(stats["n"]),
                "label_mean": stats["mean"], "label_std": stats["std"], "label_min": stats["min"],
                "label_max": stats["max"], "streamed": True, "reservoir": reservoir,
                "inducing_sample_structures": int(len(sample))}
    return StreamedFit(regressor=regressor, clusters=list(clusters), training=training)
