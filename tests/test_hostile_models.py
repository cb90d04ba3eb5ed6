"""Hostile and corrupt model files: each is one clear ModelError naming the file and the problem.

Every tampered file is built here from a small model trained on the built-in coarse-grained data (no
../shared): the good model is saved, then its .npz is rewritten with tampered members (raw .npy bytes,
metadata JSON, zip container). Loading must fail with one ModelError line before anything is trusted, and
``cggpr info FILE`` must print one line and exit 1. A NaN prediction is an error naming the structure.
"""

from __future__ import annotations

import io
import json
import math
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ase.io import read
from click.testing import CliRunner

from ase_cggpr import CGGPRModel
from ase_cggpr.cli import main
from ase_cggpr.errors import ModelError
from ase_cggpr.io import default_dataset_path

N_TRAIN = 200


@pytest.fixture(scope="module")
def frames():
    return read(default_dataset_path("cg"), ":24")


@pytest.fixture(scope="module")
def good(frames, tmp_path_factory):
    """A small fitted AB2 model (200 environments, n_max 4, l_max 2; D = 108) and its saved file."""
    model = CGGPRModel(representation="AB2", n_max=4, l_max=2)
    model.fit(frames[:20], label_key="e_local", n_train=N_TRAIN, seed=0)
    path = model.save(tmp_path_factory.mktemp("good") / "good.npz")
    return model, path


