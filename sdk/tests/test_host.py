"""The warm host, driven over its pipes exactly as the Rust worker does."""

import json
import os
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ferry.serialize import deserialize_data, pack, pack_args, serialize_function

SDK = Path(__file__).resolve().parents[1]


class HostProcess:
    def __init__(self, env: dict | None = None, cwd: Path | None = None, pass_fds: tuple = ()):
        env = dict(os.environ, PYTHONPATH=str(SDK), **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "ferry.host"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=cwd,
            pass_fds=pass_fds,
        )
        kind, body = self.read()
        assert kind == b"R"
        self.ready = json.loads(body)

    def read(self):
        head = self.proc.stdout.read(4)
        (n,) = struct.unpack(">I", head)
        body = self.proc.stdout.read(n)
        return body[:1], body[1:]

    def run(self, fid: bytes, code: str, payload: str, tid: bytes | None = None):
        tid = tid or uuid.uuid4().bytes
        c, p = code.encode(), payload.encode()
        body = b"T" + tid + fid + struct.pack(">I", len(c)) + c + struct.pack(">I", len(p)) + p
        self.proc.stdin.write(struct.pack(">I", len(body)) + body)
        self.proc.stdin.flush()
        kind, rest = self.read()
        assert kind == b"D"
        assert rest[:16] == tid
        status, started, ended = struct.unpack(">Bdd", rest[16:33])
        fields, pos = [], 33
        for _ in range(4):
            (n,) = struct.unpack(">I", rest[pos : pos + 4])
            fields.append(rest[pos + 4 : pos + 4 + n].decode())
            pos += 4 + n
        assert started <= ended
        return status, *fields

    def close(self):
        self.proc.stdin.close()
        return self.proc.wait(timeout=10)


@pytest.fixture()
def host():
    h = HostProcess()
    yield h
    if h.proc.poll() is None:
        h.proc.kill()


def double(x):
    return x * 2


def divide(x):
    return x / 0


def chatty():
    print("to stdout")
    print("to stderr", file=sys.stderr)
    os.write(1, b"raw bytes on fd 1\n")
    return "ok"


def leave():
    raise SystemExit(3)


def test_a_function_runs_and_its_result_deserializes(host):
    status, data, exc, out, err = host.run(uuid.uuid4().bytes, serialize_function(double), pack_args((21,)))
    assert status == 0
    assert deserialize_data(data) == 42


def test_an_exception_comes_back_with_a_user_traceback_and_the_object(host):
    status, data, exc, _, _ = host.run(uuid.uuid4().bytes, serialize_function(divide), pack_args((1,)))
    assert status == 1
    assert "ZeroDivisionError" in data and "divide" in data
    assert "ferry/host.py" not in data
    assert isinstance(deserialize_data(exc), ZeroDivisionError)


def test_prints_are_captured_and_fd_1_cannot_corrupt_the_protocol(host):
    status, data, _, out, err = host.run(uuid.uuid4().bytes, serialize_function(chatty), "")
    assert status == 0 and deserialize_data(data) == "ok"
    # Direct writes to fd 1 are the task's output too (not the endpoint's log).
    assert out == "to stdout\nraw bytes on fd 1\n"
    assert err == "to stderr\n"


def raw_everywhere():
    import subprocess

    os.write(2, b"raw on fd 2\n")
    subprocess.run(["echo", "from a child"], check=True)
    return 1


def test_direct_writes_and_childrens_output_are_the_tasks_and_bounded(host):
    status, data, _, out, err = host.run(uuid.uuid4().bytes, serialize_function(raw_everywhere), "")
    assert status == 0 and deserialize_data(data) == 1
    assert out == "from a child\n" and err == "raw on fd 2\n"
    # The next task starts with empty files.
    status, data, _, out, err = host.run(uuid.uuid4().bytes, serialize_function(double), pack_args([1]))
    assert (out, err) == ("", "")


def test_each_task_gets_only_its_own_output(host):
    fid = uuid.uuid4().bytes
    host.run(fid, serialize_function(chatty), "")
    status, data, _, out, err = host.run(uuid.uuid4().bytes, serialize_function(double), pack_args((2,)))
    assert (status, deserialize_data(data), out, err) == (0, 4, "", "")
    _, _, _, out, err = host.run(fid, "", "")
    assert (out, err) == ("to stdout\nraw bytes on fd 1\n", "to stderr\n")


