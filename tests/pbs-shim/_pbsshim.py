"""Shared code of the PBS Pro / OpenPBS command shim (qsub, qstat, qdel, qrls, pbsdsh).

Standard library only. Each command is a tiny executable in this directory that
imports this module and calls one of the ``main_*`` functions.

State lives in ``$FERRY_PBS_SHIM_DIR`` (required):

    lock              flock(2) taken for every read-modify-write of the state
    seq               next job sequence number
    jobs/<seq>.json   one record per job (written atomically: temp file + rename)
    jobs/<seq>.d/     the job's copy of the script, TMPDIR, supervisor.log
    aux/<jobid>       the job's PBS_NODEFILE while it runs

A job is run by a small per-job supervisor process (double fork + setsid) that qsub
(or qrls, for a held job) starts. It waits out the optional queue delay, starts the
script in a new session, enforces the walltime, and records the exit. There is no
long-lived daemon. See README.md for what is emulated and what is not.
"""

import fcntl
import json
import math
import os
import pwd
import re
import shlex
import signal
import socket
import sys
import time
import traceback

# --------------------------------------------------------------------------------------
# PBS error numbers (src/include/pbs_error.h). A command exits with the number & 0xff,
# because exit(3) keeps only the low byte: 15001 -> 153, 15139 -> 35, and so on.
PBSE_UNKJOBID = 15001  # "Unknown Job Id"
PBSE_SYSTEM = 15010  # what a refused connection leaves in pbs_errno
PBSE_BADATVAL = 15014  # "Illegal attribute or resource value"
PBSE_BADSTATE = 15016  # "Request invalid for state of job"
PBSE_UNKQUE = 15018  # "Unknown queue"
PBSE_UNKRESC = 15035  # "Unknown resource"
PBSE_EXCQRESC = 15036  # "Job violates queue and/or server resource limits"
PBSE_HISTJOBID = 15139  # "Job has finished"

MSG = {
    PBSE_UNKJOBID: "Unknown Job Id",
    PBSE_BADATVAL: "Illegal attribute or resource value",
    PBSE_BADSTATE: "Request invalid for state of job",
    PBSE_UNKQUE: "Unknown queue",
    PBSE_UNKRESC: "Unknown resource",
    PBSE_EXCQRESC: "Job violates queue and/or server resource limits",
    PBSE_HISTJOBID: "Job has finished",
}

JOB_EXEC_KILL_WALLTIME = -29  # src/include/job.h, recorded since OpenPBS 22.05

# Job substates (src/include/job.h) shown as "substate" by qstat -f.
SUB_QUEUED, SUB_HELD, SUB_RUNNING, SUB_EXITING = 10, 20, 42, 50
SUB_TERMINATED, SUB_FINISHED, SUB_FAILED = 91, 92, 93

# Resources the shim's "server" knows (anything else on -l is "Unknown resource").
JOB_RESOURCES = {
    "walltime", "select", "place", "ncpus", "mem", "vmem", "mpiprocs", "ompthreads",
    "ngpus", "nodes", "cput", "pcput", "software", "host", "vnode", "arch", "nice",
    "pmem", "pvmem", "file", "soft_walltime", "min_walltime", "max_walltime",
    "preempt_targets", "naccelerators", "accelerator", "accelerator_model",
    "accelerator_memory", "nodect", "nchunk",
}
# Job-wide resources that must not appear inside a select chunk.
NOT_IN_CHUNK = {"walltime", "place", "select", "nodect", "cput", "pcput", "soft_walltime",
                "min_walltime", "max_walltime", "nodes", "preempt_targets", "software"}
INT_RESOURCES = {"ncpus", "mpiprocs", "ompthreads", "ngpus", "naccelerators", "nice"}
SIZE_RESOURCES = {"mem", "vmem", "pmem", "pvmem", "file", "accelerator_memory"}
TIME_RESOURCES = {"walltime", "cput", "pcput", "soft_walltime", "min_walltime", "max_walltime"}


# --------------------------------------------------------------------------------------
# configuration

def env_float(name, default):
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    try:
        return float(v)
    except ValueError:
        return default


def server_name():
    return os.environ.get("FERRY_PBS_SHIM_SERVER", "shim") or "shim"


def pbs_version():
    return os.environ.get("FERRY_PBS_SHIM_VERSION", "22.05.11")


def queues():
    qs = [q.strip() for q in os.environ.get("FERRY_PBS_SHIM_QUEUES", "workq").split(",")]
    return [q for q in qs if q] or ["workq"]


def this_host():
    return socket.gethostname().split(".")[0] or "localhost"


def full_host():
    h = socket.gethostname() or "localhost"
    try:
        fq = socket.getfqdn(h)
    except OSError:
        fq = h
    if not fq or (fq.startswith("localhost") and not h.startswith("localhost")):
        fq = h
    return fq


def user_name():
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER", str(os.getuid()))


def home_dir():
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return os.environ.get("HOME", "/")


def server_down():
    return os.environ.get("FERRY_PBS_SHIM_DOWN", "") not in ("", "0")


# --------------------------------------------------------------------------------------
# state directory

