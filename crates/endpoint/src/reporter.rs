//! Batched publishing of what the interchange learns. Status updates and results share
//! one message per flush (up to BATCH of each, and about BATCH_BYTES of results); a flush happens as soon as a result is queued (or a status
//! update has waited STATUS_LINGER) and fewer than IN_FLIGHT publishes await their
//! confirm, so under load the messages grow instead of multiplying. No timer on the
//! path of a result that comes alone; under load (see RESULT_LINGER) results wait a few
//! milliseconds for company.

use std::collections::{HashSet, VecDeque};

use ferry_broker::Broker;
use ferry_proto::messages::{
    EndpointLoad, EndpointMessage, ProviderReport, StatusUpdate, TaskBatch, TaskResult,
};
use ferry_proto::time::now_micros;
use ferry_proto::{EndpointId, EventKind, TaskId};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::data::DataPlane;
use crate::interchange::{Input, Sink};

/// Most updates or results in one AMQP message.
const BATCH: usize = 1000;
/// About the most bytes of results in one AMQP message: a result may carry up to 1 MiB
/// each of stdout and stderr, and a thousand of them would be past what RabbitMQ takes.
const BATCH_BYTES: usize = 8 << 20;
/// Publishes awaiting their confirm at once: a result need not wait for the confirm
/// of the message before it (a persistent message is confirmed once on disk).
const IN_FLIGHT: usize = 4;
/// How long a status update waits for its task's result to travel with (then it is
/// dropped: the result carries the task's steps). Under load most tasks finish within
/// it, which saves a Redis call per task; a user sees the state this much later.
const STATUS_LINGER: std::time::Duration = std::time::Duration::from_millis(20);
/// Under load (the previous message carried at least BUSY results), results wait for
/// others until this long after the previous publish: fewer, larger messages (each
/// costs the broker about half a millisecond of CPU however small). A result that
/// comes alone goes at once.
const RESULT_LINGER: std::time::Duration = std::time::Duration::from_millis(10);
/// Results in the previous message from which on the reporter counts as under load.
const BUSY: usize = 16;

/// When held updates are due: never while none is held; at once when `now` (an
/// urgent update waits, or the inputs are closed and nothing more can join them).
async fn due(held: Option<Instant>, now: bool) {
    match held {
        None => std::future::pending().await,
        Some(_) if now => {}
        Some(at) => tokio::time::sleep_until(at + STATUS_LINGER).await,
    }
}

/// The interchange's [`Sink`]: channels drained by the flushers.
#[derive(Clone)]
pub struct Reporter {
    status: mpsc::UnboundedSender<StatusUpdate>,
    results: mpsc::UnboundedSender<TaskResult>,
    /// The interchange's latest view (load, tasks held by live managers); the heartbeat
    /// publisher sends it on its own clock.
    heartbeats: watch::Sender<(EndpointLoad, Vec<TaskId>)>,
    retries: mpsc::UnboundedSender<(TaskBatch, StatusUpdate, u64)>,
    /// The provider's blocks, sent with every heartbeat.
    provider: watch::Sender<Option<watch::Receiver<ProviderReport>>>,
}

impl Reporter {
    /// Heartbeats carry this provider's report from now on.
    pub fn follow_provider(&self, reports: watch::Receiver<ProviderReport>) {
        self.provider.send_replace(Some(reports));
    }
}

impl Sink for Reporter {
    fn status(&self, update: StatusUpdate) {
        let _ = self.status.send(update);
    }

    fn result(&self, result: TaskResult) {
        let _ = self.results.send(result);
    }

    fn heartbeat(&self, load: EndpointLoad, alive: Vec<TaskId>) {
        self.heartbeats.send_replace((load, alive));
    }

    fn retry(&self, batch: TaskBatch, lost: StatusUpdate, delivery: u64) {
        let _ = self.retries.send((batch, lost, delivery));
    }
}

