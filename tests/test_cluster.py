"""Screens and a dataset build on a real Dask cluster on this machine (ase_cggpr.tasks, issue 34).

A ``LocalCluster`` of two single-threaded worker processes (each under a nanny that restarts it) on loopback;
no mocks. One worker is killed with SIGKILL in the middle of a screen: every structure still has exactly one
row, with the numbers of the local run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write
from click.testing import CliRunner
from test_tasks import _work

from ase_cggpr.cli import main
from ase_cggpr.io import default_dataset_path
from ase_cggpr.model import CGGPRModel
from ase_cggpr.screening import progress_path, screen
from ase_cggpr.tasks import Runner, Task, run_tasks

distributed = pytest.importorskip("distributed", reason="the cluster tests need Dask: pip install '.[cluster]'")

N = 200  # structures per screen


@pytest.fixture(scope="module")
def cluster():
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 3}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address=None, env={"OMP_NUM_THREADS": "1",
                                                                  "OPENBLAS_NUM_THREADS": "1"}) as local:
        yield local


@pytest.fixture(scope="module")
def built_in():
    return read(default_dataset_path("atomistic"), ":12")


@pytest.fixture(scope="module")
def model(built_in):
    return CGGPRModel(representation="AB2", backend="featomic", n_max=4, l_max=2).fit(built_in, label_key="energies")


@pytest.fixture(scope="module")
def structures(built_in, tmp_path_factory) -> Path:
    """``N`` rattled, renamed, unlabelled copies of the built-in frames in one extxyz file."""
    out = []
    for k in range(N):
        atoms = built_in[k % len(built_in)].copy()
        atoms.calc = None
        atoms.rattle(0.02, seed=k)
        for key in [key for key in atoms.arrays if key not in ("numbers", "positions")]:
            del atoms.arrays[key]
        atoms.info = {"name": f"s{k:03d}"}
        out.append(atoms)
    path = tmp_path_factory.mktemp("structures") / "many.extxyz"
    write(path, out)
    return path


@pytest.fixture(scope="module")
def local_run(model, structures, tmp_path_factory):
    """The reference: the same screen with two local worker processes, and its progress file's lines."""
    log = tmp_path_factory.mktemp("local") / "progress.jsonl"
    rows = {row.id: row for row in screen(model, [structures], threshold=1.0, workers=2, progress_file=log).rows}
    return rows, log.read_text().splitlines()


@pytest.fixture(scope="module")
def local_rows(local_run):
    return local_run[0]


def _square(context, payload):
    if payload == "bad":
        raise ValueError("a bad payload")
    return context * payload * payload


def test_run_tasks_on_the_cluster(cluster):
    """Results come back with their keys, the context reaches every task, one failing task loses nothing else."""
    tasks = [Task(k, k) for k in range(20)] + [Task("bad", "bad")]
    outcomes = list(run_tasks(_square, tasks, Runner(scheduler=cluster.scheduler_address), context=3))
    assert sorted(o.value for o in outcomes if o.ok) == [3 * k * k for k in range(20)]
    (bad,) = [o for o in outcomes if not o.ok]
    assert bad.task.key == "bad" and isinstance(bad.exception, ValueError)


def test_only_the_task_that_kills_its_workers_is_lost():
    """Chunks of 3 on a cluster whose scheduler allows no worker death per task: the chunk holding a task that kills
    every worker it runs on is lost, then split and each of its tasks run alone: the poison is lost again and is
    the only error; every other task has exactly one outcome, its value. (Dask charges a death to every task the
    dead worker held; the run keeps one task per worker thread on the cluster, and a task ended by deaths it
    shared with other tasks is run again.)"""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address=None) as small:
        deaths = []
        tasks = [Task(k, k) for k in range(4)] + [Task("poison", "poison")] + [Task(k, k) for k in range(4, 10)]
        # test_tasks._work: a light module for the workers to import (each replaces a killed one)
        outcomes = list(run_tasks(_work, tasks, Runner(scheduler=small.scheduler_address), context=1, chunk_size=3,
                                  on_death=lambda task, message, retried: deaths.append((task.key, retried))))
    by_key = {o.task.key: o for o in outcomes}
    assert len(outcomes) == len(by_key) == 11
    poison = by_key.pop("poison")
    assert poison.error.startswith("worker died on every attempt") and poison.deaths >= 2
    bad = {k: (o.value, o.error, repr(o.exception)) for k, o in by_key.items() if not (o.ok and o.value == k)}
    assert not bad, bad
    assert ("poison", False) in deaths and ("poison", True) in deaths  # its chunk run again (split), then not


