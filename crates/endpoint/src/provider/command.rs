//! Running a scheduler's commands (`sbatch`, `squeue`, `qstat`, ...): with a timeout,
//! in a process group of their own that is killed whole when the timeout passes, and
//! with errors that name the command, how it ended and what it said on stderr.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::Error;

/// What a command printed, and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for errors.
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The error for a command that failed: its exit status and stderr (or stdout when
    /// stderr is empty), cut to a readable length.
    pub fn failure(&self) -> Error {
        let said = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        Error::Failed {
            command: self.command.clone(),
            status: match self.code {
                Some(c) => format!("exit status {c}"),
                None => "killed by a signal".to_owned(),
            },
            stderr: head(said.trim(), 2000),
        }
    }
}

/// Runs `program args` in `dir` (if given), killing it (and everything it started)
/// after `timeout`. A non-zero exit is not an error here: callers read some of them.
pub async fn run(
    program: &str,
    args: &[&str],
    dir: Option<&Path>,
    timeout: Duration,
) -> Result<Output, Error> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Missing {
            program: program.to_owned(),
        },
        _ => Error::Spawn {
            command: command.clone(),
            source: e,
        },
    })?;
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(Output {
            command,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
        Ok(Err(e)) => Err(Error::Spawn { command, source: e }),
        Err(_) => {
            // The child itself is killed when its future drops; its group goes too.
            if let Some(pid) = pid {
                let group = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            Err(Error::TimedOut { command, timeout })
        }
    }
}

/// Runs the command and insists on a zero exit.
pub async fn run_ok(
    program: &str,
    args: &[&str],
    dir: Option<&Path>,
    timeout: Duration,
) -> Result<Output, Error> {
    let out = run(program, args, dir, timeout).await?;
    if out.success() {
        Ok(out)
    } else {
        Err(out.failure())
    }
}

/// The first `max` bytes of `text` (on a character boundary), with a mark when cut.
pub fn head(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} [...]", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_command_names_itself_its_status_and_stderr() {
        let err = run_ok(
            "sh",
            &["-c", "echo nope >&2; exit 3"],
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(err, "`sh -c echo nope >&2; exit 3` failed (exit status 3): nope");
    }

    #[tokio::test]
    async fn a_missing_program_says_so() {
        let err = run("sbatch-that-is-not-here", &[], None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Missing { .. }), "{err}");
        assert!(err.to_string().contains("not found on PATH"), "{err}");
    }

    #[tokio::test]
    async fn a_hanging_command_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", marker.display());
        let started = std::time::Instant::now();
        let err = run("sh", &["-c", &script], None, Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
        // The grandchild went with the group (give the kernel a moment to reap it).
        let mut gone = false;
        for _ in 0..50 {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z ") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "sleep {pid} survived the timeout");
    }
}
