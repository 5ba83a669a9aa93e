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

    // A struct's fields as an array are not an object (serde would take them in order).
    for path in [
        "/v1/endpoints",
        "/v1/functions",
        "/v3/functions",
        "/v2/batch_status",
    ] {
        let (s, b) = raw_post(&stack, path, Some(&stack.token), r#"["x", "shell", "true"]"#).await;
        assert_eq!((s, b["code"].as_str()), (400, Some("bad_request")), "{path}: {b}");
        assert!(
            b["message"].as_str().unwrap().contains("a JSON object"),
            "{path}: {b}"
        );
    }

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

/// The Globus-compatible routes take exactly the fields the Globus Compute SDK sends,
/// each typed: a wrong type, an unknown field or an oversized free-form object is a 400
/// naming the field, and what the SDK sends is taken.
#[tokio::test]
async fn every_field_of_the_globus_bodies_is_typed_and_no_other_is_taken() {
    let stack = Stack::start().await;
    let ep = stack.endpoint_id.unwrap();
    let submit = format!("/v3/endpoints/{ep}/submit");
    let (s, b): (u16, Value) = stack
        .post(
            "/v3/functions",
            &json!({"function_name": "f", "function_code": "def f():\n    return 1\n", "serialized": false,
                    "meta": {"python_version": "3.11.7", "sdk_version": "4.19.0"}}),
        )
        .await;
    assert_eq!(s, 200, "what the SDK sends is taken: {b}");
    let f = b["function_uuid"].as_str().unwrap().to_owned();
    let deep = (0..20).fold(json!(1), |v, _| json!([v]));
    let cases = [
        (
            "/v3/functions",
            json!({"function_name": "f", "function_code": "x", "colour": "red"}),
            "colour",
        ),
        (
            "/v3/functions",
            json!({"function_name": "f", "function_code": "x", "meta": {"python_version": 3}}),
            "meta.python_version",
        ),
        (
            "/v3/functions",
            json!({"function_name": "f", "function_code": "x", "meta": "3.11"}),
            "meta",
        ),
        (
            "/v3/functions",
            json!({"function_name": "f", "function_code": "x", "serialized": "yes"}),
            "serialized",
        ),
        (
            "/v3/functions",
            json!({"function_name": "f", "function_code": "x", "group": "everyone"}),
            "group",
        ),
        (
            "/v3/functions",
            json!({"function_name": "f", "function_code": "x", "ha_endpoint_id": ep}),
            "ha_endpoint_id",
        ),
        (
            "/v3/functions",
            json!({"function_name": 7, "function_code": "x"}),
            "function_name",
        ),
        (&submit, json!({"tasks": {}, "priority": 1}), "priority"),
        (&submit, json!({"tasks": {f.clone(): [1]}}), "tasks"),
        (
            &submit,
            json!({"tasks": {"not-a-function": ["x"]}}),
            "not-a-function",
        ),
        (
            &submit,
            json!({"tasks": {}, "create_queue": "true"}),
            "create_queue",
        ),
        (
            &submit,
            json!({"tasks": {}, "task_group_id": "tg"}),
            "task_group_id",
        ),
        (
            &submit,
            json!({"tasks": {}, "resource_specification": "big"}),
            "resource_specification",
        ),
        (
            &submit,
            json!({"tasks": {}, "user_endpoint_config": [1]}),
            "user_endpoint_config",
        ),
        (
            &submit,
            json!({"tasks": {}, "user_runtime": {"x": "y".repeat(70_000)}}),
            "user_runtime",
        ),
        (
            &submit,
            json!({"tasks": {}, "user_runtime": {"x": deep}}),
            "user_runtime is nested",
        ),
        (
            &submit,
            json!({"tasks": {}, "result_serializers": "json"}),
            "result_serializers",
        ),
        (
            &submit,
            json!({"tasks": {}, "result_serializers": vec!["s"; 17]}),
            "result_serializers names 17",
        ),
        ("/v2/batch_status", json!({"task_ids": [], "wait": true}), "wait"),
        ("/v2/batch_status", json!({"task_ids": "all"}), "task_ids"),
    ];
    for (path, body, says) in cases {
        let (status, answer): (u16, Value) = stack.post(path, &body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(says),
            "{path} {body}: the answer names {says:?}: {answer}"
        );
    }
    // A submission with every field the SDK's Executor may send is taken.
    let body = json!({
        "create_queue": false,
        "tasks": {f.clone(): ["11\n00\ngAUpfZSMLg==\n"]},
        "resource_specification": {"num_nodes": 1},
        "user_runtime": {"globus_compute_sdk_version": "4.19.0", "python": {"version": "3.11.7"},
                         "platform": {"machine": "x86_64"}},
        "result_serializers": ["globus_compute_sdk.serialize.JSONData"],
    });
    let (status, answer): (u16, Value) = stack.post(&submit, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["tasks"][&f].as_array().unwrap().len(), 1, "{answer}");
    stack.shutdown().await;
}

/// A submission sent again with its `Idempotency-Key` gets the first answer, not a
/// second session; the same key for another body is refused; a key whose request was
/// refused is free again.
#[tokio::test]
async fn a_submission_sent_again_with_its_idempotency_key_is_made_once() {
    let stack = Stack::start().await;
    let f = stack.register("shell", "hi", "echo hi").await;
    let body =
        json!({"endpoint_id": stack.endpoint_id.unwrap(), "tasks": [{"function_id": f}, {"function_id": f}]});
    let send = |key: &'static str, body: Value| {
        let request = stack
            .http
            .post(format!("{}/v1/tasks", stack.url))
            .bearer_auth(&stack.token)
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s1, first) = send("key-1", body.clone()).await;
    let (s2, again) = send("key-1", body.clone()).await;
    assert_eq!((s1, s2), (200, 200), "{first} {again}");
    assert_eq!(first, again, "the same answer: the same session and task ids");
    let (_, session): (u16, Value) = stack
        .get(&format!("/v1/sessions/{}", first["batch_id"].as_str().unwrap()))
        .await;
    assert_eq!(session["size"], 2, "{session}");

    let mut other = body.clone();
    other["tasks"] = json!([{"function_id": f}]);
    let (s, answer) = send("key-1", other).await;
    assert_eq!(s, 409, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("another request"),
        "{answer}"
    );

    // Refused (an unknown function): nothing stands, so the key is free for a fixed body.
    let mut bad = body.clone();
    bad["tasks"] = json!([{"function_id": uuid::Uuid::new_v4()}]);
    let (s, _) = send("key-2", bad).await;
    assert_eq!(s, 404);
    let (s, answer) = send("key-2", body.clone()).await;
    assert_eq!(s, 200, "{answer}");
    assert_ne!(answer["batch_id"], first["batch_id"]);

    let (s, answer) = send("", body.clone()).await;
    assert_eq!(s, 400, "an empty key: {answer}");
    stack.shutdown().await;
}
