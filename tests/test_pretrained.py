"""The compact model format (inducing environments as clusters) and the models that ship with the package."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from conftest import builtin_frames

from ase_cggpr import CGGPRModel
from ase_cggpr.calculator import CGGPRCalculator
from ase_cggpr.errors import ModelError
from ase_cggpr.inducing import cluster_vectors, environment_clusters
from ase_cggpr.pretrained import MODELS_DIR, available, card, format_card
from ase_cggpr.spec import ModelSpec

SHIPPED = ("AB2", "A", "atomistic")


@pytest.fixture(scope="module")
def sparse_cg():
    frames = builtin_frames("cg")[:40]
    model = CGGPRModel(representation="AB2", n_max=6, l_max=4, solver="sparse",
                       solver_options={"n_inducing": 150, "seed": 3})
    labels = [a.arrays["e_local"][np.isfinite(a.arrays["e_local"])] for a in frames]
    maps = [model.bead_map(a) for a in frames]
    model.fit_maps(maps, labels)
    return model, maps


def test_cluster_vectors_equal_the_periodic_vectors():
    spec = ModelSpec(representation="AB2", n_max=6, l_max=4)
    from ase_cggpr.descriptors import backend_for

    for atoms in builtin_frames("cg")[:3]:
        centres = np.flatnonzero(atoms.numbers == 14)
        periodic = backend_for(spec).vectors([atoms])
        clusters = environment_clusters(atoms, centres, spec.cutoff)
        assert np.abs(cluster_vectors(clusters, spec) - periodic).max() < 1e-12


def test_compact_file_predicts_what_the_trained_model_predicts(sparse_cg, tmp_path):
    model, maps = sparse_cg
    assert len(model.inducing_clusters_) == 150
    path = model.save(tmp_path / "m.npz")
    with zipfile.ZipFile(path) as archive:
        names = {i.filename for i in archive.infolist()}
    assert "X.npy" not in names and "cluster_positions.npy" in names  # no D-long vectors in the file
    loaded = CGGPRModel.load(path)
    e1, s1 = model.predict_maps(maps, return_std=True)
    e2, s2 = loaded.predict_maps(maps, return_std=True)
    assert np.abs(np.concatenate(e1) - np.concatenate(e2)).max() < 1e-9
    assert np.abs(np.concatenate(s1) - np.concatenate(s2)).max() < 1e-6  # variance factor stored in float32
    assert loaded.metadata_["regression"]["inducing_storage"] == "clusters"
    again = loaded.save(tmp_path / "again.npz")  # a loaded compact model saves compact again
    assert np.abs(np.concatenate(CGGPRModel.load(again).predict_maps(maps)) - np.concatenate(e1)).max() < 1e-9


@pytest.mark.parametrize("damage", ["element", "reach", "size"])
def test_damaged_clusters_are_refused_with_one_line(sparse_cg, tmp_path, damage):
    model, _ = sparse_cg
    path = model.save(tmp_path / "m.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    if damage == "element":
        arrays["cluster_numbers"] = arrays["cluster_numbers"].copy()
        arrays["cluster_numbers"][5] = 30
    elif damage == "reach":
        arrays["cluster_positions"] = arrays["cluster_positions"].copy()
        arrays["cluster_positions"][5] *= 40
    else:
        arrays["cluster_sizes"] = arrays["cluster_sizes"].copy()
        arrays["cluster_sizes"][0] += 1
        arrays["cluster_sizes"][1] -= 1
        arrays["cluster_positions"] = arrays["cluster_positions"].copy()
        arrays["cluster_positions"][arrays["cluster_sizes"][0] - 1] = 1.0  # centre 1 no longer at the origin
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ModelError, match="inducing clusters are invalid") as info:
        CGGPRModel.load(bad)
    assert "\n" not in str(info.value)


def test_unknown_name_says_what_ships(tmp_path):
    with pytest.raises(ModelError, match="not the name of a shipped model"):
        CGGPRModel.load("no-such-model")
    with pytest.raises(ModelError, match="no shipped model"):
        CGGPRCalculator.pretrained("no-such-model")


# -- the shipped models -------------------------------------------------------------------------------------
def test_the_shipped_models_are_there_and_small():
    assert set(SHIPPED) <= set(available())
    total = sum(p.stat().st_size for p in MODELS_DIR.glob("*.npz"))
    # four models (AB2-fast added 9.9 MB: a sparse model's file is mostly its M x M factor; the atomistic model at
    # M = 3,000 inducing environments is about 24 MB: an 18 MB float32 factor and its inducing clusters, issue 31);
    # the wheel must stay far below PyPI's 100 MB default upload limit
    assert total <= 50e6


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_fast_and_has_a_card(name):
    CGGPRModel.load(name)  # the first load computes the clusters' vectors and caches them (cachedir.cache_dir)
    start = time.perf_counter()
    model = CGGPRModel.load(name)
    assert time.perf_counter() - start <= 3.0
    assert model.spec.representation == name
    c = card(name)
    assert c["held_out"]["metrics"]["relaxed"]["frames"] > 0
    assert c["calibration"]["threshold"] > 0
    text = format_card(c)
    assert "held out" in text and "licence" in text


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_predicts_a_real_structure(name):
    atoms = builtin_frames("atomistic")[0]
    atoms.calc = CGGPRCalculator(name)
    energies = atoms.calc.get_property("local_energies", atoms)
    std = atoms.calc.get_property("local_energy_std", atoms)
    assert np.isfinite(energies).all() and (std > 0).all()
    assert np.abs(energies).max() < 2.0  # eV per Zn relative to zni: the labels span about -1 to +1


def test_cli_models_lists_the_cards():
    out = subprocess.run([sys.executable, "-c", "from ase_cggpr.cli import main; main()", "models"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for name in SHIPPED:
        assert f"{name}:" in out.stdout


def test_cli_model_argument_accepts_a_name_and_refuses_garbage(tmp_path):
    run = [sys.executable, "-c", "from ase_cggpr.cli import main; main()"]
    out = subprocess.run([*run, "info", "AB2", "-q"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([*run, "info", "not-a-model"], capture_output=True, text=True)
    assert out.returncode == 2 and "neither a model file nor the name of a shipped model" in out.stderr
