//! The endpoint's metrics, served at `/metrics` on its config's `metrics_listen`
//! (Prometheus' text format): tasks received, refused, retried, lost and finished by
//! outcome; and, as of its last heartbeat, tasks waiting for a manager and at managers,
//! managers and workers (docs/operations.md).

use ferry_proto::messages::{Completion, EndpointLoad};
use ferry_telemetry::metrics::{Counter, Family, Gauge, Registry, registry, render};
use prometheus_client::encoding::EncodeLabelSet;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The endpoint's registry and the metrics in it.
pub struct EndpointMetrics {
    registry: Registry,
    pub received: Counter,
    pub refused: Counter,
    pub retried: Counter,
    pub lost: Counter,
    finished: Family<OutcomeLabel, Counter>,
    waiting: Gauge,
    at_managers: Gauge,
    managers: Gauge,
    workers: Gauge,
    idle_workers: Gauge,
}

impl Default for EndpointMetrics {
    fn default() -> Self {
        let mut r = registry();
        let counter = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let received = counter(
            &mut r,
            "endpoint_tasks_received",
            "Tasks taken from the endpoint's queue",
        );
        let refused = counter(
            &mut r,
            "endpoint_tasks_refused",
            "Tasks failed at once without running (not allowed, unmet requirements, no environment or Python for them)",
        );
        let retried = counter(
            &mut r,
            "endpoint_tasks_retried",
            "Failed attempts run again because the task's retry policy names the failure",
        );
        let lost = counter(
            &mut r,
            "endpoint_tasks_lost",
            "Attempts lost with their worker, manager or block",
        );
        let finished = Family::<OutcomeLabel, Counter>::default();
        r.register(
            "endpoint_tasks_finished",
            "Results sent, by outcome",
            finished.clone(),
        );
        let waiting = gauge(&mut r, "endpoint_tasks_waiting", "Tasks waiting for a manager");
        let at_managers = gauge(&mut r, "endpoint_tasks_at_managers", "Tasks held by managers");
        let managers = gauge(&mut r, "endpoint_managers", "Managers connected");
        let workers = gauge(&mut r, "endpoint_workers", "Workers of the connected managers");
        let idle_workers = gauge(&mut r, "endpoint_workers_idle", "Workers with no task");
        Self {
            registry: r,
            received,
            refused,
            retried,
            lost,
            finished,
            waiting,
            at_managers,
            managers,
            workers,
            idle_workers,
        }
    }
}

impl EndpointMetrics {
    /// A result went out.
    pub fn finished(&self, completion: &Completion) {
        self.finished
            .get_or_create(&OutcomeLabel {
                outcome: completion.outcome(),
            })
            .inc();
    }

    /// The endpoint's load, as its heartbeat tells it.
    pub fn load(&self, load: &EndpointLoad) {
        self.waiting.set(i64::from(load.pending_tasks));
        self.at_managers.set(i64::from(load.outstanding_tasks));
        self.managers.set(i64::from(load.managers));
        self.workers.set(i64::from(load.total_workers));
        self.idle_workers.set(i64::from(load.idle_workers));
    }

    pub fn render(&self) -> String {
        render(&self.registry)
    }
}
