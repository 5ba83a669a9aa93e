"""Two Ferry stacks side by side, their sequential round trips interleaved: A, B, A, B,
... so that both meet the same noise (this machine's run-to-run spread, up to 30 %,
is larger than most changes to the round trip). `python bench/ab.py -n 2000 A_BINS
B_BINS`, each a directory of release binaries; `--server` / `--a-server` /
`--b-server` runs `ferry-server` instead of the two binaries (for both, or one side:
so one build can be set against itself, two binaries against one process).

Prints each side's p50, p90 and p99 and the share of pairs in which B was faster."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ferry_side import release_stack  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="side A's binaries")
    ap.add_argument("b", type=Path, help="side B's binaries")
    ap.add_argument("-n", type=int, default=2000, help="round trips on each side")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--server", action="store_true", help="ferry-server on both sides")
    ap.add_argument("--a-server", action="store_true", help="ferry-server on side A")
    ap.add_argument("--b-server", action="store_true", help="ferry-server on side B")
    args = ap.parse_args()
    for side in (args.a, args.b):
        if not (side / "ferry-endpoint").exists():
            ap.error(f"{side} holds no Ferry binaries")

    with contextlib.ExitStack() as stacks:
        sides = []
        for bins, server in ((args.a, args.server or args.a_server), (args.b, args.server or args.b_server)):
            os.environ["FERRY_BENCH_SERVER"] = "1" if server else "0"
            sides.append(stacks.enter_context(release_stack(args.workers, bin_dir=bins, warm=100)))
        times: list[list[float]] = [[], []]
        for i in range(args.n):
            # Which side goes first alternates too: neither always follows the other.
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for s in order:
                stack, client, fid = sides[s]
                start = time.perf_counter()
                client.get_result(client.run(i, endpoint_id=stack.endpoint_id, function_id=fid), timeout=60)
                times[s].append((time.perf_counter() - start) * 1e3)
    b_faster = sum(b < a for a, b in zip(*times)) / args.n
    print(f"{'side':<5} {'binaries':<40} {'p50':>7} {'p90':>7} {'p99':>7}  (ms, {args.n} round trips each)")
    for name, bins, values in (("A", args.a, times[0]), ("B", args.b, times[1])):
        values = sorted(values)
        p = lambda q: values[min(len(values) - 1, int(len(values) * q))]  # noqa: E731
        print(f"{name:<5} {str(bins)[-40:]:<40} {statistics.median(values):7.3f} {p(0.9):7.3f} {p(0.99):7.3f}")
    print(f"B faster in {b_faster:.0%} of the pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
