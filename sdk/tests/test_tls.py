"""The client verifies an https:// service against the system's CAs and its ca_file:
a service whose certificate comes from that CA is reached, one from another CA is not."""

from __future__ import annotations

import http.server
import json
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from ferry import Client, FerryError

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _ca(dir: Path, name: str) -> tuple[Path, Path]:
    key, cert = dir / f"{name}-ca.key", dir / f"{name}-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "2", "-subj", f"/CN={name} test CA"],
        check=True, capture_output=True,
    )
    return key, cert


def _server_cert(dir: Path, ca_key: Path, ca_cert: Path) -> tuple[Path, Path]:
    key, csr, cert, ext = dir / "server.key", dir / "server.csr", dir / "server.pem", dir / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    subprocess.run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )
    subprocess.run(
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
        check=True, capture_output=True,
    )
    return key, cert


class _Version(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the handler's name
        # Both version routes' fields: Ferry's, and what the Globus Compute SDK checks.
        body = json.dumps({"api": "1", "version": "test", "min_sdk_version": "2.0.0", "min_ep_version": "2.0.0"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def https_service(tmp_path: Path):
    ca_key, ca_cert = _ca(tmp_path, "ferry")
    key, cert = _server_cert(tmp_path, ca_key, ca_cert)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Version)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://localhost:{server.server_address[1]}", ca_cert
    server.shutdown()


def test_a_service_with_a_certificate_from_the_given_ca_is_reached(https_service) -> None:
    url, ca = https_service
    assert Client(url, token="t", ca_file=str(ca)).version()["api"] == "1"


def test_the_ca_file_can_come_from_the_environment(https_service, monkeypatch) -> None:
    url, ca = https_service
    monkeypatch.setenv("FERRY_CA_FILE", str(ca))
    assert Client(url, token="t").version()["api"] == "1"


def test_a_service_whose_ca_is_not_trusted_is_refused(https_service, tmp_path: Path) -> None:
    url, _ = https_service
    _, stranger = _ca(tmp_path, "stranger")
    with pytest.raises((ssl.SSLError, FerryError, OSError)):
        Client(url, token="t", ca_file=str(stranger)).version()
    with pytest.raises((ssl.SSLError, FerryError, OSError)):
        Client(url, token="t").version()


def test_the_globus_compute_client_trusts_the_given_ca_and_nothing_else(https_service, tmp_path: Path) -> None:
    pytest.importorskip("globus_compute_sdk")
    from ferry.globus_compat import client

    url, ca = https_service
    assert client(url, token="t", ca_file=str(ca)).web_service_address == url
    _, stranger = _ca(tmp_path, "stranger")
    with pytest.raises(Exception) as refused:
        client(url, token="t", ca_file=str(stranger))
    causes, e = [], refused.value
    while e is not None and len(causes) < 10:
        causes.append(repr(e))
        e = e.__cause__ or e.__context__
    cause = " <- ".join(causes).lower()
    assert "certificate" in cause or "ssl" in cause, cause
