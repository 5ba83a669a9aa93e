"""The Ferry side of the benchmark: a real stack (release binaries), one local endpoint
with one manager of N workers, a no-op function; throughput by batch submission with
every result collected, sequential round trips, and the peak RSS of every process."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from ferrystack import Stack, children_pids  # noqa: E402

from ferry import Client  # noqa: E402

from peers import percentiles  # noqa: E402


def noop(x):
    return x


class RssSampler(threading.Thread):
    """Samples the resident memory of processes (by pid, re-discovered as children
    appear) every 100 ms and keeps each one's peak."""

    def __init__(self, roots: dict[str, int], redis_pid: int | None) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.redis_pid = redis_pid
        self.rabbit_pid = pid_named("beam.smp")
        self.peaks: dict[str, int] = {}
        self.cpu: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        # Finding the children scans all of /proc (~3 ms of this thread, holding the GIL
        # the client needs): done every 2 s, not at every sample.
        known: dict[str, int] = {}
        for i in itertools.count():
            if self.stop.wait(0.1):
                return
            if i % 20 == 0:
                known = self.processes()
            for name, pid in known.items():
                rss = rss_kib(pid)
                if rss is not None:
                    self.peaks[name] = max(self.peaks.get(name, 0), rss)
                cpu = cpu_seconds(pid)
                if cpu is not None:
                    self.cpu[name] = cpu

    def processes(self) -> dict[str, int]:
        found = dict(self.roots)
        if self.redis_pid:
            found["redis-server"] = self.redis_pid
        if self.rabbit_pid:
            found["rabbitmq (beam.smp)"] = self.rabbit_pid
        found["benchmark client"] = os.getpid()
        for root in set(self.roots.values()):
            for pid, comm in children_pids(root).items():
                found[f"{comm}[{pid}]"] = pid
        return found


def rss_kib(pid: int) -> int | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time a process has used so far."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_pid() -> int | None:
    return pid_named("redis-server")


def pid_named(name: str) -> int | None:
    """The first process whose command name is `name` (the shared services)."""
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and open(f"/proc/{entry}/comm").read().strip() == name:
                return int(entry)
        except OSError:
            continue
    return None


@contextlib.contextmanager
def release_stack(workers: int = 2, bin_dir: Path | None = None, warm: int = 1, env: dict | None = None):
    """A running stack of release binaries (`FERRY_BIN_DIR`, which `scripts/bench` sets
    for its `CARGO_TARGET_DIR`, else `target/release`), quiet, with a client and the no-op
    function registered and `warm` round trips made: `(stack, client, function_id)`.
    `env`: more of the services' environment. The web-service and the forwarder run as
    one `ferry-server` (what `ferry dev` runs); `FERRY_BENCH_SERVER=0` runs the two
    binaries instead."""
    default = Path(os.environ.get("FERRY_BIN_DIR") or ROOT / "target" / "release")
    colocated = os.environ.get("FERRY_BENCH_SERVER", "1") != "0"
    stack = Stack(workers=workers, bin_dir=bin_dir or default, colocated=colocated)
    stack.env["TEST_RUST_LOG"] = "warn"
    stack.env["RUST_LOG"] = "warn"
    stack.env.update(env or {})
    stack.start()
    try:
        client = Client(stack.url, token=stack.token)
        fid = client.register_function(noop)
        client.get_result(wait(client, client.run(0, endpoint_id=stack.endpoint_id, function_id=fid)))
        for i in range(1, warm):
            client.get_result(client.run(i, endpoint_id=stack.endpoint_id, function_id=fid), timeout=60)
        yield stack, client, fid
    finally:
        stack.stop()


def run(n: int, latency_n: int, workers: int = 2, bin_dir: Path | None = None, memory: bool = True) -> dict:
    with release_stack(workers, bin_dir) as (stack, client, fid):
        sampler = RssSampler(stack.pids(), redis_pid()) if memory else None
        if sampler:
            sampler.start()
            time.sleep(0.3)
            cpu_before = dict(sampler.cpu)
        t0 = time.perf_counter()
        sessions = []
        chunk = 10_000
        for start in range(0, n, chunk):
            batch = client.create_batch()
            for i in range(start, min(n, start + chunk)):
                batch.add(fid, i)
            sessions.append(client.submit_session(stack.endpoint_id, batch))
        submitted = time.perf_counter() - t0
        ids = [tid for s in sessions for tid in s.task_ids]
        # Results are read while the rest still run, each record about once (the
        # sessions' counts say how many to read).
        collected = sum(1 for s in sessions for _ in s.as_completed(timeout=1800))
        elapsed = time.perf_counter() - t0
        assert collected == n, f"collected {collected} of {n} results"
        if sampler:
            time.sleep(0.2)
            sampler.stop.set()
            sampler.join()
            sampler.cpu = {k: v - cpu_before.get(k, 0.0) for k, v in sampler.cpu.items()}
        task_bytes = redis_bytes_per_task(stack.env["FERRY_NAMESPACE"], ids[:: max(1, len(ids) // 200)])
        lat = []
        for i in range(latency_n):
            a = time.perf_counter()
            client.get_result(client.run(i, endpoint_id=stack.endpoint_id, function_id=fid), timeout=60)
            lat.append(time.perf_counter() - a)
        pushed = ws_round_trips(stack, client, fid, latency_n)
        return {
            "throughput": n / elapsed,
            "submit_s": submitted,
            **percentiles(lat),
            **{f"ws_{k}": v for k, v in percentiles(pushed).items()},
            "rss_kib": dict(sorted(sampler.peaks.items())) if sampler else {},
            "cpu_s": dict(sorted(sampler.cpu.items())) if sampler else {},
            "redis_task_bytes": task_bytes,
        }


def ws_round_trips(stack: Stack, client: Client, fid: str, n: int) -> list[float]:
    """Sequential round trips whose result is pushed over the WebSocket: submit a
    one-task session that keeps its events, subscribe, wait for the terminal event."""
    import json

    from websockets.sync.client import connect

    url = stack.url.replace("http://", "ws://", 1) + "/v1/ws"
    out = []
    with connect(url, additional_headers={"Authorization": f"Bearer {stack.token}"}, max_size=None) as ws:
        for i in range(n):
            a = time.perf_counter()
            answer = client._submit_session(
                stack.endpoint_id, [(fid, client._payload(fid, (i,), {}))], None, events=True
            )
            ws.send(json.dumps({"op": "subscribe", "sessions": [answer["batch_id"]]}))
            while True:
                m = json.loads(ws.recv(timeout=60))
                if m.get("type") == "event" and m["state"] in ("success", "failed"):
                    break
            out.append(time.perf_counter() - a)
    return out


def redis_bytes_per_task(namespace: str, task_ids: list[str]) -> float | None:
    """The average Redis memory of finished task records (`MEMORY USAGE`), sampled."""
    sizes = []
    for tid in task_ids:
        out = subprocess.run(
            ["redis-cli", "MEMORY", "USAGE", f"{namespace}:task:{{{tid}}}"], capture_output=True, text=True
        ).stdout.strip()
        if out.isdigit():
            sizes.append(int(out))
    return sum(sizes) / len(sizes) if sizes else None


def wait(client: Client, task_id: str, seconds: float = 120, poll: float = 0.01) -> str:
    deadline = time.monotonic() + seconds
    while client.get_task(task_id)["pending"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} not done in {seconds} s")
        if poll:
            time.sleep(poll)
    return task_id
