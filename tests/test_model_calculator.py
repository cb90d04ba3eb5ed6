"""Model fitting, persistence, the ASE calculator and the plugin, on real SOAP and real linear algebra."""

import json
import warnings

import numpy as np
import pytest
from ase.io import read
from conftest import builtin_frames, methylated
from scipy.linalg import cho_factor, cho_solve

from ase_cggpr import CGGPRCalculator, CGGPRModel, ModelError, ModelSpec, local_energies
from ase_cggpr.regression import ExactGPR


@pytest.fixture(scope="module")
def ab2_model(frames):
    return CGGPRModel(representation="AB2").fit(frames[:2], label_key="energies")


def test_exact_gpr_matches_dense_solve():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 30))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = rng.normal(size=120)
    gpr = ExactGPR(block_size=17).fit(X, y)
    K = (1 + X @ X.T) ** 4 + 0.04 * np.eye(120)
    alpha = cho_solve(cho_factor(K), y - y.mean())
    assert np.abs(gpr.alpha_ - alpha).max() < 1e-10
    Xt = X[:5] + 0.01
    k = (1 + Xt @ X.T) ** 4
    mean, std = gpr.predict(Xt, return_std=True)
    assert np.abs(mean - (y.mean() + k @ alpha)).max() < 1e-10
    prior = (1 + np.einsum("ij,ij->i", Xt, Xt)) ** 4
    var = prior - np.einsum("ij,ji->i", k, cho_solve(cho_factor(K), k.T))
    assert np.abs(std - np.sqrt(var)).max() < 1e-8
    # offset matters: the paper's Poly(d=4) has offset 1, (x.x')^4 gives different weights
    assert np.abs(ExactGPR(offset=0.0).fit(X, y).alpha_ - alpha).max() > 1e-3


# measured held-out RMSE (eV/Zn) on the third built-in YUG frame: atomistic 0.036, AB2 0.041, A 0.041
@pytest.mark.parametrize("representation,bound", [("atomistic", 0.06), ("AB2", 0.06), ("A", 0.06)])
def test_train_on_two_frames_predict_third(frames, representation, bound):
    model = CGGPRModel(representation=representation).fit(frames[:2], label_key="energies")
    predicted, std = model.predict(frames[2], return_std=True)
    truth = local_energies(frames[2], label_key="energies")
    rmse = np.sqrt(np.mean((predicted - truth) ** 2))
    assert rmse < bound and rmse < 2 * truth.std() + 0.05
    assert np.all(std > 0) and np.all(std < 4.0)
    assert model.training_["n_environments"] == 32


def test_save_load_roundtrip_without_pickle(ab2_model, frames, tmp_path):
    path = ab2_model.save(tmp_path / "model")
    assert path.name == "model.npz"
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["metadata"]))
        assert set(data.files) >= {"X", "alpha", "L", "metadata"}
    # the spec records the species found in the (Zn(Im)2) training data: the paper's Si/O beads
    assert meta["spec"] == ModelSpec(representation="AB2", species=(14, 8), centre_species=(14,)).to_dict()
    assert meta["format_version"] == 1 and meta["package_version"] and meta["regression"]["offset"] == 1.0
    loaded = CGGPRModel.load(path)
    assert np.array_equal(loaded.predict(frames[2]), ab2_model.predict(frames[2]))
    with pytest.raises(FileExistsError):
        ab2_model.save(path)
    no_factor = ab2_model.save(tmp_path / "nofactor.npz", include_factor=False)
    m, s = CGGPRModel.load(no_factor).predict(frames[2], return_std=True)
    assert np.allclose(s, ab2_model.predict(frames[2], return_std=True)[1], atol=1e-10)


def test_n_train_subsampling_is_seeded(frames):
    a = CGGPRModel(representation="A").fit(frames[:2], label_key="energies", n_train=10, seed=3)
    b = CGGPRModel(representation="A").fit(frames[:2], label_key="energies", n_train=10, seed=3)
    assert a.training_["n_environments"] == 10
    assert np.array_equal(a.predict(frames[2]), b.predict(frames[2]))


