//! Tasks that must stop: past their walltime, or cancelled by their owner.

use std::time::{Duration, Instant};

use ferry_tests::{Part, Stack, json_args, python_source};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(60);

async fn submit_with_walltime(
    stack: &Stack,
    function: &str,
    payload: &str,
    walltime_secs: f64,
) -> ferry_proto::TaskId {
    let body = json!({
        "endpoint_id": stack.endpoint_id.unwrap(),
        "tasks": [{"function_id": function, "payload": payload, "walltime_secs": walltime_secs}],
    });
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["task_ids"][0].as_str().unwrap().parse().unwrap()
}

/// Registers `nap()` (a 30 s sleep in Python) and `double(x)`.
async fn nap_and_double(stack: &Stack) -> (String, String) {
    let nap = stack
        .register(
            "python",
            "nap",
            &python_source("nap", "def nap():\n    import time\n    time.sleep(30)\n"),
        )
        .await;
    let double = stack
        .register(
            "python",
            "double",
            &python_source("double", "def double(x):\n    return 2 * x\n"),
        )
        .await;
    (nap, double)
}

#[tokio::test]
async fn a_task_past_its_walltime_is_stopped_and_fails_with_the_cause_timeout() {
    let stack = Stack::start().await;
    let sleeper = stack.register("shell", "sleeper", "sleep 30").await;
    let (python_sleeper, double) = nap_and_double(&stack).await;
    let started = Instant::now();

    let shell = submit_with_walltime(&stack, &sleeper, "", 0.5).await;
    let python = submit_with_walltime(&stack, &python_sleeper, "", 0.5).await;

    for id in [shell, python] {
        let doc = stack.wait_done(id, WITHIN).await;
        assert_eq!(doc.status, "failed");
        assert!(
            doc.exception.as_deref().unwrap_or("").contains("walltime"),
            "{:?}",
            doc.exception
        );
        assert_eq!(doc.history.last().unwrap().reason.as_deref(), Some("timeout"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped long before the 30 s sleeps ended"
    );
    // The worker whose interpreter was stopped runs the next Python task in a fresh one.
    let ids = stack.submit(&[(&double, &json_args(&json!([4])))]).await;
    assert_eq!(stack.wait_done(ids[0], WITHIN).await.status, "success");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_walltime_that_is_not_a_positive_number_is_refused() {
    let stack = Stack::start().await;
    let f = stack.register("shell", "hi", "echo hi").await;
    let body = json!({"endpoint_id": stack.endpoint_id.unwrap(), "tasks": [{"function_id": f, "walltime_secs": -1}]});
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 400);
    assert!(
        answer["message"].as_str().unwrap().contains("walltime_secs"),
        "{answer}"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn cancelled_tasks_and_batches_fail_with_the_cause_cancelled_and_stay_so() {
    let mut stack = Stack::start().await;
    let f = stack.register("shell", "hi", "echo hi").await;
    stack.stop(Part::Endpoint);

    let one = stack.submit(&[(&f, "")]).await[0];
    let (status, doc): (u16, Value) = stack.post(&format!("/v1/tasks/{one}/cancel"), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(doc["status"], "failed");

    let (status, answer): (u16, Value) = stack
        .post(
            "/v1/tasks",
            &json!({"endpoint_id": stack.endpoint_id.unwrap(), "tasks": [{"function_id": f}, {"function_id": f}]}),
        )
        .await;
    assert_eq!(status, 200);
    let batch = answer["batch_id"].as_str().unwrap().to_owned();
    let (status, cancelled): (u16, Value) = stack
        .post(&format!("/v1/batches/{batch}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["cancelled"], 2);

    // The endpoint comes back and runs what was queued; the results change nothing.
    stack.start_endpoint().await;
    let marker = stack.submit(&[(&f, "")]).await[0];
    assert_eq!(stack.wait_done(marker, WITHIN).await.status, "success");
    let mut ids = vec![one];
    ids.extend(serde_json::from_value::<Vec<ferry_proto::TaskId>>(answer["task_ids"].clone()).unwrap());
    for id in ids {
        let doc = stack.task(id).await;
        assert_eq!(doc.status, "failed");
        assert_eq!(doc.exception.as_deref(), Some("task failed: cancelled"));
        let last = doc.history.last().unwrap();
        assert_eq!(
            (last.by.as_str(), last.reason.as_deref()),
            ("user", Some("cancelled"))
        );
    }
    stack.shutdown().await;
}

/// The forwarder publishes a submission while it records `waiting-for-ep`; a task
/// cancelled before that is stopped at the endpoint and never runs.
#[tokio::test]
async fn a_task_cancelled_before_it_was_dispatched_never_runs() {
    let mut stack = Stack::start().await;
    let marks = tempfile::tempdir().unwrap();
    let touch = stack
        .register(
            "shell",
            "touch",
            &format!("touch {}/{{name}}", marks.path().display()),
        )
        .await;
    stack.stop(Part::Forwarder);

    let cancelled = stack.submit(&[(&touch, r#"{"name": "cancelled"}"#)]).await[0];
    let (status, doc): (u16, Value) = stack
        .post(&format!("/v1/tasks/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!((status, doc["status"].as_str()), (200, Some("failed")));

    stack.start_part(Part::Forwarder);
    let marker = stack.submit(&[(&touch, r#"{"name": "marker"}"#)]).await[0];
    assert_eq!(stack.wait_done(marker, WITHIN).await.status, "success");
    assert!(marks.path().join("marker").exists());
    assert!(!marks.path().join("cancelled").exists(), "the cancelled task ran");
    let doc = stack.task(cancelled).await;
    assert_eq!(doc.status, "failed");
    assert!(
        doc.history.iter().all(|h| h.state != "running"),
        "{:?}",
        doc.history
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn cancelling_running_tasks_stops_them_and_frees_their_workers() {
    let stack = Stack::start().await;
    // A duration no other test or program uses: the check below looks machine-wide.
    let sleeper = stack.register("shell", "sleeper", "sleep 60.29").await;
    let python_sleeper = stack
        .register(
            "python",
            "nap",
            &python_source("nap", "def nap():\n    import time\n    time.sleep(60)\n"),
        )
        .await;
    let quick = stack.register("shell", "quick", "echo quick").await;
    // Naps running and queued behind them (in the workers' pipes or the manager).
    let busy = stack
        .submit(&[
            (&sleeper, ""),
            (&python_sleeper, ""),
            (&sleeper, ""),
            (&python_sleeper, ""),
        ])
        .await;
    let (this, naps) = (&stack, &busy);
    this.wait_until(WITHIN, "a nap runs", || async move {
        let mut running = 0;
        for &id in naps {
            running += usize::from(this.task(id).await.status == "running");
        }
        running >= 1
    })
    .await;
    let started = Instant::now();
    for &id in &busy {
        let (status, doc): (u16, Value) = stack.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await;
        assert_eq!(status, 200, "{doc}");
        assert_eq!(doc["status"], "failed");
    }
    // The workers are free again long before the naps would have ended.
    let ids = stack
        .submit(&[(&quick, ""), (&quick, ""), (&quick, ""), (&quick, "")])
        .await;
    for id in ids {
        let doc = stack.wait_done(id, WITHIN).await;
        assert_eq!(doc.status, "success", "{doc:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the cancelled naps were stopped ({:?})",
        started.elapsed()
    );
    for &id in &busy {
        let doc = stack.task(id).await;
        assert_eq!(doc.status, "failed");
        assert_eq!(doc.history.last().unwrap().reason.as_deref(), Some("cancelled"));
    }
    // No `sleep 60.29` survives its cancelled task.
    let this = &stack;
    this.wait_until(Duration::from_secs(10), "the sleeps are gone", || async move {
        let out = std::process::Command::new("pgrep")
            .args(["-f", "^sleep 60.29$"])
            .output()
            .unwrap();
        let _ = this;
        out.stdout.is_empty()
    })
    .await;
    assert!(stack.log_text("ferry-endpoint").contains("cancelled"));
    stack.shutdown().await;
}

/// Workers hold several tasks in their interpreter's pipe: when the one running is
/// stopped at its walltime, the ones queued behind it run in a fresh interpreter, once,
/// and succeed.
#[tokio::test]
async fn tasks_queued_behind_a_stopped_task_run_in_a_fresh_interpreter() {
    let stack = Stack::start().await;
    let (nap, double) = nap_and_double(&stack).await;
    // Two naps first (one per worker), then enough short tasks to queue behind both.
    let mut tasks = vec![json!({"function_id": nap, "payload": "", "walltime_secs": 0.5}); 2];
    for i in 0..8 {
        tasks.push(json!({"function_id": double, "payload": json_args(&json!([i]))}));
    }
    let body = json!({"endpoint_id": stack.endpoint_id.unwrap(), "tasks": tasks});
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 200, "{answer}");
    let ids: Vec<ferry_proto::TaskId> = answer["task_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let doc = stack.wait_done(*id, WITHIN).await;
        if i < 2 {
            assert_eq!(doc.status, "failed");
            assert_eq!(doc.history.last().unwrap().reason.as_deref(), Some("timeout"));
        } else {
            assert_eq!(doc.status, "success", "{doc:?}");
            assert_eq!(doc.attempt, 0, "ran once: {:?}", doc.history);
        }
    }
    stack.shutdown().await;
}
