//! What happens when nothing happens: endpoints that stop sending heartbeats, and
//! batches whose deadline passes.
//!
//! - An endpoint that misses its heartbeats is declared lost: each of its in-flight
//!   tasks is published again to its queue as attempt+1, then moved back to
//!   `waiting-for-ep` (event `endpoint-lost`). Publishing first means a crash in between
//!   leaves at worst an extra message (its reports are stale or find the task
//!   finished), never a task nobody will run. When the endpoint returns it gets both
//!   the broker's redelivery of the old attempt (whose reports are ignored as stale)
//!   and the new one.
//! - A batch past its deadline is failed: its unfinished tasks end `failed` (timeout),
//!   and its endpoint is told on its control queue to stop the ones it holds.
//!
//! Several forwarders may sweep at once: each endpoint or batch is claimed in Redis by
//! exactly one of them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_broker::Broker;
use ferry_proto::messages::{FunctionCode, TaskBatch, TaskSpec};
use ferry_proto::time::{Micros, now_micros};
use ferry_proto::{Actor, BatchId, EndpointId, Event, EventKind, FunctionId, TaskState};
use ferry_store::{Applied, Finish, Report, Store};

/// Tasks handled per Redis round trip and per AMQP message.
const CHUNK: usize = 1000;

/// Sweeps on a timer.
pub struct Sweeper {
    store: Store,
    broker: Broker,
    /// Heartbeats an endpoint may miss before it is declared lost.
    missed_heartbeats: u32,
    period: Duration,
    started: Instant,
}

impl Sweeper {
    pub fn new(store: Store, broker: Broker, missed_heartbeats: u32, period: Duration) -> Self {
        Self {
            store,
            broker,
            missed_heartbeats,
            period,
            started: Instant::now(),
        }
    }

    /// Sweeps every period until an error (the caller reconnects).
    pub async fn run(self) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sweep_endpoints().await?;
            self.sweep_batches().await?;
        }
    }

    /// Declares lost the endpoints whose heartbeats stopped.
    pub async fn sweep_endpoints(&self) -> anyhow::Result<()> {
        let now = now_micros();
        for (endpoint, deadline) in self.store.overdue_endpoints(now).await? {
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
            if !self.store.claim_lost_endpoint(endpoint, deadline, now).await? {
                continue;
            }
            let moved = self.endpoint_lost(endpoint).await?;
            tracing::warn!(
                %endpoint,
                last_heartbeat = ?record.last_heartbeat,
                tasks = moved,
                "endpoint lost: its heartbeats stopped; its tasks wait for it again"
            );
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
            let mut used = Vec::new();
            let mut tasks = Vec::with_capacity(infos.len());
            let mut reports = Vec::with_capacity(infos.len());
            let at = now_micros();
            for info in &infos {
                if !functions.contains_key(&info.function_id) {
                    let Some(f) = self.store.get_function(info.function_id).await? else {
                        tracing::warn!(task_id = %info.task_id, function_id = %info.function_id, "cannot dispatch again: the function is gone");
                        continue;
                    };
                    functions.insert(
                        f.function_id,
                        FunctionCode {
                            function_id: f.function_id,
                            kind: f.kind,
                            code: f.code,
                        },
                    );
                }
                if !used
                    .iter()
                    .any(|f: &FunctionCode| f.function_id == info.function_id)
                {
                    used.push(functions[&info.function_id].clone());
                }
                tasks.push(TaskSpec {
                    task_id: info.task_id,
                    function_id: info.function_id,
                    attempt: info.attempt + 1,
                    max_retries: info.max_retries,
                    payload: info.payload.clone(),
                    group: info.result_group,
                    walltime_ms: info.walltime_ms,
                    input_bytes: info.input_bytes,
                });
                reports.push(Report {
                    task_id: info.task_id,
                    event: Event {
                        kind: EventKind::EndpointLost,
                        attempt: info.attempt,
                    },
                    at,
                    by: Actor::Forwarder,
                    finish: None,
                });
            }
            let body = ferry_proto::codec::encode(&TaskBatch {
                endpoint_id: endpoint,
                functions: used,
                tasks,
            })?;
            self.broker
                .publish(&self.broker.endpoint_queue(endpoint), &body)
                .await?;
            let applied = self.store.apply(&reports).await?;
            for (report, outcome) in reports.iter().zip(applied) {
                if let Applied::Moved { attempt, .. } = outcome {
                    moved += 1;
                    tracing::info!(task_id = %report.task_id, %endpoint, attempt, "endpoint lost: task waits for it again");
                }
            }
        }
        Ok(moved)
    }

    /// Fails the batches whose deadline passed.
    pub async fn sweep_batches(&self) -> anyhow::Result<()> {
        let now = now_micros();
        for batch in self.store.expired_batches(now, 100).await? {
            if self.store.claim_timed_out_batch(batch, now).await? {
                let failed = self.time_out(batch, now).await?;
                tracing::warn!(%batch, tasks = failed, "batch timed out; its unfinished tasks failed");
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
                .map(|&task_id| Report {
                    task_id,
                    event: Event {
                        kind: EventKind::TimedOut,
                        attempt: 0,
                    },
                    at,
                    by: Actor::Forwarder,
                    finish: Some(Finish {
                        success: false,
                        by_reference: false,
                        data: reason.clone(),
                        exception: bytes::Bytes::new(),
                        stdout: String::new(),
                        stderr: String::new(),
                    }),
                })
                .collect();
            let applied = self.store.apply(&reports).await?;
            let moved: Vec<_> = chunk
                .iter()
                .zip(&applied)
                .filter(|(_, a)| matches!(a, Applied::Moved { .. }))
                .map(|(t, _)| *t)
                .collect();
            failed += moved.len();
            if let Err(e) = self.broker.cancel_tasks(endpoint, moved).await {
                tracing::warn!(%batch, error = %e, "cannot tell the endpoint to stop timed-out tasks");
            }
        }
        Ok(failed)
    }
}
