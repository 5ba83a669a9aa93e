//! `POST /v1/tasks/{id}/cancel` and `POST /v1/batches/{id}/cancel`.
//!
//! Cancelling ends a task as `failed` with the cause `cancelled`, through the state
//! machine like any other event: a task that already finished is left alone. A task
//! already running on an endpoint runs on, and its result is discarded.

use axum::Json;
use axum::extract::{Path, State};
use ferry_proto::api::TaskDoc;
use ferry_proto::time::now_micros;
use ferry_proto::{Actor, BatchId, Event, EventKind, TaskId};
use ferry_store::{Applied, Report};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, parse_id};

fn cancel_report(task_id: TaskId, at: u64) -> Report {
    Report {
        task_id,
        event: Event {
            kind: EventKind::Cancelled,
            attempt: 0,
        },
        at,
        by: Actor::User,
        finish: None,
    }
}

pub(crate) async fn task(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskDoc>> {
    let id: TaskId = parse_id(&id)?;
    match state.store.get_task(id).await? {
        Some(t) if t.owner == user => {}
        _ => return Err(ApiError::not_found(format!("task {id} not found"))),
    }
    state.store.apply(&[cancel_report(id, now_micros())]).await?;
    tracing::info!(task_id = %id, "task cancelled");
    let record = state
        .store
        .get_task(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
    Ok(Json(super::task_doc(&record)))
}

pub(crate) async fn batch(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: BatchId = parse_id(&id)?;
    let task_ids = match state.store.get_batch(id).await? {
        Some((b, ids)) if b.owner == user => ids,
        _ => return Err(ApiError::not_found(format!("batch {id} not found"))),
    };
    let at = now_micros();
    state.store.mark_batch_cancelled(id, at).await?;
    let mut cancelled = 0;
    for chunk in task_ids.chunks(10_000) {
        let reports: Vec<Report> = chunk.iter().map(|t| cancel_report(*t, at)).collect();
        let applied = state.store.apply(&reports).await?;
        cancelled += applied
            .iter()
            .filter(|a| matches!(a, Applied::Moved { .. }))
            .count();
    }
    tracing::info!(batch_id = %id, cancelled, "batch cancelled");
    Ok(Json(
        json!({"batch_id": id, "cancelled": cancelled, "size": task_ids.len()}),
    ))
}
