"""A 429 (a per-user limit; the request was refused whole) is waited out as its
Retry-After says and the request sent again, up to the client's limit_wait; past that
the APIError is raised."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from ferry import APIError, Client


class _Limited(http.server.BaseHTTPRequestHandler):
    """Answers 429 (Retry-After: 1) to the first `refusals` requests, then 200."""

    refusals = 0
    seen = 0

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        type(self).seen += 1
        if type(self).seen <= type(self).refusals:
            body = json.dumps({"code": "too_many_requests", "message": "over FERRY_RATE_LIMIT"}).encode()
            self.send_response(429)
            self.send_header("Retry-After", "1")
        else:
            body = json.dumps({"api": "1", "version": "test"}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def limited():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Limited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_a_429_is_waited_out_and_the_request_sent_again(limited):
    _Limited.refusals, _Limited.seen = 1, 0
    client = Client(f"http://127.0.0.1:{limited.server_address[1]}", token="t")
    started = time.monotonic()
    assert client.version()["version"] == "test"
    assert _Limited.seen == 2
    assert time.monotonic() - started >= 0.9


def test_past_limit_wait_the_429_is_raised_naming_the_limit(limited):
    _Limited.refusals, _Limited.seen = 100, 0
    client = Client(f"http://127.0.0.1:{limited.server_address[1]}", token="t", limit_wait=1.5)
    with pytest.raises(APIError) as refused:
        client.version()
    assert refused.value.http_status == 429 and "FERRY_RATE_LIMIT" in refused.value.message
    assert _Limited.seen <= 3


class _Budget(http.server.BaseHTTPRequestHandler):
    """Answers a status request for one task; more than one is over the budget (413)."""

    asked: list = []

    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ids = body["task_ids"]
        type(self).asked.append(len(ids))
        if len(ids) > 1:
            status, doc = 413, {"code": "payload_too_large", "message": "over FERRY_MAX_RESPONSE_BYTES"}
        else:
            status, doc = 200, {"tasks": {ids[0]: {"pending": False, "status": "success"}}, "unknown": []}
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args) -> None:
        pass


def test_results_over_one_answers_budget_are_asked_for_in_halves():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Budget)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _Budget.asked = []
        client = Client(f"http://127.0.0.1:{server.server_address[1]}", token="t")
        docs = client.get_tasks(["a", "b", "c"], history=False)
        assert sorted(docs) == ["a", "b", "c"]
        assert _Budget.asked[0] == 3 and _Budget.asked.count(1) == 3
    finally:
        server.shutdown()
