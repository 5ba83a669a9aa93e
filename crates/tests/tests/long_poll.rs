//! Long polls: a read that waits for tasks to finish is answered when one does (woken
//! by the transition script's announcement), or with the task still pending once its
//! wait is over.

use std::time::Duration;

use ferry_proto::api::{StatusResponse, TaskDoc};
use ferry_tests::Stack;
use serde_json::{Value, json};

#[tokio::test]
async fn a_waiting_read_is_answered_when_its_task_finishes() {
    let stack = Stack::start().await;
    let nap = stack.register("shell", "nap", "sleep {secs}").await;
    // The short task first: whichever worker it lands on, it is not queued behind the
    // long one.
    let ids = stack
        .submit(&[(&nap, r#"{"secs": 1}"#), (&nap, r#"{"secs": 120}"#)])
        .await;
    let (short, long) = (ids[0], ids[1]);

    // The wait runs out: the answer is the task as it is, still pending.
    let (status, doc): (u16, TaskDoc) = stack.get(&format!("/v1/tasks/{long}?wait_secs=0.3")).await;
    assert_eq!(status, 200);
    assert!(doc.pending, "{}", doc.status);

    // Waiting on both: answered once the short one has finished, the long one pending.
    let (status, answer): (u16, StatusResponse) = stack
        .post(
            "/v1/tasks/status",
            &json!({"task_ids": [long, short], "history": false, "wait_secs": 50}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer.tasks[&short].status, "success");
    assert!(answer.tasks[&long].pending);

    // A task that is pending when the read starts: answered finished, well before the
    // wait (50 s) would have run out.
    let (status, _): (u16, Value) = stack.post(&format!("/v1/tasks/{long}/cancel"), &json!({})).await;
    assert_eq!(status, 200);
    let next = stack.submit(&[(&nap, r#"{"secs": 1}"#)]).await[0];
    let started = std::time::Instant::now();
    let (status, doc): (u16, TaskDoc) = stack.get(&format!("/v1/tasks/{next}?wait_secs=50")).await;
    assert_eq!(status, 200);
    assert_eq!(doc.status, "success");
    assert!(started.elapsed() < Duration::from_secs(45));
    stack.shutdown().await;
}

#[tokio::test]
async fn a_wait_out_of_bounds_is_refused_by_name() {
    let stack = Stack::start().await;
    let nap = stack.register("shell", "nap", "sleep {secs}").await;
    let id = stack.submit(&[(&nap, r#"{"secs": 0}"#)]).await[0];
    for query in ["wait_secs=61", "wait_secs=-1", "wait_secs=soon", "wait=1"] {
        let (status, body): (u16, Value) = stack.get(&format!("/v1/tasks/{id}?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("wait"), "{query}: {body}");
    }
    let (status, body): (u16, Value) = stack
        .post("/v1/tasks/status", &json!({"task_ids": [id], "wait_secs": 1e9}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("wait_secs"), "{body}");
    stack.shutdown().await;
}
