"""End-to-end CLI runs on real files (click's CliRunner; the console script is a thin layer over it)."""

import numpy as np
import pytest
from ase.io import read, write
from click.testing import CliRunner
from conftest import methylated, net_frames

from ase_cggpr.cli import main


@pytest.fixture(scope="module")
def labelled_files(tmp_path_factory):
    """train.xyz (2 frames) and test.xyz (1) from the built-in data: three 16-Zn frames of net YUG with one
    info['topology'] and their own structure_id, per-atom MOF-FF energies in the array 'energy'; and
    YUG_CH3.xyz, the test frame with 2-methylimidazolate linkers (C4H5N2, which no model here has seen)."""
    folder = tmp_path_factory.mktemp("cli")
    frames = net_frames("atomistic")
    for atoms in frames:
        atoms.arrays["energy"] = atoms.calc.results["energies"]
        atoms.calc = None
        del atoms.info["name"]  # structures are then named after their file
    write(folder / "train.xyz", frames[:2])
    write(folder / "test.xyz", frames[2:])
    write(folder / "YUG_CH3.xyz", methylated(frames[2]))
    return folder


def run(args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_train_predict_end_to_end(labelled_files):
    folder = labelled_files
    model = folder / "ab2.npz"
    args = ["train", folder / "train.xyz", folder / "test.xyz", "-o", model, "--label-key", "energy",
            "--test-fraction", "0.34", "--quiet"]
    result = run(args)  # the frames share info topology=YUG: one group, nothing to hold out
    assert result.exit_code == 1 and "at least two structure groups" in result.output
    result = run([*args, "--group-key", "structure_id"])
    assert result.exit_code == 0, result.output
    from ase_cggpr import CGGPRModel

    calibration = CGGPRModel.load(model).calibration_  # held-out calibration stored for screening
    assert calibration["n_environments"] == 16 and calibration["threshold"] > 0
    result = run(["train", folder / "train.xyz", "-o", model, "--label-key", "energy"])
    assert result.exit_code == 1 and "exists" in result.output  # never overwrite silently
    result = run(["train", folder / "train.xyz", "-o", model, "--label-key", "energy", "--force"])
    assert result.exit_code == 0 and "training environments: 32" in result.output
    out = folder / "pred.xyz"
    result = run(["predict", model, folder / "test.xyz", "-o", out])
    assert result.exit_code == 0, result.output
    assert "test.xyz" in result.output
    predicted = read(out)
    zn = predicted.symbols == "Zn"
    local = predicted.arrays["cggpr_local_energy"]
    assert np.isfinite(local[zn]).all() and np.isnan(local[~zn]).all()
    assert predicted.info["cggpr_energy"] == pytest.approx(local[zn].sum())
    assert np.all(predicted.arrays["cggpr_local_energy_std"][zn] > 0)
    result = run(["info", model])
    assert '"representation": "AB2"' in result.output


def test_coarse_grain_command(labelled_files):
    out = labelled_files / "beads.xyz"
    result = run(["coarse-grain", labelled_files / "test.xyz", "-o", out])
    assert result.exit_code == 0, result.output
    beads = read(out)
    assert beads.get_chemical_formula() == "O32Si16"


def test_cli_errors_are_one_line(labelled_files):
    folder = labelled_files
    result = run(["train", folder / "train.xyz", "-o", folder / "x.npz", "--label-key", "nonexistent"])
    assert result.exit_code == 1
    assert "no per-atom label array 'nonexistent'" in result.output and "Traceback" not in result.output
    model = folder / "a.npz"
    assert run(["train", folder / "train.xyz", "-o", model, "--label-key", "energy", "-q",
                "--representation", "A"]).exit_code == 0
    cobalt = read(folder / "test.xyz")
    cobalt.symbols[cobalt.symbols == "Zn"] = "Co"
    write(folder / "co.xyz", cobalt)
    result = run(["predict", model, folder / "co.xyz"])
    assert result.exit_code == 1 and "trained on metals ['Zn']" in result.output and "['Co']" in result.output
    result = run(["predict", model, folder / "YUG_CH3.xyz"])
    assert result.exit_code == 1 and "unsupported linker" in result.output
