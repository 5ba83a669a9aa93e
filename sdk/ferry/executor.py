"""A :class:`concurrent.futures.Executor` that runs calls on a Ferry endpoint.

>>> from ferry import Client, Executor                             # doctest: +SKIP
>>> with Executor(endpoint_id=EP, client=Client()) as ex:          # doctest: +SKIP
...     print(ex.submit(pow, 2, 10).result())
1024
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
import time
from typing import Any, Callable

from .client import Client, ShellFunction, exception_of
from .errors import FerryError
from .serialize import deserialize_data

__all__ = ["Executor"]

_STOP = object()


class Executor(cf.Executor):
    """Runs ``fn(*args, **kwargs)`` on ``endpoint_id``.

    Each callable is registered once. A submitter thread sends whatever is queued in one
    request (up to ``batch_size`` tasks) as soon as it wakes, so single calls go out at
    once and bursts go out together; a poller thread asks for the status of every
    outstanding task in one request, quickly after a submit and less often while nothing
    finishes.
    """

    def __init__(
        self,
        endpoint_id: str,
        client: Client | None = None,
        batch_size: int = 256,
        max_retries: int | None = None,
        walltime: float | None = None,
    ) -> None:
        self.endpoint_id = str(endpoint_id)
        self.client = client or Client()
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.walltime = walltime
        self._functions: dict[int, tuple[Any, str]] = {}
        self._register_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._outstanding: dict[str, cf.Future] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._shutdown = False
        self._submitter = threading.Thread(target=self._submit_loop, name="ferry-submitter", daemon=True)
        self._poller = threading.Thread(target=self._poll_loop, name="ferry-poller", daemon=True)
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
                ids = self.client._submit(
                    self.endpoint_id, [(f, p) for f, p, _ in live], self.max_retries, self.walltime
                )
            except BaseException as e:  # noqa: BLE001 - fail the futures, keep the thread
                for _, _, future in live:
                    future.set_exception(e)
                continue
            with self._lock:
                for task_id, (_, _, future) in zip(ids, live):
                    self._outstanding[task_id] = future
            self._wake.set()

    def _poll_loop(self) -> None:
        interval = 0.002
        while True:
            self._wake.wait(timeout=interval)
            woken = self._wake.is_set()
            self._wake.clear()
            with self._lock:
                ids = list(self._outstanding)
            if not ids:
                if self._shutdown and self._queue.empty():
                    return
                interval = 0.2
                continue
            try:
                docs = self.client.get_tasks(ids)
            except Exception:  # noqa: BLE001 - the service may be restarting; keep trying
                interval = min(max(interval * 2, 0.05), 1.0)
                continue
            finished = 0
            for task_id, doc in docs.items():
                if doc["pending"]:
                    continue
                with self._lock:
                    future = self._outstanding.pop(task_id, None)
                if future is None:
                    continue
                finished += 1
                try:
                    if doc["status"] == "success":
                        future.set_result(deserialize_data(doc["result"]))
                    else:
                        future.set_exception(exception_of(doc))
                except BaseException as e:  # noqa: BLE001 - e.g. a result that cannot be read here
                    future.set_exception(FerryError(f"cannot read the result of task {task_id}: {e}"))
            if finished or woken:
                interval = 0.002
            else:
                interval = min(interval * 1.5, 0.2)

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
