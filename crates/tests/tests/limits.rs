//! Per-user limits, tried against a running service with small settings: a user over the
//! request rate, over their unfinished tasks, an endpoint over its unfinished tasks and
//! a user over their WebSockets are each answered 429 with `Retry-After`, the message
//! naming the limit; the refused submission creates nothing, and room comes back as
//! tasks finish.

use std::time::Duration;

use ferry_tests::{Part, Stack};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WITHIN: Duration = Duration::from_secs(60);

async fn call(
    stack: &Stack,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut request = stack.request_as(method, path, Some(token));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let retry_after = answer
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, answer.json().await.unwrap_or(Value::Null))
}

fn tasks(stack: &Stack, function: &str, n: usize) -> Value {
    let tasks: Vec<Value> = (0..n)
        .map(|_| json!({"function_id": function, "payload": ""}))
        .collect();
    json!({"endpoint_id": stack.endpoint_id.unwrap(), "tasks": tasks})
}

#[tokio::test]
async fn a_user_over_the_request_rate_waits_as_retry_after_says_and_others_do_not() {
    let stack = Stack::start_with_env(&[("FERRY_RATE_LIMIT", "2"), ("FERRY_RATE_BURST", "5")]).await;
    let other = stack.create_user("other");
    let mut refused = None;
    for _ in 0..20 {
        let (status, retry_after, body) =
            call(&stack, Method::GET, "/v1/endpoints", &stack.token, None).await;
        if status == 429 {
            refused = Some((retry_after, body));
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let (retry_after, body) = refused.expect("a burst past the rate is refused");
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=5).contains(&secs), "{secs}");
    assert_eq!(body["code"], "too_many_requests", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("FERRY_RATE_LIMIT"),
        "{body}"
    );
    // Another user is not held back by the first.
    let (status, _, body) = call(&stack, Method::GET, "/v1/endpoints", &other, None).await;
    assert_eq!(status, 200, "{body}");
    // After waiting as told, the first is served again.
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (status, _, body) = call(&stack, Method::GET, "/v1/endpoints", &stack.token, None).await;
    assert_eq!(status, 200, "{body}");
    stack.shutdown().await;
}

#[tokio::test]
async fn unfinished_tasks_are_limited_per_user_and_per_endpoint_and_room_comes_back_as_they_end() {
    let mut stack = Stack::start_with_env(&[
        ("FERRY_MAX_UNFINISHED_PER_USER", "3"),
        ("FERRY_MAX_UNFINISHED_PER_ENDPOINT", "5"),
    ])
    .await;
    let echo = stack.register("shell", "echo", "echo hi").await;
    // Alice shares her endpoint with bob (its config, sent when it registers).
    let bob = stack.create_user("bob");
    let (_, _, me) = call(&stack, Method::GET, "/v1/whoami", &bob, None).await;
    let bob_id = me["user_id"].as_str().unwrap().to_owned();
    stack.stop(Part::Endpoint);
    let config = stack.endpoint_dir().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("shared_with = [\"{bob_id}\"]\n{text}")).unwrap();
    stack.start_part(Part::Endpoint);
    stack
        .wait_until(WITHIN, "the endpoint is shared with bob", || async {
            call(&stack, Method::GET, "/v1/endpoints", &bob, None).await.2 != json!([])
        })
        .await;
    // With the endpoint away, tasks stay unfinished.
    stack.stop(Part::Endpoint);
    let (status, _, body) = call(
        &stack,
        Method::POST,
        "/v1/tasks",
        &stack.token,
        Some(tasks(&stack, &echo, 3)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let first: Vec<String> = serde_json::from_value(body["task_ids"].clone()).unwrap();

    // A fourth does not fit alice's limit: refused whole, nothing created.
    let (status, retry_after, body) = call(
        &stack,
        Method::POST,
        "/v1/tasks",
        &stack.token,
        Some(tasks(&stack, &echo, 1)),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some());
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("FERRY_MAX_UNFINISHED_PER_USER") && message.contains("has 3 unfinished"),
        "{message}"
    );
    // Through the sessions route too, counted over every session of the request.
    let sessions = json!({"sessions": [tasks(&stack, &echo, 1), tasks(&stack, &echo, 1)]});
    let (status, _, body) = call(&stack, Method::POST, "/v1/sessions", &stack.token, Some(sessions)).await;
    assert_eq!(status, 429, "{body}");

    // Bob has room of his own, but the endpoint holds 3 of its 5: 2 fit, 3 do not.
    let body = json!({"name": "his", "kind": "shell", "code": "echo his"});
    let (status, _, answer) = call(&stack, Method::POST, "/v1/functions", &bob, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    let his = answer["function_id"].as_str().unwrap().to_owned();
    let (status, _, body) = call(
        &stack,
        Method::POST,
        "/v1/tasks",
        &bob,
        Some(tasks(&stack, &his, 3)),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("FERRY_MAX_UNFINISHED_PER_ENDPOINT") && message.contains("has 3 unfinished"),
        "{message}"
    );
    let (status, _, body) = call(
        &stack,
        Method::POST,
        "/v1/tasks",
        &bob,
        Some(tasks(&stack, &his, 2)),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The endpoint comes back and runs them: room comes back.
    stack.start_part(Part::Endpoint);
    for id in &first {
        let doc = stack.wait_done(id.parse().unwrap(), WITHIN).await;
        assert_eq!(doc.status.to_string(), "success");
    }
    stack
        .wait_until(WITHIN, "room for three more tasks", || async {
            call(
                &stack,
                Method::POST,
                "/v1/tasks",
                &stack.token,
                Some(tasks(&stack, &echo, 3)),
            )
            .await
            .0 == 200
        })
        .await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_user_holds_at_most_so_many_websockets_and_a_closed_one_gives_its_place_back() {
    let stack = Stack::start_with_env(&[("FERRY_MAX_WEBSOCKETS_PER_USER", "2")]).await;
    let open = || async {
        let url = format!("{}/v1/ws", stack.url.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {}", stack.token).parse().unwrap(),
        );
        tokio_tungstenite::connect_async(request).await
    };
    let first = open().await.expect("the first socket");
    let _second = open().await.expect("the second socket");
    match open().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429);
            assert!(response.headers().contains_key("retry-after"));
            let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("FERRY_MAX_WEBSOCKETS_PER_USER"), "{body}");
        }
        other => panic!(
            "a third socket should be refused with 429, got {:?}",
            other.map(|_| ())
        ),
    }
    drop(first);
    stack
        .wait_until(WITHIN, "the closed socket's place is free", || async {
            open().await.is_ok()
        })
        .await;
    stack.shutdown().await;
}
