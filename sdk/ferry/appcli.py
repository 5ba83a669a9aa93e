"""``ferry app``: register, look at and run applications from a shell.

    ferry app register SPEC.json [--name NAME] [--description TEXT]
    ferry app show APP_ID [--json]
    ferry app run APP_ID [NAME=VALUE ...] [--endpoint EP] [--wait] [--save-outputs DIR] [--json]

The service is the one ``Client()`` finds: ``$FERRY_URL`` and ``$FERRY_TOKEN``, else the
``client.json`` that ``ferry dev`` writes. ``run`` types each ``NAME=VALUE`` by the
application's inputs (``steps=500`` is an int, ``verbose=yes`` a bool); a file input
``mesh=@plate.msh`` uploads the local file, ``mesh=/scratch/plate.msh`` names one on the
endpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .application import file_input, save_outputs
from .client import Client
from .errors import APIError, ApplicationFailed, FerryError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ferry app", description="Ferry applications")
    commands = parser.add_subparsers(dest="command", required=True)
    register = commands.add_parser("register", help="register an application from its spec (JSON)")
    register.add_argument("spec", type=Path, help="the spec: a JSON file (see docs/applications.md)")
    register.add_argument("--name", help="default: the file's name without .json")
    register.add_argument("--description")
    show = commands.add_parser("show", help="an application's inputs and phases")
    show.add_argument("app_id")
    show.add_argument("--json", action="store_true", help="the spec as JSON")
    run = commands.add_parser("run", help="run an application once")
    run.add_argument("app_id")
    run.add_argument("inputs", nargs="*", metavar="NAME=VALUE", help="an input (file: @local-path uploads it)")
    run.add_argument("--endpoint", help="default: $FERRY_ENDPOINT or ferry dev's")
    run.add_argument("--wait", action="store_true", help="wait for the run and show its phases")
    run.add_argument("--timeout", type=float, default=None, help="seconds to wait (with --wait)")
    run.add_argument("--save-outputs", type=Path, metavar="DIR", help="write the returned output files here (implies --wait)")
    run.add_argument("--json", action="store_true", help="print the run's record as JSON (implies --wait)")
    args = parser.parse_args(argv)
    try:
        client = Client()
        if args.command == "register":
            return _register(client, args)
        if args.command == "show":
            return _show(client, args)
        return _run(client, args)
    except APIError as e:
        print(f"ferry app: {e.message}", file=sys.stderr)
        for error in e.errors[1:] if len(e.errors) > 1 else []:
            print(f"  {error['at']}: {error['message']}", file=sys.stderr)
        return 1
    except (FerryError, OSError, ValueError) as e:
        print(f"ferry app: {e}", file=sys.stderr)
        return 1


def _register(client: Client, args: argparse.Namespace) -> int:
    try:
        spec = json.loads(args.spec.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{args.spec} is not JSON: {e}") from None
    name = args.name or args.spec.name.removesuffix(".json")
    print(client.register_application(spec, name, args.description))
    return 0


def _spec(client: Client, app_id: str) -> dict:
    doc = client.get_function(app_id)
    if doc.get("kind") != "application":
        raise FerryError(f"{app_id} is a {doc.get('kind')} function, not an application")
    return doc.get("application") or {}


def _show(client: Client, args: argparse.Namespace) -> int:
    spec = _spec(client, args.app_id)
    if args.json:
        print(json.dumps(spec, indent=2))
        return 0
    inputs = sorted(enumerate(spec.get("inputs", [])), key=lambda e: (e[1].get("order") is None, e[1].get("order", 0), e[0]))
    print(f"{'INPUT':<16} {'TYPE':<7} {'REQUIRED':<9} {'DEFAULT':<12} CONSTRAINTS")
    for _, i in inputs:
        required = i.get("required", "default" not in i)
        limits = [f"{k} {i[k]}" for k in ("min", "max", "min_length", "max_length", "pattern") if k in i]
        if "choices" in i:
            limits.append("one of " + ", ".join(i["choices"]))
        default = json.dumps(i["default"]) if "default" in i else ""
        label = f"  ({i['label']})" if i.get("label") else ""
        print(f"{i['name']:<16} {i['type']:<7} {'yes' if required else 'no':<9} {default:<12} {'; '.join(limits)}{label}")
    phases = [p for p in ("prolog", "execute", "epilog") if p in spec]
    print(f"phases: {', '.join(phases)}")
    if spec.get("outputs"):
        print(f"outputs: {', '.join(spec['outputs'])}")
    return 0


def typed_inputs(spec: dict, pairs: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` arguments as the application's inputs, each typed by its input
    (an unknown name stays text: the service names it in its error)."""
    types = {i["name"]: i["type"] for i in spec.get("inputs", [])}
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"{pair!r} is not NAME=VALUE")
        kind = types.get(name)
        if kind == "int":
            try:
                values[name] = int(text)
            except ValueError:
                raise ValueError(f"input {name!r} is an int, not {text!r}") from None
        elif kind == "float":
            try:
                values[name] = float(text)
            except ValueError:
                raise ValueError(f"input {name!r} is a float, not {text!r}") from None
        elif kind == "bool":
            lowered = text.lower()
            if lowered not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError(f"input {name!r} is a bool (true/false, yes/no, 1/0), not {text!r}")
            values[name] = lowered in ("true", "yes", "1")
        elif kind == "file" and text.startswith("@"):
            values[name] = file_input(Path(text[1:]))
        else:
            values[name] = text
    return values


def _run(client: Client, args: argparse.Namespace) -> int:
    inputs = typed_inputs(_spec(client, args.app_id), args.inputs)
    task_id = client.run_application(args.app_id, inputs, endpoint_id=args.endpoint)
    if not (args.wait or args.json or args.save_outputs):
        print(task_id)
        return 0
    failed = None
    try:
        run = client.get_result(task_id, timeout=args.timeout)
    except ApplicationFailed as e:
        run, failed = e.run, e
    if args.json:
        print(json.dumps(run, indent=2))
    else:
        print(f"task {task_id}: {'failed' if failed else 'succeeded'}; run directory {run.get('run_dir')}")
        for p in run.get("phases", []):
            took = f"{p['ended_at'] - p['started_at']:.2f} s" if p.get("started_at") is not None else ""
            status = p.get("signal") or ("" if p.get("exit_status") is None else f"exit {p['exit_status']}")
            print(f"  {p['name']:<8} {p['state']:<10} {status:<10} {took}")
        for o in run.get("outputs", []):
            print(f"  output {o['path']} ({o['bytes']} bytes){'' if o.get('data') is not None else ': ' + o.get('note', '')}")
    if args.save_outputs:
        for path in save_outputs(run, args.save_outputs):
            print(f"saved {path}", file=sys.stderr)
    if failed is not None:
        print(f"ferry app: {failed}", file=sys.stderr)
        return 1
    return 0
