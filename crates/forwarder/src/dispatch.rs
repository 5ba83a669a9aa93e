//! Submissions -> endpoint queues.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_broker::{Broker, Consumer, Delivery};
use ferry_proto::messages::{TaskBatch, TaskSpec};
use ferry_proto::time::{Micros, now_micros};
use ferry_proto::{Actor, EndpointId, Event, EventKind, TaskId};
use ferry_store::{Report, Store};

use crate::alive::Alive;
use crate::held::{HOLD, Held};

/// How often held `waiting-for-ep` records are checked for being overdue.
const CHECK_HELD: Duration = Duration::from_millis(50);

/// Moves submitted tasks to their endpoint's queue.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    broker: Broker,
    held: Held,
    /// Endpoints heard from lately, which need no check that they exist.
    alive: Alive,
    /// Endpoint queues declared by this process (declaring is idempotent but costs a
    /// round trip).
    declared: Arc<Mutex<HashSet<EndpointId>>>,
}

impl Dispatcher {
    pub fn new(store: Store, broker: Broker, held: Held, alive: Alive) -> Self {
        Self {
            store,
            broker,
            held,
            alive,
            declared: Arc::default(),
        }
    }

    /// Consumes submissions until the consumer ends, and records the held
    /// `waiting-for-ep` steps that no endpoint report took along in time.
    pub async fn run(self, mut consumer: Consumer) -> anyhow::Result<()> {
        let mut check = tokio::time::interval(CHECK_HELD);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                delivery = consumer.next() => match delivery {
                    Some(delivery) => self.step(delivery?).await?,
                    None => anyhow::bail!("the submissions consumer was closed"),
                },
                _ = check.tick() => self.record_held(HOLD).await?,
            }
        }
    }

    /// Records the held `waiting-for-ep` steps older than `hold` (every one when it is
    /// zero: on the way out) and acks the submissions that are then wholly recorded.
    pub async fn record_held(&self, hold: Duration) -> anyhow::Result<()> {
        let taken = self.held.due(hold);
        if taken.records.is_empty() {
            return Ok(());
        }
        let applied = self.store.apply(&taken.records).await?;
        self.held
            .settle(&self.store, &self.broker, &taken.from, &applied)
            .await
    }

    /// Handles one submission message: hold its `waiting-for-ep` records (see
    /// [`crate::held`]) and publish it to the endpoint's queue. The records are written
    /// with the endpoint's first report on each task, or on their own [`HOLD`] after the
    /// broker confirmed the message, and the submission is acked after that. A task the record shows
    /// already finished (cancelled while it waited) or unknown is stopped at the
    /// endpoint by a cancel, which the endpoint honours whether it arrives before or
    /// after the task. A crash before the ack redelivers the message: the repeated
    /// publish is harmless (the endpoint settles a copy of a task it holds, and the
    /// first result wins) and so is the repeated record. A redelivered message goes the
    /// careful way, reading the records before it publishes (see `step_again`).
    pub async fn step(&self, delivery: Delivery) -> anyhow::Result<()> {
        let batch: TaskBatch = match ferry_proto::codec::decode(delivery.body()) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "dead-lettering a malformed submission");
                delivery.dead_letter(&e.to_string()).await?;
                return Ok(());
            }
        };
        // A span held across awaits must be attached to the future, not entered.
        let span =
            tracing::debug_span!("dispatch", endpoint_id = %batch.endpoint_id, tasks = batch.tasks.len());
        tracing::Instrument::instrument(self.dispatch(batch, delivery), span).await
    }

    async fn dispatch(&self, batch: TaskBatch, delivery: Delivery) -> anyhow::Result<()> {
        if batch.tasks.is_empty() {
            delivery.ack().await?;
            return Ok(());
        }
        // An endpoint whose heartbeat was recorded lately cannot have been deleted
        // since (see `crate::alive`): no Redis round trip on the task's way out.
        if !self.alive.vouches_for(batch.endpoint_id)
            && !self.store.endpoint_exists(batch.endpoint_id).await?
        {
            return self.endpoint_gone(batch, delivery).await;
        }
        self.ensure_queue(batch.endpoint_id).await?;
        let queue = self.broker.endpoint_queue(batch.endpoint_id);
        if delivery.redelivered() {
            return self.step_again(batch, &queue, delivery).await;
        }
        // `waiting-for-ep` is recorded on its own only once the broker has confirmed the
        // message (it is then on disk): should RabbitMQ die before that, the message
        // may be gone, and so may this submission (the web-service does not wait for
        // its confirm). The task must then still read `received`, which the sweeper
        // submits again; a `waiting-for-ep` record would wait for a message that no
        // longer exists. With an endpoint report it may be written before: the report
        // shows the message arrived.
        let at = now_micros();
        let key = self.held.hold(batch.endpoint_id, queued(&batch.tasks, at));
        match self.broker.publish(&queue, delivery.body()).await {
            Ok(()) => {}
            Err(ferry_broker::Error::Nacked { .. }) => {
                self.keep_refused(key, batch.endpoint_id, batch.tasks.len(), queue, delivery);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        for task in &batch.tasks {
            tracing::trace!(task_id = %task.task_id, "dispatched");
        }
        crate::trace::dispatched(&batch.tasks, batch.endpoint_id, at);
        if let Some(delivery) = self.held.confirmed(key, delivery) {
            delivery.ack().await?;
        }
        if self.held.overfull() {
            self.record_held(HOLD).await?;
        }
        Ok(())
    }

    /// The endpoint's queue refused the submission held under `key` (it is at a
    /// max-length with `x-overflow: reject-publish`): it stays unacked, its tasks
    /// `received`, and is published again until the queue takes it (see
    /// [`publish_until_taken`]), apart, so that other endpoints' submissions go on. The
    /// submissions consumer's prefetch bounds how many wait so.
    fn keep_refused(&self, key: u64, endpoint: EndpointId, tasks: usize, queue: String, delivery: Delivery) {
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = async {
                publish_until_taken(&this.broker, &queue, delivery.body(), endpoint, tasks).await?;
                if let Some(delivery) = this.held.confirmed(key, delivery) {
                    delivery.ack().await?;
                }
                anyhow::Ok(())
            };
            if let Err(e) = outcome.await {
                // The connection failed: the unacked submission comes back after the
                // forwarder reconnects.
                tracing::warn!(%endpoint, %queue, error = %format!("{e:#}"), "stopped publishing a refused submission again");
            }
        });
    }

    /// A submission seen before (after a forwarder crash or a broker restart): its tasks
    /// may have run and ended meanwhile, from a copy published the first time. Read
    /// the records first and publish only the unfinished tasks, so that no finished
    /// task is sent again (a cancel would stop it only after it started, killing its
    /// worker and sending the tasks queued behind it around again); then record them,
    /// after the confirm as in `step`.
    async fn step_again(&self, mut batch: TaskBatch, queue: &str, delivery: Delivery) -> anyhow::Result<()> {
        let ids: Vec<TaskId> = batch.tasks.iter().map(|t| t.task_id).collect();
        let records = self.store.redispatch_info(&ids).await?;
        let mut records = records.iter();
        batch.tasks.retain(|task| match records.next() {
            Some(Some(info)) => !info.state.is_terminal(),
            // Finished meanwhile (the usual case), or its record expired: not sent again.
            _ => {
                tracing::debug!(task_id = %task.task_id, "a submitted task seen again has finished (or its record is gone); not published again");
                false
            }
        });
        if !batch.tasks.is_empty() {
            // As in `step`: published and confirmed, then recorded.
            let body = ferry_proto::codec::encode(&batch)?;
            let at = now_micros();
            publish_until_taken(&self.broker, queue, &body, batch.endpoint_id, batch.tasks.len()).await?;
            self.store.apply(&queued(&batch.tasks, at)).await?;
        }
        delivery.ack().await?;
        Ok(())
    }

    /// The submission's endpoint was deleted after it accepted the tasks (`DELETE
    /// /v1/endpoints/{id}` refuses while tasks wait in its queue, but these were on the
    /// way): they fail, saying so, rather than wait for an endpoint that will not come.
    async fn endpoint_gone(&self, batch: TaskBatch, delivery: Delivery) -> anyhow::Result<()> {
        let endpoint = batch.endpoint_id;
        let why = format!("endpoint {endpoint} was deleted before the task reached it");
        let at = now_micros();
        let why = bytes::Bytes::from(why);
        let reports: Vec<Report> = batch
            .tasks
            .iter()
            .map(|t| {
                Report::ended_by(
                    t.task_id,
                    t.attempt,
                    EventKind::Failed,
                    Actor::Forwarder,
                    at,
                    why.clone(),
                )
            })
            .collect();
        for t in &batch.tasks {
            tracing::warn!(task_id = %t.task_id, %endpoint, "endpoint deleted before the task reached it; the task fails");
        }
        self.store.apply(&reports).await?;
        delivery.ack().await?;
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

/// Publishes a message to an endpoint's queue until RabbitMQ takes it. A queue at its
/// `max-length` (declared `x-overflow: reject-publish`, see `ferry_broker`) refuses it
/// with a nack: backpressure, tried again with backoff, with a warning naming the queue
/// the first time and every [`REFUSED_WARN_EVERY`] after.
pub async fn publish_until_taken(
    broker: &Broker,
    queue: &str,
    body: &[u8],
    endpoint: EndpointId,
    tasks: usize,
) -> Result<(), ferry_broker::Error> {
    let mut backoff = Duration::from_millis(100);
    let mut warned: Option<Instant> = None;
    loop {
        match broker.publish(queue, body).await {
            Ok(()) => {
                if warned.is_some() {
                    tracing::info!(%endpoint, queue, tasks, "the endpoint queue took tasks it had refused");
                }
                return Ok(());
            }
            Err(ferry_broker::Error::Nacked { .. }) => {
                if warned.is_none_or(|at| at.elapsed() >= REFUSED_WARN_EVERY) {
                    tracing::warn!(%endpoint, queue, tasks, "the endpoint queue refused tasks (it is at a max-length, as an operator policy set): the forwarder keeps them and publishes them again until it takes them");
                    warned = Some(Instant::now());
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// How often a queue that keeps refusing tasks is warned about.
const REFUSED_WARN_EVERY: Duration = Duration::from_secs(30);

/// The forwarder's `queued` report (to `waiting-for-ep`) for each task, dated `at`: when
/// it published them (taken before the publish, so the step never postdates the
/// endpoint's own steps).
fn queued(tasks: &[TaskSpec], at: Micros) -> Vec<Report> {
    tasks
        .iter()
        .map(|t| Report {
            task_id: t.task_id,
            event: Event {
                kind: EventKind::Queued,
                attempt: t.attempt,
            },
            at,
            by: Actor::Forwarder,
            from: None,
            finish: None,
        })
        .collect()
}
