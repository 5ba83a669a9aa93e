//! Webhooks: a session with a `callback_url` has every step POSTed there, signed with
//! its secret (HMAC-SHA256), in order; a receiver that fails is retried with backoff,
//! and the session shows how delivery went.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ferry_proto::TaskId;
use ferry_tests::Stack;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

#[derive(Default)]
struct Receiver {
    /// Requests to refuse (500) before taking any.
    refuse: usize,
    calls: usize,
    bodies: Vec<(HeaderMap, Bytes)>,
}

async fn receiver(state: Arc<Mutex<Receiver>>) -> String {
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let mut r = state.lock().unwrap();
                r.calls += 1;
                if r.calls <= r.refuse {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                r.bodies.push((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn a_session_webhook_gets_signed_calls_in_order_and_a_failing_receiver_is_retried() {
    // The receiver is on this machine: loopback, which webhooks may not reach unless
    // the operator allows it.
    let stack = Stack::start_with_env(&[("FERRY_WEBHOOK_ALLOW", "127.0.0.0/8")]).await;
    let state = Arc::new(Mutex::new(Receiver {
        refuse: 3,
        ..Default::default()
    }));
    let url = receiver(state.clone()).await;
    let echo = stack.register("shell", "echo", "echo {n}").await;
    let tasks: Vec<Value> = (0..5)
        .map(|i| json!({"function_id": echo, "payload": json!({"n": i}).to_string()}))
        .collect();
    let body = json!({"endpoint_id": stack.endpoint_id.unwrap(), "tasks": tasks, "callback_url": url});
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 200, "{answer}");
    let session = answer["batch_id"].as_str().unwrap().to_owned();
    let secret = answer["callback_secret"]
        .as_str()
        .expect("a signing secret")
        .to_owned();
    let ids: Vec<TaskId> = serde_json::from_value(answer["task_ids"].clone()).unwrap();

    // Wait until the session says every event was delivered.
    let deadline = Instant::now() + Duration::from_secs(60);
    let doc = loop {
        let (_, doc): (u16, Value) = stack.get(&format!("/v1/sessions/{session}")).await;
        if doc["callback"]["done"] == true {
            break doc;
        }
        assert!(Instant::now() < deadline, "webhook not delivered: {doc}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(doc["status"], "completed");
    assert_eq!(doc["callback"]["failures"], 3, "{doc}");
    assert!(doc["callback"]["last_error"].is_null(), "{doc}");

    let (calls, bodies) = {
        let r = state.lock().unwrap();
        (r.calls, r.bodies.clone())
    };
    assert_eq!(calls, 3 + bodies.len(), "the refused calls were retried");
    let mut steps: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    let mut delivered = 0;
    for (headers, body) in &bodies {
        // Signed with the session's secret.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(headers["x-ferry-signature"].to_str().unwrap(), want);
        assert_eq!(headers["x-ferry-session"].to_str().unwrap(), session);
        let v: Value = serde_json::from_slice(body).unwrap();
        for e in v["events"].as_array().unwrap() {
            delivered += 1;
            steps
                .entry(e["task_id"].as_str().unwrap().to_owned())
                .or_default()
                .push((
                    e["state"].as_str().unwrap().to_owned(),
                    e["attempt"].as_u64().unwrap(),
                ));
        }
    }
    assert_eq!(doc["callback"]["delivered"], delivered);
    // Every step of every task, once, in order.
    for id in ids {
        let task = stack.task(id).await;
        let want: Vec<(String, u64)> = task.history[1..]
            .iter()
            .map(|h| (h.state.clone(), u64::from(h.attempt)))
            .collect();
        assert_eq!(steps.get(&id.to_string()), Some(&want), "task {id}");
    }

    // A URL that is not http(s) is refused up front.
    let bad = json!({"endpoint_id": stack.endpoint_id.unwrap(), "tasks": [{"function_id": echo, "payload": "{\"n\": 1}"}], "callback_url": "ftp://x"});
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &bad).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("callback_url"),
        "{answer}"
    );
    stack.shutdown().await;
}
