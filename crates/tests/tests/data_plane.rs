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

/// A function larger than a task message should carry travels by reference: ten tasks
/// of a 100 KB function wait in the endpoint's queue as ten small messages, and run once
/// the endpoint fetches the function (once) from the web-service.
#[tokio::test]
async fn a_large_function_is_not_copied_into_every_task_message() {
    if ferry_tests::embedded() {
        eprintln!("skipped on the embedded broker: the test reads RabbitMQ's management API");
        return;
    }
    let mut stack = Stack::start().await;
    // A shell command of 100 KB (one argument of `sh -c` may hold 128 KiB): `echo` and a
    // long comment.
    let command = format!("echo ran # {}", "x".repeat(100 * 1024));
    let big = stack.register("shell", "big", &command).await;
    stack.stop(ferry_tests::Part::Endpoint);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.extend(stack.submit(&[(&big, "")]).await);
    }
    // What RabbitMQ holds for the endpoint's queue (its management API's figures are
    // refreshed every few seconds).
    let queue = format!("{}.ep.{}.tasks", stack.namespace, stack.endpoint_id.unwrap());
    let url = format!("{}/api/queues/%2f/{queue}", ferry_tests::amqp_admin_url());
    let held = std::cell::Cell::new(Value::Null);
    stack
        .wait_until(WITHIN, "the broker's figures for the queue", || async {
            let doc: Value = reqwest::get(&url)
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or(Value::Null);
            let ready = doc["messages_ready"].as_u64() == Some(10) && doc["message_bytes"].is_u64();
            held.set(doc);
            ready
        })
        .await;
    let doc = held.take();
    let bytes = doc["message_bytes"].as_u64().expect("message_bytes");
    assert!(
        bytes < 10 * 8 * 1024,
        "ten messages hold {bytes} bytes: the code rides in each"
    );
    stack.start_part(ferry_tests::Part::Endpoint);
    for id in ids {
        let doc = stack.wait_done(id, WITHIN).await;
        assert_eq!(doc.status, "success", "{:?}", doc.exception);
    }
    stack.shutdown().await;
}

/// One answer about several tasks carries at most FERRY_MAX_RESPONSE_BYTES of results
/// kept in the data plane: past it, 413 naming the limit (ask for fewer); each task
/// alone is always answered.
#[tokio::test]
async fn an_answer_about_many_large_results_is_bounded() {
    let stack = Stack::start_with_env(&[("FERRY_MAX_RESPONSE_BYTES", "3145728")]).await;
    let echo = stack
        .register(
            "python",
            "echo",
            &python_source("echo", "def echo(s):\n    return s + '!'\n"),
        )
        .await;
    let payload = json_args(&json!(["y".repeat(2 * 1024 * 1024)]));
    let ids = stack.submit(&[(&echo, &payload), (&echo, &payload)]).await;
    for id in &ids {
        assert_eq!(stack.wait_done(*id, WITHIN).await.status, "success");
    }
    for brief in [false, true] {
        let (status, answer): (u16, Value) = stack
            .post("/v1/tasks/status", &json!({"task_ids": ids, "brief": brief}))
            .await;
        assert_eq!(status, 413, "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains("FERRY_MAX_RESPONSE_BYTES") && message.contains("3145728"),
            "{message}"
        );
        for id in &ids {
            let (status, answer): (u16, Value) = stack
                .post("/v1/tasks/status", &json!({"task_ids": [id], "brief": brief}))
                .await;
            assert_eq!(status, 200, "{answer}");
            assert!(answer["tasks"][id.to_string()]["result"].as_str().unwrap().len() > 2 * 1024 * 1024);
        }
    }
    // A session's page likewise: a page of one is answered.
    let batch = stack.task(ids[0]).await.batch_id;
    let (status, _): (u16, Value) = stack.get(&format!("/v1/sessions/{batch}/tasks")).await;
    assert_eq!(status, 413);
    let (status, page): (u16, Value) = stack.get(&format!("/v1/sessions/{batch}/tasks?limit=1")).await;
    assert_eq!(status, 200, "{page}");
    stack.shutdown().await;
}
