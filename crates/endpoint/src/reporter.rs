//! Batched publishing of what the interchange learns. Each stream is flushed as soon as
//! its channel is momentarily empty (or holds a full batch): no timer on the hot path.

use ferry_broker::Broker;
use ferry_proto::EndpointId;
use ferry_proto::messages::{EndpointLoad, EndpointMessage, StatusUpdate, TaskResult};
use ferry_proto::time::now_micros;
use tokio::sync::mpsc;

use crate::interchange::{Input, Sink};

/// Most updates or results in one AMQP message.
const BATCH: usize = 1000;

/// The interchange's [`Sink`]: channels drained by the flushers.
#[derive(Clone)]
pub struct Reporter {
    status: mpsc::UnboundedSender<StatusUpdate>,
    results: mpsc::UnboundedSender<TaskResult>,
    heartbeats: mpsc::UnboundedSender<EndpointLoad>,
}

impl Sink for Reporter {
    fn status(&self, update: StatusUpdate) {
        let _ = self.status.send(update);
    }

    fn result(&self, result: TaskResult) {
        let _ = self.results.send(result);
    }

    fn heartbeat(&self, load: EndpointLoad) {
        let _ = self.heartbeats.send(load);
    }
}

/// Starts the flushers. They end with an error when the broker fails.
pub fn start(
    broker: Broker,
    endpoint_id: EndpointId,
    heartbeat_interval_ms: u64,
    interchange: mpsc::UnboundedSender<Input>,
) -> (Reporter, tokio::task::JoinSet<anyhow::Result<()>>) {
    let (status_tx, mut status_rx) = mpsc::unbounded_channel();
    let (results_tx, mut results_rx) = mpsc::unbounded_channel::<TaskResult>();
    let (heartbeats_tx, mut heartbeats_rx) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();

    let b = broker.clone();
    tasks.spawn(async move {
        let queue = b.status_queue();
        while let Some(updates) = drain(&mut status_rx).await {
            let body = ferry_proto::codec::encode(&EndpointMessage::Status { endpoint_id, updates })?;
            b.publish(&queue, &body).await?;
        }
        Ok(())
    });

    let b = broker.clone();
    tasks.spawn(async move {
        let queue = b.results_queue();
        while let Some(results) = drain(&mut results_rx).await {
            let ids = results.iter().map(|r| r.task_id).collect();
            let body = ferry_proto::codec::encode(&EndpointMessage::Results { endpoint_id, results })?;
            b.publish(&queue, &body).await?;
            let _ = interchange.send(Input::Published { tasks: ids });
        }
        Ok(())
    });

    tasks.spawn(async move {
        let queue = broker.status_queue();
        while let Some(load) = heartbeats_rx.recv().await {
            let beat = EndpointMessage::Heartbeat {
                endpoint_id,
                at: now_micros(),
                interval_ms: heartbeat_interval_ms,
                load,
            };
            broker
                .publish(&queue, &ferry_proto::codec::encode(&beat)?)
                .await?;
        }
        Ok(())
    });

    let reporter = Reporter {
        status: status_tx,
        results: results_tx,
        heartbeats: heartbeats_tx,
    };
    (reporter, tasks)
}

/// Waits for one item, then takes whatever else is already queued, up to a batch.
async fn drain<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut batch = vec![first];
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}
