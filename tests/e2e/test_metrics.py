"""`/metrics`, scraped and parsed as Prometheus does: counters move as tasks run."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ferry import Client
from ferrystack import Stack, _free_port


def double(x):
    return 2 * x


@pytest.fixture(scope="module")
def stack():
    endpoint_port = _free_port()
    s = Stack(workers=2, settings={"metrics_listen": f"127.0.0.1:{endpoint_port}"})
    s.endpoint_metrics = f"http://127.0.0.1:{endpoint_port}"
    s.forwarder_metrics = f"http://127.0.0.1:{_free_port()}"
    s.env["FERRY_FORWARDER_METRICS_LISTEN"] = s.forwarder_metrics.removeprefix("http://")
    s.start()
    yield s
    s.stop()


def boom(_):
    raise ValueError("boom")


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of `url`'s /metrics, by name and labels."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    """How much a sample grew between two scrapes."""
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


def test_the_web_service_counts_requests_by_route_and_the_tasks_it_accepts(stack):
    client = Client(stack.url, token=stack.token)
    fid = client.register_function(double)
    before = scrape(stack.url)
    batch = client.create_batch()
    for i in range(5):
        batch.add(fid, i)
    session = client.submit_session(stack.endpoint_id, batch)
    assert [client.get_result(t, timeout=60) for t in session.task_ids] == [0, 2, 4, 6, 8]
    client.get_task(session.task_ids[0])
    after = scrape(stack.url)

    assert moved(before, after, "ferry_tasks_accepted_total") == 5
    assert moved(before, after, "ferry_sessions_accepted_total") == 1
    assert moved(before, after, "ferry_http_requests_total", method="POST", route="/v1/sessions", status="200") == 1
    assert moved(before, after, "ferry_http_requests_total", method="GET", route="/v1/tasks/{id}", status="200") >= 1
    assert moved(before, after, "ferry_http_request_duration_seconds_count", route="/v1/sessions") == 1
    # Ids do not make series of their own: every route is a declared one.
    routes = {dict(labels).get("route") for name, labels in after if name == "ferry_http_requests_total"}
    assert all(r == "unmatched" or r.startswith("/") and "-" not in r for r in routes), routes


def test_an_unknown_route_counts_as_unmatched(stack):
    before = scrape(stack.url)
    try:
        urllib.request.urlopen(f"{stack.url}/v1/nothing-here", timeout=5)
    except urllib.error.HTTPError as e:
        assert e.code == 404
    after = scrape(stack.url)
    key = ("ferry_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))
    assert after.get(key, 0) - before.get(key, 0) == 1


def test_the_forwarder_counts_transitions_heartbeats_and_run_times(stack):
    client = Client(stack.url, token=stack.token)
    fid, bad = client.register_function(double), client.register_function(boom)
    before = scrape(stack.forwarder_metrics)
    batch = client.create_batch()
    for i in range(4):
        batch.add(fid, i)
    batch.add(bad, 0)
    session = client.submit_session(stack.endpoint_id, batch)
    for t in session.task_ids:
        try:
            client.get_result(t, timeout=60)
        except Exception:  # noqa: BLE001 - the failing one
            pass
    after = scrape(stack.forwarder_metrics)

    assert moved(before, after, "ferry_task_transitions_total", state="success") == 4
    assert moved(before, after, "ferry_task_transitions_total", state="failed") == 1
    assert moved(before, after, "ferry_task_run_seconds_count") == 5
    assert moved(before, after, "ferry_task_wait_seconds_count") == 5
    assert after[("ferry_endpoint_heartbeats_total", ())] > 0


def held(i, release):
    """Waits until the test writes `release`."""
    import os
    import time

    while not os.path.exists(release):
        time.sleep(0.02)
    return i


def in_flight(samples: dict) -> dict[str, float]:
    return {dict(labels)["state"]: v for (name, labels), v in samples.items() if name == "ferry_tasks"}


def test_the_web_service_shows_the_tasks_in_each_unfinished_state(stack, tmp_path):
    import time

    client = Client(stack.url, token=stack.token)
    fid = client.register_function(held)
    before = in_flight(scrape(stack.url))
    assert set(before) == {"received", "waiting-for-ep", "waiting-for-nodes", "waiting-for-launch", "running"}
    release = tmp_path / "release"
    batch = client.create_batch()
    for i in range(6):
        batch.add(fid, i, str(release))
    session = client.submit_session(stack.endpoint_id, batch)
    deadline = time.monotonic() + 60
    while True:
        now = in_flight(scrape(stack.url))
        # Both workers hold one; the other four wait at the endpoint or its manager.
        if now["running"] - before["running"] == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert now["running"] - before["running"] == 2, now
    assert sum(now.values()) - sum(before.values()) == 6, now
    release.write_text("go")
    assert [client.get_result(t, timeout=60) for t in session.task_ids] == list(range(6))
    assert in_flight(scrape(stack.url)) == before


def test_the_forwarder_shows_how_many_messages_wait_in_its_queues(stack):
    import time

    import pika

    def dead() -> float:
        return scrape(stack.forwarder_metrics).get(("ferry_queue_messages", (("queue", "dead"),)), -1)

    deadline = time.monotonic() + 30
    while dead() < 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    first = scrape(stack.forwarder_metrics)
    queues = {dict(labels)["queue"] for name, labels in first if name == "ferry_queue_messages"}
    assert queues == {"submissions", "status", "results", "dead"}
    before = dead()
    # Three messages no endpoint could have sent: the forwarder dead-letters them.
    connection = pika.BlockingConnection(pika.URLParameters(stack.env.get("FERRY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")))
    try:
        channel = connection.channel()
        for _ in range(3):
            channel.basic_publish("", f"{stack.env['FERRY_NAMESPACE']}.status", b"not a message")
    finally:
        connection.close()
    deadline = time.monotonic() + 30  # looked at every 5 s
    while dead() - before < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert dead() - before == 3


def flaky(path):
    """Fails the first time it runs, then succeeds."""
    import os

    if not os.path.exists(path):
        open(path, "w").close()
        raise ConnectionError("first try")
    return "second try"


def test_the_endpoint_counts_what_it_receives_refuses_retries_and_finishes(stack, tmp_path):
    client = Client(stack.url, token=stack.token)
    fid, retried = client.register_function(double), client.register_function(flaky)
    before = scrape(stack.endpoint_metrics)
    batch = client.create_batch()
    for i in range(3):
        batch.add(fid, i)
    session = client.submit_session(stack.endpoint_id, batch)
    assert [client.get_result(t, timeout=60) for t in session.task_ids] == [0, 2, 4]
    again = client.run(str(tmp_path / "once"), endpoint_id=stack.endpoint_id, function_id=retried,
                       retry={"on": ["ConnectionError"], "backoff_secs": 0.1})
    assert client.get_result(again, timeout=60) == "second try"
    refused = client.run(1, endpoint_id=stack.endpoint_id, function_id=fid, environment="nowhere")
    with pytest.raises(Exception, match="nowhere"):
        client.get_result(refused, timeout=60)
    after = scrape(stack.endpoint_metrics)

    assert moved(before, after, "ferry_endpoint_tasks_received_total") == 6, "3, the flaky one twice, the refused one"
    assert moved(before, after, "ferry_endpoint_tasks_refused_total") == 1
    assert moved(before, after, "ferry_endpoint_tasks_retried_total") == 1
    assert moved(before, after, "ferry_endpoint_tasks_finished_total", outcome="success") == 4
    assert moved(before, after, "ferry_endpoint_tasks_finished_total", outcome="failed") == 1, "the refusal is a result"
    assert after[("ferry_endpoint_managers", ())] == 1
    assert after[("ferry_endpoint_workers", ())] == 2


def test_every_metric_the_grafana_dashboard_draws_is_served(stack):
    import json
    import re
    from pathlib import Path

    names: set[str] = set()
    for url in (stack.url, stack.endpoint_metrics, stack.forwarder_metrics):
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
            for family in text_string_to_metric_families(r.read().decode()):
                names.add(family.name)
                names.update(s.name for s in family.samples)
    dashboard = json.loads((Path(__file__).parents[2] / "docs" / "grafana" / "ferry.json").read_text())
    drawn = {
        m
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for m in re.findall(r"ferry_[a-z_]+", target["expr"])
    }
    assert drawn, "the dashboard draws Ferry's metrics"
    missing = {m for m in drawn if m not in names and re.sub(r"_(total|bucket|count|sum)$", "", m) not in names}
    assert not missing, f"drawn but not served: {missing}"
