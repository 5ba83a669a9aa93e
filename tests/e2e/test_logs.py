"""Logs as JSON lines (`--log-format json`, or `FERRY_LOG_FORMAT=json` for a process and
those it starts), each about a task carrying its id."""

from __future__ import annotations

import json
import subprocess

import pytest

from ferry import Client
from ferrystack import Stack


def double(x):
    return 2 * x


@pytest.fixture(scope="module")
def stack():
    s = Stack(workers=1)
    s.env["FERRY_LOG_FORMAT"] = "json"
    s.env["TEST_RUST_LOG"] = s.env["RUST_LOG"] = "info,ferry_endpoint=debug,ferry_forwarder=debug"
    s.start()
    yield s
    s.stop()


def test_every_line_is_json_and_task_lines_name_the_task(stack):
    client = Client(stack.url, token=stack.token)
    task = client.run(21, endpoint_id=stack.endpoint_id, function_id=client.register_function(double))
    assert client.get_result(task, timeout=60) == 42
    lines = [
        line
        for name in ("ferry-web-service", "ferry-forwarder", "ferry-endpoint")
        for line in (stack.dir / f"{name}.log").read_text(errors="replace").splitlines()
        if line.strip()
    ]
    events = [json.loads(line) for line in lines]  # each one parses
    assert all({"timestamp", "level", "fields"} <= e.keys() for e in events)
    about_it = [e for e in events if task in json.dumps(e)]
    assert about_it, "the task is logged about (debug)"
    assert all(e["fields"].get("task_id") == task or any(
        s.get("task_id") == task for s in e.get("spans", [])) for e in about_it), about_it


def test_the_flag_sets_the_format_and_a_bad_one_is_named(stack):
    from ferrystack import _free_port

    web = subprocess.Popen(
        [str(stack.bin / "ferry-web-service"), "--log-format", "json", "--listen", f"127.0.0.1:{_free_port()}", "serve"],
        stderr=subprocess.PIPE, text=True,
        env={**stack.env, "FERRY_LOG_FORMAT": "text", "RUST_LOG": "info"},
    )
    try:
        first = web.stderr.readline()  # the flag wins over the variable
        assert json.loads(first)["fields"]["message"] == "web-service listening", first
    finally:
        web.terminate()
        web.wait(timeout=30)
    bad = subprocess.run([str(stack.bin / "ferry-forwarder"), "--log-format", "xml"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--log-format" in bad.stderr and "json" in bad.stderr
