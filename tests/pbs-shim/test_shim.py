"""End-to-end checks of the PBS shim (qsub, qstat, qdel, qrls, pbsdsh).

Run with ``python -m pytest tests/pbs-shim`` or, without pytest, ``python3 test_shim.py``.
Each test gets its own FERRY_PBS_SHIM_DIR and checks that no process it started is left.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

SHIM = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SHIM)
import _pbsshim  # noqa: E402


class Shim:
    def __init__(self, tmp, **env):
        self.tmp = str(tmp)
        self.dir = os.path.join(self.tmp, "state")
        self.work = os.path.join(self.tmp, "work")
        os.makedirs(self.work, exist_ok=True)
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("FERRY_PBS_SHIM_"):
                del self.env[k]
        self.env["FERRY_PBS_SHIM_DIR"] = self.dir
        self.env["PATH"] = SHIM + os.pathsep + self.env.get("PATH", "")
        self.env.update({k: str(v) for k, v in env.items()})

    def run(self, *argv, env=None, stdin=None):
        e = dict(self.env)
        e.update({k: str(v) for k, v in (env or {}).items()})
        p = subprocess.run([os.path.join(SHIM, argv[0])] + list(argv[1:]), cwd=self.work, env=e,
                           input=stdin, capture_output=True, text=True, timeout=30)
        return p.returncode, p.stdout, p.stderr

    def script(self, name, body):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(body)
        return name

    def qsub(self, *argv, env=None):
        rc, out, err = self.run("qsub", *argv, env=env)
        assert rc == 0, (rc, out, err)
        assert err == ""
        jid = out.strip()
        assert re.match(r"^\d+\.shim$", jid), out
        return jid

    def status(self, *ids, x=True):
        argv = ["qstat", "-f", "-F", "json"] + (["-x"] if x else []) + list(ids)
        rc, out, err = self.run(*argv)
        return rc, json.loads(out), err

    def job(self, jid):
        rc, doc, err = self.status(jid)
        assert rc == 0, err
        return doc["Jobs"][jid]

    def wait(self, jid, states="F", timeout=15):
        end = time.time() + timeout
        while True:
            job = self.job(jid)
            if job["job_state"] in states:
                return job
            assert time.time() < end, "job %s still %s" % (jid, job["job_state"])
            time.sleep(0.05)

    def read(self, name):
        with open(os.path.join(self.work, name)) as f:
            return f.read()

    def leftovers(self):
        """Processes whose environment names this test's state directory."""
        needle = ("FERRY_PBS_SHIM_DIR=" + self.dir).encode() + b"\0"
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    envb = f.read() + b"\0"
                with open("/proc/%s/stat" % pid) as f:
                    zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                continue
            if needle in envb and not zombie:
                found.append(int(pid))
        return found

    def assert_clean(self, timeout=5):
        end = time.time() + timeout
        while self.leftovers():
            assert time.time() < end, "processes left behind: %s" % self.leftovers()
            time.sleep(0.05)


def shim_for(tmp_path, **env):
    return Shim(tmp_path, **env)


# --------------------------------------------------------------------------------------

