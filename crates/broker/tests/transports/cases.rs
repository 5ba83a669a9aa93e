//! The cases every broker passes, each an `async fn(&Env) -> anyhow::Result<()>`.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use ferry_broker::Error;
use ferry_proto::messages::CancelTasks;
use ferry_proto::{EndpointId, TaskGroupId, TaskId, UserId};

use crate::{Env, next, nothing_comes};

pub(crate) async fn a_published_message_is_consumed(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    broker.declare_core().await?;
    let queue = broker.submissions_queue();

    broker.publish(&queue, b"hello").await?;
    let mut consumer = broker.consume(&queue, 10, "test").await?;
    let delivery = next(&mut consumer).await;

    assert_eq!(delivery.body(), b"hello");
    assert!(!delivery.redelivered());
    assert_eq!(delivery.user_id(), None);
    delivery.ack().await?;
    Ok(())
}

pub(crate) async fn a_consumer_holds_at_most_its_prefetch_unacked(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    broker.declare_core().await?;
    let queue = broker.submissions_queue();
    let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i]).collect();
    broker
        .publish_many(&queue, bodies.iter().map(Vec::as_slice))
        .await?;

    let mut consumer = broker.consume(&queue, 2, "test").await?;
    let first = next(&mut consumer).await;
    let second = next(&mut consumer).await;
    assert!(
        nothing_comes(&mut consumer).await,
        "a third delivery beyond prefetch 2"
    );

    first.ack().await?;
    let third = next(&mut consumer).await;
    assert_eq!(
        [first.body(), second.body(), third.body()],
        [&[0u8][..], &[1], &[2]]
    );
    Ok(())
}

pub(crate) async fn an_acked_message_is_gone(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    broker.declare_core().await?;
    let queue = broker.submissions_queue();
    broker.publish(&queue, b"once").await?;
    let reader = env.broker().await;
    let mut consumer = reader.consume(&queue, 10, "test").await?;
    next(&mut consumer).await.ack().await?;

    drop(consumer);
    reader.close().await;

    let mut again = broker.consume(&queue, 10, "test").await?;
    assert!(nothing_comes(&mut again).await, "an acked message came again");
    assert_eq!(broker.queue_len(&queue).await?, 0);
    Ok(())
}

pub(crate) async fn a_requeued_message_comes_back_redelivered(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    broker.declare_core().await?;
    let queue = broker.submissions_queue();
    broker.publish_many(&queue, [&b"first"[..], b"second"]).await?;
    let mut consumer = broker.consume(&queue, 1, "test").await?;

    let delivery = next(&mut consumer).await;
    assert!(!delivery.redelivered());
    delivery.requeue().await?;

    let again = next(&mut consumer).await;
    assert_eq!(again.body(), b"first", "a requeued message goes back to the head");
    assert!(again.redelivered());
    again.ack().await?;
    let second = next(&mut consumer).await;
    assert_eq!(second.body(), b"second");
    assert!(!second.redelivered());
    Ok(())
}

pub(crate) async fn a_dead_letter_lands_in_the_dead_queue_with_its_reason(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    broker.declare_core().await?;
    let queue = broker.submissions_queue();
    broker.publish(&queue, b"garbage").await?;
    let mut consumer = broker.consume(&queue, 10, "test").await?;

    next(&mut consumer)
        .await
        .dead_letter("malformed TaskBatch message")
        .await?;

    let mut dead = broker.consume(&broker.dead_queue(), 10, "test").await?;
    let letter = next(&mut dead).await;
    assert_eq!(letter.body(), b"garbage");
    assert_eq!(
        letter.header("x-ferry-reason"),
        Some("malformed TaskBatch message")
    );
    assert_eq!(letter.header("x-ferry-queue"), Some(queue.as_str()));
    assert_eq!(broker.queue_len(&queue).await?, 0, "the dead letter was acked");
    Ok(())
}

pub(crate) async fn unacked_messages_return_redelivered_when_the_connection_closes(
    env: &Env,
) -> anyhow::Result<()> {
    let broker = env.broker().await;
    broker.declare_core().await?;
    let queue = broker.submissions_queue();
    broker.publish_many(&queue, [&b"a"[..], b"b"]).await?;
    let holder = env.broker().await;
    let mut held = holder.consume(&queue, 10, "holder").await?;
    let a = next(&mut held).await;
    let b = next(&mut held).await;
    assert!(!a.redelivered() && !b.redelivered());

    holder.close().await;

    let mut consumer = broker.consume(&queue, 10, "test").await?;
    let again_a = next(&mut consumer).await;
    let again_b = next(&mut consumer).await;
    assert_eq!([again_a.body(), again_b.body()], [b"a", b"b"]);
    assert!(again_a.redelivered() && again_b.redelivered());
    Ok(())
}

