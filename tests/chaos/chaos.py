"""Chaos: kill -9 each Ferry part in turn during a run, and check that every accepted
task still reaches a terminal state, that none is lost and none has two results.

    scripts/chaos [--tasks N]

Scenarios (one stack each): the forwarder, the web-service and the endpoint are killed
and started again; a manager and a worker are killed (the endpoint and the manager
replace them by themselves). RabbitMQ and Redis restarts are covered by
crates/tests/tests/broker_restart.rs and redis_restart.rs. The last line is
`chaos: <passed>/<scenarios> scenarios, <tasks> tasks, lost <n>, duplicated <n>`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
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


def scenario(name: str, tasks: int, chaos) -> tuple[bool, int, int, int]:
    stack = Stack()
    stack.env["RUST_LOG"] = "warn"
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
    args = ap.parse_args()
    scenarios = [
        ("kill -9 the forwarder", restart("ferry-forwarder")),
        ("kill -9 the web-service", restart("ferry-web-service")),
        ("kill -9 the endpoint", restart("ferry-endpoint", "start", "ep", "--foreground")),
        ("kill -9 a manager", kill_descendant("ferry-manager")),
        ("kill -9 a worker", kill_descendant("ferry-worker")),
    ]
    passed = total_tasks = total_lost = total_dup = 0
    for name, chaos in scenarios:
        ok, n, lost, dup = scenario(name, args.tasks, chaos)
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
