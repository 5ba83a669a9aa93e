//! Sessions (batches): many tasks in one request, all accepted or none; per-state
//! counts read in O(1) that always sum to the session's size; results in pages; a
//! session timeout; several sessions in one request.

use std::time::{Duration, Instant};

use ferry_tests::Stack;
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(60);

async fn session(stack: &Stack, id: &str) -> Value {
    let (status, doc): (u16, Value) = stack.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(status, 200, "{doc}");
    doc
}

/// The counts sum to the size, and the number of finished tasks never goes down.
fn check_counts(doc: &Value, finished_before: &mut u64) {
    let counts = doc["counts"].as_object().unwrap();
    assert_eq!(counts.len(), 7, "{doc}");
    let sum: u64 = counts.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(sum, doc["size"].as_u64().unwrap(), "counts drifted: {doc}");
    let finished = counts["success"].as_u64().unwrap() + counts["failed"].as_u64().unwrap();
    assert!(finished >= *finished_before, "finished went down: {doc}");
    *finished_before = finished;
}

#[tokio::test]
async fn a_100000_task_session_completes_with_consistent_counts_at_every_poll() {
    let stack = Stack::start().await;
    const N: usize = 100_000;
    let body = stack.identity_session(N).await;
    let (status, answer): (u16, Value) = stack.post("/v1/sessions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["sessions"][0]["session_id"].as_str().unwrap().to_owned();
    let submitted = answer["sessions"][0]["task_ids"].as_array().unwrap().clone();
    assert_eq!(submitted.len(), N);

    let deadline = Instant::now() + Duration::from_secs(900);
    let mut finished = 0;
    let mut polls = 0;
    let doc = loop {
        let doc = session(&stack, &id).await;
        check_counts(&doc, &mut finished);
        polls += 1;
        if doc["status"] != "running" {
            break doc;
        }
        assert!(Instant::now() < deadline, "session still running: {doc}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["counts"]["success"], N as u64, "{doc}");
    assert!(polls > 1, "the session was watched while it ran");

    // Results in pages, in submission order.
    let mut offset = Some(0u64);
    let mut seen = 0;
    while let Some(at) = offset {
        let (status, page): (u16, Value) = stack
            .get(&format!("/v1/sessions/{id}/tasks?offset={at}&limit=10000"))
            .await;
        assert_eq!(status, 200, "{page}");
        for task in page["tasks"].as_array().unwrap() {
            assert_eq!(task["status"], "success");
            assert!(task["result"].is_string(), "{task}");
            assert_eq!(task["task_id"], submitted[seen], "pages follow submission order");
            seen += 1;
        }
        offset = page["next_offset"].as_u64();
    }
    assert_eq!(seen, N);
    stack.shutdown().await;
}

/// How many task records the stack's namespace holds.
async fn task_keys(stack: &Stack) -> usize {
    let redis = redis::Client::open(ferry_tests::redis_url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:task:*", stack.namespace))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.len()
}

#[tokio::test]
async fn several_sessions_in_one_request_are_all_checked_before_any_is_created() {
    let stack = Stack::start().await;
    let echo = stack.register("shell", "echo", "echo {word}").await;
    let endpoint = stack.endpoint_id.unwrap();
    let good =
        json!({"endpoint_id": endpoint, "tasks": [{"function_id": echo, "payload": "{\"word\": \"hi\"}"}]});
    let unknown = uuid::Uuid::new_v4().to_string();
    let bad = json!({"endpoint_id": endpoint, "tasks": [
        {"function_id": echo, "payload": "{\"word\": \"a\"}"},
        {"function_id": unknown, "payload": ""},
    ]});
    let before = task_keys(&stack).await;
    let (status, answer): (u16, Value) = stack
        .post("/v1/sessions", &json!({"sessions": [good, bad]}))
        .await;
    assert_eq!(status, 404, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("sessions[1]") && message.contains(&unknown),
        "{message}"
    );
    assert_eq!(
        task_keys(&stack).await,
        before,
        "no task of either session was created"
    );

    // Two good ones: two ids, each completes.
    let (status, answer): (u16, Value) = stack
        .post("/v1/sessions", &json!({"sessions": [good.clone(), good]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let sessions = answer["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_ne!(sessions[0]["session_id"], sessions[1]["session_id"]);
    for s in sessions {
        let id = s["session_id"].as_str().unwrap();
        let mut finished = 0;
        let deadline = Instant::now() + WITHIN;
        loop {
            let doc = session(&stack, id).await;
            check_counts(&doc, &mut finished);
            if doc["status"] == "completed" {
                assert!(doc["completed_at"].is_number());
                break;
            }
            assert!(Instant::now() < deadline, "{doc}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A bad timeout names its field.
    let (status, answer): (u16, Value) = stack
        .post(
            "/v1/sessions",
            &json!({"sessions": [{"endpoint_id": endpoint, "tasks": [{"function_id": echo}], "timeout_secs": 0}]}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("sessions[0].timeout_secs"),
        "{answer}"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_session_past_its_timeout_fails_and_its_unfinished_tasks_fail_with_timeout() {
    let stack = Stack::start().await;
    let nap = stack.register("shell", "nap", "sleep 30").await;
    let quick = stack.register("shell", "quick", "echo quick").await;
    let body = json!({
        "endpoint_id": stack.endpoint_id.unwrap(),
        "tasks": [{"function_id": quick}, {"function_id": nap}, {"function_id": nap}, {"function_id": nap}],
        "timeout_secs": 2,
    });
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["batch_id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let mut finished = 0;
    let doc = loop {
        let doc = session(&stack, &id).await;
        check_counts(&doc, &mut finished);
        if !doc["pending"].as_bool().unwrap() {
            break doc;
        }
        assert!(started.elapsed() < WITHIN, "{doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "failed before the naps ended"
    );
    assert_eq!(
        (doc["status"].as_str(), doc["reason"].as_str()),
        (Some("failed"), Some("timeout")),
        "{doc}"
    );
    assert_eq!(doc["counts"]["success"], 1, "{doc}");
    assert_eq!(doc["counts"]["failed"], 3, "{doc}");
    let (_, page): (u16, Value) = stack.get(&format!("/v1/sessions/{id}/tasks")).await;
    let tasks = page["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["status"], "success");
    for t in &tasks[1..] {
        assert_eq!(t["status"], "failed");
        assert_eq!(
            t["history"].as_array().unwrap().last().unwrap()["reason"],
            "timeout",
            "{t}"
        );
        assert!(t["exception"].as_str().unwrap().contains("timed out"), "{t}");
    }
    stack.shutdown().await;
}
