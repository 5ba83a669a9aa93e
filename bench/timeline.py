"""Where a throughput run's time goes: N no-op tasks submitted in sessions on a real
stack (release binaries) and collected with `Session.as_completed`, then, on the
client's clock (the same machine's): when each step of the tasks' lives happened (from
their histories: first, quartiles, last), when their results were in Redis (the
sessions' counts, polled every 5 ms by a second client) and when the client had them.
A gap between the workers' `success` and "in Redis" is the result path (endpoint,
RabbitMQ, forwarder, Redis); between "in Redis" and "collected", the client. Found the
forwarder applying endpoint messages one at a time, and `waiting-for-nodes` costing a
script call of its own (docs/benchmarks.md, session 5).

    python bench/timeline.py -n 10000
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ferry import Client  # noqa: E402
from ferry_side import release_stack  # noqa: E402

STEPS = ["received", "waiting-for-ep", "waiting-for-nodes", "waiting-for-launch", "running", "success"]
QUARTILES = (0.25, 0.5, 0.75, 1.0)


def at_quartiles(times: list[float], t0: float) -> str:
    times = sorted(times)
    return "  ".join(f"{1e3 * (times[min(len(times) - 1, int(q * len(times)))] - t0):6.0f}" for q in QUARTILES)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10_000, help="tasks")
    ap.add_argument("--session", type=int, default=10_000, help="tasks per session (one request each)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    n = args.n

    with release_stack(args.workers) as (stack, client, fid):
        time.sleep(0.5)

        t0 = time.time()
        sessions = []
        for start in range(0, n, args.session):
            batch = client.create_batch()
            for i in range(start, min(n, start + args.session)):
                batch.add(fid, i)
            sessions.append(client.submit_session(stack.endpoint_id, batch))
        submitted = time.time()

        in_redis: list[float] = []
        stop = threading.Event()

        def watch() -> None:
            other = Client(stack.url, token=stack.token)
            seen = 0
            while not stop.is_set() and seen < n:
                done = sum(other.get_session(s.id)["counts"].get("success", 0) for s in sessions)
                in_redis.extend([time.time()] * (done - seen))
                seen = max(seen, done)
                time.sleep(0.005)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        collected = []
        for s in sessions:
            for _ in s.as_completed(timeout=600):
                collected.append(time.time())
        stop.set()
        watcher.join()
        end = time.time()

        ids = [tid for s in sessions for tid in s.task_ids]
        docs = {}
        for i in range(0, len(ids), 1000):
            docs.update(client.get_tasks(ids[i : i + 1000], history=True))
        steps: dict[str, list[float]] = collections.defaultdict(list)
        for doc in docs.values():
            for h in doc["history"]:
                steps[h["state"]].append(h["at"])

        print(f"{n} tasks in {1e3 * (end - t0):.0f} ms: {n / (end - t0):.0f} tasks/s; "
              f"submitted after {1e3 * (submitted - t0):.0f} ms")
        print(f"{'ms after the first submit':<28}  {'25%':>6}  {'50%':>6}  {'75%':>6}  {'last':>6}  (first)")
        for step in STEPS:
            if steps[step]:
                first = 1e3 * (min(steps[step]) - t0)
                print(f"{step:<28}  {at_quartiles(steps[step], t0)}  ({first:.0f})")
        if in_redis:
            print(f"{'in Redis (session counts)':<28}  {at_quartiles(in_redis, t0)}")
        print(f"{'collected by the client':<28}  {at_quartiles(collected, t0)}")
        lengths = collections.Counter(len(d["history"]) for d in docs.values())
        print(f"history lengths: {dict(lengths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
