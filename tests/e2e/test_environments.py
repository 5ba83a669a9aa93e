"""Task environments, through the real stack: which Python host runs a task.

A worker keeps one Python host. A task naming an environment runs in a host started
for it (its interpreter, variables, setup lines, launch command); the manager gives it
to a worker whose host is of it, else to one without a host, else an idle host of
another environment is replaced (recycled). These are the five host scenarios of the
seeds' coordinator: each test below says which."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ferry import Client
from ferry.errors import RemoteExecutionError
from ferry.serialize import serialize_function
from ferrystack import Stack


def where(_i):
    """Which host ran it, and which environment it saw."""
    import os

    return os.getpid(), os.environ.get("WHICH")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """Two workers, environments A (a variable), B (setup lines), C (a launch command),
    D (replaced after 3 tasks), U (replaced once no task of it is left), S (replaced
    once a session whose tasks it ran completes) and F, whose
    Python says it is 3.99.1 (a `sitecustomize` on its path), for routing bytecode."""
    fake = tmp_path_factory.mktemp("fake-python")
    (fake / "sitecustomize.py").write_text("import platform\nplatform.python_version = lambda: '3.99.1'\n")
    path = os.pathsep.join([str(fake), str(Path(__file__).parent)])
    stack = Stack(
        workers=2,
        settings={
            "provider.environments.A": '{env = {WHICH = "A"}}',
            "provider.environments.B": '{setup = "export WHICH=B"}',
            "provider.environments.C": '{launch = "env WHICH=C"}',
            "provider.environments.D": '{env = {WHICH = "D"}, recycle_after_tasks = 3}',
            "provider.environments.U": '{env = {WHICH = "U"}, recycle_when_unreferenced = true}',
            "provider.environments.S": '{env = {WHICH = "S"}, recycle_when_session_completes = true}',
            "provider.environments.F": f'{{env = {{WHICH = "F", PYTHONPATH = "{path}"}}, python = "{sys.executable}"}}',
        },
    )
    stack.start()
    yield stack
    stack.stop()


def _run(client, stack, fid, environment=None):
    task = client.run(0, endpoint_id=stack.endpoint_id, function_id=fid, environment=environment)
    return client.get_result(task, timeout=60)


def _logs(stack) -> str:
    return "".join(p.read_text(errors="replace") for p in stack.dir.rglob("*.log"))


def test_each_environment_starts_its_host_with_its_variables_setup_or_launch_command(hosts):
    client = Client(hosts.url, token=hosts.token)
    fid = client.register_function(where)
    for name in "ABC":
        _, which = _run(client, hosts, fid, name)
        assert which == name


def test_an_executor_runs_its_tasks_in_its_environment(hosts):
    from ferry import Executor

    client = Client(hosts.url, token=hosts.token)
    with Executor(endpoint_id=hosts.endpoint_id, client=client, environment="B") as ex:
        assert {ex.submit(where, i).result(timeout=60)[1] for i in range(4)} == {"B"}


def test_the_five_host_scenarios(hosts):
    client = Client(hosts.url, token=hosts.token)
    fid = client.register_function(where)
    # Start from one idle host of A and one of B (each worker holds one).
    a, _ = _run(client, hosts, fid, "A")
    b, _ = _run(client, hosts, fid, "B")
    if a == b:  # the B task found a slot whose host it replaced; make both again
        a, _ = _run(client, hosts, fid, "A")
    assert a != b
    # 1. An idle host of A is there: a task of A runs in it (not a new one).
    assert _run(client, hosts, fid, "A") == (a, "A")
    assert _run(client, hosts, fid, "B") == (b, "B")
    # 2./3. No empty slot; a task of C: one idle host (A's or B's) is recycled for it.
    c, which = _run(client, hosts, fid, "C")
    assert which == "C" and c not in (a, b)
    again = {_run(client, hosts, fid, "A")[0], _run(client, hosts, fid, "B")[0]}
    assert len(again & {a, b}) == 1, "exactly one of the idle hosts made way for C"
    assert "runs in environment C, the host in" in _logs(hosts)
    # 4./5. D's host is replaced after its 3rd task, not before.
    ds = [_run(client, hosts, fid, "D")[0] for _ in range(4)]
    assert ds[0] == ds[1] == ds[2] != ds[3], ds
    assert "ran 3 tasks (its limit)" in _logs(hosts)


def test_an_empty_slot_starts_a_host_and_the_idle_one_stays():
    """Scenario 2 as the seeds tell it: one idle host of A and one empty slot; a task of
    B starts a host in the empty slot, and A's stays for A's next task."""
    stack = Stack(workers=2, settings={"provider.environments.A": '{env = {WHICH = "A"}}', "provider.environments.B": '{env = {WHICH = "B"}}'})
    stack.start()
    try:
        client = Client(stack.url, token=stack.token)
        fid = client.register_function(where)
        a, _ = _run(client, stack, fid, "A")
        b, which = _run(client, stack, fid, "B")
        assert which == "B" and b != a
        assert _run(client, stack, fid, "A") == (a, "A")
        assert "Python host recycled" not in _logs(stack), "nothing was replaced: a slot was empty"
    finally:
        stack.stop()


def test_a_host_whose_environment_is_no_longer_referenced_is_replaced(hosts):
    client = Client(hosts.url, token=hosts.token)
    fid = client.register_function(where)
    first, _ = _run(client, hosts, fid, "U")
    deadline = 30
    import time

    end = time.monotonic() + deadline
    while "no task of environment U is left" not in _logs(hosts):
        assert time.monotonic() < end, "the unreferenced host was not recycled"
        time.sleep(0.2)
    second, _ = _run(client, hosts, fid, "U")
    assert second != first


def test_hosts_that_ran_a_session_are_replaced_when_it_completes(hosts):
    client = Client(hosts.url, token=hosts.token)
    fid = client.register_function(where)
    pids = []
    for _ in range(2):
        batch = client.create_batch()
        for i in range(6):
            batch.add(fid, i)
        session = client.submit_session(hosts.endpoint_id, batch, environment="S")
        results = [client.get_result(t, timeout=60) for t in session.task_ids]
        assert {which for _, which in results} == {"S"}
        pids.append({pid for pid, _ in results})
    assert not pids[0] & pids[1], f"no host of the first session ran the second: {pids}"
    assert "whose tasks it ran, completed" in _logs(hosts)


def test_bytecode_of_another_python_goes_to_the_environment_that_runs_it(hosts):
    client = Client(hosts.url, token=hosts.token)
    body = {"name": "where", "kind": "python", "code": serialize_function(where), "python_version": "3.99.1"}
    fid = client._request("POST", "/v1/functions", body)["function_id"]
    assert _run(client, hosts, fid)[1] == "F"
    # Named elsewhere, or with no environment of its Python: it fails, listing them.
    for environment, version in (("A", "3.99.1"), (None, "3.98.0")):
        body["python_version"] = version
        fid = client._request("POST", "/v1/functions", body)["function_id"]
        task = client.run(0, endpoint_id=hosts.endpoint_id, function_id=fid, environment=environment)
        with pytest.raises(RemoteExecutionError) as info:
            client.get_result(task, timeout=60)
        message = str(info.value)
        assert version in message and "F: Python 3.99.1" in message and "A: Python 3.11" in message, message


def test_an_environment_the_endpoint_lacks_fails_naming_those_it_has(hosts):
    client = Client(hosts.url, token=hosts.token)
    fid = client.register_function(where)
    task = client.run(0, endpoint_id=hosts.endpoint_id, function_id=fid, environment="nope")
    with pytest.raises(RemoteExecutionError) as info:
        client.get_result(task, timeout=60)
    assert '"nope"' in str(info.value) and "B: Python" in str(info.value), str(info.value)


def test_an_environment_name_that_is_not_one_is_refused_naming_the_field(hosts):
    from ferry.errors import APIError

    client = Client(hosts.url, token=hosts.token)
    fid = client.register_function(where)
    for environment in ("", "a b", "x" * 65):
        with pytest.raises(APIError) as info:
            client.run(0, endpoint_id=hosts.endpoint_id, function_id=fid, environment=environment)
        assert info.value.http_status == 400 and "environment" in str(info.value), str(info.value)
    batch = client.create_batch()
    batch.add(fid, 1)
    with pytest.raises(APIError) as info:
        client.submit_session(hosts.endpoint_id, batch, environment="no/slash")
    assert "environment" in str(info.value) and "no/slash" in str(info.value)
