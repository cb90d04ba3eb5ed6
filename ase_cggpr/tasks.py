"""Running many independent tasks: local worker processes, or a Dask cluster (one machine or many).

``cggpr screen``, ``cggpr label`` and ``cggpr dataset build`` hand their tasks (one structure, a chunk of frames,
one net) to :func:`run_tasks` with a :class:`Runner`:

- ``Runner(workers=N)`` (``-j N``, the default): N worker processes on this machine ("spawn": featomic's and
  BLAS's threads and LAMMPS's state do not survive a fork), started by this process and dying with it
  (:func:`ase_cggpr.worker_lifeline.die_with_parent`). Nothing to set up. ``workers=1`` runs in this process.
- ``Runner(scheduler="tcp://host:8786")`` or ``Runner(scheduler="scheduler.json")`` (``--scheduler``): the
  workers of a running Dask distributed cluster (``dask scheduler`` / ``dask worker``; a scheduler file as
  written by ``dask scheduler --scheduler-file``).
- ``Runner(cluster="slurm", jobs=N, cluster_options={...})`` (``--cluster slurm --jobs N``): N batch jobs of
  Dask workers started through ``dask-jobqueue`` (SLURM or PBS); the options (cores, memory, walltime, queue,
  account, ...) are those of ``dask_jobqueue.SLURMCluster`` / ``PBSCluster`` or its configuration file.

Dask is an optional dependency (``pip install '.[cluster]'``), imported only when a Runner asks for it.

Guarantees (both backends)
--------------------------
- Results come back, as they finish, to the one process that called :func:`run_tasks` (which writes the
  output). Each task's result or exception is returned with its key: one failing task never stops the others.
- The *context* (e.g. a fitted model) is sent once per worker, not per task: a local worker receives it when it
  starts; on Dask it is scattered to every worker once (``Client.scatter(broadcast=True)``) and each task gets the
  worker's own copy. Task payloads are small (one structure, or a path).
- A worker that dies while running a task (SIGKILL, the out-of-memory killer, a lost node) loses only that task,
  and the task is run again on another (or a new) worker: at most :data:`RETRIES` more times locally; on Dask the
  scheduler reschedules it until it has killed ``distributed.scheduler.allowed-failures`` workers (Dask's
  default: 3; a cluster started by a :class:`Runner` is given :data:`RETRIES`). After that the task's outcome is
  a ``worker died ...`` error (:attr:`Outcome.error`), and the run goes on.
- Only the task a worker was running is charged with its death. Dask charges a death to every task the worker
  held (queued ones too): so the queue stays here: at most :data:`PER_THREAD` tasks per worker thread are on the
  cluster, one after the first worker death of the run; and a task that Dask ends with ``KilledWorker``
  although it never was a dead worker's only task (its deaths were shared with other tasks: it may never have
  run) is run again (:class:`_Deaths`).
- Many local worker deaths in a row (no task finishing between them) mean the workers cannot run at all: the run
  stops with a :class:`~ase_cggpr.errors.CGGPRError`.
- Ctrl-C (KeyboardInterrupt) or any error in the caller stops the workers (local) or cancels the outstanding
  tasks (Dask) before it propagates; the caller's output is written atomically, so no partial file is left.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import dataclasses
import functools
import itertools
import json
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from multiprocessing.connection import wait
from typing import Any

from .errors import CGGPRError, OptionError
from .worker_lifeline import die_with_parent

#: How many more times a task whose worker died is run (locally; and on a cluster a Runner starts).
RETRIES = 3
#: Outcome errors of tasks lost to dead workers start with this.
WORKER_DIED = "worker died"
#: Structures per task of a screen on Dask with a fixed chunk size (``--chunk-size 8``; the default is ``"auto"``).
DASK_CHUNK = 8
#: ``chunk_size="auto"``: consecutive tasks are sent to a worker together so that one chunk takes about this many
#: seconds there (measured on the workers as the run goes): the scheduler's round trip (milliseconds) is then
#: < 1% of a chunk, and a dead worker or a Ctrl-C loses about this much work per worker.
CHUNK_SECONDS = 1.0
#: ``chunk_size="auto"``: at most this many tasks per chunk (progress and retries stay fine-grained).
MAX_CHUNK = 64
#: Seconds to wait for a Dask scheduler (its scheduler file to appear, then the connection).
CONNECT_TIMEOUT = 30
#: Seconds between two counts of a Dask cluster's worker threads (workers join and leave during a run), and in
#: the 10 x THREADS_SOON seconds after a worker died (its replacement joins).
THREADS_REFRESH, THREADS_SOON = 5.0, 0.5
#: Tasks per Dask worker thread on the cluster at a time (one running, one waiting on the worker) until a worker
#: dies during the run; then 1 (see :class:`_Deaths`).
PER_THREAD = 2
#: Job schedulers reachable through dask-jobqueue.
CLUSTERS = ("slurm", "pbs")
INSTALL_HINT = "pip install 'ase-cggpr[cluster]' (or pip install '.[cluster]' in a checkout)"
#: Dask settings for our tasks (CPU-bound, seconds each): Dask's diagnostics sampled every 10-20 ms cost a worker
#: several % of a core (benchmarks/bench_cluster.py; docs/cluster.md): the statistical profiler (a stack sample of
#: every thread each 10 ms), the event-loop health check (each 20 ms) and the system monitor (psutil each 500 ms).
#: Set by a Runner for the clusters it starts (and in the calling process); give them to workers you start
#: yourself as environment variables (:func:`dask_environment`).
DASK_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "1s",
}


@dataclasses.dataclass(frozen=True)
class Runner:
    """Where tasks run: local processes (``workers``), a Dask scheduler, or a SLURM/PBS allocation.

    Attributes:
        workers: local worker processes (1: in the calling process). Ignored with ``scheduler``/``cluster``.
        scheduler: a Dask scheduler's address (``tcp://host:8786``) or scheduler file (JSON).
        cluster: ``"slurm"`` or ``"pbs"``: start Dask workers as batch jobs (dask-jobqueue).
        jobs: batch jobs to start with ``cluster``.
        cluster_options: keyword arguments of dask-jobqueue's cluster class (cores, memory, walltime, ...).
        retries: more runs of a task whose worker died (local runs and clusters started here).
        chunk_size: short tasks (one structure of a screen) sent to a worker together: a number, or ``"auto"``
            (chunks of about :data:`CHUNK_SECONDS` on a worker, from the measured task times); None: the
            caller's default (a screen: ``"auto"``).
    """

    workers: int = 1
    scheduler: str | None = None
    cluster: str | None = None
    jobs: int = 1
    cluster_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    retries: int = RETRIES
    chunk_size: int | str | None = None

    def __post_init__(self):
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            raise OptionError(f"workers must be an integer >= 1, got {self.workers!r}")
        if self.scheduler is not None and self.cluster is not None:
            raise OptionError("give either --scheduler (a running Dask cluster) or --cluster (start one), not both")
        if self.cluster is not None and self.cluster not in CLUSTERS:
            raise OptionError(f"--cluster must be one of {', '.join(CLUSTERS)}, got {self.cluster!r}")
        if not isinstance(self.jobs, int) or isinstance(self.jobs, bool) or self.jobs < 1:
            raise OptionError(f"jobs must be an integer >= 1, got {self.jobs!r}")
        if self.chunk_size is not None:
            check_chunk_size(self.chunk_size)
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise OptionError(f"retries must be an integer >= 0, got {self.retries!r}")

    @property
    def distributed(self) -> bool:
        """Whether tasks go to Dask (a scheduler or a batch-job cluster)."""
        return self.scheduler is not None or self.cluster is not None

    @property
    def parallel(self) -> bool:
        return self.distributed or self.workers > 1

    def describe(self) -> str:
        if self.scheduler is not None:
            return f"Dask scheduler {self.scheduler}"
        if self.cluster is not None:
            return f"{self.jobs} {self.cluster.upper()} job(s) of Dask workers"
        return f"{self.workers} local process(es)"


def check_chunk_size(value: int | str) -> int | str:
    """``value`` if it is a chunk size: an integer >= 1 or ``"auto"``; else :class:`OptionError`."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise OptionError(f"chunk size must be an integer >= 1 or 'auto', got {value!r}")


