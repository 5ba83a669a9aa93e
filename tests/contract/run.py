"""Schemathesis against a live Ferry: the REST API's own description (`/openapi.json`,
Ferry's routes and the Globus-compatible ones) drives generated requests at every route,
with a user's token; no input may get a 5xx.

    python tests/contract/run.py [--max-examples N] [--checks LIST]

``scripts/test`` runs it (FERRY_BIN_DIR names the binaries). More examples by hand:
``--max-examples 500``. Every check runs (no 5xx; every status code, content type,
header and body as described; the same answer for a request sent twice) but
``positive_data_acceptance``: the description cannot say that an id must name a thing
that exists, or which of a string's values are valid, so the service rightly refuses
some requests the description allows.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from ferrystack import Stack  # noqa: E402


def real_ids(stack: Stack) -> str:
    """A Schemathesis config that gives the routes with ids in their path the ids of
    real things (a function, a finished session of three tasks, the endpoint), so their
    requests get past 404 to the code behind: the other parameters, bodies and query
    strings are still generated."""
    from ferry import Client

    client = Client(stack.url, token=stack.token)
    function = client.register_shell_function("echo {x}", "contract")
    batch = client.create_batch()
    for i in range(3):
        batch.add(function, x=i)
    session = client.submit_session(stack.endpoint_id, batch)
    tasks = session.task_ids
    for task in tasks:
        client.get_task(task, wait=60)
    ids = {
        "/v1/functions/{id}": function,
        "/v1/functions/{id}/sharing": function,
        "/v1/endpoints/{id}": stack.endpoint_id,
        "/v1/endpoints/{id}/still_to_run": stack.endpoint_id,
        "/v1/tasks/{id}": tasks[0],
        "/v1/tasks/{id}/input": tasks[0],
        "/v1/tasks/{id}/function": tasks[0],
        "/v1/tasks/{id}/results/{attempt}": tasks[0],
        "/v1/tasks/{id}/cancel": tasks[1],
        "/v1/sessions/{id}": session.id,
        "/v1/sessions/{id}/tasks": session.id,
        "/v1/batches/{id}": session.id,
        "/v1/sessions/{id}/cancel": session.id,
        "/v1/batches/{id}/cancel": session.id,
        "/v2/functions/{id}": function,
        "/v2/tasks/{id}": tasks[0],
        "/v2/endpoints/{id}": stack.endpoint_id,
        "/v2/endpoints/{id}/status": stack.endpoint_id,
        "/v3/endpoints/{id}/submit": stack.endpoint_id,
    }
    return "".join(
        f'[[operations]]\ninclude-path = "{path}"\nparameters = {{ "path.id" = "{value}" }}\n\n'
        for path, value in ids.items()
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-examples", type=int, default=int(os.environ.get("FERRY_CONTRACT_EXAMPLES", "25")))
    ap.add_argument("--checks", default="all")
    ap.add_argument("--exclude-checks", default="positive_data_acceptance")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    stack = Stack(workers=1)
    stack.start()
    try:
        config = stack.dir / "schemathesis.toml"
        config.write_text(real_ids(stack))
        schemathesis = Path(sys.executable).parent / "schemathesis"
        cmd = [
            str(schemathesis), "--config-file", str(config), "run", f"{stack.url}/openapi.json",
            "--checks", args.checks,
            "--exclude-checks", args.exclude_checks,
            "--max-examples", str(args.max_examples),
            "-H", f"Authorization: Bearer {stack.token}",
            "--max-failures", "20",
            "--request-timeout", "30",
        ]
        if args.seed is not None:
            cmd += ["--seed", str(args.seed)]
        print("contract:", " ".join(c if "Bearer" not in c else "Authorization: Bearer ..." for c in cmd), flush=True)
        # Schemathesis keeps a cache where it runs: in the stack's directory, not the repo.
        rc = subprocess.call(cmd, env={**os.environ, "NO_COLOR": "1"}, cwd=stack.dir)
        if rc != 0:
            print(f"contract: schemathesis failed (exit {rc}); the web-service's last log lines:", flush=True)
            for log in sorted(stack.dir.glob("*web-service*.log")):
                print("".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:]), flush=True)
        return rc
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
