"""Ferry's hello world: a function defined here runs on an endpoint and its result
prints. scripts/quickstart runs it against `ferry dev`; with `ferry dev` running, just

    python examples/hello.py

(`Client()` finds the URL, token and endpoint in ~/.ferry/client.json, which `ferry dev`
writes). Against another Ferry:

    FERRY_URL=https://ferry.example.org FERRY_TOKEN=fy_... FERRY_ENDPOINT=<id> python examples/hello.py
"""

import sys

from ferry import Client, Executor, FerryError, TaskPending


def double(x):
    return x * 2


def main() -> int:
    c = Client()
    if not c.endpoint_id:
        print("no endpoint: start `ferry dev`, or set FERRY_ENDPOINT to a running endpoint's id", file=sys.stderr)
        return 2
    fid = c.register_function(double)
    tid = c.run(21, function_id=fid)
    try:
        # Answered the moment the task finishes (a long poll), or TaskPending after 60 s.
        print(f"double(21) = {c.get_result(tid, timeout=60)}")
    except TaskPending as e:
        print(f"task {tid} did not finish in 60 s: {e}", file=sys.stderr)
        return 1
    with Executor(client=c) as ex:
        print("pow(2, 10) =", ex.submit(pow, 2, 10).result(timeout=60))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FerryError as e:
        print(f"hello.py: {e}", file=sys.stderr)
        sys.exit(1)
