"""The Python SDK against a real Ferry: functions defined here (in a test module and
in ``__main__``-like scopes) run on a real endpoint and their results come back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ferry import Executor, RemoteExecutionError, ShellFunction, TaskPending


def wait_done(client, task_id, seconds=60):
    deadline = time.monotonic() + seconds
    states = []
    while time.monotonic() < deadline:
        doc = client.get_task(task_id)
        if not states or states[-1] != doc["status"]:
            states.append(doc["status"])
        if not doc["pending"]:
            return doc, states
        time.sleep(0.01)
    raise AssertionError(f"task {task_id} not done in {seconds}s (seen {states})")


def double(x):
    return x * 2


def square(x):
    return x * x


def test_a_registered_function_runs_and_its_result_comes_back(client, stack):
    fid = client.register_function(double)
    tid = client.run(21, endpoint_id=stack.endpoint_id, function_id=fid)

    doc, _ = wait_done(client, tid)

    assert doc["status"] == "success"
    assert client.get_result(tid) == 42
    states = [h["state"] for h in doc["history"]]
    assert states == ["received", "waiting-for-ep", "waiting-for-nodes", "waiting-for-launch", "running", "success"]
    assert all(h["at"] > 0 for h in doc["history"])


def test_lambdas_and_closures_run_remotely(client, stack):
    k = 7
    fid = client.register_function(lambda y: y * k)
    tid = client.run(6, endpoint_id=stack.endpoint_id, function_id=fid)
    wait_done(client, tid)
    assert client.get_result(tid) == 42


def test_a_remote_exception_is_reraised_with_the_remote_traceback(client, stack):
    def explode(n):
        raise ValueError(f"bad value {n}")

    fid = client.register_function(explode)
    tid = client.run(3, endpoint_id=stack.endpoint_id, function_id=fid)
    doc, _ = wait_done(client, tid)

    assert doc["status"] == "failed"
    with pytest.raises(ValueError, match="bad value 3") as info:
        client.get_result(tid)
    assert "explode" in str(info.value.__cause__)


def test_a_pending_task_says_so(client, stack):
    def slow():
        import time

        time.sleep(1)
        return "done"

    fid = client.register_function(slow)
    tid = client.run(endpoint_id=stack.endpoint_id, function_id=fid)
    with pytest.raises(TaskPending):
        client.get_result(tid)
    wait_done(client, tid)
    assert client.get_result(tid) == "done"


def test_get_result_can_wait_for_the_task_to_finish(client, stack):
    def slow(x):
        import time

        time.sleep(0.5)
        return x + 1

    fid = client.register_function(slow)
    tid = client.run(1, endpoint_id=stack.endpoint_id, function_id=fid)
    with pytest.raises(TaskPending):
        client.get_result(tid, timeout=0.1)
    assert client.get_result(tid, timeout=60) == 2
    a, b = (client.run(x, endpoint_id=stack.endpoint_id, function_id=fid) for x in (10, 20))
    docs = client.get_tasks([a, b], history=False, wait=60)
    assert any(not d["pending"] for d in docs.values()), docs
    assert client.get_result(b, timeout=None) == 21


def test_stdout_of_the_function_is_kept(client, stack):
    def chatty():
        print("hello from the worker")
        return 1

    fid = client.register_function(chatty)
    tid = client.run(endpoint_id=stack.endpoint_id, function_id=fid)
    doc, _ = wait_done(client, tid)
    assert "hello from the worker" in doc.get("stdout", "")


def test_a_batch_runs_and_its_results_come_back_together(client, stack):
    fid = client.register_function(double)
    batch = client.create_batch()
    for i in range(50):
        batch.add(fid, i)
    ids = client.batch_run(stack.endpoint_id, batch)
    assert len(ids) == 50
    for tid in ids:
        wait_done(client, tid)
    results = client.get_batch_result(ids)
    assert [results[t]["result"] for t in ids] == [2 * i for i in range(50)]


def test_the_executor_runs_functions_and_maps(client, stack):
    with Executor(endpoint_id=stack.endpoint_id, client=client) as ex:
        assert ex.submit(pow, 2, 10).result(timeout=60) == 1024
        assert list(ex.map(double, range(20), timeout=60)) == [2 * i for i in range(20)]
        failing = ex.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=60)


def test_a_shell_function_runs_through_the_executor(client, stack):
    with Executor(endpoint_id=stack.endpoint_id, client=client) as ex:
        result = ex.submit(ShellFunction("echo hello {name}"), name="ferry").result(timeout=60)
    assert result["stdout"] == "hello ferry\n"
    assert result["returncode"] == 0


def runs_dir(stack) -> Path:
    """The endpoint's run directories' root (its default: `runs` in its directory, which
    ferry dev keeps under `dev/endpoints/`)."""
    return next((stack.dir / "home").glob("**/endpoints/*/runs"))


def test_a_shell_function_runs_in_its_own_run_directory_kept_while_it_holds_something(client, stack):
    with Executor(endpoint_id=stack.endpoint_id, client=client) as ex:
        empty = ex.submit(ShellFunction("pwd; echo $FERRY_TASK_ID")).result(timeout=60)
        kept = ex.submit(ShellFunction("echo {text} > out.txt; pwd"), text="data").result(timeout=60)
    where, task_id = empty["stdout"].split()
    assert Path(where) == runs_dir(stack) / task_id
    assert "run_dir" not in empty and not Path(where).exists(), "left empty: removed at once"
    run_dir = Path(kept["run_dir"])
    assert kept["stdout"].strip() == str(run_dir) and run_dir.parent == runs_dir(stack)
    assert (run_dir / "out.txt").read_text() == "data\n"
    assert (runs_dir(stack) / ".done" / run_dir.name).exists(), "marked for the sweep"


def sandbox_facts():
    import os

    return os.environ.get("GC_TASK_SANDBOX_DIR"), os.environ.get("GC_TASK_UUID"), os.getcwd()


def uses_its_run_dir(text):
    import os

    import ferry

    where = ferry.run_dir()
    with open("note.txt", "w") as f:
        f.write(text)
    os.chdir("/")  # the next task starts in its worker's directory all the same
    return str(where)


def test_a_python_task_is_told_its_run_directory_and_makes_it_only_when_it_asks(client, stack):
    fid = client.register_function(sandbox_facts)
    tid = client.run(endpoint_id=stack.endpoint_id, function_id=fid)
    sandbox, task_uuid, cwd = client.get_result(tid, timeout=60)
    assert task_uuid == tid
    assert Path(sandbox) == runs_dir(stack) / tid
    assert not Path(sandbox).exists(), "not asked for: never made"
    assert Path(cwd).parent == runs_dir(stack) and Path(cwd).name.startswith("worker-")

    uses = client.register_function(uses_its_run_dir)
    tid = client.run("kept", endpoint_id=stack.endpoint_id, function_id=uses)
    where = Path(client.get_result(tid, timeout=60))
    assert where == runs_dir(stack) / tid and (where / "note.txt").read_text() == "kept"
    after = client.run(endpoint_id=stack.endpoint_id, function_id=fid)
    assert Path(client.get_result(after, timeout=60)[2]).name.startswith("worker-")


def test_the_endpoint_is_listed_online(client, stack):
    status = client.get_endpoint_status(stack.endpoint_id)
    assert status["status"] == "online"
    assert any(e["endpoint_id"] == stack.endpoint_id for e in client.list_endpoints())


def test_a_task_past_its_walltime_fails_with_timeout(client, stack):
    def sleepy():
        import time

        time.sleep(30)

    fid = client.register_function(sleepy)
    tid = client.run(endpoint_id=stack.endpoint_id, function_id=fid, walltime=0.5)
    doc, _ = wait_done(client, tid, seconds=20)
    assert doc["status"] == "failed"
    assert doc["history"][-1]["reason"] == "timeout"
    with pytest.raises(RemoteExecutionError, match="walltime"):
        client.get_result(tid)


def test_a_cancelled_task_fails_with_the_cause_cancelled(client, stack):
    def slow():
        import time

        time.sleep(2)
        return "late"

    fid = client.register_function(slow)
    tid = client.run(endpoint_id=stack.endpoint_id, function_id=fid)
    doc = client.cancel(tid)
    assert doc["status"] == "failed"
    assert doc["history"][-1]["reason"] == "cancelled"
    with pytest.raises(RemoteExecutionError, match="cancelled"):
        client.get_result(tid)


def test_a_session_reports_progress_and_pages_its_results(client, stack):
    fid = client.register_function(square)
    batch = client.create_batch()
    for i in range(250):
        batch.add(fid, i)
    seen = []
    session = client.submit_session(stack.endpoint_id, batch)
    assert len(session) == 250
    final = session.wait(timeout=120, progress=seen.append)
    assert final["status"] == "completed" and not final["pending"]
    assert final["counts"]["success"] == 250
    for doc in seen:
        assert sum(doc["counts"].values()) == 250
    finished = [d["counts"]["success"] + d["counts"]["failed"] for d in seen]
    assert finished == sorted(finished), "progress never goes back"
    results = list(session.results(page_size=100))
    assert [tid for tid, _ in results] == session.task_ids
    assert [entry["result"] for _, entry in results] == [i * i for i in range(250)]


def test_a_large_session_is_accepted_in_parts_and_every_result_comes_back(client, stack):
    # 2,500 tasks: a request body above the client's one-write size, and two parts
    # on the service's side (1,000, then 1,500) dispatched while the rest is written.
    fid = client.register_function(square)
    batch = client.create_batch()
    for i in range(2500):
        batch.add(fid, i)
    session = client.submit_session(stack.endpoint_id, batch)
    assert len(session) == 2500
    final = session.wait(timeout=300)
    assert final["size"] == 2500 and final["counts"]["success"] == 2500
    results = list(session.results(page_size=1000))
    assert [tid for tid, _ in results] == session.task_ids
    assert [entry["result"] for _, entry in results] == [i * i for i in range(2500)]


def nap_then_square(x, secs):
    import time

    time.sleep(secs)
    if x == 7:
        raise ValueError("seven")
    return x * x


def test_a_session_yields_each_task_once_as_it_finishes(client, stack):
    fid = client.register_function(nap_then_square)
    batch = client.create_batch()
    # The first task finishes last: the others must not wait behind it.
    batch.add(fid, 0, 1.5)
    for i in range(1, 300):
        batch.add(fid, i, 0.0)
    session = client.submit_session(stack.endpoint_id, batch)
    order = []
    results = {}
    for tid, entry in session.as_completed(timeout=120):
        assert not entry["pending"]
        order.append(tid)
        results[tid] = entry
    assert sorted(order) == sorted(session.task_ids), "every task once"
    # Only the few tasks queued behind it in its worker's pipe finish after it.
    assert order.index(session.task_ids[0]) >= 250, order.index(session.task_ids[0])
    for i, tid in enumerate(session.task_ids):
        if i == 7:
            assert isinstance(results[tid]["exception"], ValueError)
        else:
            assert results[tid]["result"] == i * i


def test_several_sessions_in_one_request_and_a_session_timeout(client, stack):
    quick = client.register_function(square)
    nap = client.register_shell_function("sleep 30")
    first, second = client.create_batch(), client.create_batch()
    first.add(quick, 3)
    second.add(nap)
    second.add(nap)
    s1, s2 = client.submit_sessions([(stack.endpoint_id, first), (stack.endpoint_id, second)], timeout=2)
    assert s1.id != s2.id
    assert s1.wait(timeout=60)["status"] == "completed"
    done = s2.wait(timeout=60)
    assert (done["status"], done["reason"]) == ("failed", "timeout")
    for _, entry in s2.results():
        assert entry["status"] == "failed"
        assert "timed out" in str(entry["exception"])
    assert client.get_session(s1.id)["counts"]["success"] == 1
    # Outcomes read like done futures: a value, or the task's exception raised.
    (o1,) = list(s1.outcomes())
    assert o1.ok and o1.result() == 9 and o1.exception() is None
    for o in s2.outcomes():
        assert not o.ok and "timed out" in str(o.exception())
        with pytest.raises(type(o.exception())):
            o.result()


def test_a_cancelled_sessions_outcomes_and_its_progress_line(client, stack, capsys):
    nap = client.register_shell_function("sleep 30")
    quick = client.register_function(square)
    batch = client.create_batch()
    batch.add(quick, 4)
    for _ in range(3):
        batch.add(nap)
    session = client.submit_session(stack.endpoint_id, batch)
    client.get_result(session.task_ids[0], timeout=60)
    session.cancel()
    final = session.wait(timeout=60, progress=True)
    assert final["counts"]["failed"] == 3
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f"session {session.id}: 4/4 done (1 ok, 3 failed) 100% " + line.split("100% ")[1], line
    assert line.endswith("tasks/s"), line
    outcomes = list(session.outcomes())
    assert [o.task_id for o in outcomes] == session.task_ids
    assert outcomes[0].result() == 16
    for o in outcomes[1:]:
        assert "cancelled" in str(o.exception())


def test_the_executor_gets_its_results_over_the_websocket(client, stack):
    with Executor(endpoint_id=stack.endpoint_id, client=client) as ex:
        assert ex.use_websocket
        futures = [ex.submit(square, i) for i in range(100)]
        assert [f.result(timeout=60) for f in futures] == [i * i for i in range(100)]
        failing = ex.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=60)
    with Executor(endpoint_id=stack.endpoint_id, client=client, use_websocket=False) as ex:
        assert list(ex.map(square, range(10))) == [i * i for i in range(10)]


def test_a_function_shared_with_a_user_runs_for_them_and_only_then(client, stack):
    from ferry import APIError, Client

    other = Client(stack.url, token=stack.run("ferry-web-service", "create-user", "py-sharer"))
    me = client.whoami()
    assert me["name"] == stack.user_name and me["endpoint_id"] is None
    fid = other.register_function(double)

    with pytest.raises(APIError) as refused:
        client.run(1, endpoint_id=stack.endpoint_id, function_id=fid)
    assert refused.value.http_status == 404

    shared = other.share_function(fid, shared_with=[me["user_id"]])
    assert shared["shared_with"] == [me["user_id"]] and shared["public"] is False
    seen = client.get_function(fid)
    assert seen["owner"] == other.whoami()["user_id"] and "shared_with" not in seen
    tid = client.run(21, endpoint_id=stack.endpoint_id, function_id=fid)
    doc, _ = wait_done(client, tid)
    assert doc["status"] == "success" and client.get_result(tid) == 42

    with pytest.raises(APIError) as not_an_owner:
        client.share_function(fid, public=True)
    assert not_an_owner.value.http_status in (403, 404)
    with pytest.raises(APIError) as unknown:
        other.share_function(fid, shared_with=["00000000-0000-0000-0000-000000000000"])
    assert unknown.value.http_status == 400 and "shared_with" in str(unknown.value)


def test_sessions_are_listed_newest_first_a_page_at_a_time(client, stack):
    from ferry import APIError, Client

    fid = client.register_function(square)
    made = []
    for i in range(3):
        batch = client.create_batch()
        batch.add(fid, i)
        made.append(client.submit_session(stack.endpoint_id, batch).id)
    listed = client.list_sessions(limit=1000)["sessions"]
    ids = [s["session_id"] for s in listed]
    assert ids[:3] == made[::-1], "newest first"
    assert all({"status", "counts", "size", "created_at"} <= set(s) for s in listed)
    # A page at a time: each page's next_before leads to the older ones.
    first = client.list_sessions(limit=2)
    assert [s["session_id"] for s in first["sessions"]] == made[:0:-1]
    second = client.list_sessions(limit=2, before=first["next_before"])
    assert second["sessions"][0]["session_id"] == made[0]
    # Another user sees none of them.
    other = Client(stack.url, token=stack.run("ferry-web-service", "create-user", "py-lister"))
    assert other.list_sessions()["sessions"] == []
    with pytest.raises(APIError, match="limit must be 1 to 1000"):
        client.list_sessions(limit=0)
