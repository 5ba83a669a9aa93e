"""Applications: programs run on an endpoint in phases, with typed inputs.

>>> app = Application(
...     execute="solver --steps @@steps@@ > out.log",
...     inputs=[{"name": "steps", "type": "int", "min": 1}],
...     outputs=["out.log"],
... )
>>> app.spec["execute"]
{'script': 'solver --steps @@steps@@ > out.log'}

See docs/applications.md for the spec: inputs, phases, walltimes, outputs.
"""

from __future__ import annotations

from typing import Any, Iterable


class Application:
    """An application's spec. The phases are shell scripts (or start with a ``#!``
    line naming their interpreter), run in order in the run's own directory:
    ``prolog``, ``execute``, ``epilog``; ``@@NAME@@`` in them is replaced by the input
    ``NAME``'s value, shell-quoted. ``walltimes`` maps a phase to its walltime in
    seconds. ``epilog_after_failure`` runs the epilog after a failed phase too."""

    def __init__(
        self,
        execute: str,
        *,
        prolog: str | None = None,
        epilog: str | None = None,
        epilog_after_failure: bool = False,
        inputs: Iterable[dict[str, Any]] = (),
        env_script: str | None = None,
        outputs: Iterable[str] = (),
        snippet_bytes: int | None = None,
        walltimes: dict[str, float] | None = None,
        name: str | None = None,
    ) -> None:
        walltimes = dict(walltimes or {})
        unknown = set(walltimes) - {"prolog", "execute", "epilog"}
        if unknown:
            raise ValueError(f"walltimes for phases that do not exist: {sorted(unknown)}")
        spec: dict[str, Any] = {}
        inputs = list(inputs)
        if inputs:
            spec["inputs"] = inputs
        for phase, script in (("prolog", prolog), ("execute", execute), ("epilog", epilog)):
            if script is None:
                continue
            entry: dict[str, Any] = {"script": script}
            if phase in walltimes:
                entry["walltime"] = walltimes[phase]
            if phase == "epilog" and epilog_after_failure:
                entry["after_failure"] = True
            spec[phase] = entry
        if env_script is not None:
            spec["env_script"] = env_script
        outputs = list(outputs)
        if outputs:
            spec["outputs"] = outputs
        if snippet_bytes is not None:
            spec["snippet_bytes"] = snippet_bytes
        self.spec = spec
        self.__name__ = name or "application"

    @classmethod
    def from_spec(cls, spec: dict[str, Any], name: str | None = None) -> "Application":
        """An application from its spec as the service takes it (a dict)."""
        app = cls.__new__(cls)
        app.spec = dict(spec)
        app.__name__ = name or "application"
        return app

    def __repr__(self) -> str:
        phases = [p for p in ("prolog", "execute", "epilog") if p in self.spec]
        return f"Application({self.__name__!r}, phases={phases})"
