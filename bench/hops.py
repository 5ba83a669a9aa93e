"""Where a sequential round trip's time goes: N no-op tasks one after another on a real
stack (release binaries), each timed by the client and then read back with its history,
so every step has a median. `python bench/hops.py -n 1000`.

With `--traces`, each task's trace instead (the services export their spans over OTLP
to a collector in this process, docs/operations.md#traces): every hop inside each
process and every gap between processes.

Client and server clocks are the same machine's, so the client's send and receive times
sit on the same axis as the history's steps."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ferry_side import release_stack  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="sequential round trips")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--traces", action="store_true", help="read each task's trace, not its history")
    args = ap.parse_args()
    if args.traces:
        return traced(args.n, args.workers)

    # 50 round trips first warm every process and connection.
    with release_stack(args.workers, warm=50) as (stack, client, fid):
        runs = []
        for i in range(args.n):
            sent = time.time()
            tid = client.run(i, endpoint_id=stack.endpoint_id, function_id=fid)
            answered = time.time()
            client.get_result(tid, timeout=60)
            runs.append((tid, sent, answered, time.time()))
        steps: dict[str, list[float]] = {}

        def add(name: str, seconds: float) -> None:
            steps.setdefault(name, []).append(seconds * 1e3)

        for tid, sent, answered, done in runs:
            doc = client.get_task(tid)
            add("round trip (client)", done - sent)
            add("POST answered", answered - sent)
            prev_name, prev_at = "client sent", sent
            for h in doc["history"]:
                add(f"{prev_name} -> {h['state']}", h["at"] - prev_at)
                prev_name, prev_at = h["state"], h["at"]
            add(f"{prev_name} -> result seen by the client", done - prev_at)
        print_table(steps)
    return 0


def print_table(steps: dict[str, list[float]]) -> None:
    """Each step's count, median and 90th percentile, in milliseconds."""
    width = max(map(len, steps), default=0)
    print(f"{'step (ms)':<{width}}  {'n':>5}  {'p50':>7}  {'p90':>7}")
    for name, values in steps.items():
        values.sort()
        p90 = values[int(len(values) * 0.9)]
        print(f"{name:<{width}}  {len(values):>5}  {statistics.median(values):7.3f}  {p90:7.3f}")


# Each step of a traced round trip: (name, from (span, edge), to (span, edge)).
TRACED_STEPS = [
    ("client -> web-service submit starts", ("client", "sent"), ("submit", "start")),
    ("submit (records written, published)", ("submit", "start"), ("submit", "end")),
    ("submissions queue -> forwarder", ("submit", "end"), ("dispatch", "start")),
    ("dispatch (on the endpoint's queue, confirmed)", ("dispatch", "start"), ("dispatch", "end")),
    ("forwarder took it -> endpoint took it", ("dispatch", "start"), ("endpoint", "start")),
    ("wait (until a manager has it)", ("wait", "start"), ("wait", "end")),
    ("manager -> worker -> Python host starts it", ("wait", "end"), ("run", "start")),
    ("run (the function, in the host)", ("run", "start"), ("run", "end")),
    ("host -> worker -> manager -> endpoint sends the result", ("run", "end"), ("endpoint", "end")),
    ("results queue -> forwarder", ("endpoint", "end"), ("record", "start")),
    ("record (written to Redis)", ("record", "start"), ("record", "end")),
    ("recorded -> the client has it", ("record", "end"), ("client", "done")),
    ("round trip (client)", ("client", "sent"), ("client", "done")),
]


def traced(n: int, workers: int) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
    from otlp import Collector

    collector = Collector()
    try:
        with release_stack(workers, warm=50, env=collector.env()) as (stack, client, fid):
            runs = []
            for i in range(n):
                sent = time.time_ns()
                tid = client.run(i, endpoint_id=stack.endpoint_id, function_id=fid)
                client.get_result(tid, timeout=60)
                runs.append((tid, sent, time.time_ns()))
            names = {"submit", "dispatch", "endpoint", "wait", "run", "record"}
            steps: dict[str, list[float]] = {}
            missing = 0
            for tid, sent, done in runs:
                spans = collector.trace(tid, names, timeout=10)
                if not names <= spans.keys():
                    missing += 1
                    continue
                at = {(name, "start"): int(s["startTimeUnixNano"]) for name, s in spans.items()}
                at.update({(name, "end"): int(s["endTimeUnixNano"]) for name, s in spans.items()})
                at[("client", "sent")], at[("client", "done")] = sent, done
                for name, a, b in TRACED_STEPS:
                    steps.setdefault(name, []).append((at[b] - at[a]) / 1e6)
    finally:
        collector.close()
    print_table(steps)
    if missing:
        print(f"({missing} round trips left out: their traces did not all arrive)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
