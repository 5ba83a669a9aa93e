//! A task's processes end with the task, even the ones that leave its process group
//! (`setsid`, a double fork, `subprocess.Popen(start_new_session=True)`): when it is
//! cancelled, stopped at its walltime, finishes, or loses its worker, its manager or
//! its endpoint. Each escaped process is a `sleep` whose duration no other process uses,
//! found machine-wide in `/proc/*/cmdline`.

use std::time::Duration;

use ferry_proto::TaskId;
use ferry_tests::{Part, Stack, json_args, python, python_source};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(60);
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// A Python task leaving `sleep MARKER` behind, escaped one way or another, then
/// holding on for `hold` seconds.
const ESCAPE_PY: &str = r#"def escape(how, marker, hold):
    import os, subprocess, time
    argv = ["sleep", marker]
    if how == "popen":
        subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif how == "setsid":
        if os.fork() == 0:
            try:
                os.setsid()
                os.execvp("sleep", argv)
            finally:
                os._exit(127)
    else:
        middle = os.fork()
        if middle == 0:
            try:
                if os.fork() == 0:
                    os.execvp("sleep", argv)
            finally:
                os._exit(0)
        os.waitpid(middle, 0)
    time.sleep(hold)
    return "left"
"#;

/// Shell tasks leaving `sleep MARKER` behind, then holding on for `hold` seconds.
const SHELL_SETSID: &str = "setsid sleep {marker} </dev/null >/dev/null 2>&1 & sleep {hold}";
const SHELL_DOUBLE_FORK: &str = "(sleep {marker} </dev/null >/dev/null 2>&1 &); sleep {hold}";

/// Kills whatever still carries these markers when a test ends, however it ends.
struct Markers(Vec<String>);

impl Drop for Markers {
    fn drop(&mut self) {
        for marker in &self.0 {
            for pid in survivors(marker) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}

impl Markers {
    fn new(n: usize) -> Self {
        Self(
            (0..n)
                .map(|_| format!("300.{:09}", uuid::Uuid::new_v4().as_u128() % 1_000_000_000))
                .collect(),
        )
    }

    fn running(&self) -> Vec<(String, Vec<u32>)> {
        self.0
            .iter()
            .map(|m| (m.clone(), survivors(m)))
            .filter(|(_, pids)| !pids.is_empty())
            .collect()
    }
}

/// Live processes with `marker` in their arguments (the escaped `sleep`, the shell that
/// started it).
fn survivors(marker: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            let marker = marker.as_bytes();
            !zombie
                && argv
                    .split(|b| *b == 0)
                    .any(|arg| arg.windows(marker.len()).any(|w| w == marker))
        })
        .collect()
}

/// A stack whose endpoint runs five workers (one task each of the five ways at once).
async fn stack() -> Stack {
    let mut stack = Stack::start_without_endpoint().await;
    stack
        .start_endpoint_with(&format!(
            "[provider]\nkind = \"local\"\nmax_workers_per_node = 5\npython = \"{}\"\n",
            python()
        ))
        .await;
    let id = stack.endpoint_id.unwrap();
    let this = &stack;
    this.wait_until(WITHIN, "the endpoint has a manager", || async move {
        let doc: Value = this.get(&format!("/v1/endpoints/{id}")).await.1;
        doc["status"] == "online" && doc["details"]["managers"].as_u64().unwrap_or(0) > 0
    })
    .await;
    // Every worker ready (its interpreter up), so the five tasks run side by side
    // rather than queue behind the first workers up.
    let endpoint = stack.pid(Part::Endpoint).expect("an endpoint");
    until_hosts_ready(&stack, endpoint).await;
    stack
}