def as_runner(workers: int | Runner) -> Runner:
    """``workers`` as a :class:`Runner` (an int: that many local processes)."""
    return workers if isinstance(workers, Runner) else Runner(workers=workers)


@dataclasses.dataclass
class Task:
    """One unit of work: ``function(context, payload)`` on a worker. ``key`` identifies it in the outcome."""

    key: Any
    payload: Any = None


@dataclasses.dataclass
class Outcome:
    """A finished task: its ``value``, or the ``exception`` it raised, or ``error`` (its workers died)."""

    task: Task
    value: Any = None
    exception: BaseException | None = None
    error: str = ""
    #: worker deaths while running this task (each followed by a retry, until the last)
    deaths: int = 0

    @property
    def ok(self) -> bool:
        return self.exception is None and not self.error


def run_tasks(function: Callable[[Any, Any], Any], tasks: Iterable[Task], runner: int | Runner = 1, *,
              context: Any = None, on_death: Callable[[Task, str, bool], None] | None = None,
              chunk_size: int | str = 1) -> Iterator[Outcome]:
    """Run ``function(context, task.payload)`` for every task; yield :class:`Outcome` s as they finish.

    ``function`` must be importable by name (a module-level function); ``tasks`` is consumed lazily (a few per
    worker in flight), so it may stream from files. ``on_death(task, message, retried)`` is called in this process
    for each worker death seen (e.g. to print a warning; locally every death, on Dask the last one), ``retried``
    saying whether the task is run again (see the module notes).

    ``chunk_size`` > 1 sends that many consecutive tasks to a worker as one (fewer round trips for short tasks:
    the scheduler's cost per task is milliseconds); ``"auto"`` chooses it from the task times measured on the
    workers (:class:`ChunkSizer`: chunks of about :data:`CHUNK_SECONDS`, at most :data:`MAX_CHUNK` tasks). Each
    task still has its own outcome. A worker's death is a death for each task of its chunk; a chunk whose
    workers died on every attempt is split, and each of its tasks is run once more alone (on Dask: as often as
    the scheduler allows), so one task that kills its workers does not take the others of its chunk with it.
    Locally every worker holds one task; on Dask at most two tasks per worker thread are submitted at a time, one
    after a worker died (the rest wait here), and a task charged only with deaths it shared with other tasks is
    run again: a death is not charged to the tasks queued on the dead worker (see the module notes).
    """
    runner = as_runner(runner)
    check_chunk_size(chunk_size)
    if chunk_size != 1 and runner.parallel:
        yield from _chunked_run(function, tasks, runner, context, on_death, ChunkSizer(chunk_size))
    elif runner.distributed:
        yield from _dask_run(function, tasks, runner, context, on_death)
    elif runner.workers == 1:
        for task in tasks:
            try:
                yield Outcome(task, value=function(context, task.payload))
            except Exception as error:  # the caller decides (e.g. an error row)
                yield Outcome(task, exception=error)
    else:
        yield from _local_run(function, tasks, runner, context, on_death)


