"""Where a sequential round trip's time goes: N no-op tasks one after another on a real
stack (release binaries), each timed by the client and then read back with its history,
so every step has a median. `python bench/hops.py -n 1000`.

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
    args = ap.parse_args()

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
        width = max(map(len, steps))
        print(f"{'step (ms)':<{width}}  {'n':>5}  {'p50':>7}  {'p90':>7}")
        for name, values in steps.items():
            values.sort()
            p90 = values[int(len(values) * 0.9)]
            print(f"{name:<{width}}  {len(values):>5}  {statistics.median(values):7.3f}  {p90:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
