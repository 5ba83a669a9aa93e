//! Endpoint messages -> Redis.

use ferry_broker::{Broker, Consumer, Delivery};
use ferry_proto::messages::{Completion, EndpointMessage, TaskResult};
use std::ops::Range;

use ferry_proto::{EndpointId, Event, EventKind};
use ferry_store::{Applied, Finish, Report, Store};

use crate::held::Held;

/// Most endpoint messages applied together (at most the consumer's prefetch arrive),
/// and about most bytes of them (results can be large).
const MESSAGES_PER_ROUND: usize = 1024;
const BYTES_PER_ROUND: usize = 16 << 20;

/// Applies heartbeats, status updates and results.
#[derive(Clone)]
pub struct Applier {
    store: Store,
    broker: Broker,
    /// The dispatcher's held `waiting-for-ep` records, written with these reports.
    held: Held,
    /// Heartbeats an endpoint may miss before the sweeper declares it lost.
    missed_heartbeats: u32,
}

impl Applier {
    pub fn new(store: Store, broker: Broker, held: Held, missed_heartbeats: u32) -> Self {
        Self {
            store,
            broker,
            held,
            missed_heartbeats,
        }
    }

    /// Consumes endpoint messages until the consumer ends.
    pub async fn run(self, mut consumer: Consumer) -> anyhow::Result<()> {
        loop {
            let deliveries = consumer.next_batch(MESSAGES_PER_ROUND, BYTES_PER_ROUND).await?;
            if deliveries.is_empty() {
                anyhow::bail!("an endpoint-message consumer was closed");
            }
            self.step(deliveries).await?;
        }
    }

    /// Handles messages that arrived together: heartbeats one by one, then the reports
    /// of every message in one transition call (in arrival order: one Redis round trip
    /// however many small messages the endpoints sent), each task's held
    /// `waiting-for-ep` step first, then acks them all, only after Redis has them.
    pub async fn step(&self, deliveries: Vec<Delivery>) -> anyhow::Result<()> {
        let mut reports: Vec<Report> = Vec::new();
        // Per result: the index of its terminal report, and its task group.
        let mut terminal_at = Vec::new();
        let mut groups = Vec::new();
        // Which endpoint sent which reports (for the logs).
        let mut senders: Vec<(EndpointId, Range<usize>)> = Vec::new();
        let mut handled = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let message: EndpointMessage = match ferry_proto::codec::decode(delivery.body()) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "dead-lettering a malformed endpoint message");
                    delivery.dead_letter(&e.to_string()).await?;
                    continue;
                }
            };
            match message {
                EndpointMessage::Heartbeat {
                    endpoint_id,
                    at,
                    interval_ms,
                    load,
                    alive,
                } => {
                    self.store.touch_tasks(&alive, at).await?;
                    let load = serde_json::to_value(&load)?;
                    // The deadline runs on this side's clock: the endpoint's may differ.
                    let deadline = ferry_proto::time::now_micros()
                        + interval_ms.max(1) * 1000 * u64::from(self.missed_heartbeats.max(1));
                    if !self
                        .store
                        .record_heartbeat(endpoint_id, at, interval_ms, &load, deadline)
                        .await?
                    {
                        tracing::warn!(%endpoint_id, "heartbeat from an unregistered endpoint");
                    }
                }
                EndpointMessage::Reports {
                    endpoint_id,
                    updates,
                    results,
                } => {
                    // Updates first, then each result's steps and end.
                    let from = reports.len();
                    reports.extend(updates.iter().map(|u| Report {
                        task_id: u.task_id,
                        event: Event {
                            kind: u.kind,
                            attempt: u.attempt,
                        },
                        at: u.at,
                        by: u.by,
                        finish: None,
                    }));
                    for result in results {
                        groups.push(result.group);
                        reports.extend(result_reports(result));
                        terminal_at.push(reports.len() - 1);
                    }
                    senders.push((endpoint_id, from..reports.len()));
                }
            }
            handled.push(delivery);
        }
        tracing::debug!(
            messages = handled.len(),
            reports = reports.len(),
            "applying endpoint messages"
        );
        if !reports.is_empty() {
            let held = self.held.take(reports.iter().map(|r| r.task_id));
            let n = held.records.len();
            let mut all = held.records;
            all.append(&mut reports);
            let mut applied = self.store.apply(&all).await?;
            let rest = applied.split_off(n);
            self.held.settle(&self.broker, &held.from, &applied).await?;
            let (reports, applied) = (&all[n..], rest);
            for (endpoint_id, range) in senders {
                log_outcomes(&reports[range.clone()], &applied[range], endpoint_id);
            }
            self.notify_groups(reports, &applied, &terminal_at, &groups)
                .await?;
        }
        for delivery in handled {
            delivery.ack().await?;
        }
        Ok(())
    }
}

