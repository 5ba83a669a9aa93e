"""What the `ferry` command draws: a task's timeline, a session's progress."""

from ferry.usercli import progress_line, timeline

HISTORY = [
    {"state": "received", "attempt": 0, "at": 100.0, "by": "web-service"},
    {"state": "waiting-for-ep", "attempt": 0, "at": 100.002, "by": "forwarder"},
    {"state": "running", "attempt": 0, "at": 100.012, "by": "worker"},
    {"state": "failed", "attempt": 0, "at": 101.512, "by": "worker", "reason": "exception"},
]


def test_a_timeline_shows_each_step_with_its_length_drawn_against_the_longest():
    lines = timeline(HISTORY, width=10)
    assert lines[0].split() == ["+", "0.0", "ms", "received", "#0", "web-service", "2.0", "ms", "█"]
    assert lines[2].endswith("1.50 s  " + "█" * 10), lines[2]
    assert lines[3].split()[:6] == ["+", "1.51", "s", "failed", "(exception)", "#0"]
    assert lines[3] == lines[3].rstrip(), "the last step has no length: nothing trails"
    assert timeline([]) == ["  (no steps yet)"]


def test_progress_counts_finished_tasks_and_lists_the_states_there_are():
    running = {"size": 10000, "pending": True, "status": "running",
               "counts": {"received": 0, "waiting-for-ep": 100, "running": 12, "success": 4100, "failed": 100}}
    line = progress_line(running, width=10)
    assert line.startswith("[████······]  42% 4,200/10,000 · "), line
    assert "running 12 · success 4,100 · failed 100" in line and "received" not in line
    done = {"size": 3, "pending": False, "status": "failed", "reason": "cancelled", "counts": {"success": 1, "failed": 2}}
    assert progress_line(done, width=3) == "[███] 100% 3/3 · success 1 · failed 2 · failed (cancelled)"
