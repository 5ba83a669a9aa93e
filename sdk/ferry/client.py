"""The Ferry client: register functions, run them on endpoints, fetch results.

>>> from ferry import Client                                      # doctest: +SKIP
>>> c = Client("http://127.0.0.1:8000", token="fy_...")           # doctest: +SKIP
>>> fid = c.register_function(lambda x: x * 2)                    # doctest: +SKIP
>>> tid = c.run(21, endpoint_id=EP, function_id=fid)              # doctest: +SKIP
>>> c.get_result(tid)                                             # doctest: +SKIP
42
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import ssl
import threading
import time
import urllib.parse
import uuid
from typing import Any, Callable, Iterable, Iterator

from .application import Application
from .errors import APIError, FerryError, TaskPending
from .results import _entry, result_of
from .serialize import pack_args, serialize_function
from .session import Session

__all__ = ["Client", "Batch", "Session", "ShellFunction"]

_RETRYABLE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, http.client.CannotSendRequest)


class _OneWrite:
    """Sends a request's head and a small body in one write: in two, the server wakes
    for the head and again for the body (a tenth of a millisecond on a busy machine)."""

    _buffer: list[bytes]

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes) and len(message_body) <= 65536 and not encode_chunked:
            self._buffer.extend((b"", b""))
            head = b"\r\n".join(self._buffer)
            del self._buffer[:]
            self.send(head + message_body)  # type: ignore[attr-defined]
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _HTTPConnection(_OneWrite, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    pass


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


class Client:
    """A connection to a Ferry web-service.

    ``url`` defaults to ``$FERRY_URL``, ``token`` to ``$FERRY_TOKEN`` and the endpoint
    tasks go to when none is named (:attr:`endpoint_id`) to ``$FERRY_ENDPOINT``; each
    unset one comes from ``client.json`` in Ferry's home (``$FERRY_HOME``, else
    ``~/.ferry``), which ``ferry dev`` writes, and the URL at last from
    ``http://127.0.0.1:8000``. The client is thread-safe: each thread keeps its own keep-alive
    connection. When the service answers 429 (a limit was reached; the request was
    refused whole), the client waits as ``Retry-After`` says and sends it again, for up
    to ``limit_wait`` seconds in all before raising the :class:`APIError`. Submissions
    carry an ``Idempotency-Key``: after a timeout, a lost connection, a 503 or a 409 for
    a submission still being answered, the client sends it again with the same key for
    up to ``submit_retry`` seconds, and the service answers with the first answer, so a
    retry never makes a second session.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        ca_file: str | None = None,
        limit_wait: float = 60.0,
        submit_retry: float = 60.0,
    ) -> None:
        self.limit_wait = limit_wait
        self.submit_retry = submit_retry
        saved = _saved_client() if not (url or os.environ.get("FERRY_URL")) else {}
        self.url = (url or os.environ.get("FERRY_URL") or saved.get("url") or "http://127.0.0.1:8000").rstrip("/")
        if token is None:
            token = os.environ.get("FERRY_TOKEN") or saved.get("token")
        self.token = token
        #: The endpoint tasks go to when a call names none.
        self.endpoint_id: str | None = os.environ.get("FERRY_ENDPOINT") or saved.get("endpoint_id")
        self.timeout = timeout
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise FerryError(f"invalid Ferry URL {self.url!r}: expected http(s)://host[:port]")
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port
        self._base = parsed.path.rstrip("/")
        # https:// is verified against the system's CAs and, if given, ``ca_file``
        # (``$FERRY_CA_FILE``): a service with its own CA is trusted, nothing else is.
        self.ca_file = ca_file or os.environ.get("FERRY_CA_FILE") or None
        self.ssl_context = ssl.create_default_context()
        if self.ca_file:
            self.ssl_context.load_verify_locations(cafile=self.ca_file)
        self._local = threading.local()
        self._kinds: dict[str, str] = {}
        self._applications: dict[int, tuple[Application, str]] = {}

    # ---- HTTP ---------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._scheme == "https":
                conn = _HTTPSConnection(self._host, self._port, timeout=self.timeout, context=self.ssl_context)
            else:
                conn = _HTTPConnection(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _request(self, method: str, path: str, body: Any = None, idempotent: bool = False) -> Any:
        """One request. ``idempotent``: it carries an ``Idempotency-Key``, and is sent
        again with the same key after a timeout, a lost connection, a 503 or a 409 for a
        request still being answered, for up to ``submit_retry`` seconds: the service
        answers a repeat with the first answer, so a submission is never made twice."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if idempotent:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        retry_until = time.monotonic() + (self.submit_retry if idempotent else 0.0)
        pause = 0.25
        waited = 0.0
        attempt = 0
        while True:
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
                attempt += 1
                if attempt == 2 and time.monotonic() >= retry_until:
                    raise
                continue
            except OSError:
                conn.close()
                self._local.conn = None
                if time.monotonic() >= retry_until:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                self._local.conn = None
            try:
                doc = json.loads(raw) if raw else None
            except ValueError:
                doc = None
            if response.status == 429 and waited < self.limit_wait:
                # A limit was reached and the request refused whole (nothing was
                # created): wait as long as the service says, then send it again.
                pause = min(_retry_after(response), self.limit_wait - waited)
                time.sleep(pause)
                waited += pause
                continue
            if idempotent and response.status in (409, 503) and time.monotonic() < retry_until:
                message = str(doc.get("message")) if isinstance(doc, dict) else ""
                if response.status == 503 or "still being answered" in message:
                    time.sleep(max(pause, _retry_after(response)) if response.getheader("Retry-After") else pause)
                    pause = min(pause * 2, 5.0)
                    continue
            if response.status >= 400:
                if isinstance(doc, dict):
                    raise APIError(
                        response.status, str(doc.get("code")), str(doc.get("message")), doc.get("errors") or []
                    )
                raise APIError(response.status, "http_error", raw[:200].decode("utf-8", "replace"))
            return doc

    # ---- functions ----------------------------------------------------------------

    def version(self) -> dict:
        """The service's API and build versions."""
        return self._request("GET", "/v1/version")

    def whoami(self) -> dict:
        """The caller: ``user_id`` (what others share things with), ``name``, and for an
        endpoint's credential the ``endpoint_id`` it acts for."""
        return self._request("GET", "/v1/whoami")

    def register_function(
        self,
        function: Callable[..., Any] | ShellFunction,
        name: str | None = None,
        description: str | None = None,
        *,
        public: bool = False,
        shared_with: Iterable[str] = (),
        source: bool = False,
    ) -> str:
        """Registers a Python callable (or a :class:`ShellFunction`); returns its id.

        By default only its owner may run it; ``public=True`` lets anyone with an
        account run it, ``shared_with`` names the user ids who may.

        The function travels as Python bytecode with the values it uses, which loads
        only on workers of this Python's major.minor (the service records this
        Python's version, and a task sent where the workers' Python differs fails at
        once, naming both). ``source=True`` sends its source text instead, which runs
        on any Python 3 but carries nothing else: the function must import what it
        uses inside its body, and cannot be a lambda or use variables of an enclosing
        function."""
        if isinstance(function, ShellFunction):
            return self.register_shell_function(
                function.command, name or function.__name__, public=public, shared_with=shared_with
            )
        if isinstance(function, Application):
            return self.register_application(
                function, name, description, public=public, shared_with=shared_with
            )
        if not callable(function):
            raise FerryError(f"register_function needs a callable, not {type(function).__name__}")
        name = name or getattr(function, "__name__", "function")
        if name == "<lambda>":
            name = "lambda"
        if description is None:
            description = (getattr(function, "__doc__", None) or "").strip() or None
        body = {
            "name": name,
            "kind": "python",
            "code": serialize_function(function, source=source),
            "description": description,
            "python_version": platform.python_version(),
        }
        body.update(_sharing(public, shared_with))
        fid = self._request("POST", "/v1/functions", body)["function_id"]
        self._kinds[fid] = "python"
        return fid

    def register_shell_function(
        self, command: str, name: str | None = None, *, public: bool = False, shared_with: Iterable[str] = ()
    ) -> str:
        """Registers a shell command template; returns its id."""
        body = {"name": name or "shell", "kind": "shell", "code": command}
        body.update(_sharing(public, shared_with))
        fid = self._request("POST", "/v1/functions", body)["function_id"]
        self._kinds[fid] = "shell"
        return fid

    def register_application(
        self,
        application: Application | dict,
        name: str | None = None,
        description: str | None = None,
        *,
        public: bool = False,
        shared_with: Iterable[str] = (),
    ) -> str:
        """Registers an :class:`Application` (or its spec as a dict); returns its id.
        The service checks the spec and lists every problem in one :class:`APIError`
        (``.errors``)."""
        if isinstance(application, dict):
            application = Application.from_spec(application)
        body = {
            "name": name or application.__name__,
            "kind": "application",
            "code": json.dumps(application.spec),
            "description": description,
        }
        body.update(_sharing(public, shared_with))
        fid = self._request("POST", "/v1/functions", body)["function_id"]
        self._kinds[fid] = "application"
        return fid

    def run_application(
        self,
        application_id: str | Application,
        inputs: dict[str, Any] | None = None,
        *,
        endpoint_id: str | None = None,
        max_retries: int | None = None,
        walltime: float | None = None,
        priority: int | None = None,
        requires: dict[str, Any] | None = None,
        retry: dict[str, Any] | None = None,
        environment: str | None = None,
    ) -> str:
        """Runs a registered application once with these inputs; returns the task id.
        The inputs are checked against the application's before anything is queued: all
        that are wrong are listed in one :class:`APIError` (``.errors``, each with the
        input's name). ``get_result`` then gives the run: ``run_dir``, ``phases`` (each
        with ``name``, ``state``, ``exit_status``, ``signal``, times and the end of its
        output), ``outputs`` (files matched: ``path``, ``bytes``) and ``inputs``; a
        failed run raises :class:`ApplicationFailed`, which carries the same.

        Given an :class:`Application` rather than an id, it is registered the first
        time this client runs it."""
        if isinstance(application_id, Application):
            application_id = self._registered(application_id)
        payload = json.dumps(inputs) if inputs else ""
        return self._submit(
            endpoint_id,
            [(application_id, payload)],
            max_retries,
            walltime,
            priority=priority,
            requires=requires,
            retry=retry,
            environment=environment,
        )[0]

    def _registered(self, application: Application) -> str:
        """The id this client registered ``application`` under, registering it once."""
        known = self._applications.get(id(application))
        if known is not None and known[0] is application:
            return known[1]
        fid = self.register_application(application)
        self._applications[id(application)] = (application, fid)  # keeps it alive: its id stays unique
        return fid

    def share_function(self, function_id: str, *, public: bool = False, shared_with: Iterable[str] = ()) -> dict:
        """Says who besides its owner may run a function (its owner only); replaces what
        was set before. Returns the function as its owner sees it."""
        return self._request("PUT", f"/v1/functions/{function_id}/sharing", _sharing(public, shared_with))

    def get_function(self, function_id: str) -> dict:
        return self._request("GET", f"/v1/functions/{function_id}")

    def _kind(self, function_id: str) -> str:
        kind = self._kinds.get(function_id)
        if kind is None:
            kind = self.get_function(function_id)["kind"]
            self._kinds[function_id] = kind
        return kind

    def _payload(self, function_id: str, args: Iterable[Any], kwargs: dict[str, Any]) -> str:
        kind = self._kind(function_id)
        if kind == "shell":
            if tuple(args):
                raise FerryError("a shell function takes keyword arguments only (they fill its {placeholders})")
            return json.dumps(kwargs) if kwargs else ""
        if kind == "application":
            if tuple(args):
                raise FerryError("an application takes its inputs as keyword arguments only")
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
        priority: int | None = None,
        requires: dict[str, Any] | None = None,
        retry: dict[str, Any] | None = None,
        environment: str | None = None,
    ) -> list[str]:
        scheduling = (priority, requires, retry, environment)
        return self._submit_session(endpoint_id, tasks, max_retries, walltime, events, *scheduling)["task_ids"]

    def _submit_session(
        self,
        endpoint_id: str,
        tasks: list[tuple[str, str]],
        max_retries: int | None,
        walltime: float | None = None,
        events: bool = False,
        priority: int | None = None,
        requires: dict[str, Any] | None = None,
        retry: dict[str, Any] | None = None,
        environment: str | None = None,
    ) -> dict:
        body = _session_body(self._endpoint(endpoint_id), tasks, max_retries, walltime)
        body["events"] = events
        body.update(_scheduling(priority, requires, retry, environment))
        return self._request("POST", "/v1/tasks", body, idempotent=True)

    def _endpoint(self, endpoint_id: str | None) -> str:
        """``endpoint_id``, else the client's default, else a clear error."""
        chosen = endpoint_id or self.endpoint_id
        if not chosen:
            raise FerryError(
                "no endpoint named: pass endpoint_id=..., set FERRY_ENDPOINT, or start one with `ferry dev`"
            )
        return str(chosen)

    def run(
        self,
        *args: Any,
        function_id: str,
        endpoint_id: str | None = None,
        max_retries: int | None = None,
        walltime: float | None = None,
        priority: int | None = None,
        requires: dict[str, Any] | None = None,
        retry: dict[str, Any] | None = None,
        environment: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Runs a registered function once on an endpoint (:attr:`endpoint_id` when
        none is named); returns the task id.

        ``max_retries``: how often the task may be retried after its worker or manager
        dies (the service's default when ``None``). ``walltime``: seconds the task may
        run before it is stopped and fails with the cause ``timeout``. ``priority``: a
        higher one runs first among the tasks waiting at the endpoint (default 0).
        ``requires``: what the node running it must have, ``{"cores": 4, "memory_gb":
        16, "gpus": 1, "tags": ["avx512"]}`` (each optional; a task no node of the
        endpoint can give fails saying why). ``retry``: which failures run it again
        (within ``max_retries``), ``{"on": ["ConnectionError"], "backoff_secs": 1,
        "max_backoff_secs": 300}``; ``on`` takes ``exception`` (any), ``exit`` (a
        command that failed) or exception type names; each retry waits twice the one
        before. ``environment``: the endpoint's task environment (its
        ``[provider.environments.<name>]``) whose Python runs it: its interpreter,
        variables and setup; default: the endpoint's own Python.
        """
        payload = self._payload(function_id, args, kwargs)
        return self._submit(
            endpoint_id,
            [(function_id, payload)],
            max_retries,
            walltime,
            priority=priority,
            requires=requires,
            retry=retry,
            environment=environment,
        )[0]

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
        priority: int | None = None,
        requires: dict[str, Any] | None = None,
        retry: dict[str, Any] | None = None,
        environment: str | None = None,
    ) -> Session:
        """Submits a batch as one session (all its tasks are accepted or none is).
        ``timeout``: seconds the whole session may take; then its unfinished tasks fail
        with the cause ``timeout``. ``priority``: its tasks' (a higher one runs first
        among the tasks waiting at the endpoint; default 0). ``requires``: what the
        nodes running them must have (see :meth:`run`)."""
        scheduling = (priority, requires, retry, environment)
        return self.submit_sessions([(endpoint_id, batch)], timeout, max_retries, walltime, *scheduling)[0]

    def submit_sessions(
        self,
        sessions: Iterable[tuple[str, Batch]],
        timeout: float | None = None,
        max_retries: int | None = None,
        walltime: float | None = None,
        priority: int | None = None,
        requires: dict[str, Any] | None = None,
        retry: dict[str, Any] | None = None,
        environment: str | None = None,
    ) -> list[Session]:
        """Submits several ``(endpoint_id, batch)`` sessions in one request; every one is
        checked before any is created."""
        extra: dict[str, Any] = {"timeout_secs": timeout, **_scheduling(priority, requires, retry, environment)}
        body = {
            "sessions": [
                {**_session_body(endpoint_id, batch.tasks, max_retries, walltime), **extra}
                for endpoint_id, batch in sessions
            ]
        }
        answer = self._request("POST", "/v1/sessions", body, idempotent=True)
        return [Session(self, s["session_id"], s["task_ids"]) for s in answer["sessions"]]

    def get_session(self, session_id: str) -> dict:
        """A session's progress: ``status``, ``pending``, ``counts`` per state, ``size``,
        ``reason`` (``timeout``/``cancelled``) when failed."""
        return self._request("GET", f"/v1/sessions/{session_id}")

    def list_sessions(self, limit: int = 50, before: float | None = None) -> dict:
        """Your sessions, newest first: ``{"sessions": [...], "next_before"}``, each as
        :meth:`get_session` gives it; pass ``next_before`` as ``before`` for the next
        (older) page."""
        query = f"?limit={int(limit)}" + (f"&before={before!r}" if before is not None else "")
        return self._request("GET", f"/v1/sessions{query}")

    def iter_session_tasks(self, session_id: str, page_size: int = 1000) -> Iterator[dict]:
        """Every task record of a session, in submission order, a page per request (a
        smaller page when a page's results are more than one answer may carry)."""
        offset: int | None = 0
        while offset is not None:
            try:
                page = self._request("GET", f"/v1/sessions/{session_id}/tasks?offset={offset}&limit={page_size}")
            except APIError as e:
                if e.http_status != 413 or page_size < 2:
                    raise
                page_size //= 2
                continue
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

    def get_tasks(
        self, task_ids: Iterable[str], history: bool = True, wait: float = 0, brief: bool = False
    ) -> dict[str, dict]:
        """Raw records of many tasks, 1,000 per request. ``history=False`` leaves each
        task's history out (empty): a cheaper read when only outcomes matter; ``brief``
        leaves out all but the outcome (``pending``, ``status``, ``result``,
        ``exception``, ``exception_data``, ``completion_t``). ``wait``: seconds to wait,
        if none of the tasks has finished yet, for one to finish."""
        ids = [str(t) for t in task_ids]
        out: dict[str, dict] = {}
        for i in range(0, len(ids), 1000):
            body = {"task_ids": ids[i : i + 1000], "history": history, "brief": brief}
            out.update(self._status(body)["tasks"])
        deadline = time.monotonic() + wait
        while ids and all(doc["pending"] for doc in out.values()):
            chunk = self._wait_chunk(deadline)
            if chunk <= 0:
                break
            # Any one task is enough: the first 1,000 stand for the rest.
            body = {"task_ids": ids[:1000], "history": history, "brief": brief, "wait_secs": round(chunk, 3)}
            out.update(self._status(body)["tasks"])
        return out

    def _status(self, body: dict) -> dict:
        """``POST /v1/tasks/status``. When the results asked for are more than one answer
        may carry (413, ``FERRY_MAX_RESPONSE_BYTES``), asks for each half apart."""
        try:
            return self._request("POST", "/v1/tasks/status", body)
        except APIError as e:
            ids = body["task_ids"]
            if e.http_status != 413 or len(ids) < 2:
                raise
        half = len(ids) // 2
        first = self._status({**body, "task_ids": ids[:half]})
        second = self._status({**body, "task_ids": ids[half:], "wait_secs": 0})
        return {
            "tasks": {**first["tasks"], **second["tasks"]},
            "unknown": first.get("unknown", []) + second.get("unknown", []),
        }

    def _wait_chunk(self, deadline: float) -> float:
        """How long the next long poll may wait: what is left, within the service's
        limit (60 s) and well within this client's socket timeout."""
        left = deadline - time.monotonic()
        return max(0.0, min(left, 50.0, self.timeout * 0.8))

    def get_batch_result(self, task_ids: Iterable[str]) -> dict[str, dict]:
        """For each task: ``pending``, ``status``, and once finished ``result`` (the
        value) or ``exception`` (the exception object), and ``completion_t``."""
        docs = self.get_tasks(task_ids, history=False, brief=True)
        return {tid: _entry(doc, tid) for tid, doc in docs.items()}

    def get_batch(self, batch_id: str) -> dict:
        return self._request("GET", f"/v1/batches/{batch_id}")

    # ---- endpoints ----------------------------------------------------------------

    def get_endpoint_status(self, endpoint_id: str) -> dict:
        """``status`` (``online``/``offline``), ``last_heartbeat`` and load ``details``."""
        return self._request("GET", f"/v1/endpoints/{endpoint_id}")

    def list_endpoints(self) -> list[dict]:
        return self._request("GET", "/v1/endpoints")


def _scheduling(
    priority: int | None,
    requires: dict[str, Any] | None,
    retry: dict[str, Any] | None,
    environment: str | None,
) -> dict[str, Any]:
    """The scheduling options of a session or task that are set, as the API names them."""
    options = {"priority": priority, "requires": requires, "retry": retry, "environment": environment}
    return {k: v for k, v in options.items() if v is not None}


def _retry_after(response: http.client.HTTPResponse) -> float:
    try:
        return max(0.05, float(response.getheader("Retry-After", "1")))
    except ValueError:
        return 1.0


def _sharing(public: bool, shared_with: Iterable[str]) -> dict:
    if isinstance(shared_with, str):
        raise FerryError("shared_with takes a list of user ids, not one string")
    return {"public": bool(public), "shared_with": [str(u) for u in shared_with]}


def _session_body(
    endpoint_id: str, tasks: list[tuple[str, str]], max_retries: int | None, walltime: float | None
) -> dict:
    """The JSON of one submission (`POST /v1/tasks`, or one of `POST /v1/sessions`)."""
    if max_retries is None and walltime is None:
        # The common case: absent fields take their defaults, and ten thousand tasks'
        # worth of nulls are neither written nor parsed.
        listed = [{"function_id": f, "payload": p} for f, p in tasks]
    else:
        listed = [
            {"function_id": f, "payload": p, "max_retries": max_retries, "walltime_secs": walltime} for f, p in tasks
        ]
    return {"endpoint_id": str(endpoint_id), "tasks": listed}


def ferry_home() -> str:
    """Ferry's home: ``$FERRY_HOME``, else ``~/.ferry``."""
    return os.environ.get("FERRY_HOME") or os.path.join(os.path.expanduser("~"), ".ferry")


def _saved_client() -> dict:
    """``client.json`` in Ferry's home (written by ``ferry dev``), or nothing."""
    path = os.path.join(ferry_home(), "client.json")
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise FerryError(f"cannot read {path}: {e}") from None
    if not isinstance(saved, dict):
        raise FerryError(f"{path} must hold a JSON object with url, token and endpoint_id")
    return saved