pub(crate) async fn two_consumers_share_a_queue(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    broker.declare_core().await?;
    let queue = broker.submissions_queue();
    let (one, two) = (env.broker().await, env.broker().await);
    let mut first = one.consume(&queue, 1, "one").await?;
    let mut second = two.consume(&queue, 1, "two").await?;

    broker.publish_many(&queue, [&b"1"[..], b"2", b"3", b"4"]).await?;

    let a = next(&mut first).await;
    let b = next(&mut second).await;
    assert_ne!(a.body(), b.body());
    assert_eq!(broker.queue_len(&queue).await?, 2, "each holds one, two wait");
    a.ack().await?;
    b.ack().await?;
    // The last two go to whichever consumer has room first: the acks travel on two
    // connections, so `first` may ack its second message before the broker has read
    // `second`'s ack and take the fourth as well.
    let mut bodies = vec![a.body().to_vec(), b.body().to_vec()];
    for _ in 0..2 {
        let delivery = tokio::select! {
            delivery = next(&mut first) => delivery,
            delivery = next(&mut second) => delivery,
        };
        bodies.push(delivery.body().to_vec());
        delivery.ack().await?;
    }
    bodies.sort();
    assert_eq!(bodies, [b"1", b"2", b"3", b"4"], "each message once");
    Ok(())
}

pub(crate) async fn queue_len_counts_waiting_messages(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    let endpoint = EndpointId::new();
    broker.declare_core().await?;
    broker.declare_endpoint(endpoint).await?;
    let queue = broker.endpoint_queue(endpoint);
    assert_eq!(broker.queue_len(&queue).await?, 0);

    broker.publish_many(&queue, [&b"1"[..], b"2", b"3"]).await?;

    assert_eq!(broker.queue_len(&queue).await?, 3);
    let missing = format!("{}.missing", env.namespace);
    assert!(
        broker.queue_len(&missing).await.is_err(),
        "a missing queue has no length"
    );
    broker.delete_endpoint_exchange(endpoint).await?;
    Ok(())
}

pub(crate) async fn a_deleted_queue_is_gone(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    broker.declare_core().await?;
    let queue = broker.submissions_queue();
    broker.publish(&queue, b"lost").await?;

    broker.delete_queue(&queue).await?;

    assert!(broker.queue_len(&queue).await.is_err());
    broker
        .delete_queue(&queue)
        .await
        .context("deleting a missing queue")?;
    broker.declare_core().await?;
    assert_eq!(broker.queue_len(&queue).await?, 0, "its messages went with it");
    Ok(())
}

pub(crate) async fn an_endpoint_publishes_only_to_its_routes(env: &Env) -> anyhow::Result<()> {
    let service = env.broker().await;
    let (endpoint, other) = (EndpointId::new(), EndpointId::new());
    service.declare_core().await?;
    service.declare_endpoint(endpoint).await?;
    service.declare_endpoint(other).await?;
    let broker = env.endpoint_broker(endpoint).await;

    for queue in [
        service.submissions_queue(),
        service.endpoint_queue(other),
        service.endpoint_control_queue(endpoint),
    ] {
        let refused = broker.publish(&queue, b"no").await;
        assert!(
            matches!(refused, Err(Error::NotAllowed { .. })),
            "{queue}: {refused:?}"
        );
    }
    for queue in [
        service.results_queue(),
        service.status_queue(),
        service.dead_queue(),
        service.endpoint_queue(endpoint),
    ] {
        broker.publish(&queue, queue.as_bytes()).await?;
        let mut consumer = service.consume(&queue, 10, "test").await?;
        let delivery = next(&mut consumer).await;
        assert_eq!(delivery.body(), queue.as_bytes(), "routed to {queue}");
        delivery.ack().await?;
    }
    assert_eq!(service.queue_len(&service.submissions_queue()).await?, 0);
    service.delete_endpoint_exchange(endpoint).await?;
    service.delete_endpoint_exchange(other).await?;
    Ok(())
}

pub(crate) async fn user_id_is_the_connections_user(env: &Env) -> anyhow::Result<()> {
    let service = env.broker().await;
    let endpoint = EndpointId::new();
    service.declare_core().await?;
    service.declare_endpoint(endpoint).await?;
    let broker = env.endpoint_broker(endpoint).await;

    broker.publish(&service.status_queue(), b"heartbeat").await?;
    service.publish(&service.status_queue(), b"unsigned").await?;

    let mut consumer = service.consume(&service.status_queue(), 10, "test").await?;
    let signed = next(&mut consumer).await;
    assert_eq!(signed.user_id(), Some(broker.user()));
    assert!(!broker.user().is_empty());
    let unsigned = next(&mut consumer).await;
    assert_eq!(unsigned.user_id(), None);
    service.delete_endpoint_exchange(endpoint).await?;
    Ok(())
}

pub(crate) async fn a_stamped_message_carries_its_timestamp(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    let (owner, group) = (UserId::new(), TaskGroupId::new());
    broker
        .declare_task_group(owner, group, Duration::from_secs(60))
        .await?;
    let queue = broker.task_group_queue(owner, group);

    broker
        .publish_stamped(&[(queue.clone(), b"result".to_vec())], 1_700_000_000)
        .await?;

    let mut consumer = broker.consume(&queue, 10, "test").await?;
    let delivery = next(&mut consumer).await;
    assert_eq!(delivery.timestamp(), Some(1_700_000_000));
    delivery.ack().await?;
    broker.delete_queue(&queue).await?;
    Ok(())
}

