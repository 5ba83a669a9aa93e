//! Tasks through the whole real stack: web-service, forwarder, endpoint, manager,
//! workers, RabbitMQ and Redis.

use std::time::Duration;

use ferry_tests::{Part, Stack, json_args, python_source};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_shell_task_passes_through_all_six_states_and_keeps_its_history() {
    let stack = Stack::start().await;
    let f = stack.register("shell", "greet", "echo hello {who}").await;
    let ids = stack.submit(&[(&f, r#"{"who": "ferry"}"#)]).await;

    let doc = stack.wait_done(ids[0], WITHIN).await;

    assert_eq!(doc.status, "success");
    assert!(doc.completion_t.is_some());
    let result = doc.result.expect("a result");
    let json: serde_json::Value = serde_json::from_str(result.strip_prefix("11\n").unwrap()).unwrap();
    assert_eq!(json["stdout"], "hello ferry\n");
    let states: Vec<_> = doc.history.iter().map(|h| h.state.as_str()).collect();
    assert_eq!(
        states,
        [
            "received",
            "waiting-for-ep",
            "waiting-for-nodes",
            "waiting-for-launch",
            "running",
            "success"
        ]
    );
    let by: Vec<_> = doc.history.iter().map(|h| h.by.as_str()).collect();
    assert_eq!(
        by,
        [
            "web-service",
            "forwarder",
            "endpoint",
            "endpoint",
            "worker",
            "worker"
        ]
    );
    assert!(
        doc.history.windows(2).all(|w| w[0].at <= w[1].at),
        "timestamps in order"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_python_function_runs_and_its_exception_comes_back_with_the_traceback() {
    let stack = Stack::start().await;
    let double = stack
        .register(
            "python",
            "double",
            &python_source("double", "def double(x):\n    return x * 2\n"),
        )
        .await;
    let divide = stack
        .register(
            "python",
            "divide",
            &python_source("divide", "def divide(x):\n    return x / 0\n"),
        )
        .await;
    let ids = stack
        .submit(&[
            (&double, &json_args(&serde_json::json!([21]))),
            (&divide, &json_args(&serde_json::json!([1]))),
        ])
        .await;

    let ok = stack.wait_done(ids[0], WITHIN).await;
    let failed = stack.wait_done(ids[1], WITHIN).await;

    assert_eq!(ok.status, "success", "{:?}", ok.exception);
    assert!(
        ok.result.unwrap().starts_with("00\n"),
        "a serialized Python value"
    );
    assert_eq!(failed.status, "failed");
    let traceback = failed.exception.expect("a traceback");
    assert!(traceback.contains("ZeroDivisionError"), "{traceback}");
    assert!(traceback.contains("divide"), "{traceback}");
    assert!(
        failed.exception_data.is_some(),
        "the exception object travels too"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_batch_is_accepted_whole_and_every_task_finishes() {
    let stack = Stack::start().await;
    let f = stack.register("shell", "n", "echo {n}").await;
    let payloads: Vec<String> = (0..300).map(|n| format!(r#"{{"n": {n}}}"#)).collect();
    let tasks: Vec<(&str, &str)> = payloads.iter().map(|p| (f.as_str(), p.as_str())).collect();

    let ids = stack.submit(&tasks).await;

    assert_eq!(ids.len(), 300);
    let (status, answer): (u16, serde_json::Value) = stack
        .post("/v1/tasks/status", &serde_json::json!({"task_ids": ids}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["tasks"].as_object().unwrap().len(), 300);
    for (n, id) in ids.iter().enumerate() {
        let doc = stack.wait_done(*id, WITHIN).await;
        assert_eq!(doc.status, "success");
        assert!(doc.result.unwrap().contains(&format!("\"stdout\":\"{n}\\n\"")));
    }
    // Without their histories, and brief (the outcome alone): the same outcomes.
    for shape in [
        json!({"history": false}),
        json!({"history": false, "brief": true}),
    ] {
        let mut request = json!({"task_ids": ids});
        request
            .as_object_mut()
            .unwrap()
            .extend(shape.as_object().unwrap().clone());
        let (status, answer): (u16, serde_json::Value) = stack.post("/v1/tasks/status", &request).await;
        assert_eq!(status, 200);
        for (n, id) in ids.iter().enumerate() {
            let doc = &answer["tasks"][id.to_string()];
            assert_eq!(doc["status"], "success");
            assert_eq!(doc["pending"], false);
            assert!(
                doc["result"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("\"stdout\":\"{n}\\n\""))
            );
            assert!(doc["completion_t"].is_string(), "{doc}");
            assert!(doc["history"].as_array().is_none_or(|h| h.is_empty()), "{doc}");
            let brief = shape["brief"] == true;
            assert_eq!(doc.get("task_id").is_none(), brief, "{shape}: {doc}");
            assert_eq!(doc.get("batch_id").is_none(), brief, "{shape}: {doc}");
        }
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn a_failing_command_fails_its_task_with_the_exit_status() {
    let stack = Stack::start().await;
    let f = stack.register("shell", "fail", "echo broken >&2; exit 3").await;
    let ids = stack.submit(&[(&f, "")]).await;

    let doc = stack.wait_done(ids[0], WITHIN).await;

    assert_eq!(doc.status, "failed");
    let exception = doc.exception.unwrap();
    assert!(
        exception.starts_with("command exited with status 3"),
        "{exception}"
    );
    assert_eq!(doc.stderr.as_deref(), Some("broken\n"));
    stack.shutdown().await;
}

#[tokio::test]
async fn offline_endpoint_keeps_tasks_waiting_for_ep_until_it_returns() {
    let mut stack = Stack::start().await;
    let f = stack.register("shell", "hi", "echo hi").await;
    stack.stop(Part::Endpoint);

    let ids = stack.submit(&[(&f, "")]).await;
    let id = ids[0];
    stack
        .wait_until(WITHIN, "the task waits for its endpoint", || async {
            stack.task(id).await.status == "waiting-for-ep"
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stack.task(id).await.status,
        "waiting-for-ep",
        "nothing runs it while the endpoint is away"
    );

    stack.start_endpoint().await;
    let doc = stack.wait_done(id, WITHIN).await;
    assert_eq!(doc.status, "success");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_worker_that_dies_under_a_task_is_replaced_and_the_task_retried() {
    let stack = Stack::start().await;
    let marker = stack.dir.path().join("crashed-once");
    let source = "def crash_once(path):\n    import os\n    if not os.path.exists(path):\n        open(path, 'w').close()\n        os._exit(1)\n    return 'survived'\n";
    let f = stack
        .register("python", "crash_once", &python_source("crash_once", source))
        .await;
    let ids = stack
        .submit(&[(&f, &json_args(&serde_json::json!([marker.to_str().unwrap()])))])
        .await;

    let doc = stack.wait_done(ids[0], WITHIN).await;

    assert_eq!(doc.status, "success", "{:?}", doc.exception);
    assert_eq!(doc.attempt, 1);
    assert!(marker.exists());
    let retried = doc
        .history
        .iter()
        .any(|h| h.state == "waiting-for-nodes" && h.attempt == 1);
    assert!(retried, "the history shows the retry: {:?}", doc.history);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_running_task_shows_when_it_was_last_seen_alive() {
    let stack = Stack::start().await;
    let f = stack.register("shell", "slow", "sleep 4").await;
    let id = stack.submit(&[(&f, "")]).await[0];

    stack
        .wait_until(WITHIN, "the running task has a last-seen time", || async {
            let doc = stack.task(id).await;
            doc.status == "running" && doc.last_seen.is_some()
        })
        .await;
    let first = stack.task(id).await.last_seen.unwrap();
    stack
        .wait_until(Duration::from_secs(10), "its last-seen time moves on", || async {
            stack.task(id).await.last_seen.is_some_and(|t| t > first)
        })
        .await;
    assert_eq!(stack.wait_done(id, WITHIN).await.status, "success");
    stack.shutdown().await;
}

/// The web-service answers before RabbitMQ confirms its publish. A submission whose
/// message never reached the queue (here: records written, nothing published) is
/// recovered from Redis by the forwarder's sweeper, and its task runs.
#[tokio::test]
async fn a_task_whose_submission_message_was_lost_still_runs() {
    use ferry_proto::{Actor, BatchId, UserId};
    use ferry_store::{BatchRecord, NewTask, Store};

    let stack = Stack::start().await;
    let echo = stack.register("shell", "echo", "echo recovered").await;
    let store = Store::connect(&ferry_tests::redis_url(), &stack.namespace, 600)
        .await
        .unwrap();
    let task = NewTask {
        task_id: ferry_proto::TaskId::new(),
        function_id: echo.parse().unwrap(),
        max_retries: 3,
        payload: bytes::Bytes::new(),
        walltime_ms: None,
        priority: 0,
        requires: None,
        retry: None,
        environment: None,
        result_group: None,
        by_reference: false,
    };
    let batch = BatchRecord {
        batch_id: BatchId::new(),
        owner: UserId::new(),
        endpoint_id: stack.endpoint_id.unwrap(),
        size: 1,
        created_at: ferry_proto::time::now_micros(),
        task_group: None,
        deadline: None,
        events: false,
        callback_url: None,
        callback_secret: None,
    };
    store
        .create_tasks(&batch, std::slice::from_ref(&task), Actor::WebService)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let record = loop {
        let record = store.get_task(task.task_id).await.unwrap().unwrap();
        if record.state.is_terminal() {
            break record;
        }
        assert!(std::time::Instant::now() < deadline, "still {:?}", record.state);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(record.state, ferry_proto::TaskState::Success);
    assert_eq!(record.stdout.as_deref(), Some("recovered\n"));
    assert!(stack.log_text("ferry-forwarder").contains("submitted again"));
    stack.shutdown().await;
}

/// A task the endpoint holds while every worker slot is taken shows `waiting-for-nodes`
/// (reported once it has waited 500 ms for a manager; a task a manager takes sooner
/// reports the step with the next ones).
#[tokio::test]
async fn tasks_waiting_for_a_free_worker_show_waiting_for_nodes() {
    let stack = Stack::start().await;
    // A duration no other test uses (tests look for their sleeps machine-wide).
    let nap = stack.register("shell", "nap", "sleep 60.31").await;
    // The manager takes 2 workers x 16 tasks; the other 8 wait in the endpoint.
    let ids = stack.submit(&vec![(nap.as_str(), ""); 40]).await;
    let counts = |docs: &ferry_proto::api::StatusResponse| {
        let count = |states: &[&str]| {
            docs.tasks
                .values()
                .filter(|d| states.contains(&d.status.as_str()))
                .count()
        };
        (
            count(&["waiting-for-nodes"]),
            count(&["waiting-for-launch", "running"]),
        )
    };
    let this = &stack;
    let ids_ref = &ids;
    stack
        .wait_until(
            Duration::from_secs(20),
            "8 tasks waiting for nodes, 32 on the manager",
            || async move {
                let body = serde_json::json!({"task_ids": ids_ref, "history": false});
                let (_, docs): (u16, ferry_proto::api::StatusResponse) =
                    this.post("/v1/tasks/status", &body).await;
                counts(&docs) == (8, 32)
            },
        )
        .await;
    for id in &ids {
        let (status, _): (u16, serde_json::Value) = stack
            .post(&format!("/v1/tasks/{id}/cancel"), &serde_json::json!({}))
            .await;
        assert_eq!(status, 200);
    }
    stack.shutdown().await;
}
