"""A task's trace over OTLP: its trace ID is its task ID, and each process's hops are
spans under its root (the web-service's `submit`, the forwarder's `dispatch`, `record`
and root `task`, the endpoint's `endpoint` with its `wait` and `run`). The collector
is a real HTTP server taking OTLP/JSON."""

from __future__ import annotations

import pytest

from ferry import Client
from ferrystack import Stack
from otlp import Collector


def double(x):
    return 2 * x


def refuse(x):
    raise ValueError(f"no {x}")


@pytest.fixture(scope="module")
def collector():
    c = Collector()
    yield c
    c.close()


@pytest.fixture(scope="module")
def stack(collector):
    s = Stack(workers=1)
    s.env.update(collector.env())
    s.start()
    yield s
    s.stop()


HOPS = {"task", "submit", "dispatch", "endpoint", "wait", "run", "record"}


def test_a_task_is_one_trace_with_a_span_per_hop_from_each_process(stack, collector):
    client = Client(stack.url, token=stack.token)
    task = client.run(21, endpoint_id=stack.endpoint_id, function_id=client.register_function(double))
    assert client.get_result(task, timeout=60) == 42
    spans = collector.trace(task, HOPS)
    assert spans.keys() >= HOPS, sorted(spans)

    root = spans["task"]
    assert not root.get("parentSpanId")
    assert {n: spans[n]["service"] for n in HOPS} == {
        "task": "ferry-forwarder", "submit": "ferry-web-service", "dispatch": "ferry-forwarder",
        "record": "ferry-forwarder", "endpoint": "ferry-endpoint", "wait": "ferry-endpoint",
        "run": "ferry-endpoint",
    }
    for name in ("submit", "dispatch", "endpoint", "record"):
        assert spans[name]["parentSpanId"] == root["spanId"], name
    for name in ("wait", "run"):
        assert spans[name]["parentSpanId"] == spans["endpoint"]["spanId"], name
    assert all(s["attrs"]["ferry.task_id"] == task for s in spans.values())
    assert spans["submit"]["attrs"]["ferry.session_id"]
    assert spans["dispatch"]["attrs"]["ferry.endpoint_id"] == stack.endpoint_id
    assert spans["run"]["attrs"]["host.name"]
    assert root["attrs"]["ferry.state"] == "success"

    # In order, within the root: submitted, dispatched, waited, ran, recorded.
    start = {n: int(s["startTimeUnixNano"]) for n, s in spans.items()}
    end = {n: int(s["endTimeUnixNano"]) for n, s in spans.items()}
    assert start["task"] <= start["submit"] <= end["submit"] <= start["dispatch"]
    assert start["endpoint"] <= start["wait"] <= end["wait"] <= start["run"] <= end["run"]
    assert end["run"] <= end["endpoint"] and end["run"] <= end["task"]
    assert end["record"] <= end["task"]


def test_a_failed_task_says_why_on_its_run_and_root(stack, collector):
    client = Client(stack.url, token=stack.token)
    task = client.run(3, endpoint_id=stack.endpoint_id, function_id=client.register_function(refuse))
    with pytest.raises(Exception, match="no 3"):
        client.get_result(task, timeout=60)
    spans = collector.trace(task, HOPS)
    assert spans.keys() >= HOPS, sorted(spans)
    error = 2  # STATUS_CODE_ERROR
    assert spans["run"]["status"]["code"] == error
    assert "ValueError: no 3" in spans["run"]["status"]["message"]
    assert spans["task"]["status"]["code"] == error and spans["task"]["attrs"]["ferry.state"] == "failed"
    assert spans["run"]["attrs"]["ferry.outcome"] == "failed"
