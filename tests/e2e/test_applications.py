"""Applications through the real stack: registered specs, typed inputs checked at the
web-service, prolog / execute / epilog in one run directory on the endpoint."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from ferry import APIError, Application, ApplicationFailed, Executor, file_input, save_outputs

THREE_PHASES = Application(
    prolog="pwd > where.prolog; echo prolog >> order.log; echo 'prolog says hi'",
    execute=(
        "pwd > where.execute; echo execute >> order.log\n"
        "echo steps=@@steps@@ solver=@@solver@@ title=@@title@@ > args.txt\n"
        'echo "env: $FERRY_INPUT_STEPS $FERRY_PHASE"'
    ),
    epilog="pwd > where.epilog; echo epilog >> order.log; mkdir -p out; echo done > out/result.dat",
    inputs=[
        {"name": "steps", "label": "Time steps", "type": "int", "min": 1, "max": 1000, "order": 1},
        {"name": "solver", "type": "enum", "choices": ["cg", "gmres"], "default": "cg"},
        {"name": "title", "type": "string", "pattern": "[A-Za-z ;$()`'-]*", "required": False},
        {"name": "tol", "type": "float", "min": 0, "max": 1, "default": 1e-6},
        {"name": "verbose", "type": "bool", "default": False},
    ],
    outputs=["out/*.dat", "args.txt"],
    name="three-phases",
)


def test_three_phases_run_in_order_in_one_run_directory_with_their_inputs(client, stack):
    app = client.register_application(THREE_PHASES)
    tid = client.run_application(app, {"steps": 3, "title": "a b"}, endpoint_id=stack.endpoint_id)
    run = client.get_result(tid, timeout=60)

    run_dir = Path(run["run_dir"])
    assert run_dir.name == tid
    assert [p["name"] for p in run["phases"]] == ["prolog", "execute", "epilog"]
    assert all(p["state"] == "succeeded" and p["exit_status"] == 0 for p in run["phases"])
    assert all(p["started_at"] <= p["ended_at"] for p in run["phases"])
    assert (run_dir / "order.log").read_text() == "prolog\nexecute\nepilog\n"
    for phase in ("prolog", "execute", "epilog"):
        assert (run_dir / f"where.{phase}").read_text().strip() == str(run_dir)
    assert (run_dir / "args.txt").read_text() == "steps=3 solver=cg title=a b\n"
    assert run["phases"][0]["stdout"] == "prolog says hi\n"
    assert run["phases"][1]["stdout"] == "env: 3 execute\n"
    assert (run_dir / "execute.stdout").read_text() == "env: 3 execute\n", "kept in full"
    assert sorted(o["path"] for o in run["outputs"]) == ["args.txt", "out/result.dat"]
    assert run["inputs"] == {"steps": 3, "solver": "cg", "title": "a b", "tol": 1e-6, "verbose": False}

    # The task's record shows each phase as a step of its own.
    steps = client.get_task(tid)["phases"]
    assert [(s["name"], s["state"], s["exit_status"]) for s in steps] == [
        ("prolog", "succeeded", 0),
        ("execute", "succeeded", 0),
        ("epilog", "succeeded", 0),
    ]
    assert steps[0]["started_at"] <= steps[0]["ended_at"] <= steps[1]["started_at"]


def test_every_wrong_input_is_listed_with_its_name_before_anything_runs(client, stack):
    app = client.register_application(THREE_PHASES)
    with pytest.raises(APIError) as info:
        client.run_application(
            app,
            {"steps": 0, "solver": "lu", "title": "digits 123", "tol": "small", "colour": "red"},
            endpoint_id=stack.endpoint_id,
        )
    e = info.value
    assert e.http_status == 400
    named = {err["input"] for err in e.errors}
    assert named == {"steps", "solver", "title", "tol", "colour"}, e.errors
    assert "at least 1" in str(e) and "gmres" in str(e) and "no such input" in str(e)

    with pytest.raises(APIError) as info:
        client.run_application(app, {}, endpoint_id=stack.endpoint_id)
    assert [err["input"] for err in info.value.errors] == ["steps"]
    assert "required" in info.value.errors[0]["message"]


def test_a_spec_with_problems_is_refused_listing_each(client):
    bad = Application.from_spec(
        {
            "inputs": [{"name": "n", "type": "int", "min": 5, "max": 1}, {"name": "n", "type": "string"}],
            "execute": {"script": "run @@m@@"},
        }
    )
    with pytest.raises(APIError) as info:
        client.register_application(bad)
    assert info.value.http_status == 400
    text = str(info.value)
    assert "@@m@@" in text and "min" in text and "n" in text
    assert len(info.value.errors) >= 3, info.value.errors


def test_values_that_look_like_commands_stay_literal_strings(client, stack, tmp_path):
    app = client.register_application(
        Application(
            execute="printf '%s|' @@v@@ > got.txt; ls",
            inputs=[{"name": "v", "type": "string"}],
        )
    )
    for value in ["; touch pwned", "$(touch pwned)", "`touch pwned`", "a'b \"c\" $HOME", "x\ny && rm -rf ~"]:
        run = client.get_result(client.run_application(app, {"v": value}, endpoint_id=stack.endpoint_id), timeout=60)
        run_dir = Path(run["run_dir"])
        assert (run_dir / "got.txt").read_text() == value + "|"
        assert not (run_dir / "pwned").exists()


def test_the_epilog_marked_after_failure_runs_after_a_failed_execute(client, stack):
    app = client.register_application(
        Application(
            prolog="echo prepared",
            execute="echo trying; echo 'solver diverged' >&2; exit 3",
            epilog="echo cleaned > cleanup.txt",
            epilog_after_failure=True,
        )
    )
    with pytest.raises(ApplicationFailed) as info:
        client.get_result(client.run_application(app, endpoint_id=stack.endpoint_id), timeout=60)
    e = info.value
    assert "phase execute: exited with status 3" in str(e) and "solver diverged" in str(e)
    states = {p["name"]: (p["state"], p["exit_status"]) for p in e.phases}
    assert states == {"prolog": ("succeeded", 0), "execute": ("failed", 3), "epilog": ("succeeded", 0)}
    assert (Path(e.run_dir) / "cleanup.txt").read_text() == "cleaned\n"

    # Without the mark, a failure skips the epilog.
    plain = client.register_application(Application(execute="exit 1", epilog="touch ran"))
    with pytest.raises(ApplicationFailed) as info:
        client.get_result(client.run_application(plain, endpoint_id=stack.endpoint_id), timeout=60)
    assert [p["state"] for p in info.value.phases] == ["failed", "skipped"]
    steps = client.get_task(info.value.run["run_dir"].rsplit("/", 1)[-1])["phases"]
    assert [(s["name"], s["state"]) for s in steps] == [("execute", "failed"), ("epilog", "skipped")]
    assert steps[0]["reason"] == "exited with status 1" and "started_at" not in steps[1]
    assert not (Path(info.value.run_dir) / "ran").exists()


def test_a_phase_that_cannot_run_or_is_killed_fails_the_run_naming_the_phase(client, stack, tmp_path):
    not_executable = tmp_path / "interpreter"
    not_executable.write_text("not a program")
    not_executable.chmod(0o644)
    cases = [
        (Application(prolog="#!/no/such/interpreter\nprint(1)", execute="true"), "phase prolog: its script's interpreter /no/such/interpreter does not exist"),
        (
            Application(execute=f"#!{not_executable}\nx"),
            f"phase execute: its script's interpreter {not_executable} is not an executable file",
        ),
        (Application(execute="kill -SEGV $$"), "phase execute: was killed by SIGSEGV"),
        (Application(execute="no-such-program-anywhere"), "phase execute: exited with status 127"),
        (Application(execute="sleep 30", walltimes={"execute": 0.5}), "phase execute: ran past its walltime of 0.5 s"),
    ]
    for app, said in cases:
        fid = client.register_application(app)
        with pytest.raises(ApplicationFailed) as info:
            client.get_result(client.run_application(fid, endpoint_id=stack.endpoint_id), timeout=60)
        assert said in str(info.value), str(info.value)


def test_a_script_with_its_own_interpreter_sees_the_inputs_in_its_environment(client, stack):
    app = client.register_application(
        Application(
            execute="#!/usr/bin/env python3\nimport os\nprint(os.environ['FERRY_INPUT_WHO'], os.getcwd() == os.environ['FERRY_RUN_DIR'])",
            inputs=[{"name": "who", "type": "string"}],
        )
    )
    run = client.get_result(client.run_application(app, {"who": "ada lovelace"}, endpoint_id=stack.endpoint_id), timeout=60)
    assert run["phases"][0]["stdout"] == "ada lovelace True\n"


def test_a_file_input_is_staged_and_an_output_listed(client, stack, tmp_path):
    source = tmp_path / "mesh.txt"
    source.write_text("1 2 3\n")
    app = client.register_application(
        Application(
            execute="wc -w < @@mesh@@ > words.out; test -L @@linked@@ && echo linked",
            inputs=[{"name": "mesh", "type": "file"}, {"name": "linked", "type": "file"}],
            outputs=["*.out"],
        )
    )
    inputs = {"mesh": str(source), "linked": {"path": str(source), "mode": "link", "name": "big.txt"}}
    run = client.get_result(client.run_application(app, inputs, endpoint_id=stack.endpoint_id), timeout=60)
    run_dir = Path(run["run_dir"])
    assert (run_dir / "mesh.txt").read_text() == "1 2 3\n"
    assert (run_dir / "words.out").read_text().strip() == "3"
    assert run["phases"][0]["stdout"] == "linked\n"
    assert [(o["path"], o["bytes"]) for o in run["outputs"]] == [("words.out", 2)]
    assert base64.b64decode(run["outputs"][0]["data"]) == b"3\n", "the content comes back"

    missing = client.run_application(app, {"mesh": "/no/such/file", "linked": str(source)}, endpoint_id=stack.endpoint_id)
    with pytest.raises(Exception, match="input 'mesh': cannot copy /no/such/file"):
        client.get_result(missing, timeout=60)


def test_the_endpoints_environment_script_and_keep_time_apply():
    from ferry import Client
    from ferrystack import Stack

    settings = {"provider.keep_run_dirs": "2s", "provider.app_env_script": "export GREETING=from-the-endpoint"}
    stack = Stack(settings=settings)
    stack.start()
    try:
        client = Client(stack.url, token=stack.token)
        # The endpoint's environment script is sourced before each phase, unless the
        # application has its own.
        plain = client.register_application(Application(prolog="echo $GREETING", execute="echo $GREETING"))
        run = client.get_result(client.run_application(plain, endpoint_id=stack.endpoint_id), timeout=60)
        assert [p["stdout"] for p in run["phases"]] == ["from-the-endpoint\n"] * 2
        own = client.register_application(
            Application(execute="echo ${GREETING:-none} $MINE", env_script="export MINE=own")
        )
        run = client.get_result(client.run_application(own, endpoint_id=stack.endpoint_id), timeout=60)
        assert run["phases"][0]["stdout"] == "none own\n"

        app = client.register_application(Application(execute="echo kept > file.txt"))
        run = client.get_result(client.run_application(app, endpoint_id=stack.endpoint_id), timeout=60)
        run_dir = Path(run["run_dir"])
        assert (run_dir / "file.txt").exists(), "kept for inspection first"
        deadline = time.monotonic() + 30
        while run_dir.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not run_dir.exists(), "removed after keep_run_dirs"
        assert not (run_dir.parent / ".done" / run_dir.name).exists()
    finally:
        stack.stop()


def test_an_uploaded_file_is_staged_and_output_files_come_back_through_the_data_plane(client, stack, tmp_path):
    app = client.register_application(
        Application(
            execute="mkdir -p out; tr a-z A-Z < @@text@@ > out/upper.txt; head -c 200000 /dev/zero > out/zeros.bin",
            inputs=[{"name": "text", "type": "file"}],
            outputs=["out/*"],
        )
    )
    # 300 KB: the inputs travel by reference (the data plane), not in the task message.
    big = ("hello ferry\n" * 25000).encode()
    tid = client.run_application(app, {"text": file_input(big, "in.txt")}, endpoint_id=stack.endpoint_id)
    run = client.get_result(tid, timeout=60)
    assert (Path(run["run_dir"]) / "in.txt").read_bytes() == big
    assert run["inputs"]["text"] == {"name": "in.txt", "uploaded_bytes": len(big)}, "not the content again"
    saved = save_outputs(run, tmp_path / "got")
    assert sorted(p.name for p in saved) == ["upper.txt", "zeros.bin"]
    assert (tmp_path / "got" / "out" / "upper.txt").read_bytes() == big.upper()
    assert (tmp_path / "got" / "out" / "zeros.bin").read_bytes() == bytes(200000)

    with pytest.raises(APIError) as info:
        client.run_application(app, {"text": {"data": "not base64!", "name": "x"}}, endpoint_id=stack.endpoint_id)
    assert info.value.errors[0]["input"] == "text" and "base64" in info.value.errors[0]["message"]


def test_many_runs_go_in_one_session_and_the_executor_runs_applications(client, stack):
    app = Application(execute="echo $((@@n@@ * 2))", inputs=[{"name": "n", "type": "int", "max": 100}])
    fid = client.register_application(app)
    batch = client.create_batch()
    for n in range(5):
        batch.add(fid, n=n)
    session = client.submit_session(stack.endpoint_id, batch)
    session.wait(timeout=60)
    runs = [o.result() for o in session.outcomes()]
    assert [r["phases"][0]["stdout"] for r in runs] == [f"{2 * n}\n" for n in range(5)]

    # One wrong run refuses the whole request, naming which.
    batch = client.create_batch()
    batch.add(fid, n=1)
    batch.add(fid, n=500)
    with pytest.raises(APIError) as info:
        client.submit_session(stack.endpoint_id, batch)
    assert [e["at"] for e in info.value.errors] == ["tasks[1].n"]

    with Executor(endpoint_id=stack.endpoint_id, client=client) as ex:
        assert ex.submit(app, n=21).result(timeout=60)["phases"][0]["stdout"] == "42\n"
    # An Application object runs directly: registered once by this client.
    run = client.get_result(client.run_application(app, {"n": 4}, endpoint_id=stack.endpoint_id), timeout=60)
    assert run["phases"][0]["stdout"] == "8\n"


def test_the_command_line_registers_shows_and_runs_an_application(stack, tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, FERRY_URL=stack.url, FERRY_TOKEN=stack.token, FERRY_ENDPOINT=stack.endpoint_id)

    def ferry(*args):
        return subprocess.run([sys.executable, "-m", "ferry.cli", *args], env=env, capture_output=True, text=True)

    spec = tmp_path / "count.json"
    spec.write_text(
        json.dumps(
            {
                "inputs": [
                    {"name": "n", "type": "int", "min": 1, "order": 1, "label": "how many"},
                    {"name": "loud", "type": "bool", "default": False},
                    {"name": "text", "type": "file"},
                ],
                "execute": {"script": "head -n @@n@@ @@text@@ > out.txt; @@loud@@ && echo LOUD || true"},
                "outputs": ["out.txt"],
            }
        )
    )
    out = ferry("app", "register", str(spec))
    assert out.returncode == 0, out.stderr
    app_id = out.stdout.strip()

    shown = ferry("app", "show", app_id)
    assert shown.returncode == 0, shown.stderr
    assert "n                int     yes" in shown.stdout and "min 1" in shown.stdout and "(how many)" in shown.stdout

    local = tmp_path / "lines.txt"
    local.write_text("a\nb\nc\n")
    ran = ferry("app", "run", app_id, "n=2", "loud=yes", f"text=@{local}", "--save-outputs", str(tmp_path / "got"))
    assert ran.returncode == 0, ran.stderr
    assert "succeeded" in ran.stdout and "execute  succeeded  exit 0" in ran.stdout
    assert (tmp_path / "got" / "out.txt").read_text() == "a\nb\n"

    wrong = ferry("app", "run", app_id, "n=0", "text=/x", "colour=red")
    assert wrong.returncode == 1
    assert "tasks[0].n: must be at least 1" in wrong.stderr and "colour" in wrong.stderr
    typo = ferry("app", "run", app_id, "n=two")
    assert typo.returncode == 1 and "input 'n' is an int, not 'two'" in typo.stderr
