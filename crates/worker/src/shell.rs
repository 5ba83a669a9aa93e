//! Shell functions: a command template whose `{name}` placeholders are filled from the
//! task's named values (shell-quoted), run with `/bin/sh -c` in the task's own run
//! directory. The result is `11\n` + JSON
//! `{"cmd", "returncode", "stdout", "stderr"}`; a non-zero exit fails the task. The task
//! ends when the shell does: what it left running (a `cmd &`, a `setsid` daemon) is
//! killed then, and its output is what was written until then.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::TaskId;
use ferry_proto::messages::Completion;
use ferry_rundir::RunDirs;

/// Output kept per stream.
const MAX_OUTPUT: usize = 1024 * 1024;

/// What a shell task produced.
pub struct ShellOutcome {
    pub completion: Completion,
    pub stdout: String,
    pub stderr: String,
}

/// Fills `{name}` placeholders from `values` (a JSON object), each value shell-quoted
/// (`ada; reboot` becomes `'ada; reboot'`: a value is one word and never a command);
/// `{{` and `}}` stand for braces. See [`ferry_app::fill_braces`].
pub fn render(template: &str, values: &serde_json::Map<String, serde_json::Value>) -> Result<String, String> {
    ferry_app::fill_braces(template, values)
}

/// A shell task to run.
pub struct Run<'a> {
    pub task_id: TaskId,
    /// The command template.
    pub template: &'a [u8],
    /// The task's named values (a JSON object), or nothing.
    pub payload: &'a [u8],
    pub walltime: Option<Duration>,
    /// The worker's other children (its Python host), left alone.
    pub spare: &'a [u32],
    /// Where the task's run directory is made.
    pub dirs: &'a RunDirs,
    /// The endpoint's environment script for applications (see [`crate::app`]).
    pub env_script: Option<&'a str>,
}

/// Runs a shell task in its own run directory (`<root>/<task id>`, also in
/// `FERRY_RUN_DIR`, with `FERRY_TASK_ID`), stopped at `walltime` if it runs that long
/// (then `None`). When the shell has exited (or was stopped), whatever it left running
/// below the worker, inside its process group or out of it, is killed: a task's
/// processes end with the task. The directory is then removed if empty, else kept for
/// the endpoint's `keep_run_dirs` and named in the result (`run_dir`).
pub async fn run(task: Run<'_>) -> Option<ShellOutcome> {
    let template = String::from_utf8_lossy(task.template);
    let values = if task.payload.is_empty() {
        Ok(serde_json::Map::new())
    } else {
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(task.payload)
            .map_err(|e| format!("the task's values are not a JSON object: {e}"))
    };
    let cmd = match values.and_then(|v| render(&template, &v)) {
        Ok(cmd) => cmd,
        Err(message) => return Some(failure(message, String::new(), String::new())),
    };
    let name = task.task_id.to_string();
    let dir = match task.dirs.create(&name) {
        Ok(dir) => dir,
        Err(e) => return Some(failure(e.to_string(), String::new(), String::new())),
    };
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&cmd)
        .current_dir(&dir)
        .env("FERRY_RUN_DIR", &dir)
        .env("FERRY_TASK_ID", &name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            task.dirs.finish(&name);
            return Some(failure(
                format!("cannot run /bin/sh: {e}"),
                String::new(),
                String::new(),
            ));
        }
    };
    let stdout = tokio::spawn(read_all(child.stdout.take()));
    let stderr = tokio::spawn(read_all(child.stderr.take()));
    let status = wait_until(&mut child, task.walltime).await;
    if ferry_proctree::has_children_besides(task.spare) {
        crate::lifeline::end_tree(Some(task.task_id), task.spare);
    }
    // The pipes close once the shell and all it left are gone.
    let (stdout, stderr) = (collect(stdout).await, collect(stderr).await);
    let kept = task.dirs.finish(&name);
    match status {
        Some(Ok(status)) => Some(outcome(cmd, status, stdout, stderr, kept).await),
        Some(Err(e)) => Some(failure(format!("cannot wait for /bin/sh: {e}"), stdout, stderr)),
        None => None,
    }
}

