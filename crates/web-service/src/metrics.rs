//! The web-service's metrics, served at `GET /metrics` (Prometheus' text format, no
//! token: counts only, nothing of any user's): requests by method, route and status and
//! how long they took, the tasks and sessions accepted, and the tasks in each unfinished
//! state (read from the store when scraped) (docs/operations.md).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_proto::TaskState;
use ferry_telemetry::metrics::{
    Counter, Family, Gauge, Histogram, Registry, duration_buckets, registry, render,
};
use prometheus_client::encoding::EncodeLabelSet;

use crate::AppState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route as declared (`/v1/tasks/{task_id}`), so ids do not make new series.
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

type Histograms = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The web-service's registry and the metrics in it.
pub struct WebMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms,
    /// Tasks accepted (each submission's tasks, once committed).
    pub tasks_accepted: Counter,
    /// Sessions (batches) accepted.
    pub sessions_accepted: Counter,
    /// Tasks in each unfinished state, all users together (set when scraped).
    tasks: Family<StateLabel, Gauge>,
}

impl Default for WebMetrics {
    fn default() -> Self {
        let mut registry = registry();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        let latency: Histograms = Family::new_with_constructor(|| Histogram::new(duration_buckets()));
        registry.register(
            "http_request_duration_seconds",
            "How long HTTP requests took to answer, by route",
            latency.clone(),
        );
        let tasks_accepted = Counter::default();
        registry.register("tasks_accepted", "Tasks accepted", tasks_accepted.clone());
        let sessions_accepted = Counter::default();
        registry.register(
            "sessions_accepted",
            "Sessions (batches of tasks) accepted",
            sessions_accepted.clone(),
        );
        let tasks = Family::<StateLabel, Gauge>::default();
        registry.register(
            "tasks",
            "Tasks in each unfinished state, all users and endpoints together",
            tasks.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            tasks_accepted,
            sessions_accepted,
            tasks,
        }
    }
}

impl std::fmt::Debug for WebMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebMetrics").finish_non_exhaustive()
    }
}

/// Counts every request and times it, by the route it matched (`unmatched` for none).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let m = &state.metrics;
    let labels = RequestLabels {
        method,
        route: route.clone(),
        status: response.status().as_u16(),
    };
    m.requests.get_or_create(&labels).inc();
    m.latency
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: the tasks per state read from the store first (left as they were,
/// with a warning, when it cannot be read).
pub async fn serve(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.tasks_in_flight().await {
        Ok(counts) => {
            for (code, n) in counts.into_iter().enumerate() {
                if let Some(s) = TaskState::from_code(code as u8) {
                    let label = StateLabel { state: s.wire_name() };
                    state.metrics.tasks.get_or_create(&label).set(n as i64);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the tasks per state"),
    }
    (
        [(header::CONTENT_TYPE, ferry_telemetry::metrics::CONTENT_TYPE)],
        render(&state.metrics.registry),
    )
}
