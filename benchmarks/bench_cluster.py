"""Benchmark of running a screen on a Dask cluster (ase_cggpr.tasks) against local worker processes.

Screens ``--n`` structures (default 2,000: rattled, renamed copies of the built-in atomistic frames, written to one
extxyz file) with the shipped AB2 model, in ``--rounds`` rounds back to back in this one process, each:

1. locally with ``-j 2`` (the default local worker processes);
2. through a ``distributed.LocalCluster`` of 2 single-threaded worker processes on loopback (the scheduler in this
   process, as ``cggpr screen --scheduler`` would reach a separate one), with our Dask settings
   (``ase_cggpr.tasks.DASK_CONFIG``, as README's ``dask worker`` commands get them); with ``--dask-defaults`` also
   through one with Dask's default settings. Cluster start-up is not timed.

Then the per-task overhead (``--noop`` tasks that do nothing, through the local pool and the cluster: scheduler
round trip, serialisation, result stream back; a screen sends chunks of structures per task: ``--chunk-size``,
default ``auto``, about ``CHUNK_SECONDS`` of work per chunk, the same locally and on Dask), and
unless ``--skip-one-worker`` a 1-worker cluster against ``-j 1``. Every run's rows must be the first local run's
(same rows, energies within 1e-9 eV, same ranks). Ratios Dask / local are per round (same load).

The machine is shared (the load average is reported before and after each run), so CPU time is reported too:
this process's and its children's (``resource``), and on the cluster the workers' own CPU time (their
``getrusage``). The overhead of the cluster is (cluster - local) / local of the same round, for wall and for total
CPU time.

Extrapolation to 100 nodes: with ``c`` cores per node and a task time ``t`` (CPU s per structure measured here),
the workers alone could finish 100 c / t structures per second; the single scheduler handles at most
1 / (its CPU per task) tasks per second, each of one chunk of structures (measured here with the no-op tasks:
the CPU time of this process, which holds the LocalCluster's scheduler and the client, per task: an upper bound
of the scheduler's own cost). The smaller of the two bounds the throughput.

The LocalCluster's nannies set ``MALLOC_TRIM_THRESHOLD_`` in this process's environment (Dask sets it before it
starts a worker and leaves it); it is removed before each local run, whose workers would inherit it.

Run:  python benchmarks/bench_cluster.py [--n 2000] [--rounds 3] [--noop 500] [--chunk-size auto|N]
      [--dask-defaults] [--skip-one-worker]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import tempfile
import time
from pathlib import Path


def _cpu_self_children() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _worker_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _noop(context, payload):
    return payload


def _structures(n: int, path: Path) -> Path:
    from ase.io import read, write

    from ase_cggpr.io import default_dataset_path

    frames = read(default_dataset_path("atomistic"), ":")
    out = []
    for k in range(n):
        atoms = frames[k % len(frames)].copy()
        atoms.calc = None
        atoms.rattle(0.01, seed=k)
        for key in [key for key in atoms.arrays if key not in ("numbers", "positions")]:
            del atoms.arrays[key]
        atoms.info = {"name": f"s{k:05d}"}
        out.append(atoms)
    write(path, out)
    return path


def _timed(label: str, run, client=None) -> dict:
    load_before = os.getloadavg()
    (self0, children0), wall0 = _cpu_self_children(), time.perf_counter()
    workers0 = sum(client.run(_worker_cpu).values()) if client is not None else 0.0
    value = run()
    wall = time.perf_counter() - wall0
    self1, children1 = _cpu_self_children()
    workers = (sum(client.run(_worker_cpu).values()) - workers0) if client is not None else 0.0
    own, children = self1 - self0, children1 - children0
    out = dict(run=label, wall_s=round(wall, 2), cpu_s=round(own + children + workers, 2),
               cpu_this_process_s=round(own, 2), cpu_local_workers_s=round(children, 2),
               cpu_dask_workers_s=round(workers, 2), load_before=[round(x, 2) for x in load_before],
               load_after=[round(x, 2) for x in os.getloadavg()])
    print(json.dumps(out), flush=True)
    return {**out, "value": value}


@contextlib.contextmanager
def _cluster(n_workers: int, tuned: bool):
    """A LocalCluster of single-threaded worker processes on loopback, with our Dask settings (DASK_CONFIG, as
    README's ``dask worker`` commands get them) or Dask's defaults."""
    import dask
    import distributed

    from ase_cggpr.tasks import DASK_CONFIG

    config = {**(DASK_CONFIG if tuned else {}), "distributed.scheduler.allowed-failures": 3}
    with dask.config.set(config), \
            distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address=None,
                                     env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}) as cluster, \
            distributed.Client(cluster) as client:
        client.run(lambda: __import__("ase_cggpr.screening"))  # imports: part of a worker's start-up
        yield cluster, client
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # set here by the nannies: not for the local workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="structures to screen")
    parser.add_argument("--rounds", type=int, default=3, help="local / Dask pairs, back to back")
    parser.add_argument("--noop", type=int, default=500, help="no-op tasks for the per-task overhead")
    parser.add_argument("--cores-per-node", type=int, default=32, help="for the extrapolation to 100 nodes")
    parser.add_argument("--dask-defaults", action="store_true",
                        help="also run each round on a cluster with Dask's default settings (not DASK_CONFIG)")
    parser.add_argument("--skip-one-worker", action="store_true", help="no 1-worker cluster run")
    parser.add_argument("--chunk-size", default="auto", help="structures per task (N or auto), local and Dask")
    args = parser.parse_args()
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(key, "1")
    from ase_cggpr.model import CGGPRModel
    from ase_cggpr.pretrained import resolve
    from ase_cggpr.screening import screen
    from ase_cggpr.tasks import CHUNK_SECONDS, MAX_CHUNK, Runner, Task, check_chunk_size, run_tasks

    chunk = check_chunk_size(args.chunk_size if args.chunk_size == "auto" else int(args.chunk_size))
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)

    model = CGGPRModel.load(resolve("AB2"))
    results: dict = {"n": args.n, "cpu_count": os.cpu_count()}
    rounds = []
    with tempfile.TemporaryDirectory() as folder:
        data = _structures(args.n, Path(folder) / "structures.extxyz")

        def run_screen(workers):
            runner = Runner(workers=workers) if isinstance(workers, int) else workers
            if runner.parallel:
                runner = dataclasses.replace(runner, chunk_size=chunk)
            return screen(model, [data], threshold=1.0, workers=runner)

        reference = None
        for k in range(args.rounds):
            one = {"local": _timed(f"round {k + 1}: local -j 2", lambda: run_screen(2))}
            reference = reference or one["local"]["value"]
            kinds = [("dask", True)] + ([("dask_defaults", False)] if args.dask_defaults else [])
            for name, tuned in kinds:
                with _cluster(2, tuned) as (cluster, client):
                    one[name] = _timed(f"round {k + 1}: Dask 2 workers{'' if tuned else ' (Dask defaults)'}",
                                       lambda c=cluster: run_screen(Runner(scheduler=c.scheduler_address)), client)
                _check_same(reference, one[name]["value"], args.n)
            rounds.append(one)
        noop_local = _timed(f"local -j 2, {args.noop} no-op tasks",
                            lambda: sum(1 for _ in run_tasks(_noop, (Task(k, k) for k in range(args.noop)), 2)))
        with _cluster(2, True) as (cluster, client):
            runner = Runner(scheduler=cluster.scheduler_address)
            noop = _timed(f"Dask 2 workers, {args.noop} no-op tasks", lambda: sum(
                1 for _ in run_tasks(_noop, (Task(k, k) for k in range(args.noop)), runner)), client)
        one_worker = None
        if not args.skip_one_worker:
            with _cluster(1, True) as (cluster, client):
                one_worker = _timed("Dask 1 worker", lambda: run_screen(Runner(scheduler=cluster.scheduler_address)),
                                    client)
            one_local = _timed("local -j 1", lambda: run_screen(1))

    def ratios(name: str, key: str) -> list[float]:
        return [round(r[name][key] / r["local"][key], 3) for r in rounds]

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 3)

    local_cpu = sum(r["local"]["cpu_s"] for r in rounds) / len(rounds)
    dask_cpu = sum(r["dask"]["cpu_s"] for r in rounds) / len(rounds)
    per_structure_cpu = local_cpu / args.n
    noop_ms = 1000 * noop["wall_s"] / args.noop
    noop_local_ms = 1000 * noop_local["wall_s"] / args.noop
    # the scheduler (and client) run in this process: their CPU per no-op task bounds the tasks per second one
    # scheduler can take; a task of a screen holds a chunk of structures (auto: about CHUNK_SECONDS of work)
    scheduler_ms = 1000 * noop["cpu_this_process_s"] / args.noop
    per_task = chunk if chunk != "auto" else max(1, min(MAX_CHUNK, round(CHUNK_SECONDS / per_structure_cpu)))
    scheduler_rate = 1000 / scheduler_ms * per_task
    nodes = 100
    worker_rate = nodes * args.cores_per_node / per_structure_cpu
    expected = min(worker_rate, scheduler_rate)
    results.update(
        same_numbers=f"{args.n} rows in every run, max |dE| <= 1e-9 eV, identical ranks",
        wall_ratio_dask_over_local=ratios("dask", "wall_s"), wall_ratio_mean=mean(ratios("dask", "wall_s")),
        cpu_ratio_dask_over_local=ratios("dask", "cpu_s"), cpu_ratio_mean=mean(ratios("dask", "cpu_s")),
        overhead_cpu_ms_per_structure=round(1000 * (dask_cpu - local_cpu) / args.n, 2),
        per_task_round_trip_ms_cluster=round(noop_ms, 2), per_task_round_trip_ms_local=round(noop_local_ms, 2),
        scheduler_and_client_cpu_ms_per_task=round(scheduler_ms, 2),
        cpu_s_per_structure=round(per_structure_cpu, 4), chunk_size=args.chunk_size,
        structures_per_task=per_task,
        extrapolation_100_nodes=dict(
            cores=nodes * args.cores_per_node, workers_bound_per_s=round(worker_rate),
            scheduler_bound_per_s=round(scheduler_rate), expected_per_s=round(expected),
            bound="scheduler" if scheduler_rate < worker_rate else "workers",
            hours_per_million=round(1e6 / expected / 3600, 2)),
        load_average_end=[round(x, 2) for x in os.getloadavg()])
    if args.dask_defaults:
        results.update(wall_ratio_dask_defaults_over_local=ratios("dask_defaults", "wall_s"),
                       wall_ratio_dask_defaults_mean=mean(ratios("dask_defaults", "wall_s")),
                       cpu_ratio_dask_defaults_over_local=ratios("dask_defaults", "cpu_s"),
                       cpu_ratio_dask_defaults_mean=mean(ratios("dask_defaults", "cpu_s")))
    throughput = {"local -j 2": round(args.n / rounds[-1]["local"]["wall_s"], 1),
                  "Dask 2 workers": round(args.n / rounds[-1]["dask"]["wall_s"], 1)}
    if one_worker is not None:
        throughput = {"local -j 1": round(args.n / one_local["wall_s"], 1),
                      "Dask 1 worker": round(args.n / one_worker["wall_s"], 1), **throughput}
        results.update(one_worker_wall_ratio=round(one_worker["wall_s"] / one_local["wall_s"], 3),
                       one_worker_cpu_ratio=round(one_worker["cpu_s"] / one_local["cpu_s"], 3))
    results["throughput_structures_per_s"] = throughput
    print(json.dumps(results, indent=1))


def _check_same(reference, result, n: int) -> None:
    """The cluster's rows are the local run's: same ids, energies within 1e-9 eV, same ranks."""
    a = {r.id: r for r in reference.rows}
    b = {r.id: r for r in result.rows}
    assert a.keys() == b.keys() and len(a) == n
    worst = max(abs(a[k].energy_per_Zn - b[k].energy_per_Zn) for k in a)
    assert worst <= 1e-9, worst
    assert all(a[k].rank == b[k].rank for k in a)


if __name__ == "__main__":
    main()
