//! Endpoint messages -> Redis.

use ferry_broker::{Broker, Consumer, Delivery};
use ferry_proto::messages::{Completion, EndpointMessage, TaskResult};
use std::ops::Range;
use std::sync::Arc;

use ferry_proto::{EndpointId, Event, EventKind};
use ferry_store::{Applied, Finish, Report, Store};

use crate::alive::Alive;
use crate::held::Held;
use crate::metrics::{DeadLetter, ForwarderMetrics};

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
    /// Endpoints have broker identities: a message is taken only from the identity of
    /// the endpoint it speaks for.
    identities: bool,
    metrics: Arc<ForwarderMetrics>,
    /// Endpoints whose heartbeats were recorded lately (told to the dispatcher).
    alive: Alive,
}

impl Applier {
    pub fn new(store: Store, broker: Broker, held: Held, missed_heartbeats: u32, identities: bool) -> Self {
        Self {
            store,
            broker,
            held,
            missed_heartbeats,
            identities,
            metrics: Arc::default(),
            alive: Alive::default(),
        }
    }

    /// Tells `alive` of the endpoints whose heartbeats it records (default: an `Alive`
    /// of its own, which no one asks).
    pub fn with_alive(mut self, alive: Alive) -> Self {
        self.alive = alive;
        self
    }

    /// Counts what it applies in `metrics` (default: metrics of its own, served nowhere).
    pub fn with_metrics(mut self, metrics: Arc<ForwarderMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Why a message may not be taken from its sender: with identities, it must come
    /// from the broker user of the endpoint it names (RabbitMQ vouches for `user_id`).
    fn refusal(&self, delivery: &Delivery, endpoint_id: EndpointId) -> Option<String> {
        if !self.identities {
            return None;
        }
        let expected = self.broker.endpoint_user(endpoint_id);
        match delivery.user_id() {
            Some(user) if user == expected => None,
            Some(user) => Some(format!(
                "a message for endpoint {endpoint_id} sent by broker user {user}, not by {expected}"
            )),
            None => Some(format!(
                "a message for endpoint {endpoint_id} without the sender's user_id (expected {expected})"
            )),
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
        let came = ferry_proto::time::now_micros();
        let mut reports: Vec<Report> = Vec::new();
        // Per result: the index of its terminal report, and whether it names a task group.
        let mut terminal_at = Vec::new();
        let mut grouped = Vec::new();
        // Which endpoint sent which reports, in which of `handled`.
        let mut senders: Vec<(EndpointId, Range<usize>, usize)> = Vec::new();
        let mut handled = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let message: EndpointMessage = match ferry_proto::codec::decode(delivery.body()) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "dead-lettering a malformed endpoint message");
                    self.metrics.dead_letter(DeadLetter::Malformed);
                    delivery.dead_letter(&e.to_string()).await?;
                    continue;
                }
            };
            let endpoint_id = match &message {
                EndpointMessage::Heartbeat { endpoint_id, .. }
                | EndpointMessage::Reports { endpoint_id, .. } => *endpoint_id,
            };
            if let Some(reason) = self.refusal(&delivery, endpoint_id) {
                tracing::warn!(%endpoint_id, %reason, "dead-lettering a forged endpoint message");
                self.metrics.dead_letter(DeadLetter::Forged);
                delivery.dead_letter(&reason).await?;
                continue;
            }
            match message {
                EndpointMessage::Heartbeat {
                    endpoint_id,
                    at,
                    interval_ms,
                    load,
                    alive,
                } => {
                    self.metrics.heartbeats.inc();
                    self.store.touch_tasks(endpoint_id, &alive, at).await?;
                    let load = serde_json::to_value(&load)?;
                    // The deadline runs on this side's clock: the endpoint's may differ.
                    let deadline = ferry_proto::time::now_micros()
                        + interval_ms.max(1) * 1000 * u64::from(self.missed_heartbeats.max(1));
                    if self
                        .store
                        .record_heartbeat(endpoint_id, at, interval_ms, &load, deadline)
                        .await?
                    {
                        self.alive.heard(endpoint_id, at, interval_ms);
                    } else {
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
                        from: Some(endpoint_id),
                        finish: None,
                    }));
                    for result in results {
                        self.metrics.result(&result);
                        grouped.push(result.group.is_some());
                        reports.extend(result_reports(result, endpoint_id));
                        terminal_at.push(reports.len() - 1);
                    }
                    senders.push((endpoint_id, from..reports.len(), handled.len()));
                }
            }
            handled.push(delivery);
        }
        tracing::debug!(
            messages = handled.len(),
            reports = reports.len(),
            "applying endpoint messages"
        );
        // Messages that spoke of other endpoints' tasks: dead-lettered (what else they
        // said is applied), with the reason.
        let mut refused: Vec<Option<String>> = vec![None; handled.len()];
        if !reports.is_empty() {
            let held = self.held.take(reports.iter().map(|r| r.task_id));
            let n = held.records.len();
            let mut all = held.records;
            all.append(&mut reports);
            let mut applied = self.store.apply(&all).await?;
            for a in &applied {
                match a {
                    Applied::Moved { to, .. } => self.metrics.moved(*to),
                    Applied::Ignored(_) | Applied::Unknown => self.metrics.ignored(),
                    Applied::Foreign => {}
                }
            }
            let rest = applied.split_off(n);
            self.held
                .settle(&self.store, &self.broker, &held.from, &applied)
                .await?;
            let (reports, applied) = (&all[n..], rest);
            for (endpoint_id, range, message) in senders {
                log_outcomes(&reports[range.clone()], &applied[range.clone()], endpoint_id);
                let mut foreign: Vec<String> = reports[range.clone()]
                    .iter()
                    .zip(&applied[range])
                    .filter(|(_, a)| **a == Applied::Foreign)
                    .map(|(r, _)| r.task_id.to_string())
                    .collect();
                foreign.dedup();
                if !foreign.is_empty() {
                    refused[message] = Some(format!(
                        "endpoint {endpoint_id} reported on tasks that are not its own: {}",
                        foreign.join(", ")
                    ));
                }
            }
            crate::trace::recorded(reports, &applied, &terminal_at, came);
            self.notify_groups(reports, &applied, &terminal_at, &grouped)
                .await?;
        }
        for (delivery, refused) in handled.into_iter().zip(refused) {
            match refused {
                Some(reason) => {
                    tracing::warn!(%reason, "dead-lettering an endpoint message");
                    self.metrics.dead_letter(DeadLetter::Foreign);
                    delivery.dead_letter(&reason).await?
                }
                None => delivery.ack().await?,
            }
        }
        Ok(())
    }
}

