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


def mark(path, i):
    """A short task that leaves one line per run in `path`: executions, not records."""
    with open(path, "a") as f:
        f.write(f"{i}\n")
    return i


@pytest.fixture(scope="module")
def two_workers():
    """Two workers, each holding up to 16 tasks (the default)."""
    stack = Stack(workers=2)
    stack.start()
    yield stack
    stack.stop()


def _finished_at(client, task_id):
    return float(client.get_task(task_id)["completion_t"])


@pytest.mark.parametrize("long_kind", ["python", "shell"])
def test_short_tasks_queued_behind_a_long_one_go_to_the_idle_worker(two_workers, tmp_path, long_kind):
    """One batch: a long task, then short ones. The manager spreads them over both
    workers, so half the short ones land behind the long task; they are taken back and
    run on the other worker, each exactly once, long before the long task ends."""
    from ferry import ShellFunction

    client = Client(two_workers.url, token=two_workers.token)
    if long_kind == "python":
        long_fid, long_args = client.register_function(sleepy), (4,)
    else:
        long_fid, long_args = client.register_function(ShellFunction("sleep 4")), ()
    short = client.register_function(mark)
    log = tmp_path / "runs.log"
    batch = client.create_batch()
    batch.add(long_fid, *long_args)
    for i in range(12):
        batch.add(short, str(log), i)
    session = client.submit_session(two_workers.endpoint_id, batch)
    long_id, short_ids = session.task_ids[0], session.task_ids[1:]
    results = [client.get_result(t, timeout=60) for t in short_ids]
    assert results == list(range(12))
    client.get_result(long_id, timeout=60)
    last_short = max(_finished_at(client, t) for t in short_ids)
    assert _finished_at(client, long_id) - last_short > 2.5, "short tasks waited for the long one"
    runs = sorted(int(line) for line in log.read_text().split())
    assert runs == list(range(12)), f"each short task runs once: {runs}"


def test_a_worker_running_a_long_task_takes_no_more_while_another_is_idle(two_workers, tmp_path):
    """Short tasks that come while a long one runs all go to the other worker."""
    client = Client(two_workers.url, token=two_workers.token)
    long_fid, short = client.register_function(sleepy), client.register_function(mark)
    log = tmp_path / "runs.log"
    long_id = client.run(3, endpoint_id=two_workers.endpoint_id, function_id=long_fid)
    import time

    deadline = time.monotonic() + 30
    while client.get_task(long_id)["status"] != "running":  # reported past 2 ms of running
        assert time.monotonic() < deadline, "the long task never ran"
        time.sleep(0.05)
    batch = client.create_batch()
    for i in range(10):
        batch.add(short, str(log), i)
    short_ids = client.submit_session(two_workers.endpoint_id, batch).task_ids
    assert [client.get_result(t, timeout=60) for t in short_ids] == list(range(10))
    client.get_result(long_id, timeout=60)
    last_short = max(_finished_at(client, t) for t in short_ids)
    assert _finished_at(client, long_id) - last_short > 1.5
    assert sorted(int(line) for line in log.read_text().split()) == list(range(10))


@pytest.fixture(scope="module")
def tagged():
    """An endpoint whose node says it has the tag `avx512` (and no GPU)."""
    stack = Stack(workers=1)
    stack.env["FERRY_NODE_TAGS"] = "avx512, bigmem"
    stack.env["FERRY_NODE_GPUS"] = "0"
    stack.start()
    yield stack
    stack.stop()


def test_a_task_runs_where_its_requirements_are_met_and_fails_saying_why_where_not(tagged):
    from ferry.errors import RemoteExecutionError

    client = Client(tagged.url, token=tagged.token)
    fid = client.register_function(label)
    ok = client.run("fits", endpoint_id=tagged.endpoint_id, function_id=fid, requires={"tags": ["avx512"], "cores": 1})
    assert client.get_result(ok, timeout=60) == "fits"
    batch = client.create_batch()
    batch.add(fid, "also")
    session = client.submit_session(tagged.endpoint_id, batch, requires={"memory_gb": 0.25, "tags": ["bigmem"]})
    assert client.get_result(session.task_ids[0], timeout=60) == "also"
    for requires, says in [({"gpus": 1}, "1 GPUs (it has 0)"), ({"tags": ["sve"]}, "tag sve"), ({"cores": 4096}, "4096 cores")]:
        task = client.run("never", endpoint_id=tagged.endpoint_id, function_id=fid, requires=requires)
        with pytest.raises(RemoteExecutionError) as info:
            client.get_result(task, timeout=60)
        assert says in str(info.value) and "no node of endpoint" in str(info.value), str(info.value)


def test_a_requirement_that_is_not_one_is_refused_naming_it(tagged):
    from ferry.errors import APIError

    client = Client(tagged.url, token=tagged.token)
    fid = client.register_function(label)
    for requires, field in [
        ({"tags": ["no/slash"]}, "requires.tags[0]"),
        ({"memory_gb": -1}, "requires.memory_gb"),
        ({"cpus": 2}, "cpus"),
    ]:
        with pytest.raises(APIError) as info:
            client.run(1, endpoint_id=tagged.endpoint_id, function_id=fid, requires=requires)
        assert info.value.http_status == 400 and field in str(info.value), str(info.value)