def test_screen_with_a_killed_worker(cluster, model, structures, local_rows, tmp_path):
    """A worker SIGKILLed mid-screen: the nanny restarts it, its structures are screened again; every structure
    has exactly one row, and the numbers and ranks are those of the local run."""
    client = distributed.Client(cluster.scheduler_address)
    pids = client.run(os.getpid)
    log = tmp_path / "progress.jsonl"
    result: dict = {}

    def run() -> None:
        try:
            result["screen"] = screen(model, [structures], threshold=1.0, progress_file=log,
                                      workers=Runner(scheduler=cluster.scheduler_address))
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            result["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    end = time.monotonic() + 120
    while (not log.exists() or len(log.read_text().splitlines()) < 20) and time.monotonic() < end:
        time.sleep(0.02)
    assert len(log.read_text().splitlines()) < N // 2, "the screen finished before the kill"
    victim = next(iter(pids.values()))
    os.kill(victim, signal.SIGKILL)  # a busy worker (both are busy: tasks are queued ahead)
    thread.join(timeout=300)
    client.close()
    assert "error" not in result, result.get("error")
    rows = result["screen"].rows
    assert len(rows) == N and len({r.id for r in rows}) == N  # every structure exactly once
    assert not [r for r in rows if r.error]
    for row in rows:
        reference = local_rows[row.id]
        assert row.energy_per_Zn == pytest.approx(reference.energy_per_Zn, abs=1e-9)
        assert row.max_std == pytest.approx(reference.max_std, abs=1e-9)
        assert (row.rank, row.trusted) == (reference.rank, reference.trusted)
    after = distributed.Client(cluster.scheduler_address)
    try:
        assert victim not in after.run(os.getpid).values()  # it really died (and was replaced)
    finally:
        after.close()


def test_screen_command_resumes_on_the_cluster(cluster, model, structures, local_run, tmp_path):
    """`cggpr screen --scheduler`: the CSV of the local run; an interrupted screen's rows are taken, not
    recomputed."""
    model_path = model.save(tmp_path / "tiny.npz")
    out = tmp_path / "ranking.csv"
    local_rows, lines = local_run
    progress_path(out).write_text("\n".join(lines[:1 + N // 2]) + "\n")  # interrupted after half the rows
    run = CliRunner().invoke(main, ["screen", str(model_path), str(structures), "-o", str(out), "--threshold", "1.0",
                                    "--scheduler", cluster.scheduler_address, "--resume", "--chunk-size", "7"])
    assert run.exit_code == 0, run.output
    assert f"{N // 2} taken from the interrupted screen" in run.output
    with open(out, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == N and len({row["id"] for row in table}) == N
    for row in table:
        assert float(row["energy_per_Zn_eV"]) == pytest.approx(local_rows[row["id"]].energy_per_Zn, abs=2e-6)
        assert row["rank"] == str(local_rows[row["id"]].rank or "")


def test_ctrl_c_on_the_cluster_then_resume(cluster, model, structures, local_rows, tmp_path):
    """A real Ctrl-C (SIGINT) to `cggpr screen --scheduler` after its first rows: exit code 130, no CSV (only the
    progress file); `--resume` then takes those rows and screens the rest: every structure exactly once, with the
    numbers of the local run."""
    model_path = model.save(tmp_path / "tiny.npz")
    n = 64  # structures: 8 Dask tasks of 8
    inputs = tmp_path / "inputs.extxyz"
    write(inputs, read(structures, f":{n}"))
    work = tmp_path / "work"
    work.mkdir()
    out = work / "ranking.csv"
    command = [sys.executable, "-c", "import sys; from ase_cggpr.cli import main; sys.exit(main())", "screen",
               str(model_path), str(inputs), "-o", str(out), "--threshold", "1.0",
               "--scheduler", cluster.scheduler_address]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = progress_path(out)
    end = time.monotonic() + 120
    while (not log.exists() or len(_whole_lines(log)) < 1 + 8) and process.poll() is None \
            and time.monotonic() < end:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in work.iterdir()) == [log.name]  # no CSV, no temporary file, no lock
    done = len(_whole_lines(log)) - 1  # its first line is the screen's header
    assert 0 < done < n, done
    resumed = subprocess.run([*command, "--resume"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{done} taken from the interrupted screen" in resumed.stdout + resumed.stderr
    with open(out, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == n and len({row["id"] for row in table}) == n  # every structure exactly once
    for row in table:
        assert float(row["energy_per_Zn_eV"]) == pytest.approx(local_rows[row["id"]].energy_per_Zn, abs=2e-6)
        assert bool(row["rank"]) == (local_rows[row["id"]].rank is not None)  # ranked: the same structures
    ranked = sorted((int(row["rank"]), float(row["energy_per_Zn_eV"])) for row in table if row["rank"])
    assert [rank for rank, _ in ranked] == list(range(1, len(ranked) + 1))  # ranks of this subset, by energy
    assert all(a[1] <= b[1] for a, b in zip(ranked, ranked[1:], strict=False))
    assert not log.exists()


def _whole_lines(path: Path) -> list[str]:
    """The lines of a progress file that are complete JSON (an interrupted write may leave a partial last one)."""
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            json.loads(line)
            out.append(line)
    return out


def test_bad_chunk_size_is_a_usage_error(model, structures, tmp_path):
    out = tmp_path / "ranking.csv"
    for bad in ("0", "many"):
        run = CliRunner().invoke(main, ["screen", "AB2", str(structures), "-o", str(out), "--chunk-size", bad])
        assert run.exit_code == 2 and "--chunk-size" in run.output and "'auto'" in run.output and not out.exists()


def test_unreachable_scheduler_is_one_line_and_no_file(model, structures, tmp_path):
    model_path = model.save(tmp_path / "tiny.npz")
    out = tmp_path / "ranking.csv"
    not_a_scheduler = tmp_path / "scheduler.json"
    not_a_scheduler.write_text("{}")
    run = CliRunner().invoke(main, ["screen", str(model_path), str(structures), "-o", str(out),
                                    "--scheduler", str(not_a_scheduler)])
    assert run.exit_code == 1
    assert "cannot connect to the Dask scheduler" in run.output and "not a scheduler file" in run.output
    assert "Traceback" not in run.output
    assert not out.exists() and not progress_path(out).exists()


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="this machine has SLURM")
def test_cluster_without_its_scheduler_is_one_line(model, structures, tmp_path):
    """--cluster slurm where there is no sbatch: one line saying so, exit code 1, no file."""
    pytest.importorskip("dask_jobqueue", reason="--cluster needs dask-jobqueue: pip install '.[cluster]'")
    model_path = model.save(tmp_path / "tiny.npz")
    out = tmp_path / "ranking.csv"
    run = CliRunner().invoke(main, ["screen", str(model_path), str(structures), "-o", str(out), "--cluster", "slurm",
                                    "--jobs", "2", "--cluster-option", "cores=4", "--cluster-option", "memory=8GB"])
    assert run.exit_code == 1 and "sbatch" in run.output and "Traceback" not in run.output
    assert len(run.output.strip().splitlines()) == 1
    assert not out.exists() and not progress_path(out).exists()


HAVE_LAMMPS = True
try:
    from ase_cggpr.mofff.driver import load_lammps

    load_lammps()
except Exception:  # noqa: BLE001 - any reason LAMMPS cannot be loaded
    HAVE_LAMMPS = False


@pytest.mark.skipif(not HAVE_LAMMPS, reason="the dataset build needs the 'lammps' extra (MOF-FF)")
def test_dataset_build_on_the_cluster(cluster, tmp_path):
    """A tiny build (sodalite, one rattled batch) through the cluster: the same frames and labels as locally."""
    from ase.spacegroup import crystal

    from ase_cggpr.dataset import BuildConfig, build_dataset, read_nets

    nets_folder = tmp_path / "nets"
    nets_folder.mkdir()
    sod = crystal(["Si", "O"], basis=[(0.25, 0.5, 0.0), (0.1467, 0.5, 0.8533)], spacegroup=229,
                  cellpar=[8.965] * 3 + [90] * 3)
    write(nets_folder / "SOD.cif", sod)
    nets, rejected = read_nets([nets_folder])
    assert not rejected
    config = BuildConfig(batches=1, levels=("small",), seed=3)
    on_cluster = tmp_path / "cluster"
    summary = build_dataset(nets, on_cluster, config, workers=Runner(scheduler=cluster.scheduler_address))
    assert summary["n_done"] == 1 and summary["frames_kept"] > 0
    local = tmp_path / "local"
    (local / "relaxed").mkdir(parents=True)  # the relaxation is the cluster's: the frames and labels must agree
    for path in (on_cluster / "relaxed").glob("*.extxyz"):
        (local / "relaxed" / path.name).write_bytes(path.read_bytes())
    reference = build_dataset(nets, local, config)
    assert reference["frames_kept"] == summary["frames_kept"]
    a, b = read(on_cluster / "atomistic.extxyz", ":"), read(local / "atomistic.extxyz", ":")
    for x, y in zip(a, b, strict=True):
        # the local build starts from the relaxation as written to relaxed/ (8 decimals), the cluster's from memory
        assert np.allclose(x.positions, y.positions, rtol=0, atol=1e-6)
        assert np.allclose(x.arrays["e_local"], y.arrays["e_local"], rtol=0, atol=1e-6, equal_nan=True)
