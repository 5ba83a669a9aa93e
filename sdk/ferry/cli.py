"""``ferry``: the command that comes with the SDK.

``ferry dev [FLAGS]`` runs Ferry on this machine (web-service, forwarder and a local
endpoint, on an embedded store and broker): it hands over to the ``ferry-dev`` binary
installed beside this Python (the Ferry wheel puts it there), else the one on ``PATH``.
``ferry dev --help`` lists its flags. ``ferry app`` registers, shows and runs
applications (see ``ferry.appcli``); ``login``, ``function``, ``run``, ``task``,
``session`` and ``endpoint`` are the everyday commands (see ``ferry.usercli``).
"""

from __future__ import annotations

import os
import shutil
import sys

USAGE = """usage: ferry COMMAND [ARGS]

commands:
  dev       run Ferry on this machine (no Redis or RabbitMQ needed); ferry dev --help
  login     save the service's URL and your token
  function  register a function from a Python file: ferry function register FILE:NAME
  run       run a registered function once and print its result
  task      a task's state, timeline and result: ferry task show ID
  session   a session's progress until it completes: ferry session watch ID
  endpoint  your endpoints: ferry endpoint list
  app       register, show and run applications; ferry app --help

Every command but dev takes --json; ferry COMMAND --help says more.
"""


def _binary(name: str) -> str | None:
    """``name`` beside this interpreter (the environment Ferry was installed into), else
    on ``PATH``."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which(name)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, rest = args[0], args[1:]
    if command == "dev":
        binary = _binary("ferry-dev")
        if binary is None:
            print(
                "ferry dev needs the ferry-dev binary, which the Ferry wheel installs beside this "
                "Python; from a checkout, run scripts/dev (it builds Ferry first)",
                file=sys.stderr,
            )
            return 2
        os.execv(binary, [binary, *rest])
    if command == "app":
        from .appcli import main as app_main

        return app_main(rest)
    from . import usercli

    if command in usercli.COMMANDS:
        return usercli.main(args)
    print(f"ferry: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
