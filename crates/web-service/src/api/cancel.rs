//! `POST /v1/tasks/{id}/cancel` and `POST /v1/batches/{id}/cancel`.
//!
//! Cancelling ends a task as `failed` with the cause `cancelled`, through the state
//! machine like any other event: a task that already finished is left alone. Then the
//! endpoint is told (on its control queue) to stop the tasks: a running one is killed,
//! one still queued is dropped when it arrives. The cancel is stored in Redis first and
//! taken off once RabbitMQ confirmed it: one RabbitMQ did not take (a memory or disk
//! alarm, a full control queue, a web-service that died) is published by the
//! forwarder's sweeper once it does. The answer does not wait for that.

use axum::Json;
use axum::extract::{Path, State};
use ferry_proto::api::TaskDoc;
use ferry_proto::time::now_micros;
use ferry_proto::{Actor, BatchId, EndpointId, Event, EventKind, TaskId};
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
        from: None,
        finish: None,
    }
}

/// Tells the endpoint to stop the tasks (running ones are killed, queued ones dropped):
/// stored in Redis, then published, then taken off once RabbitMQ confirmed it. When
/// RabbitMQ does not take it now, it stays stored and the forwarder's sweeper publishes
/// it later; the caller's answer does not change.
async fn stop_on_endpoint(state: &AppState, endpoint: EndpointId, task_ids: Vec<TaskId>) -> ApiResult<()> {
    if task_ids.is_empty() {
        return Ok(());
    }
    state
        .store
        .add_pending_cancels(endpoint, &task_ids, now_micros())
        .await?;
    let ids = &task_ids;
    match state
        .with_broker(|b| async move { b.cancel_tasks(endpoint, ids.clone()).await })
        .await
    {
        Ok(()) => state.store.pending_cancels_done(endpoint, &task_ids).await?,
        Err(e) => {
            tracing::warn!(%endpoint, tasks = task_ids.len(), error = %e, "RabbitMQ did not take the cancel now: it is kept, and the forwarder publishes it once RabbitMQ does");
        }
    }
    Ok(())
}

pub(crate) async fn task(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskDoc>> {
    let id: TaskId = parse_id(&id)?;
    let endpoint = match state.store.get_task(id).await? {
        Some(t) if t.owner == user => t.endpoint_id,
        _ => return Err(ApiError::not_found(format!("task {id} not found"))),
    };
    let applied = state.store.apply(&[cancel_report(id, now_micros())]).await?;
    if matches!(applied[0], Applied::Moved { .. }) {
        tracing::info!(task_id = %id, "task cancelled");
        stop_on_endpoint(&state, endpoint, vec![id]).await?;
    }
    let record = state
        .store
        .get_task(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
    Ok(Json(super::task_doc(record)))
}

pub(crate) async fn batch(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: BatchId = parse_id(&id)?;
    let (endpoint, task_ids) = match state.store.get_batch(id).await? {
        Some((b, ids)) if b.owner == user => (b.endpoint_id, ids),
        _ => return Err(ApiError::not_found(format!("batch {id} not found"))),
    };
    let at = now_micros();
    state.store.mark_batch_cancelled(id, at).await?;
    let mut cancelled = 0;
    for chunk in task_ids.chunks(10_000) {
        let reports: Vec<Report> = chunk.iter().map(|t| cancel_report(*t, at)).collect();
        let applied = state.store.apply(&reports).await?;
        let moved: Vec<TaskId> = chunk
            .iter()
            .zip(&applied)
            .filter(|(_, a)| matches!(a, Applied::Moved { .. }))
            .map(|(t, _)| *t)
            .collect();
        cancelled += moved.len();
        stop_on_endpoint(&state, endpoint, moved).await?;
    }
    tracing::info!(batch_id = %id, cancelled, "batch cancelled");
    Ok(Json(
        json!({"batch_id": id, "cancelled": cancelled, "size": task_ids.len()}),
    ))
}