async fn until_hosts_ready(stack: &Stack, endpoint: u32) {
    stack
        .wait_until(WITHIN, "five Python hosts run", || async move {
            below(endpoint, "ferry.host").len() == 5
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Submits the five escapes (two shell, three Python), each leaving its marker behind
/// and holding on `hold` seconds; not retried.
async fn submit_escapes(stack: &Stack, markers: &Markers, hold: u32, walltime: Option<f64>) -> Vec<TaskId> {
    let setsid = stack.register("shell", "setsid", SHELL_SETSID).await;
    let double = stack.register("shell", "double", SHELL_DOUBLE_FORK).await;
    let py = stack
        .register("python", "escape", &python_source("escape", ESCAPE_PY))
        .await;
    let m = &markers.0;
    let shell = |marker: &str| json!({"marker": marker, "hold": hold}).to_string();
    let python = |how: &str, marker: &str| json_args(&json!([how, marker, hold]));
    let tasks = [
        (setsid, shell(&m[0])),
        (double, shell(&m[1])),
        (py.clone(), python("setsid", &m[2])),
        (py.clone(), python("double-fork", &m[3])),
        (py, python("popen", &m[4])),
    ];
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|(f, payload)| {
            let mut t = json!({"function_id": f, "payload": payload, "max_retries": 0});
            if let Some(secs) = walltime {
                t["walltime_secs"] = json!(secs);
            }
            t
        })
        .collect();
    let body = json!({"endpoint_id": stack.endpoint_id.unwrap(), "tasks": tasks});
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["task_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().parse().unwrap())
        .collect()
}

async fn until_all_escaped(stack: &Stack, markers: &Markers) {
    stack
        .wait_until(WITHIN, "every escaped sleep runs", || async move {
            markers.running().len() == markers.0.len()
        })
        .await;
}

async fn until_none_left(stack: &Stack, markers: &Markers, after: &str) {
    let deadline = tokio::time::Instant::now() + GONE_WITHIN;
    loop {
        let left = markers.running();
        if left.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{after}: escaped processes still run after {GONE_WITHIN:?}: {left:?}\nendpoint log:\n{}",
            stack.log_text("ferry-endpoint")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Processes with an argument ending in `name` (their executable, say), below
/// `ancestor`.
fn below(ancestor: u32, name: &str) -> Vec<u32> {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .is_some_and(|argv| argv.split(|b| *b == 0).any(|a| a.ends_with(name.as_bytes())))
        })
        .filter(|&pid| {
            let mut at = pid;
            for _ in 0..64 {
                match parent(at) {
                    Some(p) if p == ancestor => return true,
                    Some(p) if p > 1 => at = p,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

fn kill9(pids: &[u32]) {
    assert!(!pids.is_empty(), "nothing to kill");
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

#[tokio::test]
async fn cancelled_tasks_leave_no_escaped_process() {
    let stack = stack().await;
    let markers = Markers::new(5);
    let ids = submit_escapes(&stack, &markers, 120, None).await;
    until_all_escaped(&stack, &markers).await;
    for id in &ids {
        let (status, doc): (u16, Value) = stack.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await;
        assert_eq!(status, 200, "{doc}");
    }
    until_none_left(&stack, &markers, "cancel").await;
    stack.shutdown().await;
}

#[tokio::test]
async fn tasks_past_their_walltime_leave_no_escaped_process() {
    let stack = stack().await;
    let markers = Markers::new(5);
    let ids = submit_escapes(&stack, &markers, 120, Some(6.0)).await;
    until_all_escaped(&stack, &markers).await;
    for id in ids {
        let doc = stack.wait_done(id, WITHIN).await;
        assert_eq!(
            doc.history.last().unwrap().reason.as_deref(),
            Some("timeout"),
            "{doc:?}"
        );
    }
    until_none_left(&stack, &markers, "walltime").await;
    stack.shutdown().await;
}

#[tokio::test]
async fn finished_tasks_leave_no_escaped_process_and_their_workers_go_on() {
    let stack = stack().await;
    let markers = Markers::new(5);
    let ids = submit_escapes(&stack, &markers, 0, None).await;
    for id in ids {
        let doc = stack.wait_done(id, WITHIN).await;
        assert_eq!(doc.status, "success", "{doc:?}");
    }
    until_none_left(&stack, &markers, "the tasks finished").await;
    // The warm interpreters survived their tasks' cleanup.
    let again = Markers::new(5);
    for id in submit_escapes(&stack, &again, 0, None).await {
        assert_eq!(stack.wait_done(id, WITHIN).await.status, "success");
    }
    until_none_left(&stack, &again, "the second round finished").await;
    stack.shutdown().await;
}

#[tokio::test]
async fn killed_workers_leave_no_escaped_process() {
    let mut stack = stack().await;
    let markers = Markers::new(5);
    submit_escapes(&stack, &markers, 120, None).await;
    until_all_escaped(&stack, &markers).await;
    let endpoint = stack.pid(Part::Endpoint).expect("an endpoint");
    kill9(&below(endpoint, "ferry-worker"));
    until_none_left(&stack, &markers, "SIGKILL of the workers").await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_killed_manager_leaves_no_escaped_process() {
    let mut stack = stack().await;
    let markers = Markers::new(5);
    submit_escapes(&stack, &markers, 120, None).await;
    until_all_escaped(&stack, &markers).await;
    let endpoint = stack.pid(Part::Endpoint).expect("an endpoint");
    kill9(&below(endpoint, "ferry-manager"));
    until_none_left(&stack, &markers, "SIGKILL of the manager").await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_stopped_endpoint_leaves_no_escaped_process() {
    let mut stack = stack().await;
    let markers = Markers::new(5);
    submit_escapes(&stack, &markers, 120, None).await;
    until_all_escaped(&stack, &markers).await;
    stack.stop(Part::Endpoint);
    until_none_left(&stack, &markers, "the endpoint's stop").await;
    stack.shutdown().await;
}
