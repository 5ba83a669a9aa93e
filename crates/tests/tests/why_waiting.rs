//! What a user sees when a task does not move: the task's `waiting` names a missing
//! forwarder (and since when one was seen) or an offline endpoint (and for how long),
//! and `GET /v1/health` reports the store, the broker and the forwarder; an endpoint's
//! clean stop is logged as one, not as a loss.

use std::time::Duration;

use ferry_tests::{Part, Stack};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(60);

async fn health(stack: &Stack) -> (u16, Value) {
    // No token: a load balancer or a newcomer's curl asks it.
    let r = stack
        .http
        .get(format!("{}/v1/health", stack.url))
        .send()
        .await
        .expect("GET /v1/health");
    (r.status().as_u16(), r.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn without_a_forwarder_health_degrades_and_a_task_says_it_was_not_dispatched() {
    let mut stack = Stack::start().await;
    let (status, doc) = health(&stack).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["status"], "ok", "{doc}");
    assert_eq!(doc["store"]["ok"], true, "{doc}");
    assert_eq!(doc["broker"]["ok"], true, "{doc}");
    assert_eq!(doc["forwarder"]["alive"], true, "{doc}");

    let f = stack.register("shell", "hi", "echo hi").await;
    stack.stop(Part::Forwarder);
    // The forwarder counts as gone after five missed sweeps (5 s at least).
    let last = std::cell::RefCell::new(Value::Null);
    stack
        .wait_until(WITHIN, "health to report the forwarder gone", || async {
            let (status, doc) = health(&stack).await;
            let gone = status == 503 && doc["forwarder"]["alive"] == false;
            *last.borrow_mut() = doc;
            gone
        })
        .await;
    let last = last.into_inner();
    assert_eq!(last["status"], "degraded", "{last}");
    assert!(last["forwarder"]["last_seen"].as_f64().is_some(), "{last}");
    assert_eq!(last["store"]["ok"], true, "{last}");

    let id = stack.submit(&[(&f, "")]).await[0];
    let doc = stack.task(id).await;
    assert_eq!(doc.status, "received");
    let waiting = doc.waiting.expect("a reason while it waits");
    assert!(waiting.contains("not yet dispatched"), "{waiting}");
    assert!(waiting.contains("no forwarder has been seen for"), "{waiting}");
    assert!(waiting.contains("ferry-forwarder"), "{waiting}");

    stack.start_part(Part::Forwarder);
    assert_eq!(stack.wait_done(id, WITHIN).await.status, "success");
    let (status, doc) = health(&stack).await;
    assert_eq!(status, 200, "{doc}");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_task_for_a_stopped_endpoint_says_for_how_long_it_has_been_offline() {
    let mut stack = Stack::start().await;
    let f = stack.register("shell", "hi", "echo hi").await;
    stack.stop(Part::Endpoint);
    let id = stack.submit(&[(&f, "")]).await[0];
    let waiting = std::cell::RefCell::new(String::new());
    stack
        .wait_until(WITHIN, "the task to say its endpoint is offline", || async {
            let now = stack.task(id).await.waiting.unwrap_or_default();
            let offline = now.contains("is offline");
            *waiting.borrow_mut() = now;
            offline
        })
        .await;
    let waiting = waiting.into_inner();
    assert!(waiting.contains("(no heartbeat for "), "{waiting}");
    assert!(
        waiting.contains(&stack.endpoint_id.unwrap().to_string()),
        "{waiting}"
    );
    // A clean stop (its last heartbeat said goodbye) is not reported as a loss.
    stack
        .wait_until(WITHIN, "the forwarder to note the clean stop", || async {
            stack
                .log_text("ferry-forwarder")
                .contains("endpoint stopped cleanly")
        })
        .await;
    let forwarder = stack.log_text("ferry-forwarder");
    assert!(
        !forwarder.contains("endpoint lost: its heartbeats stopped"),
        "{forwarder}"
    );
    stack.start_part(Part::Endpoint);
    assert_eq!(stack.wait_done(id, WITHIN).await.status, "success");
    stack.shutdown().await;
}
