"""The warm Python host a Ferry worker keeps: ``python -m ferry.host``.

It reads tasks from its stdin and writes results to its stdout, framed (a 4-byte
big-endian length, then the body), and keeps every function it was sent deserialized,
so a task costs one call. The worker (Rust) drives it; see ``crates/worker/src/host.rs``
for the frame layout. The function's own prints are captured, and nothing the function
does to file descriptor 1 can corrupt the protocol: the host moves the protocol off fd 1
before running anything, and points fds 1 and 2 at files of its own, whose content
(direct writes, a subprocess's output) becomes the task's stdout and stderr.

Tasks queued behind a long one can be taken back. The worker passes a socket
(``FERRY_HOST_CONTROL_FD``); it writes there ``(first, upto)``, two big-endian u64
sequence numbers of tasks it sent (counted from 1 in the order sent), and signals the
host (``SIGURG``). The handler runs on the host's main thread between two bytecodes
(of the running task, or of the host's loop): it marks every task from ``first`` to
``upto`` that has not begun as withdrawn and answers ``(lo, upto)``, the first one it
took; the host skips those (loading their function, if they carry one) without an
answer. Exactly one side has each task: the worker gives back the ones answered
withdrawn and waits for the others' results.

A task's processes end with the task. The host is a child subreaper: a process a task
orphans (a double fork, or the exit of the parent of one that left its session) is
reparented to the host, not to init. After each task, before it answers and runs the
next one, the host kills (SIGKILL) and reaps every child it has (a background
``subprocess.Popen``, ``start_new_session=True`` or not, a daemon, a
``multiprocessing`` helper) and says so in the task's stderr; the host itself goes on.
"""

from __future__ import annotations

import _signal
import io
import json
import os
import select
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
import uuid
from typing import Any, Callable, BinaryIO

from .serialize import deserialize_function, serialize_data, serialize_data_bytes, unpack_args

_LEN = struct.Struct(">I")
_DONE_HEAD = struct.Struct(">c16sBdd")
# A success with no output, in one piece: frame length, head, the data's length; then
# the data and three empty fields (exception data, stdout, stderr).
_OK_HEAD = struct.Struct(">Ic16sBddI")
_OK_FIXED = _OK_HEAD.size - 4 + 12
_NO_FIELDS = bytes(12)
# How long the answers of a batch's finished tasks may wait while a later task of it
# runs: after this, the answer timer (SIGALRM) writes them.
ANSWER_LATENCY = 0.005

# A withdrawal: the first and last sequence numbers asked for, then taken.
_WITHDRAW = struct.Struct(">QQ")
WITHDRAW_SIGNAL = signal.SIGURG
MAX_OUTPUT = 1024 * 1024
# How long a task that forked waits for word that a child came back into the host.
FORK_GRACE = 0.2
FORKED_CHILD_RETURNED = (
    "the function forked (os.fork) and the child process returned from it into Ferry's "
    "host instead of ending; the child was stopped and its value dropped. End a forked "
    "child with os._exit(), or use subprocess or multiprocessing"
)


# prctl(2) options: the signal the host gets when its parent (the worker) dies; processes
# orphaned below the host are reparented to it, not to init.
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
# How long ending a task's leftover processes may take (one stuck in the kernel resists).
LEFTOVERS_WITHIN = 2.0


def _handler(signum: int) -> Any:
    """The signal's handler as installed (`_signal.getsignal`): what `signal.getsignal`
    returns without wrapping the default ones in an enum, which cost more than the rest
    of a no-op task's bookkeeping. Only compared with the host's own handlers."""
    return _signal.getsignal(signum)


def _become_subreaper() -> bool:
    """Makes this process a child subreaper (Linux), so that a task's processes that
    leave its session or double-fork stay the host's children. False where it cannot."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _die_with_worker() -> None:
    """The host is killed (SIGKILL) the moment the worker that started it dies: the
    worker sends tasks ahead, and a host running them on after its worker's death would
    run tasks that the manager, which never heard they started, runs again elsewhere.
    The worker names itself in FERRY_HOST_PARENT, so a worker that died before the death
    signal was set is noticed too."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    parent = os.environ.get("FERRY_HOST_PARENT", "")
    if parent.isdigit() and os.getppid() != int(parent):
        os._exit(1)


