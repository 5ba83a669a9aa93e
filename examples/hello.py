"""Ferry's hello world: a function defined here runs on an endpoint and its result
prints. scripts/quickstart runs it against a local Ferry; to run it against yours:

    FERRY_URL=http://127.0.0.1:8000 FERRY_TOKEN=fy_... FERRY_ENDPOINT=<id> python examples/hello.py
"""

import os
import sys

from ferry import Client, Executor, TaskPending


def double(x):
    return x * 2


def main() -> int:
    endpoint = os.environ.get("FERRY_ENDPOINT")
    if not endpoint:
        print("set FERRY_ENDPOINT to the id of a running endpoint", file=sys.stderr)
        return 2
    c = Client()  # FERRY_URL and FERRY_TOKEN
    fid = c.register_function(double)
    tid = c.run(21, endpoint_id=endpoint, function_id=fid)
    try:
        # Answered the moment the task finishes (a long poll), or TaskPending after 60 s.
        print(f"double(21) = {c.get_result(tid, timeout=60)}")
    except TaskPending as e:
        print(f"task {tid} did not finish in 60 s: {e}", file=sys.stderr)
        return 1
    with Executor(endpoint_id=endpoint, client=c) as ex:
        print("pow(2, 10) =", ex.submit(pow, 2, 10).result(timeout=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