# -- building tampered files ------------------------------------------------------------------------------------
def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def npy(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def array_of(raw: bytes) -> np.ndarray:
    return np.load(io.BytesIO(raw), allow_pickle=False)


def write_zip(path: Path, content: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in content.items():
            archive.writestr(name, data)
    return path


def with_arrays(**changes):
    """A builder replacing (array -> new array) or dropping (None) members."""
    def build(src: Path, dst: Path) -> Path:
        content = members(src)
        for name, change in changes.items():
            key = f"{name}.npy"
            if change is None:
                del content[key]
            else:
                content[key] = npy(change(array_of(content[key])))
        return write_zip(dst, content)
    return build


def with_metadata(change):
    """A builder applying ``change(meta) -> meta`` (a dict, or any JSON value) to the metadata."""
    def build(src: Path, dst: Path) -> Path:
        content = members(src)
        meta = json.loads(str(array_of(content["metadata.npy"])))
        content["metadata.npy"] = npy(np.array(json.dumps(change(meta))))
        return write_zip(dst, content)
    return build


def set_field(dotted: str, value):
    def change(meta):
        *parents, last = dotted.split(".")
        node = meta
        for key in parents:
            node = node[key]
        node[last] = value
        return meta
    return change


def del_field(dotted: str):
    def change(meta):
        *parents, last = dotted.split(".")
        node = meta
        for key in parents:
            node = node[key]
        del node[last]
        return meta
    return change


def both_zeta(value):
    def change(meta):
        meta["spec"]["zeta"] = meta["regression"]["zeta"] = value
        return meta
    return change


def raw_bytes(transform):
    def build(src: Path, dst: Path) -> Path:
        dst.write_bytes(transform(src.read_bytes()))
        return dst
    return build


def with_member(name: str, data):
    def build(src: Path, dst: Path) -> Path:
        content = members(src)
        content[name] = data(content) if callable(data) else data
        return write_zip(dst, content)
    return build


def with_member_set(extra: dict[str, bytes]):
    def build(src: Path, dst: Path) -> Path:
        return write_zip(dst, {**members(src), **extra})
    return build


def header_claims(shape):
    """X.npy keeps its data but its header claims another shape (e.g. 10^12 rows)."""
    def data(content):
        raw = content["X.npy"]
        X = array_of(raw)
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
        return header.getvalue() + X.tobytes()
    return with_member("X.npy", data)


def flip_byte_in(member: str):
    """Flip one data byte of a stored member in the raw zip: the CRC no longer matches."""
    def transform(raw: bytes) -> bytes:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            info = archive.getinfo(member)
        name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
        position = info.header_offset + 30 + name_length + extra_length + 200 + 5
        data = bytearray(raw)
        data[position] ^= 0xFF
        return bytes(data)
    return raw_bytes(transform)


def cut_lm(L):
    return L[:56, :56]


def nan_at(index):
    def change(a):
        a = a.copy()
        a.flat[index] = np.nan
        return a
    return change


def bad_directory(src: Path, dst: Path) -> Path:
    dst.mkdir()
    return dst


CASES = {
    # tampered arrays
    "L cut to 56 x 56": (with_arrays(L=cut_lm), "array L has shape (56, 56); the metadata implies (200, 200)"),
    "alpha NaN": (with_arrays(alpha=nan_at(3)), "array alpha contains NaN or inf"),
    "X inf": (with_arrays(X=nan_at(17)), "array X contains NaN or inf"),
    "L NaN": (with_arrays(L=nan_at(0)), "array L contains NaN or inf"),
    "X scaled": (with_arrays(X=lambda X: 2 * X), "has squared norm 4"),
    "L scaled": (with_arrays(L=lambda L: 1.01 * L), "does not factor the kernel"),
    "L not triangular": (with_arrays(L=lambda L: L + np.triu(np.full_like(L, 1e-3), 1)), "not lower-triangular"),
    "L negative diagonal": (with_arrays(L=lambda L: -L), "non-positive diagonal"),
    "X float32": (with_arrays(X=lambda X: X.astype(np.float32)), "array X has dtype float32; expected <f8"),
    "alpha 2-d": (with_arrays(alpha=lambda a: a[:, None]), "array alpha has shape (200, 1)"),
    "no X": (with_arrays(X=None), "the archive has no array X"),
    "no alpha": (with_arrays(alpha=None), "the archive has no array alpha"),
    "X of pickled objects": (with_member("X.npy", npy(np.array([{"a": 1}], dtype=object), allow_pickle=True)),
                             "member X.npy holds Python objects"),
    "X header claims 10^12 rows": (header_claims((10**12, 108)), "its header claims shape (1000000000000, 108)"),
    "X header claims fewer rows": (header_claims((100, 108)), "its header claims shape (100, 108)"),
    "X bytes flipped (CRC)": (flip_byte_in("X.npy"), "member X.npy is corrupt (BadZipFile: Bad CRC-32"),
    "1000 extra members": (with_member_set({f"a{k}.npy": npy(np.zeros(1)) for k in range(1000)}),
                           "the archive holds 1,004 members"),
    "extra member of text": (with_member("notes.npy", npy(np.array(["hello"]))), "array notes has dtype <U5"),
    "member with a path": (with_member("../evil.npy", b"x"), "unexpected member '../evil.npy'"),
    # container
    "0-byte file": (raw_bytes(lambda raw: b""), "the file is empty (0 bytes)"),
    "truncated to half": (raw_bytes(lambda raw: raw[: len(raw) // 2]), "not a valid .npz (zip) archive"),
    "truncated by 10 bytes": (raw_bytes(lambda raw: raw[:-10]), "not a valid .npz (zip) archive"),
    "text file": (raw_bytes(lambda raw: b"hello, I am not a model\n"), "not a valid .npz (zip) archive"),
    "a directory": (bad_directory, "it is a directory"),
    "no metadata": (with_arrays(metadata=None), "the archive holds no metadata"),
    "metadata not JSON": (with_member("metadata.npy", npy(np.array("{format: 1"))), "the metadata is not valid JSON"),
    "metadata a 2-element array": (with_member("metadata.npy", npy(np.array(["{}", "{}"]))), "not a JSON string"),
    "metadata numbers": (with_member("metadata.npy", npy(np.zeros(3))), "not a JSON string"),
    # metadata fields
    "metadata a JSON list": (with_metadata(lambda meta: [meta]), "the metadata is a list, not an object"),
    "format other": (with_metadata(set_field("format", "npz")), "metadata field format is 'npz'"),
    "format_version '2'": (with_metadata(set_field("format_version", "2")),
                           "metadata field format_version must be an integer >= 1, got '2'"),
    "format_version null": (with_metadata(set_field("format_version", None)),
                            "metadata field format_version must be an integer >= 1, got None"),
    "format_version 1.0": (with_metadata(set_field("format_version", 1.5)), "format_version must be an integer"),
    "format_version future": (with_metadata(set_field("format_version", 99)), "version 99"),
    "no format_version": (with_metadata(del_field("format_version")), "has no field format_version"),
    "no spec": (with_metadata(del_field("spec")), "the metadata has no field spec"),
    "spec a string": (with_metadata(set_field("spec", "AB2")), "metadata field spec must be an object"),
    "spec.cutoff 'abc'": (with_metadata(set_field("spec.cutoff", "abc")), "spec.cutoff must be a finite number"),
    "spec.n_max 4.5": (with_metadata(set_field("spec.n_max", 4.5)), "spec.n_max must be an integer"),
    "spec.representation 7": (with_metadata(set_field("spec.representation", 7)),
                              "spec.representation must be a string"),
    "spec.representation XYZ": (with_metadata(set_field("spec.representation", "XYZ")),
                                "unknown representation 'XYZ'"),
    "spec.noise negative": (with_metadata(set_field("spec.noise", -0.2)), "metadata field spec: noise must be"),
    "spec without cutoff": (with_metadata(del_field("spec.cutoff")), "has no field spec.cutoff"),
    "spec unknown field": (with_metadata(set_field("spec.colour", "red")), "unknown model-spec fields"),
    "spec.n_max changed": (with_metadata(set_field("spec.n_max", 5)),
                           "array X has shape (200, 108); the metadata implies (200, 165)"),
    # refused by the spec's bound on zeta, or else by the loader's overflow check
    "zeta 10^6": (with_metadata(both_zeta(10**6)), ("spec: zeta must be", "zeta 1000000 with offset 1.0")),
    "offset 10^30": (with_metadata(set_field("spec.offset", 1e30)), ("spec: offset must be", "beyond float64")),
    "regression.zeta differs": (with_metadata(set_field("regression.zeta", 10**6)),
                                "regression.zeta = 1000000 differs from spec.zeta = 4"),
    "regression.noise differs": (with_metadata(set_field("regression.noise", 1e-9)), "differs from spec.noise"),
    "regression.mean NaN": (with_metadata(set_field("regression.mean", math.nan)),
                            "regression.mean must be a finite number, got nan"),
    "regression.mean missing": (with_metadata(del_field("regression.mean")), "has no field regression.mean"),
    "regression.block_size 0": (with_metadata(set_field("regression.block_size", 0)),
                                "regression.block_size must be an integer between 1 and"),
    "regression.block_size '2048'": (with_metadata(set_field("regression.block_size", "2048")),
                                     "regression.block_size must be an integer"),
    "regression.kind unknown": (with_metadata(set_field("regression.kind", "magic")), "regression.kind is 'magic'"),
    "regression.precision unknown": (with_metadata(set_field("regression.precision", "half")),
                                     "regression.precision must be one of"),
    "regression a list": (with_metadata(set_field("regression", [])), "regression must be an object, got a list"),
    "no metals": (with_metadata(del_field("metals")), "the metadata has no field metals"),
    "metals empty": (with_metadata(set_field("metals", [])), "metals must be a non-empty list"),
    "metals a string": (with_metadata(set_field("metals", "Zn")), "metals must be a non-empty list of names"),
    "linkers of numbers": (with_metadata(set_field("linkers", [1, 2])), "linkers must be a list of names"),
    "reference_energy 'abc'": (with_metadata(set_field("reference_energy", "abc")),
                               "reference_energy must be a finite number, got 'abc'"),
    "reference_energy inf": (with_metadata(set_field("reference_energy", math.inf)),
                             "reference_energy must be a finite number, got inf"),
    "no reference_energy": (with_metadata(del_field("reference_energy")), "has no field reference_energy"),
    "training a list": (with_metadata(set_field("training", [])), "training must be an object, got a list"),
    "training.n_environments 201": (with_metadata(set_field("training.n_environments", 201)),
                                    "array X has shape (200, 108); the metadata implies (201, 108)"),
    "training.n_environments 10^12": (with_metadata(set_field("training.n_environments", 10**12)),
                                      "array X has shape (200, 108); the metadata implies (1000000000000, 108)"),
    "training.n_environments '200'": (with_metadata(set_field("training.n_environments", "200")),
                                      "training.n_environments must be an integer >= 1"),
    "training.label_std inf": (with_metadata(set_field("training.label_std", math.inf)),
                               "training.label_std must be a finite number >= 0.0, got inf"),
    "calibration a string": (with_metadata(set_field("calibration", "good")), "calibration must be an object or null"),
    "calibration.threshold 'abc'": (with_metadata(set_field("calibration", {"threshold": "abc"})),
                                    "calibration.threshold must be a positive finite number"),
    "calibration.threshold -1": (with_metadata(set_field("calibration", {"threshold": -1})),
                                 "calibration.threshold must be a positive finite number"),
    "calibration without threshold": (with_metadata(set_field("calibration", {"rmse": 0.1})),
                                      "has no field calibration.threshold"),
    "package_version a number": (with_metadata(set_field("package_version", 1)), "package_version must be a string"),
}


def as_alternatives(expected: str | tuple[str, ...]) -> tuple[str, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_model_is_one_clear_error(case, good, tmp_path):
    build, expected = CASES[case]
    bad = build(good[1], tmp_path / "bad.npz")
    with pytest.raises(ModelError) as caught:
        CGGPRModel.load(bad)
    message = str(caught.value)
    assert message.startswith(f"cannot load model {bad}: "), message
    assert any(e in message for e in as_alternatives(expected)), message
    assert "\n" not in message and len(message) < 400


@pytest.mark.parametrize("case", [c for c in CASES if c != "a directory"])
def test_cli_info_on_hostile_model_prints_one_line(case, good, tmp_path):
    build, expected = CASES[case]
    bad = build(good[1], tmp_path / "bad.npz")
    result = CliRunner().invoke(main, ["info", str(bad)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot load model"), lines
    assert any(e in lines[0] for e in as_alternatives(expected)), lines
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, TypeError))


def test_missing_model_is_a_model_error_and_a_file_not_found_error(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(ModelError, match=f"cannot load model {missing}: no such file") as caught:
        CGGPRModel.load(missing)
    assert isinstance(caught.value, FileNotFoundError)


def test_good_model_loads_and_predicts_the_same(good, frames):
    model, path = good
    loaded = CGGPRModel.load(path)
    mean, std = loaded.predict(frames[22], return_std=True)
    ref_mean, ref_std = model.predict(frames[22], return_std=True)
    assert np.array_equal(mean, ref_mean) and np.array_equal(std, ref_std)
    assert np.all(np.isfinite(mean)) and np.all(std > 0)
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 0 and json.loads(result.output)["training"]["n_environments"] == N_TRAIN


@pytest.mark.parametrize("solver, options", [("exact", {"precision": "mixed"}), ("sparse", {"n_inducing": 60})])
def test_other_solvers_load_and_their_factors_are_checked(solver, options, frames, tmp_path):
    model = CGGPRModel(representation="AB2", n_max=4, l_max=2, solver=solver, solver_options=options)
    model.fit(frames[:20], label_key="e_local", n_train=N_TRAIN, seed=0)
    model.inducing_clusters_ = None  # the vectors format (the compact one is tested in test_pretrained.py)
    path = model.save(tmp_path / "m.npz")
    loaded = CGGPRModel.load(path)
    assert np.array_equal(loaded.predict(frames[22]), model.predict(frames[22]))
    name = "L" if solver == "exact" else "Lm"
    tampered = with_arrays(**{name: lambda L: (1.02 * L).astype(L.dtype)})(path, tmp_path / "bad.npz")
    with pytest.raises(ModelError, match=f"the Cholesky factor {name} does not factor the kernel"):
        CGGPRModel.load(tampered)
    if solver == "sparse":
        one_factor = with_arrays(La=None)(path, tmp_path / "one.npz")
        with pytest.raises(ModelError, match="only one of its factors"):
            CGGPRModel.load(one_factor)


def test_zip_bomb_is_refused_from_its_header_before_reading(good, tmp_path):
    """A ~0.5 MB npz whose X inflates to 128 MB: refused from the .npy header and the metadata, unread."""
    content = members(good[1])
    rows = (128 << 20) // (108 * 8)
    bad = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, data in content.items():
            if name != "X.npy":
                archive.writestr(name, data)
        with archive.open("X.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array_header_1_0(handle, {"descr": "<f8", "fortran_order": False,
                                                          "shape": (rows, 108)})
            zeros = bytes(108 * 8 * 4096)
            for start in range(0, rows, 4096):
                handle.write(zeros[: 108 * 8 * (min(rows, start + 4096) - start)])
    assert bad.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match=r"array X has shape \(155344, 108\); the metadata implies \(200, 108\)"):
            CGGPRModel.load(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # nothing near the 128 MB the member inflates to was allocated


def test_arrays_larger_than_memory_are_refused(good, monkeypatch):
    import ase_cggpr.model_file as model_module

    monkeypatch.setattr(model_module, "_physical_memory", lambda: 100_000)
    with pytest.raises(ModelError, match=r"its arrays need 0\.\d GB, more than this machine's memory"):
        CGGPRModel.load(good[1])


def test_nan_prediction_is_an_error_naming_the_structure(good, frames):
    model = CGGPRModel.load(good[1])
    model.regressor_.alpha_[5] = np.nan  # corrupted in memory after the load checks
    with pytest.raises(ModelError, match=r"structure '.*': the model predicted a non-finite energy"):
        model.predict(frames[22])
    from ase_cggpr import CGGPRCalculator

    atoms = frames[22].copy()
    atoms.calc = CGGPRCalculator(model=model)
    with pytest.raises(ModelError, match="non-finite energy"):
        atoms.get_potential_energy()
    with pytest.raises(ModelError, match="non-finite energy"):  # the forces path predicts on its own
        atoms.get_forces()
    overflowing = CGGPRModel.load(good[1])
    overflowing.regressor_.zeta = 2000  # (1 + x.x')^2000 overflows float64: inf - inf = NaN
    with pytest.raises(ModelError, match="non-finite"):
        overflowing.predict(frames[22], return_std=True)


def test_interrupted_save_leaves_nothing_and_existing_files_are_kept(good, tmp_path, monkeypatch):
    model, path = good
    target = tmp_path / "m.npz"
    import ase_cggpr.outputs as outputs

    def interrupted(tmp, final, *, force):
        assert tmp.stat().st_size > 100_000  # the temporary file was written in full: now Ctrl-C
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(outputs, "publish", interrupted)
        with pytest.raises(KeyboardInterrupt):
            model.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no m.npz, no temporary, no lock
    saved = model.save(target)
    before = saved.read_bytes()
    with pytest.raises(FileExistsError):
        model.save(target)
    assert saved.read_bytes() == before
    model.save(target, overwrite=True)
    assert CGGPRModel.load(target).training_["n_environments"] == N_TRAIN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_save_refuses_non_finite_metadata(good, tmp_path):
    model = CGGPRModel.load(good[1])
    model.training_ = {**model.training_, "label_std": math.inf}
    with pytest.raises(ModelError, match="metadata holds NaN or inf"):
        model.save(tmp_path / "inf.npz")
    assert not list(tmp_path.iterdir())


def test_saved_model_records_hyperparameters_data_and_version(frames, tmp_path):
    import hashlib

    from ase.io import write

    from ase_cggpr import __version__
    from ase_cggpr.training import train_model

    data = tmp_path / "train.extxyz"
    write(data, frames[:20])
    model, _ = train_model([data], representation="AB2", label_key="e_local", n_max=4, l_max=2, n_train=150,
                           seed=3, reference="none")
    path = model.save(tmp_path / "m.npz")
    meta = CGGPRModel.load(path).metadata_
    assert meta["package_version"] == __version__ and meta["format_version"] == 1
    assert meta["spec"] == model.spec.to_dict() and meta["spec"]["n_max"] == 4
    assert meta["regression"]["noise"] == 0.2 and meta["solver"] == "exact" and meta["solver_options"] == {}
    training = meta["training"]
    assert (training["n_train"], training["seed"], training["n_environments"]) == (150, 3, 150)
    assert training["n_candidate_environments"] == sum((a.symbols == "Si").sum() for a in frames[:20])
    assert training["label_key"] == "e_local" and training["target"] == "local"
    assert training["files"] == [{"path": str(data.resolve()), "bytes": data.stat().st_size,
                                  "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}]


def test_sigint_during_repeated_saves_leaves_only_complete_models(good, tmp_path):
    """A real Ctrl-C (SIGINT) at an arbitrary moment of a save loop: every file left is a complete model."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "saver.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from ase_cggpr import CGGPRModel\n"
        "model = CGGPRModel.load(sys.argv[1])\n"
        "out = Path(sys.argv[2])\n"
        "model.save(out / 'm0.npz')\n"
        "print('ready', flush=True)\n"
        "for k in range(1, 10**6):\n"
        "    model.save(out / f'm{k}.npz')\n")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(script), str(good[1]), str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0 and "KeyboardInterrupt" in stderr
    left = sorted(out.iterdir())
    assert [p.name for p in left if p.name.startswith(".") or "part" in p.name] == []  # no temporary, no lock
    assert len(left) >= 2
    for path in left:
        assert CGGPRModel.load(path).training_["n_environments"] == N_TRAIN
