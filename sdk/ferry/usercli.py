"""``ferry`` for everyday use: log in, register a function, run it, look at a task, watch
a session, list endpoints.

    ferry login [--url URL] [--token TOKEN] [--endpoint EP]
    ferry function register FILE:NAME [--source]
    ferry run FUNCTION_ID [ARG ...] [-k NAME=VALUE ...] [--endpoint EP] [--no-wait]
    ferry task show TASK_ID
    ferry session watch SESSION_ID
    ferry endpoint list

Every command takes ``--json`` (one JSON document on stdout, for scripts). Arguments and
keyword values are read as JSON when they parse (``3``, ``[1, 2]``, ``"x"``), else as
text. The service is the one ``Client()`` finds: ``$FERRY_URL`` and ``$FERRY_TOKEN``,
else ``client.json`` in Ferry's home, which ``ferry login`` (and ``ferry dev``) writes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .client import Client, ferry_home
from .errors import APIError, FerryError, RemoteExecutionError

#: The commands this module answers, for ``ferry``'s dispatch.
COMMANDS = ("login", "function", "run", "task", "session", "endpoint")


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except APIError as e:
        print(f"ferry {args.command}: {e.message}", file=sys.stderr)
        return 1
    except RemoteExecutionError as e:
        print(f"ferry {args.command}: the task failed:\n{e}", file=sys.stderr)
        return 1
    except (FerryError, OSError, ValueError) as e:
        print(f"ferry {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferry", description="Ferry from a shell")
    commands = parser.add_subparsers(dest="command", required=True)
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print one JSON document")

    login = commands.add_parser("login", parents=[as_json], help="save the service's URL and your token")
    login.add_argument("--url", help="default: $FERRY_URL, else http://127.0.0.1:8000")
    login.add_argument("--token", help="default: $FERRY_TOKEN, else asked for")
    login.add_argument("--endpoint", help="the endpoint tasks go to when a command names none")
    login.set_defaults(handler=_login)

    function = commands.add_parser("function", help="functions").add_subparsers(dest="action", required=True)
    register = function.add_parser("register", parents=[as_json], help="register a function from a Python file")
    register.add_argument("target", metavar="FILE:NAME", help="the file and the function's name in it")
    register.add_argument("--source", action="store_true", help="send its source (runs on any Python 3)")
    register.set_defaults(handler=_register)

    run = commands.add_parser("run", parents=[as_json], help="run a registered function once")
    run.add_argument("function_id")
    run.add_argument("args", nargs="*", metavar="ARG", help="a positional argument (JSON, else text)")
    run.add_argument("-k", "--kwarg", action="append", default=[], metavar="NAME=VALUE", help="a keyword argument")
    run.add_argument("--endpoint", help="default: $FERRY_ENDPOINT, or the one saved by ferry login or ferry dev")
    run.add_argument("--environment", help="the endpoint's task environment to run it in")
    run.add_argument("--priority", type=int)
    run.add_argument("--walltime", type=float, metavar="SECONDS")
    run.add_argument("--no-wait", action="store_true", help="print the task id and return")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="how long to wait for the result")
    run.set_defaults(handler=_run)

    task = commands.add_parser("task", help="tasks").add_subparsers(dest="action", required=True)
    show = task.add_parser("show", parents=[as_json], help="a task's state, timeline and result")
    show.add_argument("task_id")
    show.set_defaults(handler=_show_task)

    session = commands.add_parser("session", help="sessions").add_subparsers(dest="action", required=True)
    watch = session.add_parser("watch", parents=[as_json], help="a session's progress until it completes")
    watch.add_argument("session_id")
    watch.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    watch.add_argument("--every", type=float, default=0.5, metavar="SECONDS", help="how often to ask")
    watch.set_defaults(handler=_watch_session)

    endpoint = commands.add_parser("endpoint", help="endpoints").add_subparsers(dest="action", required=True)
    listing = endpoint.add_parser("list", parents=[as_json], help="your endpoints and those shared with you")
    listing.set_defaults(handler=_list_endpoints)
    return parser


def _emit(args: argparse.Namespace, document: Any, text: Callable[[], str]) -> int:
    print(json.dumps(document, indent=2, default=str) if args.json else text())
    return 0


# ---- login --------------------------------------------------------------------------


def _login(args: argparse.Namespace) -> int:
    url = (args.url or os.environ.get("FERRY_URL") or "http://127.0.0.1:8000").rstrip("/")
    token = args.token or os.environ.get("FERRY_TOKEN")
    if not token:
        import getpass

        token = getpass.getpass(f"token for {url}: ").strip()
    me = Client(url, token=token).whoami()
    path = Path(ferry_home()) / "client.json"
    saved: dict[str, Any] = {"url": url, "token": token}
    if args.endpoint:
        saved["endpoint_id"] = args.endpoint
    path.parent.mkdir(parents=True, exist_ok=True)
    # The token is a credential: the file is the user's alone from its first byte.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(saved, f)
    os.chmod(path, 0o600)
    document = {"url": url, "user_id": me.get("user_id"), "name": me.get("name"), "saved": str(path)}
    return _emit(args, document, lambda: f"logged in to {url} as {me.get('name')} ({me.get('user_id')}); saved in {path}")


# ---- functions ----------------------------------------------------------------------


def _load_function(target: str) -> Callable[..., Any]:
    file, sep, name = target.rpartition(":")
    if not sep or not file or not name:
        raise ValueError(f"{target!r} is not FILE:NAME (a Python file and a function in it)")
    path = Path(file)
    if not path.is_file():
        raise ValueError(f"{file}: no such file")
    module_name = f"ferry_cli_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{file} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{file} has no function {name!r}")
    return fn


def _register(args: argparse.Namespace) -> int:
    fn = _load_function(args.target)
    client = Client()
    function_id = client.register_function(fn, source=args.source)
    document = {"function_id": function_id, "name": fn.__name__}
    return _emit(args, document, lambda: function_id)


# ---- run ----------------------------------------------------------------------------


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _run(args: argparse.Namespace) -> int:
    kwargs = {}
    for pair in args.kwarg:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"-k {pair!r} is not NAME=VALUE")
        kwargs[name] = _value(value)
    client = Client()
    task_id = client.run(
        *[_value(a) for a in args.args],
        function_id=args.function_id,
        endpoint_id=args.endpoint,
        walltime=args.walltime,
        priority=args.priority,
        environment=args.environment,
        **kwargs,
    )
    if args.no_wait:
        return _emit(args, {"task_id": task_id}, lambda: task_id)
    try:
        result = client.get_result(task_id, timeout=args.timeout)
    except FerryError:
        raise
    except Exception:  # noqa: BLE001 - the function's own exception, raised here
        traceback = client.get_task(task_id).get("exception") or ""
        if args.json:
            print(json.dumps({"task_id": task_id, "status": "failed", "exception": traceback}, indent=2))
        else:
            print(f"ferry run: task {task_id} failed:\n{traceback.rstrip()}", file=sys.stderr)
        return 1
    try:
        json.dumps(result)
        shown: Any = result
    except (TypeError, ValueError):
        shown = repr(result)
    return _emit(args, {"task_id": task_id, "result": shown}, lambda: result if isinstance(result, str) else repr(result))


# ---- tasks --------------------------------------------------------------------------


def _show_task(args: argparse.Namespace) -> int:
    doc = Client().get_task(args.task_id)
    return _emit(args, doc, lambda: _task_text(doc))


def _task_text(doc: dict) -> str:
    lines = [
        f"task {doc['task_id']}: {doc['status']} (attempt {doc['attempt']})",
        f"  function {doc['function_id']}, endpoint {doc['endpoint_id']}, session {doc['batch_id']}",
    ]
    if doc.get("waiting"):
        lines.append(f"  waiting: {doc['waiting']}")
    lines.append("")
    lines.extend(timeline(doc.get("history", [])))
    if doc.get("exception"):
        lines += ["", "exception:", *("  " + line for line in doc["exception"].rstrip().splitlines())]
    for stream in ("stdout", "stderr"):
        if doc.get(stream):
            lines += ["", f"{stream}:", *("  " + line for line in doc[stream].rstrip().splitlines())]
    return "\n".join(lines)


def timeline(history: list[dict], width: int = 30) -> list[str]:
    """A task's steps as lines: when each began (after the first), the state, attempt
    and actor, how long it lasted, and a bar of that length against the longest."""
    if not history:
        return ["  (no steps yet)"]
    start = history[0]["at"]
    ends = [h["at"] for h in history[1:]] + [history[-1]["at"]]
    spans = [max(0.0, end - h["at"]) for h, end in zip(history, ends)]
    longest = max(spans) or 1.0
    lines = []
    for h, span, last in zip(history, spans, [False] * (len(history) - 1) + [True]):
        bar = "" if last else "█" * max(1, round(width * span / longest))
        took = "" if last else _seconds(span)
        reason = f" ({h['reason']})" if h.get("reason") else ""
        line = f"  +{_seconds(h['at'] - start):>9}  {h['state'] + reason:<26} #{h['attempt']}  {h['by']:<11} {took:>9}  {bar}"
        lines.append(line.rstrip())
    return lines


def _seconds(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


# ---- sessions -----------------------------------------------------------------------


def _watch_session(args: argparse.Namespace) -> int:
    client = Client()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    live = sys.stdout.isatty() and not args.json
    shown = None
    while True:
        doc = client.get_session(args.session_id)
        line = progress_line(doc)
        if live:
            print("\r" + line, end="", flush=True)
        elif line != shown and not args.json:
            print(line, flush=True)
        shown = line
        if not doc["pending"]:
            break
        if deadline is not None and time.monotonic() >= deadline:
            if live:
                print()
            raise FerryError(f"session {args.session_id} still running after {args.timeout} s")
        time.sleep(args.every)
    if live:
        print()
    if args.json:
        print(json.dumps(doc, indent=2))
    failed = doc["counts"].get("failed", 0)
    return 0 if doc["status"] == "completed" and not failed else 1


def progress_line(doc: dict, width: int = 30) -> str:
    """``[██████········] 42% 4,200/10,000 · success 4,100 · failed 100 · running 12``."""
    size = doc["size"] or 1
    counts = doc["counts"]
    done = counts.get("success", 0) + counts.get("failed", 0)
    filled = round(width * done / size)
    parts = [f"{state} {n:,}" for state, n in counts.items() if n and state not in ("received",)]
    status = "" if doc["pending"] else f" · {doc['status']}" + (f" ({doc['reason']})" if doc.get("reason") else "")
    return f"[{'█' * filled}{'·' * (width - filled)}] {100 * done // size:>3}% {done:,}/{doc['size']:,} · " + " · ".join(parts) + status


# ---- endpoints ----------------------------------------------------------------------


def _list_endpoints(args: argparse.Namespace) -> int:
    endpoints = Client().list_endpoints()
    return _emit(args, endpoints, lambda: _endpoints_text(endpoints))


def _endpoints_text(endpoints: list[dict]) -> str:
    if not endpoints:
        return "no endpoints (start one: ferry-endpoint configure NAME, then ferry-endpoint start NAME)"
    now = time.time()
    lines = [f"{'ENDPOINT':<36}  {'NAME':<16} {'STATUS':<8} {'HEARTBEAT':>10}  {'WORKERS':>9}  TASKS"]
    for e in endpoints:
        details = e.get("details") or {}
        beat = e.get("last_heartbeat")
        ago = "never" if beat is None else _ago(now - beat)
        workers = f"{details.get('total_workers', 0) - details.get('idle_workers', 0)}/{details.get('total_workers', 0)}"
        tasks = f"{details.get('pending_tasks', 0)} waiting, {details.get('outstanding_tasks', 0)} at managers"
        lines.append(f"{e['endpoint_id']:<36}  {e['name'][:16]:<16} {e['status']:<8} {ago:>10}  {workers:>9}  {tasks}")
    return "\n".join(lines)


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{max(0, int(seconds))} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    return f"{int(seconds // 3600)} h ago"