class ChunkSizer:
    """The size of the next chunk: fixed, or (``"auto"``) about :data:`CHUNK_SECONDS` of work on a worker.

    ``"auto"`` starts at 1 task per chunk; once chunks have come back, the size is :data:`CHUNK_SECONDS` over the
    mean time of a task so far (seconds measured on the workers, ``time.perf_counter`` around the tasks), between
    1 and :data:`MAX_CHUNK`, and it at most doubles from one chunk to the next (a short run still spreads over
    every worker)."""

    def __init__(self, size: int | str):
        self.fixed = None if size == "auto" else int(size)
        self.tasks, self.seconds, self.last = 0, 0.0, 1

    def record(self, tasks: int, seconds: float) -> None:
        """A chunk of ``tasks`` tasks took ``seconds`` on its worker."""
        self.tasks += tasks
        self.seconds += seconds

    @property
    def per_task(self) -> float | None:
        """Mean seconds per task so far (None before the first chunk came back)."""
        return self.seconds / self.tasks if self.tasks else None

    def next_size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.per_task is None:
            return 1
        target = max(1, min(MAX_CHUNK, round(CHUNK_SECONDS / max(self.per_task, 1e-6))))
        self.last = min(target, 2 * self.last)
        return self.last


def _chunked_run(function, tasks: Iterable[Task], runner: Runner, context, on_death,
                 sizer: ChunkSizer) -> Iterator[Outcome]:
    def chunks() -> Iterator[Task]:
        iterator = iter(tasks)
        while chunk := list(itertools.islice(iterator, sizer.next_size())):
            yield Task(chunk, [task.payload for task in chunk])

    def chunk_death(chunk: Task, message: str, retried: bool) -> None:
        for task in chunk.key:
            on_death(task, message, retried)

    def split(chunk: Task) -> list[Task]:
        return [Task([task], [task.payload]) for task in chunk.key] if len(chunk.key) > 1 else []

    for outcome in _run_chunks(functools.partial(_apply_chunk, function), chunks(), runner, context,
                               None if on_death is None else chunk_death, split):
        if outcome.ok:
            seconds, values = outcome.value
            sizer.record(len(values), seconds)
        for k, task in enumerate(outcome.task.key):
            if outcome.ok:
                ok, value = values[k]
                yield Outcome(task, value=value if ok else None, exception=None if ok else value,
                              deaths=outcome.deaths)
            else:
                yield Outcome(task, exception=outcome.exception, error=outcome.error, deaths=outcome.deaths)


