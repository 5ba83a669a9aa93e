"""The unmodified globus-compute-sdk (pinned 4.19.0) against a real Ferry."""

from __future__ import annotations

import time
from pathlib import Path
import uuid

import globus_sdk
import pytest
from globus_compute_sdk import Executor, ShellFunction
from globus_compute_sdk.errors import TaskExecutionFailed

from ferry import Client as FerryClient
from ferry.globus_compat import client as globus_client


@pytest.fixture(scope="module")
def gc(stack):
    return globus_client(stack.url, stack.token)


def add(a, b):
    return a + b


def fails(x):
    raise KeyError(f"no such key {x}")


def wait_result(gc, task_id, seconds=60):
    deadline = time.monotonic() + seconds
    while True:
        task = gc.get_task(task_id)
        if not task["pending"]:
            return gc.get_result(task_id)
        assert time.monotonic() < deadline, f"task {task_id} still {task['status']}"
        time.sleep(0.02)


def test_register_run_get_task_and_get_result(gc, stack):
    fid = gc.register_function(add)
    tid = gc.run(2, 3, endpoint_id=stack.endpoint_id, function_id=fid)
    assert wait_result(gc, tid) == 5
    task = gc.get_task(tid)
    assert task["status"] == "success" and task["completion_t"]


def test_tasks_carry_the_workers_versions_so_the_sdk_does_not_warn(gc, stack):
    import platform
    import warnings

    import dill

    fid = gc.register_function(add)
    tid = gc.run(1, 1, endpoint_id=stack.endpoint_id, function_id=fid)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert wait_result(gc, tid) == 2
    assert not [w for w in caught if "Environment differences" in str(w.message)], [str(w.message) for w in caught]
    details = gc.get_task(tid)["details"]
    assert details["python_version"] == platform.python_version(), details
    assert details["dill_version"] == dill.__version__, details
    assert details["endpoint_id"] == stack.endpoint_id and details["os"], details
    assert "task_transitions" in details


def test_a_remote_exception_raises_task_execution_failed(gc, stack):
    fid = gc.register_function(fails)
    tid = gc.run("k", endpoint_id=stack.endpoint_id, function_id=fid)
    with pytest.raises(TaskExecutionFailed) as info:
        wait_result(gc, tid)
    assert "KeyError" in str(info.value) and "no such key k" in str(info.value)


def test_a_batch_runs_and_its_results_come_back(gc, stack):
    fid = gc.register_function(add)
    batch = gc.create_batch()
    for i in range(10):
        batch.add(fid, args=(i, i))
    answer = gc.batch_run(stack.endpoint_id, batch)
    ids = answer["tasks"][fid]
    assert len(ids) == 10
    deadline = time.monotonic() + 60
    while True:
        results = gc.get_batch_result(ids)
        if all(not r["pending"] for r in results.values()):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [results[t]["result"] for t in ids] == [2 * i for i in range(10)]


def test_the_executor_runs_functions_lambdas_closures_and_shell_commands(gc, stack):
    k = 10
    with Executor(endpoint_id=stack.endpoint_id, client=gc) as ex:
        futures = [
            ex.submit(add, 1, 2),
            ex.submit(lambda x: x * 3, 4),
            ex.submit(lambda y: y + k, 5),
        ]
        assert [f.result(timeout=60) for f in futures] == [3, 12, 15]
        with pytest.raises(TaskExecutionFailed, match="no such key z"):
            ex.submit(fails, "z").result(timeout=60)
        shell = ex.submit(ShellFunction("echo hello {name}; pwd"), name="globus").result(timeout=60)
        assert shell.returncode == 0 and "hello globus" in shell.stdout
        # The endpoint tells the task its sandbox: the SDK's ShellFunction works there,
        # not where the endpoint was started, and does not warn.
        assert "sandboxing will not work" not in shell.stderr
        sandbox = Path(shell.stdout.split()[-1])
        assert sandbox.parent.name == "runs" and list(sandbox.glob("*.stdout"))
        assert not list(stack.dir.glob("*.stdout")), "nothing where the endpoint started"


def test_the_executor_can_reload_its_task_group(gc, stack):
    group = uuid.uuid4()
    with Executor(endpoint_id=stack.endpoint_id, client=gc, task_group_id=group) as ex:
        assert [f.result(timeout=60) for f in [ex.submit(add, i, 1) for i in range(5)]] == [1, 2, 3, 4, 5]
    with Executor(endpoint_id=stack.endpoint_id, client=gc, task_group_id=group) as ex:
        futures = ex.reload_tasks()
        assert sorted(f.result(timeout=60) for f in futures) == [1, 2, 3, 4, 5]


def test_a_wrong_token_gets_the_sdks_own_error(stack):
    with pytest.raises(globus_sdk.GlobusAPIError) as info:
        globus_client(stack.url, "fy_wrong").register_function(add)
    assert info.value.http_status == 401


def test_both_sdks_use_the_same_endpoint_at_once(gc, stack):
    ferry = FerryClient(stack.url, token=stack.token)
    ferry_fid = ferry.register_function(add)
    globus_fid = gc.register_function(add)
    ferry_tid = ferry.run(20, 1, endpoint_id=stack.endpoint_id, function_id=ferry_fid)
    globus_tid = gc.run(40, 2, endpoint_id=stack.endpoint_id, function_id=globus_fid)
    assert wait_result(gc, globus_tid) == 42
    deadline = time.monotonic() + 60
    while ferry.get_task(ferry_tid)["pending"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert ferry.get_result(ferry_tid) == 21


def test_the_endpoint_reports_online(gc, stack):
    assert gc.get_endpoint_status(stack.endpoint_id)["status"] == "online"
