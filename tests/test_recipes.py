"""The shipped models' recipe (:mod:`ase_cggpr.recipes`) on the built-in dataset: frame kinds, the seeded
held-out split and training set, a tiny fitted model's held-out table, and the wrapper script's model card
(no machine path in it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import write
from conftest import SMALL, builtin_frames

from ase_cggpr import recipes
from ase_cggpr.errors import OptionError
from ase_cggpr.model import CGGPRModel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cg_frames():
    return recipes.prepare_frames(builtin_frames("cg"))


def test_frames_are_tagged_with_kind_and_framework_type(cg_frames):
    assert len(cg_frames) == 364
    assert {a.info["kind"] for a in cg_frames} == {"none", "r-d", "d-r"}  # the built-in data has no relaxed frames
    # no framework_type in the built-in frames: each net is its own type
    assert {a.info["framework_type"] for a in cg_frames} == {a.info["net"] for a in cg_frames}
    bad = builtin_frames("cg")[0]
    bad.info["order"] = "sideways"
    with pytest.raises(OptionError, match="info\\['order'\\] is 'sideways'"):
        recipes.prepare_frames([bad])


def test_held_out_split_is_seeded_and_disjoint(cg_frames):
    held, train, test = recipes.held_out_split(cg_frames, "AB2", 50, seed=0)
    assert len(held) == 32 // 5  # at most a fifth of the 32 types
    assert (held, train, test) == recipes.held_out_split(cg_frames, "AB2", 50, seed=0)
    assert recipes.held_out_split(cg_frames, "AB2", 50, seed=1)[0] != held
    assert not {a.info["framework_type"] for a in train} & held
    assert {a.info["framework_type"] for a in test} == held
    assert "d-r" not in {a.info["kind"] for a in test}  # coarse-grained models are never tested on d-r frames
    _, _, test_atomistic = recipes.held_out_split(cg_frames, "atomistic", 50, seed=0)
    assert "d-r" in {a.info["kind"] for a in test_atomistic}


def test_training_set_follows_the_recipe_and_is_seeded(cg_frames):
    _, train, _ = recipes.held_out_split(cg_frames, "AB2", 50, seed=0)
    frames, labels = recipes.training_set(train, "rd+none", {}, n_rd=500, seed=0)
    assert {a.info["kind"] for a in frames} == {"r-d", "none"}
    assert [len(y) for y in labels] == [len(recipes.site_labels(a)) for a in frames]
    n_rd = sum(len(y) for a, y in zip(frames, labels, strict=True) if a.info["kind"] == "r-d")
    largest = max(len(recipes.site_labels(a)) for a in train)
    assert 500 <= n_rd < 500 + largest  # about n_rd environments: whole frames until the count is passed
    again, _ = recipes.training_set(train, "rd+none", {}, n_rd=500, seed=0)
    assert [id(a) for a in again] == [id(a) for a in frames]
    other, _ = recipes.training_set(train, "rd+none", {}, n_rd=500, seed=1)
    assert [id(a) for a in other] != [id(a) for a in frames]
    everything, _ = recipes.training_set(train, "rd+none", {}, n_rd=None, seed=0)
    assert len(everything) == sum(a.info["kind"] in ("r-d", "none") for a in train)
    # no relaxed frames, so no shift: the shifted recipe keeps no r-d frame
    shifted, _ = recipes.training_set(train, "rd-shifted+relaxed", recipes.linker_relaxation_shift(train),
                                      n_rd=None, seed=0)
    assert shifted == []
    with pytest.raises(OptionError, match="unknown recipe 'rd'"):
        recipes.training_set(train, "rd", {}, n_rd=None, seed=0)


def test_no_dr_recipe_and_rattled_test_subsample(cg_frames):
    _, train, test = recipes.held_out_split(cg_frames, "atomistic", 50, seed=0)
    frames, labels = recipes.training_set(train, "rd+none+relaxed", {}, n_rd=None, seed=0)
    assert {a.info["kind"] for a in frames} == {"r-d", "none"}  # no d-r; (no relaxed frames in the built-in data)
    assert all(np.array_equal(y, recipes.site_labels(a)) for a, y in zip(frames, labels, strict=True))  # unshifted
    sub = recipes.subsample_rattled(test, 100, seed=0)
    assert sub == recipes.subsample_rattled(test, 100, seed=0)
    assert [a for a in sub if a.info["kind"] == "none"] == [a for a in test if a.info["kind"] == "none"]
    largest = max(len(recipes.site_labels(a)) for a in test)
    for kind in ("r-d", "d-r"):
        n = sum(len(recipes.site_labels(a)) for a in sub if a.info["kind"] == kind)
        assert 100 <= n < 100 + largest
    assert recipes.subsample_rattled(test, None, seed=0) == list(test)


def test_a_tiny_model_has_a_finite_held_out_table_better_than_the_mean(cg_frames):
    model, report = recipes.train(cg_frames, "AB2", "rd+none", n_rd=1500, inducing=50, seed=0, final="validated",
                                  basis=SMALL)
    held, _, test = recipes.held_out_split(cg_frames, "AB2", 50, seed=0)
    table = report["held_out"]
    assert set(table) == {"none", "r-d"}
    for kind, row in table.items():
        frames = [a for a in test if a.info["kind"] == kind]
        labels = np.concatenate([recipes.site_labels(a) for a in frames])
        assert row["frames"] == len(frames) and row["environments"] == labels.size
        assert np.isfinite([row["rmse"], row["bias"]]).all()
        assert row["rmse"] < labels.std(), (kind, row)  # better than any constant
    assert np.isfinite([report["calibration"][k] for k in ("within_1sigma", "within_2sigma")]).all()
    record = model.training_["held_out_validation"]
    assert record["model"] == "this model" and record["framework_types"] == len(held) and record["seed"] == 0
    assert record["nets"] == sorted({a.info["net"] for a in test})
    assert model.training_["recipe"] == "rd+none" and model.training_["frame_kinds"] == ["none", "r-d"]


def test_totals_target_fits_each_frames_sum_of_labels(cg_frames):
    """``target="totals"`` learns from each frame's sum of the recipe's labels (for labellers whose per-atom split
    is not physical): the held-out energy per Zn of each frame is learnt, and the record says which target."""
    _, train, test = recipes.held_out_split(cg_frames, "AB2", 50, seed=0)
    tr, labels = recipes.training_set(train, "rd+none", {}, n_rd=1500, seed=0)
    model = recipes.fit("AB2", tr, labels, inducing=50, seed=0, basis=SMALL, target="totals")
    assert model.training_["target"] == "totals" and model.training_["labels"] == "total energies"
    assert model.training_["n_structures"] == len(tr)
    means = model.predict_maps([model.bead_map(a) for a in test])
    pred = np.array([m.mean() + model.reference_energy for m in means])
    true = np.array([recipes.site_labels(a).mean() for a in test])
    assert np.sqrt(np.mean((pred - true) ** 2)) < true.std()  # per frame, better than any constant
    with pytest.raises(OptionError, match="unknown target"):
        recipes.fit("AB2", tr, labels, inducing=50, seed=0, basis=SMALL, target="sum")


def test_the_script_records_no_machine_path_in_the_card(tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    frames = builtin_frames("cg")
    write(build / "cg.extxyz", frames, format="extxyz")
    (build / "relaxed_cg.extxyz").write_text("")
    out = tmp_path / "m.npz"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "shipped_models.py"), "train", "--build",
                          str(build), "--recipe", "rd+none", "--n-rd", "500", "--inducing", "20", "--n-max", "4",
                          "--l-max", "2", "--final", "validated", "-o", str(out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    metadata = json.loads(str(np.load(out, allow_pickle=False)["metadata"]))
    assert str(tmp_path) not in json.dumps(metadata)
    training = metadata["training"]
    assert training["command"] == ("python scripts/shipped_models.py train --build BUILD --recipe rd+none --n-rd 500 "
                                   "--inducing 20 --n-max 4 --l-max 2 --final validated -o m.npz")
    assert [f["path"] for f in training["data_files"]] == ["BUILD/cg.extxyz", "BUILD/relaxed_cg.extxyz"]
    assert CGGPRModel.load(out).training_["recipe"] == "rd+none"
    assert training["cost"]["cpu_seconds"] > 0 and training["cost"]["peak_memory_gb"] > 0
    assert "spearman" in training["held_out_validation"]["metrics"]["r-d"]  # every kind ranks its frames
    before = CGGPRModel.load(out).regressor_.alpha_
    note = subprocess.run([sys.executable, str(ROOT / "scripts" / "shipped_models.py"), "use", "-o", str(out),
                           "--text", "ranking only"], capture_output=True, text=True, env=env, timeout=300)
    assert note.returncode == 0, note.stderr
    noted = CGGPRModel.load(out)
    assert noted.training_["use"] == "ranking only" and np.array_equal(noted.regressor_.alpha_, before)
    cost = subprocess.run([sys.executable, str(ROOT / "scripts" / "shipped_models.py"), "use", "-o", str(out),
                           "--cost", "1400", "3600", "3.5"], capture_output=True, text=True, env=env, timeout=300)
    assert cost.returncode == 0, cost.stderr
    costed = CGGPRModel.load(out).training_
    assert costed["cost"]["cpu_seconds"] == 1400 and costed["use"] == "ranking only"
    unknown = subprocess.run([sys.executable, str(ROOT / "scripts" / "shipped_models.py"), "use", "-o", str(out),
                              "--cost", "unknown", "3600", "3.5"], capture_output=True, text=True, env=env, timeout=300)
    assert unknown.returncode == 0, unknown.stderr
    assert CGGPRModel.load(out).training_["cost"]["cpu_seconds"] is None  # not recorded: the card says unknown
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "shipped_models.py"), "train", "--build",
                          str(tmp_path / "missing"), "-o", str(tmp_path / "x.npz")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ") and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("name", ["AB2", "A", "atomistic"])
def test_shipped_cards_record_no_machine_path(name):
    with np.load(ROOT / "ase_cggpr" / "models" / f"{name}.npz", allow_pickle=False) as handle:
        training = json.loads(str(handle["metadata"]))["training"]
    assert all(f["path"].startswith("BUILD/") for f in training["data_files"])
    assert training["command"].startswith("python scripts/shipped_models.py train --build BUILD ")
    assert not any(word.startswith("/") for word in training["command"].split())
