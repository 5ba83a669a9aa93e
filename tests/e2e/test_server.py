"""`ferry-server`: the web-service and the forwarder in one process, the submissions
handed over in memory (the namespace has no submissions queue in RabbitMQ), and a
server killed mid-session loses no task and runs none twice."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from ferry import Client
from ferrystack import Stack


def logged(i, log):
    """Appends its input to `log` (one line per execution), then returns its square."""
    import time

    with open(log, "a") as f:
        f.write(f"{i}\n")
    time.sleep(0.02)
    return i * i


@pytest.fixture
def stack():
    s = Stack(workers=2, colocated=True)
    s.start()
    yield s
    s.stop()


def management(stack: Stack, path: str) -> int:
    """The status of GET `path` on RabbitMQ's management API."""
    admin = urllib.parse.urlsplit(stack.env["FERRY_AMQP_ADMIN_URL"])
    request = urllib.request.Request(f"{admin.scheme}://{admin.hostname}:{admin.port}/api{path}")
    password = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    password.add_password(None, request.full_url, admin.username, admin.password)
    opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(password))
    try:
        with opener.open(request, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_submissions_go_from_web_service_to_forwarder_in_memory(stack, tmp_path):
    client = Client(stack.url, token=stack.token)
    fid = client.register_function(logged)
    log = tmp_path / "runs"
    one = client.run(7, str(log), endpoint_id=stack.endpoint_id, function_id=fid)
    assert client.get_result(one, timeout=60) == 49
    batch = client.create_batch()
    for i in range(50):
        batch.add(fid, i, str(log))
    session = client.submit_session(stack.endpoint_id, batch)
    assert [client.get_result(t, timeout=60) for t in session.task_ids] == [i * i for i in range(50)]

    ns = stack.env["FERRY_NAMESPACE"]
    assert management(stack, f"/queues/%2F/{ns}.submissions") == 404, "no submissions queue in RabbitMQ"
    assert management(stack, f"/queues/%2F/{ns}.results") == 200, "the endpoints' queues are there"
    assert management(stack, f"/queues/%2F/{ns}.ep.{stack.endpoint_id}.tasks") == 200


def test_a_server_killed_mid_session_loses_nothing_and_runs_nothing_twice(stack, tmp_path):
    client = Client(stack.url, token=stack.token)
    fid = client.register_function(logged)
    log = tmp_path / "runs"
    batch = client.create_batch()
    for i in range(200):
        batch.add(fid, i, str(log))
    session = client.submit_session(stack.endpoint_id, batch)
    # Killed once tasks have run (each takes 20 ms on one of 2 workers: most are still
    # to come, and the server holds their records and reports in flight).
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text().count("\n") >= 10):
        assert time.monotonic() < deadline, "no task ran within 60 s"
        time.sleep(0.01)
    server = stack.procs["ferry-server"]
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=10)
    stack.start_services()  # the same port, namespace, Redis and RabbitMQ

    client = Client(stack.url, token=stack.token)
    results = [client.get_result(t, timeout=120) for t in session.task_ids]
    assert results == [i * i for i in range(200)]
    runs = [int(line) for line in log.read_text().split()]
    assert sorted(runs) == list(range(200)), "every task ran exactly once"
    assert client.get_session(session.id)["counts"]["success"] == 200
