"""A real Ferry stack as processes: the built binaries (``FERRY_BIN_DIR``, default
``target/debug``) against the real RabbitMQ and Redis, in a namespace of their own: a
web-service, a forwarder and a local endpoint (:class:`Stack`); or the same three run by
``ferry dev`` on its embedded store and broker (:class:`DevStack`, chosen by
``FERRY_TEST_BACKENDS=embedded`` through :func:`make_stack`). Used by the end-to-end
tests and by the benchmark."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("FERRY_BIN_DIR", ROOT / "target" / "debug"))


def children_pids(root: int) -> dict[int, str]:
    """Every descendant of process `root`: pid -> command name."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents[int(entry)] = (ppid, comm)
    out: dict[int, str] = {}
    frontier = {root}
    while frontier:
        found = {pid for pid, (ppid, _) in parents.items() if ppid in frontier and pid not in out}
        for pid in found:
            out[pid] = parents[pid][1]
        frontier = found
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, seconds: float, what: str, logs: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; logs in {logs}")


class Stack:
    def __init__(
        self,
        workers: int = 2,
        bin_dir: Path | None = None,
        python: str | None = sys.executable,
        settings: dict[str, str] | None = None,
        colocated: bool = False,
    ) -> None:
        """`python`: the workers' interpreter; None leaves it to the endpoint's default.
        `settings`: more of the endpoint's config (`{"provider.keep_run_dirs": "2s"}`).
        `colocated`: one `ferry-server` instead of the web-service and the forwarder."""
        self.settings = dict(settings or {})
        self.bin = (Path(bin_dir) if bin_dir else BIN).resolve()
        self.workers = workers
        self.colocated = colocated
        # `ferry-web-service create-user` makes the token either way.
        services = ("ferry-server", "ferry-web-service") if colocated else ("ferry-web-service", "ferry-forwarder")
        for name in (*services, "ferry-endpoint", "ferry-manager", "ferry-worker"):
            if not (self.bin / name).exists():
                raise RuntimeError(f"{self.bin / name} is missing: run `cargo build --bins` first")
        self.dir = Path(tempfile.mkdtemp(prefix="ferry-py-e2e-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(
            os.environ,
            FERRY_NAMESPACE=f"py{uuid.uuid4().hex[:12]}",
            FERRY_LISTEN=f"127.0.0.1:{self.port}",
            FERRY_HOME=str(self.dir / "home"),
            FERRY_QUEUE_EXPIRES_SECS="300",
            FERRY_RESULT_TTL_SECS="900",
            FERRY_HEARTBEAT_INTERVAL_MS="500",
            FERRY_PYTHON=sys.executable,
            # Endpoints and result streams get broker users of their own (removed in stop).
            FERRY_AMQP_ADMIN_URL=os.environ.get("FERRY_TEST_AMQP_ADMIN", "http://guest:guest@127.0.0.1:15672"),
            # The workers can import the test modules, as a user's endpoint can import
            # the user's own code (functions defined in a module travel by reference).
            PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
            RUST_LOG=os.environ.get("TEST_RUST_LOG", "info"),
        )
        if python is None:
            del self.env["FERRY_PYTHON"]
        else:
            self.env["FERRY_PYTHON"] = python
        self.procs: dict[str, subprocess.Popen] = {}
        self.user_name = "py-tester"

    def spawn(self, name: str, *args: str) -> None:
        log = open(self.dir / f"{name}.log", "ab")
        # In the stack's own directory: what tasks write to their working directory
        # (shell functions' output files) stays out of the repository.
        self.procs[name] = subprocess.Popen(
            [str(self.bin / name), *args],
            env=self.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
        )

    def run(self, name: str, *args: str) -> str:
        out = subprocess.run([str(self.bin / name), *args], env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def start_services(self) -> None:
        """The web-service and the forwarder, or the one server holding both."""
        if self.colocated:
            self.spawn("ferry-server")
        else:
            self.spawn("ferry-web-service")
            self.spawn("ferry-forwarder")
        _wait(self._serving, 30, "the web-service", self.dir)

    def start(self) -> None:
        self.start_services()
        self.token = self.run("ferry-web-service", "create-user", "py-tester")
        python = ["--python", self.env["FERRY_PYTHON"]] if "FERRY_PYTHON" in self.env else []
        self.run(
            "ferry-endpoint", "configure", "ep", "--url", self.url, "--token", self.token,
            *python, "--workers", str(self.workers),
            *[arg for key, value in self.settings.items() for arg in ("--set", f"{key}={value}")],
        )
        self.spawn("ferry-endpoint", "start", "ep", "--foreground")
        running = self.dir / "home" / "endpoints" / "ep" / "running.json"
        _wait(running.exists, 60, "the endpoint to start", self.dir)
        self.endpoint_id = json.loads(running.read_text())["endpoint_id"]
        _wait(self._endpoint_ready, 60, "a manager to connect", self.dir)

    def _serving(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v1/version", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def _endpoint_ready(self) -> bool:
        req = urllib.request.Request(
            f"{self.url}/v1/endpoints/{self.endpoint_id}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=2) as r:
            doc = json.load(r)
        return doc["status"] == "online" and (doc["details"] or {}).get("managers", 0) > 0

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.remove_broker_users()
        if not os.environ.get("FERRY_TEST_KEEP_DIR"):
            shutil.rmtree(self.dir, ignore_errors=True)
            self.delete_namespace()
            self.delete_queues()

    def _management(self) -> tuple[str, dict[str, str]] | None:
        """The broker's management API: its base URL and the headers to call it with."""
        if "FERRY_AMQP_ADMIN_URL" not in self.env:
            return None
        parsed = urllib.parse.urlsplit(self.env["FERRY_AMQP_ADMIN_URL"])
        auth = base64.b64encode(f"{parsed.username}:{parsed.password}".encode()).decode()
        return f"{parsed.scheme}://{parsed.hostname}:{parsed.port}/api", {"Authorization": f"Basic {auth}"}

    def _delete_named(self, collection: str, keep) -> None:
        """DELETEs each element of `/api/<collection>` whose name `keep` selects."""
        management = self._management()
        if management is None:
            return
        base, headers = management
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{base}/{collection}", headers=headers), timeout=10) as r:
                names = [e["name"] for e in json.load(r) if keep(e["name"])]
            for name in names:
                quoted = urllib.parse.quote(name, safe="")
                request = urllib.request.Request(f"{base}/{collection}/{quoted}", headers=headers, method="DELETE")
                urllib.request.urlopen(request, timeout=10).close()
        except OSError:
            pass

    def remove_broker_users(self) -> None:
        """Removes the broker users made for this stack (named `<namespace>-...`)."""
        prefix = self.env["FERRY_NAMESPACE"] + "-"
        self._delete_named("users", lambda name: name.startswith(prefix))

    def delete_queues(self) -> None:
        """Deletes the stack's queues and endpoint exchanges (named `<namespace>.…`); the
        queues would otherwise stay until `FERRY_QUEUE_EXPIRES_SECS` passes unused, the
        exchanges for good."""
        prefix = self.env["FERRY_NAMESPACE"] + "."
        self._delete_named("queues/%2F", lambda name: name.startswith(prefix))
        self._delete_named("exchanges/%2F", lambda name: name.startswith(prefix))

    def delete_namespace(self) -> None:
        """Deletes the stack's Redis keys: left to expire, a benchmark's hundreds of
        thousands of records would cost the next run Redis's expiry work."""
        ns = self.env["FERRY_NAMESPACE"]
        url = self.env.get("FERRY_REDIS_URL", "redis://127.0.0.1:6379")
        if shutil.which("redis-cli") is None:
            return
        subprocess.run(
            f"redis-cli -u {url} --scan --pattern '{ns}:*' | xargs -r -n 1000 redis-cli -u {url} unlink",
            shell=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items() if p.poll() is None}


class DevStack:
    """``ferry dev`` (the binary ``ferry-dev``) with a home of its own: the web-service,
    the forwarder and a local endpoint on the embedded store and broker. It offers what
    the SDK tests use of :class:`Stack`: ``url``, ``token``, ``endpoint_id``, ``env``,
    ``run`` (the store's URL comes from ferry dev's banner), ``user_name``."""

    def __init__(self, workers: int = 2, bin_dir: Path | None = None, python: str | None = sys.executable) -> None:
        self.bin = (Path(bin_dir) if bin_dir else BIN).resolve()
        if not (self.bin / "ferry-dev").exists():
            raise RuntimeError(f"{self.bin / 'ferry-dev'} is missing: run `cargo build --bins` first")
        self.workers = workers
        self.python = python
        self.dir = Path(tempfile.mkdtemp(prefix="ferry-py-dev-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.user_name = "dev"
        self.env = dict(
            os.environ,
            FERRY_HOME=str(self.dir / "home"),
            FERRY_RESULT_TTL_SECS="900",
            FERRY_HEARTBEAT_INTERVAL_MS="500",
            PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
            RUST_LOG=os.environ.get("TEST_RUST_LOG", "info"),
        )
        for var in ("FERRY_URL", "FERRY_TOKEN", "FERRY_ENDPOINT", "FERRY_DEV_REDIS_URL", "FERRY_DEV_AMQP_URL"):
            self.env.pop(var, None)
        self.proc: subprocess.Popen | None = None

    def banner(self) -> str:
        return (self.dir / "ferry-dev.out").read_text()

    def field(self, name: str) -> str:
        for line in self.banner().splitlines():
            parts = line.split()
            if parts[:1] == [name]:
                return parts[1]
        raise AssertionError(f"no {name} in ferry dev's banner:\n{self.banner()}")

    def start(self) -> None:
        python = ["--python", self.python] if self.python else []
        self.proc = subprocess.Popen(
            [str(self.bin / "ferry-dev"), "--listen", f"127.0.0.1:{self.port}", "--workers", str(self.workers), *python],
            env=self.env,
            stdout=open(self.dir / "ferry-dev.out", "wb"),
            stderr=open(self.dir / "ferry-dev.err", "wb"),
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
        )

        def running() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"ferry dev exited: {(self.dir / 'ferry-dev.err').read_text()}")
            return "Ferry is running" in self.banner()

        _wait(running, 90, "ferry dev", self.dir)
        saved = json.loads((self.dir / "home" / "client.json").read_text())
        self.token, self.endpoint_id = saved["token"], saved["endpoint_id"]
        self.env["FERRY_REDIS_URL"] = self.field("store")
        self.env["FERRY_NAMESPACE"] = "ferry-dev"
        _wait(self._endpoint_ready, 60, "a manager to connect", self.dir)

    _endpoint_ready = Stack._endpoint_ready

    def run(self, name: str, *args: str) -> str:
        out = subprocess.run([str(self.bin / name), *args], env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def stop(self, keep: bool = False) -> None:
        """Ctrl-C's signal; ``keep`` leaves the home for a :meth:`start` again."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if not keep and not os.environ.get("FERRY_TEST_KEEP_DIR"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def pids(self) -> dict[str, int]:
        return {"ferry-dev": self.proc.pid} if self.proc and self.proc.poll() is None else {}


def make_stack(**kwargs) -> Stack | DevStack:
    """A :class:`DevStack` with ``FERRY_TEST_BACKENDS=embedded``, else a :class:`Stack`."""
    if os.environ.get("FERRY_TEST_BACKENDS") == "embedded":
        return DevStack(**kwargs)
    return Stack(**kwargs)