/// Starts the flushers. They end with an error when the broker fails.
pub fn start(
    broker: Broker,
    endpoint_id: EndpointId,
    heartbeat_interval_ms: u64,
    interchange: mpsc::UnboundedSender<Input>,
    data: DataPlane,
) -> (Reporter, tokio::task::JoinSet<anyhow::Result<()>>) {
    let (status_tx, mut status_rx) = mpsc::unbounded_channel::<StatusUpdate>();
    let (results_tx, mut results_rx) = mpsc::unbounded_channel::<TaskResult>();
    let (heartbeats_tx, heartbeats_rx) = watch::channel((EndpointLoad::default(), Vec::new()));
    let (retries_tx, mut retries_rx) = mpsc::unbounded_channel::<(TaskBatch, StatusUpdate, u64)>();
    let (provider_tx, provider_rx) = watch::channel::<Option<watch::Receiver<ProviderReport>>>(None);
    let mut tasks = tokio::task::JoinSet::new();

    // Retries: published to this endpoint's own queue (confirmed), then the loss is
    // reported and the old delivery settled, in that order.
    let b = broker.clone();
    let status_for_retries = status_tx.clone();
    let settle = interchange.clone();
    tasks.spawn(async move {
        let queue = b.endpoint_queue(endpoint_id);
        while let Some((batch, lost, delivery)) = retries_rx.recv().await {
            publish_retry(&b, &queue, &ferry_proto::codec::encode(&batch)?, &batch).await?;
            let _ = status_for_retries.send(lost);
            let _ = settle.send(Input::Settle { delivery });
        }
        Ok(())
    });

    let b = broker.clone();
    tasks.spawn(async move {
        let queue = b.results_queue();
        // Publishes whose confirm is still to come, oldest first: the tasks whose results
        // each carries are settled (their message acked) once it is confirmed.
        let mut in_flight = FuturesOrdered::new();
        // Status updates wait up to STATUS_LINGER: a result that comes meanwhile carries
        // the same steps, and they are dropped.
        let mut held: VecDeque<(Instant, StatusUpdate)> = VecDeque::new();
        let mut open = true;
        let mut urgent = false;
        // Results not yet published; the previous publish, and how many it carried.
        let mut results: Vec<TaskResult> = Vec::new();
        let mut results_bytes = 0;
        let mut last_publish = Instant::now();
        let mut last_results = 0;
        while open || !in_flight.is_empty() || !held.is_empty() || !results.is_empty() {
            let room = in_flight.len() < IN_FLIGHT;
            let oldest = held.front().map(|(at, _)| *at);
            let results_due = (!results.is_empty())
                .then(|| if last_results >= BUSY { last_publish + RESULT_LINGER } else { last_publish });
            tokio::select! {
                biased;
                Some(confirmed) = in_flight.next() => {
                    let ids: Vec<TaskId> = confirmed?;
                    if !ids.is_empty() {
                        let _ = interchange.send(Input::Published { tasks: ids });
                    }
                    continue;
                }
                r = results_rx.recv(), if room && open && results_bytes < BATCH_BYTES => match r {
                    Some(r) => {
                        results_bytes += data.carried_bytes(&r);
                        results.push(r);
                    }
                    None => { open = false; continue }
                },
                u = status_rx.recv(), if open => {
                    let now = Instant::now();
                    for u in u.into_iter().chain(std::iter::from_fn(|| status_rx.try_recv().ok())) {
                        // Only progress waits; anything else (a loss, a failure) goes at
                        // once, with every update before it, in order.
                        urgent |= !matches!(u.kind, EventKind::Received | EventKind::Assigned | EventKind::Started);
                        held.push_back((now, u));
                    }
                    if !urgent || !room {
                        continue;
                    }
                }
                _ = due(oldest, urgent || !open), if room => {}
                _ = tokio::time::sleep_until(results_due.unwrap_or(last_publish)), if room && results_due.is_some() => {}
            }
            while results.len() < BATCH
                && results_bytes < BATCH_BYTES
                && let Ok(r) = results_rx.try_recv()
            {
                results_bytes += data.carried_bytes(&r);
                results.push(r);
            }
            if open
                && !urgent
                && results.len() < BATCH
                && results_bytes < BATCH_BYTES
                && last_results >= BUSY
                && Instant::now() < last_publish + RESULT_LINGER
                && held.front().is_none_or(|(at, _)| *at + STATUS_LINGER > Instant::now())
            {
                // Under load: let more results join these (the sleep above wakes us).
                continue;
            }
            if !results.is_empty() && !held.is_empty() {
                // A result carries the steps of its attempt: those updates are redundant.
                let done: HashSet<_> = results.iter().map(|r| (r.task_id, r.attempt)).collect();
                held.retain(|(_, u)| !done.contains(&(u.task_id, u.attempt)));
            }
            let now = Instant::now();
            let mut updates = Vec::new();
            while updates.len() < BATCH
                && let Some((at, _)) = held.front()
                && (*at + STATUS_LINGER <= now || urgent || !open)
            {
                updates.push(held.pop_front().expect("front exists").1);
            }
            urgent &= !held.is_empty();
            if updates.is_empty() && results.is_empty() {
                continue;
            }
            // Large results go to the data plane first; the report carries their size.
            for r in &mut results {
                data.prepare(r).await;
            }
            let ids: Vec<_> = results.iter().map(|r| r.task_id).collect();
            last_results = results.len();
            results_bytes = 0;
            let body = ferry_proto::codec::encode(&EndpointMessage::Reports {
                endpoint_id,
                updates,
                results: std::mem::take(&mut results),
            })?;
            let confirm = b.publish_pending(&queue, &body).await?;
            last_publish = Instant::now();
            in_flight.push_back(async move { confirm.wait().await.map(|()| ids) });
        }
        Ok(())
    });

    tasks.spawn(async move {
        let queue = broker.status_queue();
        // On a clock of its own: an interchange busy with a backlog must not look like a
        // dead endpoint to the forwarder.
        let mut tick =
            tokio::time::interval(std::time::Duration::from_millis(heartbeat_interval_ms.max(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut paused = false;
        loop {
            tick.tick().await;
            // RabbitMQ blocks publishes (a memory or disk alarm): a heartbeat would wait
            // for the alarm to clear and arrive stale behind others. None is sent until
            // it clears; the forwarder does not count the ones missed meanwhile.
            if broker.blocked() {
                if !paused {
                    tracing::warn!(%endpoint_id, "RabbitMQ blocks publishes (a memory or disk alarm): heartbeats paused until it clears");
                    paused = true;
                }
                continue;
            }
            if paused {
                tracing::info!(%endpoint_id, "RabbitMQ takes publishes again: heartbeats resume");
                paused = false;
            }
            let (mut load, alive) = heartbeats_rx.borrow().clone();
            load.provider = provider_rx.borrow().as_ref().map(|r| r.borrow().clone());
            let beat = EndpointMessage::Heartbeat {
                endpoint_id,
                at: now_micros(),
                interval_ms: heartbeat_interval_ms,
                load,
                alive,
            };
            broker
                .publish(&queue, &ferry_proto::codec::encode(&beat)?)
                .await?;
        }
    });

    let reporter = Reporter {
        status: status_tx,
        results: results_tx,
        heartbeats: heartbeats_tx,
        retries: retries_tx,
        provider: provider_tx,
    };
    (reporter, tasks)
}

/// Publishes a retry to the endpoint's own queue until RabbitMQ takes it: a queue at its
/// `max-length` (declared `x-overflow: reject-publish`) refuses it with a nack, which is
/// backpressure, tried again with backoff (the lost attempt's message stays unacked
/// meanwhile); warned about naming the queue.
async fn publish_retry(broker: &Broker, queue: &str, body: &[u8], batch: &TaskBatch) -> anyhow::Result<()> {
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        match broker.publish(queue, body).await {
            Ok(()) => return Ok(()),
            Err(e @ ferry_broker::Error::Nacked { .. }) => {
                for task in &batch.tasks {
                    tracing::warn!(task_id = %task.task_id, attempt = task.attempt, queue, error = %e, "the endpoint queue refused a retry (it is at a max-length, as an operator policy set): publishing it again");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