pub(crate) async fn next_batch_takes_what_has_arrived(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    broker.declare_core().await?;
    let queue = broker.submissions_queue();
    let bodies: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 10]).collect();
    broker
        .publish_many(&queue, bodies.iter().map(Vec::as_slice))
        .await?;
    let mut consumer = broker.consume(&queue, 10, "test").await?;
    let first = consumer.next_batch(1, 1 << 20).await?;
    assert_eq!(first.len(), 1);
    // Let the rest arrive in the prefetch window.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let by_count = consumer.next_batch(3, 1 << 20).await?;
    let by_bytes = consumer.next_batch(10, 15).await?;

    assert_eq!(
        [by_count.len(), by_bytes.len()],
        [3, 2],
        "3 by count, then about 15 bytes (two of 10)"
    );
    assert!(nothing_comes(&mut consumer).await, "six messages, six deliveries");
    Ok(())
}

pub(crate) async fn publishes_are_confirmed(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    broker.declare_core().await?;
    let queue = broker.submissions_queue();

    let pending = [
        broker.publish_pending(&queue, b"1").await?,
        broker.publish_pending(&queue, b"2").await?,
    ];
    for confirm in pending {
        confirm.wait().await?;
    }
    assert_eq!(
        broker.queue_len(&queue).await?,
        2,
        "a confirmed message is in its queue"
    );
    broker.publish_many(&queue, [&b"3"[..], b"4"]).await?;
    assert_eq!(broker.queue_len(&queue).await?, 4);
    broker.publish_many_unconfirmed(&queue, [&b"5"[..]]).await?;
    wait_until(|| async { broker.queue_len(&queue).await.is_ok_and(|n| n == 5) }).await?;
    assert!(broker.takes_publishes(Duration::from_secs(5)).await?);
    assert!(!broker.blocked());
    Ok(())
}

pub(crate) async fn cancels_reach_the_endpoints_control_queue(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    let endpoint = EndpointId::new();
    broker.declare_core().await?;
    let tasks = vec![TaskId::new(), TaskId::new()];

    broker.cancel_tasks(endpoint, tasks.clone()).await?;

    let mut consumer = broker
        .consume(&broker.endpoint_control_queue(endpoint), 10, "test")
        .await?;
    let cancel: CancelTasks = ferry_proto::codec::decode(next(&mut consumer).await.body())?;
    assert_eq!((cancel.endpoint_id, cancel.task_ids), (endpoint, tasks));
    broker.delete_endpoint_exchange(endpoint).await?;
    Ok(())
}

pub(crate) async fn a_deleted_endpoint_exchange_takes_no_publishes(env: &Env) -> anyhow::Result<()> {
    let service = env.broker().await;
    let endpoint = EndpointId::new();
    service.declare_core().await?;
    service.declare_endpoint(endpoint).await?;
    let broker = env.endpoint_broker(endpoint).await;
    broker.publish(&service.results_queue(), b"before").await?;

    service.delete_endpoint_exchange(endpoint).await?;

    let after = tokio::time::timeout(
        crate::COMES_WITHIN,
        broker.publish(&service.results_queue(), b"after"),
    )
    .await;
    ensure!(
        !matches!(after, Ok(Ok(()))),
        "a publish to a deleted exchange succeeded"
    );
    assert_eq!(service.queue_len(&service.results_queue()).await?, 1);
    Ok(())
}

pub(crate) async fn an_unused_queue_with_an_expiry_goes_away(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    let (owner, group) = (UserId::new(), TaskGroupId::new());
    let queue = broker.task_group_queue(owner, group);

    broker
        .declare_task_group(owner, group, Duration::from_millis(200))
        .await?;

    // A passive declaration counts as a use for RabbitMQ: look less often than it
    // expires.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if broker.queue_len(&queue).await.is_err() {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{queue} did not expire");
    }
}

pub(crate) async fn a_closed_connection_is_lost(env: &Env) -> anyhow::Result<()> {
    let broker = env.broker().await;
    broker.declare_core().await?;
    let mut consumer = broker.consume(&broker.submissions_queue(), 10, "test").await?;

    broker.close().await;

    let lost = tokio::time::timeout(crate::COMES_WITHIN, broker.lost()).await?;
    assert!(!lost.is_empty());
    let ended = tokio::time::timeout(crate::COMES_WITHIN, consumer.next()).await?;
    assert!(!matches!(ended, Some(Ok(_))), "a delivery after close");
    assert!(
        broker
            .publish(&broker.submissions_queue(), b"late")
            .await
            .is_err()
    );
    Ok(())
}

/// Polls `condition` until it holds, for up to ten seconds.
async fn wait_until<F, Fut>(condition: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        ensure!(Instant::now() < deadline, "the condition did not hold within 10s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
