//! `POST /v1/tasks` (submit one task or a batch), `GET /v1/tasks/{id}`,
//! `POST /v1/tasks/status`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use ferry_proto::TaskId;
use ferry_proto::api::{HistoryEntry, StatusRequest, StatusResponse, SubmitRequest, SubmitResponse, TaskDoc};
use ferry_proto::time::to_secs;
use ferry_store::TaskRecord;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, FerryJson, parse_id};
use crate::submit::{Submission, Submitted};

/// Most ids in one status request.
const MAX_STATUS_IDS: usize = 10_000;

/// `POST /v1/tasks`: see [`crate::submit::accept`].
pub(crate) async fn submit(
    State(state): State<AppState>,
    Caller(user): Caller,
    FerryJson(body): FerryJson<SubmitRequest>,
) -> ApiResult<Json<SubmitResponse>> {
    let submission = submission(body, "")?;
    let (batch_id, task_ids) = crate::submit::accept(&state, user, submission).await?;
    Ok(Json(SubmitResponse { batch_id, task_ids }))
}

/// Checks a request's numbers and turns it into a [`Submission`]; `at` prefixes the
/// field names in errors (`sessions[2].`).
pub(crate) fn submission(body: SubmitRequest, at: &str) -> ApiResult<Submission> {
    let mut tasks = Vec::with_capacity(body.tasks.len());
    for (i, t) in body.tasks.into_iter().enumerate() {
        let walltime_ms = positive_ms(t.walltime_secs, || format!("{at}tasks[{i}].walltime_secs"))?;
        tasks.push(Submitted {
            function_id: t.function_id,
            payload: Bytes::from(t.payload),
            max_retries: t.max_retries,
            walltime_ms,
        });
    }
    Ok(Submission {
        endpoint_id: body.endpoint_id,
        tasks,
        task_group: None,
        result_queue: false,
        timeout_ms: positive_ms(body.timeout_secs, || format!("{at}timeout_secs"))?,
    })
}

/// Seconds as milliseconds, if they are more than 0 and at most 30 days.
fn positive_ms(secs: Option<f64>, field: impl Fn() -> String) -> ApiResult<Option<u64>> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= 30.0 * 86_400.0 => Ok(Some((s * 1000.0).ceil() as u64)),
        Some(s) => Err(ApiError::bad_request(format!(
            "{} is {s}; it must be more than 0 and at most 30 days",
            field()
        ))),
    }
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskDoc>> {
    let id: TaskId = parse_id(&id)?;
    match state.store.get_task(id).await? {
        Some(t) if t.owner == user => Ok(Json(task_doc(&t))),
        _ => Err(ApiError::not_found(format!("task {id} not found"))),
    }
}

pub(crate) async fn status(
    State(state): State<AppState>,
    Caller(user): Caller,
    FerryJson(body): FerryJson<StatusRequest>,
) -> ApiResult<Json<StatusResponse>> {
    if body.task_ids.len() > MAX_STATUS_IDS {
        return Err(ApiError::bad_request(format!(
            "{} task ids in one request; the limit is {MAX_STATUS_IDS}",
            body.task_ids.len()
        )));
    }
    let records = state.store.get_tasks(&body.task_ids).await?;
    let mut tasks = BTreeMap::new();
    let mut unknown = Vec::new();
    for (id, record) in body.task_ids.iter().zip(records) {
        match record {
            Some(t) if t.owner == user => {
                tasks.insert(*id, task_doc(&t));
            }
            _ => unknown.push(*id),
        }
    }
    Ok(Json(StatusResponse { tasks, unknown }))
}

/// The API view of a task record.
pub fn task_doc(t: &TaskRecord) -> TaskDoc {
    let terminal = t.state.is_terminal();
    TaskDoc {
        task_id: t.task_id,
        pending: !terminal,
        status: t.state.wire_name().to_owned(),
        attempt: t.attempt,
        function_id: t.function_id,
        endpoint_id: t.endpoint_id,
        batch_id: t.batch_id,
        created_at: to_secs(t.created_at),
        result: t.result.clone(),
        exception: match (&t.traceback, t.cause) {
            (Some(tb), _) => Some(tb.clone()),
            (None, Some(cause)) if terminal => Some(format!("task failed: {}", cause.wire_name())),
            _ => None,
        },
        exception_data: t.exception.clone(),
        completion_t: t.completed_at.map(|at| format!("{:.6}", to_secs(at))),
        last_seen: t.last_seen.map(to_secs),
        stdout: t.stdout.clone(),
        stderr: t.stderr.clone(),
        history: t
            .history
            .iter()
            .map(|h| HistoryEntry {
                state: h.state.wire_name().to_owned(),
                attempt: h.attempt,
                at: to_secs(h.at),
                by: h.by.wire_name().to_owned(),
                reason: h.cause.map(|c| c.wire_name().to_owned()),
            })
            .collect(),
    }
}
