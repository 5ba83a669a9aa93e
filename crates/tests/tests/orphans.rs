//! A task's processes end with its manager: a killed or stopped manager leaves none of
//! its commands running (the endpoint retries the task elsewhere; an orphan would run it
//! twice).

use std::time::Duration;

use ferry_proto::TaskId;
use ferry_tests::{Part, Stack};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(60);

/// Processes whose command line is exactly `command`.
fn running(command: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("^{command}$")])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Submits `command` as a shell task that is not retried, and waits until it runs.
async fn start(stack: &Stack, command: &str) -> TaskId {
    let f = stack.register("shell", "long", command).await;
    let body = json!({
        "endpoint_id": stack.endpoint_id.unwrap(),
        "tasks": [{"function_id": f, "payload": "", "max_retries": 0}],
    });
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 200, "{answer}");
    let id: TaskId = answer["task_ids"][0].as_str().unwrap().parse().unwrap();
    stack
        .wait_until(WITHIN, "the command runs", || async move {
            !running(command).is_empty()
        })
        .await;
    id
}

#[tokio::test]
async fn a_killed_manager_leaves_no_command_running() {
    let mut stack = Stack::start().await;
    let command = "sleep 97.13";
    let id = start(&stack, command).await;
    let endpoint = stack.pid(Part::Endpoint).expect("an endpoint");
    let out = std::process::Command::new("pgrep")
        .args(["-P", &endpoint.to_string(), "-f", "ferry-manager"])
        .output()
        .expect("pgrep");
    let managers = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!managers.trim().is_empty(), "a manager under the endpoint");
    for pid in managers.split_whitespace() {
        std::process::Command::new("kill")
            .args(["-9", pid])
            .status()
            .unwrap();
    }
    stack
        .wait_until(Duration::from_secs(20), "the command is gone", || async move {
            running(command).is_empty()
        })
        .await;
    let doc = stack.wait_done(id, WITHIN).await;
    assert_eq!(doc.status, "failed", "no retries were allowed: {doc:?}");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_stopped_endpoint_leaves_no_command_running() {
    let mut stack = Stack::start().await;
    let command = "sleep 97.17";
    start(&stack, command).await;
    stack.stop(Part::Endpoint);
    stack
        .wait_until(Duration::from_secs(20), "the command is gone", || async move {
            running(command).is_empty()
        })
        .await;
    stack.shutdown().await;
}