def flaky(path, failures, error):
    """Fails `failures` times (raising `error`), then succeeds; one line per run in `path`."""
    import time

    with open(path, "a") as f:
        f.write(f"{time.time()}\n")
    with open(path) as f:
        runs = len(f.read().split())
    if runs <= failures:
        raise {"ConnectionError": ConnectionError, "KeyError": KeyError}[error](f"run {runs}")
    return runs


def test_a_failure_the_retry_policy_names_runs_again_with_backoff_and_others_do_not(two_workers, tmp_path):
    """The remote exception is raised again by get_result once no retry is left."""
    client = Client(two_workers.url, token=two_workers.token)
    fid = client.register_function(flaky)
    log = tmp_path / "flaky.log"
    policy = {"on": ["ConnectionError"], "backoff_secs": 0.3}
    task = client.run(str(log), 2, "ConnectionError", endpoint_id=two_workers.endpoint_id, function_id=fid,
                      max_retries=3, retry=policy)
    assert client.get_result(task, timeout=60) == 3
    runs = [float(t) for t in log.read_text().split()]
    assert len(runs) == 3, "two failures, then the run that succeeded: each once"
    assert runs[1] - runs[0] >= 0.3 and runs[2] - runs[1] >= 0.6, f"waits double: {runs}"
    history = client.get_task(task)["history"]
    attempts = sorted({h["attempt"] for h in history})
    assert attempts == [0, 1, 2], history
    running = [h["attempt"] for h in history if h["state"] == "running"]
    assert running == [0, 1, 2], history

    # Another exception is not retried; nor is one past max_retries.
    other = tmp_path / "other.log"
    task = client.run(str(other), 5, "KeyError", endpoint_id=two_workers.endpoint_id, function_id=fid,
                      max_retries=3, retry=policy)
    with pytest.raises(KeyError):
        client.get_result(task, timeout=60)
    assert len(other.read_text().split()) == 1
    spent = tmp_path / "spent.log"
    task = client.run(str(spent), 5, "ConnectionError", endpoint_id=two_workers.endpoint_id, function_id=fid,
                      max_retries=1, retry={"on": ["exception"], "backoff_secs": 0})
    with pytest.raises(ConnectionError):
        client.get_result(task, timeout=60)
    assert len(spent.read_text().split()) == 2


def test_a_retry_policy_that_is_not_one_is_refused_naming_it(two_workers):
    from ferry.errors import APIError

    client = Client(two_workers.url, token=two_workers.token)
    fid = client.register_function(label)
    for retry, field in [
        ({"on": []}, "retry.on"),
        ({"on": ["not a name"]}, "retry.on[0]"),
        ({"on": ["exception"], "backoff_secs": -1}, "retry.backoff_secs"),
        ({"on": ["exception"], "tries": 3}, "tries"),
    ]:
        with pytest.raises(APIError) as info:
            client.run(1, endpoint_id=two_workers.endpoint_id, function_id=fid, retry=retry)
        assert info.value.http_status == 400 and field in str(info.value), str(info.value)


def host_pid(_i):
    import os

    return os.getpid()


def hog(megabytes):
    """Keeps `megabytes` alive in the host (a leak), returns its pid."""
    import os

    global _kept  # noqa: PLW0603
    _kept = bytearray(megabytes << 20)
    for i in range(0, len(_kept), 4096):
        _kept[i] = 1
    return os.getpid()


@pytest.fixture(scope="module")
def recycling():
    """One worker whose Python host is replaced after 3 tasks or above 150 MiB."""
    stack = Stack(workers=1)
    stack.env["FERRY_RECYCLE_TASKS"] = "3"
    stack.env["FERRY_RECYCLE_RSS_MB"] = "150"
    stack.start()
    yield stack
    stack.stop()


def test_a_python_host_is_recycled_after_n_tasks_and_above_its_memory_limit(recycling):
    client = Client(recycling.url, token=recycling.token)
    fid = client.register_function(host_pid)
    batch = client.create_batch()
    for i in range(7):
        batch.add(fid, i)
    session = client.submit_session(recycling.endpoint_id, batch)
    pids = [client.get_result(t, timeout=60) for t in session.task_ids]
    assert pids[0] == pids[1] == pids[2] and pids[3] == pids[4] == pids[5], pids
    assert len({pids[0], pids[3], pids[6]}) == 3, f"three hosts of 3, 3 and 1 tasks: {pids}"
    leak = client.register_function(hog)
    first = client.get_result(client.run(200, endpoint_id=recycling.endpoint_id, function_id=leak), timeout=60)
    second = client.get_result(client.run(1, endpoint_id=recycling.endpoint_id, function_id=leak), timeout=60)
    assert first != second, "the host that passed 150 MiB was replaced before the next task"
    logs = "".join(p.read_text(errors="replace") for p in recycling.dir.rglob("*.log"))
    assert logs.count("Python host recycled") == 3, "each recycle is logged with its reason"
    assert "ran 3 tasks" in logs and "over its limit of 150 MiB" in logs
