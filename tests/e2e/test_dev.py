"""`ferry dev` across a restart, counting executions: tasks still waiting or running when
it stops (Ctrl-C) finish after it starts again on the same home, from the embedded
store's snapshot (the embedded broker's messages are gone: the forwarder's sweeper
publishes them again); a task whose result was recorded before the stop never runs
again, and none runs more than its attempts allow."""

from __future__ import annotations

import time
from pathlib import Path

from ferrystack import DevStack


def mark_and_sleep(x, log_dir, seconds):
    """Appends a line to the task's own log (one line per execution), then sleeps."""
    import os
    import time

    with open(os.path.join(log_dir, f"{x}.log"), "a") as f:
        f.write("ran\n")
    time.sleep(seconds)
    return x


def executions(log_dir: Path, x: int) -> int:
    path = log_dir / f"{x}.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_unfinished_tasks_finish_after_a_restart_and_finished_ones_do_not_run_again(tmp_path):
    from ferry import Client

    log_dir = tmp_path / "runs"
    log_dir.mkdir()
    dev = DevStack(workers=2)
    # One task in each worker's pipe, so four wait at the endpoint when it stops.
    dev.env["FERRY_TASKS_PER_WORKER"] = "1"
    dev.start()
    try:
        c = Client(dev.url, token=dev.token)
        fid = c.register_function(mark_and_sleep)
        ids = [c.run(i, str(log_dir), 3, endpoint_id=dev.endpoint_id, function_id=fid) for i in range(6)]
        # Two run at once: stop while they run and four wait.
        deadline = time.monotonic() + 30
        while sum(executions(log_dir, i) for i in range(6)) < 2:
            assert time.monotonic() < deadline, "the first tasks did not start"
            time.sleep(0.05)
        dev.stop(keep=True)

        dev.start()
        c = Client(dev.url, token=dev.token)
        status = {tid: c.get_task(tid)["status"] for tid in ids}
        finished_before = {tid for tid, s in status.items() if s == "success"}
        assert finished_before, f"the running tasks finish while ferry dev stops: {status}"
        assert len(finished_before) < len(ids), f"some tasks were still waiting: {status}"
        for i, tid in enumerate(ids):
            assert c.get_result(tid, timeout=240) == i, f"task {i} ({tid}) after the restart"
        for i, tid in enumerate(ids):
            runs = executions(log_dir, i)
            if tid in finished_before:
                assert runs == 1, f"task {i} finished before the stop but ran {runs} times"
            else:
                # A task stopped mid-run may cost an attempt: at most 1 + the default 3 retries.
                assert 1 <= runs <= 4, f"task {i} ran {runs} times"
    finally:
        dev.stop()
