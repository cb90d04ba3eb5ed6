"""Benchmark of running a screen on a Dask cluster (ase_cggpr.tasks) against local worker processes.

Screens ``--n`` structures per run (rattled, renamed copies of the built-in atomistic frames, written to one extxyz
file) with the shipped AB2 model, in ``--rounds`` rounds in this one process. Each round is a pair, run back to back
in alternating order (local then Dask in odd rounds, Dask then local in even ones: a drift in the machine's load
falls on both sides alike):

- locally with ``-j 2`` (the default local worker processes);
- through a ``distributed.LocalCluster`` of 2 single-threaded worker processes on loopback (the scheduler in this
  process, as ``cggpr screen --scheduler`` would reach a separate one), with our Dask settings
  (``ase_cggpr.tasks.DASK_CONFIG``, as README's ``dask worker`` commands get them); with ``--dask-defaults`` also
  through one with Dask's default settings. A cluster is started for each run and stopped after it (so no idle
  cluster runs beside a local run); its start-up is not timed.

Like for like: the same structures, the same model object, the same chunk sizes (``--chunk-size``, default
``auto``, about ``CHUNK_SECONDS`` of work per task, locally and on Dask), 2 worker processes each. Every run's rows
must equal the first local run's (same rows, energies within 1e-9 eV, same ranks).

Then, unless ``--skip-one-worker``, ``--one-worker-rounds`` pairs of a 1-worker cluster against ``-j 1`` (which
screens in this process: no worker process, no chunks; what a user gets with ``-j 1``), ``--one-worker-n``
structures each, alternating as above; and the per-task overhead: ``--noop`` tasks that do nothing, through the
local pool and the cluster (scheduler round trip, serialisation, result stream back).

Printed: every run (wall, CPU, load before and after), every round's Dask / local ratios of wall and CPU time, their
median and mean, the CPU overhead per structure (ms), the workers' CPU alone, the per-task round trip and the
scheduler + client CPU per task, throughput against the number of workers, and the extrapolation to 100 nodes.

CPU time: this process's and its children's (``resource``: this process holds the local pool's parent, or the
scheduler, the nannies and the client), plus on the cluster the workers' own (their ``getrusage``). The machine may
be shared: under load, wall times measure the share of the cores a run got; compare CPU times then.

Extrapolation to 100 nodes: with ``c`` cores per node and ``t`` CPU s per structure (measured here), the workers
alone could finish 100 c / t structures per second; the single scheduler handles at most 1 / (its CPU per task)
tasks per second, each of one chunk of structures (measured with the no-op tasks: the CPU time of this process,
which holds the LocalCluster's scheduler and the client, per task: an upper bound of the scheduler's own cost);
the command's own process reads every structure and writes every row (its CPU per structure in the local runs).
The smallest of the three bounds the throughput.

The LocalCluster's nannies set ``MALLOC_TRIM_THRESHOLD_`` in this process's environment (Dask sets it before it
starts a worker and leaves it); it is removed before each local run, whose workers would inherit it.

Run:  python benchmarks/bench_cluster.py [--n 2000] [--rounds 4] [--noop 300] [--chunk-size auto|N]
      [--one-worker-n 500] [--one-worker-rounds 2] [--dask-defaults] [--skip-one-worker]

Not like for like in one respect, stated in the output: a local run starts its worker processes (spawn, imports:
the no-op run's time), a Dask run finds its workers running. With ``--n`` in the thousands this is ~1-2% of a
local run, in the Dask runs' favour; with a few hundred structures it is several %: compare at --n 2000.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import statistics
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
               cpu_this_process_s=round(own, 2), cpu_workers_s=round(children + workers, 2),
               load_before=round(load_before[0], 1), load_after=round(os.getloadavg()[0], 1))
    print(json.dumps(out), flush=True)
    return {**out, "value": value}


@contextlib.contextmanager
def _cluster(n_workers: int, tuned: bool = True):
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


def _stats(values: list[float]) -> dict:
    return dict(rounds=[round(v, 3) for v in values], median=round(statistics.median(values), 3),
                mean=round(statistics.fmean(values), 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="structures per run")
    parser.add_argument("--rounds", type=int, default=4, help="pairs local -j 2 / Dask 2 workers, alternating")
    parser.add_argument("--noop", type=int, default=300, help="no-op tasks for the per-task overhead")
    parser.add_argument("--one-worker-n", type=int, default=None, help="structures per 1-worker run (default n/4)")
    parser.add_argument("--one-worker-rounds", type=int, default=2, help="pairs -j 1 / Dask 1 worker")
    parser.add_argument("--cores-per-node", type=int, default=32, help="for the extrapolation to 100 nodes")
    parser.add_argument("--dask-defaults", action="store_true",
                        help="also run each round on a cluster with Dask's default settings (not DASK_CONFIG)")
    parser.add_argument("--skip-one-worker", action="store_true", help="no 1-worker runs")
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
    one_n = args.one_worker_n or max(1, args.n // 4)
    started = time.perf_counter()

    model = CGGPRModel.load(resolve("AB2"))
    print(json.dumps(dict(n=args.n, rounds=args.rounds, chunk_size=args.chunk_size, cpu_count=os.cpu_count(),
                          load=[round(x, 1) for x in os.getloadavg()])), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        data = _structures(args.n, Path(folder) / "structures.extxyz")
        small = data if one_n == args.n else _structures(one_n, Path(folder) / "one_worker.extxyz")
        references: dict[Path, object] = {}

        def run_screen(workers, path: Path):
            runner = Runner(workers=workers) if isinstance(workers, int) else workers
            if runner.parallel:
                runner = dataclasses.replace(runner, chunk_size=chunk)
            result = screen(model, [path], threshold=1.0, workers=runner)
            reference = references.setdefault(path, result)
            _check_same(reference, result)
            return result

        def local(workers: int, path: Path, label: str) -> dict:
            return _timed(label, lambda: run_screen(workers, path))

        def dask(workers: int, path: Path, label: str, tuned: bool = True) -> dict:
            with _cluster(workers, tuned) as (cluster, client):
                return _timed(label, lambda: run_screen(Runner(scheduler=cluster.scheduler_address), path), client)

        def pairs(rounds: int, workers: int, path: Path, extra: bool) -> list[dict]:
            out = []
            for k in range(rounds):
                one: dict = {}
                order = ("local", "dask") if k % 2 == 0 else ("dask", "local")
                for side in order:
                    name = f"round {k + 1}: " + (f"local -j {workers}" if side == "local" else
                                                 f"Dask {workers} worker{'s' if workers > 1 else ''}")
                    one[side] = (local(workers, path, name) if side == "local" else dask(workers, path, name))
                if extra:
                    one["dask_defaults"] = dask(workers, path, f"round {k + 1}: Dask {workers} workers (Dask "
                                                "defaults)", tuned=False)
                out.append(one)
            return out

        rounds = pairs(args.rounds, 2, data, args.dask_defaults)
        one_rounds = [] if args.skip_one_worker else pairs(args.one_worker_rounds, 1, small, False)
        noop_local = _timed(f"local -j 2, {args.noop} no-op tasks",
                            lambda: sum(1 for _ in run_tasks(_noop, (Task(k, k) for k in range(args.noop)), 2)))
        with _cluster(2) as (cluster, client):
            runner = Runner(scheduler=cluster.scheduler_address)
            noop = _timed(f"Dask 2 workers, {args.noop} no-op tasks", lambda: sum(
                1 for _ in run_tasks(_noop, (Task(k, k) for k in range(args.noop)), runner)), client)

    def ratios(pairs_: list[dict], name: str, key: str) -> dict:
        return _stats([r[name][key] / r["local"][key] for r in pairs_])

    def per_structure_ms(pairs_: list[dict], name: str, key: str, n: int) -> dict:
        return _stats([1000 * (r[name][key] - r["local"][key]) / n for r in pairs_])

    local_cpu = statistics.median(r["local"]["cpu_s"] for r in rounds) / args.n
    client_cpu = statistics.median(r["local"]["cpu_this_process_s"] for r in rounds) / args.n
    noop_ms = 1000 * noop["wall_s"] / args.noop
    noop_local_ms = 1000 * noop_local["wall_s"] / args.noop
    # the scheduler (and client) run in this process: their CPU per no-op task bounds the tasks per second one
    # scheduler can take; a task of a screen holds a chunk of structures (auto: about CHUNK_SECONDS of work)
    scheduler_ms = 1000 * noop["cpu_this_process_s"] / args.noop
    per_task = chunk if chunk != "auto" else max(1, min(MAX_CHUNK, round(CHUNK_SECONDS / local_cpu)))
    nodes = 100
    bounds = {"workers": nodes * args.cores_per_node / local_cpu,
              "scheduler": 1000 / scheduler_ms * per_task,
              "client (reads every structure, writes every row)": 1 / client_cpu}
    bound = min(bounds, key=bounds.get)
    results = dict(
        same_numbers="every run's rows equal the first local run's (energies within 1e-9 eV, same ranks)",
        structures_per_run=args.n, chunk_size=args.chunk_size, structures_per_task=per_task,
        wall_ratio_dask_over_local=ratios(rounds, "dask", "wall_s"),
        cpu_ratio_dask_over_local=ratios(rounds, "dask", "cpu_s"),
        workers_cpu_ratio_dask_over_local=ratios(rounds, "dask", "cpu_workers_s"),
        overhead_cpu_ms_per_structure=per_structure_ms(rounds, "dask", "cpu_s", args.n),
        # the same with the local pool's start-up (the no-op run's CPU) taken out of each local run
        cpu_ratio_local_start_up_excluded=_stats([r["dask"]["cpu_s"] / (r["local"]["cpu_s"] - noop_local["cpu_s"])
                                                  for r in rounds]),
        overhead_wall_ms_per_structure=per_structure_ms(rounds, "dask", "wall_s", args.n),
        cpu_ms_per_structure_local=round(1000 * local_cpu, 2),
        per_task_round_trip_ms=dict(dask=round(noop_ms, 2), local_including_its_start_up=round(noop_local_ms, 2)),
        local_pool_start_up=dict(wall_s=noop_local["wall_s"], cpu_s=noop_local["cpu_s"],
                                 note="in every local -j 2 run (2 worker processes started and importing); a "
                                      "Dask run starts no process (a running cluster; start-up not timed)"),
        scheduler_and_client_cpu_ms_per_task=round(scheduler_ms, 2))
    if args.dask_defaults:
        results.update(wall_ratio_dask_defaults_over_local=ratios(rounds, "dask_defaults", "wall_s"),
                       cpu_ratio_dask_defaults_over_local=ratios(rounds, "dask_defaults", "cpu_s"))
    throughput = {}
    if one_rounds:
        results.update(one_worker_wall_ratio=ratios(one_rounds, "dask", "wall_s"),
                       one_worker_cpu_ratio=ratios(one_rounds, "dask", "cpu_s"))
        throughput = {"local -j 1": round(one_n / statistics.median(r["local"]["wall_s"] for r in one_rounds), 1),
                      "Dask 1 worker": round(one_n / statistics.median(r["dask"]["wall_s"] for r in one_rounds), 1)}
    throughput.update({"local -j 2": round(args.n / statistics.median(r["local"]["wall_s"] for r in rounds), 1),
                       "Dask 2 workers": round(args.n / statistics.median(r["dask"]["wall_s"] for r in rounds), 1)})
    results["throughput_structures_per_s_median"] = throughput
    results["extrapolation_100_nodes"] = dict(
        cores=nodes * args.cores_per_node, bounds_structures_per_s={k: round(v) for k, v in bounds.items()},
        bound=bound, expected_per_s=round(bounds[bound]), hours_per_million=round(1e6 / bounds[bound] / 3600, 2))
    results["load_average_end"] = [round(x, 1) for x in os.getloadavg()]
    results["benchmark_wall_s"] = round(time.perf_counter() - started, 1)
    results["peak_rss_this_process_MB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(results, indent=1))


def _check_same(reference, result) -> None:
    """The rows are the reference run's: same ids, energies within 1e-9 eV, same ranks."""
    a = {r.id: r for r in reference.rows}
    b = {r.id: r for r in result.rows}
    assert a.keys() == b.keys() and len(a) == len(reference.rows)
    assert not [r for r in result.rows if r.error]
    worst = max(abs(a[k].energy_per_Zn - b[k].energy_per_Zn) for k in a)
    assert worst <= 1e-9, worst
    assert all(a[k].rank == b[k].rank for k in a)


if __name__ == "__main__":
    main()
