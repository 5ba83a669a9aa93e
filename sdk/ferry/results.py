"""What a task's record means to the caller: its value, or the exception it raised."""

from __future__ import annotations

from typing import Any

from .errors import ApplicationFailed, FerryError, RemoteExecutionError, RemoteTraceback
from .serialize import deserialize_data

__all__ = ["exception_of", "result_of"]


def _entry(doc: dict, task_id: str | None = None) -> dict:
    entry: dict[str, Any] = {"pending": doc["pending"], "status": doc["status"]}
    if not doc["pending"]:
        entry["completion_t"] = doc.get("completion_t")
        try:
            entry["result"] = result_of(doc, task_id)
        except BaseException as e:  # noqa: BLE001 - the remote exception, as a value
            entry["exception"] = e
    return entry


def exception_of(doc: dict) -> BaseException:
    """The exception a failed task's record stands for."""
    tb = doc.get("exception") or f"task failed ({doc.get('status')})"
    data = doc.get("exception_data")
    if data:
        try:
            exc = deserialize_data(data)
            if isinstance(exc, BaseException):
                exc.__cause__ = RemoteTraceback(tb)
                return exc
            if isinstance(exc, dict) and "phases" in exc:
                return ApplicationFailed(tb, exc)
        except Exception:  # noqa: BLE001 - fall back to the text
            pass
    return RemoteExecutionError(tb)


def result_of(doc: dict, task_id: str | None = None) -> Any:
    """The value of a finished task's record (a full or a brief one, whose id is
    `task_id`), or raises its exception."""
    if doc["status"] == "success":
        if doc.get("result_expired"):
            tid = task_id or doc.get("task_id")
            raise FerryError(f"the result of task {tid} has expired (results are kept for a limited time)")
        return deserialize_data(doc["result"])
    raise exception_of(doc)