def _run_chunks(function, chunks, runner: Runner, context, on_death, split):
    if runner.distributed:
        return _dask_run(function, chunks, runner, context, on_death, split)
    return _local_run(function, chunks, runner, context, on_death, split)


def _apply_chunk(function, context, payloads: list) -> tuple[float, list[tuple[bool, Any]]]:
    """A chunk of tasks on a worker: its time (s, wall) and (ok, value or exception) of each task."""
    start = time.perf_counter()
    out = []
    for payload in payloads:
        try:
            out.append((True, function(context, payload)))
        except Exception as error:
            out.append((False, error))
    return time.perf_counter() - start, out


# -- local worker processes --------------------------------------------------------------------------------

def _worker_main(conn, function, context, parent: int) -> None:
    """A local worker: dies with its parent, runs one task per message until told to stop."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        number, payload = message
        try:
            reply = (number, True, function(context, payload))
        except Exception as error:
            reply = (number, False, error)
        try:
            conn.send(reply)
        except (BrokenPipeError, ConnectionError, EOFError, OSError):  # the run stopped meanwhile
            return
        except Exception as error:  # an unpicklable result or exception: say what it was
            with contextlib.suppress(Exception):
                conn.send((number, False, CGGPRError(f"{type(error).__name__}: {error}")))


def death_message(exitcode: int | None) -> str:
    """``worker died (signal 9: SIGKILL, e.g. by the out-of-memory killer)`` or ``worker died (exit code N)``."""
    if exitcode is not None and exitcode < 0:
        number = -exitcode
        try:
            label = signal.Signals(number).name
        except ValueError:
            label = "unknown signal"
        hint = ", e.g. by the out-of-memory killer" if number == signal.SIGKILL else ""
        return f"{WORKER_DIED} (signal {number}: {label}{hint})"
    return f"{WORKER_DIED} (exit code {exitcode})"


class _Worker:
    def __init__(self, ctx, function, context):
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, function, context, os.getpid()), daemon=True,
                                   name="cggpr-worker")
        self.process.start()
        child.close()
        self.number: int | None = None  # the task it holds

    def send(self, number: int, payload) -> bool:
        try:
            self.conn.send((number, payload))
        except (BrokenPipeError, ConnectionError, EOFError, OSError):
            return False
        self.number = number
        return True

    def receive(self) -> tuple[bool, Any] | None:
        """(ok, value or exception) of the task it held, or None if it died before sending it."""
        if self.conn.poll():
            with contextlib.suppress(EOFError, OSError, ConnectionError):
                number, ok, value = self.conn.recv()
                if number == self.number:
                    return ok, value
        return None

    def exitcode(self) -> int | None:
        self.process.join(timeout=5)
        return self.process.exitcode

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(None)
        with contextlib.suppress(Exception):
            self.conn.close()
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=2)


@contextlib.contextmanager
def single_threaded_children():
    """Worker processes use one BLAS/featomic/OpenMP thread each (the processes already use the cores)."""
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _local_run(function, tasks: Iterable[Task], runner: Runner, context, on_death,
               split: Callable[[Task], list[Task]] | None = None) -> Iterator[Outcome]:
    """``split(task)``: the tasks to run instead of one whose workers died on every attempt (each once more)."""
    ctx = multiprocessing.get_context("spawn")
    pool: list[_Worker] = []
    todo = iter(tasks)
    held: dict[int, Outcome] = {}  # task number -> its outcome so far (deaths counted)
    retry: list[int] = []  # tasks whose worker died, to run again first
    numbers = itertools.count()
    exhausted, deaths_in_a_row, max_deaths = False, 0, max(5, 2 * runner.workers) + runner.retries

    def lost(worker: _Worker) -> str:
        """Remove a dead worker; its death message."""
        nonlocal deaths_in_a_row
        pool.remove(worker)
        message = death_message(worker.exitcode())
        worker.stop()
        deaths_in_a_row += 1
        if deaths_in_a_row > max_deaths:
            raise CGGPRError(f"{deaths_in_a_row} worker processes died in a row (last: {message}); run with "
                             "--workers 1 to see why")
        return message

    def next_number() -> int | None:
        nonlocal exhausted
        if retry:
            return retry.pop(0)
        task = next(todo, None)
        if task is None:
            exhausted = True
            return None
        number = next(numbers)
        held[number] = Outcome(task)
        return number

    try:
        with single_threaded_children():
            while True:
                while True:  # keep every worker busy
                    idle = next((w for w in pool if w.number is None), None)
                    if idle is None:
                        if len(pool) >= runner.workers or (exhausted and not retry):
                            break
                        idle = _Worker(ctx, function, context)
                        pool.append(idle)
                    number = next_number()
                    if number is None:
                        break
                    while not idle.send(number, held[number].task.payload):  # it died while idle
                        lost(idle)
                        idle = _Worker(ctx, function, context)
                        pool.append(idle)
                busy = [w for w in pool if w.number is not None]
                if not busy:
                    return
                ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
                for worker in busy:
                    if worker.conn not in ready and worker.process.sentinel not in ready:
                        continue
                    number, reply = worker.number, worker.receive()
                    worker.number = None
                    outcome = held[number]
                    if reply is None:
                        message = lost(worker)
                        outcome.deaths += 1
                        parts = split(outcome.task) if split is not None and outcome.deaths > runner.retries else []
                        if on_death is not None:
                            on_death(outcome.task, message, outcome.deaths <= runner.retries or bool(parts))
                        if outcome.deaths <= runner.retries:
                            retry.append(number)
                            continue
                        if parts:  # each part once more (its deaths so far: the chunk's)
                            del held[number]
                            for part in parts:
                                held[part_number := next(numbers)] = Outcome(part, deaths=outcome.deaths)
                                retry.append(part_number)
                            continue
                        outcome.error = f"{message} on each of {outcome.deaths} attempts"
                    else:
                        deaths_in_a_row = 0
                        ok, value = reply
                        if ok:
                            outcome.value = value
                        else:
                            outcome.exception = value
                    del held[number]
                    yield outcome
    finally:
        for worker in pool:
            worker.stop()


# -- Dask ----------------------------------------------------------------------------------------------------

def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise OptionError(f"running on a Dask cluster needs the optional dependency 'distributed': "
                          f"{INSTALL_HINT}") from None
    return distributed


#: On a Dask worker: the context of the current run (key of its scattered copy -> this process's own copy).
_CONTEXTS: dict[str, Any] = {}
_CONTEXTS_LOCK = threading.Lock()
#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_DONE = False


def _call(function, key: str | None, context, payload):
    """What a Dask worker runs: ``function(context, payload)``, with this worker process's own copy of the context.

    The context arrives once per worker (scattered, ``broadcast=True``), but the scattered object is not used as
    is: it is copied once per worker process (a pickle round trip in this process, as a local worker receives
    it). Measured (benchmarks/bench_cluster.py, docs/cluster.md): the model's inducing-point matrix (AB2:
    2000 x 4752, 76 MB, read in full by every prediction) as received by a worker that got it from the other
    worker (Dask replicates a broadcast scatter worker to worker) made each kernel product 2.5x slower in CPU
    time on that worker than on a copy; the copy costs ~0.1 s once.

    Also once per process (:func:`_worker_setup`): Rayon (featomic's thread pool) limited to one thread unless the
    worker's environment says otherwise, and glibc's malloc tuned back from Dask's ``MALLOC_TRIM_THRESHOLD_``."""
    _worker_setup()
    if key is not None:
        with _CONTEXTS_LOCK:
            own = _CONTEXTS.get(key)
            if own is None:
                _CONTEXTS.clear()  # a previous run's context
                own = _CONTEXTS[key] = pickle.loads(pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL))
        context = own
    return function(context, payload)


