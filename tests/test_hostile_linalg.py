"""Paper-scale linear algebra and absurd inputs to training (issue 16): the blocked Cholesky, the
Nyström variance of large models, validated regressor state, hyperparameter bounds, absurd labels,
hold-out fractions and the memory estimate. Built from the package's built-in data; no ../shared."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.io import write
from click.testing import CliRunner
from conftest import builtin_frames
from scipy.linalg import lapack

from ase_cggpr import CGGPRModel, ModelError, ModelSpec, coarse_grain, local_energies, regression
from ase_cggpr.cli import main
from ase_cggpr.errors import LabelError
from ase_cggpr.regression import ExactGPR, SparseGPR, blocked_cholesky, solver_from_state
from ase_cggpr.training import train_model

SOAP = dict(n_max=4, l_max=2)


@pytest.fixture(scope="module")
def cg_frames():
    return builtin_frames("cg")[:40]


@pytest.fixture(scope="module")
def ab2(cg_frames):
    """Real AB2 SOAP vectors (small basis) and local energies of 40 built-in frames."""
    model = CGGPRModel(representation="AB2", **SOAP)
    maps = [coarse_grain(a, "AB2") for a in cg_frames]
    X = model.vectors(maps)
    y = np.concatenate([local_energies(a, label_key="e_local") for a in cg_frames])
    return X, y


@pytest.fixture(scope="module")
def cg_file(cg_frames, tmp_path_factory):
    path = tmp_path_factory.mktemp("linalg") / "cg.extxyz"
    write(path, cg_frames[:12])
    return path


# -- blocked Cholesky ----------------------------------------------------------------------------------------
def _spd(n, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 12))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return ((1 + X @ X.T) ** 4 + 0.04 * np.eye(n)).astype(dtype)


@pytest.mark.parametrize("n,block", [(40, 1), (97, 7), (200, 64), (130, 130), (131, 200), (1, 3)])
def test_blocked_cholesky_equals_lapack(n, block):
    K = _spd(n)
    ref, info = lapack.dpotrf(K, lower=1, clean=1)
    assert info == 0
    A = K.copy()
    A[np.triu_indices(n, 1)] = np.nan  # the strict upper triangle is never read
    L = blocked_cholesky(A, block=block)
    assert L is A  # in place
    assert np.abs(L - ref).max() <= 1e-10 * np.abs(ref).max()
    assert not np.triu(L, 1).any()


def test_blocked_cholesky_float32_and_not_positive_definite():
    K = _spd(150, np.float32)
    ref, _ = lapack.spotrf(K, lower=1, clean=1)
    L = blocked_cholesky(K.copy(), block=16)
    assert L.dtype == np.float32 and np.abs(L - ref).max() <= 1e-5 * np.abs(ref).max()
    bad = _spd(50)
    bad[30, 30] = -1.0  # a negative pivot in the second diagonal block
    with pytest.raises(ModelError, match="not positive definite"):
        blocked_cholesky(bad, block=16)
    with pytest.raises(ModelError, match="block size"):
        blocked_cholesky(_spd(5), block=0)


def test_exact_gpr_uses_the_blocked_factor(ab2):
    X, y = ab2
    a = ExactGPR(noise=0.2, cholesky_block=37).fit(X[:300], y[:300])
    b = ExactGPR(noise=0.2, cholesky_block=4096).fit(X[:300], y[:300])  # one LAPACK call
    np.testing.assert_allclose(a.alpha_, b.alpha_, rtol=0, atol=1e-9 * np.abs(b.alpha_).max())
    np.testing.assert_allclose(a.predict(X[300:400], return_std=True)[1], b.predict(X[300:400], return_std=True)[1],
                               atol=1e-9)
    mixed = ExactGPR(noise=0.2, precision="mixed", cholesky_block=50).fit(X[:300], y[:300])
    assert mixed.L_.dtype == np.float32
    np.testing.assert_allclose(mixed.alpha_, b.alpha_, rtol=0, atol=1e-8 * np.abs(b.alpha_).max())


# -- the variance of large models --------------------------------------------------------------------------
def test_nystrom_variance_is_used_saved_and_loaded(ab2, tmp_path):
    X, y = ab2
    train, test = slice(0, 400), slice(400, None)
    exact = ExactGPR(variance="exact").fit(X[train], y[train])
    approx = ExactGPR(variance="nystrom", n_variance=150).fit(X[train], y[train])
    assert approx.variance_ == "nystrom" and approx.L_ is None and approx.var_Lm_.shape == (150, 150)
    np.testing.assert_array_equal(approx.alpha_, exact.alpha_)  # the mean stays exact
    m0, s0 = exact.predict(X[test], return_std=True)
    m1, s1 = approx.predict(X[test], return_std=True)
    np.testing.assert_allclose(m1, m0, atol=1e-12)
    assert np.all(s1 > 0) and np.abs(s1 - s0).max() < 0.5 * s0.max()  # an approximation, same scale
    assert approx.L_ is None  # the prediction did not refactor the kernel
    model = CGGPRModel(representation="AB2", **SOAP, solver_options={"variance": "nystrom", "n_variance": 150})
    model.fit_vectors(X[train], y[train])
    path = model.save(tmp_path / "nystrom.npz")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["metadata"]))
        assert {"var_index", "var_Lm", "var_La"} <= set(data.files) and "L" not in data.files
    assert meta["regression"]["variance"] == "nystrom" and meta["regression"]["n_variance"] == 150
    loaded = CGGPRModel.load(path)
    assert loaded.regressor_.variance_ == "nystrom"
    ml, sl = loaded.regressor_.predict(X[test], return_std=True)
    _, so = model.regressor_.predict(X[test], return_std=True)
    np.testing.assert_allclose(sl, so, atol=1e-12)
    assert loaded.regressor_.L_ is None


def test_auto_variance_exact_for_small_models(ab2, tmp_path):
    X, y = ab2
    gpr = ExactGPR().fit(X[:200], y[:200])
    assert gpr.variance_ == "exact" and gpr.L_ is not None
    params, arrays = gpr.get_state()
    assert params["variance"] == "exact" and "L" in arrays


def test_no_refactor_of_a_large_kernel_inside_a_prediction(ab2, monkeypatch):
    X, y = ab2
    params, arrays = ExactGPR().fit(X[:300], y[:300]).get_state(include_factor=False)
    monkeypatch.setattr(regression.exact, "LAZY_FACTOR_MAX", 100)  # where ExactGPR reads it
    gpr = solver_from_state(params, arrays)
    assert gpr.predict(X[300:310]).shape == (10,)  # the mean needs no factor
    with pytest.raises(ModelError, match="no variance factor.*build_variance"):
        gpr.predict(X[300:310], return_std=True)
    gpr.build_variance(n_variance=60)  # no N x N matrix involved
    assert gpr.variance_ == "nystrom" and np.all(gpr.predict(X[300:310], return_std=True)[1] > 0)


def _tamper(name):
    def change(params, arrays):
        if name == "L upper":
            arrays["L"] = arrays["L"].copy()
            arrays["L"][0, 5] = 1.0
        elif name == "L cut":
            arrays["L"] = arrays["L"][:56, :56]
        elif name == "L float32":
            arrays["L"] = arrays["L"].astype(np.float32)
        elif name == "L negative diagonal":
            arrays["L"] = arrays["L"].copy()
            arrays["L"][3, 3] = -1.0
        elif name == "alpha nan":
            arrays["alpha"] = arrays["alpha"].copy()
            arrays["alpha"][0] = np.nan
        elif name == "alpha short":
            arrays["alpha"] = arrays["alpha"][:-1]
        elif name == "X integer":
            arrays["X"] = arrays["X"].astype(np.int64)
        elif name == "X missing":
            del arrays["X"]
        elif name == "mean string":
            params["mean"] = "abc"
        elif name == "zeta huge":
            params["zeta"] = 10**6
        elif name == "block_size 0":
            params["block_size"] = 0
        elif name == "variance unknown":
            params["variance"] = "magic"
    return change


@pytest.mark.parametrize("name,message", [
    ("L upper", "not lower-triangular"), ("L cut", "'L' has shape"), ("L float32", "'L' has dtype"),
    ("L negative diagonal", "non-positive diagonal"), ("alpha nan", "'alpha' contains NaN"),
    ("alpha short", "'alpha' has shape"), ("X integer", "'X' has dtype"), ("X missing", "lack 'X'"),
    ("mean string", "mean must be a finite number"), ("zeta huge", "zeta must be between 1 and 16"),
    ("block_size 0", "block_size must be at least 1"), ("variance unknown", "unknown variance"),
])
def test_exact_from_state_validates_every_array(ab2, name, message):
    X, y = ab2
    params, arrays = ExactGPR().fit(X[:80], y[:80]).get_state()
    params, arrays = dict(params), dict(arrays)
    _tamper(name)(params, arrays)
    with pytest.raises(ModelError, match=message):
        solver_from_state(params, arrays)


@pytest.mark.parametrize("name,message", [
    ("index out of range", "var_index"), ("index float", "'var_index' has dtype"),
    ("Lm wrong shape", "'var_Lm' has shape"), ("La nan", "'var_La' contains NaN"), ("La missing", "lack 'var_La'"),
])
def test_nystrom_state_is_validated(ab2, name, message):
    X, y = ab2
    params, arrays = ExactGPR(variance="nystrom", n_variance=30).fit(X[:80], y[:80]).get_state()
    arrays = dict(arrays)
    if name == "index out of range":
        arrays["var_index"] = arrays["var_index"] + 1000
    elif name == "index float":
        arrays["var_index"] = arrays["var_index"].astype(float)
    elif name == "Lm wrong shape":
        arrays["var_Lm"] = arrays["var_Lm"][:29, :29]
    elif name == "La nan":
        arrays["var_La"] = arrays["var_La"].copy()
        arrays["var_La"][-1, 0] = np.nan
    else:
        del arrays["var_La"]
    with pytest.raises(ModelError, match=message):
        solver_from_state(params, arrays)


def test_sparse_from_state_is_validated(ab2):
    X, y = ab2
    params, arrays = SparseGPR(n_inducing=20).fit(X[:80], y[:80]).get_state()
    arrays = dict(arrays, Lm=arrays["Lm"][:10, :10])
    with pytest.raises(ModelError, match="'Lm' has shape"):
        solver_from_state(params, arrays)
    params, arrays = SparseGPR(n_inducing=20).fit(X[:80], y[:80]).get_state(include_factor=False)
    gpr = solver_from_state(params, arrays)
    with pytest.raises(ModelError, match="without its factors"):
        gpr.predict(X[:3], return_std=True)


# -- absurd hyperparameters -------------------------------------------------------------------------------
@pytest.mark.parametrize("changes,message", [
    (dict(cutoff=1000.0), r"cutoff must be in \(0, 20\] Å.*cutoff\^3"),
    (dict(cutoff=float("nan")), "cutoff must be a finite number"),
    (dict(cutoff="abc"), "cutoff must be a number"),
    (dict(cutoff=0.0), "cutoff must be in"),
    (dict(atom_sigma=5.0), r"atom_sigma must be in \(0, cutoff/2\]"),
    (dict(atom_sigma=-0.1), "atom_sigma must be in"),
    (dict(n_max=0), "n_max must be between 1 and 20"),
    (dict(n_max=21), "n_max must be between 1 and 20"),
    (dict(l_max=13), "l_max must be between 0 and 12"),
    (dict(l_max=2.5), "l_max must be an integer"),
    (dict(zeta=10**6), "zeta must be between 1 and 16"),
    (dict(zeta=True), "zeta must be an integer"),
    (dict(offset=-1.0), "offset must be >= 0"),
    (dict(offset=float("inf")), "offset must be a finite number"),
    (dict(noise=0.0), r"noise must be in \(0, 10\] eV"),
    (dict(noise=1e200), "noise must be in"),
    (dict(cutoff_transition_width=9.0), "cutoff_transition_width must be in"),
])
def test_spec_refuses_absurd_hyperparameters(changes, message):
    with pytest.raises(ModelError, match=message):
        ModelSpec(representation="AB2", **changes)


@pytest.mark.parametrize("options,message", [
    (dict(block_size=0), "block_size must be at least 1"), (dict(noise=-1.0), "noise must be positive"),
    (dict(noise=float("nan")), "noise must be a finite number"), (dict(n_variance=0), "n_variance"),
    (dict(cholesky_block=0), "cholesky_block"), (dict(variance="fast"), "unknown variance"),
    (dict(precision="half"), "unknown precision"), (dict(zeta=0), "zeta"),
])
def test_regressor_constructors_refuse_absurd_options(options, message):
    with pytest.raises(ModelError, match=message):
        ExactGPR(**options)


def test_sparse_constructor_refuses_absurd_options():
    for options, message in ((dict(block_size=0), "block_size"), (dict(n_inducing=0), "n_inducing"),
                             (dict(jitter=float("nan")), "jitter")):
        with pytest.raises(ModelError, match=message):
            SparseGPR(**options)


def test_cli_train_with_an_absurd_cutoff_is_one_line(cg_file, tmp_path):
    result = CliRunner().invoke(main, ["train", str(cg_file), "-o", str(tmp_path / "m.npz"), "--representation",
                                       "A", "--cutoff", "1000", "--label-key", "e_local", "--quiet"])
    assert result.exit_code in (1, 2), result.output
    assert "cutoff" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 3
    assert not (tmp_path / "m.npz").exists()


# -- absurd labels, hold-out fractions, memory --------------------------------------------------------------
def test_gpr_refuses_absurd_labels(ab2):
    X, y = ab2
    for bad, message in ((y[:50] * 1e200, "deviate from their mean"), (np.where(np.arange(50) == 3, np.nan, y[:50]),
                                                                       "NaN or inf")):
        for solver in (ExactGPR(), SparseGPR(n_inducing=10)):
            with pytest.raises(LabelError, match=message):
                solver.fit(X[:50], bad)


def test_train_refuses_absurd_labels_naming_the_structure(cg_frames, tmp_path):
    frames = [a.copy() for a in cg_frames[:6]]
    frames[4].arrays["e_local"] = frames[4].arrays["e_local"] * 1e200
    path = tmp_path / "bad.extxyz"
    write(path, frames)
    with pytest.raises(LabelError, match=r"bad.extxyz@4.*eV per metal from the mean.*limit 100 eV"):
        train_model([path], representation="AB2", label_key="e_local", **SOAP)
    frames[4].arrays["e_local"] = cg_frames[4].arrays["e_local"] + 500.0  # a unit error on one structure
    write(path, frames)
    with pytest.raises(LabelError, match="bad.extxyz@4"):
        train_model([path], representation="AB2", label_key="e_local", **SOAP)


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.5, -0.2, float("nan"), True, "0.2"])
def test_train_refuses_test_fractions_outside_0_1(cg_file, fraction):
    with pytest.raises(ModelError, match="test_fraction must be a number strictly between 0 and 1"):
        train_model([cg_file], representation="AB2", label_key="e_local", test_fraction=fraction, **SOAP)


def test_train_solver_and_precision(cg_file):
    model, _ = train_model([cg_file], representation="AB2", label_key="e_local", precision="mixed", **SOAP)
    assert model.regressor_.precision == "mixed" and model.regressor_.L_.dtype == np.float32
    model, _ = train_model([cg_file], representation="AB2", label_key="e_local", solver="sparse", inducing=25,
                           **SOAP)
    assert model.solver == "sparse" and model.regressor_.Z_.shape[0] == 25
    with pytest.raises(ModelError, match="exact solver only"):
        train_model([cg_file], representation="AB2", label_key="e_local", solver="sparse", precision="mixed")
    with pytest.raises(ModelError, match="unknown regression solver"):
        train_model([cg_file], representation="AB2", label_key="e_local", solver="magic")


def test_memory_estimate_refuses_before_allocating(cg_file, ab2):
    with pytest.raises(ModelError, match=r"training on \d+ environments .* needs .* GB but the memory budget is"):
        train_model([cg_file], representation="AB2", label_key="e_local", memory_budget=1e4, **SOAP)
    X, y = ab2
    with pytest.raises(ModelError, match="exact GPR on 300 environments .*needs 0.00 GB but the memory budget"):
        ExactGPR(memory_budget=1e5).fit(X[:300], y[:300])
    with pytest.raises(ModelError, match="sparse GPR with 100 inducing"):
        SparseGPR(n_inducing=100, memory_budget=1e4).fit(X[:300], y[:300])
    # the estimate of the paper's N: one float64 32,000 x 32,000 matrix plus a row block
    assert regression.exact_fit_bytes(32000) == 8 * 32000**2 + 8 * 2048 * 32000
    assert ExactGPR(memory_budget=1e9).fit(X[:300], y[:300]).alpha_.shape == (300,)
