"""A :class:`concurrent.futures.Executor` that runs calls on a Ferry endpoint.

>>> from ferry import Client, Executor                             # doctest: +SKIP
>>> with Executor(endpoint_id=EP, client=Client()) as ex:          # doctest: +SKIP
...     print(ex.submit(pow, 2, 10).result())
1024
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import queue
import threading
import time
from typing import Any, Callable

from .client import Client, ShellFunction
from .results import exception_of
from .errors import FerryError
from .serialize import deserialize_data

__all__ = ["Executor"]


def _websockets_available() -> bool:
    try:
        import websockets.sync.client  # noqa: F401
    except ImportError:
        return False
    return True

_STOP = object()


class Executor(cf.Executor):
    """Runs ``fn(*args, **kwargs)`` on ``endpoint_id`` (default: the client's, see
    :class:`~ferry.Client`, so ``Executor()`` alone uses the endpoint ``ferry dev`` runs).

    Each callable is registered once. A submitter thread sends whatever is queued in one
    request (up to ``batch_size`` tasks) as soon as it wakes, so single calls go out at
    once and bursts go out together. Results come back over one WebSocket
    (``/v1/ws``): each request is a session whose steps the service pushes as they
    happen, and a dropped connection resumes from the last event seen. Without the
    ``websockets`` package, or with ``use_websocket=False``, a poller thread asks for the
    status of every outstanding task instead.

    ``priority``, ``requires``, ``retry`` and ``environment`` apply to every task it
    submits, as for :meth:`~ferry.Client.run` (docs/scheduling.md).
    """

    def __init__(
        self,
        endpoint_id: str | None = None,
        client: Client | None = None,
        batch_size: int = 256,
        max_retries: int | None = None,
        walltime: float | None = None,
        use_websocket: bool = True,
        *,
        priority: int | None = None,
        requires: dict[str, Any] | None = None,
        retry: dict[str, Any] | None = None,
        environment: str | None = None,
    ) -> None:
        self.client = client or Client()
        # None: the client's endpoint ($FERRY_ENDPOINT, or the one `ferry dev` runs).
        self.endpoint_id = self.client._endpoint(endpoint_id)
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.walltime = walltime
        self.scheduling = (priority, requires, retry, environment)
        self._functions: dict[int, tuple[Any, str]] = {}
        self._register_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._outstanding: dict[str, cf.Future] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._shutdown = False
        # Sessions with unfinished tasks, and the last event cursor seen of each.
        self._sessions: dict[str, str] = {}
        self._new_sessions: queue.Queue = queue.Queue()
        self._submitter = threading.Thread(target=self._submit_loop, name="ferry-submitter", daemon=True)
        self.use_websocket = use_websocket and _websockets_available()
        target = self._listen_loop if self.use_websocket else self._poll_loop
        self._poller = threading.Thread(target=target, name="ferry-results", daemon=True)
        self._submitter.start()
        self._poller.start()

    def _function_id(self, fn: Any) -> str:
        key = id(fn)
        with self._register_lock:
            known = self._functions.get(key)
            if known is not None and known[0] is fn:
                return known[1]
            fid = self.client.register_function(fn)
            self._functions[key] = (fn, fid)  # keeps fn alive, so its id stays unique
            return fid

    def submit(self, fn: Callable[..., Any] | ShellFunction, /, *args: Any, **kwargs: Any) -> cf.Future:
        """Schedules ``fn(*args, **kwargs)`` on the endpoint."""
        return self.submit_to_registered_function(self._function_id(fn), args, kwargs)

    def submit_to_registered_function(
        self, function_id: str, args: tuple = (), kwargs: dict | None = None
    ) -> cf.Future:
        """Schedules a call of an already registered function."""
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        payload = self.client._payload(function_id, args, kwargs or {})
        future: cf.Future = cf.Future()
        self._queue.put((function_id, payload, future))
        return future

    def _submit_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            items = [item]
            while len(items) < self.batch_size:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._queue.put(_STOP)
                    break
                items.append(more)
            live = [i for i in items if i[2].set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                answer = self.client._submit_session(
                    self.endpoint_id,
                    [(f, p) for f, p, _ in live],
                    self.max_retries,
                    self.walltime,
                    self.use_websocket,
                    *self.scheduling,
                )
            except BaseException as e:  # noqa: BLE001 - fail the futures, keep the thread
                for _, _, future in live:
                    future.set_exception(e)
                continue
            with self._lock:
                for task_id, (_, _, future) in zip(answer["task_ids"], live):
                    self._outstanding[task_id] = future
                self._sessions[answer["batch_id"]] = "0"
            self._new_sessions.put(answer["batch_id"])
            self._wake.set()

    def _finish(self, task_id: str, doc: dict) -> bool:
        with self._lock:
            future = self._outstanding.pop(task_id, None)
        if future is None:
            return False
        try:
            if doc["status"] == "success":
                future.set_result(deserialize_data(doc["result"]))
            else:
                future.set_exception(exception_of(doc))
        except BaseException as e:  # noqa: BLE001 - e.g. a result that cannot be read here
            future.set_exception(FerryError(f"cannot read the result of task {task_id}: {e}"))
        return True

    def _listen_loop(self) -> None:
        """Completes futures from the WebSocket's events; reconnects (resuming after the
        last cursor of each session) when the connection drops."""
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        url = self.client.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/v1/ws"
        headers = {"Authorization": f"Bearer {self.client.token}"} if self.client.token else {}
        backoff = 0.1
        while True:
            if self._done():
                return
            try:
                tls = {"ssl": self.client.ssl_context} if url.startswith("wss://") else {}
                with connect(url, additional_headers=headers, open_timeout=10, max_size=None, **tls) as ws:
                    backoff = 0.1
                    with self._lock:
                        resume = dict(self._sessions)
                    if resume:
                        ws.send(json.dumps({"op": "subscribe", "sessions": list(resume), "after": resume}))
                    while not self._done():
                        while True:
                            try:
                                session = self._new_sessions.get_nowait()
                            except queue.Empty:
                                break
                            if session not in resume:
                                ws.send(json.dumps({"op": "subscribe", "sessions": [session]}))
                                resume[session] = "0"
                        try:
                            raw = ws.recv(timeout=0.05)
                        except TimeoutError:
                            continue
                        self._on_message(json.loads(raw))
            except (OSError, ConnectionClosed, TimeoutError):
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _on_message(self, m: dict) -> None:
        kind = m.get("type")
        if kind == "event":
            with self._lock:
                if m["session"] in self._sessions:
                    self._sessions[m["session"]] = m["cursor"]
            if m["state"] in ("success", "failed") and "task" in m:
                self._finish(m["task_id"], m["task"])
        elif kind == "session" and not m.get("pending", True):
            with self._lock:
                self._sessions.pop(m["session_id"], None)

    def _done(self) -> bool:
        with self._lock:
            idle = not self._outstanding
        return idle and self._shutdown and self._queue.empty() and not self._submitter.is_alive()

    def _poll_loop(self) -> None:
        backoff = 0.05
        while True:
            with self._lock:
                ids = list(self._outstanding)
            if not ids:
                if self._shutdown and self._queue.empty():
                    return
                self._wake.wait(timeout=0.2)
                self._wake.clear()
                continue
            self._wake.clear()
            try:
                # A long poll: answered as soon as one of them finishes, and within
                # 0.2 s, so that tasks submitted meanwhile are soon asked about too.
                docs = self.client.get_tasks(ids, history=False, wait=0.2)
            except Exception:  # noqa: BLE001 - the service may be restarting; keep trying
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            for task_id, doc in docs.items():
                if not doc["pending"]:
                    self._finish(task_id, doc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops taking work. With ``wait``, returns once every submitted task is done."""
        self._shutdown = True
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    item[2].cancel()
        self._queue.put(_STOP)
        self._wake.set()
        if wait:
            self._submitter.join()
            self._poller.join()
