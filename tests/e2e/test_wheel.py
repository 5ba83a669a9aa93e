"""Ferry installed as a Python tool: `scripts/wheel --debug` builds the wheel, pip installs
it into a fresh virtualenv, and a real stack runs from that environment alone: every
binary from its bin/, the endpoint configured without `--python` (so its workers run the
environment's `python`, the one beside `ferry-endpoint`), and a function submitted with
the SDK the wheel installed comes back with its result. Then `ferry dev` from that
environment, with Redis and RabbitMQ pointed at closed ports: a function runs through
`Client()` with no arguments, a restart keeps the token and the function, and a taken
port or an unusable home is refused with a clear message."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import pytest

from ferrystack import ROOT, Stack

BINARIES = ("ferry-endpoint", "ferry-manager", "ferry-worker", "ferry-web-service", "ferry-forwarder", "ferry-server", "ferry-dev", "ferry")

# Submits with the installed SDK; prints where `ferry` came from and the result.
CLIENT = """
import os, sys, ferry
c = ferry.Client(os.environ["FERRY_URL"], token=os.environ["FERRY_TOKEN"])
fid = c.register_function(lambda x: (x * 2, sys.executable))
tid = c.run(21, endpoint_id=os.environ["FERRY_ENDPOINT"], function_id=fid)
result, remote_python = c.get_result(tid, timeout=60)
print(ferry.__file__)
print(result)
print(remote_python)
"""


@pytest.fixture(scope="module")
def wheel_env():
    """A virtualenv with nothing but Ferry's wheel (and its dependencies) installed."""
    with tempfile.TemporaryDirectory(prefix="ferry-wheel-") as tmp:
        out = subprocess.run(
            ["bash", str(ROOT / "scripts" / "wheel"), "--debug", "--out", f"{tmp}/dist"],
            env=dict(os.environ, FERRY_WHEEL_PYTHON=sys.executable),
            capture_output=True, text=True,
        )
        assert out.returncode == 0, f"scripts/wheel failed:\n{out.stderr}"
        wheel = Path(out.stdout.strip().splitlines()[-1])
        env = Path(tmp) / "venv"
        venv.create(env, with_pip=True)
        subprocess.run(
            [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
            check=True,
        )
        yield env, wheel


def test_the_wheel_is_tagged_for_the_platform(wheel_env):
    _, wheel = wheel_env
    assert wheel.name.startswith("ferry_sdk-0.1.0-py3-none-")
    assert "_x86_64" in wheel.name or "_aarch64" in wheel.name, wheel.name


def test_the_wheel_puts_the_binaries_on_the_environments_path(wheel_env):
    env, _ = wheel_env
    for name in BINARIES:
        assert os.access(env / "bin" / name, os.X_OK), f"{name} is not an executable in {env / 'bin'}"
    out = subprocess.run([str(env / "bin" / "ferry-endpoint"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "configure" in out.stdout, out.stderr


def test_a_function_runs_on_a_stack_installed_by_the_wheel(wheel_env):
    env, _ = wheel_env
    env_python = str(env / "bin" / "python")
    stack = Stack(bin_dir=env / "bin", python=None)
    # The system's directories first: `python3` on this PATH is not the environment's,
    # so only the endpoint's default (the python beside it) gives the workers `ferry`.
    stack.env["PATH"] = os.pathsep.join(["/usr/bin", "/bin", str(env / "bin")])
    stack.env.pop("PYTHONPATH", None)
    stack.env.pop("VIRTUAL_ENV", None)
    stack.start()
    try:
        config = (stack.dir / "home" / "endpoints" / "ep" / "config.toml").read_text()
        assert f"python = {json.dumps(env_python)}" in config, config
        out = subprocess.run(
            [env_python, "-c", CLIENT],
            env=dict(stack.env, FERRY_URL=stack.url, FERRY_TOKEN=stack.token, FERRY_ENDPOINT=stack.endpoint_id),
            capture_output=True, text=True, timeout=120, cwd=stack.dir,
        )
        assert out.returncode == 0, out.stderr
        sdk_file, result, remote_python = out.stdout.split()
        assert Path(sdk_file).is_relative_to(env), f"the SDK came from {sdk_file}, not the wheel's environment"
        assert result == "42"
        assert remote_python == env_python
    finally:
        stack.stop()


# `Client()` and `Executor()` with no arguments: ferry dev's client.json.
DEV_CLIENT = """
import sys, ferry
c = ferry.Client()
fid = c.register_function(lambda x: (x * 2, sys.executable))
tid = c.run(21, function_id=fid)
result, remote_python = c.get_result(tid, timeout=60)
with ferry.Executor() as ex:
    assert ex.submit(pow, 2, 10).result(timeout=60) == 1024
print(fid, result, remote_python)
"""

# The function an earlier run registered, run again after a restart.
AGAIN = """
import sys, ferry
c = ferry.Client()
print(c.get_result(c.run(5, function_id=sys.argv[1]), timeout=60)[0])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dev_env(env: Path, home: Path) -> dict:
    """The environment of a user with only the wheel's environment: no Redis or
    RabbitMQ reachable (the usual variables point at closed ports, which ferry dev must
    not use), no `python3` with ferry on the PATH."""
    closed = free_port()
    out = dict(os.environ)
    for var in ("PYTHONPATH", "VIRTUAL_ENV", "FERRY_URL", "FERRY_TOKEN", "FERRY_ENDPOINT", "FERRY_PYTHON",
                "FERRY_DEV_REDIS_URL", "FERRY_DEV_AMQP_URL"):
        out.pop(var, None)
    out.update(
        PATH=os.pathsep.join(["/usr/bin", "/bin", str(env / "bin")]),
        FERRY_HOME=str(home),
        FERRY_REDIS_URL=f"redis://127.0.0.1:{closed}",
        FERRY_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{closed}/%2f",
    )
    return out


class Dev:
    """`ferry dev` run from the wheel's environment, stopped with SIGINT (Ctrl-C)."""

    def __init__(self, env: Path, home: Path, port: int):
        self.log = home.parent / f"ferry-dev-{port}.out"
        self.environ = dev_env(env, home)
        self.proc = subprocess.Popen(
            [str(env / "bin" / "ferry"), "dev", "--listen", f"127.0.0.1:{port}"],
            env=self.environ, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while "Ferry is running" not in self.output():
            assert self.proc.poll() is None, f"ferry dev exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"ferry dev did not start:\n{self.output()}"
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def field(self, name: str) -> str:
        for line in self.output().splitlines():
            parts = line.split()
            if parts[:1] == [name]:
                return parts[1]
        raise AssertionError(f"no {name} in:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError(f"ferry dev did not stop on SIGINT:\n{self.output()}")


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_ferry_dev_runs_a_function_with_no_redis_or_rabbitmq(wheel_env, tmp_path):
    env, _ = wheel_env
    home = tmp_path / "home"
    dev = Dev(env, home, free_port())
    try:
        assert "embedded store and broker" in dev.output(), dev.output()
        pids = children_of(dev.proc.pid)
        names = sorted(Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids)
        # The web-service and the forwarder in one process, and the endpoint.
        assert names == ["ferry-endpoint", "ferry-server"], f"children {pids}: {names}"
        token = dev.field("token")
        saved = json.loads((home / "client.json").read_text())
        assert saved["token"] == token and saved["endpoint_id"] == dev.field("endpoint")
        out = subprocess.run(
            [str(env / "bin" / "python"), "-c", DEV_CLIENT],
            env=dev.environ, capture_output=True, text=True, timeout=180, cwd=tmp_path,
        )
        assert out.returncode == 0, f"{out.stderr}\n{dev.output()}"
        fid, result, remote_python = out.stdout.split()
        assert result == "42"
        assert remote_python == str(env / "bin" / "python")
    finally:
        dev.stop()
    assert dev.proc.returncode == 0, dev.output()
    assert "ferry dev stopped" in dev.output()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], \
            f"child {pid} still runs after ferry dev stopped"
    assert (home / "dev" / "store.snapshot").is_file(), "the embedded store writes its snapshot on a clean stop"

    # A restart keeps the user (same token), the endpoint and the function.
    again = Dev(env, home, free_port())
    try:
        assert again.field("token") == token
        assert again.field("endpoint") == saved["endpoint_id"]
        out = subprocess.run(
            [str(env / "bin" / "python"), "-c", AGAIN, fid],
            env=again.environ, capture_output=True, text=True, timeout=180, cwd=tmp_path,
        )
        assert out.returncode == 0, f"{out.stderr}\n{again.output()}"
        assert out.stdout.strip() == "10"
    finally:
        again.stop()


def test_ferry_dev_refuses_a_taken_port_and_an_unusable_home(wheel_env, tmp_path):
    env, _ = wheel_env
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [str(env / "bin" / "ferry"), "dev", "--listen", f"127.0.0.1:{port}"],
            env=dev_env(env, tmp_path / "home"), capture_output=True, text=True, timeout=60,
        )
    assert out.returncode == 1
    assert f"127.0.0.1:{port} is in use" in out.stderr and "--listen" in out.stderr, out.stderr

    # A home below a regular file cannot be created (root may write anywhere else).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = subprocess.run(
        [str(env / "bin" / "ferry"), "dev", "--listen", f"127.0.0.1:{free_port()}"],
        env=dev_env(env, blocker / "home"), capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert f"cannot create {blocker}/home/dev/logs" in out.stderr, out.stderr
    assert "--home" in out.stderr, out.stderr
