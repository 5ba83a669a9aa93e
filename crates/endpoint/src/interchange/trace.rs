//! The endpoint's hops in a task's trace (see `ferry_telemetry::trace`), one set per
//! attempt that ends here: `endpoint` (from taking the task off the queue to sending
//! its result; its ID derived from the task and attempt), and under it `wait` (until a
//! manager got it) and `run` (the worker's start to the function's end, on which host).
//! The endpoint speaks for its managers and workers: their times come in their reports.

use ferry_proto::messages::{Completion, StatusUpdate, TaskResult};
use ferry_proto::time::now_micros;
use ferry_proto::{EndpointId, EventKind};
use ferry_telemetry::trace::{self, Hop};

/// Attempt `result.attempt` of a task ended: `steps` are the endpoint's own steps of it
/// (the result's own may hold more), `host` the node whose worker ran it.
pub(super) fn attempt(endpoint: EndpointId, steps: &[StatusUpdate], result: &TaskResult, host: Option<&str>) {
    if !trace::on() {
        return;
    }
    let when = |kind: EventKind| {
        steps
            .iter()
            .chain(&result.steps)
            .find(|s| s.kind == kind && s.attempt == result.attempt)
            .map(|s| s.at)
    };
    let (received, assigned, started) = (
        when(EventKind::Received),
        when(EventKind::Assigned),
        when(EventKind::Started),
    );
    let (trace_id, task_id) = (result.task_id.0.as_u128(), result.task_id.to_string());
    let outcome = result.completion.outcome();
    let span = trace::attempt_span(trace_id, result.attempt);
    let error = match &result.completion {
        Completion::Success { .. } | Completion::SuccessByReference { .. } => None,
        Completion::Failure { traceback, .. } => Some(
            traceback
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("failed")
                .to_owned(),
        ),
        Completion::Lost { reason } | Completion::TimedOut { reason } => Some(reason.clone()),
    };
    let start = received.unwrap_or(result.finished_at);
    let mut whole = Hop::of_task("endpoint", trace_id, task_id.clone(), start, now_micros())
        .with("ferry.endpoint_id", endpoint.to_string())
        .with("ferry.attempt", i64::from(result.attempt))
        .with("ferry.outcome", outcome);
    whole.id = Some(span);
    whole.error = error.clone();
    trace::emit(whole);
    if let (Some(received), Some(assigned)) = (received, assigned) {
        let mut wait = Hop::of_task("wait", trace_id, task_id.clone(), received, assigned);
        wait.parent = Some(span);
        trace::emit(wait);
    }
    if let Some(started) = started {
        let mut run = Hop::of_task("run", trace_id, task_id, started, result.finished_at)
            .with("ferry.outcome", outcome);
        if let Some(host) = host {
            run = run.with("host.name", host.to_owned());
        }
        run.parent = Some(span);
        run.error = error;
        trace::emit(run);
    }
}
