//! Cancels to endpoints, kept until RabbitMQ takes them.
//!
//! A cancel is stored in Redis (`<ns>:ep:<id>:cancels`) before it is published and taken
//! off once RabbitMQ confirmed the message. One RabbitMQ blocked (a memory or disk
//! alarm), refused (a full control queue) or that the canceller died before is left
//! stored, and the sweeper ([`crate::sweeper::Sweeper::sweep_cancels`]) publishes it
//! once RabbitMQ takes publishes again. A cancel published twice is harmless: the
//! endpoint drops a task it is told to stop however often it hears it.

use std::time::Duration;

use ferry_broker::Broker;
use ferry_proto::time::now_micros;
use ferry_proto::{EndpointId, TaskId};
use ferry_store::Store;

/// How long a cancel's publish may take before it is left to the sweeper.
pub const PUBLISH_WITHIN: Duration = Duration::from_secs(10);

/// Tells `endpoint` to stop these tasks (their records are terminal): stored first,
/// then published; left stored for the sweeper when RabbitMQ does not take it now.
pub async fn stop_tasks(
    store: &Store,
    broker: &Broker,
    endpoint: EndpointId,
    ids: Vec<TaskId>,
) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    store.add_pending_cancels(endpoint, &ids, now_micros()).await?;
    publish_stored(store, broker, endpoint, ids).await?;
    Ok(())
}

/// Publishes stored cancels and takes them off once RabbitMQ confirmed them; whether it
/// did. A broker that blocks, refuses or does not answer within [`PUBLISH_WITHIN`]
/// leaves them stored (an error only when the connection failed).
pub async fn publish_stored(
    store: &Store,
    broker: &Broker,
    endpoint: EndpointId,
    ids: Vec<TaskId>,
) -> anyhow::Result<bool> {
    if broker.blocked() {
        tracing::info!(%endpoint, tasks = ids.len(), "RabbitMQ blocks publishes (an alarm): the cancel is kept and published once it clears");
        return Ok(false);
    }
    match tokio::time::timeout(PUBLISH_WITHIN, broker.cancel_tasks(endpoint, ids.clone())).await {
        Ok(Ok(())) => {
            store.pending_cancels_done(endpoint, &ids).await?;
            for task_id in &ids {
                tracing::debug!(%task_id, %endpoint, "cancel published");
            }
            Ok(true)
        }
        Ok(Err(e)) if e.is_backpressure() => {
            tracing::warn!(%endpoint, tasks = ids.len(), error = %e, "RabbitMQ did not take a cancel: it is kept and published again later");
            Ok(false)
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            tracing::warn!(%endpoint, tasks = ids.len(), "RabbitMQ did not confirm a cancel within {PUBLISH_WITHIN:?}: it is kept and published again later");
            Ok(false)
        }
    }
}