def _children() -> list[int]:
    """The host's children, from /proc/self/task/*/children (one list per thread)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                found.extend(int(pid) for pid in f.read().split())
        except OSError:
            continue
    return found


class _Children:
    """Whether the host has a child, cheaply (about a microsecond): the main thread's
    /proc children list, kept open and read again from its start, is where the
    processes a task starts from Python's main thread land, and where orphans are
    reparented; with other threads running, every thread's list is read."""

    def __init__(self) -> None:
        try:
            self.fd: int | None = os.open(f"/proc/self/task/{os.getpid()}/children", os.O_RDONLY)
        except OSError:
            self.fd = None

    def any(self) -> bool:
        if self.fd is None:
            return False
        if os.pread(self.fd, 64, 0):
            return True
        return threading.active_count() > 1 and bool(_children())


def end_leftovers() -> int:
    """Kills (SIGKILL) and reaps every process a task left below the host, round after
    round: a killed process's own children are reparented to the host (a subreaper),
    and a process may fork as it is killed. Returns how many were still running."""
    running: set[int] = set()
    deadline = time.monotonic() + LEFTOVERS_WITHIN
    pause = 0.001
    while True:
        children = _children()
        if not children or time.monotonic() >= deadline:
            return len(running)
        for pid in children:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    continue  # it had ended: reaped, nothing to stop
                os.kill(pid, signal.SIGKILL)
            except (ChildProcessError, ProcessLookupError):
                continue
            running.add(pid)
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
        for pid in children:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


class _Capped(io.StringIO):
    """A StringIO that keeps the first MAX_OUTPUT characters."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def write(self, s: str) -> int:
        room = MAX_OUTPUT - self.tell()
        if room <= 0:
            self.dropped += len(s)
            return len(s)
        if len(s) > room:
            self.dropped += len(s) - room
            super().write(s[:room])
        else:
            super().write(s)
        return len(s)

    def text(self) -> str:
        value = self.getvalue()
        if self.dropped:
            value += f"\n[ferry: {self.dropped} more characters dropped]\n"
        return value


def _field(buf: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = _LEN.unpack_from(buf, pos)
    pos += 4
    if pos + n > len(buf):
        raise ValueError("truncated field")
    return buf[pos : pos + n], pos + n


def _user_traceback(exc: BaseException) -> str:
    tb = exc.__traceback__
    # Drop the host's own frame (the call site) so the user sees their code only.
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _exception_data(exc: BaseException) -> bytes:
    try:
        return serialize_data(exc).encode()
    except Exception:  # noqa: BLE001 - some exceptions cannot be pickled
        return b""


class _TaskEnv:
    """Puts the running task's ``GC_TASK_UUID`` and ``GC_TASK_SANDBOX_DIR`` in the
    environment, for Python (``os.environ``) and for the processes a task starts, at
    about a microsecond a task. ``os.environ[...] = ...`` would call setenv(3), and glibc
    keeps every value setenv was ever given (a leak of ~150 bytes a task, and a lookup
    that slows as they pile up: 16 µs a task after 100,000). Instead each variable is a
    buffer of the host's own, put in the C environment once with putenv(3) (which keeps
    the pointer, no copy), and rewritten in place per task: a task id is always 36
    characters. ``os.environ``'s own mapping is updated directly. If a task set either
    variable itself, the buffers go back in at the next task."""

    UUID, SANDBOX = b"GC_TASK_UUID", b"GC_TASK_SANDBOX_DIR"

    def __init__(self, root: str) -> None:
        self.root = root
        self.broot = os.fsencode(root)
        self.values: tuple[bytes | None, bytes | None] = (None, None)
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            putenv = libc.putenv
            putenv.argtypes = [ctypes.c_char_p]
            data = os.environ._data  # type: ignore[attr-defined]
        except (OSError, AttributeError):
            self.putenv = None
            return
        blank = b"0" * 36
        self.putenv, self.data = putenv, data
        self.bufs = (
            ctypes.create_string_buffer(self.UUID + b"=" + blank),
            ctypes.create_string_buffer(self.SANDBOX + b"=" + self.broot + blank),
        )
        # Writable views of where the id goes in each (a slice assignment is a memcpy).
        start = (len(self.UUID) + 1, len(self.SANDBOX) + 1 + len(self.broot))
        self.slots = tuple(memoryview(buf).cast("B")[at : at + 36] for buf, at in zip(self.bufs, start))
        self._put()

    def _put(self) -> None:
        for buf in self.bufs:
            self.putenv(buf)

    def set(self, tid: str) -> str:
        """Sets both for task ``tid`` (36 characters); returns the sandbox's path."""
        sandbox = self.root + tid
        if self.putenv is None or len(tid) != 36:
            os.environ["GC_TASK_UUID"] = tid
            os.environ["GC_TASK_SANDBOX_DIR"] = sandbox
            return sandbox
        b = tid.encode()
        data = self.data
        if data.get(self.UUID) is not self.values[0] or data.get(self.SANDBOX) is not self.values[1]:
            self._put()  # a task set or removed one: ours go back in
        self.slots[0][:] = b
        self.slots[1][:] = b
        values = (b, self.broot + b)
        data[self.UUID], data[self.SANDBOX] = values
        self.values = values
        return sandbox


