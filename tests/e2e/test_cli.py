"""The `ferry` command (the SDK's console script) against a real stack, through its
output: log in, register a function from a file, run it, show a task's timeline, watch
a session, list endpoints; `--json` for each."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ferry import Client

FUNCTIONS = '''
def add(a, b=1):
    return a + b


def boom():
    raise ValueError("no good")
'''


@pytest.fixture()
def ferry(stack, tmp_path):
    """Runs `ferry ARGS` as a user would: its own home, nothing but what login saved."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env["FERRY_HOME"] = str(tmp_path / "home")

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "ferry.cli", *args], env=env, capture_output=True, text=True, timeout=120
        )
        if ok:
            assert done.returncode == 0, f"ferry {args}: {done.stderr}"
        return done

    run("login", "--url", stack.url, "--token", stack.token, "--endpoint", stack.endpoint_id)
    saved = Path(env["FERRY_HOME"]) / "client.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600, "the token is the user's alone"
    run.home = saved.parent
    return run


def test_login_checks_the_token_and_says_who(stack, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env["FERRY_HOME"] = str(tmp_path / "h")
    cmd = [sys.executable, "-m", "ferry.cli", "login", "--url", stack.url]
    good = subprocess.run([*cmd, "--token", stack.token, "--json"], env=env, capture_output=True, text=True)
    assert good.returncode == 0 and json.loads(good.stdout)["name"] == stack.user_name
    bad = subprocess.run([*cmd, "--token", "fy_wrong"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "ferry login:" in bad.stderr


def test_register_run_and_show_a_task(ferry, tmp_path):
    (tmp_path / "funcs.py").write_text(FUNCTIONS)
    add = ferry("function", "register", f"{tmp_path / 'funcs.py'}:add").stdout.strip()
    assert ferry("run", add, "2", "-k", "b=5").stdout.strip() == "7"
    run = json.loads(ferry("run", add, "[1]", "-k", "b=[2]", "--json").stdout)
    assert run["result"] == [1, 2]
    shown = ferry("task", "show", run["task_id"]).stdout
    assert "success" in shown and "running" in shown and "waiting-for-nodes" in shown, shown
    assert "█" in shown, "the timeline draws each step's length"
    doc = json.loads(ferry("task", "show", run["task_id"], "--json").stdout)
    assert doc["status"] == "success" and doc["history"][-1]["state"] == "success"

    boom = json.loads(ferry("function", "register", f"{tmp_path / 'funcs.py'}:boom", "--json").stdout)
    failed = ferry("run", boom["function_id"], ok=False)
    assert failed.returncode == 1 and "ValueError: no good" in failed.stderr


def test_bad_input_is_named(ferry, tmp_path):
    for args, says in [
        (("function", "register", "nofile.py:f"), "nofile.py: no such file"),
        (("function", "register", "justaname"), "is not FILE:NAME"),
        (("run", "x", "-k", "1x=2"), "is not NAME=VALUE"),
        (("task", "show", "not-an-id"), "ferry task:"),
    ]:
        done = ferry(*args, ok=False)
        assert done.returncode != 0 and says in done.stderr, (args, done.stderr)


def test_watch_a_session_to_its_end_and_list_endpoints(ferry, stack):
    client = Client(stack.url, token=stack.token)
    fid = client.register_function(lambda x: x)
    batch = client.create_batch()
    for i in range(20):
        batch.add(fid, i)
    session = client.submit_session(stack.endpoint_id, batch)
    watched = ferry("session", "watch", session.id).stdout
    assert "100% 20/20" in watched.splitlines()[-1] and "completed" in watched.splitlines()[-1], watched
    doc = json.loads(ferry("session", "watch", session.id, "--json").stdout)
    assert doc["counts"]["success"] == 20
    listed = ferry("endpoint", "list").stdout
    assert stack.endpoint_id in listed and "online" in listed, listed
    assert any(e["endpoint_id"] == stack.endpoint_id for e in json.loads(ferry("endpoint", "list", "--json").stdout))
