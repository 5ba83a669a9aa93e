"""The README's first command does what the README says: run from the checkout as
written, a Python function runs on a local endpoint (`ferry dev`, no Redis or RabbitMQ
used) and its result prints. The command is read from the README itself, so the README
cannot drift from what works. (The wheel's journey, `pip install` + `ferry dev` +
`examples/hello.py`, is test_wheel.py's.)"""

from __future__ import annotations

import os
import re
import subprocess

from ferrystack import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md opens with a bash block of commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def test_the_readmes_first_command_runs_a_function_and_prints_its_result():
    first, second = readme_commands()[:2]
    assert first == "scripts/quickstart" and second == "scripts/test", readme_commands()
    env = dict(os.environ)
    for var in ("FERRY_URL", "FERRY_TOKEN", "FERRY_ENDPOINT", "FERRY_HOME"):
        env.pop(var, None)
    out = subprocess.run(["bash", "-c", first], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert "double(21) = 42" in out.stdout and "pow(2, 10) = 1024" in out.stdout, out.stdout
    assert "an embedded store and broker" in out.stderr, out.stderr
