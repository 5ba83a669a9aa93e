//! A web-service killed while it writes a large submission in parts: the tasks it had
//! written keep their records and their batch's counts stay true, and the forwarder's
//! sweeper closes the batch at the tasks it has, so it can finish and expire.

use std::time::{Duration, Instant};

use ferry_proto::time::Micros;
use ferry_store::Store;
use ferry_tests::{Part, Stack};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_batch_whose_web_service_died_while_writing_it_is_closed_at_the_tasks_it_has() {
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
    assert_eq!(status.counts.iter().sum::<u64>(), status.record.size);
    assert_eq!(status.done_at, None, "its tasks have not run yet");
    for id in [written[0], written[written.len() - 1]] {
        let task = store
            .get_task(id)
            .await
            .unwrap()
            .expect("a written task's record");
        assert!(!task.state.is_terminal(), "{id}: {:?}", task.state);
    }

    // The owner sees the same through the API.
    let (code, doc): (u16, Value) = stack.get(&format!("/v1/sessions/{batch}")).await;
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["size"].as_u64().unwrap(), written.len() as u64, "{doc}");
    stack.shutdown().await;
}
