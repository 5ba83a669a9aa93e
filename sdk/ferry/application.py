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

import base64
from pathlib import Path
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


def file_input(source: str | bytes | Path, name: str | None = None) -> dict[str, str]:
    """A file input whose content is sent with the run's inputs (base64; through the
    data plane when large, at most 10 MiB of inputs per run): from a local path, or
    bytes (then ``name`` is required). The endpoint writes it into the run directory
    under ``name`` (default: the file's own name)."""
    if isinstance(source, bytes):
        if not name:
            raise ValueError("file_input(bytes) needs a name to stage the file under")
        content = source
    else:
        path = Path(source)
        content = path.read_bytes()
        name = name or path.name
    return {"data": base64.b64encode(content).decode("ascii"), "name": name}


def save_outputs(run: dict, directory: str | Path) -> list[Path]:
    """Writes the output files a run returned (``run["outputs"]`` with their content)
    under ``directory``, keeping their paths; returns what was written. Files listed
    without content (over the size a result carries) are skipped: they stay in the run
    directory on the endpoint."""
    written = []
    root = Path(directory).resolve()
    for output in run.get("outputs", []):
        if output.get("data") is None:
            continue
        target = (root / output["path"]).resolve()
        if root not in target.parents:
            raise ValueError(f"output path {output['path']!r} leaves {root}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(output["data"]))
        written.append(target)
    return written
