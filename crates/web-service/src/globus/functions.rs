//! `POST /v3/functions`, `GET /v2/functions/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use bytes::Bytes;
use ferry_proto::FunctionId;
use ferry_proto::messages::FunctionKind;
use ferry_proto::time::now_micros;
use ferry_store::FunctionRecord;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, FerryJson, parse_id};

/// The registration body the SDK sends (`FunctionRegistrationData.to_dict()`). Every
/// field is typed and no other is taken (a 400 names it). `meta` (the client's Python and
/// SDK versions) is checked; its `python_version` is kept for code serialized as
/// bytecode, which runs only on workers of that Python major.minor. `public` makes the function runnable by anyone;
/// `group` (a Globus group) has no Ferry counterpart, so the function stays private:
/// share it with users through `PUT /v1/functions/{id}/sharing`. `ha_endpoint_id`
/// (high-assurance functions) is refused: Ferry cannot keep the promise it makes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GlobusRegisterFunction)]
pub(crate) struct RegisterFunction {
    function_name: String,
    /// A packed serialized function, or Python source with `serialized: false`.
    function_code: String,
    #[serde(default = "yes")]
    serialized: bool,
    /// Versions of the client: string values, at most 32 of them.
    #[serde(default)]
    meta: Option<BTreeMap<String, Option<String>>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    public: Option<bool>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    #[allow(
        dead_code,
        reason = "typed and checked; a Globus group has no Ferry counterpart"
    )]
    group: Option<uuid::Uuid>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    ha_endpoint_id: Option<uuid::Uuid>,
}

/// `meta` entries at most, and bytes per entry.
const MAX_META_ENTRIES: usize = 32;
const MAX_META_BYTES: usize = 256;

/// The answer to a registration.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = GlobusFunctionRegistered)]
pub(crate) struct FunctionRegistered {
    #[schema(value_type = String, format = Uuid)]
    function_uuid: FunctionId,
}

fn yes() -> bool {
    true
}

pub(crate) async fn register(
    State(state): State<AppState>,
    Caller(user): Caller,
    FerryJson(body): FerryJson<RegisterFunction>,
) -> ApiResult<Json<FunctionRegistered>> {
    crate::api::functions::check_sizes(
        &state,
        ["function_name", "function_code", "description"],
        &body.function_name,
        &body.function_code,
        body.description.as_deref(),
    )?;
    if let Some(meta) = &body.meta {
        if meta.len() > MAX_META_ENTRIES {
            return Err(ApiError::bad_request(format!(
                "meta has {} entries; at most {MAX_META_ENTRIES} are taken",
                meta.len()
            )));
        }
        if let Some((key, _)) = meta
            .iter()
            .find(|(k, v)| k.len() > MAX_META_BYTES || v.as_ref().is_some_and(|v| v.len() > MAX_META_BYTES))
        {
            return Err(ApiError::bad_request(format!(
                "meta.{}: a key or value is longer than {MAX_META_BYTES} bytes",
                key.chars().take(40).collect::<String>()
            )));
        }
    }
    if body.ha_endpoint_id.is_some() {
        return Err(ApiError::bad_request(
            "ha_endpoint_id: high-assurance functions are not supported by Ferry; register the \
             function without it (restrict where it runs with the endpoint's allowed_functions)",
        ));
    }
    // Raw source (`register_source_code`) becomes the one form an endpoint can run:
    // a packed `st` buffer, `name:source`.
    let code = if body.serialized {
        body.function_code
    } else {
        let buffer = format!("st\n{}:{}", body.function_name, body.function_code);
        format!("{}\n{buffer}", buffer.chars().count())
    };
    let client_python = body
        .meta
        .as_ref()
        .and_then(|m| m.get("python_version").cloned().flatten());
    let python = crate::api::functions::bound_python(
        "meta.python_version",
        FunctionKind::Python,
        &code,
        client_python.as_deref(),
    )?;
    let record = FunctionRecord {
        function_id: FunctionId::new(),
        owner: user,
        name: body.function_name,
        kind: FunctionKind::Python,
        python,
        code: Bytes::from(code),
        description: body.description,
        created_at: now_micros(),
        public: body.public.unwrap_or(false),
        shared_with: Vec::new(),
    };
    state.store.put_function(&record).await?;
    tracing::info!(function_id = %record.function_id, "function registered (globus compute API)");
    Ok(Json(FunctionRegistered {
        function_uuid: record.function_id,
    }))
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