def test_keyword_arguments_reach_the_function(host):
    status, data, *_ = host.run(uuid.uuid4().bytes, serialize_function(double), pack_args((), {"x": 4}))
    assert status == 0 and deserialize_data(data) == 8


def test_a_function_is_kept_and_can_be_sent_once(host):
    fid = uuid.uuid4().bytes
    host.run(fid, serialize_function(double), pack_args((1,)))
    status, data, *_ = host.run(fid, "", pack_args((5,)))
    assert status == 0 and deserialize_data(data) == 10


def test_an_unknown_function_fails_the_task_not_the_host(host):
    status, data, *_ = host.run(uuid.uuid4().bytes, "", "")
    assert status == 1 and "is not loaded" in data
    status, data, *_ = host.run(uuid.uuid4().bytes, serialize_function(double), pack_args((2,)))
    assert status == 0


def test_garbage_function_and_payload_fail_with_the_task_id(host):
    status, data, *_ = host.run(uuid.uuid4().bytes, pack(["zz\nnothing"]), "")
    assert status == 1 and "could not deserialize the function of task" in data
    status, data, *_ = host.run(uuid.uuid4().bytes, serialize_function(double), "not a payload")
    assert status == 1 and "could not deserialize the arguments of task" in data


def test_system_exit_in_a_function_fails_the_task_and_the_host_stays(host):
    status, data, *_ = host.run(uuid.uuid4().bytes, serialize_function(leave), "")
    assert status == 1 and "SystemExit" in data
    status, *_ = host.run(uuid.uuid4().bytes, serialize_function(double), pack_args((2,)))
    assert status == 0


def test_end_of_input_exits_cleanly(host):
    assert host.close() == 0


def test_tasks_sent_together_are_answered_in_order(host):
    """The worker sends many tasks before the first answer; the host runs them in order."""
    fid = uuid.uuid4().bytes
    frames, ids = [], []
    for i in range(50):
        tid = uuid.uuid4().bytes
        ids.append(tid)
        c = serialize_function(double).encode() if i == 0 else b""
        p = pack_args((i,)).encode()
        body = b"T" + tid + fid + struct.pack(">I", len(c)) + c + struct.pack(">I", len(p)) + p
        frames.append(struct.pack(">I", len(body)) + body)
    host.proc.stdin.write(b"".join(frames))
    host.proc.stdin.flush()
    for i, tid in enumerate(ids):
        kind, rest = host.read()
        assert kind == b"D" and rest[:16] == tid
        (n,) = struct.unpack(">I", rest[33:37])
        assert deserialize_data(rest[37 : 37 + n].decode()) == 2 * i
    assert host.close() == 0


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def test_answers_of_a_batch_do_not_wait_behind_a_long_task_in_it(host):
    """Tasks sent together are answered together, but not behind a long one: the short
    task's answer comes while the long one still runs (else the worker would take the
    short one for the running task, and time the long one's walltime from its end)."""
    import time

    fast, slow = uuid.uuid4().bytes, uuid.uuid4().bytes
    frames = []
    for fid, fn, arg in ((fast, double, 1), (slow, nap, 2.0)):
        c = serialize_function(fn).encode()
        p = pack_args((arg,)).encode()
        body = b"T" + uuid.uuid4().bytes + fid + struct.pack(">I", len(c)) + c + struct.pack(">I", len(p)) + p
        frames.append(struct.pack(">I", len(body)) + body)
    sent = time.monotonic()
    host.proc.stdin.write(b"".join(frames))
    host.proc.stdin.flush()
    kind, _ = host.read()
    assert kind == b"D" and time.monotonic() - sent < 1.0, "the short task's answer came before the long one ended"
    kind, _ = host.read()
    assert kind == b"D" and time.monotonic() - sent >= 2.0
    assert host.close() == 0


def own_alarm(_):
    """Uses SIGALRM for its own timeout, as user code may."""
    import signal

    fired = []
    signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    signal.setitimer(signal.ITIMER_REAL, 0.01)
    import time

    time.sleep(0.05)
    return len(fired)