def _worker_setup() -> None:
    """Once per Dask worker process: one Rayon thread (as local workers, :func:`single_threaded_children`: the
    worker processes already use the cores; Dask's nanny sets the OpenMP/BLAS variables itself, not Rayon's),
    and malloc's thresholds raised if the nanny set ``MALLOC_TRIM_THRESHOLD_`` (Dask's default 64 KiB, to give
    memory back to the system at once): that variable also fixes glibc's mmap threshold at 128 KiB, so every
    array above it (a structure's descriptors and kernel rows) is a fresh mmap with its pages faulted in again:
    4x the page faults and +9% CPU per structure, measured with local workers given the same variable. With
    the thresholds at 32 MiB (mmap) and 64 MiB (trim) at most ~64 MiB more stay with the process."""
    global _MALLOC_DONE
    if _MALLOC_DONE:
        return
    _MALLOC_DONE = True
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") and sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # not glibc: nothing to undo
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
            libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)


def check_available(runner: Runner) -> None:
    """Raise :class:`~ase_cggpr.errors.OptionError` (one line: what to install or where to run) before any work if
    ``runner`` cannot run here: Dask not installed, or the batch system's submit command missing."""
    if runner.distributed:
        _import_distributed()
    if runner.cluster is not None:
        _jobqueue_class(runner)


