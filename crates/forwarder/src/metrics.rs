//! The forwarder's metrics, served at `/metrics` on `--metrics-listen` (Prometheus' text
//! format): transitions by the state a task entered, reports that changed nothing,
//! heartbeats, endpoints declared lost, dead letters by why, how long tasks waited and ran,
//! and the messages waiting in its queues (docs/operations.md).

use ferry_proto::messages::TaskResult;
use ferry_proto::{EventKind, TaskState};
use ferry_telemetry::metrics::{
    Counter, Family, Gauge, Histogram, Registry, duration_buckets, registry, render,
};
use prometheus_client::encoding::EncodeLabelSet;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why the forwarder dead-lettered an endpoint message.
#[derive(Debug, Clone, Copy)]
pub enum DeadLetter {
    /// It could not be decoded.
    Malformed,
    /// It came from another broker user than the endpoint it names.
    Forged,
    /// It reported on another endpoint's tasks.
    Foreign,
}

/// The forwarder's registry and the metrics in it.
pub struct ForwarderMetrics {
    registry: Registry,
    transitions: Family<StateLabel, Counter>,
    ignored: Counter,
    pub heartbeats: Counter,
    pub endpoints_lost: Counter,
    dead_letters: Family<ReasonLabel, Counter>,
    run_seconds: Histogram,
    wait_seconds: Histogram,
    queues: Family<QueueLabel, Gauge>,
}

impl Default for ForwarderMetrics {
    fn default() -> Self {
        let mut registry = registry();
        let transitions = Family::<StateLabel, Counter>::default();
        registry.register(
            "task_transitions",
            "Task records moved, by the state entered",
            transitions.clone(),
        );
        let ignored = Counter::default();
        registry.register(
            "task_reports_ignored",
            "Reports that changed no record (a late copy, an old attempt, a task gone)",
            ignored.clone(),
        );
        let heartbeats = Counter::default();
        registry.register(
            "endpoint_heartbeats",
            "Endpoint heartbeats received",
            heartbeats.clone(),
        );
        let endpoints_lost = Counter::default();
        registry.register(
            "endpoints_lost",
            "Endpoints declared lost for missing their heartbeats (or stopped cleanly)",
            endpoints_lost.clone(),
        );
        let dead_letters = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dead_letters",
            "Endpoint messages dead-lettered, by why",
            dead_letters.clone(),
        );
        let run_seconds = Histogram::new(duration_buckets());
        registry.register(
            "task_run_seconds",
            "How long tasks ran, from their start to their result",
            run_seconds.clone(),
        );
        let wait_seconds = Histogram::new(duration_buckets());
        registry.register(
            "task_wait_seconds",
            "How long tasks waited, from their submission to their start on a worker",
            wait_seconds.clone(),
        );
        let queues = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "queue_messages",
            "Messages waiting in the forwarder's queues (submissions, status, results, dead), as of the last look",
            queues.clone(),
        );
        Self {
            registry,
            transitions,
            ignored,
            heartbeats,
            endpoints_lost,
            dead_letters,
            run_seconds,
            wait_seconds,
            queues,
        }
    }
}

impl ForwarderMetrics {
    /// A task's record moved to `to`.
    pub fn moved(&self, to: TaskState) {
        self.transitions
            .get_or_create(&StateLabel {
                state: to.wire_name(),
            })
            .inc();
    }

    /// A report changed nothing.
    pub fn ignored(&self) {
        self.ignored.inc();
    }

    pub fn dead_letter(&self, why: DeadLetter) {
        let reason = match why {
            DeadLetter::Malformed => "malformed",
            DeadLetter::Forged => "forged",
            DeadLetter::Foreign => "foreign",
        };
        self.dead_letters.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A result came: how long its task waited (from its submission, which its ID
    /// dates) and ran, when its start is among its steps.
    pub fn result(&self, result: &TaskResult) {
        if let Some(started) = result.steps.iter().find(|s| s.kind == EventKind::Started) {
            let micros = result.finished_at.saturating_sub(started.at);
            self.run_seconds.observe(micros as f64 / 1e6);
            if let Some(submitted) = result.task_id.created_micros() {
                self.wait_seconds
                    .observe(started.at.saturating_sub(submitted) as f64 / 1e6);
            }
        }
    }

    /// `queue` (`submissions`, `status`, `results`, `dead`) holds `messages`.
    pub fn queue(&self, queue: &'static str, messages: u32) {
        self.queues
            .get_or_create(&QueueLabel { queue })
            .set(i64::from(messages));
    }

    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

/// How often the queues' depths are looked at.
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Looks at the depth of the forwarder's queues every [`LOOK_EVERY`] (a passive declare
/// each), for ever; a look that fails is logged and tried again at the next.
pub async fn watch_queues(
    broker: ferry_broker::Broker,
    metrics: std::sync::Arc<ForwarderMetrics>,
) -> anyhow::Result<()> {
    let queues = [
        ("submissions", broker.submissions_queue()),
        ("status", broker.status_queue()),
        ("results", broker.results_queue()),
        ("dead", broker.dead_queue()),
    ];
    let mut every = tokio::time::interval(LOOK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for (name, queue) in &queues {
            match broker.queue_len(queue).await {
                Ok(n) => metrics.queue(name, n),
                Err(e) => tracing::debug!(queue, error = %e, "cannot look at a queue's depth"),
            }
        }
    }
}
