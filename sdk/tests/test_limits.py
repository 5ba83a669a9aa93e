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
