"""Ferry against Celery, Parsl, Ray and Dask, in one run on one machine: see
docs/benchmarks.md.

    python bench/run.py [--quick] [-n N] [--latency-n M] [--only ferry,celery,parsl,ray,dask] [--sweep]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import ferry_side  # noqa: E402
import peers  # noqa: E402


PEERS = ("ferry", "celery", "parsl", "ray", "dask")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10,000 tasks instead of 100,000")
    ap.add_argument("-n", type=int, help="tasks in the throughput run")
    ap.add_argument("--latency-n", type=int, default=1000, help="sequential round trips")
    ap.add_argument("--only", default=",".join(PEERS), help="systems to run")
    ap.add_argument("--sweep", action="store_true", help="also Ferry throughput with 1, 2, 4, 8 workers (plot)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    n = args.n or (10_000 if args.quick else 100_000)
    systems = args.only.split(",")

    results: dict[str, dict] = {}
    runners = {"ferry": ferry_side.run, "celery": peers.celery, "parsl": peers.parsl, "ray": peers.ray, "dask": peers.dask}
    for name in systems:
        print(f"bench: running {name} ({n} tasks, {args.latency_n} round trips)...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            results[name] = runners[name](n, args.latency_n)
        except Exception as e:  # noqa: BLE001 - report and go on with the others
            print(f"bench: {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
            results[name] = {"throughput": float("nan"), "p50_ms": float("nan"), "p99_ms": float("nan"), "error": str(e)}
        print(f"bench: {name} took {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    print()
    print(f"{'system':<8} {'tasks/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, r in results.items():
        print(f"{name:<8} {r['throughput']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    if "ws_p50_ms" in results.get("ferry", {}):
        r = results["ferry"]
        print(f"{'ferry ws':<8} {'':>10} {r['ws_p50_ms']:>8.2f} {r['ws_p99_ms']:>8.2f}  (result pushed over the WebSocket)")
    task_bytes = results.get("ferry", {}).get("redis_task_bytes")
    if task_bytes:
        print(f"\nRedis memory per finished no-op task record: {task_bytes:.0f} bytes (+ ~40 in its session's id list)")
    rss = results.get("ferry", {}).get("rss_kib", {})
    cpu = results.get("ferry", {}).get("cpu_s", {})
    if rss:
        print("\nduring the Ferry throughput run: peak RSS (MiB) and CPU time (s) per process")
        for proc, kib in rss.items():
            print(f"  {proc:<28} {kib / 1024:8.1f} MiB {cpu.get(proc, float('nan')):8.2f} s")
        total = sum(v for v in cpu.values() if v == v)
        if total:
            # CPU per task moves less with the machine's mood than tasks/s does: the
            # figure to compare across runs.
            print(f"  {'all of the above':<28} {'':>12} {total:8.2f} s = {total / n * 1e6:.0f} µs of CPU per task")

    if args.sweep:
        sweep = {}
        for workers in (1, 2, 4, 8):
            r = ferry_side.run(n, 0, workers=workers, memory=False)
            sweep[workers] = r["throughput"]
            print(f"bench: ferry with {workers} workers: {r['throughput']:.0f} tasks/s", file=sys.stderr)
        results["sweep"] = sweep
        plot(sweep, results, HERE.parent / "docs" / "benchmarks-workers.png")

    if args.json:
        args.json.write_text(json.dumps(results, indent=2))

    ferry = results.get("ferry", {})
    # The best peer by each measure (a peer that failed, NaN, is never the best).
    peer_names = [p for p in PEERS[1:] if p in results and results[p]["throughput"] == results[p]["throughput"]]
    best = max(peer_names, key=lambda p: results[p]["throughput"], default=None)
    quickest = min(peer_names, key=lambda p: results[p]["p50_ms"], default=None)
    best_tp = results[best]["throughput"] if best else float("nan")
    best_p50 = results[quickest]["p50_ms"] if quickest else float("nan")
    # The faster of Ferry's two ways to learn a result (both are in the table).
    ferry_p50 = min(ferry.get("p50_ms", float("nan")), ferry.get("ws_p50_ms", float("inf")))
    ratio = ferry.get("throughput", float("nan")) / best_tp if best_tp == best_tp and best_tp else float("nan")
    fmt = lambda name: f"{results[name]['throughput']:.0f}" if name in results else "n/a"  # noqa: E731
    print(
        f"bench: ferry {fmt('ferry')} tasks/s, celery {fmt('celery')}, parsl {fmt('parsl')}, "
        f"ray {fmt('ray')}, dask {fmt('dask')}; ratio vs best peer ({best or 'none'}) {ratio:.1f}; "
        f"p50 ferry {ferry_p50:.2f} ms vs best peer ({quickest or 'none'}) {best_p50:.2f} ms"
    )
    return 0


def plot(sweep: dict, results: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib missing; no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(list(sweep), list(sweep.values()), marker="o", label="Ferry")
    for peer, color, style in (("celery", "C1", "--"), ("parsl", "C2", ":")):
        if peer in results and results[peer]["throughput"] == results[peer]["throughput"]:
            rate = results[peer]["throughput"]
            ax.axhline(rate, color=color, linestyle=style, label=f"{peer} (2 workers): {rate:,.0f}/s")
    ax.set_xlabel("worker processes")
    ax.set_ylabel("no-op tasks/s, end to end")
    ax.set_xscale("log", base=2)
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"bench: wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
