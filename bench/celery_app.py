"""The Celery side of the benchmark: a no-op task, RabbitMQ broker, Redis results."""

import os

from celery import Celery

app = Celery(
    "ferry_bench",
    broker=os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/14"),
)
app.conf.update(result_expires=900, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task
def noop(x):
    return x
