"""An OpenTelemetry collector in a thread: an HTTP server that takes OTLP/JSON at
/v1/traces and keeps every span (with its service's name and its attributes as a
dict), for tests/e2e/test_traces.py and bench/hops.py."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Collector:
    """Keeps every span posted to /v1/traces, with its service's name."""

    def __init__(self):
        self.spans: list[dict] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = self.path == "/v1/traces" and self.headers["Content-Type"] == "application/json"
                if ok:
                    collector.take(json.loads(body))
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, export: dict):
        for rs in export.get("resourceSpans", []):
            attrs = {a["key"]: a["value"] for a in rs.get("resource", {}).get("attributes", [])}
            service = attrs.get("service.name", {}).get("stringValue")
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    span["service"] = service
                    span["attrs"] = {
                        a["key"]: next(iter(a["value"].values())) for a in span.get("attributes", [])
                    }
                    with self.lock:
                        self.spans.append(span)

    def trace(self, task_id: str, names: set[str], timeout: float = 30) -> dict[str, dict]:
        """The spans of `task_id`'s trace by name, once every one of `names` is in."""
        trace_id = task_id.replace("-", "")
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = {s["name"]: s for s in self.spans if s["traceId"] == trace_id}
            if names <= found.keys() or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def env(self) -> dict[str, str]:
        """What a Ferry process needs to send its spans here, at once."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

    def close(self) -> None:
        self.server.shutdown()
