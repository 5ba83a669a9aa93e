//! What happens when nothing happens: endpoints that stop sending heartbeats, and
//! batches whose deadline passes.
//!
//! - An endpoint that misses its heartbeats is declared lost: each of its in-flight
//!   tasks is published again to its queue as attempt+1, then moved back to
//!   `waiting-for-ep` (event `endpoint-lost`). Publishing first means a crash in between
//!   leaves at worst an extra message (its reports are stale or find the task
//!   finished), never a task nobody will run. When the endpoint returns it gets both
//!   the broker's redelivery of the old attempt (whose reports are ignored as stale)
//!   and the new one. Not while RabbitMQ blocks publishes (a memory or disk alarm
//!   blocks the endpoint's heartbeats too), nor until a whole missed-heartbeats window
//!   after it was last seen blocking: a forwarder probes the broker before it judges
//!   an overdue endpoint, and every forwarder records in Redis when it saw a block
//!   ([`watch_blocks`], `<ns>:broker-blocked`), which the claim checks.
//! - Cancels RabbitMQ did not take (blocked, refused, or their sender died) are
//!   published again from Redis (see [`crate::cancels`]).
//! - A batch whose tasks are still `received` 10 s after they were accepted is submitted
//!   again from Redis (the web-service does not wait for the broker's confirm).
//! - A batch whose writing never ended (the web-service died or gave up before its
//!   commit) is failed, a minute (by default) after it began: nothing of it was
//!   published, and nothing of it runs.
//! - A batch past its deadline is failed: its unfinished tasks end `failed` (timeout),
//!   and its endpoint is told on its control queue to stop the ones it holds.
//! - A task whose message is gone (purged, taken by another consumer, lost by the
//!   broker) is published again: see [`stranded`].
//!
//! Several forwarders may sweep at once: each endpoint or batch is claimed in Redis by
//! exactly one of them.

mod stranded;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_broker::Broker;
use ferry_proto::messages::{FunctionCode, TaskBatch, TaskSpec};
use ferry_proto::time::{Micros, now_micros};
use ferry_proto::{Actor, BatchId, EndpointId, Event, EventKind, FunctionId, TaskId, TaskState};
use ferry_store::{Applied, LostClaim, Redispatch, Report, Store};

/// Tasks handled per Redis round trip and per AMQP message.
const CHUNK: usize = 1000;

/// How long a task may stay `received` before its submission counts as lost.
const RECOVER_AFTER: Duration = Duration::from_secs(10);

/// How long the probe of RabbitMQ before judging overdue endpoints may wait for its
/// confirm (longer, the broker counts as blocking publishes).
const PROBE_WITHIN: Duration = Duration::from_secs(2);

/// How old a stored cancel must be before the sweeper publishes it (its sender
/// publishes it at once and takes it off when confirmed).
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Most cancelled tasks in one message the sweeper publishes.
const CANCELS_PER_MESSAGE: usize = 5000;

/// Records in Redis, every `period`, that RabbitMQ blocks this connection's publishes
/// (`connection.blocked`, a memory or disk alarm: it blocks every publishing
/// connection, so the endpoints' heartbeats too), counting it blocked a period beyond.
/// No sweeper declares an endpoint lost until a whole missed-heartbeats window after
/// that. Runs apart from the sweeper, whose own publishes may wait out the block.
pub async fn watch_blocks(store: Store, broker: Broker, period: Duration) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_blocked = false;
    loop {
        tick.tick().await;
        let blocked = broker.blocked();
        if blocked {
            store
                .note_broker_blocked(now_micros() + period.as_micros() as Micros)
                .await?;
        }
        if blocked != was_blocked {
            if blocked {
                tracing::warn!(
                    "RabbitMQ blocks publishes (a memory or disk alarm): no endpoint is declared lost until its heartbeats have had a whole window after the block"
                );
            } else {
                tracing::info!("RabbitMQ takes publishes again");
            }
            was_blocked = blocked;
        }
    }
}

