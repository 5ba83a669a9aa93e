//! Executions, not only records: an endpoint that stops while it holds a task message
//! gets the message again when it starts, and runs only the tasks of it that are still
//! to run. A task whose result was recorded never runs again; each task writes a line
//! to a side-effect log to count its runs.

use std::collections::HashMap;
use std::time::Duration;

use ferry_proto::TaskId;
use ferry_tests::{Part, Stack};
use serde_json::{Value, json};

const N: usize = 30;

/// Runs per task, from the side-effect log.
fn runs(log: &std::path::Path) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *runs.entry(line.trim().to_owned()).or_default() += 1;
    }
    runs
}

/// The tasks recorded as succeeded, by their argument.
async fn succeeded(stack: &Stack, ids: &[TaskId]) -> Vec<usize> {
    let (status, answer): (u16, Value) = stack.post("/v1/tasks/status", &json!({"task_ids": ids})).await;
    assert_eq!(status, 200, "{answer}");
    ids.iter()
        .enumerate()
        .filter(|(_, id)| answer["tasks"][id.to_string()]["status"] == "success")
        .map(|(n, _)| n)
        .collect()
}

/// Submits N tasks that each log their run, as one submission: one task message for the
/// endpoint, acked when all of it is done. The side-effect log and the task ids.
async fn submit_logged(stack: &Stack) -> (std::path::PathBuf, Vec<TaskId>) {
    let log = stack.dir.path().join("ran.log");
    let f = stack
        .register(
            "shell",
            "step",
            &format!("echo {{n}} >> {}; sleep 0.2", log.display()),
        )
        .await;
    let payloads: Vec<String> = (0..N).map(|n| format!(r#"{{"n": {n}}}"#)).collect();
    let ids = stack
        .submit(
            &payloads
                .iter()
                .map(|p| (f.as_str(), p.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    (log, ids)
}

#[tokio::test]
async fn a_killed_endpoint_runs_again_none_of_the_recorded_tasks_of_its_message() {
    let mut stack = Stack::start().await;
    let (log, ids) = submit_logged(&stack).await;
    let (this, some) = (&stack, &ids);
    this.wait_until(
        Duration::from_secs(60),
        "a third of the tasks finish",
        || async move { succeeded(this, some).await.len() >= N / 3 },
    )
    .await;
    stack.kill(Part::Endpoint);
    // What was reported before the crash is recorded by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recorded = succeeded(&stack, &ids).await;
    assert!(recorded.len() < N, "the crash came mid-message");

    stack.start_part(Part::Endpoint);
    for id in &ids {
        let doc = stack.wait_done(*id, Duration::from_secs(120)).await;
        assert_eq!(doc.status, "success", "{doc:?}");
    }
    let runs = runs(&log);
    for n in &recorded {
        assert_eq!(
            runs.get(&n.to_string()),
            Some(&1),
            "task {n} was recorded before the crash and must not run again: {runs:?}"
        );
    }
    for n in 0..N {
        let r = runs.get(&n.to_string()).copied().unwrap_or(0);
        assert!((1..=2).contains(&r), "task {n} ran {r} times: {runs:?}");
    }
    let log = stack.log_text("ferry-endpoint");
    assert!(log.contains("not run"), "the endpoint says what it left out");
    stack.shutdown().await;
}

/// A graceful stop (SIGTERM) drains: the running tasks finish and report, the endpoint
/// saves what it published, and after the restart no task of the message runs twice.
#[tokio::test]
async fn a_gracefully_restarted_endpoint_runs_no_task_twice() {
    let mut stack = Stack::start().await;
    let (log, ids) = submit_logged(&stack).await;
    let (this, some) = (&stack, &ids);
    this.wait_until(Duration::from_secs(60), "a few tasks finish", || async move {
        succeeded(this, some).await.len() >= 4
    })
    .await;
    stack.stop(Part::Endpoint);
    assert!(
        stack.log_text("ferry-endpoint").contains("drained"),
        "the endpoint drained before it stopped"
    );
    stack.start_part(Part::Endpoint);
    for id in &ids {
        let doc = stack.wait_done(*id, Duration::from_secs(120)).await;
        assert_eq!(doc.status, "success", "{doc:?}");
    }
    let runs = runs(&log);
    for n in 0..N {
        assert_eq!(runs.get(&n.to_string()), Some(&1), "task {n}: {runs:?}");
    }
    stack.shutdown().await;
}