def test_a_task_with_its_own_alarm_gets_only_its_own_and_the_timer_works_after_it(host):
    fid = uuid.uuid4().bytes
    status, result, *_ = host.run(fid, serialize_function(own_alarm), pack_args((0,)))
    assert status == 0 and deserialize_data(result) == 1, "its alarm fired once, into its handler"
    test_answers_of_a_batch_do_not_wait_behind_a_long_task_in_it(host)


def test_a_truncated_frame_at_the_end_of_input_is_an_error(host):
    host.proc.stdin.write(struct.pack(">I", 100) + b"T" + b"x" * 10)
    assert host.close() == 2


def fork_and_return():
    return os.fork()


def fork_properly():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return "parent"


def test_a_forked_child_that_returns_is_stopped_and_fails_the_task(host):
    fid = uuid.uuid4().bytes
    status, text, _, _, _ = host.run(fid, serialize_function(fork_and_return), pack_args())
    assert status == 1
    assert "os.fork" in text and "os._exit" in text, text
    # The tasks behind it run once, in this host: one answer each, from its own pid.
    d = uuid.uuid4().bytes
    for x in range(5):
        status, data, _, _, _ = host.run(d, serialize_function(double), pack_args([x]))
        assert status == 0 and deserialize_data(data) == 2 * x
    assert host.close() == 0
    assert host.proc.stdout.read() == b"", "no second host answered"


def test_a_fork_whose_child_ends_properly_is_fine(host):
    fid = uuid.uuid4().bytes
    status, data, _, _, _ = host.run(fid, serialize_function(fork_properly), pack_args())
    assert status == 0 and deserialize_data(data) == "parent"


def leave_behind(how, marker):
    """Starts `sleep MARKER` so that it outlives the task, escaping its session."""
    import os
    import subprocess

    if how == "popen":
        subprocess.Popen(["sleep", marker], start_new_session=True, stdout=subprocess.DEVNULL)
    elif how == "setsid":
        if os.fork() == 0:
            os.setsid()
            os.execvp("sleep", ["sleep", marker])
    else:  # a double fork: the sleep is orphaned at once
        middle = os.fork()
        if middle == 0:
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", marker])
            os._exit(0)
        os.waitpid(middle, 0)
    return "left"


def running_with(marker):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat", "rb") as f:
                zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            continue
        if marker.encode() in argv and not zombie:
            found.append(int(pid))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a child subreaper is Linux's")
@pytest.mark.parametrize("how", ["popen", "setsid", "double-fork"])
def test_a_tasks_processes_end_with_it_and_the_host_goes_on(host, how):
    marker = f"300.{uuid.uuid4().int % 10**9}"
    try:
        fid = uuid.uuid4().bytes
        status, data, _, _, err = host.run(fid, serialize_function(leave_behind), pack_args([how, marker]))
        assert status == 0 and deserialize_data(data) == "left"
        assert running_with(marker) == [], f"the {how} sleep outlived its task"
        assert "left 1 process(es) running" in err, err
        d = uuid.uuid4().bytes
        status, data, _, _, err = host.run(d, serialize_function(double), pack_args([4]))
        assert status == 0 and deserialize_data(data) == 8 and err == ""
        assert host.close() == 0
    finally:
        for pid in running_with(marker):
            os.kill(pid, 9)


def linger(path):
    import time as t

    t.sleep(0.5)
    with open(path, "w") as f:
        f.write("ran on")
    return "done"


def test_the_host_dies_with_its_worker(tmp_path):
    """Killing the host's parent (the worker) kills the host at once: a task sent ahead
    must not run on after the worker that would report it is gone."""
    env = dict(os.environ, PYTHONPATH=str(SDK))
    marker = tmp_path / "ran-on"
    tid, fid = uuid.uuid4().bytes, uuid.uuid4().bytes
    c, p = serialize_function(linger).encode(), pack_args((str(marker),)).encode()
    body = b"T" + tid + fid + struct.pack(">I", len(c)) + c + struct.pack(">I", len(p)) + p
    frame = tmp_path / "frame"
    frame.write_bytes(struct.pack(">I", len(body)) + body)
    # A stand-in worker: starts the host naming itself as its parent, sends it the task
    # and prints the host's pid, then waits to be killed.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time\n"
            "env = dict(os.environ, FERRY_HOST_PARENT=str(os.getpid()))\n"
            "h = subprocess.Popen([sys.executable, '-u', '-m', 'ferry.host'], stdin=subprocess.PIPE,"
            " stdout=subprocess.PIPE, env=env)\n"
            "h.stdout.read(4)\n"
            f"h.stdin.write(open({str(frame)!r}, 'rb').read()); h.stdin.flush()\n"
            "print(h.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        env=env,
    )
    host_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    time.sleep(1.5)
    try:
        os.kill(host_pid, 9)
    except ProcessLookupError:
        pass
    assert not marker.exists(), "the host ran a task on after its worker died"


