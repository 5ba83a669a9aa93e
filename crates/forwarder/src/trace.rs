//! The forwarder's hops in a task's trace (see `ferry_telemetry::trace`): `dispatch`
//! (a submission taken to its endpoint's queue), `record` (a result written), and the
//! task's root span `task`, from its submission (its ID holds the time) to the
//! recording of its result.

use ferry_proto::messages::TaskSpec;
use ferry_proto::time::{Micros, now_micros};
use ferry_proto::{EndpointId, TaskId, TaskState};
use ferry_store::{Applied, Report};
use ferry_telemetry::trace::{self, Hop};

/// A submission's tasks went to `endpoint`'s queue: taken at `start`, published now.
pub(crate) fn dispatched(tasks: &[TaskSpec], endpoint: EndpointId, start: Micros) {
    if !trace::on() {
        return;
    }
    let end = now_micros();
    let endpoint = endpoint.to_string();
    for task in tasks {
        let mut hop = Hop::of_task(
            "dispatch",
            task.task_id.0.as_u128(),
            task.task_id.to_string(),
            start,
            end,
        )
        .with("ferry.endpoint_id", endpoint.clone())
        .with("ferry.attempt", i64::from(task.attempt));
        if let Some(session) = task.session {
            hop = hop.with("ferry.session_id", session.to_string());
        }
        trace::emit(hop);
    }
}

/// The results among `reports` (their terminal reports at `terminal_at`) were applied
/// as `applied` says: the message came at `start`. Each result recorded gets its
/// `record` span, and its task, now finished, the root span.
pub(crate) fn recorded(reports: &[Report], applied: &[Applied], terminal_at: &[usize], start: Micros) {
    if !trace::on() {
        return;
    }
    let end = now_micros();
    for &i in terminal_at {
        let (report, Applied::Moved { to, attempt, .. }) = (&reports[i], &applied[i]) else {
            continue;
        };
        let task_id: TaskId = report.task_id;
        let trace_id = task_id.0.as_u128();
        let state = to.wire_name();
        let endpoint = report.from.map(|e| e.to_string()).unwrap_or_default();
        trace::emit(
            Hop::of_task("record", trace_id, task_id.to_string(), start, end)
                .with("ferry.state", state)
                .with("ferry.attempt", i64::from(*attempt)),
        );
        if !to.is_terminal() {
            continue;
        }
        let submitted = task_id.created_micros().unwrap_or(start).min(start);
        let mut root = Hop::of_task("task", trace_id, task_id.to_string(), submitted, end)
            .with("ferry.endpoint_id", endpoint)
            .with("ferry.state", state)
            .with("ferry.attempts", i64::from(*attempt) + 1);
        root.parent = None;
        root.id = Some(trace::root_span(trace_id));
        if *to != TaskState::Success {
            root.error = Some(format!("the task ended {state}"));
        }
        trace::emit(root);
    }
}
