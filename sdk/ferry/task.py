"""What a function running as a Ferry task can ask about its run."""

from __future__ import annotations

import os
from pathlib import Path


def run_dir() -> Path:
    """The running task's own run directory, ``<endpoint's run_dir>/<task id>``, made on
    the first call and made the working directory, so the files the task writes by
    relative path land there. The endpoint keeps it for its ``keep_run_dirs`` after the
    task (when the task left something in it), then removes it. The same directory is in
    ``GC_TASK_SANDBOX_DIR``, which Globus Compute's ``ShellFunction`` uses.

    A task starts in its worker's directory, not in this one: making a directory for
    every task would cost more than a small task's whole run.
    """
    path = os.environ.get("GC_TASK_SANDBOX_DIR")
    if not path:
        raise RuntimeError("ferry.run_dir() is for a function running as a task on a Ferry endpoint")
    os.makedirs(path, exist_ok=True)
    os.chdir(path)
    return Path(path)
