//! The REST routes the unmodified `globus-compute-sdk` (4.x) calls, with the same paths
//! and JSON shapes, served from Ferry's own records. A Globus Compute `Client` built with
//! a static Ferry token (`ferry.globus_compat.client(url, token)`) registers functions,
//! submits, polls and fetches results here; its `Executor` gets results on a task group
//! queue in RabbitMQ, fed by the forwarder.
//!
//! Serialized functions, arguments and results pass through untouched: Ferry's worker
//! host reads the Globus Compute serialization strategies.

pub(crate) mod functions;
pub(crate) mod tasks;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use ferry_proto::EndpointId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Caller, parse_id};

/// The Globus Compute SDK versions Ferry answers for.
const MIN_SDK_VERSION: &str = "2.0.0";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/version", get(version))
        .route("/v3/functions", post(functions::register))
        .route("/v2/functions/{id}", get(functions::get))
        .route("/v3/endpoints/{id}/submit", post(tasks::submit))
        .route("/v2/tasks/{id}", get(tasks::get))
        .route("/v2/batch_status", post(tasks::batch_status))
        .route("/v2/taskgroup/{id}", get(tasks::task_group))
        .route("/v2/get_amqp_result_connection_url", get(amqp_connection))
        .route("/v2/endpoints", get(list_endpoints))
        .route("/v2/endpoints/{id}", get(get_endpoint))
        .route("/v2/endpoints/{id}/status", get(endpoint_status))
}

#[derive(Deserialize)]
struct VersionQuery {
    service: Option<String>,
}

/// `GET /v2/version?service=all` is an object; without `service` a bare version string.
async fn version(crate::extract::FerryQuery(q): crate::extract::FerryQuery<VersionQuery>) -> Json<Value> {
    let api = env!("CARGO_PKG_VERSION");
    match q.service {
        Some(_) => Json(json!({
            "api": api,
            "min_sdk_version": MIN_SDK_VERSION,
            "min_ep_version": MIN_SDK_VERSION,
            "min_endpoint_version": MIN_SDK_VERSION,
            "ferry": api,
        })),
        None => Json(json!(api)),
    }
}

/// Where an `Executor` consumes its task group's results: the caller's own queues, with
/// broker identities as a broker user that may read only those.
async fn amqp_connection(State(state): State<AppState>, Caller(user): Caller) -> ApiResult<Json<Value>> {
    Ok(Json(json!({
        "connection_url": state.result_reader_url(user).await?,
        "queue_prefix": state.broker().await.task_group_prefix(user),
    })))
}

async fn endpoint_status(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: EndpointId = parse_id(&id)?;
    let doc = crate::api::endpoint_doc(&crate::access::visible_endpoint(&state, user, id).await?, user);
    let d = &doc.details;
    Ok(Json(json!({
        "status": doc.status,
        "details": {
            "total_workers": d["total_workers"],
            "idle_workers": d["idle_workers"],
            "pending_tasks": d["pending_tasks"],
            "outstanding_tasks": d["outstanding_tasks"],
            "managers": d["managers"],
            "last_heartbeat": doc.last_heartbeat,
        },
    })))
}

fn endpoint_json(doc: &ferry_proto::api::EndpointDoc) -> Value {
    json!({
        "uuid": doc.endpoint_id,
        "name": doc.name,
        "display_name": doc.name,
        "owner": doc.owner,
        "multi_user": false,
        "public": doc.public,
        "status": doc.status,
        "allowed_functions": doc.allowed_functions,
    })
}

async fn get_endpoint(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: EndpointId = parse_id(&id)?;
    let doc = crate::api::endpoint_doc(&crate::access::visible_endpoint(&state, user, id).await?, user);
    Ok(Json(endpoint_json(&doc)))
}

async fn list_endpoints(State(state): State<AppState>, Caller(user): Caller) -> ApiResult<Json<Value>> {
    let records = state.store.list_endpoints(user).await?;
    Ok(Json(Value::Array(
        records
            .iter()
            .map(|e| endpoint_json(&crate::api::endpoint_doc(e, user)))
            .collect(),
    )))
}
