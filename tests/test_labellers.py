"""Labellers (``ase_cggpr.labellers``): MOF-FF (default) and ACE through python-ace, for ``cggpr label`` and
``cggpr dataset build``; provenance in the labels; relaxed stores kept apart per labeller; a missing engine stops
at once with its install hint.

The ACE tests run the real potential (``../shared/data/ace/zif-ace-24.yaml``) with python-ace when it is installed.
python-ace is under a non-commercial licence, so it is an optional extra (``pip install '.[ace]'``) that README
command 2 does not install: those tests skip, saying so, when it is absent.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write
from click.testing import CliRunner
from conftest import builtin_frames

from ase_cggpr.beads import find_connectivity
from ase_cggpr.cli import main
from ase_cggpr.dataset import ZNI_REFERENCE_ENERGY, BuildConfig, analyse_net, build_dataset, build_net, scale_net
from ase_cggpr.dataset.config import IDEAL_LINKERS_FILE, im_geometry_of
from ase_cggpr.dataset.decorate import IDEAL_LINKER, IM_GEOMETRY, ideal_linker, measure_im_geometry
from ase_cggpr.dataset.pipeline import NetFiles, decorate_for, relaxed_store_folder, restore_relaxed, store_relaxed
from ase_cggpr.errors import OptionError
from ase_cggpr.labellers import ACELabeller, MOFFFLabeller, ase_relax, labeller_from_calculator, labeller_from_spec
from ase_cggpr.linker_geometry import linker_rmsd

HAVE_PYACE = importlib.util.find_spec("pyace") is not None
HAVE_LAMMPS = importlib.util.find_spec("lammps") is not None
needs_pyace = pytest.mark.skipif(
    not HAVE_PYACE, reason="python-ace is not installed: it is the optional extra 'ace' (non-commercial licence), "
                           "which README command 2 does not install; pip install '.[ace]' to run these tests")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def potential(shared_data) -> Path:
    path = shared_data / "ace" / "zif-ace-24.yaml"
    if not path.is_file():
        pytest.skip(f"the ACE potential is not at {path}")
    return path


@pytest.fixture(scope="module")
def frames() -> list:
    """Two built-in 16-Zn frames of net YUG (272 atoms), unlabelled."""
    out = builtin_frames("atomistic", net="YUG", order=("d", "r-d"), rattle=("none", "small"), batch=(0, 1))[:2]
    for atoms in out:
        atoms.calc = None
    return out


def sod_net():
    from ase.spacegroup import crystal

    sio2 = crystal(["Si", "O"], basis=[(0.25, 0.5, 0.0), (0.1467, 0.5, 0.8533)], spacegroup=229,
                   cellpar=[8.965, 8.965, 8.965, 90, 90, 90])
    return scale_net(analyse_net(sio2, name="SOD"))


# -- specs ---------------------------------------------------------------------------------------------------------

def test_mofff_is_the_default_and_unchanged():
    assert isinstance(labeller_from_spec(None), MOFFFLabeller) and labeller_from_spec("mofff").name == "mofff"
    config = BuildConfig()
    assert config.labeller == "mofff" and config.reference_energy == ZNI_REFERENCE_ENERGY
    assert config.to_dict()["labeller"] == {"labeller": "mofff"}
    assert relaxed_store_folder("Im") == "relaxed" and relaxed_store_folder("mIm", "mofff") == "relaxed-mIm"


@pytest.mark.parametrize("spec, message", [
    ("gap", "unknown labeller 'gap'; use mofff (the default) or ace:PATH"),
    ("ace", "labeller 'ace' needs the potential file: --labeller ace:PATH"),
    ("ace:", "labeller 'ace' needs the potential file"),
    ("ace:/nonexistent/zif.yaml", "ACE potential file /nonexistent/zif.yaml not found"),
])
def test_bad_spec_is_one_clear_line(spec, message, tmp_path):
    with pytest.raises(OptionError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        labeller_from_spec(spec)
    src = tmp_path / "in.extxyz"
    write(src, builtin_frames("atomistic", net="YUG", order="d")[:1])
    result = CliRunner().invoke(main, ["label", str(src), "-o", str(tmp_path / "out.extxyz"), "--labeller", spec])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output and not (tmp_path / "out.extxyz").exists()


def test_calculator_without_per_atom_energies_is_refused():
    from ase.calculators.calculator import Calculator

    class TotalOnly(Calculator):
        implemented_properties = ["energy"]

    with pytest.raises(OptionError, match="TotalOnly does not implement per-atom 'energies'"):
        labeller_from_calculator(TotalOnly())


# -- a missing engine stops at once (issue 28) ----------------------------------------------------------------------

@pytest.mark.parametrize("blocked, extra", [("lammps", []), ("pyace", ["--labeller", "ace:{potential}"])])
def test_dataset_build_without_its_engine_stops_with_the_install_hint(blocked, extra, tmp_path, potential):
    cif = tmp_path / "nets" / "SOD.cif"
    cif.parent.mkdir()
    write(cif, builtin_frames("atomistic", net="YUG", order="d")[0])  # any file: nothing may be read
    out = tmp_path / "out"
    args = ["dataset", "build", str(cif.parent), "-o", str(out), "-q",
            *[a.format(potential=potential) for a in extra]]
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            "from ase_cggpr.cli import main\n"
            f"sys.argv = ['cggpr', *{args!r}]\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    hint = "pip install 'ase-cggpr[lammps]'" if blocked == "lammps" else "pip install 'ase-cggpr[ace]'"
    assert proc.returncode == 1, proc.stderr
    assert hint in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()  # nothing written


# -- ACE -------------------------------------------------------------------------------------------------------------

@needs_pyace
def test_ace_labels_sum_to_the_total_and_record_the_potential(potential, frames):
    from pyace import PyACECalculator

    labeller = labeller_from_spec(f"ace:{potential}")
    assert isinstance(labeller, ACELabeller)
    sha = hashlib.sha256(potential.read_bytes()).hexdigest()
    assert labeller.provenance() == {"labeller": "ace", "potential": "zif-ace-24.yaml", "sha256": sha}
    assert labeller.spec == f"ace:{potential.resolve()}" and labeller_from_spec(labeller.spec) is labeller
    labelled = labeller.label([a.copy() for a in frames])
    direct = PyACECalculator(str(potential))
    for atoms in labelled:
        assert atoms.arrays["energies"].sum() == pytest.approx(atoms.info["energy"], abs=1e-6)
        assert atoms.info["labeller_sha256"] == sha and atoms.info["labeller_potential"] == "zif-ace-24.yaml"
        check = atoms.copy()
        check.calc = direct
        assert np.allclose(check.get_potential_energies(), atoms.arrays["energies"], atol=1e-9)
    # the two frames differ (a rattled frame): the labels are per structure, not cached
    assert labelled[0].info["energy"] != labelled[1].info["energy"]
    # a calculator object from Python labels the same
    same = labeller_from_calculator(direct, name="ace", potential=potential).label([a.copy() for a in frames])
    assert [a.info["energy"] for a in same] == pytest.approx([a.info["energy"] for a in labelled], abs=1e-9)
    assert same[0].info["labeller_sha256"] == sha


@needs_pyace
def test_cggpr_label_with_ace_writes_labelled_frames(potential, frames, tmp_path):
    src, out = tmp_path / "in.extxyz", tmp_path / "out.extxyz"
    write(src, frames)
    result = CliRunner().invoke(main, ["label", str(src), "-o", str(out), "--labeller", f"ace:{potential}"])
    assert result.exit_code == 0, result.output
    assert "labelled 2 of 2 structures" in result.output
    labelled = read(out, ":")
    sha = hashlib.sha256(potential.read_bytes()).hexdigest()
    for atoms in labelled:
        assert atoms.info["labeller"] == "ace" and atoms.info["labeller_sha256"] == sha
        results = getattr(atoms.calc, "results", {})  # ASE's reader moves energy columns into a calculator
        energies, energy = atoms.arrays.get("energies", results.get("energies")), results.get("energy")
        assert energies is not None and energies.sum() == pytest.approx(energy, abs=1e-5)
        assert energy / 16 < -100  # ACE's total energies (about -116 eV per Zn(Im)2 unit)
    assert not list(tmp_path.glob("*zif-ace*"))  # the potential is read where it is, never copied


@needs_pyace
def test_ace_relax_reports_what_it_reached(potential, frames):
    """A few optimiser steps: energy goes down, the result says NOT converged, and its numbers are checked."""
    labeller = labeller_from_spec(f"ace:{potential}")
    atoms = frames[1].copy()  # a rattled frame
    calc = labeller.make_calculator()
    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    result = ase_relax(frames[1], calc, cell=True, max_steps=4)
    assert not result.converged and result.message.startswith("NOT converged") and " s: " in result.message
    assert result.atoms.get_potential_energy() < e0
    assert result.atoms.calc.results["energies"].sum() == pytest.approx(result.atoms.get_potential_energy())
    assert result.max_force == pytest.approx(np.linalg.norm(result.atoms.get_forces(), axis=1).max())
    assert 0 < result.n_steps <= 12 and not np.allclose(result.atoms.cell, frames[1].cell)


@needs_pyace
def test_ace_build_config_manifest_and_store_are_its_own(potential, tmp_path):
    config = BuildConfig(labeller=f"ace:{potential}", batches=1, levels=("small",))
    sha = hashlib.sha256(potential.read_bytes()).hexdigest()
    assert config.reference_energy == pytest.approx(-116.080449)  # ACE's zni, not MOF-FF's
    assert config.to_dict()["labeller"] == {"labeller": "ace", "potential": "zif-ace-24.yaml", "sha256": sha}
    assert str(potential) not in json.dumps(config.to_dict())  # the manifest does not depend on where it is
    assert relaxed_store_folder("Im", config.labeller) == f"relaxed-ace-{sha[:12]}"
    # a MOF-FF store is never restored into an ACE build
    net = sod_net()
    mofff_build, store = tmp_path / "mofff", tmp_path / "store"
    files = NetFiles.of(mofff_build, net.name)
    files.relaxed.parent.mkdir(parents=True)
    write(files.relaxed, decorate_for(net, BuildConfig()).atoms)
    assert store_relaxed(mofff_build, store, BuildConfig()) == 1
    assert restore_relaxed(store, tmp_path / "ace", config) == 0
    # a MOF-FF relaxation found in an ACE build folder is refused, not used (before any work)
    summary = build_net(net, mofff_build, config)
    assert summary["status"] == "failed" and "relaxed by {'labeller': 'mofff'}" in summary["reason"]


def test_the_stored_ace_linker_is_the_one_of_the_bundled_ace_relaxed_zni():
    """data/ideal_linkers.json (scripts/ideal_linker.py) holds the mean imidazolate of zni relaxed with ACE, as
    measured from the bundled ace_relaxed.extxyz; it is 0.038 Å RMS from MOF-FF's ideal linker, 0.003 from ACE's."""
    data = json.loads(IDEAL_LINKERS_FILE.read_text())["potentials"]
    reference = json.loads((ROOT / "ase_cggpr" / "data" / "real_zifs" / "ace_reference.json").read_text())
    entry = data[reference["labeller"]["sha256"]]
    zni = next(a for a in read(ROOT / "ase_cggpr" / "data" / "real_zifs" / "ace_relaxed.extxyz", ":")
               if a.info["name"] == "zni")
    connectivity = find_connectivity(zni)
    measured = measure_im_geometry(zni, connectivity)
    assert entry["geometry"] == pytest.approx({k: measured[k] for k in IM_GEOMETRY}, abs=1e-6)
    assert np.sqrt(np.mean(linker_rmsd(zni, connectivity) ** 2)) == pytest.approx(0.038, abs=0.001)
    assert np.sqrt(np.mean(linker_rmsd(zni, connectivity, ideal_linker(**entry["geometry"])) ** 2)) < 0.003
    mofff = im_geometry_of("mofff")
    assert mofff["geometry"] == IM_GEOMETRY and BuildConfig().ideal_im() is IDEAL_LINKER
    assert "ideal_linker" not in BuildConfig().to_dict()  # MOF-FF manifests as before


@needs_pyace
def test_an_ace_build_decorates_with_ace_s_own_linker(potential, tmp_path):
    """An ACE build's frames carry ACE's imidazolate (recorded in the manifest); a folder whose manifest predates
    it (frames with MOF-FF's linker) is refused with one line, not mixed."""
    config = BuildConfig(labeller=f"ace:{potential}", batches=1, levels=("small",))
    geometry = im_geometry_of(config.labeller)["geometry"]
    assert config.to_dict()["ideal_linker"] == geometry and geometry["d_c2n"] == pytest.approx(1.338, abs=1e-3)
    atoms = decorate_for(sod_net(), config).atoms
    connectivity = find_connectivity(atoms)
    assert np.allclose(linker_rmsd(atoms, connectivity, ideal_linker(**geometry)), 0.0, atol=1e-9)
    old = {k: v for k, v in json.loads(json.dumps(config.to_dict())).items() if k != "ideal_linker"}
    (tmp_path / "manifest.json").write_text(json.dumps({"config": old}))
    with pytest.raises(ValueError, match="MOF-FF's ideal imidazolate.*new output folder"):
        build_dataset([sod_net()], tmp_path, config, workers=1)


@pytest.mark.skipif(not HAVE_LAMMPS, reason="MOF-FF needs the 'lammps' extra (pip install lammps[mpi])")
def test_cggpr_label_default_is_mofff(frames, tmp_path):
    from ase_cggpr.mofff import MOFFFCalculator

    src, out = tmp_path / "in.extxyz", tmp_path / "out.extxyz"
    write(src, frames[:1])
    result = CliRunner().invoke(main, ["label", str(src), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    (atoms,) = read(out, ":")
    assert atoms.info["labeller"] == "mofff" and "labeller_sha256" not in atoms.info
    check = frames[0].copy()
    check.calc = MOFFFCalculator()
    assert atoms.get_potential_energy() == pytest.approx(check.get_potential_energy(), abs=1e-6)
    check.calc.close()


@needs_pyace
def test_ace_build_labels_a_stored_relaxation_with_its_provenance(potential, tmp_path):
    """The labelling half of an ACE build on SOD (12 Zn), from a relaxation found in the build folder: here the
    decorated net itself, marked as made by this ACE potential (a real relaxation takes minutes)."""
    config = BuildConfig(labeller=f"ace:{potential}", batches=1, levels=("small",), include_relaxed=True)
    net = sod_net()
    labeller = config.get_labeller()
    files = NetFiles.of(tmp_path, net.name)
    files.relaxed.parent.mkdir(parents=True)
    stand_in = decorate_for(net, config).atoms
    stand_in.info.update(labeller.frame_info(), relax_converged=True, energy_per_zn=0.0)
    write(files.relaxed, stand_in)
    summary = build_net(net, tmp_path, config)
    assert summary["status"] == "done", summary.get("reason")
    assert summary["relax_reused"] and summary["generated"] == 4  # relaxed, d, small r-d, small d-r
    assert set(summary["label_stats_unfiltered"]) == {"relaxed", "none", "small"}
    frames = read(files.atomistic, ":")
    assert [a.info["rattle"] for a in frames][:2] == ["relaxed", "none"]
    for atoms in frames:
        zn = atoms.symbols == "Zn"
        assert atoms.info["labeller_sha256"] == labeller.provenance()["sha256"]
        assert atoms.info["reference_energy"] == pytest.approx(-116.080449)
        assert atoms.arrays["e_local"][zn].sum() == pytest.approx(atoms.info["ace_energy"], abs=1e-6)
        assert -118 < atoms.arrays["e_local"][zn].mean() < -114  # ACE energies per Zn(Im)2 unit
    assert "include_relaxed" in config.to_dict() and "include_relaxed" not in BuildConfig().to_dict()
