"""Ferry installed as a Python tool: `scripts/wheel --debug` builds the wheel, pip installs
it into a fresh virtualenv, and a real stack runs from that environment alone: every
binary from its bin/, the endpoint configured without `--python` (so its workers run the
environment's `python`, the one beside `ferry-endpoint`), and a function submitted with
the SDK the wheel installed comes back with its result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import pytest

from ferrystack import ROOT, Stack

BINARIES = ("ferry-endpoint", "ferry-manager", "ferry-worker", "ferry-web-service", "ferry-forwarder")

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