def state_dir(cmd):
    d = os.environ.get("FERRY_PBS_SHIM_DIR", "")
    if not d:
        sys.stderr.write("%s: FERRY_PBS_SHIM_DIR is not set (PBS shim)\n" % cmd)
        sys.exit(2)
    d = os.path.abspath(d)
    for sub in ("", "jobs", "aux"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    return d


class Lock:
    def __init__(self, d):
        self.path = os.path.join(d, "lock")
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def rec_path(d, seq):
    return os.path.join(d, "jobs", "%d.json" % seq)


def job_dir(d, seq):
    return os.path.join(d, "jobs", "%d.d" % seq)


def load(d, seq):
    try:
        with open(rec_path(d, seq)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save(d, rec):
    path = rec_path(d, rec["seq"])
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(rec, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def all_seqs(d):
    out = []
    for name in os.listdir(os.path.join(d, "jobs")):
        m = re.match(r"^(\d+)\.json$", name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def next_seq(d):
    """Allocate a sequence number; caller holds the lock."""
    p = os.path.join(d, "seq")
    try:
        with open(p) as f:
            n = int(f.read().strip() or "0")
    except (OSError, ValueError):
        n = int(env_float("FERRY_PBS_SHIM_FIRST_SEQ", 0))
    with open(p + ".tmp", "w") as f:
        f.write("%d\n" % (n + 1))
    os.replace(p + ".tmp", p)
    return n


def purged(rec, now=None):
    """A finished job whose history has expired (job_history_duration) is gone."""
    if rec is None:
        return True
    if rec.get("purged"):
        return True
    if rec["state"] != "F":
        return False
    keep = env_float("FERRY_PBS_SHIM_HISTORY_SECS", -1)
    if keep < 0:
        return False
    return (now or time.time()) - rec.get("history_timestamp", rec["mtime"]) > keep


# --------------------------------------------------------------------------------------
# job identifiers

def parse_jobid(op):
    """'12', '12.srv', '12.srv@host' -> (seq, full id as PBS prints it) or None."""
    m = re.match(r"^(\d+)(?:\.([^@]*))?(?:@(.*))?$", op)
    if not m:
        return None
    seq = int(m.group(1))
    srv = m.group(2) or ""
    if not srv and m.group(3):
        srv = m.group(3)
    if not srv:
        srv = server_name()
    return seq, "%s.%s" % (m.group(1), srv), srv


def server_matches(srv):
    s = server_name()
    return srv == s or s.startswith(srv + ".") or srv.startswith(s + ".")


def find(d, op):
    """Resolve an operand to (rec or None, full id)."""
    p = parse_jobid(op)
    if p is None:
        return None, op
    seq, full, srv = p
    if not server_matches(srv):
        return None, full
    rec = load(d, seq)
    if rec is None or purged(rec):
        return None, full
    return rec, rec["id"]


# --------------------------------------------------------------------------------------
# time and size formats

def hms(secs):
    """PBS 'time' type: HH:MM:SS, hours not limited to two digits."""
    secs = max(0, int(secs))
    return "%02d:%02d:%02d" % (secs // 3600, (secs // 60) % 60, secs % 60)


def parse_time(v):
    """[[HH:]MM:]SS[.frac] -> seconds, or None."""
    m = re.match(r"^\s*(?:(?:(\d+):)?(\d+):)?(\d+)(?:\.\d*)?\s*$", v)
    if not m:
        return None
    h, mnt, s = (int(x) if x else 0 for x in m.groups())
    return h * 3600 + mnt * 60 + s


def ctime_str(t):
    # Same text as C ctime(3) without the newline: "Thu Jan  1 00:00:00 2024".
    return time.ctime(t)


def comment_time(t):
    # The server's "Job run at %a %b %d at %H:%M" (zero-padded day, unlike ctime).
    return time.strftime("%a %b %d at %H:%M", time.localtime(t))


_SIZE = re.compile(r"^(\d+)(b|kb|mb|gb|tb|pb|w|kw|mw|gw|tw|pw)?$", re.I)
_UNITS = ["kb", "mb", "gb", "tb", "pb"]


def size_kb(v):
    m = _SIZE.match(v.strip())
    if not m:
        return None
    n = int(m.group(1))
    unit = (m.group(2) or "b").lower()
    word = unit.endswith("w") and unit != "b"
    unit = unit[:-1] + "b" if word else unit
    mult = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}[unit]
    nbytes = n * mult * (8 if word else 1)
    return (nbytes + 1023) // 1024


def size_str(kb):
    unit = 0
    while unit + 1 < len(_UNITS) and kb and kb % 1024 == 0:
        kb //= 1024
        unit += 1
    return "%d%s" % (kb, _UNITS[unit])


# --------------------------------------------------------------------------------------
# the JSON printer of qstat -F json in OpenPBS up to 23.06 (src/lib/Libcmds/pbs_json.c):
# 4-space indent, "key":value with no space, values typed by a strtod() test.

_STRTOD = re.compile(
    r"""\s*[+-]?(?:
        0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?
      | (?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?
      | inf(?:inity)?
      | nan(?:\([0-9A-Za-z_]*\))?
    )""", re.X | re.I)


def _strtod(v):
    m = _STRTOD.match(v)
    if not m:
        return None, v
    text = m.group(0).strip()
    try:
        if re.match(r"^[+-]?0[xX]", text):
            val = float.fromhex(text)
        else:
            val = float(text)
    except (ValueError, OverflowError):
        return None, v
    return val, v[m.end():]


def json_is_number(v):
    """True when qstat would print the raw value unquoted."""
    if v.strip() == "":
        return False
    val, rest = _strtod(v)
    if val is None or rest.strip(" \t\n\r\f\v") != "":
        return False
    return v[0] != "0" or val < 1


def _nonprint(s):
    return "".join("^" + chr(ord(c) + 64) if ord(c) < 32 and c not in "\n\t" else c for c in s)


def json_escape(s):
    """strdup_escape(JSON_ESCAPE) followed by show_nonprint_chars()."""
    out = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in "\b\f\n\r\t":
            out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}[c])
            i += 1
        elif c == '"':
            if i > 0 and s[i - 1] != "\\":
                out.append("\\")
            out.append('"')
            i += 1
        elif c == "\\":
            nxt = s[i + 1] if i + 1 < n else ""
            if nxt in ("'", ","):
                out.append(nxt)
                i += 2
            else:
                out.append("\\")
                if nxt:
                    out.append(nxt)
                i += 2 if nxt else 1
        else:
            out.append(c)
            i += 1
    return _nonprint("".join(out))


def json_full_escape(s):
    return _nonprint("".join({"\\": "\\\\", '"': '\\"', "\b": "\\b", "\f": "\\f", "\n": "\\n",
                              "\r": "\\r", "\t": "\\t"}.get(c, c) for c in s))


class JsonOut:
    """Emits text the way generate_json() does, node by node."""

    def __init__(self):
        self.parts = ["{"]
        self.indent = 4
        self.comma = False

    def _lead(self):
        self.parts.append(",\n" if self.comma else "\n")
        self.parts.append(" " * self.indent)

    def attr(self, key, value):
        """An attribute value typed by the strtod() rule."""
        self._lead()
        if json_is_number(value):
            self.parts.append('"%s":%s' % (key, value))
        else:
            self.parts.append('"%s":"%s"' % (key, json_escape(value)))
        self.comma = True

    def integer(self, key, n):
        self._lead()
        self.parts.append('"%s":%d' % (key, n))
        self.comma = True

    def string(self, key, s):
        self._lead()
        self.parts.append('"%s":"%s"' % (key, json_full_escape(s)))
        self.comma = True

    def open(self, key):
        self._lead()
        self.parts.append('"%s":{' % key)
        self.indent += 4
        self.comma = False

    def close(self):
        self.indent -= 4
        self.parts.append("\n" + " " * self.indent + "}")
        self.comma = True

    def text(self):
        return "".join(self.parts) + "\n}\n"


# --------------------------------------------------------------------------------------
# qstat attribute lists (order = job attribute order of the server)

def resources_used(rec, now):
    if rec.get("stime") is None:
        return None
    if rec["state"] in ("R",):
        wall = now - rec["stime"]
        used = {"cpupercent": "0", "cput": "00:00:00", "mem": "0kb", "vmem": "0kb",
                "walltime": hms(wall)}
    else:
        used = dict(rec.get("used") or {})
        if not used:
            return None
    used["ncpus"] = str(rec["resource_list"].get("ncpus", "1"))
    return [(k, used[k]) for k in sorted(used)]


def job_attrs(rec, now):
    """[(name, value-or-list-of-(resource, value))] in the server's attribute order."""
    a = []
    add = a.append
    add(("Job_Name", rec["name"]))
    add(("Job_Owner", rec["owner"]))
    used = resources_used(rec, now)
    if used and rec["state"] in ("R", "E", "F"):
        add(("resources_used", used))
    add(("job_state", rec["state"]))
    add(("queue", rec["queue"]))
    add(("server", rec["server"]))
    if rec.get("account"):
        add(("Account_Name", rec["account"]))
    add(("Checkpoint", "u"))
    add(("ctime", ctime_str(rec["ctime"])))
    add(("Error_Path", rec["error_path"]))
    if rec.get("exec_host"):
        add(("exec_host", rec["exec_host"]))
        add(("exec_vnode", rec["exec_vnode"]))
    add(("Hold_Types", rec["hold_types"]))
    add(("Join_Path", rec["join"]))
    add(("Keep_Files", rec["keep"]))
    add(("Mail_Points", rec["mail_points"]))
    if rec.get("mail_users"):
        add(("Mail_Users", rec["mail_users"]))
    add(("mtime", ctime_str(rec["mtime"])))
    add(("Output_Path", rec["output_path"]))
    add(("Priority", str(rec.get("priority", 0))))
    add(("qtime", ctime_str(rec["qtime"])))
    add(("Rerunable", rec.get("rerunable", "True")))
    rl = rec["resource_list"]
    add(("Resource_List", [(k, str(rl[k])) for k in sorted(rl)]))
    if rec.get("stime") is not None:
        add(("stime", ctime_str(rec["stime"])))
    if rec.get("obittime") is not None:
        add(("obittime", ctime_str(rec["obittime"])))
    if rec.get("session_id") and rec["state"] in ("R", "E"):
        add(("session_id", str(rec["session_id"])))
    if rec.get("shell_path"):
        add(("Shell_Path_List", rec["shell_path"]))
    if rec.get("stime") is not None:
        add(("jobdir", rec.get("jobdir", home_dir())))
    add(("substate", str(rec["substate"])))
    add(("Variable_List", [tuple(kv) for kv in rec["variable_list"]]))
    if rec.get("comment"):
        add(("comment", rec["comment"]))
    if rec.get("etime") is not None:
        add(("etime", ctime_str(rec["etime"])))
    if rec.get("run_count"):
        add(("run_count", str(rec["run_count"])))
    if rec["state"] == "F" and rec.get("stime") is not None:
        add(("Stageout_status", "1"))
    if rec.get("exit_status") is not None and rec["state"] in ("E", "F"):
        add(("Exit_status", str(rec["exit_status"])))
    add(("Submit_arguments", rec["submit_args"]))
    if rec["state"] == "F" and rec.get("history_timestamp") is not None:
        add(("history_timestamp", str(int(rec["history_timestamp"]))))
    add(("project", rec.get("project") or "_pbs_project_default"))
    add(("Submit_Host", rec["submit_host"]))
    return a


def json_job(out, rec, now):
    out.open(rec["id"])
    for name, value in job_attrs(rec, now):
        if isinstance(value, list):
            out.open(name)
            for k, v in value:
                out.attr(k, v)
            out.close()
        else:
            out.attr(name, value)
    out.close()


def text_job(rec, now):
    lines = ["Job Id: %s" % rec["id"]]
    for name, value in job_attrs(rec, now):
        if name == "Variable_List":
            joined = ",".join("%s=%s" % (k, v.replace(",", "\\,")) for k, v in value)
            lines.append("    %s = %s" % (name, joined))
        elif isinstance(value, list):
            for k, v in value:
                lines.append("    %s.%s = %s" % (name, k, v))
        else:
            lines.append("    %s = %s" % (name, value))
    return "\n".join(lines) + "\n\n"


def table_row(rec, now=None):
    jid = rec["id"]
    seq, _, srv = jid.partition(".")
    short = seq + ("." + srv.split(".")[0] if srv else "")
    if len(short) > 17:
        short = short[:16] + "*"
    name = rec["name"] if len(rec["name"]) < 16 else rec["name"][:15] + "*"
    owner = rec["owner"].split("@")[0]
    if len(owner) > 16:
        owner = owner[:15] + "*"
    used = dict(resources_used(rec, now or time.time()) or [])
    timeu = used.get("cput") or "0"
    return "%-17s %-16s %-16s  %8s %1s %-16s\n" % (short, name, owner, timeu, rec["state"],
                                                   rec["queue"])


TABLE_HEAD = ("Job id            Name             User              Time Use S Queue\n"
              "----------------  ---------------- ----------------  -------- - -----\n")


# --------------------------------------------------------------------------------------
# command: qstat

QSTAT_USAGE = ("usage: (PBS shim)\n"
               "qstat [-f] [-x] [-F json] [-w] [ job_identifier... ]\n"
               "qstat --version\n")


def main_qstat(argv):
    full = hist = False
    fmt = "default"
    ops = []
    err = 0
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--version":
            print("pbs_version = %s" % pbs_version())
            return 0
        if a == "--":
            ops.extend(argv[i + 1:])
            break
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                c = a[j]
                if c == "f":
                    full = True
                elif c == "x":
                    hist = True
                elif c in "wtJ1":
                    pass
                elif c == "F":
                    val = a[j + 1:]
                    if not val:
                        i += 1
                        val = argv[i] if i < len(argv) else ""
                    if val not in ("json", "dsv", "default"):
                        err += 1
                    fmt = val
                    break
                else:
                    sys.stderr.write("qstat: invalid option -- '%s'\n" % c)
                    err += 1
                j += 1
        else:
            ops.append(a)
        i += 1
    if fmt != "default" and not full:
        sys.stderr.write("qstat: conflicting options.\n")
        err += 1
    if fmt == "dsv":
        sys.stderr.write("qstat: -F dsv is not emulated by the PBS shim\n")
        err += 1
    if err:
        sys.stderr.write(QSTAT_USAGE)
        return 2

    d = state_dir("qstat")
    now = time.time()
    out = JsonOut() if fmt == "json" else None
    if out:
        out.integer("timestamp", int(now))
        out.string("pbs_version", pbs_version())
        out.string("pbs_server", server_name())
    if server_down():
        if out:
            sys.stdout.write(out.text())
        sys.stderr.write("Connection refused\nqstat: cannot connect to server %s (errno=%d)\n"
                         % (server_name(), PBSE_SYSTEM))
        return 255

    shown = []
    any_failed = 0
    if not ops:
        for seq in all_seqs(d):
            rec = load(d, seq)
            if rec is None or purged(rec, now):
                continue
            if rec["state"] == "F" and not hist:
                continue
            shown.append(rec)
    else:
        for op in ops:
            if not op[:1].isdigit():  # a destination: the jobs of a queue
                queue = op.split("@", 1)[0]
                if queue and queue not in queues():
                    sys.stderr.write("qstat: %s %s\n" % (MSG[PBSE_UNKQUE], op))
                    any_failed = PBSE_UNKQUE
                    continue
                for seq in all_seqs(d):
                    rec = load(d, seq)
                    if rec is None or purged(rec, now) or (rec["state"] == "F" and not hist):
                        continue
                    if not queue or rec["queue"] == queue:
                        shown.append(rec)
                continue
            rec, full_id = find(d, op)
            if rec is None:
                sys.stderr.write("qstat: %s %s\n" % (MSG[PBSE_UNKJOBID], full_id))
                any_failed = PBSE_UNKJOBID
            elif rec["state"] == "F" and not hist:
                sys.stderr.write("qstat: %s %s, use -x or -H to obtain historical job "
                                 "information\n" % (full_id, MSG[PBSE_HISTJOBID]))
                any_failed = PBSE_HISTJOBID
            else:
                shown.append(rec)

    if out:
        if shown:
            out.open("Jobs")
            for rec in shown:
                json_job(out, rec, now)
            out.close()
        sys.stdout.write(out.text())
    elif full:
        sys.stdout.write("".join(text_job(rec, now) for rec in shown))
    elif shown:
        sys.stdout.write(TABLE_HEAD + "".join(table_row(rec, now) for rec in shown))
    sys.stdout.flush()
    return any_failed & 0xFF


# --------------------------------------------------------------------------------------
# command: qdel

def signal_job(rec, sig):
    sid = rec.get("session_id")
    if not sid:
        return
    try:
        os.killpg(int(sid), sig)
    except (ProcessLookupError, PermissionError):
        pass


def finish_unstarted(rec, now, by):
    """qdel of a queued or held job: straight to F, no Exit_status."""
    rec["state"] = "F"
    rec["substate"] = SUB_TERMINATED
    if rec.get("comment"):
        rec["comment"] += " and terminated"
    rec["mtime"] = now
    rec["history_timestamp"] = now
    rec["deleted_by"] = by


def main_qdel(argv):
    ops = []
    purge_hist = False
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "-x":
            purge_hist = True
        elif a == "-W":
            i += 1
        elif a.startswith("-W"):
            pass
        elif a == "--":
            ops.extend(argv[i + 1:])
            break
        elif a.startswith("-") and len(a) > 1:
            sys.stderr.write("usage: (PBS shim)\n\tqdel [-W force|suppress_email=X] [-x] "
                             "job_identifier...\n\tqdel --version\n")
            return 2
        else:
            ops.append(a)
        i += 1
    if not ops:
        sys.stderr.write("usage: (PBS shim)\n\tqdel [-W force|suppress_email=X] [-x] "
                         "job_identifier...\n\tqdel --version\n")
        return 2
    d = state_dir("qdel")
    if server_down():
        sys.stderr.write("Connection refused\nCouldn't connect to cluster: %s\n" % server_name())
        return PBSE_SYSTEM & 0xFF
    by = "%s@%s" % (user_name(), full_host())
    any_failed = 0
    kill_wait = env_float("FERRY_PBS_SHIM_KILL_WAIT_SECS", 5.0)
    for op in ops:
        if parse_jobid(op) is None:
            sys.stderr.write("qdel: illegally formed job identifier: %s\n" % op)
            any_failed = 1
            continue
        with Lock(d):
            rec, full_id = find(d, op)
            now = time.time()
            if rec is None:
                code = PBSE_UNKJOBID
            elif rec["state"] == "F":
                if purge_hist:
                    rec["purged"] = True
                    save(d, rec)
                    continue
                code = PBSE_HISTJOBID
            elif rec["state"] == "E":
                code = PBSE_BADSTATE
            elif rec["state"] in ("Q", "H"):
                finish_unstarted(rec, now, by)
                if purge_hist:
                    rec["purged"] = True
                save(d, rec)
                continue
            else:  # R
                if not rec.get("delete_requested"):
                    rec["delete_requested"] = now
                    rec["deleted_by"] = by
                    rec["kill_at"] = now + kill_wait
                    if purge_hist:
                        rec["purge_when_done"] = True
                    save(d, rec)
                    signal_job(rec, signal.SIGTERM)
                continue
        sys.stderr.write("qdel: %s %s\n" % (MSG[code], full_id))
        any_failed = code
    return any_failed & 0xFF


# --------------------------------------------------------------------------------------
# command: qrls

def main_qrls(argv):
    ops = []
    args = argv[1:]
    i = 0
    while i < len(args):
        if args[i] == "-h":
            i += 2
            continue
        if not args[i].startswith("-"):
            ops.append(args[i])
        i += 1
    if not ops:
        sys.stderr.write("usage: (PBS shim)\n\tqrls [-h hold_list] job_identifier ...\n")
        return 2
    d = state_dir("qrls")
    any_failed = 0
    for op in ops:
        start = None
        with Lock(d):
            rec, full_id = find(d, op)
            if rec is None:
                sys.stderr.write("qrls: %s %s\n" % (MSG[PBSE_UNKJOBID], full_id))
                any_failed = PBSE_UNKJOBID
                continue
            if rec["state"] == "F":
                sys.stderr.write("qrls: %s\n" % MSG[PBSE_HISTJOBID])
                any_failed = PBSE_HISTJOBID
                continue
            if rec["state"] == "H":
                now = time.time()
                rec["state"] = "Q"
                rec["substate"] = SUB_QUEUED
                rec["hold_types"] = "n"
                rec["etime"] = now
                rec["mtime"] = now
                rec["eligible_at"] = now + rec.get("queue_delay", 0)
                if rec.get("queue_delay", 0) > 0:
                    rec["comment"] = queue_comment(rec)
                save(d, rec)
                start = rec["seq"]
        if start is not None:
            spawn_supervisor(d, start)
    return any_failed & 0xFF


# --------------------------------------------------------------------------------------
# command: qsub

QSUB_USAGE = ("usage: (PBS shim) qsub [-A account] [-e path] [-h] [-j oe|eo|n] [-l resource_list]\n"
              "\t[-m mail_options] [-N name] [-o path] [-q queue] [-S path] [-V] [-v list]\n"
              "\t[-W attributes] [-z] [script | -- executable [args]]\n"
              "       qsub --version\n")

OPTS_WITH_ARG = set("aAcCeJjklmMNoPpqrRSuvWG")
OPTS_FLAGS = set("fhIVXz")


class QsubError(Exception):
    def __init__(self, msg, code):
        Exception.__init__(self, msg)
        self.msg = msg
        self.code = code


def parse_opts(args, opts, directive=False):
    """getopt-like; returns the remaining operands. Repeated -l/-v/-W accumulate."""
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return args[i:]
        if not a.startswith("-") or a == "-":
            return args[i:]
        c = a[1]
        if c in OPTS_FLAGS:
            opts.setdefault(c, True)
            # clustered flags like -hV
            for extra in a[2:]:
                if extra in OPTS_FLAGS:
                    opts.setdefault(extra, True)
                else:
                    raise QsubError("qsub: invalid option -- '%s'\n" % extra, 2)
            i += 1
            continue
        if c not in OPTS_WITH_ARG:
            raise QsubError("qsub: invalid option -- '%s'\n" % c, 2)
        if len(a) > 2:
            val = a[2:]
        else:
            i += 1
            if i >= len(args):
                raise QsubError("qsub: option requires an argument -- '%s'\n" % c, 2)
            val = args[i]
        if c in "lvW":
            opts.setdefault(c, []).append(val)
        else:
            opts.setdefault(c, val)
        i += 1
    return []


def split_resources(val):
    """'select=2:ncpus=4,walltime=1:00:00' -> [('select','2:ncpus=4'),('walltime','1:00:00')]"""
    out = []
    for part in val.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise QsubError("qsub: illegal -l value\n" + QSUB_USAGE, 2)
        k, v = part.split("=", 1)
        if not k or v == "":
            raise QsubError("qsub: illegal -l value\n" + QSUB_USAGE, 2)
        out.append((k.strip(), v.strip()))
    return out


def bad_value(attr, resc):
    return QsubError("qsub: %s %s.%s\n" % (MSG[PBSE_BADATVAL], attr, resc), PBSE_BADATVAL)


def parse_select(spec):
    """-> list of (count, [(key, value)])"""
    chunks = []
    for chunk in spec.split("+"):
        parts = chunk.split(":")
        count = 1
        if parts and re.match(r"^\d+$", parts[0]):
            count = int(parts[0])
            parts = parts[1:]
        if count < 1:
            raise bad_value("Resource_List", "select")
        kvs = []
        for p in parts:
            if "=" not in p:
                raise bad_value("Resource_List", "select")
            k, v = p.split("=", 1)
            if not k or not v or k in NOT_IN_CHUNK:
                raise bad_value("Resource_List", "select")
            if k in INT_RESOURCES and not re.match(r"^\d+$", v):
                raise bad_value("Resource_List", "select")
            if k in SIZE_RESOURCES and size_kb(v) is None:
                raise bad_value("Resource_List", "select")
            kvs.append((k, v))
        chunks.append((count, kvs))
    return chunks


def check_place(v):
    ok = {"free", "pack", "scatter", "vscatter", "excl", "shared", "exclhost"}
    for p in v.split(":"):
        if p in ok or p.startswith("group="):
            continue
        raise bad_value("Resource_List", "place")


def build_resources(pairs):
    """Validate -l pairs; return (resource_list dict, chunks, walltime secs or None)."""
    extra = {x.strip() for x in os.environ.get("FERRY_PBS_SHIM_RESOURCES", "").split(",") if x.strip()}
    res = {}
    for k, v in pairs:
        res[k] = v
    for k, v in res.items():
        if k not in JOB_RESOURCES and k not in extra:
            continue  # reported by the "server" later, after the queue check
        if k in TIME_RESOURCES and parse_time(v) is None:
            raise bad_value("Resource_List", k)
        if k in INT_RESOURCES and not re.match(r"^\d+$", v):
            raise bad_value("Resource_List", k)
        if k in SIZE_RESOURCES and size_kb(v) is None:
            raise bad_value("Resource_List", k)
        if k == "place":
            check_place(v)
        if k == "nodes" and not re.match(r"^\d+(:ppn=\d+)?$", v):
            raise bad_value("Resource_List", k)
        if k == "select":
            parse_select(v)
    return res


def server_resources(res):
    """The server-side part: unknown names, select defaults and sums."""
    extra = {x.strip() for x in os.environ.get("FERRY_PBS_SHIM_RESOURCES", "").split(",") if x.strip()}
    for k in res:
        if k not in JOB_RESOURCES and k not in extra:
            raise QsubError("qsub: %s Resource_List.%s\n" % (MSG[PBSE_UNKRESC], k), PBSE_UNKRESC)
    res = dict(res)
    if "nodes" in res and "select" not in res:
        m = re.match(r"^(\d+)(?::ppn=(\d+))?$", res.pop("nodes"))
        n, ppn = int(m.group(1)), int(m.group(2) or 1)
        res["select"] = "%d:ncpus=%d:mpiprocs=%d" % (n, ppn, ppn)
        res.setdefault("place", "scatter")
    if "select" in res:
        chunks = parse_select(res["select"])
        if not re.match(r"^\d+:", res["select"]):
            res["select"] = "1:" + res["select"]
    else:
        kv = [("ncpus", res.get("ncpus", "1"))]
        for k in ("mem", "mpiprocs", "ngpus"):
            if k in res:
                kv.append((k, res[k]))
        res["select"] = "1:" + ":".join("%s=%s" % p for p in kv)
        chunks = [(1, kv)]
    total = {"ncpus": 0}
    mem = {}
    nodect = 0
    for count, kvs in chunks:
        nodect += count
        d = dict(kvs)
        total["ncpus"] += count * int(d.get("ncpus", "1"))
        for k in ("mpiprocs", "ngpus"):
            if k in d:
                total[k] = total.get(k, 0) + count * int(d[k])
        for k in ("mem", "vmem"):
            if k in d:
                mem[k] = mem.get(k, 0) + count * size_kb(d[k])
    for k, v in total.items():
        res[k] = str(v)
    for k, v in mem.items():
        res[k] = size_str(v)
    res["nodect"] = str(nodect)
    res.setdefault("place", "pack")
    if "walltime" in res:
        res["walltime"] = hms(parse_time(res["walltime"]))
    return res, chunks


def read_directives(text, prefix):
    """Directive arguments from the top of a script, as real qsub finds them: it stops at
    the first line that is not blank, not a comment and not a directive."""
    args = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.lstrip()
        if prefix and s.startswith(prefix):
            body = s[len(prefix):]
            while body.rstrip().endswith("\\") and i + 1 < len(lines):
                body = body.rstrip()[:-1] + lines[i + 1]
                i += 1
            try:
                args.extend(shlex.split(body, comments=False))
            except ValueError:
                raise QsubError("qsub: directive error: %s\n" % line, 2)
        elif line.startswith(":") or line.startswith("#!"):
            pass
        elif s == "" or s.startswith("#"):
            pass
        else:
            break
        i += 1
    return args


def resolve_path(p, default_dir, default_name):
    if not p:
        path = os.path.join(default_dir, default_name)
    else:
        if ":" in p and not p.startswith("/"):
            p = p.split(":", 1)[1]
        path = p if os.path.isabs(p) else os.path.join(default_dir, p)
    return os.path.normpath(path)


def queue_comment(rec):
    tmpl = os.environ.get("FERRY_PBS_SHIM_QUEUE_COMMENT",
                          "Not Running: Insufficient amount of resource: ncpus "
                          "(R: {ncpus} A: 0 T: {ncpus})")
    try:
        return tmpl.format(ncpus=rec["resource_list"].get("ncpus", "1"))
    except (KeyError, IndexError, ValueError):
        return tmpl


def limit_secs(name):
    v = os.environ.get(name, "").strip()
    if not v:
        return None
    t = parse_time(v)
    return t


def main_qsub(argv):
    args = argv[1:]
    if args == ["--version"]:
        print("pbs_version = %s" % pbs_version())
        return 0
    opts = {}
    try:
        rest = parse_opts(args, opts)
        command = None
        script_arg = None
        if rest and rest[0] == "--":
            command = rest[1:]
            if not command:
                raise QsubError(QSUB_USAGE, 2)
        elif len(rest) == 1:
            script_arg = rest[0]
        elif len(rest) > 1:
            raise QsubError(QSUB_USAGE, 2)
        for val in opts.get("l", []):
            split_resources(val)  # a malformed -l on the command line fails before anything else
        try:
            int(opts.get("p", "0") or 0)
        except ValueError:
            raise QsubError("qsub: illegal -p value\n" + QSUB_USAGE, 2)
        if "J" in opts or "I" in opts:
            raise QsubError("qsub: the PBS shim does not emulate job arrays or interactive "
                            "jobs\n", 2)

        cwd = os.getcwd()
        if command is not None:
            text = "exec %s\n" % " ".join(shlex.quote(c) for c in command)
            default_name = "STDIN"
        elif script_arg is None or script_arg == "-":
            text = sys.stdin.read()
            default_name = "STDIN"
        else:
            if not os.path.exists(script_arg):
                raise QsubError("qsub: script file:: No such file or directory\n", 1)
            if not os.path.isfile(script_arg):
                raise QsubError("qsub: script not a file\n", 1)
            try:
                with open(script_arg, errors="surrogateescape") as f:
                    text = f.read()
            except OSError as e:
                raise QsubError("qsub: opening script file:: %s\n" % e.strerror, 8)
            default_name = os.path.basename(script_arg)

        prefix = opts.get("C", os.environ.get("PBS_DPREFIX", "#PBS"))
        if command is None:
            dopts = {}
            drest = parse_opts(read_directives(text, prefix), dopts, directive=True)
            if drest:
                raise QsubError("qsub: directive error: %s\n" % " ".join(drest), 2)
            for k, v in dopts.items():
                if k in "lvW":
                    opts[k] = v + opts.get(k, [])  # command line comes last and wins
                else:
                    opts.setdefault(k, v)

        pairs = []
        for val in opts.get("l", []):
            pairs.extend(split_resources(val))
        res = build_resources(pairs)
        join = opts.get("j", "n")
        if join not in ("oe", "eo", "n"):
            raise QsubError("qsub: illegal -j value\n" + QSUB_USAGE, 2)

        d = state_dir("qsub")
        if server_down():
            raise QsubError("Connection refused\nqsub: cannot connect to server %s (errno=%d)\n"
                            % (server_name(), PBSE_SYSTEM), PBSE_SYSTEM)

        # server side
        qs = queues()
        queue = opts.get("q", "") or qs[0]
        if "@" in queue:
            queue = queue.split("@", 1)[0] or qs[0]
        if queue not in qs:
            raise QsubError("qsub: %s\n" % MSG[PBSE_UNKQUE], PBSE_UNKQUE)
        res, chunks = server_resources(res)
        max_wall = limit_secs("FERRY_PBS_SHIM_MAX_WALLTIME")
        max_nodes = env_float("FERRY_PBS_SHIM_MAX_NODES", 0)
        wall = parse_time(res["walltime"]) if "walltime" in res else None
        if (max_wall is not None and wall is not None and wall > max_wall) or \
                (max_nodes and int(res["nodect"]) > max_nodes):
            raise QsubError("qsub: %s\n" % MSG[PBSE_EXCQRESC], PBSE_EXCQRESC)
    except QsubError as e:
        sys.stderr.write(e.msg)
        return e.code & 0xFF

    name = opts.get("N", default_name)
    now = time.time()
    host = full_host()
    user = user_name()
    with Lock(d):
        seq = next_seq(d)
        jid = "%d.%s" % (seq, server_name())
        jd = job_dir(d, seq)
        os.makedirs(jd, exist_ok=True)
        script_path = os.path.join(jd, "%s.SC" % jid)
        with open(script_path, "w", errors="surrogateescape") as f:
            f.write(text)
        out_path = resolve_path(opts.get("o"), cwd, "%s.o%d" % (name, seq))
        err_path = resolve_path(opts.get("e"), cwd, "%s.e%d" % (name, seq))
        if os.path.isdir(out_path):
            out_path = os.path.join(out_path, "%s.OU" % jid)
        if os.path.isdir(err_path):
            err_path = os.path.join(err_path, "%s.ER" % jid)
        variables = [
            ["PBS_O_HOME", os.environ.get("HOME", home_dir())],
            ["PBS_O_LANG", os.environ.get("LANG", "C")],
            ["PBS_O_LOGNAME", os.environ.get("LOGNAME", user)],
            ["PBS_O_PATH", os.environ.get("PATH", "")],
            ["PBS_O_MAIL", os.environ.get("MAIL", "/var/mail/%s" % user)],
            ["PBS_O_SHELL", os.environ.get("SHELL", "/bin/sh")],
            ["PBS_O_WORKDIR", cwd],
            ["PBS_O_SYSTEM", os.uname().sysname],
            ["PBS_O_QUEUE", queue],
            ["PBS_O_HOST", host],
        ]
        passed = {}
        if opts.get("V"):
            for k, v in os.environ.items():
                passed[k] = v
        for lst in opts.get("v", []):
            for item in re.split(r"(?<!\\),", lst):
                if not item:
                    continue
                k, eq, v = item.partition("=")
                passed[k] = v.replace("\\,", ",") if eq else os.environ.get(k, "")
        for k, v in passed.items():
            if not k.startswith("PBS_O_"):
                variables.append([k, v])
        held = bool(opts.get("h"))
        delay = env_float("FERRY_PBS_SHIM_QUEUE_DELAY_SECS", 0.0)
        rec = {
            "seq": seq, "id": jid, "name": name, "owner": "%s@%s" % (user, host),
            "server": server_name(), "queue": queue, "account": opts.get("A"),
            "project": opts.get("P"),
            "state": "H" if held else "Q", "substate": SUB_HELD if held else SUB_QUEUED,
            "hold_types": "u" if held else "n",
            "ctime": now, "qtime": now, "mtime": now, "etime": None if held else now,
            "stime": None, "obittime": None, "exit_status": None,
            "comment": None, "resource_list": res, "chunks": chunks,
            "walltime_secs": parse_time(res["walltime"]) if "walltime" in res else None,
            "output_path": "%s:%s" % (host, out_path), "error_path": "%s:%s" % (host, err_path),
            "out_file": out_path, "err_file": err_path, "join": join,
            "keep": opts.get("k", "n"), "mail_points": opts.get("m", "a"),
            "mail_users": opts.get("M"), "priority": int(opts.get("p", "0") or 0),
            "rerunable": "False" if opts.get("r", "y") == "n" else "True",
            "shell_path": opts.get("S"), "submit_args": " ".join(args),
            "submit_host": host, "workdir": cwd, "variable_list": variables,
            "env_all": bool(opts.get("V")), "script": script_path,
            "queue_delay": delay, "eligible_at": now + delay,
            "submitter_env": dict(os.environ),
        }
        if not held and delay > 0:
            rec["comment"] = queue_comment(rec)
        save(d, rec)
    if not held:
        spawn_supervisor(d, seq)
    if not opts.get("z"):
        sys.stdout.write(jid + "\n")
    sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------------------
# the per-job supervisor

def spawn_supervisor(d, seq):
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            log = os.open(os.path.join(job_dir(d, seq), "supervisor.log"),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.dup2(log, 2)
            os.closerange(3, 65536)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            # no signal is ignored here: dispositions set to SIG_IGN would be inherited
            # by the job across exec and make it immune to qdel and the walltime kill
            try:
                supervise(d, seq)
            except BaseException:
                traceback.print_exc()
                try:
                    fail_job(d, seq)
                except BaseException:
                    traceback.print_exc()
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.waitpid(pid, 0)


def fail_job(d, seq):
    with Lock(d):
        rec = load(d, seq)
        if rec and rec["state"] != "F":
            now = time.time()
            rec.update(state="F", substate=SUB_FAILED, mtime=now, history_timestamp=now,
                       exit_status=rec.get("exit_status") if rec.get("exit_status") is not None
                       else -1)
            save(d, rec)


def nodefile_lines(rec, host):
    lines = []
    for count, kvs in rec["chunks"]:
        kv = dict(kvs)
        per = int(kv.get("mpiprocs", "1"))
        for _ in range(count):
            lines.extend([host] * per)
    return lines


def exec_layout(rec, host):
    hosts, vnodes = [], []
    for idx, (count, kvs) in enumerate(rec["chunks"]):
        kv = dict(kvs)
        ncpus = int(kv.get("ncpus", "1"))
        for _ in range(count):
            n = len(hosts)
            hosts.append("%s/%d%s" % (host, n, "*%d" % ncpus if ncpus > 1 else ""))
            vn = "%s:ncpus=%d" % (host, ncpus)
            for k, v in kvs:
                if k in ("mem", "ngpus"):
                    vn += ":%s=%s" % (k, v if k != "mem" else "%dkb" % size_kb(v))
            vnodes.append("(%s)" % vn)
    return "+".join(hosts), "+".join(vnodes)


def job_env(rec, d, nodefile, tmpdir):
    strict = os.environ.get("FERRY_PBS_SHIM_STRICT_ENV", "") not in ("", "0")
    sub = rec.get("submitter_env") or {}
    if strict:
        env = {}
        for k, v in rec["variable_list"]:
            env[k] = v
        for k in ("LANG", "TERM"):
            if k in sub:
                env.setdefault(k, sub[k])
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")  # a login shell's, roughly
    else:
        env = dict(sub)
        for k, v in rec["variable_list"]:
            env[k] = v
    first = dict(rec["chunks"][0][1]) if rec["chunks"] else {}
    ncpus = first.get("ncpus", "1")
    user = user_name()
    env.update({
        "HOME": home_dir(), "LOGNAME": user, "USER": user,
        "SHELL": rec.get("shell_path") or "/bin/bash",
        "PBS_JOBNAME": rec["name"], "PBS_JOBID": rec["id"], "PBS_QUEUE": rec["queue"],
        "PBS_NODEFILE": nodefile, "PBS_NODENUM": "0", "PBS_TASKNUM": "1",
        "PBS_ENVIRONMENT": "PBS_BATCH", "ENVIRONMENT": "BATCH",
        "PBS_JOBDIR": home_dir(), "TMPDIR": tmpdir, "NCPUS": ncpus,
        "OMP_NUM_THREADS": first.get("ompthreads", ncpus),
        "PBS_MOMPORT": "15003",
    })
    if rec.get("account"):
        env["PBS_ACCOUNT"] = rec["account"]
    return env


def open_output(path):
    # O_APPEND: the walltime message is appended by the supervisor while the job writes
    try:
        return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
                                 0o644), "wb")
    except OSError as e:
        sys.stderr.write("cannot open %s: %s\n" % (path, e))
        return open(os.devnull, "wb")


def supervise(d, seq):
    import subprocess

    # queued: wait out the delay, stop if deleted or held meanwhile
    while True:
        rec = load(d, seq)
        if rec is None or rec["state"] != "Q":
            return
        left = rec.get("eligible_at", 0) - time.time()
        if left <= 0:
            break
        time.sleep(min(left, 0.05))

    host = this_host()
    with Lock(d):
        rec = load(d, seq)
        if rec is None or rec["state"] != "Q":
            return
        jd = job_dir(d, seq)
        tmpdir = os.path.join(jd, "tmp")
        os.makedirs(tmpdir, exist_ok=True)
        nodefile = os.path.join(d, "aux", rec["id"])
        with open(nodefile, "w") as f:
            f.write("".join(h + "\n" for h in nodefile_lines(rec, host)))
        env = job_env(rec, d, nodefile, tmpdir)
        cwd = rec["workdir"]
        if os.environ.get("FERRY_PBS_SHIM_JOB_CWD", "submit") == "home":
            cwd = home_dir()
        if not os.path.isdir(cwd):
            cwd = home_dir()
        shell = rec.get("shell_path") or "/bin/bash"
        out_f = open_output(rec["out_file"]) if rec["join"] != "eo" else None
        err_f = open_output(rec["err_file"]) if rec["join"] != "oe" else None
        if rec["join"] == "oe":
            stdout, stderr, msg_path = out_f, subprocess.STDOUT, rec["out_file"]
        elif rec["join"] == "eo":
            stdout, stderr, msg_path = err_f, err_f, rec["err_file"]
        else:
            stdout, stderr, msg_path = out_f, err_f, rec["err_file"]
        proc = subprocess.Popen([shell, rec["script"]], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                start_new_session=True, close_fds=True)
        for f in (out_f, err_f):
            if f is not None:
                f.close()
        now = time.time()
        exec_host, exec_vnode = exec_layout(rec, host)
        rec.update(state="R", substate=SUB_RUNNING, stime=now, mtime=now, session_id=proc.pid,
                   exec_host=exec_host, exec_vnode=exec_vnode, run_count=1,
                   jobdir=home_dir(), nodefile=nodefile, tmpdir=tmpdir,
                   comment="Job run at %s on %s" % (comment_time(now), exec_vnode))
        if rec.get("etime") is None:
            rec["etime"] = now
        save(d, rec)
    pid = proc.pid
    stime = rec["stime"]
    wall = rec.get("walltime_secs")
    kill_wait = env_float("FERRY_PBS_SHIM_KILL_WAIT_SECS", 5.0)
    walltime_killed = False
    kill_at = None
    killed = False

    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = None
            break
        if info is not None:
            break
        now = time.time()
        if wall is not None and not walltime_killed and now - stime > wall:
            walltime_killed = True
            try:
                with open(msg_path, "a") as f:
                    f.write("=>> PBS: job killed: walltime %d exceeded limit %d\n"
                            % (math.ceil(now - stime), wall))
            except OSError:
                pass
            with Lock(d):
                r = load(d, seq)
                r["walltime_killed"] = True
                save(d, r)
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            kill_at = now + kill_wait
        r = load(d, seq)
        if r is not None and r.get("kill_at") and (kill_at is None or r["kill_at"] < kill_at):
            kill_at = r["kill_at"]
        if kill_at is not None and now >= kill_at and not killed:
            killed = True
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)

    # the leader has exited but is not reaped yet, so its process group id cannot have
    # been reused: kill whatever it left behind, as MOM does at the end of a job
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _, status, ru = os.wait4(pid, 0)
    end = time.time()
    if os.WIFSIGNALED(status):
        code = 256 + os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
    if walltime_killed:
        code = JOB_EXEC_KILL_WALLTIME
    cput = ru.ru_utime + ru.ru_stime
    wall_used = end - stime
    used = {
        "cpupercent": str(int(100 * cput / wall_used)) if wall_used > 0 else "0",
        "cput": hms(cput), "mem": "%dkb" % ru.ru_maxrss, "vmem": "%dkb" % ru.ru_maxrss,
        "walltime": hms(wall_used),
    }
    with Lock(d):
        rec = load(d, seq)
        rec.update(state="E", substate=SUB_EXITING, exit_status=code, used=used, mtime=end)
        save(d, rec)
    for p in (rec.get("nodefile"),):
        try:
            os.unlink(p)
        except (OSError, TypeError):
            pass
    _rmtree(rec.get("tmpdir"))
    linger = env_float("FERRY_PBS_SHIM_EXITING_SECS", 0.0)
    if linger > 0:
        time.sleep(linger)
    with Lock(d):
        rec = load(d, seq)
        now = time.time()
        if rec.get("delete_requested"):
            sub, suffix = SUB_TERMINATED, " and terminated by %s" % rec.get("deleted_by", "")
        elif code == JOB_EXEC_KILL_WALLTIME:
            sub, suffix = SUB_FAILED, " and exceeded resource walltime"
        elif code != 0:
            sub, suffix = SUB_FAILED, " and failed"
        else:
            sub, suffix = SUB_FINISHED, " and finished"
        rec.update(state="F", substate=sub, obittime=now, mtime=now, history_timestamp=now,
                   comment=(rec.get("comment") or "") + suffix)
        if rec.get("purge_when_done"):
            rec["purged"] = True
        save(d, rec)


