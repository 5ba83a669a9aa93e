//! `GET /v1/batches/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use ferry_proto::BatchId;
use ferry_proto::api::BatchDoc;
use ferry_proto::time::to_secs;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, parse_id};

pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<BatchDoc>> {
    let id: BatchId = parse_id(&id)?;
    match state.store.get_batch(id).await? {
        Some((b, task_ids)) if b.owner == user => Ok(Json(BatchDoc {
            batch_id: b.batch_id,
            endpoint_id: b.endpoint_id,
            size: b.size,
            created_at: to_secs(b.created_at),
            task_ids,
        })),
        _ => Err(ApiError::not_found(format!("batch {id} not found"))),
    }
}
