"""Chaos: kill -9 each Ferry part in turn during a run, and check that every accepted
task still reaches a terminal state, that none is lost, none has two terminal history
entries and none failed.

    scripts/chaos [--tasks N] [--only SUBSTRING]

Scenarios (one stack each): the forwarder, the web-service and the endpoint are killed
and started again (the endpoint twice: back at once, and back only after the forwarder
declared it lost); a manager and a worker are killed (the endpoint and the manager
replace them by themselves); RabbitMQ and Redis are killed -9 and restarted on the same
data (durable queues and persistent messages; the append-only file). Two graceful
restarts (SIGTERM to the endpoint; to the web-service, forwarder and endpoint at once)
must run no task twice and cost none an attempt. The last two run
against private instances on free ports (Redis with an append-only file, fsync always;
a second RabbitMQ node with its own data directory), so the shared services on 5672 and
6379 are never touched; they are removed on every exit path (the scenario's
`finally`, and at exit after Ctrl-C, SIGTERM or SIGHUP). While a backend is down the
web-service answers 503: a submission that fails was not accepted and is sent again.
Executions are counted, not only records: each task writes a line to a side-effect log
when it starts. A task recorded as finished before the kill must have run exactly once
(`ran again after a recorded result`, which fails the scenario); `ran twice` (any
accepted task run more than once: allowed after a crash for a task that was running, or
finished but not yet recorded) and `ran though refused` (tasks of a submission that
answered an error and was sent again) are reported.
One line per scenario on stderr (tasks accepted, how many were unfinished at the kill,
how long a backend was down, executions, seconds taken); the last line on stdout is
`chaos: <passed>/<scenarios> scenarios, <tasks> tasks, lost <n>, duplicated <n>`.
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from ferrystack import Stack, _wait, children_pids  # noqa: E402

from ferry import APIError, Client  # noqa: E402

# What the client raises while the web-service or one of its backends is down.
UNAVAILABLE = (APIError, OSError, http.client.HTTPException)


def work(x, tag, log):
    """Writes its run to the side-effect log (one line per run, at its start), then
    works a little."""
    import os
    import time

    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{tag}\n".encode())
    finally:
        os.close(fd)
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
            # The node writes its pid file again when it starts: never kill a stale pid.
            (self.dir / "pid").unlink()
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        wait_port(self.port, False, 30, "the private RabbitMQ")

    def cleanup(self) -> None:
        try:
            self.kill()
        except RuntimeError:
            pass
        # Whatever is left of this node only (a start cut short may still be spawning it).
        deadline = time.monotonic() + 5
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                kill(pid)
            time.sleep(0.5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def pids(self) -> list[int]:
        """This node's processes (beam, erl_child_setup, inet_gethost...). The node name
        is not on their command lines, so `pkill -f` cannot find them: they are told
        apart by the RABBITMQ_NODENAME in their environment."""
        mark = f"RABBITMQ_NODENAME={self.node}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    environ = Path(f"/proc/{entry}/environ").read_bytes()
                except OSError:
                    continue
                if mark in environ.split(b"\0"):
                    found.append(int(entry))
        return found


# Private instances still alive, removed at exit whatever the way out.
_private: list = []


def _cleanup_private() -> None:
    while _private:
        _private.pop().cleanup()


atexit.register(_cleanup_private)
# SIGTERM and SIGHUP unwind like Ctrl-C: the `finally` blocks stop the stack and remove
# the private instance, and the atexit hook catches whatever is left.
for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, lambda signum, _frame: sys.exit(128 + signum))


def scenario(name: str, tasks: int, chaos, backend=None, graceful: bool = False) -> tuple[bool, int, int, int]:
    started = time.monotonic()
    private = None
    try:
        if backend is not None:
            private = backend()
            _private.append(private)  # before it starts: a failed start is removed too
            private.start()
        stack = Stack()
        stack.env["RUST_LOG"] = "warn"
        if isinstance(private, PrivateRedis):
            stack.env["FERRY_REDIS_URL"] = private.url
        elif isinstance(private, PrivateRabbit):
            # The web-service hands the broker URL to the endpoint (and so to its managers).
            stack.env["FERRY_AMQP_URL"] = stack.env["FERRY_PUBLIC_AMQP_URL"] = private.url
            # Broker identities are made on the shared node's management API, not here.
            stack.env.pop("FERRY_AMQP_ADMIN_URL", None)
        return run_scenario(stack, name, tasks, lambda s: chaos(s, private), started, graceful)
    except Exception:  # noqa: BLE001 - a broken scenario fails, the others still run
        traceback.print_exc()
        print(f"chaos: {name}: could not run -> FAILED", file=sys.stderr, flush=True)
        return False, 0, 0, 0
    finally:
        if private is not None:
            if private in _private:
                _private.remove(private)
            private.cleanup()


def run_scenario(
    stack: Stack, name: str, tasks: int, chaos, started: float, graceful: bool = False
) -> tuple[bool, int, int, int]:
    accepted: list[str] = []
    # Each task's tag in the side-effect log: its number and its try (a submission that
    # was refused is sent again as a new try).
    tags: dict[str, str] = {}
    stop = threading.Event()
    try:
        stack.start()
        log = str(stack.dir / "runs.log")
        client = Client(stack.url, token=stack.token)
        fid = client.register_function(work)
        done_submitting = threading.Event()

        def submit() -> None:
            chunk = max(1, tasks // 20)
            sent = tries = 0
            while sent < tasks and not stop.is_set():
                tries += 1
                batch = client.create_batch()
                n = min(chunk, tasks - sent)
                batch_tags = [f"{sent + i}.{tries}" for i in range(n)]
                for i in range(n):
                    batch.add(fid, sent + i, batch_tags[i], log)
                try:
                    ids = client.batch_run(stack.endpoint_id, batch)
                    tags.update(zip(ids, batch_tags))
                    accepted.extend(ids)
                    sent += n
                except UNAVAILABLE:
                    time.sleep(0.2)  # the web-service or a backend is down: nothing was accepted
            done_submitting.set()

        submitter = threading.Thread(target=submit, daemon=True)
        submitter.start()
        # Strike while the run is under way: some tasks done, many still in flight.
        while len(accepted) < tasks // 10 and not done_submitting.is_set():
            time.sleep(0.01)
        time.sleep(0.2)
        snapshot = list(accepted)
        before = client.get_tasks(snapshot)
        in_flight = sum(1 for d in before.values() if d["pending"])
        # Recorded before the strike: these must run exactly once, whatever comes.
        recorded = [t for t, d in before.items() if not d["pending"]]
        note = chaos(stack)
        submitter.join(timeout=300)
        # Generous: a restarted RabbitMQ takes seconds to boot, and the parts back off.
        deadline = time.monotonic() + 300
        pending = list(accepted)
        docs: dict[str, dict] = {}
        while pending and time.monotonic() < deadline:
            try:
                fetched = client.get_tasks(pending)
            except UNAVAILABLE:
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
        retried = sum(1 for d in docs.values() if d["attempt"] > 0)
        unexplained = sum(1 for d in docs.values() if not history_explains_attempts(d))
        # Executions, from the side-effect log.
        runs: dict[str, int] = {}
        for line in Path(log).read_text().splitlines() if Path(log).exists() else []:
            runs[line] = runs.get(line, 0) + 1
        ran_twice = sum(1 for t in accepted if runs.get(tags[t], 0) > 1)
        ran_again = sum(1 for t in recorded if runs.get(tags[t], 0) != 1)
        unlogged = sum(1 for t, d in docs.items() if d["status"] == "success" and runs.get(tags[t], 0) == 0)
        accepted_tags = set(tags.values())
        refused_ran = sum(1 for tag in runs if tag not in accepted_tags)
        ok = (
            lost == 0 and duplicated == 0 and failed == 0 and unexplained == 0 and ran_again == 0
            and unlogged == 0 and done_submitting.is_set()
            # A graceful restart runs nothing twice (and costs no attempt).
            and (not graceful or (ran_twice == 0 and retried == 0))
        )
        print(
            f"chaos: {name}: {len(accepted)} accepted ({in_flight} unfinished at the kill{note or ''}), "
            f"lost {lost}, duplicated {duplicated}, failed {failed}, "
            f"retried {retried} (unexplained {unexplained}); "
            f"ran again after a recorded result {ran_again} (of {len(recorded)} recorded before the kill), "
            f"ran twice {ran_twice}, ran though refused {refused_ran}, succeeded unlogged {unlogged}, "
            f"{time.monotonic() - started:.0f} s -> {'ok' if ok else 'FAILED'}",
            file=sys.stderr,
            flush=True,
        )
        return ok, len(accepted), lost, duplicated
    finally:
        stop.set()
        stack.stop()


def history_explains_attempts(doc: dict) -> bool:
    """Every attempt up to the task's last is in its history, and each new attempt
    begins by going back to waiting (for nodes after a lost worker or manager, for the
    endpoint after a lost endpoint) or by the endpoint receiving a copy of it."""
    history = doc["history"]
    seen = {h["attempt"] for h in history}
    if seen != set(range(doc["attempt"] + 1)):
        return False
    for prev, step in zip(history, history[1:]):
        if step["attempt"] > prev["attempt"] and step["state"] not in (
            "waiting-for-ep", "waiting-for-nodes", "waiting-for-launch", "running", "success", "failed"
        ):
            return False
    return True


ENDPOINT_ARGS = ("start", "ep", "--foreground")


def graceful_restart(*parts: str):
    """SIGTERM to these parts at once (a routine restart), each waited for (the endpoint
    drains: `stop_grace_secs`), then started again. Nothing may run twice."""

    def chaos(stack: Stack, _backend) -> str:
        for part in parts:
            stack.procs[part].send_signal(signal.SIGTERM)
        for part in parts:
            stack.procs[part].wait(timeout=60)
        for part in parts:
            if part == "ferry-endpoint":
                # Registered with the web-service as it starts: after the web-service.
                _wait(stack._serving, 30, "the web-service", stack.dir)
            stack.spawn(part, *(ENDPOINT_ARGS if part == "ferry-endpoint" else ()))
        return ", graceful"

    return chaos


def restart(part: str, *args: str, down: float = 0.5):
    def chaos(stack: Stack, _backend) -> None:
        kill(stack.procs[part].pid)
        stack.procs[part].wait()
        time.sleep(down)
        stack.spawn(part, *args)

    return chaos


def restart_backend(down_secs: float):
    """Kill -9 the stack's private Redis or RabbitMQ, and start it again."""

    def chaos(stack: Stack, backend: PrivateRedis | PrivateRabbit) -> str:
        killed = time.monotonic()
        backend.kill()
        time.sleep(down_secs)
        backend.start()
        return f", down {time.monotonic() - killed:.1f} s"

    return chaos