/// Sweeps on a timer.
pub struct Sweeper {
    store: Store,
    broker: Broker,
    /// Heartbeats an endpoint may miss before it is declared lost.
    missed_heartbeats: u32,
    period: Duration,
    /// How long after its acceptance a batch still being written counts as abandoned.
    abandoned_after: Duration,
    started: Instant,
    /// How long a task must look stranded, over two looks, before it is requeued
    /// (zero: never).
    stranded_after: Duration,
    /// The endpoints that looked stranded at the last look, and when that was.
    looks: Mutex<stranded::Looks>,
    metrics: std::sync::Arc<crate::metrics::ForwarderMetrics>,
}

impl Sweeper {
    pub fn new(
        store: Store,
        broker: Broker,
        missed_heartbeats: u32,
        period: Duration,
        abandoned_after: Duration,
        stranded_after: Duration,
    ) -> Self {
        Self {
            store,
            broker,
            missed_heartbeats,
            period,
            abandoned_after,
            started: Instant::now(),
            stranded_after,
            looks: Mutex::default(),
            metrics: Default::default(),
        }
    }

    /// Counts the endpoints it declares lost in `metrics` (default: metrics of its own,
    /// served nowhere).
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::ForwarderMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Sweeps every period until an error (the caller reconnects).
    pub async fn run(self) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Seen alive: the web-service names a missing forwarder as why tasks wait.
            self.store
                .mark_forwarder_alive(now_micros(), self.period.as_millis() as u64)
                .await?;
            self.sweep_endpoints().await?;
            self.sweep_batches().await?;
            self.sweep_received().await?;
            self.sweep_unfinished().await?;
            self.sweep_stranded().await?;
            self.sweep_cancels().await?;
        }
    }

    /// Publishes the cancels stored at least [`CANCEL_GRACE`] ago that RabbitMQ has not
    /// taken yet (see [`crate::cancels`]); an endpoint deleted since has its dropped.
    pub async fn sweep_cancels(&self) -> anyhow::Result<()> {
        let before = now_micros().saturating_sub(CANCEL_GRACE.as_micros() as Micros);
        for endpoint in self.store.endpoints_with_pending_cancels(before, 100).await? {
            let ids = self.store.pending_cancels(endpoint, CANCELS_PER_MESSAGE).await?;
            if !self.store.endpoint_exists(endpoint).await? {
                tracing::info!(%endpoint, tasks = ids.len(), "dropping the stored cancels of a deleted endpoint");
                self.store.pending_cancels_done(endpoint, &ids).await?;
                continue;
            }
            let tasks = ids.len();
            if !crate::cancels::publish_stored(&self.store, &self.broker, endpoint, ids).await? {
                // RabbitMQ does not take publishes now: the next sweep tries again.
                return Ok(());
            }
            tracing::info!(%endpoint, tasks, "published a stored cancel");
        }
        Ok(())
    }

    /// Declares lost the endpoints whose heartbeats stopped: not while RabbitMQ blocks
    /// publishes (probed first), nor within a missed-heartbeats window after a block any
    /// forwarder saw (the claim checks `<ns>:broker-blocked`).
    pub async fn sweep_endpoints(&self) -> anyhow::Result<()> {
        let overdue = self.store.overdue_endpoints(now_micros()).await?;
        if overdue.is_empty() {
            return Ok(());
        }
        if !self.broker.takes_publishes(PROBE_WITHIN).await? {
            self.store
                .note_broker_blocked(now_micros() + self.period.as_micros() as Micros)
                .await?;
            for (endpoint, _) in &overdue {
                tracing::info!(%endpoint, "heartbeats overdue while RabbitMQ does not take publishes (an alarm?): not declared lost");
            }
            return Ok(());
        }
        let now = now_micros();
        for (endpoint, deadline) in overdue {
            let Some(record) = self.store.get_endpoint(endpoint).await? else {
                continue;
            };
            // Heartbeats that came while no forwarder ran are still queued: judge an
            // endpoint only after watching it for a whole window.
            let window =
                Duration::from_millis(record.heartbeat_interval_ms * u64::from(self.missed_heartbeats));
            if self.started.elapsed() < window {
                continue;
            }
            match self
                .store
                .claim_lost_endpoint(endpoint, deadline, now, window.as_micros() as Micros)
                .await?
            {
                LostClaim::Claimed => {}
                LostClaim::Taken => continue,
                LostClaim::BrokerBlocked => {
                    tracing::info!(%endpoint, "heartbeats overdue within a window after RabbitMQ blocked publishes: not declared lost yet");
                    continue;
                }
            }
            let moved = self.endpoint_lost(endpoint).await?;
            self.metrics.endpoints_lost.inc();
            if record.heartbeat_interval_ms == 0 {
                // Its last heartbeat said goodbye (`interval_ms` 0): a clean stop.
                tracing::info!(
                    %endpoint,
                    tasks = moved,
                    "endpoint stopped cleanly; the tasks it had not finished wait for it again"
                );
            } else {
                tracing::warn!(
                    %endpoint,
                    last_heartbeat = ?record.last_heartbeat,
                    tasks = moved,
                    "endpoint lost: its heartbeats stopped; its tasks wait for it again"
                );
            }
        }
        Ok(())
    }

    /// Moves an endpoint's in-flight tasks back to `waiting-for-ep` as their next
    /// attempt; returns how many moved.
    pub async fn endpoint_lost(&self, endpoint: EndpointId) -> anyhow::Result<usize> {
        let ids = self.store.in_flight(endpoint).await?;
        if !ids.is_empty() {
            self.broker.declare_endpoint(endpoint).await?;
        }
        let mut functions: HashMap<FunctionId, FunctionCode> = HashMap::new();
        let mut moved = 0;
        for chunk in ids.chunks(CHUNK) {
            let infos: Vec<_> = self
                .store
                .redispatch_info(chunk)
                .await?
                .into_iter()
                .flatten()
                .filter(|i| {
                    i.endpoint_id == endpoint
                        && matches!(
                            i.state,
                            TaskState::WaitingForNodes | TaskState::WaitingForLaunch | TaskState::Running
                        )
                })
                .collect();
            if infos.is_empty() {
                continue;
            }
            let (batch, included) = self.task_batch(endpoint, &infos, (1, 0), &mut functions).await?;
            for (task_id, attempt) in self
                .publish_again(endpoint, &batch, &included, EventKind::EndpointLost)
                .await?
            {
                moved += 1;
                tracing::info!(%task_id, %endpoint, attempt, "endpoint lost: task waits for it again");
            }
        }
        Ok(moved)
    }

    /// The message that dispatches these tasks (as attempt + `bump`, with `extra`
    /// retries more), with the code of the functions they use; tasks whose function is
    /// gone are left out.
    /// Publishes `batch` (the tasks `included`, at their next attempt) to the endpoint's
    /// queue, then records `kind` for each at the attempt it had; the tasks it moved, with
    /// their new attempt. Published first: a crash between the two leaves an extra
    /// message, never a task with none.
    async fn publish_again(
        &self,
        endpoint: EndpointId,
        batch: &TaskBatch,
        included: &[&Redispatch],
        kind: EventKind,
    ) -> anyhow::Result<Vec<(TaskId, u32)>> {
        let at = now_micros();
        let reports: Vec<Report> = included
            .iter()
            .map(|info| Report {
                task_id: info.task_id,
                event: Event {
                    kind,
                    attempt: info.attempt,
                },
                at,
                by: Actor::Forwarder,
                from: None,
                finish: None,
            })
            .collect();
        let body = ferry_proto::codec::encode(batch)?;
        let queue = self.broker.endpoint_queue(endpoint);
        match self.broker.publish(&queue, &body).await {
            Ok(()) => {}
            Err(e @ ferry_broker::Error::Nacked { .. }) => {
                // The queue is at a max-length (reject-publish): the tasks stay as they
                // are (nothing is recorded), rather than wait for a message refused.
                for info in included {
                    tracing::warn!(task_id = %info.task_id, %endpoint, %queue, error = %e, "cannot publish the task again: its endpoint queue refused the message (a max-length policy?)");
                }
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        }
        let applied = self.store.apply(&reports).await?;
        Ok(reports
            .iter()
            .zip(applied)
            .filter_map(|(report, outcome)| match outcome {
                Applied::Moved { attempt, .. } => Some((report.task_id, attempt)),
                _ => None,
            })
            .collect())
    }

    async fn task_batch<'a>(
        &self,
        endpoint: EndpointId,
        infos: &'a [Redispatch],
        (bump, extra): (u32, u32),
        functions: &mut HashMap<FunctionId, FunctionCode>,
    ) -> anyhow::Result<(TaskBatch, Vec<&'a Redispatch>)> {
        let mut used: Vec<FunctionCode> = Vec::new();
        let mut tasks = Vec::with_capacity(infos.len());
        let mut included = Vec::with_capacity(infos.len());
        for info in infos {
            if !functions.contains_key(&info.function_id) {
                let Some(f) = self.store.get_function(info.function_id).await? else {
                    tracing::warn!(task_id = %info.task_id, function_id = %info.function_id, "cannot dispatch again: the function is gone");
                    continue;
                };
                functions.insert(
                    f.function_id,
                    FunctionCode::for_message(f.function_id, f.kind, &f.code).bound_to(f.python.clone()),
                );
            }
            if !used.iter().any(|f| f.function_id == info.function_id) {
                used.push(functions[&info.function_id].clone());
            }
            tasks.push(TaskSpec {
                task_id: info.task_id,
                function_id: info.function_id,
                attempt: info.attempt + bump,
                max_retries: info.max_retries + extra,
                payload: info.payload.clone(),
                group: info.result_group,
                walltime_ms: info.walltime_ms,
                input_bytes: info.input_bytes,
                requeues: 0,
                priority: info.priority,
                requires: info.requires.clone(),
                retry: info.retry.clone(),
                not_before: None,
                environment: info.environment.clone(),
                session: info.batch_id,
            });
            included.push(info);
        }
        Ok((
            TaskBatch {
                endpoint_id: endpoint,
                functions: used,
                tasks,
            },
            included,
        ))
    }

    /// Submits again the tasks of batches that are still `received` long after they
    /// were accepted: the web-service answers before the broker confirms its publish,
    /// so a message lost in a broker crash is recovered here, from Redis.
    pub async fn sweep_received(&self) -> anyhow::Result<()> {
        let now = now_micros();
        let cutoff = now.saturating_sub(RECOVER_AFTER.as_micros() as Micros);
        for batch in self.store.open_batches_before(cutoff, 100).await? {
            if self.store.being_written(batch).await? {
                // Not committed: none of its tasks may be published (`sweep_unfinished`
                // fails it if its commit never comes).
                continue;
            }
            let status = match self.store.batch_status(batch).await? {
                Some(s) if s.counts[TaskState::Received.code() as usize] > 0 => s,
                _ => {
                    self.store.close_open_batch(batch).await?;
                    continue;
                }
            };
            let endpoint = status.record.endpoint_id;
            let ids = self.store.batch_task_ids(batch, 0, -1).await?;
            let mut functions = HashMap::new();
            let mut again = 0;
            for chunk in ids.chunks(CHUNK) {
                let infos: Vec<Redispatch> = self
                    .store
                    .redispatch_info(chunk)
                    .await?
                    .into_iter()
                    .flatten()
                    .filter(|i| i.state == TaskState::Received)
                    .collect();
                if infos.is_empty() {
                    continue;
                }
                let (message, included) = self.task_batch(endpoint, &infos, (0, 0), &mut functions).await?;
                again += included.len();
                let body = ferry_proto::codec::encode(&message)?;
                self.broker
                    .publish(&self.broker.submissions_queue(), &body)
                    .await?;
            }
            tracing::warn!(%batch, tasks = again, "tasks still received long after they were accepted; submitted again");
            self.store.reopen_batch(batch, now).await?;
        }
        Ok(())
    }

    /// Fails the batches whose writing began long ago and never ended (the web-service
    /// died or gave up before their commit): none of their tasks was published, and
    /// none runs. Each written task ends `failed`, then the batch is closed at them.
    pub async fn sweep_unfinished(&self) -> anyhow::Result<()> {
        let now = now_micros();
        let cutoff = now.saturating_sub(self.abandoned_after.as_micros() as Micros);
        for batch in self.store.unfinished_batches_before(cutoff, 100).await? {
            let ids = self.store.batch_task_ids(batch, 0, -1).await?;
            let why = "the submission was never completed (its writer stopped before it \
                       committed the tasks and answered); the task never ran";
            for chunk in ids.chunks(CHUNK) {
                self.store.apply(&failed_unrun(chunk, why, now)).await?;
            }
            if self.store.close_unfinished_batch(batch, now).await? {
                tracing::warn!(%batch, tasks = ids.len(), "a batch was left half-written; its tasks failed unrun");
            }
        }
        Ok(())
    }

    /// Fails the batches whose deadline passed.
    pub async fn sweep_batches(&self) -> anyhow::Result<()> {
        let now = now_micros();
        for batch in self.store.expired_batches(now, 100).await? {
            if self.store.claim_timed_out_batch(batch, now).await? {
                let failed = self.time_out(batch, now).await?;
                if failed == 0 {
                    // Its last tasks finished between the deadline and this sweep: the
                    // session completed, it did not time out.
                    self.store.unmark_timed_out(batch).await?;
                    tracing::info!(%batch, "every task of the batch had finished by its deadline's sweep");
                } else {
                    tracing::warn!(%batch, tasks = failed, "batch timed out; its unfinished tasks failed");
                }
            }
        }
        Ok(())
    }

    async fn time_out(&self, batch: BatchId, at: Micros) -> anyhow::Result<usize> {
        let ids = self.store.batch_task_ids(batch, 0, -1).await?;
        let Some(status) = self.store.batch_status(batch).await? else {
            return Ok(0);
        };
        let endpoint = status.record.endpoint_id;
        let reason = bytes::Bytes::from(format!("batch {batch} timed out before this task finished"));
        let mut failed = 0;
        for chunk in ids.chunks(CHUNK * 5) {
            let reports: Vec<Report> = chunk
                .iter()
                .map(|&id| Report::ended_by(id, 0, EventKind::TimedOut, Actor::Forwarder, at, reason.clone()))
                .collect();
            let applied = self.store.apply(&reports).await?;
            let moved: Vec<_> = chunk
                .iter()
                .zip(&applied)
                .filter(|(_, a)| matches!(a, Applied::Moved { .. }))
                .map(|(t, _)| *t)
                .collect();
            failed += moved.len();
            crate::cancels::stop_tasks(&self.store, &self.broker, endpoint, moved).await?;
        }
        Ok(failed)
    }
}

/// `failed` reports for tasks that never left `received` (their submission was not
/// completed), by the forwarder, dated `at`.
fn failed_unrun(ids: &[TaskId], why: &str, at: Micros) -> Vec<Report> {
    let why = bytes::Bytes::from(why.to_owned());
    ids.iter()
        .map(|&id| Report::ended_by(id, 0, EventKind::Failed, Actor::Forwarder, at, why.clone()))
        .collect()
}
