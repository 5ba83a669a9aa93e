"""The endpoint's dispatch rate with many nodes, simulated: one real stack (release
binaries) whose endpoint has no managers of its own, and `ferry-manager --simulate N`
connecting N fake managers whose workers finish every task at once. Prints the
end-to-end rate (submit -> dispatch -> "run" -> result recorded) and the peak RSS of
each process.

    python bench/simulate.py [--managers 10000] [--tasks 200000] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

from ferrystack import Stack, _wait  # noqa: E402

from ferry import Client  # noqa: E402
from ferry_side import RssSampler, redis_pid  # noqa: E402


def noop(x):
    return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--managers", type=int, default=10_000)
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=1, help="workers per simulated manager")
    ap.add_argument("--bin-dir", type=Path, default=ROOT / "target" / "release")
    args = ap.parse_args()

    # Every manager is a TCP connection on both sides.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.managers + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    stack = Stack(workers=1, bin_dir=args.bin_dir)
    stack.env["RUST_LOG"] = "warn"
    stack.spawn("ferry-web-service")
    stack.spawn("ferry-forwarder")
    _wait(stack._serving, 30, "the web-service", stack.dir)
    stack.token = stack.run("ferry-web-service", "create-user", "simulator")
    stack.run(
        "ferry-endpoint", "configure", "ep", "--url", stack.url, "--token", stack.token, "--provider", "manual"
    )
    config = stack.dir / "home" / "endpoints" / "ep" / "config.toml"
    text = config.read_text()
    text = re.sub(r"prefetch = \d+", "prefetch = 256", text)
    config.write_text(text)
    stack.spawn("ferry-endpoint", "start", "ep", "--foreground")
    running = stack.dir / "home" / "endpoints" / "ep" / "running.json"
    try:
        _wait(running.exists, 60, "the endpoint", stack.dir)
        info = json.loads(running.read_text())
        stack.endpoint_id = info["endpoint_id"]
        # The simulated managers prove they belong to the endpoint, and pin its
        # certificate, as real ones do.
        stack.env["FERRY_MANAGER_SECRET"] = (running.parent / "manager.secret").read_text().strip()
        stack.env["FERRY_ENDPOINT_CERT_SHA256"] = info["manager_cert_sha256"]
        t0 = time.perf_counter()
        stack.spawn(
            "ferry-manager", "--simulate", str(args.managers), "--endpoint", info["manager_addr"],
            "--workers", str(args.workers),
        )
        client = Client(stack.url, token=stack.token)

        def connected() -> bool:
            details = client.get_endpoint_status(stack.endpoint_id).get("details") or {}
            return details.get("managers", 0) >= args.managers

        _wait(connected, 300, f"{args.managers} simulated managers", stack.dir)
        connect_s = time.perf_counter() - t0
        fid = client.register_function(noop)
        sampler = RssSampler(stack.pids(), redis_pid())
        sampler.start()
        t0 = time.perf_counter()
        sessions = []
        chunk = 10_000
        for start in range(0, args.tasks, chunk):
            batch = client.create_batch()
            for i in range(start, min(args.tasks, start + chunk)):
                batch.add(fid, i)
            sessions.append(client.submit_session(stack.endpoint_id, batch))
        submit_s = time.perf_counter() - t0
        for s in sessions:
            s.wait(timeout=1800, interval=0.05)
        elapsed = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        rate = args.tasks / elapsed
        print(f"simulate: {args.managers} managers x {args.workers} workers connected in {connect_s:.1f} s")
        print(f"simulate: {args.tasks} tasks in {elapsed:.1f} s (submitted in {submit_s:.1f} s): {rate:,.0f} tasks/s")
        for name, kib in sorted(sampler.peaks.items()):
            print(f"simulate: peak RSS {name:<24} {kib / 1024:8.1f} MiB")
        print(f"simulate: endpoint dispatch {rate:,.0f} tasks/s across {args.managers} managers")
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
