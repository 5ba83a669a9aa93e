"""A task that crashes its interpreter, is killed for its memory or hangs past its
walltime costs only itself: the tasks beside it, on the same workers at the same time,
each run exactly once and succeed (their side-effect logs say how often they ran)."""

from __future__ import annotations

import pytest

from ferry import Client
from ferry.errors import RemoteExecutionError


def logged(path, i):
    """Appends a line to its own log (counts its executions), then answers."""
    with open(path, "a") as f:
        f.write("ran\n")
    return i * 10


def segfault(_):
    import ctypes

    return ctypes.string_at(0)


def leak_until_killed(megabytes):
    """Grows until it is killed (SIGKILL, as the kernel's OOM killer does)."""
    import os
    import signal

    kept = bytearray(megabytes << 20)
    for i in range(0, len(kept), 4096):
        kept[i] = 1
    os.kill(os.getpid(), signal.SIGKILL)


def hang(seconds):
    import time

    time.sleep(seconds)


def test_a_crash_a_kill_and_a_hang_affect_only_their_own_tasks(stack, tmp_path):
    client = Client(stack.url, token=stack.token)
    ep = stack.endpoint_id
    bad = {
        "segfault": client.run(0, endpoint_id=ep, function_id=client.register_function(segfault), max_retries=0),
        "killed": client.run(
            200, endpoint_id=ep, function_id=client.register_function(leak_until_killed), max_retries=0
        ),
        "hang": client.run(60, endpoint_id=ep, function_id=client.register_function(hang), walltime=1),
    }
    good = client.register_function(logged)
    batch = client.create_batch()
    logs = [tmp_path / f"task-{i}.log" for i in range(12)]
    for i, log in enumerate(logs):
        batch.add(good, str(log), i)
    session = client.submit_session(ep, batch)

    results = [client.get_result(t, timeout=90) for t in session.task_ids]
    assert results == [i * 10 for i in range(12)]
    assert [log.read_text().count("ran") for log in logs] == [1] * 12, "each ran exactly once"
    for name in ("segfault", "killed"):
        with pytest.raises(RemoteExecutionError) as info:
            client.get_result(bad[name], timeout=90)
        assert client.get_task(bad[name])["status"] == "failed", name
        assert "died" in str(info.value) or "signal" in str(info.value), f"{name}: {info.value}"
    with pytest.raises(RemoteExecutionError, match="walltime"):
        client.get_result(bad["hang"], timeout=90)
    assert client.get_task(bad["hang"])["history"][-1]["reason"] == "timeout"
    # The stack goes on: a task after all this runs.
    assert client.get_result(client.run("/dev/null", 7, endpoint_id=ep, function_id=good), timeout=60) == 70
