"""Streamed (memory-bounded) sparse GPR: ase_cggpr.streaming on real SOAP of the built-in data."""

import tracemalloc

import numpy as np
import pytest
from conftest import SMALL, builtin_frames

from ase_cggpr import CGGPRModel, coarse_grain
from ase_cggpr.errors import ModelError
from ase_cggpr.regression import SparseGPR
from ase_cggpr.spec import ModelSpec
from ase_cggpr.streaming import Reservoir, array_chunks, fit_sparse_stream, map_chunks, sample_structures


@pytest.fixture(scope="module")
def ab2():
    frames = builtin_frames("cg")[::3]
    model = CGGPRModel(ModelSpec(representation="AB2", **SMALL))
    maps = [coarse_grain(a, "AB2") for a in frames]
    X = model.vectors(maps)
    y = np.concatenate([a.arrays["e_local"][a.symbols == "Si"] for a in frames])
    return model, frames, maps, X, y


@pytest.mark.parametrize("selection, m", [("fps", 60), ("cur", 60), ("random", 200)])
def test_streamed_equals_in_memory_sparse_fit(ab2, selection, m):
    _, _, _, X, y = ab2
    reference = SparseGPR(n_inducing=m, selection=selection, seed=3, block_size=300).fit(X, y)
    streamed = fit_sparse_stream(array_chunks(X, y, rows=517), n_inducing=m, selection=selection, seed=3,
                                 block_size=300, reservoir=len(y))
    assert type(streamed) is SparseGPR
    np.testing.assert_array_equal(streamed.Z_, reference.Z_)
    test = X[::7]
    mean_r, std_r = reference.predict(test, return_std=True)
    mean_s, std_s = streamed.predict(test, return_std=True)
    assert np.abs(mean_s - mean_r).max() < 1e-10
    assert np.abs(std_s - std_r).max() < 1e-10
    assert streamed.mean_ == pytest.approx(reference.mean_, abs=1e-14)
    # the same state format: a round trip through get_state / from_state predicts the same
    params, arrays = streamed.get_state()
    assert params.keys() == reference.get_state()[0].keys() and arrays.keys() == reference.get_state()[1].keys()
    np.testing.assert_array_equal(SparseGPR.from_state(params, arrays).predict(test), mean_s)


def test_streamed_fit_is_seeded_and_reproducible(ab2):
    _, _, _, X, y = ab2
    fit = dict(n_inducing=40, reservoir=120, block_size=256)
    a = fit_sparse_stream(array_chunks(X, y, rows=300), seed=1, **fit)
    b = fit_sparse_stream(array_chunks(X, y, rows=300), seed=1, **fit)
    c = fit_sparse_stream(array_chunks(X, y, rows=300), seed=2, **fit)
    np.testing.assert_array_equal(a.alpha_, b.alpha_)
    assert not np.array_equal(a.Z_, c.Z_)
    # the reservoir is a uniform sample: each row's share of the draws is near reservoir / N
    hits = np.zeros(1000)
    for seed in range(200):
        pool = Reservoir(100, seed=seed)
        for start in range(0, 1000, 64):
            pool.add(np.arange(start, min(start + 64, 1000), dtype=float)[:, None])
        hits[pool.sample()[:, 0].astype(int)] += 1
    assert abs(hits[:500].sum() - hits[500:].sum()) < 0.1 * hits.sum()
    assert hits.sum() == 200 * 100