def sandbox_facts():
    import subprocess

    seen_by_a_child = subprocess.run(
        "echo $GC_TASK_UUID $GC_TASK_SANDBOX_DIR", shell=True, capture_output=True, text=True
    ).stdout.split()
    return os.environ["GC_TASK_UUID"], os.environ["GC_TASK_SANDBOX_DIR"], seen_by_a_child, os.getcwd()


def keeps_a_file():
    import ferry

    (ferry.run_dir() / "kept.txt").write_text("x")
    os.chdir("/")


def makes_it_empty():
    os.makedirs(os.environ["GC_TASK_SANDBOX_DIR"])


def test_each_task_is_told_its_own_run_directory_and_only_a_used_one_is_kept(tmp_path):
    root, home = tmp_path / "runs", tmp_path / "runs" / "worker-x"
    (root / ".done").mkdir(parents=True)
    home.mkdir()
    h = HostProcess(env={"FERRY_RUN_ROOT": str(root)}, cwd=home)
    try:
        facts = serialize_function(sandbox_facts)
        for _ in range(3):
            tid = uuid.uuid4()
            status, data, _, _, _ = h.run(b"f" * 16, facts, pack_args(), tid.bytes)
            assert status == 0, data
            task_uuid, sandbox, child, cwd = deserialize_data(data)
            assert task_uuid == str(tid) and sandbox == str(root / str(tid))
            assert child == [task_uuid, sandbox], "the task's processes see them too"
            assert cwd == str(home) and not Path(sandbox).exists(), "made only when asked for"

        kept = uuid.uuid4()
        status, data, _, _, _ = h.run(b"k" * 16, serialize_function(keeps_a_file), pack_args(), kept.bytes)
        assert status == 0, data
        assert (root / str(kept) / "kept.txt").read_text() == "x"
        assert (root / ".done" / str(kept)).exists(), "marked for the managers' sweep"

        empty = uuid.uuid4()
        status, data, _, _, _ = h.run(b"e" * 16, serialize_function(makes_it_empty), pack_args(), empty.bytes)
        assert status == 0, data
        assert not (root / str(empty)).exists(), "left empty: removed"

        status, data, _, _, _ = h.run(b"f" * 16, facts, pack_args())
        assert deserialize_data(data)[3] == str(home), "back in its own directory after a task's chdir"
    finally:
        h.proc.kill()


def writes_here():
    with open("here.txt", "w") as f:
        f.write("x")
    return os.getcwd()


def test_per_task_run_directories_are_made_before_each_task(tmp_path):
    root, home = tmp_path / "runs", tmp_path / "runs" / "worker-x"
    (root / ".done").mkdir(parents=True)
    home.mkdir()
    h = HostProcess(env={"FERRY_RUN_ROOT": str(root), "FERRY_PYTHON_RUN_DIRS": "per-task"}, cwd=home)
    try:
        facts = serialize_function(sandbox_facts)
        tid = uuid.uuid4()
        status, data, _, _, _ = h.run(b"f" * 16, facts, pack_args(), tid.bytes)
        assert status == 0, data
        _, sandbox, _, cwd = deserialize_data(data)
        assert cwd == sandbox == str(root / str(tid)), "the task starts in its own directory"
        assert not (root / str(tid)).exists(), "left empty: removed"

        kept = uuid.uuid4()
        status, data, _, _, _ = h.run(b"w" * 16, serialize_function(writes_here), pack_args(), kept.bytes)
        assert status == 0 and deserialize_data(data) == str(root / str(kept))
        assert (root / str(kept) / "here.txt").exists() and (root / ".done" / str(kept)).exists()
    finally:
        h.proc.kill()