def _rmtree(path):
    if not path or not os.path.isdir(path):
        return
    for root, dirs, files in os.walk(path, topdown=False):
        for f in files:
            try:
                os.unlink(os.path.join(root, f))
            except OSError:
                pass
        for dd in dirs:
            try:
                os.rmdir(os.path.join(root, dd))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


# --------------------------------------------------------------------------------------
# command: pbsdsh

def main_pbsdsh(argv):
    import subprocess

    prog = os.path.basename(argv[0])  # "pbsdsh" as a shell finds it on PATH
    copies = None
    onenode = None
    verbose = sync = no_obit = False
    i = 1
    usage = ("Usage: %s [-c copies][-s][-v][-o] -- program [args]\n"
             "       %s [-n node_index][-s][-v][-o] -- program [args]\n"
             "       %s --version\n" % (prog, prog, prog))
    if argv[1:] == ["--version"]:
        print("pbs_version = %s" % pbs_version())
        return 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        if a in ("-c", "-n"):
            if i + 1 >= len(argv) or not argv[i + 1].isdigit():
                sys.stderr.write(usage)
                return 1
            if a == "-c":
                copies = int(argv[i + 1])
            else:
                onenode = int(argv[i + 1])
            i += 2
            continue
        for c in a[1:]:
            if c == "v":
                verbose = True
            elif c == "s":
                sync = True
            elif c == "o":
                no_obit = True
            else:
                sys.stderr.write(usage)
                return 1
        i += 1
    cmd = argv[i:]
    if not cmd or (copies is not None and onenode is not None):
        sys.stderr.write(usage)
        return 1
    if "PBS_ENVIRONMENT" not in os.environ:
        sys.stderr.write("%s: not executing under PBS\n" % prog)
        return 1
    try:
        with open(os.environ.get("PBS_NODEFILE", "")) as f:
            nodes = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        sys.stderr.write("%s: tm_nodeinfo failed, rc = TM_ESYSTEM (17000)\n" % prog)
        return 1
    if not nodes:
        sys.stderr.write("%s: tm_nodeinfo failed, rc = TM_ESYSTEM (17000)\n" % prog)
        return 1
    if onenode is not None:
        targets = [onenode]
    elif copies is not None:
        targets = [c % len(nodes) for c in range(copies)]
    else:
        targets = list(range(len(nodes)))

    # node index of a line: the index of the chunk it came from (each chunk stands
    # for a host); falls back to the line index when the job record is not readable
    chunk_of = list(range(len(nodes)))
    try:
        sdir = os.environ.get("FERRY_PBS_SHIM_DIR")
        jid = os.environ.get("PBS_JOBID", "")
        rec = load(sdir, int(jid.split(".")[0])) if sdir and jid else None
        if rec:
            mapping = []
            instance = 0
            for count, kvs in rec["chunks"]:
                per = int(dict(kvs).get("mpiprocs", "1"))
                for _ in range(count):
                    mapping.extend([instance] * per)
                    instance += 1
            if len(mapping) == len(nodes):
                chunk_of = mapping
    except (ValueError, OSError, KeyError, TypeError):
        pass

    procs = []
    statuses = {}

    def bailout(signum, frame):
        for t, p in procs:
            if p.poll() is None:
                print("%s: killing task 0x%08X signal %d" % (prog, t, signum), flush=True)
                try:
                    p.send_signal(signum)
                except ProcessLookupError:
                    pass
        os._exit(1)

    for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(s, bailout)

    def spawn(t, nd):
        env = dict(os.environ)
        env["PBS_TASKNUM"] = str(t + 2)
        env["PBS_NODENUM"] = str(chunk_of[nd] if nd < len(chunk_of) else nd)
        env["PBS_VNODENUM"] = str(nd)
        try:
            p = subprocess.Popen(cmd, env=env)
        except OSError as e:
            sys.stderr.write("%s: spawn failed on node %d err %s\n" % (prog, nd, e.strerror))
            return None
        if verbose:
            print("%s: spawned task 0x%08X on logical node %d event %d" % (prog, t, nd, t + 1),
                  flush=True)
        return p

    def reap(t, p):
        rc = p.wait()
        code = 256 + (-rc) if rc < 0 else rc
        statuses[t] = code
        if verbose or code != 0:
            print("%s: task 0x%08X exit status %d" % (prog, t, code), flush=True)

    for t, nd in enumerate(targets):
        if nd >= len(nodes):
            sys.stderr.write("%s: spawn failed on node %d err TM_ENOTFOUND\n" % (prog, nd))
            statuses[t] = 1
            continue
        p = spawn(t, nd)
        if p is None:
            statuses[t] = 1
            continue
        procs.append((t, p))
        if sync and not no_obit:
            reap(t, p)
    if not sync and not no_obit:
        if verbose:
            print("%s: waiting on %d spawned and 0 obits" % (prog, len(procs)), flush=True)
        for t, p in procs:
            reap(t, p)
    strict = os.environ.get("FERRY_PBS_SHIM_PBSDSH_STRICT", "") not in ("", "0")
    if strict and any(c != 0 for c in statuses.values()):
        return 1
    return 0
