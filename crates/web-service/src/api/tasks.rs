//! `POST /v1/tasks` (submit one task or a batch), `GET /v1/tasks/{id}`,
//! `POST /v1/tasks/status`.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use ferry_proto::api::{HistoryEntry, StatusRequest, StatusResponse, SubmitRequest, SubmitResponse, TaskDoc};
use ferry_proto::messages::{FunctionCode, FunctionKind, TaskBatch, TaskSpec};
use ferry_proto::time::{now_micros, to_secs};
use ferry_proto::{Actor, BatchId, Event, EventKind, FunctionId, TaskId};
use ferry_store::{BatchRecord, Finish, NewTask, Report, TaskRecord};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, FerryJson, parse_id};

/// Tasks per AMQP message on the submissions queue.
const TASKS_PER_MESSAGE: usize = 1000;

/// Most ids in one status request.
const MAX_STATUS_IDS: usize = 10_000;

/// Validates everything, writes every task as `received` in one round trip, publishes
/// them (confirmed), and only then answers with their ids: a returned id is a task that
/// will reach a terminal state.
#[tracing::instrument(skip_all, fields(user = %user, endpoint_id = %body.endpoint_id, tasks = body.tasks.len()))]
pub(crate) async fn submit(
    State(state): State<AppState>,
    Caller(user): Caller,
    FerryJson(body): FerryJson<SubmitRequest>,
) -> ApiResult<Json<SubmitResponse>> {
    if body.tasks.is_empty() {
        return Err(ApiError::bad_request("tasks is empty: submit at least one task"));
    }
    if body.tasks.len() > state.config.max_batch {
        return Err(ApiError::bad_request(format!(
            "{} tasks in one request; the limit is {}",
            body.tasks.len(),
            state.config.max_batch
        )));
    }
    let endpoint = super::endpoints::owned_endpoint(&state, user, body.endpoint_id).await?;

    let mut functions: HashMap<FunctionId, FunctionCode> = HashMap::new();
    for (i, task) in body.tasks.iter().enumerate() {
        if !functions.contains_key(&task.function_id) {
            let f = super::functions::visible_function(&state, user, task.function_id).await?;
            functions.insert(
                f.function_id,
                FunctionCode {
                    function_id: f.function_id,
                    kind: f.kind,
                    code: f.code.clone(),
                },
            );
        }
        if functions[&task.function_id].kind == FunctionKind::Shell && !task.payload.is_empty() {
            let value: serde_json::Value = serde_json::from_str(&task.payload).map_err(|e| {
                ApiError::bad_request(format!(
                    "tasks[{i}].payload: a shell task takes a JSON object of named values: {e}"
                ))
            })?;
            if !value.is_object() {
                return Err(ApiError::bad_request(format!(
                    "tasks[{i}].payload: a shell task takes a JSON object of named values"
                )));
            }
        }
    }

    let batch = BatchRecord {
        batch_id: BatchId::new(),
        owner: user,
        endpoint_id: endpoint.endpoint_id,
        size: body.tasks.len() as u64,
        created_at: now_micros(),
    };
    let specs: Vec<TaskSpec> = body
        .tasks
        .into_iter()
        .map(|t| TaskSpec {
            task_id: TaskId::new(),
            function_id: t.function_id,
            attempt: 0,
            max_retries: t.max_retries.unwrap_or(state.config.default_max_retries),
            payload: Bytes::from(t.payload),
        })
        .collect();
    let new_tasks: Vec<NewTask> = specs
        .iter()
        .map(|s| NewTask {
            task_id: s.task_id,
            function_id: s.function_id,
            max_retries: s.max_retries,
        })
        .collect();
    state
        .store
        .create_tasks(&batch, &new_tasks, Actor::WebService)
        .await?;

    let mut messages = Vec::with_capacity(specs.len().div_ceil(TASKS_PER_MESSAGE));
    for chunk in specs.chunks(TASKS_PER_MESSAGE) {
        let mut used: Vec<FunctionCode> = Vec::new();
        for spec in chunk {
            if !used.iter().any(|f| f.function_id == spec.function_id) {
                used.push(functions[&spec.function_id].clone());
            }
        }
        let message = TaskBatch {
            endpoint_id: endpoint.endpoint_id,
            functions: used,
            tasks: chunk.to_vec(),
        };
        messages.push(
            ferry_proto::codec::encode(&message).map_err(|e| ApiError::unavailable("cannot encode", e))?,
        );
    }
    let queue = state.broker.submissions_queue();
    if let Err(e) = state
        .broker
        .publish_many(&queue, messages.iter().map(Vec::as_slice))
        .await
    {
        // The records exist but the tasks never reached the queue: fail them so nothing
        // waits forever, and do not hand out their ids.
        fail_unqueued(&state, &specs).await;
        return Err(ApiError::unavailable("the broker is unavailable", e));
    }
    tracing::debug!(batch_id = %batch.batch_id, "tasks submitted");
    Ok(Json(SubmitResponse {
        batch_id: batch.batch_id,
        task_ids: specs.iter().map(|s| s.task_id).collect(),
    }))
}

async fn fail_unqueued(state: &AppState, specs: &[TaskSpec]) {
    let at = now_micros();
    let reports: Vec<Report> = specs
        .iter()
        .map(|s| Report {
            task_id: s.task_id,
            event: Event {
                kind: EventKind::Failed,
                attempt: 0,
            },
            at,
            by: Actor::WebService,
            finish: Some(Finish {
                success: false,
                data: Bytes::from_static(b"the task could not be queued: the broker was unavailable"),
                exception: Bytes::new(),
                stdout: String::new(),
                stderr: String::new(),
            }),
        })
        .collect();
    if let Err(e) = state.store.apply(&reports).await {
        tracing::error!(error = %e, "could not fail tasks that were never queued");
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
