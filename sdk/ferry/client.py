"""The Ferry client: register functions, run them on endpoints, fetch results.

>>> from ferry import Client                                      # doctest: +SKIP
>>> c = Client("http://127.0.0.1:8000", token="fy_...")           # doctest: +SKIP
>>> fid = c.register_function(lambda x: x * 2)                    # doctest: +SKIP
>>> tid = c.run(21, endpoint_id=EP, function_id=fid)              # doctest: +SKIP
>>> c.get_result(tid)                                             # doctest: +SKIP
42
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterable, Iterator

from .errors import APIError, FerryError, RemoteExecutionError, RemoteTraceback, TaskPending
from .serialize import deserialize_data, pack_args, serialize_function

__all__ = ["Client", "Batch", "Session", "ShellFunction"]

_RETRYABLE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, http.client.CannotSendRequest)


class ShellFunction:
    """A shell command template run on the endpoint with ``/bin/sh -c``; ``{name}``
    placeholders are filled from the task's keyword arguments.

    >>> ShellFunction("echo hello {name}").command
    'echo hello {name}'
    """

    def __init__(self, command: str, name: str | None = None) -> None:
        self.command = command
        self.__name__ = name or (command.split()[0] if command.split() else "shell")

    def __repr__(self) -> str:
        return f"ShellFunction({self.command!r})"


class Batch:
    """Tasks to submit together in one request (all accepted or none)."""

    def __init__(self, client: "Client") -> None:
        self._client = client
        self.tasks: list[tuple[str, str]] = []

    def add(self, function_id: str, *args: Any, **kwargs: Any) -> None:
        """Adds a call of ``function_id`` with these arguments."""
        self.tasks.append((function_id, self._client._payload(function_id, args, kwargs)))

    def __len__(self) -> int:
        return len(self.tasks)


class Session:
    """A batch of tasks submitted in one request, tracked as a whole.

    ``status()`` reads its counts per state in one request whatever its size;
    ``wait()`` polls them (optionally reporting progress); ``results()`` pages through
    its tasks' results in submission order.
    """

    def __init__(self, client: "Client", session_id: str, task_ids: list[str]) -> None:
        self.client = client
        self.id = session_id
        self.task_ids = task_ids

    def __repr__(self) -> str:
        return f"Session({self.id!r}, {len(self.task_ids)} tasks)"

    def __len__(self) -> int:
        return len(self.task_ids)

    def status(self) -> dict:
        """``status`` (``running``, ``completed`` or ``failed``), ``reason``,
        ``counts`` per state, ``size``, ``completed_at``."""
        return self.client.get_session(self.id)

    def wait(
        self,
        timeout: float | None = None,
        progress: Callable[[dict], None] | None = None,
        interval: float = 0.2,
    ) -> dict:
        """Waits until every task is terminal and returns the final status. Calls
        ``progress(status)`` after each poll. Raises :class:`TimeoutError` after
        ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            doc = self.status()
            if progress is not None:
                progress(doc)
            if not doc["pending"]:
                return doc
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"session {self.id} still running after {timeout} s: {doc['counts']}")
            time.sleep(interval)

    def results(self, page_size: int = 1000) -> Iterator[tuple[str, dict]]:
        """``(task_id, entry)`` for every task in submission order, where ``entry`` is
        like :meth:`Client.get_batch_result`'s: ``pending``, ``status`` and, once
        finished, ``result`` or ``exception``."""
        for doc in self.client.iter_session_tasks(self.id, page_size):
            yield doc["task_id"], _entry(doc)

    def as_completed(self, timeout: float | None = None) -> Iterator[tuple[str, dict]]:
        """``(task_id, entry)`` for every task as it finishes (entries as in
        :meth:`results`), while the rest still run. It reads the session's counts (one
        small read) and fetches only about as many of the oldest unfinished tasks as
        have finished, so each record is read about once however long the session runs;
        with nothing new it long-polls. Raises :class:`TimeoutError` after ``timeout``
        seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = collections.deque(self.task_ids)
        yielded = 0
        # Where the next read starts in `pending`: past the front when tasks finished
        # out of order and the front held none of them.
        skip = 0
        lingered = False
        while pending:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"session {self.id}: {len(pending)} tasks unfinished after {timeout} s")
            counts = self.status()["counts"]
            ready = counts.get("success", 0) + counts.get("failed", 0) - yielded
            if 0 < ready < 64 and len(pending) > ready and not lingered:
                # A few finished: let more finish first, rather than read a few at a time.
                lingered = True
                time.sleep(0.01)
                continue
            lingered = False
            if ready <= 0:
                # Nothing new: wait until one of the oldest finishes (one long poll).
                skip, size, wait = 0, 64, min(1.0, left if left is not None else 1.0)
            else:
                size, wait = ready + 64, 0.0
            if skip >= len(pending):
                skip = 0
            pending.rotate(-skip)
            head = [pending.popleft() for _ in range(min(len(pending), 1000, size))]
            body = {"task_ids": head, "history": False, "wait_secs": round(wait, 3)}
            docs = self.client._request("POST", "/v1/tasks/status", body)["tasks"]
            unfinished = []
            for tid in head:
                doc = docs.get(tid)
                if doc is None:
                    yielded += 1
                    yield tid, {"pending": False, "status": "unknown", "exception": FerryError(f"task {tid} not found")}
                elif doc["pending"]:
                    unfinished.append(tid)
                else:
                    yielded += 1
                    yield tid, _entry(doc)
            pending.extendleft(reversed(unfinished))
            pending.rotate(skip)
            skip = 0 if len(unfinished) < len(head) else skip + len(head)

    def cancel(self) -> int:
        """Cancels every unfinished task (running ones are stopped); returns how many."""
        return self.client.cancel_session(self.id)


class Client:
    """A connection to a Ferry web-service.

    ``url`` defaults to ``$FERRY_URL`` (else ``http://127.0.0.1:8000``) and ``token`` to
    ``$FERRY_TOKEN``. The client is thread-safe: each thread keeps its own keep-alive
    connection.
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = (url or os.environ.get("FERRY_URL") or "http://127.0.0.1:8000").rstrip("/")
        self.token = token if token is not None else os.environ.get("FERRY_TOKEN")
        self.timeout = timeout
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise FerryError(f"invalid Ferry URL {self.url!r}: expected http(s)://host[:port]")
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port
        self._base = parsed.path.rstrip("/")
        self._local = threading.local()
        self._kinds: dict[str, str] = {}

    # ---- HTTP ---------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(2):
            conn = self._connection()
            try:
                conn.request(method, self._base + path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except _RETRYABLE:
                # The server closed a kept-alive connection: reconnect once. The request
                # was not answered, so sending it again cannot duplicate it.
                conn.close()
                self._local.conn = None
                if attempt == 1:
                    raise
                continue
            except OSError:
                conn.close()
                self._local.conn = None
                raise
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                self._local.conn = None
            try:
                doc = json.loads(raw) if raw else None
            except ValueError:
                doc = None
            if response.status >= 400:
                if isinstance(doc, dict):
                    raise APIError(response.status, str(doc.get("code")), str(doc.get("message")))
                raise APIError(response.status, "http_error", raw[:200].decode("utf-8", "replace"))
            return doc
        raise FerryError("unreachable")

    # ---- functions ----------------------------------------------------------------

    def version(self) -> dict:
        """The service's API and build versions."""
        return self._request("GET", "/v1/version")

    def register_function(
        self, function: Callable[..., Any] | ShellFunction, name: str | None = None, description: str | None = None
    ) -> str:
        """Registers a Python callable (or a :class:`ShellFunction`); returns its id."""
        if isinstance(function, ShellFunction):
            return self.register_shell_function(function.command, name or function.__name__)
        if not callable(function):
            raise FerryError(f"register_function needs a callable, not {type(function).__name__}")
        name = name or getattr(function, "__name__", "function")
        if name == "<lambda>":
            name = "lambda"
        if description is None:
            description = (getattr(function, "__doc__", None) or "").strip() or None
        body = {"name": name, "kind": "python", "code": serialize_function(function), "description": description}
        fid = self._request("POST", "/v1/functions", body)["function_id"]
        self._kinds[fid] = "python"
        return fid

    def register_shell_function(self, command: str, name: str | None = None) -> str:
        """Registers a shell command template; returns its id."""
        body = {"name": name or "shell", "kind": "shell", "code": command}
        fid = self._request("POST", "/v1/functions", body)["function_id"]
        self._kinds[fid] = "shell"
        return fid

    def get_function(self, function_id: str) -> dict:
        return self._request("GET", f"/v1/functions/{function_id}")

    def _kind(self, function_id: str) -> str:
        kind = self._kinds.get(function_id)
        if kind is None:
            kind = self.get_function(function_id)["kind"]
            self._kinds[function_id] = kind
        return kind

    def _payload(self, function_id: str, args: Iterable[Any], kwargs: dict[str, Any]) -> str:
        if self._kind(function_id) == "shell":
            if tuple(args):
                raise FerryError("a shell function takes keyword arguments only (they fill its {placeholders})")
            return json.dumps(kwargs) if kwargs else ""
        return pack_args(tuple(args), kwargs)

    # ---- tasks --------------------------------------------------------------------

    def _submit(
        self,
        endpoint_id: str,
        tasks: list[tuple[str, str]],
        max_retries: int | None,
        walltime: float | None = None,
        events: bool = False,
    ) -> list[str]:
        return self._submit_session(endpoint_id, tasks, max_retries, walltime, events)["task_ids"]

    def _submit_session(
        self,
        endpoint_id: str,
        tasks: list[tuple[str, str]],
        max_retries: int | None,
        walltime: float | None = None,
        events: bool = False,
    ) -> dict:
        body = _session_body(endpoint_id, tasks, max_retries, walltime)
        body["events"] = events
        return self._request("POST", "/v1/tasks", body)

    def run(
        self,
        *args: Any,
        endpoint_id: str,
        function_id: str,
        max_retries: int | None = None,
        walltime: float | None = None,
        **kwargs: Any,
    ) -> str:
        """Runs a registered function once on an endpoint; returns the task id.

        ``max_retries``: how often the task may be retried after its worker or manager
        dies (the service's default when ``None``). ``walltime``: seconds the task may
        run before it is stopped and fails with the cause ``timeout``.
        """
        payload = self._payload(function_id, args, kwargs)
        return self._submit(endpoint_id, [(function_id, payload)], max_retries, walltime)[0]

    def create_batch(self) -> Batch:
        """An empty :class:`Batch` to fill with :meth:`Batch.add`."""
        return Batch(self)

    def batch_run(
        self, endpoint_id: str, batch: Batch, max_retries: int | None = None, walltime: float | None = None
    ) -> list[str]:
        """Submits a batch in one request; returns the task ids in the batch's order."""
        if not batch.tasks:
            raise FerryError("the batch is empty")
        return self._submit(endpoint_id, batch.tasks, max_retries, walltime)

    # ---- sessions -----------------------------------------------------------------

    def submit_session(
        self,
        endpoint_id: str,
        batch: Batch,
        timeout: float | None = None,
        max_retries: int | None = None,
        walltime: float | None = None,
    ) -> Session:
        """Submits a batch as one session (all its tasks are accepted or none is).
        ``timeout``: seconds the whole session may take; then its unfinished tasks fail
        with the cause ``timeout``."""
        return self.submit_sessions([(endpoint_id, batch)], timeout, max_retries, walltime)[0]

    def submit_sessions(
        self,
        sessions: Iterable[tuple[str, Batch]],
        timeout: float | None = None,
        max_retries: int | None = None,
        walltime: float | None = None,
    ) -> list[Session]:
        """Submits several ``(endpoint_id, batch)`` sessions in one request; every one is
        checked before any is created."""
        body = {
            "sessions": [
                {**_session_body(endpoint_id, batch.tasks, max_retries, walltime), "timeout_secs": timeout}
                for endpoint_id, batch in sessions
            ]
        }
        answer = self._request("POST", "/v1/sessions", body)
        return [Session(self, s["session_id"], s["task_ids"]) for s in answer["sessions"]]

    def get_session(self, session_id: str) -> dict:
        """A session's progress: ``status``, ``pending``, ``counts`` per state, ``size``,
        ``reason`` (``timeout``/``cancelled``) when failed."""
        return self._request("GET", f"/v1/sessions/{session_id}")

    def iter_session_tasks(self, session_id: str, page_size: int = 1000) -> Iterator[dict]:
        """Every task record of a session, in submission order, a page per request."""
        offset: int | None = 0
        while offset is not None:
            page = self._request("GET", f"/v1/sessions/{session_id}/tasks?offset={offset}&limit={page_size}")
            yield from page["tasks"]
            offset = page.get("next_offset")

    def cancel_session(self, session_id: str) -> int:
        """Cancels every unfinished task of a session; returns how many it ended."""
        return self._request("POST", f"/v1/sessions/{session_id}/cancel", {})["cancelled"]

    def cancel(self, task_id: str) -> dict:
        """Cancels a task: it ends ``failed`` with the cause ``cancelled`` unless it had
        already finished. Returns its record."""
        return self._request("POST", f"/v1/tasks/{task_id}/cancel", {})

    def cancel_batch(self, batch_id: str) -> int:
        """Cancels every unfinished task of a batch; returns how many it ended."""
        return self._request("POST", f"/v1/batches/{batch_id}/cancel", {})["cancelled"]

    def get_task(self, task_id: str, wait: float = 0) -> dict:
        """The task's record: ``pending``, ``status``, ``result`` or ``exception``,
        ``completion_t`` and the ``history`` of its states. ``wait``: seconds to wait for
        the task to finish first; the answer comes as soon as it does (a long poll, no
        polling loop)."""
        deadline = time.monotonic() + wait
        while True:
            chunk = self._wait_chunk(deadline)
            if chunk <= 0:
                return self._request("GET", f"/v1/tasks/{task_id}")
            doc = self._request("GET", f"/v1/tasks/{task_id}?wait_secs={chunk:.3f}")
            if not doc["pending"]:
                return doc

    def get_result(self, task_id: str, timeout: float | None = 0) -> Any:
        """The task's return value. Re-raises the remote exception (with the remote
        traceback as its cause) when the task failed. ``timeout``: seconds to wait for
        the task to finish (``None``: as long as it takes); raises :class:`TaskPending`
        if it has not by then."""
        doc = self.get_task(task_id, wait=float("inf") if timeout is None else timeout)
        if doc["pending"]:
            raise TaskPending(doc["status"])
        return result_of(doc)

    def get_tasks(self, task_ids: Iterable[str], history: bool = True, wait: float = 0) -> dict[str, dict]:
        """Raw records of many tasks, 1,000 per request. ``history=False`` leaves each
        task's history out (empty): a cheaper read when only outcomes matter. ``wait``:
        seconds to wait, if none of the tasks has finished yet, for one to finish."""
        ids = [str(t) for t in task_ids]
        out: dict[str, dict] = {}
        for i in range(0, len(ids), 1000):
            body = {"task_ids": ids[i : i + 1000], "history": history}
            answer = self._request("POST", "/v1/tasks/status", body)
            out.update(answer["tasks"])
        deadline = time.monotonic() + wait
        while ids and all(doc["pending"] for doc in out.values()):
            chunk = self._wait_chunk(deadline)
            if chunk <= 0:
                break
            # Any one task is enough: the first 1,000 stand for the rest.
            body = {"task_ids": ids[:1000], "history": history, "wait_secs": round(chunk, 3)}
            out.update(self._request("POST", "/v1/tasks/status", body)["tasks"])
        return out

    def _wait_chunk(self, deadline: float) -> float:
        """How long the next long poll may wait: what is left, within the service's
        limit (60 s) and well within this client's socket timeout."""
        left = deadline - time.monotonic()
        return max(0.0, min(left, 50.0, self.timeout * 0.8))

    def get_batch_result(self, task_ids: Iterable[str]) -> dict[str, dict]:
        """For each task: ``pending``, ``status``, and once finished ``result`` (the
        value) or ``exception`` (the exception object), and ``completion_t``."""
        return {tid: _entry(doc) for tid, doc in self.get_tasks(task_ids, history=False).items()}

    def get_batch(self, batch_id: str) -> dict:
        return self._request("GET", f"/v1/batches/{batch_id}")

    # ---- endpoints ----------------------------------------------------------------

    def get_endpoint_status(self, endpoint_id: str) -> dict:
        """``status`` (``online``/``offline``), ``last_heartbeat`` and load ``details``."""
        return self._request("GET", f"/v1/endpoints/{endpoint_id}")

    def list_endpoints(self) -> list[dict]:
        return self._request("GET", "/v1/endpoints")


def _session_body(
    endpoint_id: str, tasks: list[tuple[str, str]], max_retries: int | None, walltime: float | None
) -> dict:
    """The JSON of one submission (`POST /v1/tasks`, or one of `POST /v1/sessions`)."""
    return {
        "endpoint_id": str(endpoint_id),
        "tasks": [
            {"function_id": f, "payload": p, "max_retries": max_retries, "walltime_secs": walltime} for f, p in tasks
        ],
    }


def _entry(doc: dict) -> dict:
    entry: dict[str, Any] = {"pending": doc["pending"], "status": doc["status"]}
    if not doc["pending"]:
        entry["completion_t"] = doc.get("completion_t")
        try:
            entry["result"] = result_of(doc)
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
        except Exception:  # noqa: BLE001 - fall back to the text
            pass
    return RemoteExecutionError(tb)


def result_of(doc: dict) -> Any:
    """The value of a finished task's record, or raises its exception."""
    if doc["status"] == "success":
        if doc.get("result_expired"):
            raise FerryError(f"the result of task {doc['task_id']} has expired (results are kept for a limited time)")
        return deserialize_data(doc["result"])
    raise exception_of(doc)
