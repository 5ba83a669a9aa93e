//! `POST /v3/functions`, `GET /v2/functions/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use ferry_proto::FunctionId;
use ferry_proto::messages::FunctionKind;
use ferry_proto::time::now_micros;
use ferry_store::FunctionRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Caller, FerryJson, parse_id};

/// The registration body the SDK sends. Unknown fields are tolerated (newer SDKs add
/// some); those Ferry knows are typed. `public` makes the function runnable by anyone;
/// `group` (a Globus group) has no Ferry counterpart: share with users through
/// `PUT /v1/functions/{id}/sharing`.
#[derive(Deserialize)]
pub(crate) struct RegisterFunction {
    function_name: String,
    function_code: String,
    #[serde(default = "yes")]
    serialized: bool,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    public: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    group: Option<uuid::Uuid>,
}

fn yes() -> bool {
    true
}

pub(crate) async fn register(
    State(state): State<AppState>,
    Caller(user): Caller,
    FerryJson(body): FerryJson<RegisterFunction>,
) -> ApiResult<Json<Value>> {
    crate::api::functions::check_sizes(
        &state,
        ["function_name", "function_code", "description"],
        &body.function_name,
        &body.function_code,
        body.description.as_deref(),
    )?;
    // Raw source (`register_source_code`) becomes the one form an endpoint can run:
    // a packed `st` buffer, `name:source`.
    let code = if body.serialized {
        body.function_code
    } else {
        let buffer = format!("st\n{}:{}", body.function_name, body.function_code);
        format!("{}\n{buffer}", buffer.chars().count())
    };
    let record = FunctionRecord {
        function_id: FunctionId::new(),
        owner: user,
        name: body.function_name,
        kind: FunctionKind::Python,
        code: Bytes::from(code),
        description: body.description,
        created_at: now_micros(),
        public: body.public.unwrap_or(false),
        shared_with: Vec::new(),
    };
    state.store.put_function(&record).await?;
    tracing::info!(function_id = %record.function_id, "function registered (globus compute API)");
    Ok(Json(json!({"function_uuid": record.function_id})))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: FunctionId = parse_id(&id)?;
    let f = crate::access::visible_function(&state, user, id).await?;
    Ok(Json(json!({
        "function_uuid": f.function_id,
        "function_name": f.name,
        "function_code": String::from_utf8_lossy(&f.code),
        "description": f.description,
        "metadata": {"kind": f.kind.wire_name()},
    })))
}
