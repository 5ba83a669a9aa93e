"""Scheduling at the endpoint, through the real stack."""

from __future__ import annotations

import pytest

from ferry import Client
from ferrystack import Stack


def sleepy(seconds):
    import time

    time.sleep(seconds)
    return seconds


def label(x):
    return x


@pytest.fixture(scope="module")
def one_slot():
    """A stack whose endpoint has one worker holding one task at a time, so every other
    task waits at the endpoint, where the order is decided."""
    stack = Stack(workers=1)
    stack.env["FERRY_TASKS_PER_WORKER"] = "1"
    stack.start()
    yield stack
    stack.stop()


def test_the_highest_priority_runs_first_and_first_come_within_one(one_slot):
    client = Client(one_slot.url, token=one_slot.token)
    slow, fid = client.register_function(sleepy), client.register_function(label)
    blocker = client.run(1.5, endpoint_id=one_slot.endpoint_id, function_id=slow)
    sessions = []
    for name, priority in [("low", None), ("high", 5), ("mid", 2), ("high2", 5)]:
        batch = client.create_batch()
        for i in range(4):
            batch.add(fid, f"{name}-{i}")
        sessions.append(client.submit_session(one_slot.endpoint_id, batch, priority=priority))
    client.get_result(blocker, timeout=60)
    done = []
    for session in sessions:
        session.wait(timeout=60)
        for task_id in session.task_ids:
            doc = client.get_task(task_id)
            done.append((float(doc["completion_t"]), client.get_result(task_id)))
    order = [name for _, name in sorted(done)]
    assert order == (
        [f"high-{i}" for i in range(4)]
        + [f"high2-{i}" for i in range(4)]
        + [f"mid-{i}" for i in range(4)]
        + [f"low-{i}" for i in range(4)]
    ), order


def test_a_priority_that_is_not_an_integer_is_refused_naming_it(one_slot):
    import json
    import urllib.error
    import urllib.request

    client = Client(one_slot.url, token=one_slot.token)
    fid = client.register_function(label)
    body = {
        "endpoint_id": one_slot.endpoint_id,
        "priority": "high",
        "tasks": [{"function_id": fid, "payload": ""}],
    }
    request = urllib.request.Request(
        f"{one_slot.url}/v1/tasks",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {one_slot.token}", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400 and "priority" in info.value.read().decode()
