"""Celery, Parsl, Ray and Dask, measured the same way as Ferry: throughput of N no-op
tasks submitted as fast as each allows and all results collected, and sequential round
trips of one task. Each runs 2 workers on this machine, the way its documentation
recommends for many small tasks (Ray: `ray.get([f.remote(i) ...])`; Dask distributed:
`client.gather(client.map(...))` on a local cluster of worker processes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).parent


def celery(n: int, latency_n: int, workers: int = 2) -> dict:
    queue = f"ferry-bench-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, PYTHONPATH=str(HERE))
    sys.path.insert(0, str(HERE))
    from celery_app import app, noop  # noqa: E402

    # Celery's own exchanges, removed after the run unless another Celery had them.
    shared = [name for name in ("celery", "celery.pidbox") if not _exchange_exists(app, name)]
    log = open(Path(tempfile.gettempdir()) / f"{queue}.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-c", str(workers), "-P", "prefork",
         "-Q", queue, "--loglevel=warning", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=HERE, env=env, stdout=log, stderr=log,
    )
    try:
        noop.apply_async((0,), queue=queue).get(timeout=120)  # warm: the worker is up
        t0 = time.perf_counter()
        results = [noop.apply_async((i,), queue=queue) for i in range(n)]
        for r in results:
            r.get(timeout=600)
        throughput = n / (time.perf_counter() - t0)
        lat = []
        for i in range(latency_n):
            a = time.perf_counter()
            noop.apply_async((i,), queue=queue).get(timeout=60)
            lat.append(time.perf_counter() - a)
        return {"throughput": throughput, **percentiles(lat)}
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        # The worker's queue is durable: it would stay in RabbitMQ after the run (and
        # `app.control.purge()` would declare Celery's default queue to purge it).
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
            for exchange in [queue, *shared]:
                conn.default_channel.exchange_delete(exchange)
        # The results would otherwise expire during the next run, at Redis's expense.
        client = app.backend.client
        pipe = client.pipeline(transaction=False)
        for key in client.scan_iter("celery-task-meta-*", count=1000):
            pipe.unlink(key)
        pipe.execute()


def _exchange_exists(app, name: str) -> bool:
    with app.connection_for_write() as conn:
        channel = conn.channel()
        try:
            channel.exchange_declare(name, "direct", passive=True)
            return True
        except Exception:  # the broker closes the channel: NOT_FOUND
            return False
        finally:
            try:
                channel.close()
            except Exception:
                pass


def parsl(n: int, latency_n: int, workers: int = 2) -> dict:
    import parsl as p
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    # Parsl's workers unpickle `noop` by reference to this module.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    run_dir = tempfile.mkdtemp(prefix="ferry-bench-parsl-")
    executor = HighThroughputExecutor(
        label="htex",
        max_workers_per_node=workers,
        address="127.0.0.1",
        provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
    )
    dfk = p.load(Config(executors=[executor], run_dir=run_dir, strategy="none"))

    @p.python_app
    def noop(x):
        return x

    try:
        noop(0).result(timeout=120)
        t0 = time.perf_counter()
        futures = [noop(i) for i in range(n)]
        for f in futures:
            f.result(timeout=600)
        throughput = n / (time.perf_counter() - t0)
        lat = []
        for i in range(latency_n):
            a = time.perf_counter()
            noop(i).result(timeout=60)
            lat.append(time.perf_counter() - a)
        return {"throughput": throughput, **percentiles(lat)}
    finally:
        dfk.cleanup()
        p.clear()
        shutil.rmtree(run_dir, ignore_errors=True)


def ray(n: int, latency_n: int, workers: int = 2) -> dict:
    import ray as r

    # Ray's workers import `noop` from this directory, as Parsl's do.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    r.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)

    @r.remote
    def noop(x):
        return x

    try:
        r.get(noop.remote(0), timeout=120)
        t0 = time.perf_counter()
        r.get([noop.remote(i) for i in range(n)], timeout=600)
        throughput = n / (time.perf_counter() - t0)
        lat = []
        for i in range(latency_n):
            a = time.perf_counter()
            r.get(noop.remote(i), timeout=60)
            lat.append(time.perf_counter() - a)
        return {"throughput": throughput, **percentiles(lat)}
    finally:
        r.shutdown()


def dask(n: int, latency_n: int, workers: int = 2) -> dict:
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)

    def noop(x):
        return x

    try:
        client.submit(noop, 0, pure=False).result(timeout=120)
        t0 = time.perf_counter()
        client.gather(client.map(noop, range(n), pure=False))
        throughput = n / (time.perf_counter() - t0)
        lat = []
        for i in range(latency_n):
            a = time.perf_counter()
            client.submit(noop, i, pure=False).result(timeout=60)
            lat.append(time.perf_counter() - a)
        return {"throughput": throughput, **percentiles(lat)}
    finally:
        client.close()
        cluster.close()


def percentiles(samples: list[float]) -> dict:
    s = sorted(samples)
    if not s:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    return {"p50_ms": s[len(s) // 2] * 1000, "p99_ms": s[min(len(s) - 1, int(len(s) * 0.99))] * 1000}
