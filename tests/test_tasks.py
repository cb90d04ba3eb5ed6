"""ase_cggpr.tasks with local worker processes (no Dask needed): results, exceptions, retries after real SIGKILLs."""

from __future__ import annotations

import os
import signal

import pytest

from ase_cggpr.errors import OptionError
from ase_cggpr.tasks import RETRIES, Runner, Task, run_tasks


def _work(context, payload):
    """``context`` times ``payload``; "poison" kills its worker (SIGKILL, as the out-of-memory killer would)."""
    if payload == "poison":
        os.kill(os.getpid(), signal.SIGKILL)
    if payload == "bad":
        raise ValueError("a bad payload")
    return context * payload


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_local_workers_retry_a_killed_task_then_report_it(chunk_size):
    """A task that kills every worker it runs on is run 1 + RETRIES times, then reported; the others finish."""
    tasks = [Task(k, k) for k in range(10)] + [Task("poison", "poison"), Task("bad", "bad")]
    deaths = []
    outcomes = {o.task.key: o for o in run_tasks(_work, tasks, Runner(workers=2), context=2, chunk_size=chunk_size,
                                                  on_death=lambda task, message, retried: deaths.append(retried))}
    assert len(outcomes) == 12
    assert all(outcomes[k].ok and outcomes[k].value == 2 * k for k in range(10) if chunk_size == 1 or k < 9)
    poison = outcomes["poison"]
    assert poison.deaths == RETRIES + 1 and poison.error.startswith("worker died (signal 9: SIGKILL")
    assert f"on each of {RETRIES + 1} attempts" in poison.error
    assert isinstance(outcomes["bad"].exception, ValueError) or chunk_size > 1
    if chunk_size == 1:
        assert deaths == [True] * RETRIES + [False]


def test_serial_run_and_options():
    outcomes = list(run_tasks(_work, [Task(1, 3), Task(2, "bad")], 1, context=5))
    assert outcomes[0].value == 15 and isinstance(outcomes[1].exception, ValueError)
    with pytest.raises(OptionError, match="either --scheduler"):
        Runner(scheduler="tcp://127.0.0.1:8786", cluster="slurm")
    with pytest.raises(OptionError, match="workers must be"):
        Runner(workers=0)
