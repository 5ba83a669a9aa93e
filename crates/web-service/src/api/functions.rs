//! `POST /v1/functions`, `GET /v1/functions/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use ferry_proto::FunctionId;
use ferry_proto::api::{FunctionDoc, FunctionRegistered, RegisterFunction};
use ferry_proto::messages::FunctionKind;
use ferry_proto::time::{now_micros, to_secs};
use ferry_store::FunctionRecord;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, FerryJson, parse_id};

pub(crate) async fn register(
    State(state): State<AppState>,
    Caller(user): Caller,
    FerryJson(body): FerryJson<RegisterFunction>,
) -> ApiResult<Json<FunctionRegistered>> {
    let kind = FunctionKind::from_wire_name(&body.kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "kind must be \"python\" or \"shell\", not {:?}",
            body.kind
        ))
    })?;
    if body.code.is_empty() {
        return Err(ApiError::bad_request("code is empty"));
    }
    if body.name.len() > 256 {
        return Err(ApiError::bad_request("name is longer than 256 bytes"));
    }
    let record = FunctionRecord {
        function_id: FunctionId::new(),
        owner: user,
        name: body.name,
        kind,
        code: Bytes::from(body.code),
        description: body.description,
        created_at: now_micros(),
    };
    state.store.put_function(&record).await?;
    tracing::info!(function_id = %record.function_id, kind = kind.wire_name(), "function registered");
    Ok(Json(FunctionRegistered {
        function_id: record.function_id,
    }))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<FunctionDoc>> {
    let id: FunctionId = parse_id(&id)?;
    let f = crate::access::visible_function(&state, user, id).await?;
    Ok(Json(FunctionDoc {
        function_id: f.function_id,
        name: f.name.clone(),
        kind: f.kind.wire_name().to_owned(),
        description: f.description.clone(),
        created_at: to_secs(f.created_at),
    }))
}