impl Applier {
    /// Publishes each newly recorded result to its task group's queue, where a Globus
    /// Compute `Executor` waits for it. Only the first terminal event of a task is sent.
    async fn notify_groups(
        &self,
        reports: &[Report],
        applied: &[Applied],
        terminal_at: &[usize],
        groups: &[Option<ferry_proto::TaskGroupId>],
    ) -> anyhow::Result<()> {
        let mut messages = Vec::new();
        for (&i, group) in terminal_at.iter().zip(groups) {
            let (Some(group), Applied::Moved { to, .. }) = (group, applied[i]) else {
                continue;
            };
            let Some(finish) = &reports[i].finish else {
                continue;
            };
            if !to.is_terminal() {
                continue;
            }
            let fetched;
            let data = if finish.by_reference {
                let attempt = reports[i].event.attempt;
                fetched = self
                    .store
                    .get_result_data(reports[i].task_id, attempt)
                    .await?
                    .unwrap_or_default();
                String::from_utf8_lossy(&fetched)
            } else {
                String::from_utf8_lossy(&finish.data)
            };
            let code = (!finish.success).then_some(ferry_proto::globus::REMOTE_EXECUTION_ERROR);
            let body = ferry_proto::globus::result_message(reports[i].task_id, &data, code);
            messages.push((self.broker.task_group_queue(*group), body));
        }
        if !messages.is_empty() {
            let now = ferry_proto::time::now_micros() / 1_000_000;
            self.broker.publish_stamped(&messages, now).await?;
        }
        Ok(())
    }
}

/// A result becomes its endpoint-side steps (so the history is whole even when the
/// result overtook the status updates) followed by the terminal event.
fn result_reports(r: TaskResult) -> Vec<Report> {
    let mut reports: Vec<Report> = r
        .steps
        .iter()
        .map(|s| Report {
            task_id: r.task_id,
            event: Event {
                kind: s.kind,
                attempt: s.attempt,
            },
            at: s.at,
            by: s.by,
            finish: None,
        })
        .collect();
    let by_reference = matches!(r.completion, Completion::SuccessByReference { .. });
    let (kind, data, exception) = match r.completion {
        Completion::Success { result } => (EventKind::Succeeded, result, bytes::Bytes::new()),
        Completion::SuccessByReference { .. } => {
            (EventKind::Succeeded, bytes::Bytes::new(), bytes::Bytes::new())
        }
        Completion::Failure { traceback, exception } => (
            EventKind::Failed,
            bytes::Bytes::from(traceback),
            exception.unwrap_or_default(),
        ),
        // A lost task whose retries are spent: the Lost event fails it, and the reason
        // is recorded as its exception.
        Completion::Lost { reason } => (EventKind::Lost, bytes::Bytes::from(reason), bytes::Bytes::new()),
        Completion::TimedOut { reason } => (
            EventKind::TimedOut,
            bytes::Bytes::from(reason),
            bytes::Bytes::new(),
        ),
    };
    reports.push(Report {
        task_id: r.task_id,
        event: Event {
            kind,
            attempt: r.attempt,
        },
        at: r.finished_at,
        by: if matches!(kind, EventKind::Lost | EventKind::TimedOut) {
            ferry_proto::Actor::Endpoint
        } else {
            ferry_proto::Actor::Worker
        },
        finish: Some(Finish {
            success: kind == EventKind::Succeeded,
            by_reference,
            data,
            exception,
            stdout: r.stdout,
            stderr: r.stderr,
        }),
    });
    reports
}

fn log_outcomes(reports: &[Report], applied: &[Applied], endpoint_id: ferry_proto::EndpointId) {
    for (report, outcome) in reports.iter().zip(applied) {
        match outcome {
            Applied::Moved { to, attempt, .. } => {
                tracing::debug!(task_id = %report.task_id, state = to.wire_name(), attempt, "transition")
            }
            Applied::Ignored(reason) => {
                tracing::debug!(task_id = %report.task_id, ?reason, event = ?report.event.kind, "report ignored")
            }
            Applied::Unknown => {
                tracing::warn!(task_id = %report.task_id, %endpoint_id, "report about an unknown task")
            }
        }
    }
}
