//! `POST /v1/functions`, `GET /v1/functions/{id}`, `PUT /v1/functions/{id}/sharing`.

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use ferry_proto::api::{FunctionDoc, FunctionRegistered, RegisterFunction, Sharing};
use ferry_proto::messages::FunctionKind;
use ferry_proto::time::{now_micros, to_secs};
use ferry_proto::{FunctionId, UserId};
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
    crate::access::existing_users(&state, "shared_with", &body.shared_with).await?;
    let record = FunctionRecord {
        function_id: FunctionId::new(),
        owner: user,
        name: body.name,
        kind,
        code: Bytes::from(body.code),
        description: body.description,
        created_at: now_micros(),
        public: body.public,
        shared_with: dedup(body.shared_with),
    };
    state.store.put_function(&record).await?;
    tracing::info!(function_id = %record.function_id, kind = kind.wire_name(), public = record.public, "function registered");
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
    Ok(Json(function_doc(&f, user)))
}

/// `PUT /v1/functions/{id}/sharing`: its owner says who else may run it.
pub(crate) async fn share(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    FerryJson(body): FerryJson<Sharing>,
) -> ApiResult<Json<FunctionDoc>> {
    let id: FunctionId = parse_id(&id)?;
    crate::access::owned_function(&state, user, id).await?;
    crate::access::existing_users(&state, "shared_with", &body.shared_with).await?;
    let shared_with = dedup(body.shared_with);
    state
        .store
        .set_function_sharing(id, body.public, &shared_with)
        .await?;
    state.forget_function(id);
    tracing::info!(function_id = %id, public = body.public, users = shared_with.len(), "function sharing set");
    let f = crate::access::owned_function(&state, user, id).await?;
    Ok(Json(function_doc(&f, user)))
}

/// A function as `user` sees it: who else may run it is its owner's to know.
pub(crate) fn function_doc(f: &FunctionRecord, user: UserId) -> FunctionDoc {
    FunctionDoc {
        function_id: f.function_id,
        name: f.name.clone(),
        kind: f.kind.wire_name().to_owned(),
        description: f.description.clone(),
        created_at: to_secs(f.created_at),
        owner: f.owner,
        public: f.public,
        shared_with: (f.owner == user).then(|| f.shared_with.clone()),
    }
}

/// Each user once, in the order given.
pub(crate) fn dedup(mut users: Vec<UserId>) -> Vec<UserId> {
    let mut seen = std::collections::HashSet::new();
    users.retain(|u| seen.insert(*u));
    users
}
