"""ase_cggpr.tasks with local worker processes (no Dask needed): results, exceptions, retries after real SIGKILLs."""

from __future__ import annotations

import os
import signal

import pytest

from ase_cggpr.errors import OptionError
from ase_cggpr.tasks import MAX_CHUNK, RETRIES, ChunkSizer, Runner, Task, run_tasks


def _work(context, payload):
    """``context`` times ``payload``; "poison" kills its worker (SIGKILL, as the out-of-memory killer would)."""
    if payload == "poison":
        os.kill(os.getpid(), signal.SIGKILL)
    if payload == "bad":
        raise ValueError("a bad payload")
    return context * payload


@pytest.mark.parametrize("chunk_size", [1, "auto"])
def test_local_workers_retry_a_killed_task_then_report_it(chunk_size):
    """A task that kills every worker it runs on is run 1 + RETRIES times, then reported; the others finish. In a
    chunk, the chunk is run 1 + RETRIES times, then split: each of its tasks once more alone, so only the killer
    is lost (after RETRIES + 2 attempts)."""
    tasks = [Task(k, k) for k in range(10)] + [Task("poison", "poison"), Task("bad", "bad")]
    deaths = []
    outcomes = {o.task.key: o for o in run_tasks(_work, tasks, Runner(workers=2), context=2, chunk_size=chunk_size,
                                                  on_death=lambda task, message, retried: deaths.append(retried))}
    assert len(outcomes) == 12
    assert all(outcomes[k].ok and outcomes[k].value == 2 * k for k in range(10))
    assert isinstance(outcomes["bad"].exception, ValueError)
    poison = outcomes["poison"]
    attempts = RETRIES + 1 if chunk_size == 1 else RETRIES + 2
    assert poison.deaths == attempts and poison.error.startswith("worker died (signal 9: SIGKILL")
    assert f"on each of {attempts} attempts" in poison.error
    if chunk_size == 1:
        assert deaths == [True] * RETRIES + [False]
    else:  # the poison's chunk-mates were retried (and then succeeded alone)
        assert deaths.count(False) == 1 and len(deaths) >= attempts


def test_auto_chunks_grow_to_about_a_second():
    """``"auto"``: chunks start at one task and grow (at most doubling) to CHUNK_SECONDS of measured work."""
    sizer = ChunkSizer("auto")
    assert sizer.next_size() == 1
    sizer.record(4, 0.2)  # 50 ms per task: 20 per second
    assert [sizer.next_size() for _ in range(6)] == [2, 4, 8, 16, 20, 20]
    sizer.record(1, 10.0)  # slow tasks: one per chunk
    assert sizer.next_size() == 1
    fast = ChunkSizer("auto")
    fast.record(1000, 0.001)
    assert max(fast.next_size() for _ in range(12)) == MAX_CHUNK
    assert ChunkSizer(8).next_size() == 8
    for bad in (0, -1, "big", 2.5, True):
        with pytest.raises(OptionError, match="chunk size must be"):
            Runner(chunk_size=bad)


def test_serial_run_and_options():
    outcomes = list(run_tasks(_work, [Task(1, 3), Task(2, "bad")], 1, context=5))
    assert outcomes[0].value == 15 and isinstance(outcomes[1].exception, ValueError)
    with pytest.raises(OptionError, match="either --scheduler"):
        Runner(scheduler="tcp://127.0.0.1:8786", cluster="slurm")
    with pytest.raises(OptionError, match="workers must be"):
        Runner(workers=0)
