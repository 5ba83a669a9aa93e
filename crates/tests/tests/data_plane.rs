//! Large inputs and results travel by reference (the data plane): a 5 MiB input and
//! result make the round trip while task records and messages stay small; an input
//! over the limit is refused with 413 naming it; an expired task says so.

use std::time::Duration;

use ferry_tests::{Stack, json_args, python_source};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_5_mib_input_and_result_make_the_round_trip_by_reference() {
    let stack = Stack::start().await;
    let echo = stack
        .register(
            "python",
            "echo",
            &python_source("echo", "def echo(s):\n    return s + '!'\n"),
        )
        .await;
    let big = "x".repeat(5 * 1024 * 1024);
    let payload = json_args(&json!([big]));
    let ids = stack.submit(&[(&echo, &payload)]).await;
    let doc = stack.wait_done(ids[0], WITHIN).await;
    assert_eq!(doc.status, "success", "{:?}", doc.exception);
    let result = doc.result.expect("a result");
    assert!(result.len() > 5 * 1024 * 1024, "{} bytes", result.len());
    // The brief status read fetches it from the data plane too.
    let (status, brief): (u16, Value) = stack
        .post(
            "/v1/tasks/status",
            &json!({"task_ids": ids, "history": false, "brief": true}),
        )
        .await;
    assert_eq!(status, 200, "{brief}");
    assert_eq!(
        brief["tasks"][ids[0].to_string()]["result"].as_str(),
        Some(result.as_str())
    );

    // Kept apart from the task record: the record's own fields stay small.
    let redis = redis::Client::open(ferry_tests::redis_url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:task:{{{}}}", stack.namespace, ids[0]);
    let record_bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        record_bytes < 16 * 1024,
        "the task record holds {record_bytes} bytes"
    );
    let input_left: bool = redis::cmd("EXISTS")
        .arg(format!("{key}:in"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!input_left, "the input is dropped once the task is terminal");
    stack.shutdown().await;
}

#[tokio::test]
async fn an_input_over_the_limit_is_refused_with_413_naming_the_limit() {
    let stack = Stack::start().await;
    let echo = stack
        .register(
            "python",
            "echo",
            &python_source("echo", "def echo(s):\n    return s\n"),
        )
        .await;
    let huge = "y".repeat(11 * 1024 * 1024);
    let body = json!({
        "endpoint_id": stack.endpoint_id.unwrap(),
        "tasks": [{"function_id": echo, "payload": json_args(&json!([huge]))}],
    });
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 413, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("tasks[0].payload") && message.contains("10485760"),
        "{message}"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_result_over_the_limit_fails_its_task_and_names_the_limit() {
    let stack = Stack::start().await;
    let grow = stack
        .register(
            "python",
            "grow",
            &python_source("grow", "def grow():\n    return 'z' * (11 * 1024 * 1024)\n"),
        )
        .await;
    let ids = stack.submit(&[(&grow, &json_args(&json!([])))]).await;
    let doc = stack.wait_done(ids[0], WITHIN).await;
    assert_eq!(doc.status, "failed");
    let exception = doc.exception.unwrap_or_default();
    assert!(exception.contains("the limit is 10485760 bytes"), "{exception}");
    assert!(exception.starts_with("MaxResultSizeExceeded("), "{exception}");
    stack.shutdown().await;
}

#[tokio::test]
async fn an_expired_task_says_it_expired() {
    let stack = Stack::start().await;
    // An id made (by the clock in it) two hours ago, past the stack's 900 s retention.
    let then = std::time::SystemTime::now() - Duration::from_secs(7200);
    let since = then.duration_since(std::time::UNIX_EPOCH).unwrap();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    let old = uuid::Uuid::new_v7(ts);
    let (status, answer): (u16, Value) = stack.get(&format!("/v1/tasks/{old}")).await;
    assert_eq!(status, 410, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("expired"),
        "{answer}"
    );
    // A fresh unknown id is simply not found.
    let (status, _): (u16, Value) = stack.get(&format!("/v1/tasks/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(status, 404);
    stack.shutdown().await;
}