def dask_environment() -> dict[str, str]:
    """:data:`DASK_CONFIG` as Dask's environment variables (``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False``,
    ...), for ``dask worker`` / ``dask scheduler`` processes started by hand or by a batch job."""
    return {"DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
            for key, value in DASK_CONFIG.items()}


def _jobqueue_class(runner: Runner):
    try:
        import dask_jobqueue
    except ImportError:
        raise OptionError(f"--cluster {runner.cluster} needs the optional dependency 'dask-jobqueue': "
                          f"{INSTALL_HINT}") from None
    kind = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[runner.cluster]
    submit = kind.job_cls.submit_command
    if shutil.which(submit) is None:  # else the jobs fail in the background and the run waits forever
        raise OptionError(f"--cluster {runner.cluster} submits its workers with {submit}, which is not on this "
                          "machine: run the command on the cluster's login node")
    return kind


@contextlib.contextmanager
def dask_client(runner: Runner):
    """A ``distributed.Client`` for ``runner`` (closing it, and a batch-job cluster it started, at exit)."""
    distributed = _import_distributed()
    if runner.cluster is not None:
        import dask

        kind = _jobqueue_class(runner)
        options = dict(runner.cluster_options)
        prologue = (options.pop("job_script_prologue", None)
                    or dask.config.get(f"jobqueue.{runner.cluster}.job-script-prologue", None) or [])
        prologue = [prologue] if isinstance(prologue, str) else list(prologue)  # --cluster-option: one line
        options["job_script_prologue"] = [f"export {k}={v}" for k, v in dask_environment().items()] + prologue
        with dask.config.set({**DASK_CONFIG, "distributed.scheduler.allowed-failures": runner.retries}):
            try:
                cluster = kind(**options)
            except (ValueError, TypeError) as error:
                raise OptionError(f"--cluster {runner.cluster}: {' '.join(str(error).split())} (set it with "
                                  "--cluster-option KEY=VALUE or dask-jobqueue's configuration file)") from None
            with cluster, distributed.Client(cluster) as client:
                cluster.scale(jobs=runner.jobs)
                yield client
        return
    import dask

    with dask.config.set(DASK_CONFIG), _connect(distributed, str(runner.scheduler)) as client:
        yield client


