"""Memory while a million tasks wait: the endpoint is offline, so every submitted task
stays queued (in RabbitMQ, its record in Redis); the web-service's and the forwarder's
resident memory is sampled as the queue grows. They hold no per-task state, so their
memory should stay flat.

    python bench/queued.py [--tasks 1000000] [--session 100000] [--server]

`--server` runs `ferry-server` (the two roles in one process, the submissions queue in
its memory) instead of the two binaries.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

from ferrystack import Stack  # noqa: E402

from ferry import Client  # noqa: E402
from ferry_side import rss_kib  # noqa: E402


def noop(x):
    return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--session", type=int, default=100_000, help="tasks per request")
    ap.add_argument("--bin-dir", type=Path, default=ROOT / "target" / "release")
    ap.add_argument("--server", action="store_true", help="ferry-server instead of the two binaries")
    args = ap.parse_args()

    stack = Stack(workers=1, bin_dir=args.bin_dir, colocated=args.server)
    stack.env["RUST_LOG"] = "warn"
    stack.env["FERRY_RESULT_TTL_SECS"] = "600"
    stack.start()
    namespace = stack.env["FERRY_NAMESPACE"]
    try:
        client = Client(stack.url, token=stack.token, timeout=300)
        fid = client.register_function(noop)
        # The endpoint goes away: whatever is submitted now waits in its queue.
        stack.procs["ferry-endpoint"].terminate()
        stack.procs["ferry-endpoint"].wait(timeout=60)
        services = ("ferry-server",) if args.server else ("ferry-web-service", "ferry-forwarder")
        procs = {name: stack.procs[name].pid for name in services}
        base = {name: rss_kib(pid) for name, pid in procs.items()}
        print(f"{'queued':>10} " + " ".join(f"{n + ' MiB':>24}" for n in procs) + f" {'s':>6}")
        t0 = time.perf_counter()
        queued = 0
        peaks = dict(base)
        while queued < args.tasks:
            n = min(args.session, args.tasks - queued)
            batch = client.create_batch()
            for i in range(n):
                batch.add(fid, queued + i)
            client.submit_session(stack.endpoint_id, batch)
            queued += n
            # Let the forwarder move this session to the endpoint's queue.
            time.sleep(0.5)
            now = {name: rss_kib(pid) for name, pid in procs.items()}
            for name, kib in now.items():
                peaks[name] = max(peaks[name], kib)
            print(f"{queued:>10,} " + " ".join(f"{now[n] / 1024:>24.1f}" for n in procs) + f" {time.perf_counter() - t0:>6.0f}", flush=True)
        for name in procs:
            print(f"queued: {name}: {base[name] / 1024:.1f} MiB idle, peak {peaks[name] / 1024:.1f} MiB with {queued:,} tasks queued")
        return 0
    finally:
        stack.stop()
        # The records of a million tasks that never ran: remove them.
        subprocess.run(
            f"redis-cli --scan --pattern '{namespace}:*' | xargs -r -n 1000 redis-cli DEL > /dev/null",
            shell=True,
        )


if __name__ == "__main__":
    sys.exit(main())