def kill_descendant(name: str):
    def chaos(stack: Stack, _backend) -> None:
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
        ("kill -9 the endpoint", restart("ferry-endpoint", *ENDPOINT_ARGS), None),
        # Away past its heartbeat window (5 missed beats of 500 ms): the forwarder declares
        # it lost and its in-flight tasks come back as their next attempt.
        (
            "kill -9 the endpoint, away until it is declared lost",
            restart("ferry-endpoint", *ENDPOINT_ARGS, down=5.0),
            None,
        ),
        ("kill -9 a manager", kill_descendant("ferry-manager"), None),
        ("kill -9 a worker", kill_descendant("ferry-worker"), None),
        ("kill -9 and restart RabbitMQ", restart_backend(1.0), PrivateRabbit),
        ("kill -9 and restart Redis", restart_backend(1.0), PrivateRedis),
        ("SIGTERM the endpoint (graceful restart)", graceful_restart("ferry-endpoint"), None, True),
        (
            "SIGTERM every part at once (graceful restart)",
            graceful_restart("ferry-web-service", "ferry-forwarder", "ferry-endpoint"),
            None,
            True,
        ),
    ]
    scenarios = [s for s in scenarios if args.only in s[0]]
    passed = total_tasks = total_lost = total_dup = 0
    for name, chaos, backend, *graceful in scenarios:
        ok, n, lost, dup = scenario(name, args.tasks, chaos, backend, bool(graceful and graceful[0]))
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