/// The shell's exit status; `None` when `walltime` passed first (the shell is then
/// killed and reaped).
async fn wait_until(
    child: &mut tokio::process::Child,
    walltime: Option<Duration>,
) -> Option<std::io::Result<std::process::ExitStatus>> {
    let Some(walltime) = walltime else {
        return Some(child.wait().await);
    };
    match tokio::time::timeout(walltime, child.wait()).await {
        Ok(status) => Some(status),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    }
}

/// Everything a pipe carries until it closes, the first MAX_OUTPUT bytes kept.
async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = pipe.read(&mut buf).await
        && n > 0
    {
        let room = MAX_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// A pipe's text, once it closed (given up on after OUTPUT_WAIT: a process that
/// resisted SIGKILL may hold it open).
async fn collect(reader: tokio::task::JoinHandle<Vec<u8>>) -> String {
    let abort = reader.abort_handle();
    match tokio::time::timeout(OUTPUT_WAIT, reader).await {
        Ok(Ok(bytes)) => clip(&bytes),
        _ => {
            abort.abort();
            "[ferry: the output was still held open by a process that could not be stopped]".to_owned()
        }
    }
}

/// How long output is waited for once the command and all it left are gone.
const OUTPUT_WAIT: Duration = Duration::from_secs(2);

/// The task's outcome from the shell's exit status.
async fn outcome(
    cmd: String,
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    kept: Option<PathBuf>,
) -> ShellOutcome {
    let code = status.code();
    if status.success() {
        let mut doc = serde_json::json!({"cmd": cmd, "returncode": 0, "stdout": stdout, "stderr": stderr});
        if let Some(dir) = &kept {
            doc["run_dir"] = dir.display().to_string().into();
        }
        return ShellOutcome {
            completion: Completion::Success {
                result: Bytes::from(format!("11\n{doc}")),
            },
            stdout,
            stderr,
        };
    }
    if terminated(status) {
        // SIGTERM from outside: a batch scheduler ending the block signals every
        // process at once, this worker too, which then stops with its group. Wait a
        // moment for that before calling it the command's failure: the task then
        // goes back with its block, uncharged, instead of failing.
        tokio::time::sleep(TERMINATED_GRACE).await;
    }
    let how = match code {
        Some(c) => format!("exited with status {c}"),
        None => crate::host::describe_status(status),
    };
    let tail: String = stderr
        .chars()
        .rev()
        .take(2000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let kept = kept
        .map(|dir| format!("\n[ferry: the run directory is kept: {}]", dir.display()))
        .unwrap_or_default();
    failure(format!("command {how}: {cmd}\n{tail}{kept}"), stdout, stderr)
}

/// How long a command killed by SIGTERM waits before it is reported as failed.
const TERMINATED_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Killed by SIGTERM, or a shell that exited with its code (128 + 15).
fn terminated(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGTERM) || status.code() == Some(128 + libc::SIGTERM)
}

fn failure(traceback: String, stdout: String, stderr: String) -> ShellOutcome {
    ShellOutcome {
        completion: Completion::Failure {
            traceback,
            exception: None,
        },
        stdout,
        stderr,
    }
}

fn clip(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_OUTPUT)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(json: &str) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(json).unwrap()
    }

    /// Commands run one at a time, as in a worker: each ends what is left below this
    /// process when it is done, which would be the other tests' commands.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    async fn run_with(command: &[u8], payload: &[u8], dirs: &RunDirs) -> ShellOutcome {
        let _alone = ONE_AT_A_TIME.lock().await;
        let task = Run {
            task_id: TaskId::new(),
            template: command,
            payload,
            walltime: None,
            spare: &[],
            dirs,
            env_script: None,
        };
        run(task).await.unwrap()
    }

    async fn run_now(command: &[u8]) -> ShellOutcome {
        let tmp = tempfile::tempdir().unwrap();
        run_with(command, b"", &RunDirs::open(tmp.path()).unwrap()).await
    }

    fn success_doc(out: ShellOutcome) -> serde_json::Value {
        let Completion::Success { result } = out.completion else {
            panic!("expected a success, got {:?}", out.completion)
        };
        let text = std::str::from_utf8(&result).unwrap();
        serde_json::from_str(text.strip_prefix("11\n").unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_command_runs_in_its_own_run_directory_kept_only_when_it_wrote_there() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = RunDirs::open(tmp.path()).unwrap();

        let doc = success_doc(run_with(b"pwd; echo $FERRY_RUN_DIR; echo $FERRY_TASK_ID", b"", &dirs).await);
        let lines: Vec<&str> = doc["stdout"].as_str().unwrap().lines().collect();
        assert_eq!(lines[0], lines[1], "the working directory is FERRY_RUN_DIR");
        assert_eq!(
            std::path::Path::new(lines[0]),
            dirs.path(lines[2]),
            "<root>/<task id>"
        );
        assert!(doc.get("run_dir").is_none(), "left empty: removed, not named");
        assert!(!dirs.path(lines[2]).exists());

        let doc = success_doc(run_with(b"echo data > out.txt", b"", &dirs).await);
        let kept = std::path::PathBuf::from(doc["run_dir"].as_str().unwrap());
        assert_eq!(std::fs::read_to_string(kept.join("out.txt")).unwrap(), "data\n");
    }

    #[test]
    fn placeholders_are_filled_and_braces_escaped() {
        let v = values(r#"{"name": "ada", "n": 3}"#);
        assert_eq!(render("echo {name} {n} {{x}}", &v).unwrap(), "echo ada 3 {x}");
    }

    #[tokio::test]
    async fn a_value_is_one_word_and_never_a_command() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = RunDirs::open(tmp.path()).unwrap();
        let payload = br#"{"v": "x; touch pwned $(touch pwned2) `touch pwned3`"}"#;
        let doc = success_doc(run_with(b"printf '%s|' {v}; ls", payload, &dirs).await);
        assert_eq!(
            doc["stdout"], "x; touch pwned $(touch pwned2) `touch pwned3`|",
            "printed as one argument, and nothing was made"
        );
        assert!(doc.get("run_dir").is_none(), "the run directory stayed empty");
    }

    #[test]
    fn a_missing_value_names_the_placeholder() {
        assert_eq!(
            render("echo {who}", &values("{}")).unwrap_err(),
            "the command needs a value for {who}"
        );
    }

    #[tokio::test]
    async fn a_failing_command_fails_the_task_with_its_status() {
        let out = run_now(b"echo oops >&2; exit 3").await;
        match out.completion {
            Completion::Failure { traceback, .. } => {
                assert!(
                    traceback.starts_with("command exited with status 3"),
                    "{traceback}"
                );
                assert!(traceback.contains("oops"));
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_command_killed_by_sigterm_waits_a_moment_before_it_fails() {
        let started = std::time::Instant::now();
        let out = run_now(b"kill -TERM $$").await;
        assert!(started.elapsed() >= TERMINATED_GRACE, "reported at once");
        let Completion::Failure { traceback, .. } = out.completion else {
            panic!("a killed command fails")
        };
        assert!(traceback.contains("SIGTERM"), "{traceback}");
        let started = std::time::Instant::now();
        let _ = run_now(b"exit 3").await;
        assert!(
            started.elapsed() < TERMINATED_GRACE,
            "an ordinary failure waits for nothing"
        );
    }

    #[tokio::test]
    async fn a_command_result_is_json() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = RunDirs::open(tmp.path()).unwrap();
        let doc = success_doc(run_with(b"echo {x}", br#"{"x": "hi"}"#, &dirs).await);
        assert_eq!(doc["stdout"], "hi\n");
        assert_eq!(doc["returncode"], 0);
    }
}