def test_calculator_results_and_mapping_cache(ab2_model, frames):
    atoms = frames[2].copy()
    atoms.calc = CGGPRCalculator(ab2_model)
    energy = atoms.get_potential_energy()
    results = atoms.calc.results
    zn = np.flatnonzero(atoms.symbols == "Zn")
    assert results["energies"][zn] == pytest.approx(results["local_energies"])
    assert results["energies"].sum() == pytest.approx(energy)
    assert np.all(results["energies"][~(atoms.symbols == "Zn")] == 0)
    assert "local_energy_std" not in results  # computed only when asked for
    assert atoms.calc.get_property("local_energy_std", atoms).shape == (16,)
    connectivity = atoms.calc._connectivity
    atoms.positions += 0.02
    atoms.get_potential_energy()
    assert atoms.calc._connectivity is connectivity  # mapping reused when only positions change


def test_calculator_from_path(ab2_model, tmp_path):
    path = ab2_model.save(tmp_path / "m.npz")
    for atoms in builtin_frames(net=("SOD", "GIS", "LTJ", "OFF"), order="d"):
        atoms.calc = CGGPRCalculator(model_path=path)
        energies = atoms.calc.get_property("energies", atoms)
        assert np.isfinite(atoms.get_potential_energy())
        assert np.isfinite(atoms.calc.results["local_energies"]).all()
        assert len(atoms.calc.results["local_energies"]) == (atoms.symbols == "Zn").sum()
        assert energies.sum() == pytest.approx(atoms.get_potential_energy())
    (yug,) = builtin_frames(net="YUG", order="d")
    atoms = methylated(yug, name="YUG_CH3")
    atoms.calc = CGGPRCalculator(model_path=path)
    with pytest.raises(ModelError, match="YUG_CH3.*unsupported linker.*C4H5N2"):
        atoms.get_potential_energy()


def test_calculator_on_the_authors_zif_cifs(ab2_model, shared_data, tmp_path):
    """The published Zn(Im)2 CIFs (zni, coi, nog, ZIF-1/4/6/8-H) and ZIF-8 (2-methylimidazolate, rejected)."""
    path = ab2_model.save(tmp_path / "m.npz")
    for cif in sorted((shared_data / "zif-structures").glob("*.cif")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atoms = read(cif)
        atoms.info["name"] = cif.name
        atoms.calc = CGGPRCalculator(model_path=path)
        if "CH3" in cif.name:
            with pytest.raises(ModelError, match="ZIF8_CH3.cif.*unsupported linker.*C4H5N2"):
                atoms.get_potential_energy()
            continue
        energies = atoms.calc.get_property("energies", atoms)
        assert np.isfinite(atoms.get_potential_energy())
        assert np.isfinite(atoms.calc.results["local_energies"]).all()
        assert energies.sum() == pytest.approx(atoms.get_potential_energy())


def test_other_metal_rejected(ab2_model, frames):
    atoms = frames[2].copy()
    atoms.symbols[atoms.symbols == "Zn"] = "Co"
    atoms.calc = CGGPRCalculator(ab2_model)
    with pytest.raises(ModelError, match=r"YUG.*trained on metals \['Zn'\].*has metal\(s\) \['Co'\]"):
        atoms.get_potential_energy()


def test_spec_validation():
    with pytest.raises(ModelError, match="cutoff"):
        ModelSpec(representation="AB2", cutoff=-1.0)
    with pytest.raises(ModelError, match="representation"):
        ModelSpec(representation="beads")
    assert ModelSpec(representation="a-only").cutoff == 13.5
    assert ModelSpec.from_dict(ModelSpec(representation="atomistic").to_dict()).atom_sigma == 0.5


def test_ase_plugin_lists_calculator():
    plugins = pytest.importorskip("ase._4.plugins", reason="this ASE has no experimental plugin API")
    names = {p.name for p in plugins.plugins.calculators}
    assert "cggpr" in names
    plugin = next(p for p in plugins.plugins.calculators if p.name == "cggpr")
    assert plugin.implementation is CGGPRCalculator


def test_selected_vectors_equal_full_computation(frames):
    from ase_cggpr import coarse_grain

    model = CGGPRModel(representation="A")
    maps = [coarse_grain(a, "A") for a in frames]
    rows = np.array([0, 3, 15, 20, 40, 47])
    full = model.vectors(maps)
    assert np.array_equal(model.selected_vectors(maps, rows, chunk=1), full[rows])
    assert np.array_equal(model.selected_vectors(maps, rows[3:], chunk=2), full[rows[3:]])
