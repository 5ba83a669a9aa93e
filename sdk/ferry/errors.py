"""Exceptions raised by the Ferry SDK. All derive from :class:`FerryError`."""

from __future__ import annotations


class FerryError(Exception):
    """Base of every error the SDK raises itself."""


class APIError(FerryError):
    """The service answered with an error.

    >>> str(APIError(404, "not_found", "task 1 not found"))
    'not_found (HTTP 404): task 1 not found'
    """

    def __init__(self, http_status: int, code: str, message: str, errors: list | None = None) -> None:
        super().__init__(f"{code} (HTTP {http_status}): {message}")
        self.http_status = http_status
        self.code = code
        self.message = message
        #: Each problem on its own where there were several (an application's inputs):
        #: dicts with ``at``, ``input`` (the input's name) and ``message``.
        self.errors = list(errors or [])


class TaskPending(FerryError):
    """The task has no result yet; ``status`` says where it is."""

    def __init__(self, status: str) -> None:
        super().__init__(f"task is pending ({status})")
        self.status = status


class RemoteExecutionError(FerryError):
    """A task failed and its exception could not be rebuilt here; ``str()`` is the
    remote traceback."""

    def __init__(self, remote_traceback: str) -> None:
        super().__init__(remote_traceback)
        self.remote_traceback = remote_traceback


class DeserializationError(FerryError):
    """A serialized buffer could not be read back."""


class RemoteTraceback(Exception):
    """Attached as ``__cause__`` of a re-raised remote exception, so the traceback
    printed locally ends with the one from the worker."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class ApplicationFailed(RemoteExecutionError):
    """An application run failed: ``str()`` names the phase and why; ``run`` is the
    run's record (``run_dir``, ``phases``, ``outputs``, ``inputs``), as a success's
    result would be."""

    def __init__(self, remote_traceback: str, run: dict) -> None:
        super().__init__(remote_traceback)
        self.run = run
        self.run_dir = run.get("run_dir")
        self.phases = run.get("phases", [])
