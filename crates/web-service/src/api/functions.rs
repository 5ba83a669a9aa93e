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
            "kind must be \"python\", \"shell\" or \"application\", not {:?}",
            body.kind
        ))
    })?;
    check_sizes(
        &state,
        ["name", "code", "description"],
        &body.name,
        &body.code,
        body.description.as_deref(),
    )?;
    if kind == FunctionKind::Application {
        check_application(&body.code)?;
    }
    crate::access::existing_users(&state, "shared_with", &body.shared_with).await?;
    let python = bound_python("python_version", kind, &body.code, body.python_version.as_deref())?;
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
        python,
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

/// An application's `code` must be a valid spec: every problem is listed (`code: ...`).
fn check_application(code: &str) -> ApiResult<()> {
    ferry_app::AppSpec::parse(code.as_bytes())
        .map(|_| ())
        .map_err(|errors| {
            let listed = errors
                .errors()
                .iter()
                .map(|e| ferry_proto::api::FieldError {
                    at: format!("code.{}", e.at),
                    input: None,
                    message: e.message.clone(),
                })
                .collect();
            ApiError::invalid(format!("code is not a valid application: {errors}"), listed)
        })
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
        application: (f.kind == FunctionKind::Application)
            .then(|| serde_json::from_slice(&f.code).ok())
            .flatten(),
        python_version: f.python.clone(),
    }
}

/// The Python version a registered function is bound to: the version that serialized
/// it (`field` names where it came from) when its code is Python bytecode, which loads
/// only on that major.minor; `None` for source, shell and applications. A version that
/// does not read as one is refused naming `field`.
pub(crate) fn bound_python(
    field: &str,
    kind: FunctionKind,
    code: &str,
    version: Option<&str>,
) -> ApiResult<Option<String>> {
    let Some(version) = version else {
        return Ok(None);
    };
    if !ferry_proto::python::is_version(version) {
        return Err(ApiError::bad_request(format!(
            "{field}: {:?} is not a Python version (like \"3.12.1\")",
            version.chars().take(40).collect::<String>()
        )));
    }
    let bound = kind == FunctionKind::Python && ferry_proto::python::bytecode_only(code.as_bytes());
    Ok(bound.then(|| version.to_owned()))
}

/// The most bytes of a function's description.
pub(crate) const MAX_DESCRIPTION_BYTES: usize = 4096;

/// A registration's sizes: a name of 1 to 256 bytes, code of 1 byte to
/// FERRY_MAX_FUNCTION_BYTES, a description of at most [`MAX_DESCRIPTION_BYTES`]; the
/// error names the field (as the route calls it) and the limit.
pub(crate) fn check_sizes(
    state: &AppState,
    fields: [&str; 3],
    name: &str,
    code: &str,
    description: Option<&str>,
) -> ApiResult<()> {
    let [name_field, code_field, description_field] = fields;
    if name.is_empty() || name.len() > 256 {
        return Err(ApiError::bad_request(format!(
            "{name_field} must be 1 to 256 bytes, not {}",
            name.len()
        )));
    }
    if code.is_empty() {
        return Err(ApiError::bad_request(format!("{code_field} is empty")));
    }
    let max = state.config.max_function_bytes;
    if code.len() > max {
        return Err(ApiError::new(
            crate::error::Code::PayloadTooLarge,
            format!(
                "{code_field} is {} bytes; the limit is {max} bytes (FERRY_MAX_FUNCTION_BYTES)",
                code.len()
            ),
        ));
    }
    if let Some(d) = description
        && d.len() > MAX_DESCRIPTION_BYTES
    {
        return Err(ApiError::bad_request(format!(
            "{description_field} is {} bytes; the limit is {MAX_DESCRIPTION_BYTES} bytes",
            d.len()
        )));
    }
    Ok(())
}

/// Each user once, in the order given.
pub(crate) fn dedup(mut users: Vec<UserId>) -> Vec<UserId> {
    let mut seen = std::collections::HashSet::new();
    users.retain(|u| seen.insert(*u));
    users
}