def _task_frame(tid: bytes, fid: bytes, code: bytes, payload: bytes) -> bytes:
    body = b"T" + tid + fid + struct.pack(">I", len(code)) + code + struct.pack(">I", len(payload)) + payload
    return struct.pack(">I", len(body)) + body


def _controlled_host():
    """A host with the control socket the worker gives it for withdrawals: the host and
    our end of the socket."""
    import socket

    ours, theirs = socket.socketpair()
    h = HostProcess(env={"FERRY_HOST_CONTROL_FD": str(theirs.fileno())}, pass_fds=(theirs.fileno(),))
    theirs.close()
    return h, ours


def snooze(seconds):
    import time

    time.sleep(seconds)
    return seconds


def test_tasks_behind_a_long_one_are_withdrawn_at_once_and_never_run():
    """The worker's withdrawal: asked while a task sleeps, the host answers at once (its
    handler runs between two bytecodes), skips the tasks it gave back (keeping the
    function one of them carried) and runs the rest."""
    import signal

    h, ours = _controlled_host()
    proc = h.proc
    try:
        slow, fast = uuid.uuid4().bytes, uuid.uuid4().bytes
        ids = [uuid.uuid4().bytes for _ in range(5)]
        frames = [_task_frame(ids[0], slow, serialize_function(snooze).encode(), pack_args((1.5,)).encode())]
        for i, tid in enumerate(ids[1:], start=2):
            code = serialize_function(double).encode() if i == 2 else b""
            frames.append(_task_frame(tid, fast, code, pack_args((i,)).encode()))
        proc.stdin.write(b"".join(frames))
        proc.stdin.flush()
        asked = time.monotonic()
        ours.sendall(struct.pack(">QQ", 2, 4))  # behind the first, as the worker asks
        os.kill(proc.pid, signal.SIGURG)
        ours.settimeout(5)
        lo, upto = struct.unpack(">QQ", ours.recv(16))
        assert (lo, upto) == (2, 4)
        assert time.monotonic() - asked < 1.0, "answered only after the running task"
        answered = []
        for _ in range(2):
            kind, rest = h.read()
            assert kind == b"D"
            status = rest[16]
            (n,) = struct.unpack(">I", rest[33:37])
            answered.append((rest[:16], status, deserialize_data(rest[37 : 37 + n].decode())))
        # Task 5 ran with the function task 2 carried, though task 2 itself did not run.
        assert answered == [(ids[0], 0, 1.5), (ids[4], 0, 10)]
        # A withdrawal of tasks that have begun (or ended) takes none.
        ours.sendall(struct.pack(">QQ", 5, 5))
        os.kill(proc.pid, signal.SIGURG)
        lo, upto = struct.unpack(">QQ", ours.recv(16))
        assert lo > upto
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        ours.close()


def grab_the_signal():
    import signal

    signal.signal(signal.SIGURG, signal.SIG_IGN)
    return "mine"


def test_a_task_that_takes_the_withdrawal_signal_does_not_keep_it():
    import signal

    h, ours = _controlled_host()
    proc = h.proc
    try:
        grab = uuid.uuid4().bytes
        proc.stdin.write(_task_frame(uuid.uuid4().bytes, grab, serialize_function(grab_the_signal).encode(), pack_args(()).encode()))
        proc.stdin.flush()
        assert h.read()[0] == b"D"
        slow, fast = uuid.uuid4().bytes, uuid.uuid4().bytes
        frames = [
            _task_frame(uuid.uuid4().bytes, slow, serialize_function(snooze).encode(), pack_args((1.0,)).encode()),
            _task_frame(uuid.uuid4().bytes, fast, serialize_function(double).encode(), pack_args((1,)).encode()),
        ]
        proc.stdin.write(b"".join(frames))
        proc.stdin.flush()
        ours.sendall(struct.pack(">QQ", 3, 3))
        os.kill(proc.pid, signal.SIGURG)
        ours.settimeout(5)
        assert struct.unpack(">QQ", ours.recv(16)) == (3, 3)
        assert h.read()[0] == b"D"  # the slow one; the withdrawn one never answers
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        ours.close()
