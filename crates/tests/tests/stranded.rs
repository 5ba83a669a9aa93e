//! A task whose message is gone from its endpoint's queue (deleted here; purged, stolen
//! or lost by the broker in life) does not wait for ever: once its endpoint is online and
//! idle with an empty queue, the forwarder's sweep publishes it again, and it runs once.

use std::time::Duration;

use ferry_broker::Broker;
use ferry_tests::{Part, Stack, amqp_url};

const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_task_whose_message_vanished_runs_once_its_endpoint_is_idle() {
    let mut stack = Stack::start_with_env(&[("FERRY_STRANDED_AFTER_SECS", "1")]).await;
    let log = stack.dir.path().join("runs.log");
    let f = stack
        .register(
            "shell",
            "note",
            &format!("echo ran >> {}; echo done", log.display()),
        )
        .await;
    let admin = Broker::connect(&amqp_url(), &stack.namespace, Default::default())
        .await
        .unwrap();
    let queue = admin.endpoint_queue(stack.endpoint_id.unwrap());

    // The endpoint is away: the task waits in its queue...
    stack.stop(Part::Endpoint);
    let task = stack.submit(&[(&f, "")]).await[0];
    let this = &stack;
    this.wait_until(WITHIN, "the task waits for its endpoint", || async move {
        this.task(task).await.status == "waiting-for-ep"
    })
    .await;
    assert_eq!(admin.queue_len(&queue).await.unwrap(), 1);
    // ...and its message vanishes.
    admin.delete_queue(&queue).await.unwrap();

    // The endpoint comes back to an empty queue; the sweep sees it idle twice and
    // publishes the task again, uncharged.
    stack.start_part(Part::Endpoint);
    let doc = stack.wait_done(task, WITHIN).await;
    assert_eq!(doc.status, "success", "{doc:?}");
    assert_eq!(doc.attempt, 1);
    let requeued = doc
        .history
        .iter()
        .find(|h| h.reason.as_deref() == Some("message-lost"))
        .unwrap_or_else(|| panic!("a message-lost step: {:?}", doc.history));
    assert_eq!(
        (requeued.state.as_str(), requeued.attempt, requeued.by.as_str()),
        ("waiting-for-ep", 1, "forwarder")
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n", "it ran once");
    assert!(stack.log_text("ferry-forwarder").contains("published again"));

    // A task that simply waits its turn is never requeued: an idle endpoint with work
    // in its queue takes it.
    let more = stack.submit(&[(&f, ""), (&f, "")]).await;
    for id in more {
        let doc = stack.wait_done(id, WITHIN).await;
        assert_eq!((doc.status.as_str(), doc.attempt), ("success", 0), "{doc:?}");
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\nran\nran\n");
    admin.close().await;
    stack.shutdown().await;
}