@contextlib.contextmanager
def _connect(distributed, address: str):
    try:
        if "://" not in address and (os.path.isfile(address) or address.endswith(".json")):  # a scheduler file
            client = distributed.Client(scheduler_file=_scheduler_file(address), timeout=f"{CONNECT_TIMEOUT}s")
        else:
            client = distributed.Client(address, timeout=f"{CONNECT_TIMEOUT}s")
    except (OSError, TimeoutError, ValueError, KeyError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise OptionError(f"cannot connect to the Dask scheduler {address}: {reason}") from None
    with client:
        yield client


def _scheduler_file(path: str) -> str:
    """``path`` once it exists (a scheduler just started writes it; wait at most :data:`CONNECT_TIMEOUT` s) and
    holds a scheduler's address."""
    end = time.monotonic() + CONNECT_TIMEOUT
    while not os.path.isfile(path):
        if time.monotonic() > end:
            raise OptionError(f"cannot connect to the Dask scheduler {path}: no such scheduler file after "
                              f"{CONNECT_TIMEOUT} s (start it with: dask scheduler --scheduler-file {path})")
        time.sleep(0.2)
    try:
        with open(path, encoding="utf-8") as handle:
            address = json.load(handle).get("address")
    except (OSError, ValueError, AttributeError):
        address = None
    if not isinstance(address, str):
        raise OptionError(f"cannot connect to the Dask scheduler {path}: not a scheduler file (JSON with an "
                          "'address', as written by dask scheduler --scheduler-file)")
    return path


def _workers(client) -> dict[str, int]:
    """The cluster's workers: address -> threads (empty if the scheduler cannot say)."""
    with contextlib.suppress(Exception):
        return {address: int(w.get("nthreads", 1))
                for address, w in client.scheduler_info(n_workers=-1)["workers"].items()}
    return {}


class _SyncCancelRace(logging.Filter):
    """Drops the one log record of a race in ``distributed.utils.sync`` (distributed 2026.11): a Ctrl-C while this
    process waits on the scheduler makes the event loop run ``sync``'s ``cancel`` before the future it cancels
    exists, and tornado logs the NameError with its traceback. Harmless (the run stops as it should): not shown."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, NameError):
            return True
        frames = traceback.extract_tb(error.__traceback__)
        return not (frames and frames[-1].name == "cancel"
                    and frames[-1].filename.replace(os.sep, "/").endswith("distributed/utils.py"))


@contextlib.contextmanager
def _quiet_interrupts():
    log = logging.getLogger("tornado.application")
    race = _SyncCancelRace()
    log.addFilter(race)
    try:
        yield
    finally:
        log.removeFilter(race)


class _Deaths:
    """Worker deaths on the cluster as the scheduler announces them (events pushed to the client, no polling): which
    of this run's task keys each unexpected death held (the event's ``processing-tasks``), and whether a key was the
    worker's only task then (it was running: the death is its own) or shared the worker with other tasks (it may
    have been queued there behind the task that killed it). The events are those of each worker's own topic (its
    address; subscribed as workers are counted): the scheduler's ``"all"`` topic is not used, as its ``replicate``
    event (any client's broadcast scatter) holds objects the scheduler cannot send (distributed 2026.11), which
    breaks the subscriber's connection. The handler runs in the client's event-loop thread, before the dead task's
    result arrives (one ordered stream)."""

    def __init__(self, client):
        self.client = client
        self.lock = threading.Lock()
        self.changed = False
        self.topics: set[str] = set()  # the worker addresses subscribed to
        self.ours: set = set()  # the keys of this run's running tasks
        self.alone: dict[Any, int] = {}  # our key -> deaths it was the worker's only task
        self.shared: dict[Any, int] = {}  # our key -> deaths it shared the worker with other tasks
        self.lost: set = set()  # scattered keys lost with the workers that held them
        self.died = False  # a worker died holding one of our tasks

    def __call__(self, event) -> None:
        _, message = event
        if not isinstance(message, dict) or message.get("action") != "remove-worker":
            return
        with self.lock:
            self.changed = True  # count the workers again (and subscribe to the one that replaces it)
            self.lost.update(message.get("lost-scattered-tasks") or ())
            if not message.get("expected"):
                held = list(message.get("processing-tasks") or ())
                counts = self.alone if len(held) == 1 else self.shared
                for key in held:
                    if key in self.ours:
                        counts[key] = counts.get(key, 0) + 1
                        self.died = True

    def follow(self, addresses: Iterable[str]) -> None:
        """Subscribe to the events of these workers (not yet followed)."""
        for address in set(addresses) - self.topics:
            with contextlib.suppress(Exception):
                self.client.subscribe_topic(address, self)
                self.topics.add(address)

    def close(self) -> None:
        for address in self.topics:
            with contextlib.suppress(Exception):
                self.client.unsubscribe_topic(address)

    def take_changed(self) -> bool:
        with self.lock:
            changed, self.changed = self.changed, False
            return changed

    def was_lost(self, key) -> bool:
        with self.lock:
            return key in self.lost

    def watch(self, key) -> None:
        with self.lock:
            self.ours.add(key)

    def pop(self, key) -> tuple[int, int]:
        """(alone, shared) deaths of ``key``, forgotten here."""
        with self.lock:
            self.ours.discard(key)
            return self.alone.pop(key, 0), self.shared.pop(key, 0)


def _dask_run(function, tasks: Iterable[Task], runner: Runner, context, on_death,
              split: Callable[[Task], list[Task]] | None = None) -> Iterator[Outcome]:
    """Tasks on Dask, a few per worker thread at a time (the queue stays here, see :func:`run_tasks`)."""
    distributed = _import_distributed()
    from distributed.scheduler import KilledWorker

    with _quiet_interrupts(), dask_client(runner) as client:
        if not client.scheduler_info()["workers"]:  # e.g. batch jobs still queued: wait (Ctrl-C stops)
            print(f"waiting for the first Dask worker of {runner.describe()} ...", file=sys.stderr, flush=True)
            client.wait_for_workers(1)
        deaths_seen = _Deaths(client)  # without its events, every KilledWorker counts as the task's own
        # the context as one object, once per worker (each worker copies it once: _call)
        def scatter():
            return client.scatter([context], broadcast=True, hash=False)[0] if context is not None else None

        shared = scatter()
        key = None if shared is None else str(shared.key)
        scatters = 1
        todo = iter(tasks)
        # future -> its task, the task's deaths before it, its resubmissions after deaths it shared, its context key
        running: dict[Any, tuple[Task, int, int, str | None]] = {}
        again: list[tuple[Task, int, int]] = []  # tasks to run (again) first: split parts, shared deaths
        # tasks as they finish; the freed thread gets its next task before this one's result is fetched
        pending = distributed.as_completed(raise_errors=False)
        exhausted = False
        try:
            threads, counted, soon = 1, -float("inf"), -float("inf")

            def fill() -> None:
                nonlocal exhausted, threads, counted, soon
                now = time.monotonic()
                if deaths_seen.take_changed():  # a worker died: count (and follow) its replacement soon
                    counted, soon = -float("inf"), now + 10 * THREADS_SOON
                if now - counted > (THREADS_SOON if now < soon else THREADS_REFRESH):
                    workers = _workers(client)  # a round trip: not per task
                    threads, counted = sum(workers.values()), time.monotonic()
                    deaths_seen.follow(workers)
                # two tasks per worker thread (one waiting on the worker: it never idles between tasks) until a
                # worker dies; then one: the scheduler gives each task an idle thread, and a worker that dies holds
                # only the task it was running (Dask charges a death to every task the worker holds)
                while len(running) < max(1, threads) * (1 if deaths_seen.died else PER_THREAD):
                    if again:
                        task, deaths, reruns = again.pop(0)
                    elif not exhausted and (task := next(todo, None)) is not None:
                        deaths, reruns = 0, 0
                    else:
                        exhausted = True
                        return
                    name = f"cggpr-{uuid.uuid4().hex}"
                    deaths_seen.watch(name)  # before the scheduler can have it
                    future = client.submit(_call, function, key, shared, task.payload, key=name, pure=False)
                    running[future] = task, deaths, reruns, key
                    pending.add(future)

            fill()
            while running:
                future = next(pending)
                task, deaths, reruns, its_key = running.pop(future)
                fill()
                alone, shared_deaths = deaths_seen.pop(future.key)
                outcome = Outcome(task, deaths=deaths + alone + shared_deaths)  # the scheduler's retries included
                error, cancelled = None, future.status == "cancelled"
                if future.status == "error":
                    error = future.exception()
                elif not cancelled:
                    try:  # a round trip (the freed thread already has its next task)
                        outcome.value = future.result()
                    except Exception as lost:  # its worker died before it was fetched
                        cancelled = isinstance(lost, concurrent.futures.CancelledError)
                        error = None if cancelled else lost
                if cancelled:
                    if its_key is not None and deaths_seen.was_lost(its_key) and scatters <= 1 + runner.retries:
                        # the context was lost (every worker holding it died, e.g. a replacement worker had not
                        # fetched it yet), and the tasks needing it were cancelled: send it again, run them again
                        if its_key == key:
                            shared, scatters = scatter(), scatters + 1
                            key = str(shared.key)
                        again.append((task, outcome.deaths, reruns))
                        future.release()
                        fill()
                        continue
                    error = CGGPRError("the task was cancelled on the Dask cluster")  # by someone else
                if isinstance(error, KilledWorker):
                    seen = alone + shared_deaths
                    if not seen:  # no events from this scheduler
                        outcome.deaths += 1 + runner.retries if runner.cluster is not None else 1
                    message = (f"{WORKER_DIED} on every attempt the Dask scheduler allowed "
                               f"(distributed.scheduler.allowed-failures): {' '.join(str(error).split())}")
                    split_into = split(task) if split is not None else []
                    # never the worker's only task when it died: perhaps queued behind the task that killed it
                    innocent = bool(not split_into and seen and not alone and reruns <= runner.retries)
                    if on_death is not None:
                        on_death(task, message, bool(split_into) or bool(innocent))
                    if split_into:  # each part again, alone
                        again.extend((part, outcome.deaths, 0) for part in split_into)
                    elif innocent:
                        again.append((task, outcome.deaths, reruns + 1))
                    if split_into or innocent:
                        future.release()
                        fill()
                        continue
                    outcome.error = message
                elif error is not None:
                    outcome.exception = error
                future.release()
                yield outcome
                fill()
        finally:
            deaths_seen.close()
            if running:
                with contextlib.suppress(Exception):
                    client.cancel(list(running))
            if shared is not None:  # released (not cancelled: the scheduler's answer would find the client closed)
                with contextlib.suppress(Exception):
                    shared.release()
