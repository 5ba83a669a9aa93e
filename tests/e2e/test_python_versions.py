"""Functions serialized on one Python, workers on another: a clear failure, never a crash.

A function registered as bytecode records the Python that serialized it; an endpoint
whose workers run another major.minor fails its tasks at once, naming both versions and
the endpoint's Python. Source runs anywhere."""

from __future__ import annotations

import platform

import pytest

from ferry import Client
from ferry.errors import APIError, RemoteExecutionError
from ferry.serialize import serialize_function
from ferrystack import Stack


def label(x):
    return f"ran {x}"


@pytest.fixture(scope="module")
def stack():
    s = Stack(workers=1)
    s.start()
    yield s
    s.stop()


def _register(client, code, version, route="/v1/functions"):
    if route == "/v1/functions":
        body = {"name": "label", "kind": "python", "code": code, "python_version": version}
        return client._request("POST", route, body)["function_id"]
    body = {"function_name": "label", "function_code": code, "meta": {"python_version": version}}
    return client._request("POST", route, body)["function_uuid"]


@pytest.mark.parametrize("route", ["/v1/functions", "/v3/functions"])
def test_bytecode_from_another_python_fails_naming_both_versions(stack, route):
    client = Client(stack.url, token=stack.token)
    fid = _register(client, serialize_function(label), "3.99.1", route)
    assert client.get_function(fid)["python_version"] == "3.99.1"
    task = client.run(1, endpoint_id=stack.endpoint_id, function_id=fid)
    with pytest.raises(RemoteExecutionError) as info:
        client.get_result(task, timeout=60)
    message = str(info.value)
    ours = platform.python_version()
    assert "3.99.1" in message and ours in message, message
    assert "source" in message  # what to do about it
    assert client.get_task(task)["status"] == "failed"


def test_the_same_python_and_source_run(stack):
    client = Client(stack.url, token=stack.token)
    same = client.register_function(label)
    assert client.get_function(same)["python_version"] == platform.python_version()
    source = _register(client, serialize_function(label, source=True), "3.99.1")
    assert "python_version" not in client.get_function(source)
    for fid in (same, source):
        assert client.get_result(client.run(2, endpoint_id=stack.endpoint_id, function_id=fid), timeout=60) == "ran 2"
    # The SDK's own source registration.
    fid = client.register_function(label, source=True)
    assert client.get_result(client.run(3, endpoint_id=stack.endpoint_id, function_id=fid), timeout=60) == "ran 3"


def test_a_version_that_is_not_one_is_refused_naming_the_field(stack):
    client = Client(stack.url, token=stack.token)
    with pytest.raises(APIError) as info:
        _register(client, serialize_function(label), "three")
    assert info.value.http_status == 400 and "python_version" in str(info.value)
    with pytest.raises(APIError) as info:
        _register(client, serialize_function(label), "3.x; rm", "/v3/functions")
    assert "meta.python_version" in str(info.value)


def test_a_lambda_or_closure_cannot_go_as_source():
    with pytest.raises(TypeError, match="def"):
        serialize_function(lambda x: x, source=True)
    y = 1

    def closure(x):
        return x + y

    with pytest.raises(TypeError, match="enclosing"):
        serialize_function(closure, source=True)
