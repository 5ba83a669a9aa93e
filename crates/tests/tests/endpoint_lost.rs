//! An endpoint that stops sending heartbeats (killed -9, its host gone) is shown
//! offline, its in-flight tasks go back to `waiting-for-ep` as their next attempt, and
//! when it comes back they run and finish once.

use std::time::Duration;

use ferry_tests::{Part, Stack};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_lost_endpoints_tasks_wait_for_it_and_run_when_it_returns() {
    let mut stack = Stack::start().await;
    let endpoint = stack.endpoint_id.unwrap();
    let nap = stack.register("shell", "nap", "sleep 4; echo rested").await;
    let ids = stack.submit(&[(&nap, ""), (&nap, "")]).await;
    let first = ids[0];
    let this = &stack;
    this.wait_until(WITHIN, "a task runs", || async move {
        this.task(first).await.status == "running"
    })
    .await;

    // The endpoint dies with the tasks running or queued on its manager; its heartbeats
    // stop.
    stack.kill(Part::Endpoint);
    let (this, ids) = (&stack, &ids);
    this.wait_until(WITHIN, "the tasks wait for their endpoint again", || async move {
        let mut all = true;
        for &id in ids {
            let doc = this.task(id).await;
            all &= doc.status == "waiting-for-ep" && doc.attempt == 1;
        }
        all
    })
    .await;
    let (_, doc): (u16, Value) = stack.get(&format!("/v1/endpoints/{endpoint}")).await;
    assert_eq!(doc["status"], "offline", "{doc}");
    let doc = stack.task(ids[0]).await;
    let last = doc.history.last().unwrap();
    assert_eq!(
        (last.state.as_str(), last.attempt, last.by.as_str()),
        ("waiting-for-ep", 1, "forwarder")
    );

    // It comes back: the tasks run as attempt 1 and finish once.
    stack.start_part(Part::Endpoint);
    for &id in ids {
        let doc = stack.wait_done(id, WITHIN).await;
        assert_eq!(doc.status, "success", "{doc:?}");
        assert_eq!(doc.attempt, 1);
        assert_eq!(doc.stdout.as_deref(), Some("rested\n"));
        let terminal = doc
            .history
            .iter()
            .filter(|h| h.state == "success" || h.state == "failed")
            .count();
        assert_eq!(terminal, 1, "{:?}", doc.history);
    }
    let this = &stack;
    this.wait_until(WITHIN, "the endpoint is online again", || async move {
        this.get::<Value>(&format!("/v1/endpoints/{endpoint}")).await.1["status"] == "online"
    })
    .await;
    stack.shutdown().await;
}
