//! Shell functions: a command template whose `{name}` placeholders are filled from the
//! task's named values, run with `/bin/sh -c`. The result is `11\n` + JSON
//! `{"cmd", "returncode", "stdout", "stderr"}`; a non-zero exit fails the task.

use std::process::Stdio;

use bytes::Bytes;
use ferry_proto::messages::Completion;

/// Output kept per stream.
const MAX_OUTPUT: usize = 1024 * 1024;

/// What a shell task produced.
pub struct ShellOutcome {
    pub completion: Completion,
    pub stdout: String,
    pub stderr: String,
}

/// Fills `{name}` placeholders from `values` (a JSON object); `{{` and `}}` stand for
/// braces.
pub fn render(template: &str, values: &serde_json::Map<String, serde_json::Value>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                match values.get(&name) {
                    Some(serde_json::Value::String(s)) => out.push_str(s),
                    Some(v) => out.push_str(&v.to_string()),
                    None => return Err(format!("the command needs a value for {{{name}}}")),
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Runs a shell task.
pub async fn run(template: &[u8], payload: &[u8]) -> ShellOutcome {
    let template = String::from_utf8_lossy(template);
    let values = if payload.is_empty() {
        Ok(serde_json::Map::new())
    } else {
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(payload)
            .map_err(|e| format!("the task's values are not a JSON object: {e}"))
    };
    let cmd = match values.and_then(|v| render(&template, &v)) {
        Ok(cmd) => cmd,
        Err(message) => return failure(message, String::new(), String::new()),
    };
    let output = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&cmd)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    let output = match output {
        Ok(o) => o,
        Err(e) => return failure(format!("cannot run /bin/sh: {e}"), String::new(), String::new()),
    };
    let stdout = clip(&output.stdout);
    let stderr = clip(&output.stderr);
    let code = output.status.code();
    if output.status.success() {
        let doc = serde_json::json!({"cmd": cmd, "returncode": 0, "stdout": stdout, "stderr": stderr});
        ShellOutcome {
            completion: Completion::Success {
                result: Bytes::from(format!("11\n{doc}")),
            },
            stdout,
            stderr,
        }
    } else {
        if terminated(output.status) {
            // SIGTERM from outside: a batch scheduler ending the block signals every
            // process at once, this worker too, which then stops with its group. Wait a
            // moment for that before calling it the command's failure: the task then
            // goes back with its block, uncharged, instead of failing.
            tokio::time::sleep(TERMINATED_GRACE).await;
        }
        let how = match code {
            Some(c) => format!("exited with status {c}"),
            None => crate::host::describe_status(output.status),
        };
        let tail: String = stderr
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        failure(format!("command {how}: {cmd}\n{tail}"), stdout, stderr)
    }
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

    #[test]
    fn placeholders_are_filled_and_braces_escaped() {
        let v = values(r#"{"name": "ada", "n": 3}"#);
        assert_eq!(render("echo {name} {n} {{x}}", &v).unwrap(), "echo ada 3 {x}");
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
        let out = run(b"echo oops >&2; exit 3", b"").await;
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
        let out = run(b"kill -TERM $$", b"").await;
        assert!(started.elapsed() >= TERMINATED_GRACE, "reported at once");
        let Completion::Failure { traceback, .. } = out.completion else {
            panic!("a killed command fails")
        };
        assert!(traceback.contains("SIGTERM"), "{traceback}");
        let started = std::time::Instant::now();
        let _ = run(b"exit 3", b"").await;
        assert!(
            started.elapsed() < TERMINATED_GRACE,
            "an ordinary failure waits for nothing"
        );
    }

    #[tokio::test]
    async fn a_command_result_is_json() {
        let out = run(b"echo {x}", br#"{"x": "hi"}"#).await;
        let Completion::Success { result } = out.completion else {
            panic!()
        };
        let text = std::str::from_utf8(&result).unwrap();
        let doc: serde_json::Value = serde_json::from_str(text.strip_prefix("11\n").unwrap()).unwrap();
        assert_eq!(doc["stdout"], "hi\n");
        assert_eq!(doc["returncode"], 0);
    }
}
