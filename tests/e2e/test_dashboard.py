"""The dashboard at /ui in a real browser (Debian's Chromium, driven by Playwright:
tests/ui/dashboard.mjs): log in, watch a session reach 100 % (its tasks held until the
browser has its page open, then drawn live from the WebSocket), open its failed task and
see its traceback and timeline, see the endpoint online. Screenshots are saved in
artefacts/ui/ (CI keeps them)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ferry import Client

ROOT = Path(__file__).parents[2]


def held(i, release):
    """Waits until the browser has the session's page open (it writes `release`)."""
    import os
    import time

    while not os.path.exists(release):
        time.sleep(0.05)
    if i == 7:
        raise ValueError("unlucky")
    return i


def test_the_dashboard_shows_a_session_to_its_end_and_a_failed_tasks_traceback(stack, tmp_path):
    client = Client(stack.url, token=stack.token)
    fid = client.register_function(held)
    release = tmp_path / "release"
    batch = client.create_batch()
    for i in range(60):
        batch.add(fid, i, str(release))
    session = client.submit_session(stack.endpoint_id, batch)
    shots = ROOT / "artefacts" / "ui"
    env = dict(
        os.environ,
        FERRY_URL=stack.url,
        FERRY_TOKEN=stack.token,
        SESSION_ID=session.id,
        FAILED_TASK_ID=session.task_ids[7],
        ENDPOINT_ID=stack.endpoint_id,
        SHOTS=str(shots),
        RELEASE=str(release),
    )
    done = subprocess.run(
        ["node", str(ROOT / "tests" / "ui" / "dashboard.mjs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    for name in ("login", "sessions", "session", "task", "endpoints", "endpoint"):
        assert (shots / f"{name}.png").stat().st_size > 1000, name


def test_the_pages_come_from_the_binary_with_a_strict_policy(stack):
    import urllib.request

    with urllib.request.urlopen(f"{stack.url}/ui/", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        assert b"/ui/app.js" in r.read()
    with urllib.request.urlopen(f"{stack.url}/ui", timeout=5) as r:
        assert r.url.endswith("/ui/"), "the bare path leads to the page"
