//! `POST /v1/endpoints` (an endpoint daemon registers), `GET /v1/endpoints[/{id}]`.

use axum::Json;
use axum::extract::{Path, State};
use ferry_proto::EndpointId;
use ferry_proto::api::{EndpointDoc, EndpointRegistered, RegisterEndpoint};
use ferry_proto::time::{now_micros, to_secs};
use ferry_store::EndpointRecord;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, FerryJson, parse_id};

/// An endpoint is online while heartbeats keep coming: the last one is younger than this
/// many of its announced intervals.
const MISSED_HEARTBEATS_OFFLINE: u64 = 3;

pub(crate) async fn register(
    State(state): State<AppState>,
    Caller(user): Caller,
    FerryJson(body): FerryJson<RegisterEndpoint>,
) -> ApiResult<Json<EndpointRegistered>> {
    if body.name.is_empty() || body.name.len() > 128 {
        return Err(ApiError::bad_request("endpoint name must be 1 to 128 bytes"));
    }
    let (endpoint_id, created_at) = match body.endpoint_id {
        Some(id) => {
            let existing = crate::access::owned_endpoint(&state, user, id).await?;
            (id, existing.created_at)
        }
        None => (EndpointId::new(), now_micros()),
    };
    let record = EndpointRecord {
        endpoint_id,
        owner: user,
        name: body.name,
        created_at,
        last_heartbeat: None,
        heartbeat_interval_ms: 0,
        lost_at: None,
        details: serde_json::Value::Null,
    };
    state.store.put_endpoint(&record).await?;
    state
        .with_broker(|b| async move { b.declare_endpoint(endpoint_id).await })
        .await
        .map_err(|e| ApiError::unavailable("the broker is unavailable", e))?;
    tracing::info!(%endpoint_id, name = %record.name, "endpoint registered");
    Ok(Json(EndpointRegistered {
        endpoint_id,
        broker_url: state.config.public_amqp_url(),
        namespace: state.config.namespace.clone(),
        heartbeat_interval_ms: state.config.heartbeat_interval_ms,
        inline_limit_bytes: state.config.inline_limit_bytes as u64,
        max_result_bytes: state.config.max_payload_bytes as u64,
    }))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<Vec<EndpointDoc>>> {
    let records = state.store.list_endpoints(user).await?;
    Ok(Json(records.iter().map(endpoint_doc).collect()))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointDoc>> {
    let id: EndpointId = parse_id(&id)?;
    Ok(Json(endpoint_doc(
        &crate::access::owned_endpoint(&state, user, id).await?,
    )))
}

pub fn endpoint_doc(e: &EndpointRecord) -> EndpointDoc {
    let online = match e.last_heartbeat {
        _ if e.lost_at.is_some() => false,
        Some(at) if e.heartbeat_interval_ms > 0 => {
            let age_ms = now_micros().saturating_sub(at) / 1000;
            age_ms < MISSED_HEARTBEATS_OFFLINE * e.heartbeat_interval_ms
        }
        _ => false,
    };
    EndpointDoc {
        endpoint_id: e.endpoint_id,
        name: e.name.clone(),
        status: if online { "online" } else { "offline" }.to_owned(),
        last_heartbeat: e.last_heartbeat.map(to_secs),
        details: e.details.clone(),
    }
}
