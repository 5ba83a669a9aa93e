//! Submissions -> endpoint queues.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use ferry_broker::{Broker, Consumer, Delivery};
use ferry_proto::messages::TaskBatch;
use ferry_proto::time::now_micros;
use ferry_proto::{Actor, EndpointId, Event, EventKind};
use ferry_store::{Applied, Report, Store};

/// Moves submitted tasks to their endpoint's queue.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    broker: Broker,
    /// Endpoint queues declared by this process (declaring is idempotent but costs a
    /// round trip).
    declared: Arc<Mutex<HashSet<EndpointId>>>,
}

impl Dispatcher {
    pub fn new(store: Store, broker: Broker) -> Self {
        Self {
            store,
            broker,
            declared: Arc::default(),
        }
    }

    /// Consumes submissions until the consumer ends.
    pub async fn run(self, mut consumer: Consumer) -> anyhow::Result<()> {
        while let Some(delivery) = consumer.next().await {
            self.step(delivery?).await?;
        }
        anyhow::bail!("the submissions consumer was closed")
    }

    /// Handles one submission message: record `waiting-for-ep` first, then publish, then
    /// ack. A crash in between redelivers the message; the repeated transition is ignored
    /// and a repeated publish is harmless (the first result wins).
    pub async fn step(&self, delivery: Delivery) -> anyhow::Result<()> {
        let batch: TaskBatch = match ferry_proto::codec::decode(delivery.body()) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "dead-lettering a malformed submission");
                delivery.dead_letter(&e.to_string()).await?;
                return Ok(());
            }
        };
        let span =
            tracing::debug_span!("dispatch", endpoint_id = %batch.endpoint_id, tasks = batch.tasks.len());
        let _enter = span.enter();
        let at = now_micros();
        let reports: Vec<Report> = batch
            .tasks
            .iter()
            .map(|t| Report {
                task_id: t.task_id,
                event: Event {
                    kind: EventKind::Queued,
                    attempt: t.attempt,
                },
                at,
                by: Actor::Forwarder,
                finish: None,
            })
            .collect();
        let applied = self.store.apply(&reports).await?;
        let mut forward = batch.clone();
        forward.tasks = batch
            .tasks
            .into_iter()
            .zip(&applied)
            .filter(|(task, outcome)| match outcome {
                Applied::Unknown => {
                    tracing::warn!(task_id = %task.task_id, "dropping a submitted task that has no record");
                    false
                }
                Applied::Ignored(ferry_proto::Ignored::Terminal) => false,
                _ => true,
            })
            .map(|(task, _)| task)
            .collect();
        if !forward.tasks.is_empty() {
            self.ensure_queue(forward.endpoint_id).await?;
            let body = ferry_proto::codec::encode(&forward)?;
            self.broker
                .publish(&self.broker.endpoint_queue(forward.endpoint_id), &body)
                .await?;
        }
        delivery.ack().await?;
        for task in &forward.tasks {
            tracing::trace!(task_id = %task.task_id, "dispatched");
        }
        Ok(())
    }

    async fn ensure_queue(&self, endpoint: EndpointId) -> anyhow::Result<()> {
        if self.declared.lock().expect("poisoned").contains(&endpoint) {
            return Ok(());
        }
        self.broker.declare_endpoint(endpoint).await?;
        self.declared.lock().expect("poisoned").insert(endpoint);
        Ok(())
    }
}
