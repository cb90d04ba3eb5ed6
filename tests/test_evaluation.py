"""Evaluation layer: grouped CV, learning curves, grid search, cache, solvers, CLI (real SOAP, real files).

The data set: 7 nets of the package's built-in dataset, 3 frames each (the ideal `d` frame and a small `r-d`
and `d-r` rattle: info ``rattle`` none / small / small), labelled with their MOF-FF per-atom ``energies``;
``structure_id`` is the net's name, so there is one CV group per net.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.io import read, write
from click.testing import CliRunner
from conftest import builtin_frames

from ase_cggpr.cli import main
from ase_cggpr.evaluation import (
    SoapCache,
    cross_hyper_table,
    cross_validate,
    grid_search,
    group_folds,
    learning_curve,
    optimum,
    paper_grid,
    paper_learning_curve,
    read_csv,
    read_environments,
    read_predictions,
    sampled_vectors,
    shared_kernel_cv,
)
from ase_cggpr.model import CGGPRModel
from ase_cggpr.regression import ExactGPR, SparseGPR
from ase_cggpr.spec import ModelSpec

#: built-in nets used here and their number of Zn per cell
NETS = {"SOD": 12, "GIS": 16, "LTJ": 16, "YUG": 16, "ABW": 8, "BCT": 8, "OFF": 18}


def dataset_frames() -> list:
    frames = []
    for name in NETS:
        for atoms in builtin_frames(net=name, order=("d", "r-d", "d-r"), rattle=("none", "small"), batch=(0, 1)):
            atoms.info["structure_id"] = name
            frames.append(atoms)
    return frames


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """extxyz file of 3 frames of each of 7 built-in nets (21 structures, 282 Zn environments, 7 groups)."""
    frames = dataset_frames()
    assert len(frames) == 3 * len(NETS)
    path = tmp_path_factory.mktemp("evaluation") / "train.extxyz"
    write(path, frames, format="extxyz")
    return path


@pytest.fixture(scope="session")
def env(dataset):
    return read_environments(dataset)


@pytest.fixture(scope="session")
def ab2_vectors(env):
    return SoapCache(None).vectors(env, ModelSpec(representation="AB2", n_max=6, l_max=4))


SMALL = dict(n_max=6, l_max=4)


def test_group_folds_keep_groups_together_and_are_seeded():
    groups = np.repeat([f"net{k}" for k in range(12)], np.arange(1, 13))
    folds = group_folds(groups, 5, seed=3)
    for g in np.unique(groups):
        assert len(np.unique(folds[groups == g])) == 1
    assert set(folds.tolist()) == set(range(5))
    np.testing.assert_array_equal(folds, group_folds(groups, 5, seed=3))
    assert not np.array_equal(folds, group_folds(groups, 5, seed=4))
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 12  # greedy balancing: within one group's size
    with pytest.raises(ValueError, match="groups"):
        group_folds(groups[:3], 5)


def test_select_and_exclude_frames_by_info(dataset):
    only = read_environments(dataset, select={"structure_id": ["SOD", "GIS"]}, exclude={"rattle": ["none"]})
    assert set(only.groups) == {"SOD", "GIS"} and len(only.structures) == 4
    assert all(a.info["rattle"] != "none" for a in only.structures)
    with pytest.raises(ValueError, match="no structure has info key 'pressure'"):
        read_environments(dataset, exclude={"pressure": ["1 GPa"]})
    with pytest.raises(ValueError, match="no structure left"):
        read_environments(dataset, select={"structure_id": ["nonexistent"]})


def test_topology_groups_cells_of_one_framework_together(dataset, tmp_path):
    """Frames with info['topology'] (the dataset build's key) are grouped by it before structure_id."""
    frames = read(dataset, ":")
    for atoms in frames:  # pretend SOD and GIS are two cells of one framework
        if atoms.info["structure_id"] in ("SOD", "GIS"):
            atoms.info["topology"] = "same-framework"
    path = tmp_path / "topology.extxyz"
    write(path, frames, format="extxyz")
    env = read_environments(path)
    assert env.n_groups == len(NETS) - 1 and "same-framework" in set(env.groups)
    assert env.group_by == "structure_id+topology" or env.group_by == "topology+structure_id"
    by_net = read_environments(path, group_key="structure_id")
    assert by_net.n_groups == len(NETS) and by_net.group_by == "structure_id"


def test_environments_labels_groups_targets(env, dataset):
    assert len(env) == 3 * sum(NETS.values()) == 282
    assert env.n_groups == len(NETS)
    assert set(np.unique(env.groups)) == set(NETS)
    frames = dataset_frames()
    # labels in file order, Zn by Zn: the local energy (Zn + half of each of its 4 linkers) and the Zn-only one
    np.testing.assert_allclose(env.labels, np.concatenate([a.arrays["e_local"][a.symbols == "Zn"] for a in frames]),
                               rtol=0, atol=1e-6)  # the dataset's own stored local energies
    metal = read_environments(dataset, target="metal")
    assert metal.target == "metal" and len(metal) == len(env)
    np.testing.assert_allclose(metal.labels, np.concatenate([a.calc.results["energies"][a.symbols == "Zn"]
                                                             for a in frames]), rtol=0, atol=1e-12)
    assert np.abs(env.labels - metal.labels).min() > 1e-3  # the linker shares are never zero


def test_cross_validation_finite_reproducible_and_grouped(env, ab2_vectors, tmp_path):
    spec = ModelSpec(representation="AB2", **SMALL)
    first = cross_validate(ab2_vectors, env.labels, env.groups, spec, n_folds=5, seed=1)
    again = cross_validate(ab2_vectors, env.labels, env.groups, spec, n_folds=5, seed=1)
    assert np.isfinite(first.test_rmse).all() and np.isfinite(first.train_rmse).all()
    assert first.test_rmse == again.test_rmse
    np.testing.assert_array_equal(first.predictions, again.predictions)
    assert np.isfinite(first.predictions).all()
    for g in np.unique(env.groups):  # a whole net is held out together
        assert len(np.unique(first.folds[env.groups == g])) == 1
    assert first.mean_train_rmse < first.mean_test_rmse
    capped = cross_validate(ab2_vectors, env.labels, env.groups, spec, n_folds=5, seed=1, n_train=40)
    assert capped.n_train == [40] * 5
    out = first.save(tmp_path / "cv.json", predictions=tmp_path / "cv.csv")
    summary = json.loads(out.read_text())
    assert summary["mean_test_rmse"] == pytest.approx(first.mean_test_rmse)
    y, p, folds = read_predictions(tmp_path / "cv.csv")
    np.testing.assert_allclose(p, first.predictions)
    np.testing.assert_array_equal(folds, first.folds)


def test_learning_curve_rows(env, ab2_vectors):
    spec = ModelSpec(representation="AB2", **SMALL)
    rows = learning_curve(ab2_vectors, env.labels, env.groups, spec, sizes=(7, 31, 125, 10_000), n_folds=3)
    sizes = [r["numb_training_atoms"] for r in rows]
    assert sizes[:3] == [7, 31, 125] and 125 < sizes[-1] < len(env)  # 10,000 capped at the smallest split
    assert all(np.isfinite(r["av_test_rmse"]) and np.isfinite(r["av_train_rmse"]) for r in rows)
    assert rows[-1]["av_test_rmse"] < rows[0]["av_test_rmse"]


def test_grid_search_csv_optimum_and_resume(env, tmp_path):
    cache = SoapCache(tmp_path / "cache")
    spec = ModelSpec(representation="A", **SMALL)
    csv_path = tmp_path / "grid.csv"
    rows = grid_search(env, spec, cutoffs=[5.0, 7.0], atom_sigmas=[0.5, 1.0], noises=[0.05, 0.2],
                       csv_path=csv_path, n_folds=3, cache=cache)
    assert len(rows) == 8 and cache.misses == 4
    best = optimum(rows)
    assert best["test_rmse"] == min(r["test_rmse"] for r in rows)
    text = csv_path.read_text()
    fresh = SoapCache(tmp_path / "cache")
    again = grid_search(env, spec, cutoffs=[5.0, 7.0], atom_sigmas=[0.5, 1.0], noises=[0.05, 0.2],
                        csv_path=csv_path, n_folds=3, cache=fresh)
    assert (fresh.hits, fresh.misses) == (0, 0)  # nothing recomputed, not even SOAP
    assert csv_path.read_text() == text and len(again) == 8
    more = grid_search(env, spec, cutoffs=[5.0, 7.0, 9.0], atom_sigmas=[0.5], noises=[0.2],
                       csv_path=csv_path, n_folds=3, cache=fresh)
    assert fresh.misses == 1 and len(more) == 9  # only the new point


@pytest.mark.parametrize("representation", ["atomistic", "AB2", "A"])
def test_soap_of_selected_environments_equals_rows_of_all(env, representation):
    spec = ModelSpec(representation=representation, **SMALL)
    rows = np.sort(np.random.default_rng(3).choice(len(env), size=40, replace=False))
    cache = SoapCache(None)
    X_rows = cache.vectors(env, spec, rows=rows)  # computed for the 40 centres only
    assert X_rows.shape[0] == 40 and cache.misses == 1
    assert cache.vectors(env, spec, rows=rows) is X_rows and cache.hits == 1
    X_all = SoapCache(None).vectors(env, spec)
    np.testing.assert_allclose(X_rows, X_all[rows], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="sorted"):
        cache.vectors(env, spec, rows=rows[::-1])


def test_shared_kernel_grid_search_describes_only_the_samples(env, tmp_path):
    spec = ModelSpec(representation="A", **SMALL)
    csv_path = tmp_path / "grid.csv"
    cache = SoapCache(None)
    rows = grid_search(env, spec, cutoffs=[5.0, 7.0], atom_sigmas=[0.5], csv_path=csv_path, n_folds=3,
                       n_train=60, seed=1, cache=cache, shared_kernel=True)
    assert len(rows) == 2 and {r["protocol"] for r in rows} == {"shared"}
    assert all(r["n_train"] == 60 for r in rows)
    # the same point by the shared-kernel CV on all vectors: same samples, same fits, same RMSE
    point = spec.replace(cutoff=7.0, atom_sigma=0.5)
    full = shared_kernel_cv(SoapCache(None).vectors(env, point), env.labels, env.groups, point, sizes=[60],
                            n_folds=3, seed=1)[0]
    row = next(r for r in rows if r["cutoff"] == 7.0)
    assert row["test_rmse"] == pytest.approx(full.mean_test_rmse, rel=1e-9)
    assert row["train_rmse"] == pytest.approx(full.mean_train_rmse, rel=1e-9)
    assert np.isfinite(full.predictions).sum() == 90 < len(env)  # 60 * 3 / 2 sampled environments
    assert cache.misses == 2 and [len(X) for X in cache._memory.values()] == [90]  # only those described
    fresh = SoapCache(None)
    grid_search(env, spec, cutoffs=[5.0, 7.0], atom_sigmas=[0.5], csv_path=csv_path, n_folds=3, n_train=60,
                seed=1, cache=fresh, shared_kernel=True)
    assert fresh.misses == 0  # resumed: nothing recomputed
    per_fold = grid_search(env, spec, cutoffs=[5.0], atom_sigmas=[0.5], csv_path=csv_path, n_folds=3,
                           n_train=60, seed=1, cache=fresh)
    assert len(per_fold) == 1 and per_fold[0]["protocol"] == "per-fold"  # another protocol, another point
    with pytest.raises(ValueError, match="n_train"):
        grid_search(env, spec, cutoffs=[5.0], atom_sigmas=[0.5], csv_path=tmp_path / "g2.csv", shared_kernel=True)


def test_soap_cache_hit_on_second_call(env, tmp_path):
    spec = ModelSpec(representation="AB2", **SMALL)
    cache = SoapCache(tmp_path)
    X1 = cache.vectors(env, spec)
    assert (cache.hits, cache.misses) == (0, 1)
    assert cache.path(env, spec).exists()
    X2 = cache.vectors(env, spec)
    assert cache.hits == 1 and X2 is X1
    disk = SoapCache(tmp_path)
    np.testing.assert_array_equal(disk.vectors(env, spec), X1)
    assert (disk.hits, disk.misses) == (1, 0)
    assert cache.path(env, spec.replace(noise=0.1)) == cache.path(env, spec)  # kernel/noise share vectors
    assert cache.path(env, spec.replace(cutoff=7.0)) != cache.path(env, spec)


def test_soap_cache_on_disk_is_chunked_and_memory_mapped(env, tmp_path):
    spec = ModelSpec(representation="A", **SMALL)
    cache = SoapCache(tmp_path)
    cache.CHUNK = 4  # 21 structures -> 6 chunks written into one file
    X = cache.vectors(env, spec)
    assert isinstance(X, np.memmap) and not X.flags.writeable
    np.testing.assert_array_equal(X, SoapCache(None).vectors(env, spec))
    assert not list(tmp_path.glob("*.part*"))


@pytest.mark.parametrize("precision", ["mixed", "float64"])
def test_shared_kernel_cv_equals_separate_exact_fits(env, ab2_vectors, precision):
    spec = ModelSpec(representation="AB2", **SMALL, noise=0.05)
    X, y = ab2_vectors, env.labels
    results = shared_kernel_cv(X, y, env.groups, spec, sizes=[37, 120], n_folds=4, seed=2, precision=precision)
    small, large = results
    assert small.n_train == [37] * 4 and large.n_train == [120] * 4
    np.testing.assert_array_equal(np.isfinite(small.predictions), np.isfinite(large.predictions))  # same tests
    tested = np.isfinite(large.predictions)
    assert 0 < tested.sum() < len(y)  # a sample of each fold: 120 / 3 = 40 per fold
    for result in results:
        for k, train in enumerate(result.train_rows):
            assert not np.any(result.folds[train] == k)  # grouped: no environment of the held-out fold
            test = np.flatnonzero(tested & (result.folds == k))
            direct = ExactGPR(noise=0.05).fit(X[train], y[train])
            np.testing.assert_allclose(result.predictions[test], direct.predict(X[test]), rtol=0, atol=1e-9)
            assert result.test_rmse[k] == pytest.approx(np.sqrt(np.mean((direct.predict(X[test]) - y[test]) ** 2)))
            assert result.train_rmse[k] == pytest.approx(np.sqrt(np.mean((direct.fitted_values() - y[train]) ** 2)))
    for k in range(4):  # nested training sets across sizes
        assert set(small.train_rows[k]) <= set(large.train_rows[k])
    single = cross_validate(X, y, env.groups, spec, n_folds=4, seed=2, n_train=120, shared_kernel=True,
                            solver_options={"precision": precision})
    assert single.test_rmse == pytest.approx(large.test_rmse, rel=1e-12)  # same seeded sample, same fits
    with pytest.raises(ValueError, match="n_train"):
        cross_validate(X, y, env.groups, spec, shared_kernel=True)


def test_sampled_vectors_give_the_same_shared_kernel_results(env, ab2_vectors, tmp_path):
    spec = ModelSpec(representation="AB2", **SMALL, noise=0.05)
    cache = SoapCache(tmp_path)
    X = sampled_vectors(env, spec, cache, 120, n_folds=4, seed=2)  # SOAP of the 160 sampled environments
    assert X.vectors.shape[0] == 160 and len(X) == len(env) and not cache.path(env, spec).exists()
    assert len(list(tmp_path.glob("*-rows-*.npy"))) == 1  # the sample's vectors are cached on disk
    np.testing.assert_allclose(X.vectors, ab2_vectors[X.rows], rtol=0, atol=1e-12)
    sampled = learning_curve(X, env.labels, env.groups, spec, sizes=[37, 120], n_folds=4, seed=2,
                             shared_kernel=True)
    full = learning_curve(ab2_vectors, env.labels, env.groups, spec, sizes=[37, 120], n_folds=4, seed=2,
                          shared_kernel=True)
    for a, b in zip(sampled, full, strict=True):  # same samples, same nested training sets, same fits
        assert a["av_test_rmse"] == pytest.approx(b["av_test_rmse"], rel=1e-9)
        assert a["av_train_rmse"] == pytest.approx(b["av_train_rmse"], rel=1e-9)
    with pytest.raises(ValueError, match="outside the sampled rows"):
        X[np.setdiff1d(np.arange(len(env)), X.rows)[:3]]


def test_mixed_precision_equals_float64(env, ab2_vectors):
    X, y = ab2_vectors, env.labels
    exact = ExactGPR(noise=0.05, block_size=64).fit(X[:200], y[:200])
    mixed = ExactGPR(noise=0.05, block_size=64, precision="mixed").fit(X[:200], y[:200])
    assert mixed.L_.dtype == np.float32
    assert mixed.refinement_["relative_residual"] < 1e-12
    np.testing.assert_allclose(mixed.alpha_, exact.alpha_, rtol=1e-9, atol=1e-9 * np.abs(exact.alpha_).max())
    np.testing.assert_allclose(mixed.predict(X[200:]), exact.predict(X[200:]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(mixed.fitted_values(), exact.predict(X[:200]), atol=1e-9)
    _, s64 = exact.predict(X[200:], return_std=True)
    _, s32 = mixed.predict(X[200:], return_std=True)
    np.testing.assert_allclose(s32, s64, atol=2e-3)


def test_sparse_with_all_points_equals_exact(env, ab2_vectors):
    X, y = ab2_vectors[:150], env.labels[:150]
    exact = ExactGPR(noise=0.2).fit(X, y)
    sparse = SparseGPR(noise=0.2, n_inducing=len(y)).fit(X, y)
    test = ab2_vectors[150:]
    # K_mm of the polynomial kernel is ill-conditioned (jitter 1e-10): agreement to 1e-6 eV = 0.001 meV
    np.testing.assert_allclose(sparse.predict(test), exact.predict(test), atol=1e-6)
    m_e, s_e = exact.predict(test, return_std=True)
    m_s, s_s = sparse.predict(test, return_std=True)
    np.testing.assert_allclose(s_s, s_e, atol=1e-5)  # variances: cancellation in k - q
    for selection in ("fps", "cur", "random"):
        small = SparseGPR(noise=0.2, n_inducing=60, selection=selection).fit(X, y)
        assert small.Z_.shape[0] == 60 and np.isfinite(small.predict(test)).all()


def test_model_selects_solver_and_round_trips(env, ab2_vectors, tmp_path):
    spec = ModelSpec(representation="AB2", **SMALL)
    X, y = ab2_vectors, env.labels
    for solver, options in (("sparse", {"n_inducing": 50}), ("exact", {"precision": "mixed"})):
        model = CGGPRModel(spec, solver=solver, solver_options=options).fit_vectors(X[:150], y[:150])
        path = model.save(tmp_path / f"{solver}.npz")
        loaded = CGGPRModel.load(path)
        assert loaded.solver == solver
        np.testing.assert_allclose(loaded.regressor_.predict(X[150:]), model.regressor_.predict(X[150:]))


def test_cross_hyper_table_diagonal_and_full(env, tmp_path):
    cache = SoapCache(tmp_path)
    optima = {"AB2": (6.0, 0.5), "A": (8.0, 1.0)}
    rows = cross_hyper_table(env, optima, representations=("AB2", "A"), base=ModelSpec(**SMALL), n_folds=3,
                             cache=cache)
    assert [(r["representation"], r["hypers_of"]) for r in rows] == [
        ("AB2", "AB2"), ("AB2", "A"), ("A", "AB2"), ("A", "A")]
    assert all(np.isfinite(r["test_rmse"]) for r in rows)
    diagonal = cross_hyper_table(env, optima, representations=("AB2", "A"), base=ModelSpec(**SMALL),
                                 n_folds=3, cache=cache, diagonal_only=True)
    assert [r["test_rmse"] for r in diagonal] == [rows[0]["test_rmse"], rows[3]["test_rmse"]]


def test_paper_numbers_readable(shared_data):
    paper = shared_data / "paper"
    lc = paper_learning_curve(paper, "AB2")
    assert lc[-1]["numb_training_atoms"] == 32000
    assert lc[-1]["av_test_rmse"] == pytest.approx(0.0656, abs=1e-4)
    best = optimum(paper_grid(paper, "atomistic"))
    assert (best["cutoff"], best["atom_sigma"]) == (6.75, 0.5)


def test_cli_end_to_end(dataset, tmp_path):
    pytest.importorskip("matplotlib")
    runner = CliRunner()
    common = [str(dataset), "--n-max", "6", "--l-max", "4", "--folds", "3", "-q",
              "--cache-dir", str(tmp_path / "cache")]

    def run(*args):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    out = run("cv", *common, "--representation", "AB2", "-o", str(tmp_path / "cv_AB2.json"))
    assert "test RMSE" in out
    run("cv", *common, "--representation", "A", "--solver", "sparse", "--inducing", "40",
        "-o", str(tmp_path / "cv_A.json"))
    assert (tmp_path / "cv_AB2.predictions.csv").exists()
    run("learning-curve", *common, "--representation", "AB2", "--sizes", "7,31,100", "--precision", "mixed",
        "-o", str(tmp_path / "lc.csv"))
    assert [r["numb_training_atoms"] for r in read_csv(tmp_path / "lc.csv")] == [7, 31, 100]
    run("learning-curve", *common, "--representation", "AB2", "--sizes", "7,31,100", "--shared-kernel",
        "-o", str(tmp_path / "lc_shared.csv"))
    assert [r["numb_training_atoms"] for r in read_csv(tmp_path / "lc_shared.csv")] == [7, 31, 100]
    out = run("cv", *common, "--representation", "AB2", "--shared-kernel", "--n-train", "100", "--precision",
              "mixed", "-o", str(tmp_path / "cv_shared.json"))
    assert json.loads((tmp_path / "cv_shared.json").read_text())["n_train"] == [100] * 3
    run("cv", *common, "--representation", "A", "--exclude", "rattle=none", "--select", "structure_id=SOD,GIS,OFF",
        "-o", str(tmp_path / "cv_subset.json"))
    assert json.loads((tmp_path / "cv_subset.json").read_text())["n_environments"] == 2 * (12 + 16 + 18)
    needs_n = runner.invoke(main, ["cv", *common, "--shared-kernel", "-o", str(tmp_path / "x.json")])
    assert needs_n.exit_code != 0 and "--n-train" in needs_n.output
    grid = ["grid-search", *common, "--representation", "A", "--cutoffs", "5:7:2", "--sigmas", "0.5,1.0",
            "-o", str(tmp_path / "grid.csv")]
    out = run(*grid)
    assert "optimum" in out and len(read_csv(tmp_path / "grid.csv")) == 4
    before = (tmp_path / "grid.csv").read_text()
    run(*grid)
    assert (tmp_path / "grid.csv").read_text() == before
    run("cross-hyper", *common, "--diagonal-only", "--optimum", "atomistic=5,0.5", "--grid",
        str(tmp_path / "grid.csv"), "-o", str(tmp_path / "table1.csv"))
    assert [r["representation"] for r in read_csv(tmp_path / "table1.csv")] == ["atomistic", "AB2", "A"]
    for name in ("report.md", "report.html"):
        out = run("report", "--cv", str(tmp_path / "cv_AB2.json"), "--cv", str(tmp_path / "cv_A.json"),
                  "--learning-curve", str(tmp_path / "lc.csv"), "--grid", str(tmp_path / "grid.csv"),
                  "--table", str(tmp_path / "table1.csv"), "-o", str(tmp_path / name))
    text = (tmp_path / "report.md").read_text()
    assert "Table 1" in text and "parity.png" in text and "grid_A.png" in text
    assert (tmp_path / "report_figures" / "learning_curves.png").stat().st_size > 1000
    assert "<table>" in (tmp_path / "report.html").read_text()
    again = runner.invoke(main, ["cv", *common, "-o", str(tmp_path / "cv_AB2.json")])
    assert again.exit_code == 1 and "exists; pass --force" in again.output  # never overwrite silently
    bad = runner.invoke(main, ["cv", str(dataset), "--folds", "50", "-q"])
    assert bad.exit_code != 0 and "groups" in bad.output


def test_report_beside_the_paper_numbers(dataset, shared_data, tmp_path):
    """``cggpr report --paper``: the learning curve and grid optimum beside the authors' published ones."""
    pytest.importorskip("matplotlib")
    runner = CliRunner()
    common = [str(dataset), "--n-max", "6", "--l-max", "4", "--folds", "3", "-q"]

    def run(*args):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    run("learning-curve", *common, "--representation", "AB2", "--sizes", "7,31", "-o", str(tmp_path / "lc.csv"))
    run("grid-search", *common, "--representation", "A", "--cutoffs", "5:7:2", "--sigmas", "0.5",
        "-o", str(tmp_path / "grid.csv"))
    run("report", "--learning-curve", str(tmp_path / "lc.csv"), "--grid", str(tmp_path / "grid.csv"),
        "--paper", str(shared_data / "paper"), "-o", str(tmp_path / "report.md"))
    text = (tmp_path / "report.md").read_text()
    assert "paper test RMSE" in text
    best = optimum(paper_grid(shared_data / "paper", "A"))
    assert f"paper: {best['cutoff']} Å, {best['atom_sigma']} Å, {best['test_rmse']:.4f} eV" in text