def _finish_run_dir(root: str, name: str) -> None:
    """A task's run directory, once the task is done: removed if empty, else marked for
    the manager's sweep after the endpoint's ``keep_run_dirs`` (see the
    ``ferry-rundir`` crate, which this mirrors)."""
    try:
        os.rmdir(root + name)
    except FileNotFoundError:
        pass
    except OSError:
        try:
            open(os.path.join(root, ".done", name), "wb").close()
        except OSError as e:
            print(f"ferry host: cannot mark the run directory {root + name} done (it stays): {e}", file=sys.stderr)


class Host:
    """Runs the tasks framed on ``proto_in`` (a file descriptor) and answers on
    ``proto_out``. Every complete frame already read is run before the answers are
    written, in one write: a worker that sends many tasks at once gets their answers
    in few writes, and a lone task is answered the moment it is done. Answers do not
    wait behind a long task: once a task has run ``ANSWER_LATENCY``, a timer
    (``SIGALRM``) writes those of the tasks before it."""

    def __init__(self, proto_in: int, proto_out: BinaryIO, raw: tuple[int, int] | None = None) -> None:
        self.proto_in = proto_in
        self.proto_out = proto_out
        # Files behind fds 1 and 2, where a task's writes below Python's sys.stdout and
        # sys.stderr land (os.write, C code, subprocesses that inherit them): read into
        # the task's output after it, then emptied.
        self.raw = raw
        self.functions: dict[bytes, Callable[..., Any]] = {}
        # Answers not yet written: all of a batch's go in one write when the batch is
        # done, and, so that none waits behind a long task, a timer (SIGALRM, armed
        # only while a task runs with answers waiting) writes them once it has run
        # ANSWER_LATENCY. (A thread that did it tripled the host's CPU per task.)
        self.pending: list[bytes] = []
        self.flushing = False
        self.on_alarm = None
        if signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None):
            self.on_alarm = self._answer_now
            signal.signal(signal.SIGALRM, self.on_alarm)
        self.out, self.err = _Capped(), _Capped()
        # A child forked by a function that returns into the host must not go on as a
        # second host (it would answer for the task, then run the tasks behind it): it
        # tells the parent through this pipe and ends at once.
        self.pid = os.getpid()
        self.forks = 0
        self.fork_r, self.fork_w = os.pipe()
        os.set_blocking(self.fork_r, False)
        os.register_at_fork(after_in_parent=self._forked)
        self.children = _Children()
        # Run directories (FERRY_RUN_ROOT, from the worker): each task is told its own,
        # `<root>/<task id>`, in GC_TASK_SANDBOX_DIR (and its id in GC_TASK_UUID), and the
        # directory is made only when the task asks for it (`ferry.run_dir()`, Globus
        # Compute's ShellFunction): making and removing one costs ~100 µs on ext4. Tasks
        # start in the host's own working directory, which the worker made for it.
        root = os.environ.get("FERRY_RUN_ROOT")
        self.run_root = os.path.join(root, "") if root else None
        self.home_fd = os.open(".", os.O_RDONLY) if root else -1
        # The root, open: whether a task's directory exists is then asked of one name
        # in it (faccessat), not of the whole path.
        self.root_fd = -1
        if root:
            try:
                self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                pass
        self.task_env = _TaskEnv(self.run_root) if self.run_root is not None else None
        # The endpoint's `python_run_dirs = "per-task"`: every task's directory is made
        # before it runs, and the task starts in it.
        self.per_task = self.task_env is not None and os.environ.get("FERRY_PYTHON_RUN_DIRS") == "per-task"

        # Tasks begun (their frames taken from the input, run or skipped), and those of
        # the sequence numbers withdrawn by the worker that have not come yet.
        self.seq = 0
        self.withdrawn: set[int] = set()
        self.control = -1
        self.control_buf = b""
        control = os.environ.get("FERRY_HOST_CONTROL_FD")
        if control:
            self.control = int(control)
            os.set_inheritable(self.control, False)
            os.set_blocking(self.control, False)
            # Not restarted by the kernel: a system call the signal interrupts returns to
            # Python, which runs the handler and then retries the call (PEP 475).
            self.on_withdraw = self._withdraw
            signal.signal(WITHDRAW_SIGNAL, self.on_withdraw)

    def _withdraw(self, _signum: int, _frame: Any) -> None:
        """The worker asks for tasks back (see the module's doc). Runs between two
        bytecodes of the main thread, so ``self.seq`` cannot move under it."""
        while True:
            try:
                data = os.read(self.control, 4096)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            self.control_buf += data
            while len(self.control_buf) >= _WITHDRAW.size:
                first, upto = _WITHDRAW.unpack_from(self.control_buf)
                self.control_buf = self.control_buf[_WITHDRAW.size :]
                lo = max(first, self.seq + 1)
                self.withdrawn.update(range(lo, upto + 1))
                os.write(self.control, _WITHDRAW.pack(lo, upto))

    def _skip(self, body: bytes) -> None:
        """A withdrawn task: its function is kept (later tasks come without it)."""
        function_id = body[17:33]
        try:
            code, _ = _field(body, 33)
            if code:
                self.functions[function_id] = deserialize_function(code.decode("utf-8"))
        except Exception:  # noqa: BLE001 - the task that runs next says what is wrong
            pass

    def _forked(self) -> None:
        self.forks += 1

    def _child_came_back(self, task_id: bytes) -> None:
        """In a forked child that returned from the function: tell the parent, end."""
        try:
            os.write(self.fork_w, task_id)
        finally:
            os._exit(70)

    def _a_child_came_back(self, task_id: bytes) -> bool:
        """Whether a child forked during this task came back into the host (waiting
        FORK_GRACE for its word, as it may come back after the parent)."""
        came_back = False
        ready, _, _ = select.select([self.fork_r], [], [], FORK_GRACE)
        if ready:
            try:
                data = os.read(self.fork_r, 1 << 12)
            except BlockingIOError:
                data = b""
            came_back = any(data[i : i + 16] == task_id for i in range(0, len(data) - 15, 16))
        return came_back

    def capture(self) -> tuple[_Capped, _Capped]:
        """The task's stdout and stderr buffers: the host's own, emptied (most tasks
        print nothing, so they are reused rather than made anew)."""
        for buf in (self.out, self.err):
            if buf.tell() or buf.dropped:
                buf.seek(0)
                buf.truncate()
                buf.dropped = 0
        return self.out, self.err

    def take_raw(self) -> tuple[str, str]:
        """What the task wrote to fds 1 and 2 directly (each cut at MAX_OUTPUT)."""
        if self.raw is None:
            return "", ""
        texts = []
        for fd in self.raw:
            # The size, from the end (a quarter of an fstat's cost: no stat object);
            # the offset it leaves is set back to 0 below, or is 0 already.
            size = os.lseek(fd, 0, os.SEEK_END)
            if not size:
                texts.append("")
                continue
            data = os.pread(fd, min(size, MAX_OUTPUT), 0)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            text = data.decode("utf-8", "replace")
            if size > MAX_OUTPUT:
                text += f"\n[ferry: {size - MAX_OUTPUT} more bytes dropped]\n"
            texts.append(text)
        return texts[0], texts[1]

    def send(self, body: bytes) -> None:
        self.pending.append(_LEN.pack(len(body)))
        self.pending.append(body)

    def flush(self) -> None:
        if self.pending and not self.flushing:
            self.flushing = True
            try:
                data = b"".join(self.pending)
                self.pending.clear()
                self.proto_out.write(data)
                self.proto_out.flush()
            finally:
                self.flushing = False

    def _answer_now(self, _signum: int, _frame: Any) -> None:
        """The running task has run ANSWER_LATENCY with answers of the tasks before it
        waiting: they go now, so the worker knows they ended (and which task runs, for
        its walltime). Runs between two bytecodes of the task, which must not see an
        error of it: a broken pipe shows at the host's own next write."""
        try:
            self.flush()
        except OSError:
            pass

    def _arm(self, armed: bool) -> bool:
        """Whether the answer timer runs after this point of a batch: armed (every
        ANSWER_LATENCY) once answers wait, disarmed when a task took SIGALRM for its own
        (its handler must not get the host's alarms). Two system calls a batch, none
        for a batch of one task."""
        if self.on_alarm is None:
            return False
        ours = _handler(signal.SIGALRM) is self.on_alarm
        if not armed and self.pending and ours:
            signal.setitimer(signal.ITIMER_REAL, ANSWER_LATENCY, ANSWER_LATENCY)
            return True
        if armed and not ours:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return False
        return armed

    def done(self, task_id: bytes, ok: bool, started: float, data: bytes, exc: bytes, out: str, err: str) -> None:
        parts = [_DONE_HEAD.pack(b"D", task_id, 0 if ok else 1, started, time.time())]
        for field in (data, exc, out.encode("utf-8", "replace"), err.encode("utf-8", "replace")):
            parts.append(_LEN.pack(len(field)))
            parts.append(field)
        self.send(b"".join(parts))

    def ok(self, task_id: bytes, started: float, data: bytes) -> None:
        """`done` for a success that printed nothing (most tasks), in fewer steps."""
        self.pending.append(_OK_HEAD.pack(_OK_FIXED + len(data), b"D", task_id, 0, started, time.time(), len(data)))
        self.pending.append(data)
        self.pending.append(_NO_FIELDS)

    def run_task(self, body: bytes) -> None:
        task_id = body[1:17]
        function_id = body[17:33]
        started = time.time()
        try:
            code, pos = _field(body, 33)
            payload, _ = _field(body, pos)
        except (ValueError, struct.error):
            tid = uuid.UUID(bytes=task_id)
            self.done(task_id, False, started, f"malformed task frame for task {tid}".encode(), b"", "", "")
            return
        fn = self.functions.get(function_id)
        if code:
            try:
                fn = deserialize_function(code.decode("utf-8"))
            except Exception as e:  # noqa: BLE001
                msg = f"could not deserialize the function of task {uuid.UUID(bytes=task_id)}: {e}"
                self.done(task_id, False, started, msg.encode(), b"", "", "")
                return
            self.functions[function_id] = fn
        if fn is None:
            msg = f"ferry host: function {uuid.UUID(bytes=function_id)} is not loaded"
            self.done(task_id, False, started, msg.encode(), b"", "", "")
            return
        try:
            args, kwargs = unpack_args(payload)
        except Exception as e:  # noqa: BLE001
            msg = f"could not deserialize the arguments of task {uuid.UUID(bytes=task_id)}: {e}"
            self.done(task_id, False, started, msg.encode(), b"", "", "")
            return
        out, err = self.capture()
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        self.forks = 0
        failure: BaseException | None = None
        if self.task_env is not None:
            h = task_id.hex()
            tid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
            sandbox = self.task_env.set(tid)
            if self.per_task:
                try:
                    os.makedirs(sandbox, exist_ok=True)
                    os.chdir(sandbox)
                except OSError as e:
                    print(f"ferry host: task {tid} runs in the worker's directory: {e}", file=sys.stderr)
        try:
            value = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - SystemExit and friends fail the task, not the host
            failure = e
        if os.getpid() != self.pid:
            self._child_came_back(task_id)
        sys.stdout, sys.stderr = saved
        if self.task_env is not None:
            # The next task starts where this one did, wherever this one went.
            os.fchdir(self.home_fd)
            if os.access(tid, os.F_OK, dir_fd=self.root_fd) if self.root_fd >= 0 else os.access(sandbox, os.F_OK):
                _finish_run_dir(self.run_root, tid)
        came_back = bool(self.forks) and self._a_child_came_back(task_id)
        # A task's processes end with the task, before the next one starts.
        left = end_leftovers() if self.children.any() else 0
        raw_out, raw_err = self.take_raw()
        if raw_out:
            out.write(raw_out)
        if raw_err:
            err.write(raw_err)
        if left:
            err.write(f"[ferry: the task left {left} process(es) running; they were stopped]\n")
        if came_back:
            self.done(task_id, False, started, FORKED_CHILD_RETURNED.encode(), b"", out.text(), err.text())
            return
        if failure is not None:
            e = failure
            self.done(task_id, False, started, _user_traceback(e).encode(), _exception_data(e), out.text(), err.text())
            return
        try:
            data = serialize_data_bytes(value)
        except Exception as e:  # noqa: BLE001
            tid = uuid.UUID(bytes=task_id)
            msg = f"the result of task {tid} could not be serialized: {type(e).__name__}: {e}"
            self.done(task_id, False, started, msg.encode(), _exception_data(e), out.text(), err.text())
            return
        if out.tell() or err.tell() or out.dropped or err.dropped:
            self.done(task_id, True, started, data, b"", out.text(), err.text())
        else:
            self.ok(task_id, started, data)

    def serve(self) -> int:
        ready = json.dumps({"pid": os.getpid(), "python": sys.version.split()[0]}).encode()
        self.send(b"R" + ready)
        self.flush()
        buf = bytearray()
        while True:
            pos = 0
            armed = False
            while len(buf) - pos >= 4:
                (n,) = _LEN.unpack_from(buf, pos)
                if len(buf) - pos - 4 < n:
                    break
                body = bytes(buf[pos + 4 : pos + 4 + n])
                pos += 4 + n
                if not body or body[:1] != b"T" or len(body) < 33:
                    self.flush()
                    print(f"ferry host: unknown frame {body[:1]!r}", file=sys.stderr)
                    return 2
                self.seq += 1
                if self.withdrawn and self.seq in self.withdrawn:
                    self.withdrawn.discard(self.seq)
                    self._skip(body)
                    continue
                armed = self._arm(armed)
                self.run_task(body)
            if armed:
                signal.setitimer(signal.ITIMER_REAL, 0)
            del buf[:pos]
            if self.control >= 0 and _handler(WITHDRAW_SIGNAL) is not self.on_withdraw:
                # A task took the signal for itself: withdrawals work again from here.
                signal.signal(WITHDRAW_SIGNAL, self.on_withdraw)
            if self.on_alarm is not None and _handler(signal.SIGALRM) is not self.on_alarm:
                # The same for the answer timer (a task's own alarm replaced it).
                signal.signal(signal.SIGALRM, self.on_alarm)
            # Nothing complete is left to run: answer, then wait for more.
            self.flush()
            # 64 KiB, under the allocator's mmap threshold: a 1 MiB read cost an mmap, an
            # mremap and a munmap per read.
            data = os.read(self.proto_in, 1 << 16)
            if not data:
                if buf:
                    print(f"ferry host: truncated frame: {len(buf)} bytes at the end of input", file=sys.stderr)
                    return 2
                return 0
            buf += data


def main() -> int:
    _die_with_worker()
    proto_in = os.dup(0)
    proto_out = os.fdopen(os.dup(1), "wb")
    # The host's own words still reach the worker's stderr (and the endpoint's log).
    diag = os.dup(2)
    # From here on fds 1 and 2 are files of the host's (a task's direct writes go to its
    # output, not to the endpoint's log), and stdin is empty: nothing a function does to
    # them can touch the protocol.
    raw = []
    for fd in (1, 2):
        f = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the host's life
        os.dup2(f.fileno(), fd)
        f.close()
        raw.append(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = open(diag, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(diag, "w", closefd=False)  # noqa: SIM115
    sys.stdin = open(0, "r", closefd=False)  # noqa: SIM115
    if not _become_subreaper():
        print("ferry host: cannot become a child subreaper: a task's processes that leave its session may outlive it", file=sys.stderr)
    return Host(proto_in, proto_out, (raw[0], raw[1])).serve()


if __name__ == "__main__":
    sys.exit(main())