def test_job_runs_with_directives_env_and_nodefile(tmp_path):
    s = shim_for(tmp_path)
    s.script("job.sh", "#!/bin/bash\n"
             "# a comment before the directives is fine\n"
             "#PBS -N first\n"
             "#PBS -l walltime=00:01:00\n"
             "#PBS -l select=2:ncpus=2\n"
             "#PBS -o out.txt\n"
             "#PBS -e err.txt\n"
             "#PBS -m n\n"
             "echo \"id=$PBS_JOBID name=$PBS_JOBNAME q=$PBS_QUEUE env=$PBS_ENVIRONMENT\"\n"
             "echo \"wd=$PBS_O_WORKDIR pwd=$(pwd) tmp=$TMPDIR\"\n"
             "test -d \"$TMPDIR\" && echo tmpdir-exists\n"
             "wc -l < $PBS_NODEFILE\n"
             "echo to-stderr >&2\n"
             "#PBS -N ignored-after-first-command\n")
    jid = s.qsub("job.sh")
    job = s.wait(jid)
    out = s.read("out.txt")
    assert "id=%s name=first q=workq env=PBS_BATCH" % jid in out
    assert "wd=%s pwd=%s" % (s.work, s.work) in out
    assert "tmpdir-exists" in out
    assert out.strip().endswith("2")  # one node-file line per select chunk
    assert s.read("err.txt") == "to-stderr\n"
    assert job["Job_Name"] == "first"
    assert job["Exit_status"] == 0
    assert job["substate"] == 92
    assert job["comment"].startswith("Job run at ") and job["comment"].endswith(" and finished")
    assert job["Resource_List"] == {"ncpus": 4, "nodect": 2, "place": "pack",
                                    "select": "2:ncpus=2", "walltime": "00:01:00"}
    assert job["Mail_Points"] == "n"
    assert job["Submit_arguments"] == "job.sh"
    assert re.match(r"^\d\d:\d\d:\d\d$", job["resources_used"]["walltime"])
    assert re.match(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$", job["stime"])
    assert "exec_host" in job and "obittime" in job
    s.assert_clean()


def test_qstat_json_text_is_in_the_old_openpbs_layout(tmp_path):
    s = shim_for(tmp_path)
    s.script("j.sh", "exit 0\n")
    jid = s.qsub("j.sh")
    s.wait(jid)
    rc, out, err = s.run("qstat", "-f", "-F", "json", "-x", jid)
    assert rc == 0 and err == ""
    lines = out.split("\n")
    assert lines[0] == "{"
    assert re.match(r'^    "timestamp":\d+,$', lines[1])
    assert lines[2] == '    "pbs_version":"22.05.11",'
    assert lines[3] == '    "pbs_server":"shim",'
    assert lines[4] == '    "Jobs":{'
    assert lines[5] == '        "%s":{' % jid
    assert lines[6] == '            "Job_Name":"j.sh",'
    assert '            "Exit_status":0,' in lines
    assert out.endswith("    }\n}\n")
    assert list(json.loads(out)) == ["timestamp", "pbs_version", "pbs_server", "Jobs"]
    s.assert_clean()


def test_nonzero_exit_is_recorded(tmp_path):
    s = shim_for(tmp_path)
    s.script("fail.sh", "sleep 60 &\nexit 3\n")  # the straggler is killed at job end
    jid = s.qsub("fail.sh")
    job = s.wait(jid)
    assert job["Exit_status"] == 3
    assert job["substate"] == 93
    assert job["comment"].endswith(" and failed")
    s.assert_clean()


def test_walltime_is_enforced_with_term_then_kill(tmp_path):
    # a 1-second walltime keeps the test short; the job ignores SIGTERM so the
    # SIGKILL after FERRY_PBS_SHIM_KILL_WAIT_SECS is what ends it
    s = shim_for(tmp_path, FERRY_PBS_SHIM_KILL_WAIT_SECS=1)
    s.script("slow.sh", "#PBS -l walltime=1\n#PBS -j oe\n"
             "trap 'echo got-term' TERM\n"
             "sleep 30 & wait; sleep 30 & wait\n")
    jid = s.qsub("slow.sh")
    start = time.time()
    job = s.wait(jid, timeout=10)
    assert 1.9 <= time.time() - start < 5
    assert job["Exit_status"] == -29
    assert job["substate"] == 93
    assert job["comment"].endswith(" and exceeded resource walltime")
    seq = jid.split(".")[0]
    out = s.read("slow.sh.o%s" % seq)
    assert re.search(r"^=>> PBS: job killed: walltime \d+ exceeded limit 1$", out, re.M)
    assert "got-term" in out
    s.assert_clean()


def test_qdel_running_job_and_errors_after(tmp_path):
    s = shim_for(tmp_path)
    s.script("long.sh", "sleep 60\n")
    jid = s.qsub("long.sh")
    s.wait(jid, "R")
    assert s.leftovers()  # supervisor and job are there while it runs
    rc, out, err = s.run("qdel", jid)
    assert (rc, out, err) == (0, "", "")
    job = s.wait(jid)
    assert job["Exit_status"] == 271  # 256 + SIGTERM: the job shell died of the signal
    assert job["substate"] == 91
    assert re.search(r" and terminated by \S+@\S+$", job["comment"])
    assert s.run("qdel", jid) == (35, "", "qdel: Job has finished %s\n" % jid)
    assert s.run("qdel", "999") == (153, "", "qdel: Unknown Job Id 999.shim\n")
    # the last failing operand decides the exit status
    rc, out, err = s.run("qdel", "999", jid)
    assert rc == 35 and err.count("\n") == 2
    s.assert_clean()


def test_qdel_queued_job_has_no_exit_status(tmp_path):
    s = shim_for(tmp_path, FERRY_PBS_SHIM_QUEUE_DELAY_SECS=30)
    s.script("q.sh", "echo never\n")
    jid = s.qsub("q.sh")
    job = s.job(jid)
    assert job["job_state"] == "Q" and job["substate"] == 10
    assert job["comment"].startswith("Not Running: Insufficient amount of resource: ncpus")
    assert "etime" in job and "stime" not in job
    assert s.run("qdel", jid)[0] == 0
    job = s.job(jid)
    assert job["job_state"] == "F" and job["substate"] == 91
    assert "Exit_status" not in job and "resources_used" not in job
    assert job["comment"].endswith(" and terminated")
    s.assert_clean()


def test_queue_delay_then_run(tmp_path):
    s = shim_for(tmp_path, FERRY_PBS_SHIM_QUEUE_DELAY_SECS=0.5)
    s.script("d.sh", "exit 0\n")
    jid = s.qsub("d.sh")
    assert s.job(jid)["job_state"] == "Q"
    job = s.wait(jid)
    assert job["Exit_status"] == 0
    s.assert_clean()


def test_unknown_queue_and_bad_requests(tmp_path):
    s = shim_for(tmp_path, FERRY_PBS_SHIM_QUEUES="workq,debug",
                 FERRY_PBS_SHIM_MAX_NODES=4, FERRY_PBS_SHIM_MAX_WALLTIME="01:00:00")
    s.script("j.sh", "exit 0\n")
    assert s.run("qsub", "-q", "nosuch", "j.sh") == (170, "", "qsub: Unknown queue\n")
    assert s.run("qsub", "-l", "walltime=1:xx", "j.sh") == (
        166, "", "qsub: Illegal attribute or resource value Resource_List.walltime\n")
    assert s.run("qsub", "-l", "select=1:ncpus=1:walltime=10", "j.sh") == (
        166, "", "qsub: Illegal attribute or resource value Resource_List.select\n")
    assert s.run("qsub", "-l", "foo=1", "j.sh") == (
        187, "", "qsub: Unknown resource Resource_List.foo\n")
    assert s.run("qsub", "-l", "select=5:ncpus=1", "j.sh") == (
        188, "", "qsub: Job violates queue and/or server resource limits\n")
    assert s.run("qsub", "-l", "walltime=02:00:00", "j.sh")[0] == 188
    assert s.run("qsub", "missing.sh") == (1, "", "qsub: script file:: No such file or directory\n")
    rc, _, err = s.run("qsub", "-l", "walltime", "j.sh")
    assert rc == 2 and err.startswith("qsub: illegal -l value\n")
    # directives in the script are checked the same way
    s.script("badq.sh", "#PBS -q nosuch\nexit 0\n")
    assert s.run("qsub", "badq.sh")[0] == 170
    # the command line wins over a directive
    assert s.run("qsub", "-q", "debug", "badq.sh")[0] == 0
    jid = s.qsub("-q", "debug", "-A", "proj1", "j.sh")
    job = s.wait(jid)
    assert job["queue"] == "debug" and job["Account_Name"] == "proj1"
    assert job["Submit_arguments"] == "-q debug -A proj1 j.sh"
    # refused submissions leave no job record
    assert len([n for n in os.listdir(os.path.join(s.dir, "jobs")) if n.endswith(".json")]) == 2
    s.assert_clean()


def test_held_job_runs_after_qrls(tmp_path):
    s = shim_for(tmp_path)
    s.script("h.sh", "echo released\n")
    jid = s.qsub("-h", "h.sh")
    job = s.job(jid)
    assert job["job_state"] == "H" and job["Hold_Types"] == "u" and job["substate"] == 20
    assert "etime" not in job
    time.sleep(0.3)
    assert s.job(jid)["job_state"] == "H"
    assert s.leftovers() == []  # a held job has no supervisor until it is released
    assert s.run("qrls", jid) == (0, "", "")
    job = s.wait(jid)
    assert job["Exit_status"] == 0 and job["Hold_Types"] == "n"
    assert s.read("h.sh.o%s" % jid.split(".")[0]) == "released\n"
    assert s.run("qrls", jid) == (35, "", "qrls: Job has finished\n")
    assert s.run("qrls", "77") == (153, "", "qrls: Unknown Job Id 77.shim\n")
    s.assert_clean()


def test_pbsdsh_runs_once_per_chunk(tmp_path):
    s = shim_for(tmp_path)
    s.script("dsh.sh", "#PBS -l select=2:ncpus=1\n#PBS -j oe\n#PBS -N dsh\n"
             "pbsdsh -- bash -c 'echo task node=$PBS_NODENUM vnode=$PBS_VNODENUM; "
             "exit $PBS_VNODENUM'\n"
             "echo pbsdsh-rc=$?\n"
             "FERRY_PBS_SHIM_PBSDSH_STRICT=1 pbsdsh -- false\n"
             "echo strict-rc=$?\n")
    jid = s.qsub("dsh.sh")
    job = s.wait(jid)
    out = s.read("dsh.o%s" % jid.split(".")[0])
    tasks = sorted(ln for ln in out.splitlines() if ln.startswith("task "))
    assert tasks == ["task node=0 vnode=0", "task node=1 vnode=1"]
    assert "pbsdsh: task 0x00000001 exit status 1" in out
    assert "pbsdsh-rc=0" in out  # real pbsdsh exits 0 whatever its tasks did
    assert "strict-rc=1" in out
    assert job["Exit_status"] == 0
    # outside a job (no PBS_ENVIRONMENT) it refuses
    e = dict(s.env)
    e.pop("PBS_ENVIRONMENT", None)
    p = subprocess.run([os.path.join(SHIM, "pbsdsh"), "--", "true"], env=e,
                       capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr == "pbsdsh: not executing under PBS\n"
    s.assert_clean()


def test_qstat_errors_and_partial_output(tmp_path):
    s = shim_for(tmp_path)
    s.script("j.sh", "exit 0\n")
    done = s.qsub("j.sh")
    s.wait(done)
    # an unknown id next to a known one: JSON for the known one, message, rc 153
    rc, doc, err = s.status(done, "4242")
    assert rc == 153 and err == "qstat: Unknown Job Id 4242.shim\n"
    assert list(doc["Jobs"]) == [done]
    # nothing found: no "Jobs" key at all
    rc, doc, err = s.status("4242")
    assert rc == 153 and list(doc) == ["timestamp", "pbs_version", "pbs_server"]
    # a finished job without -x
    rc, doc, err = s.status(done, x=False)
    assert rc == 35 and "Jobs" not in doc
    assert err == ("qstat: %s Job has finished, use -x or -H to obtain historical job "
                   "information\n" % done)
    # -F json needs -f
    rc, out, err = s.run("qstat", "-F", "json", done)
    assert rc == 2 and out == "" and err.startswith("qstat: conflicting options.\n")
    # a short id resolves to the full one
    rc, doc, err = s.status(done.split(".")[0])
    assert rc == 0 and list(doc["Jobs"]) == [done]
    # plain tables
    rc, out, err = s.run("qstat")
    assert (rc, out, err) == (0, "", "")
    rc, out, err = s.run("qstat", "-x")
    assert rc == 0 and out.splitlines()[0].startswith("Job id            Name")
    assert re.search(r"^%s\s+j\.sh\s+\S+\s+\S+ F workq" % re.escape(done), out, re.M)
    # qdel -x purges the history: then even -x does not know the job
    assert s.run("qdel", "-x", done) == (0, "", "")
    rc, doc, err = s.status(done)
    assert rc == 153 and err == "qstat: Unknown Job Id %s\n" % done
    s.assert_clean()


def test_history_expiry_and_server_down(tmp_path):
    s = shim_for(tmp_path)
    s.script("j.sh", "exit 0\n")
    jid = s.qsub("j.sh")
    s.wait(jid)
    rc, out, err = s.run("qstat", "-f", "-F", "json", "-x", jid,
                         env={"FERRY_PBS_SHIM_HISTORY_SECS": 0})
    assert rc == 153 and err == "qstat: Unknown Job Id %s\n" % jid
    down = {"FERRY_PBS_SHIM_DOWN": 1}
    rc, out, err = s.run("qstat", "-f", "-F", "json", "-x", jid, env=down)
    assert rc == 255 and list(json.loads(out)) == ["timestamp", "pbs_version", "pbs_server"]
    assert err == "Connection refused\nqstat: cannot connect to server shim (errno=15010)\n"
    assert s.run("qsub", "j.sh", env=down)[0] == 162
    assert s.run("qdel", jid, env=down)[0] == 162
    s.assert_clean()


def test_json_value_typing_follows_strtod():
    num = _pbsshim.json_is_number
    for v in ("0", "-29", "271", "1", "0.5", "1e5", "4294967296"):
        assert num(v), v
    for v in ("00:00:05", "True", "07", "0x1A", "", " ", "1:ncpus=1", "12.shim", "4gb"):
        assert not num(v), v
    out = _pbsshim.JsonOut()
    out.open("A")
    out.attr("x", "5")
    out.attr("y", 'say "hi"\n')
    out.close()
    assert out.text() == '{\n    "A":{\n        "x":5,\n        "y":"say \\"hi\\"\\n"\n    }\n}\n'


# --------------------------------------------------------------------------------------
# plain runner, for machines without pytest

if __name__ == "__main__":
    import inspect
    import pathlib
    import traceback

    failed = passed = 0
    for name, fn in sorted(globals().items()):
        if not name.startswith("test_") or not callable(fn):
            continue
        with tempfile.TemporaryDirectory() as td:
            try:
                if inspect.signature(fn).parameters:
                    fn(pathlib.Path(td))
                else:
                    fn()
                passed += 1
                print("PASS", name)
            except Exception:
                failed += 1
                print("FAIL", name)
                traceback.print_exc()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)
