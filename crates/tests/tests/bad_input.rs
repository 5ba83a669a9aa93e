//! Bad input gets a 4xx with a JSON error naming the problem, and breaks nothing.

use std::time::Duration;

use ferry_broker::Broker;
use ferry_tests::{Stack, amqp_url};
use serde_json::{Value, json};

async fn raw_post(stack: &Stack, path: &str, token: Option<&str>, body: &'static str) -> (u16, Value) {
    let mut request = stack
        .http
        .post(format!("{}{path}", stack.url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn every_bad_request_is_answered_with_a_code_and_a_message_naming_it() {
    let stack = Stack::start().await;
    let ep = stack.endpoint_id.unwrap();
    let f = stack.register("shell", "hi", "echo hi").await;
    let missing = uuid::Uuid::new_v4();

    let (s, b): (u16, Value) = stack
        .post(
            "/v1/tasks",
            &json!({"endpoint_id": ep, "tasks": [{"function_id": missing}]}),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (404, Some("not_found")));
    assert!(
        b["message"].as_str().unwrap().contains(&missing.to_string()),
        "{b}"
    );

    let (s, b): (u16, Value) = stack
        .post(
            "/v1/tasks",
            &json!({"endpoint_id": missing, "tasks": [{"function_id": f}]}),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (404, Some("not_found")));
    assert!(b["message"].as_str().unwrap().contains("endpoint"), "{b}");

    let (s, b) = raw_post(&stack, "/v1/functions", Some("fy_not_a_token"), "{}").await;
    assert_eq!((s, b["code"].as_str()), (401, Some("unauthenticated")));
    let (s, b) = raw_post(&stack, "/v1/functions", None, "{}").await;
    assert_eq!((s, b["code"].as_str()), (401, Some("unauthenticated")));

    let (s, b) = raw_post(&stack, "/v1/tasks", Some(&stack.token), "{not json").await;
    assert_eq!((s, b["code"].as_str()), (400, Some("bad_request")));

    let (s, b): (u16, Value) = stack
        .post("/v1/tasks", &json!({"endpoint_id": "nope", "tasks": []}))
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("bad_request")));
    assert!(b["message"].as_str().unwrap().contains("endpoint_id"), "{b}");

    let (s, b): (u16, Value) = stack
        .post("/v1/tasks", &json!({"endpoint_id": ep, "tasks": []}))
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("bad_request")));

    let (s, b): (u16, Value) = stack
        .post(
            "/v1/tasks",
            &json!({"endpoint_id": ep, "tasks": [{"function_id": f, "payload": "[1, 2]"}]}),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("bad_request")));
    assert!(b["message"].as_str().unwrap().contains("tasks[0].payload"), "{b}");

    // The server closes a connection whose body it refused, so this one gets its own.
    let huge = "x".repeat(11 * 1024 * 1024);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/tasks", stack.url))
        .bearer_auth(&stack.token)
        .json(&json!({"endpoint_id": ep, "tasks": [{"function_id": f, "payload": huge}]}))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let b: Value = r.json().await.unwrap();
    assert_eq!((s, b["code"].as_str()), (413, Some("payload_too_large")));
    assert!(
        b["message"].as_str().unwrap().contains("10485760"),
        "names the limit: {b}"
    );

    let (s, b): (u16, Value) = stack.get(&format!("/v1/tasks/{missing}")).await;
    assert_eq!((s, b["code"].as_str()), (404, Some("not_found")));
    let (s, b): (u16, Value) = stack.get("/v1/tasks/not-a-uuid").await;
    assert_eq!((s, b["code"].as_str()), (400, Some("bad_request")));
    assert!(b["message"].as_str().unwrap().contains("task"), "{b}");

    // After all that, the service still works.
    let ids = stack.submit(&[(&f, "")]).await;
    assert_eq!(
        stack.wait_done(ids[0], Duration::from_secs(60)).await.status,
        "success"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn users_see_only_their_own_things() {
    let stack = Stack::start().await;
    let f = stack.register("shell", "hi", "echo hi").await;
    let ids = stack.submit(&[(&f, "")]).await;
    let other = stack.create_user("mallory");
    let get = |path: String| {
        let http = stack.http.clone();
        let url = stack.url.clone();
        let token = other.clone();
        async move {
            let r = http
                .get(format!("{url}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    assert_eq!(get(format!("/v1/tasks/{}", ids[0])).await, 404);
    // Another user's things answer as unknown ones do: 404, never confirming an id.
    assert_eq!(get(format!("/v1/functions/{f}")).await, 404);
    assert_eq!(
        get(format!("/v1/endpoints/{}", stack.endpoint_id.unwrap())).await,
        404
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_malformed_amqp_message_is_dead_lettered_and_the_forwarder_keeps_running() {
    let stack = Stack::start().await;
    let broker = Broker::connect(&amqp_url(), &stack.namespace, Default::default())
        .await
        .unwrap();

    broker
        .publish(&broker.submissions_queue(), b"\x01garbage")
        .await
        .unwrap();
    broker.publish(&broker.results_queue(), b"").await.unwrap();

    let dead = broker.dead_queue();
    stack
        .wait_until(
            Duration::from_secs(30),
            "both messages are dead-lettered",
            || async { broker.queue_len(&dead).await.unwrap_or(0) == 2 },
        )
        .await;
    assert!(
        stack
            .log_text("ferry-forwarder")
            .contains("dead-lettering a malformed")
    );
    let f = stack.register("shell", "hi", "echo hi").await;
    let ids = stack.submit(&[(&f, "")]).await;
    assert_eq!(
        stack.wait_done(ids[0], Duration::from_secs(60)).await.status,
        "success"
    );
    broker.close().await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_registration_is_bounded_field_by_field_on_both_apis() {
    let stack = Stack::start_with_env(&[("FERRY_MAX_FUNCTION_BYTES", "1000")]).await;
    let big = "x".repeat(1001);
    let cases = [
        (
            "/v1/functions",
            json!({"name": "f", "kind": "shell", "code": big}),
            413,
            "FERRY_MAX_FUNCTION_BYTES",
        ),
        (
            "/v1/functions",
            json!({"name": "", "kind": "shell", "code": "true"}),
            400,
            "name must be 1 to 256 bytes",
        ),
        (
            "/v1/functions",
            json!({"name": "f", "kind": "shell", "code": "true", "description": "d".repeat(5000)}),
            400,
            "description is 5000 bytes",
        ),
        (
            "/v1/functions",
            json!({"name": "f", "kind": "shell", "code": "true", "shared_with": vec![uuid::Uuid::new_v4(); 1001]}),
            400,
            "shared_with names 1001 users",
        ),
        (
            "/v1/functions",
            json!({"name": "f", "kind": "shell", "code": "true", "public": "yes"}),
            400,
            "public",
        ),
        (
            "/v3/functions",
            json!({"function_name": "f", "function_code": big}),
            413,
            "function_code is 1001 bytes",
        ),
        (
            "/v3/functions",
            json!({"function_name": "n".repeat(300), "function_code": "x"}),
            400,
            "function_name",
        ),
        (
            "/v3/functions",
            json!({"function_name": "f", "function_code": "x", "public": 3}),
            400,
            "public",
        ),
    ];
    for (path, body, want, says) in cases {
        let (status, answer): (u16, Value) = stack.post(path, &body).await;
        assert_eq!(status, want, "{path} {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(says),
            "{path}: {answer}"
        );
    }
    // At the limit it is taken.
    let (status, answer): (u16, Value) = stack
        .post(
            "/v1/functions",
            &json!({"name": "f", "kind": "shell", "code": "x".repeat(1000)}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    stack.shutdown().await;
}
