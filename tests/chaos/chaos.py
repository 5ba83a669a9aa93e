"""Chaos: kill -9 each Ferry part in turn during a run, and check that every accepted
task still reaches a terminal state, that none is lost and none has two results.

    scripts/chaos [--tasks N]

Scenarios (one stack each): the forwarder, the web-service and the endpoint are killed
and started again; a manager and a worker are killed (the endpoint and the manager
replace them by themselves); RabbitMQ and Redis are killed -9 and restarted. The last
two run against private instances on other ports (Redis with an append-only file,
fsync always; a second RabbitMQ node with its own data directory), so the shared
services are never touched; they are removed on every exit path. The last line is
`chaos: <passed>/<scenarios> scenarios, <tasks> tasks, lost <n>, duplicated <n>`.

    scripts/chaos [--tasks N] [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from ferrystack import Stack, children_pids  # noqa: E402

from ferry import APIError, Client  # noqa: E402


def work(x):
    import time

    time.sleep(0.005)
    return x


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def descendants(stack: Stack, name: str) -> list[int]:
    """Pids of processes called `name` under the stack's endpoint."""
    root = stack.procs["ferry-endpoint"].pid
    return [pid for pid, comm in children_pids(root).items() if comm.startswith(name)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, up: bool, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not {'start' if up else 'stop'} within {seconds} s")


class PrivateRedis:
    """A Redis of our own, persisting every write (append-only file, fsync always)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ferry-chaos-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=open(self.dir / "redis.log", "ab"), stderr=subprocess.STDOUT,
        )
        wait_port(self.port, True, 30, "the private Redis")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRabbit:
    """A second RabbitMQ node (see shared/recipes/second-rabbitmq-node.md)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ferry-chaos-rabbit-"))
        self.port = free_port()
        self.dist = free_port()
        self.node = f"ferrychaos-{os.getpid()}-{self.port}@localhost"
        for sub in ("mnesia", "log"):
            (self.dir / sub).mkdir()
        (self.dir / "plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.dir)], check=True)
        self.start()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"

    def start(self) -> None:
        env = dict(
            os.environ,
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_DIST_PORT=str(self.dist),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq"),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_PID_FILE=str(self.dir / "pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "plugins"),
        )
        subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, capture_output=True)
        wait_port(self.port, True, 90, f"the private RabbitMQ (logs in {self.dir / 'log'})")

    def kill(self) -> None:
        try:
            pid = int((self.dir / "pid").read_text().strip())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        wait_port(self.port, False, 30, "the private RabbitMQ")

    def cleanup(self) -> None:
        self.kill()
        subprocess.run(["pkill", "-9", "-f", self.node], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


# Private instances still alive, removed at exit whatever the way out.
_private: list = []


def _cleanup_private() -> None:
    while _private:
        _private.pop().cleanup()


atexit.register(_cleanup_private)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def scenario(name: str, tasks: int, chaos, backend=None) -> tuple[bool, int, int, int]:
    stack = Stack()
    stack.env["RUST_LOG"] = "warn"
    private = None
    if backend is not None:
        private = backend()
        _private.append(private)
        key = "FERRY_REDIS_URL" if isinstance(private, PrivateRedis) else "FERRY_AMQP_URL"
        stack.env[key] = private.url
        stack.backend = private
    try:
        return run_scenario(stack, name, tasks, chaos)
    finally:
        if private is not None:
            _private.remove(private)
            private.cleanup()


def run_scenario(stack: Stack, name: str, tasks: int, chaos) -> tuple[bool, int, int, int]:
    stack.start()
    client = Client(stack.url, token=stack.token)
    accepted: list[str] = []
    try:
        fid = client.register_function(work)
        done_submitting = threading.Event()

        def submit() -> None:
            chunk = max(1, tasks // 20)
            sent = 0
            while sent < tasks:
                batch = client.create_batch()
                n = min(chunk, tasks - sent)
                for i in range(n):
                    batch.add(fid, sent + i)
                try:
                    accepted.extend(client.batch_run(stack.endpoint_id, batch))
                    sent += n
                except (APIError, OSError):
                    time.sleep(0.2)  # the web-service is down: nothing was accepted
            done_submitting.set()

        submitter = threading.Thread(target=submit)
        submitter.start()
        # Strike while the run is under way: some tasks done, many still in flight.
        while len(accepted) < tasks // 10 and not done_submitting.is_set():
            time.sleep(0.01)
        time.sleep(0.2)
        snapshot = list(accepted)
        in_flight = sum(1 for d in client.get_tasks(snapshot).values() if d["pending"])
        chaos(stack)
        submitter.join(timeout=300)
        deadline = time.monotonic() + 300
        pending = list(accepted)
        docs: dict[str, dict] = {}
        while pending and time.monotonic() < deadline:
            try:
                fetched = client.get_tasks(pending)
            except (APIError, OSError):
                time.sleep(0.5)
                continue
            docs.update(fetched)
            pending = [t for t in pending if t not in fetched or fetched[t]["pending"]]
            if pending:
                time.sleep(0.2)
        lost = len(pending)
        duplicated = sum(
            1 for d in docs.values() if sum(h["state"] in ("success", "failed") for h in d["history"]) > 1
        )
        failed = sum(1 for d in docs.values() if d["status"] == "failed")
        ok = lost == 0 and duplicated == 0 and failed == 0 and done_submitting.is_set()
        print(
            f"chaos: {name}: {len(accepted)} accepted ({in_flight} unfinished at the kill), "
            f"lost {lost}, duplicated {duplicated}, failed {failed}"
            f" -> {'ok' if ok else 'FAILED'}",
            file=sys.stderr,
            flush=True,
        )
        return ok, len(accepted), lost, duplicated
    finally:
        stack.stop()


def restart(part: str, *args: str):
    def chaos(stack: Stack) -> None:
        kill(stack.procs[part].pid)
        stack.procs[part].wait()
        time.sleep(0.5)
        stack.spawn(part, *args)

    return chaos


def restart_backend(down_secs: float):
    """Kill -9 the stack's private Redis or RabbitMQ, and start it again."""

    def chaos(stack: Stack) -> None:
        stack.backend.kill()
        time.sleep(down_secs)
        stack.backend.start()

    return chaos


def kill_descendant(name: str):
    def chaos(stack: Stack) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = descendants(stack, name)
            if pids:
                kill(pids[0])
                return
            time.sleep(0.1)
        raise RuntimeError(f"no {name} process to kill")

    return chaos


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10_000, help="tasks per scenario")
    ap.add_argument("--only", default="", help="run only the scenarios whose name contains this")
    args = ap.parse_args()
    scenarios = [
        ("kill -9 the forwarder", restart("ferry-forwarder"), None),
        ("kill -9 the web-service", restart("ferry-web-service"), None),
        ("kill -9 the endpoint", restart("ferry-endpoint", "start", "ep", "--foreground"), None),
        ("kill -9 a manager", kill_descendant("ferry-manager"), None),
        ("kill -9 a worker", kill_descendant("ferry-worker"), None),
        ("kill -9 and restart RabbitMQ", restart_backend(1.0), PrivateRabbit),
        ("kill -9 and restart Redis", restart_backend(1.0), PrivateRedis),
    ]
    scenarios = [s for s in scenarios if args.only in s[0]]
    passed = total_tasks = total_lost = total_dup = 0
    for name, chaos, backend in scenarios:
        ok, n, lost, dup = scenario(name, args.tasks, chaos, backend)
        passed += ok
        total_tasks += n
        total_lost += lost
        total_dup += dup
    print(
        f"chaos: {passed}/{len(scenarios)} scenarios, {total_tasks} tasks, "
        f"lost {total_lost}, duplicated {total_dup}"
    )
    return 0 if passed == len(scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