impl Applier {
    /// Publishes each newly recorded result to its task group's queue, where a Globus
    /// Compute `Executor` waits for it. Only the first terminal event of a task is sent,
    /// and to the group (and its owner's queue) recorded at submission: the endpoint
    /// only says that there is one.
    async fn notify_groups(
        &self,
        reports: &[Report],
        applied: &[Applied],
        terminal_at: &[usize],
        grouped: &[bool],
    ) -> anyhow::Result<()> {
        let ended: Vec<usize> = terminal_at
            .iter()
            .zip(grouped)
            .filter(|&(&i, &grouped)| {
                grouped
                    && reports[i].finish.is_some()
                    && matches!(applied[i], Applied::Moved { to, .. } if to.is_terminal())
            })
            .map(|(&i, _)| i)
            .collect();
        if ended.is_empty() {
            return Ok(());
        }
        let ids: Vec<_> = ended.iter().map(|&i| reports[i].task_id).collect();
        let routes = self.store.result_routes(&ids).await?;
        let mut messages = Vec::new();
        for (i, route) in ended.into_iter().zip(routes) {
            let (Some((owner, group)), Some(finish)) = (route, &reports[i].finish) else {
                continue;
            };
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
            messages.push((self.broker.task_group_queue(owner, group), body));
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
fn result_reports(r: TaskResult, from: EndpointId) -> Vec<Report> {
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
            from: Some(from),
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
        from: Some(from),
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
            Applied::Foreign => {
                tracing::warn!(task_id = %report.task_id, %endpoint_id, "report about another endpoint's task; dead-lettering its message")
            }
        }
    }
}
