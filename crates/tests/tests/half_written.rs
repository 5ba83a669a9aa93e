//! A web-service killed while it writes a large submission in parts: nothing of it was
//! published (a submission is published only once every part is written and
//! committed), so none of its tasks runs; the forwarder's sweeper fails the tasks it
//! had written, saying why, and closes the batch at them, so it ends and expires.

use std::time::{Duration, Instant};

use ferry_proto::time::Micros;
use ferry_store::Store;
use ferry_tests::{Part, Stack};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_batch_whose_web_service_died_while_writing_it_fails_unrun() {
    let mut stack = Stack::start().await;
    // Nothing runs: the written tasks wait in the endpoint's queue.
    stack.stop(Part::Endpoint);
    stack.set_env("FERRY_ABANDONED_BATCH_SECS", "1");
    stack.kill(Part::Forwarder);
    stack.start_part(Part::Forwarder);
    let store = Store::connect(&stack.redis, &stack.namespace, 900).await.unwrap();
    const N: usize = 100_000;
    let body = stack.identity_session(N).await;
    let request = stack
        .http
        .post(format!("{}/v1/sessions", stack.url))
        .bearer_auth(&stack.token)
        .json(&body)
        .send();
    let submission = tokio::spawn(request);

    // Killed as soon as the batch's first part is written.
    let deadline = Instant::now() + WITHIN;
    let batch = loop {
        if let Some(&b) = store
            .unfinished_batches_before(Micros::MAX, 1)
            .await
            .unwrap()
            .first()
        {
            break b;
        }
        assert!(
            !submission.is_finished(),
            "the submission ended before its first part was seen"
        );
        assert!(Instant::now() < deadline, "no part of the submission was written");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    stack.kill(Part::WebService);
    let answer = submission.await.unwrap();
    assert!(
        answer.is_err() || !answer.as_ref().unwrap().status().is_success(),
        "the killed web-service answered: {answer:?}"
    );

    stack.start_part(Part::WebService);
    stack
        .wait_until(WITHIN, "the sweeper closes the half-written batch", || {
            let store = store.clone();
            async move {
                store
                    .unfinished_batches_before(Micros::MAX, 1)
                    .await
                    .unwrap()
                    .is_empty()
            }
        })
        .await;

    let written = store.batch_task_ids(batch, 0, -1).await.unwrap();
    assert!(
        !written.is_empty() && written.len() < N,
        "{} of {N} tasks written",
        written.len()
    );
    let status = store.batch_status(batch).await.unwrap().unwrap();
    assert_eq!(status.record.size, written.len() as u64);
    let failed = status.counts[ferry_proto::TaskState::Failed.code() as usize];
    assert_eq!(
        failed, status.record.size,
        "every written task failed: {:?}",
        status.counts
    );
    assert!(status.done_at.is_some(), "the batch ended");
    for id in [written[0], written[written.len() - 1]] {
        let task = store
            .get_task(id)
            .await
            .unwrap()
            .expect("a written task's record");
        assert_eq!(task.state, ferry_proto::TaskState::Failed, "{id}");
        assert!(
            task.history
                .iter()
                .all(|h| h.state == ferry_proto::TaskState::Received
                    || h.state == ferry_proto::TaskState::Failed),
            "{id} never left received before it failed: {:?}",
            task.history
        );
    }
    let (_, doc): (u16, Value) = stack.get(&format!("/v1/tasks/{}", written[0])).await;
    assert!(
        doc["exception"]
            .as_str()
            .unwrap_or_default()
            .contains("never ran")
            || doc.to_string().contains("never ran"),
        "the task says why it failed: {doc}"
    );

    // Nothing was published: no message waits for the endpoint, none for the forwarder.
    let broker = ferry_broker::Broker::connect(&stack.amqp, &stack.namespace, Default::default())
        .await
        .unwrap();
    let endpoint_queue = broker.endpoint_queue(stack.endpoint_id.unwrap());
    assert_eq!(
        broker.queue_len(&endpoint_queue).await.unwrap(),
        0,
        "{endpoint_queue}"
    );
    assert_eq!(broker.queue_len(&broker.submissions_queue()).await.unwrap(), 0);

    // The owner sees the same through the API.
    let (code, doc): (u16, Value) = stack.get(&format!("/v1/sessions/{batch}")).await;
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["size"].as_u64().unwrap(), written.len() as u64, "{doc}");
    stack.shutdown().await;
}
