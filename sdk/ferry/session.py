"""A batch submitted as one session, tracked as a whole (:meth:`Client.submit_session`)."""

from __future__ import annotations

import collections
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, TextIO

from .errors import FerryError
from .results import _entry

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Session", "Outcome"]


class Outcome:
    """A finished task's outcome, read like a done ``concurrent.futures.Future``:
    :meth:`result` returns the value or raises the task's exception; :meth:`exception`
    returns the exception or ``None``."""

    __slots__ = ("task_id", "status", "_value", "_exception")

    def __init__(self, task_id: str, entry: dict) -> None:
        self.task_id = task_id
        self.status = entry["status"]
        self._value = entry.get("result")
        self._exception: BaseException | None = entry.get("exception")
        if entry.get("pending"):
            self._exception = FerryError(f"task {task_id} has not finished ({self.status})")

    @property
    def ok(self) -> bool:
        return self._exception is None

    def result(self) -> Any:
        if self._exception is not None:
            raise self._exception
        return self._value

    def exception(self) -> BaseException | None:
        return self._exception

    def __repr__(self) -> str:
        return f"Outcome({self.task_id!r}, {self.status!r})"


class _ProgressLine:
    """One line on ``out`` saying how far a session is: rewritten in place on a
    terminal, else printed again at most every ``every`` seconds (logs, notebooks'
    files), and once more at the end."""

    def __init__(self, session_id: str, out: TextIO, every: float = 10.0) -> None:
        self.session_id = session_id
        self.out = out
        self.tty = out.isatty()
        self.every = every
        self.started = time.monotonic()
        self.last_printed = 0.0

    def __call__(self, doc: dict) -> None:
        counts = doc.get("counts", {})
        size = doc.get("size") or 0
        ok, failed = counts.get("success", 0), counts.get("failed", 0)
        done = ok + failed
        elapsed = max(time.monotonic() - self.started, 1e-9)
        percent = 100 * done // size if size else 100
        line = (
            f"session {self.session_id}: {done:,}/{size:,} done ({ok:,} ok, {failed:,} failed) "
            f"{percent}% {done / elapsed:,.0f} tasks/s"
        )
        finished = not doc.get("pending", True)
        now = time.monotonic()
        if self.tty:
            self.out.write("\r\033[K" + line + ("\n" if finished else ""))
            self.out.flush()
        elif finished or now - self.last_printed >= self.every:
            self.last_printed = now
            self.out.write(line + "\n")
            self.out.flush()


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
        progress: Callable[[dict], None] | bool | None = None,
        interval: float = 0.2,
    ) -> dict:
        """Waits until every task is terminal and returns the final status.
        ``progress=True`` draws one line on stderr (rewritten in place on a terminal:
        done/size, ok and failed, percent, tasks/s); a callable is called with the
        status after each poll instead. Raises :class:`TimeoutError` after ``timeout``
        seconds."""
        if progress is True:
            progress = _ProgressLine(self.id, sys.stderr)
        elif progress is False:
            progress = None
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

    def outcomes(self, page_size: int = 1000) -> Iterator[Outcome]:
        """An :class:`Outcome` for every task in submission order: ``o.result()`` is
        the value or raises the task's exception (a cancelled task's too), as a done
        future's would."""
        for task_id, entry in self.results(page_size):
            yield Outcome(task_id, entry)

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
            body = {"task_ids": head, "history": False, "brief": True, "wait_secs": round(wait, 3)}
            docs = self.client._status(body)["tasks"]
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
                    yield tid, _entry(doc, tid)
            pending.extendleft(reversed(unfinished))
            pending.rotate(skip)
            skip = 0 if len(unfinished) < len(head) else skip + len(head)

    def cancel(self) -> int:
        """Cancels every unfinished task (running ones are stopped); returns how many."""
        return self.client.cancel_session(self.id)