def test_model_fit_streams_and_matches_in_memory_sparse(ab2, tmp_path):
    model, frames, maps, X, y = ab2
    streamed = CGGPRModel(ModelSpec(representation="AB2", **SMALL), solver="sparse",
                          solver_options={"n_inducing": len(y) // 3 + 1})
    streamed.fit(frames, label_key="e_local")
    assert streamed.training_["streamed"] and streamed.training_["n_environments"] == len(y)
    reference = SparseGPR(n_inducing=len(y) // 3 + 1).fit(X, y - streamed.reference_energy)
    test = X[::5]
    assert np.abs(streamed.regressor_.predict(test) - reference.predict(test)).max() < 1e-10
    energies = streamed.predict(frames[:3])
    assert all(np.isfinite(e).all() for e in energies)
    # same model file as an in-memory sparse model: save / load / predict unchanged
    path = tmp_path / "streamed.npz"
    streamed.save(path)
    loaded = CGGPRModel.load(path)
    assert loaded.solver == "sparse" and type(loaded.regressor_) is SparseGPR
    for a, b in zip(loaded.predict(frames[:3]), energies, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_train_model_sparse_memory_estimate_is_streamed():
    from ase_cggpr.training import training_bytes

    n, d, m = 723_701, 4752, 8000  # the full AB2 dataset at M = 8,000
    streamed = training_bytes(n, d, "sparse", {"n_inducing": m})
    assert 3e9 < streamed < 4e9 < 8 * n * d / 5  # reservoir + M x M matrices, not the 27.5 GB of N x D
    assert training_bytes(n, d, "exact", {}) > 8 * n * d


def test_streamed_fit_never_holds_all_descriptors():
    """tracemalloc peak of a chunked fit (2 structures at a time) on every built-in frame stays far below the
    N x D descriptor matrix (the paper's SOAP basis, D = 4,752: N x D is 180 MB)."""
    model = CGGPRModel(ModelSpec(representation="AB2"))
    frames = builtin_frames("cg")
    maps = [coarse_grain(a, "AB2") for a in frames]
    y = np.concatenate([a.arrays["e_local"][a.symbols == "Si"] for a in frames])
    n, d = len(y), model.vectors(maps[:1]).shape[1]
    assert n > 4000
    rows = np.arange(n)

    def describe(block):
        return model.vectors(block)

    sample = sample_structures([len(m.centre_indices) for m in maps], 600, seed=0)
    assert 0 < len(sample) < len(maps) / 4
    tracemalloc.start()
    try:
        gpr = fit_sparse_stream(map_chunks(describe, maps, y, rows, chunk=2),
                                sample=map_chunks(describe, maps, y, rows, structures=sample, chunk=2),
                                n_inducing=50, reservoir=150, block_size=256, selection="random")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert gpr.n_train_ == n
    # the reservoir (150 x D), the inducing vectors (50 x D) and a few MB of chunk and SOAP work space
    bound = 8 * d * (150 + 50) + 8e6
    assert d > 4000 and peak < bound < 0.1 * 8 * n * d, (peak, bound, 8 * n * d)
    # a real fit: better than predicting the mean on its training frames
    some = maps[::20]
    truth = np.concatenate([a.arrays["e_local"][a.symbols == "Si"] for a in frames[::20]])
    assert np.sqrt(np.mean((gpr.predict(model.vectors(some)) - truth) ** 2)) < truth.std()


def test_streamed_fit_refuses_bad_input(ab2):
    _, _, _, X, y = ab2
    bad = X[:100].copy()
    bad[5, 3] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        fit_sparse_stream(array_chunks(bad, y[:100]), n_inducing=10)
    with pytest.raises(ModelError, match="no training environments"):
        fit_sparse_stream(lambda: iter(()), n_inducing=10)
    with pytest.raises(ModelError, match="memory"):
        fit_sparse_stream(array_chunks(X, y), n_inducing=50, memory_budget=1e5)


def test_map_chunks_bound_environments_per_chunk(ab2):
    model, _, maps, X, y = ab2
    rows = np.arange(0, len(y), 2)  # every other environment
    chunks = list(map_chunks(model.vectors, maps, y, rows, chunk=64, chunk_rows=100)())
    largest = max(len(m.centre_indices) for m in maps)
    assert all(len(c[0]) <= max(100, largest) for c in chunks)
    np.testing.assert_array_equal(np.vstack([c[0] for c in chunks]), X[rows])
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), y[rows])


def test_row_weights_equal_repeated_rows(ab2):
    """A row of weight w (noise variance noise^2 / w) is exactly w copies of it, for the cost of one row: the
    same inducing environments (drawn from the unrepeated rows), the same alpha, mean and variance; through the
    model, per-structure weights equal repeating the structure's map."""
    model, frames, maps, X, y = ab2
    w = np.where(np.arange(len(y)) % 5 == 0, 3.0, 1.0)
    repeated = np.repeat(np.arange(len(y)), w.astype(int))
    common = dict(n_inducing=40, seed=1, block_size=97, reservoir=len(y), sample=array_chunks(X, y, rows=200))

    def weighted_chunks():
        for start in range(0, len(y), 211):
            yield X[start:start + 211], y[start:start + 211], w[start:start + 211]

    a = fit_sparse_stream(weighted_chunks, **common)
    b = fit_sparse_stream(array_chunks(X[repeated], y[repeated], rows=300), **common)
    np.testing.assert_array_equal(a.Z_, b.Z_)
    assert a.mean_ == pytest.approx(b.mean_, abs=1e-12) and a.mean_ != pytest.approx(y.mean(), abs=1e-6)
    test = X[::7]
    (ma, sa), (mb, sb) = a.predict(test, return_std=True), b.predict(test, return_std=True)
    assert np.abs(ma - mb).max() < 1e-9 and np.abs(sa - sb).max() < 1e-9
    assert np.abs(ma - fit_sparse_stream(array_chunks(X, y, rows=300), **common).predict(test)).max() > 1e-4
    with pytest.raises(ModelError, match="weights"):
        fit_sparse_stream(lambda: iter([(X[:10], y[:10], -np.ones(10))]), n_inducing=5)
    # model.fit_maps: per-structure weights reach the solver (its mean is the weighted label mean, as with repeats)
    labels = [a.arrays["e_local"][a.symbols == "Si"] for a in frames]
    fw = [2.0 if k % 3 == 0 else 1.0 for k in range(len(maps))]
    options = {"solver": "sparse", "solver_options": {"n_inducing": 30, "seed": 0}}
    weighted = CGGPRModel(ModelSpec(representation="AB2", **SMALL), **options).fit_maps(maps, labels, weights=fw)
    plain = CGGPRModel(ModelSpec(representation="AB2", **SMALL), **options).fit_maps(maps, labels)
    per_site = np.concatenate([np.full(len(y_), f) for y_, f in zip(labels, fw, strict=True)])
    flat = np.concatenate(labels) - weighted.reference_energy
    assert weighted.regressor_.mean_ == pytest.approx(per_site @ flat / per_site.sum(), abs=1e-12)
    assert plain.regressor_.mean_ == pytest.approx(flat.mean(), abs=1e-12)
    np.testing.assert_array_equal(weighted.regressor_.Z_, plain.regressor_.Z_)  # the sample is unweighted
    assert weighted.training_["weights"]["max"] == 2.0 and "weights" not in plain.training_
    with pytest.raises(ModelError, match="one weight per structure"):
        CGGPRModel(ModelSpec(representation="AB2", **SMALL), **options).fit_maps(maps, labels, weights=[1.0])
