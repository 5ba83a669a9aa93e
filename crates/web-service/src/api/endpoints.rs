//! `POST /v1/endpoints` (an endpoint daemon registers), `GET /v1/endpoints[/{id}]`,
//! `DELETE /v1/endpoints/{id}` (`ferry-endpoint delete`), `POST
//! /v1/endpoints/{id}/still_to_run` (an endpoint given a message again).

use axum::Json;
use axum::extract::{Path, State};
use ferry_proto::api::{EndpointDoc, EndpointRegistered, RegisterEndpoint, StillToRun, StillToRunRequest};
use ferry_proto::messages::EndpointLoad;
use ferry_proto::state::TaskState;
use ferry_proto::time::{now_micros, to_secs};
use ferry_proto::{EndpointId, UserId};
use ferry_store::{EndpointRecord, Principal};

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Auth, Caller, FerryJson, parse_id};

/// An endpoint is online while heartbeats keep coming: the last one is younger than this
/// many of its announced intervals.
const MISSED_HEARTBEATS_OFFLINE: u64 = 3;

/// `POST /v1/endpoints`: a user registers a new endpoint (or one of theirs again), and
/// gets a credential for it; an endpoint credential registers its own endpoint again.
pub(crate) async fn register(
    State(state): State<AppState>,
    Auth(principal): Auth,
    FerryJson(body): FerryJson<RegisterEndpoint>,
) -> ApiResult<Json<EndpointRegistered>> {
    if body.name.is_empty() || body.name.len() > 128 {
        return Err(ApiError::bad_request("endpoint name must be 1 to 128 bytes"));
    }
    if let Some(env) = &body.worker_env {
        for (field, value) in [
            ("python_version", &env.python_version),
            ("dill_version", &env.dill_version),
            ("os", &env.os),
        ] {
            if value.len() > 256 {
                return Err(ApiError::bad_request(format!(
                    "worker_env.{field} is {} bytes; the most is 256",
                    value.len()
                )));
            }
        }
    }
    let user = principal.owner();
    if let Principal::Endpoint { endpoint, .. } = principal
        && body.endpoint_id != Some(endpoint)
    {
        return Err(ApiError::new(
            Code::Forbidden,
            format!("the credential of endpoint {endpoint} registers that endpoint only"),
        ));
    }
    let (endpoint_id, created_at) = match body.endpoint_id {
        Some(id) => {
            let existing = crate::access::owned_endpoint(&state, user, id).await?;
            (id, existing.created_at)
        }
        None => (EndpointId::new(), now_micros()),
    };
    crate::access::existing_users(&state, "shared_with", &body.shared_with).await?;
    let record = EndpointRecord {
        endpoint_id,
        owner: user,
        name: body.name,
        created_at,
        last_heartbeat: None,
        heartbeat_interval_ms: 0,
        lost_at: None,
        details: serde_json::Value::Null,
        public: body.public,
        shared_with: crate::api::functions::dedup(body.shared_with),
        allowed_functions: body.allowed_functions,
    };
    state.store.put_endpoint(&record).await?;
    if let Some(env) = &body.worker_env {
        let json = serde_json::to_string(env).map_err(|e| ApiError::new(Code::Internal, e.to_string()))?;
        state.store.set_endpoint_worker_env(endpoint_id, &json).await?;
    }
    // Who may use it may have changed: this web-service reads it again at once.
    state.forget_endpoint(endpoint_id);
    state
        .with_broker(|b| async move { b.declare_endpoint(endpoint_id).await })
        .await
        .map_err(ApiError::broker)?;
    // With broker identities, the endpoint logs in as a user of its own, with a password
    // made now (a connection made with the last one stays open).
    let broker_url = match &state.broker_admin {
        Some(admin) => {
            let b = state.broker().await;
            let name = b.endpoint_user(endpoint_id);
            let password = admin
                .endpoint_identity(
                    &name,
                    &b.endpoint_exchange(endpoint_id),
                    &[
                        b.endpoint_queue(endpoint_id),
                        b.endpoint_control_queue(endpoint_id),
                    ],
                )
                .await
                .map_err(|e| ApiError::unavailable("the broker's management API is unavailable", e))?;
            crate::broker_admin::with_credentials(&state.config.public_amqp_url(), &name, &password)
        }
        None => state.config.public_amqp_url(),
    };
    tracing::info!(
        %endpoint_id,
        name = %record.name,
        public = record.public,
        shared_with = record.shared_with.len(),
        allowed_functions = ?record.allowed_functions.as_ref().map(Vec::len),
        "endpoint registered"
    );
    // A user registering gets the endpoint a credential of its own to run with.
    let endpoint_token = match principal {
        Principal::User(owner) => Some(
            state
                .store
                .create_credential(
                    Principal::Endpoint {
                        endpoint: endpoint_id,
                        owner,
                    },
                    None,
                    Some(&format!("endpoint {}", record.name)),
                )
                .await?,
        ),
        Principal::Endpoint { .. } => None,
    };
    Ok(Json(EndpointRegistered {
        endpoint_id,
        broker_url,
        namespace: state.config.backends.namespace.clone(),
        heartbeat_interval_ms: state.config.heartbeat_interval_ms,
        inline_limit_bytes: state.config.inline_limit_bytes as u64,
        max_result_bytes: state.config.max_payload_bytes as u64,
        endpoint_token,
    }))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> ApiResult<Json<Vec<EndpointDoc>>> {
    let records = state.store.list_endpoints(user).await?;
    Ok(Json(records.iter().map(|e| endpoint_doc(e, user)).collect()))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointDoc>> {
    let id: EndpointId = parse_id(&id)?;
    crate::access::acts_for_endpoint(principal, id)?;
    let user = principal.owner();
    Ok(Json(endpoint_doc(
        &crate::access::visible_endpoint(&state, user, id).await?,
        user,
    )))
}

/// `DELETE /v1/endpoints/{id}`: forgets a stopped endpoint that holds no task. An
/// online one, or one with tasks in flight or waiting in its queue, is refused (409)
/// with what holds it: nothing it was given is dropped silently.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id: EndpointId = parse_id(&id)?;
    crate::access::acts_for_endpoint(principal, id)?;
    let record = crate::access::owned_endpoint(&state, principal.owner(), id).await?;
    if endpoint_doc(&record, record.owner).status == "online" {
        return Err(ApiError::new(
            Code::Conflict,
            format!(
                "endpoint {id} ({}) is online: stop it first (ferry-endpoint stop)",
                record.name
            ),
        ));
    }
    let in_flight = state.store.endpoint_in_flight(id).await?;
    let queue = state
        .with_broker(|b| async move {
            // Declared first: a queue that expired unused counts as empty.
            b.declare_endpoint(id).await?;
            b.queue_len(&b.endpoint_queue(id)).await
        })
        .await
        .map_err(ApiError::broker)?;
    if in_flight > 0 || queue > 0 {
        return Err(ApiError::new(
            Code::Conflict,
            format!(
                "endpoint {id} ({}) still holds tasks ({in_flight} in flight, {queue} messages in its queue): \
                 start it to run them, or cancel them, then delete it",
                record.name
            ),
        ));
    }
    // Its queues stay (empty): a task accepted just before, still on its way through
    // the forwarder, is failed there (the endpoint is gone), never dropped unseen.
    state.store.delete_endpoint(&record).await?;
    state.store.revoke_endpoint_credentials(id).await?;
    if let Some(admin) = &state.broker_admin {
        let name = state.broker().await.endpoint_user(id);
        admin
            .remove_user(&name)
            .await
            .map_err(|e| ApiError::unavailable("the broker's management API is unavailable", e))?;
    }
    state.forget_endpoint(id);
    tracing::info!(endpoint_id = %id, name = %record.name, "endpoint deleted");
    Ok(Json(serde_json::json!({"endpoint_id": id, "deleted": true})))
}

/// An endpoint as `viewer` sees it: who else may use it is its owner's to know.
pub fn endpoint_doc(e: &EndpointRecord, viewer: UserId) -> EndpointDoc {
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
        owner: e.owner,
        public: e.public,
        shared_with: (e.owner == viewer).then(|| e.shared_with.clone()),
        allowed_functions: e.allowed_functions.clone(),
    }
}

/// Why a task in `state` waits, told from the forwarder's liveness (`forwarder`: when
/// one last swept) and its endpoint's last heartbeat: no forwarder to dispatch it (or to
/// record heartbeats), the endpoint offline since when, all workers busy, blocks pending
/// in the scheduler's queue (job and reason), scaling paused. `None` when nothing
/// useful is known.
pub(crate) fn why_waiting(
    state: TaskState,
    e: &EndpointRecord,
    forwarder: Option<ferry_store::ForwarderSeen>,
) -> Option<String> {
    let now = now_micros();
    let no_forwarder = match forwarder {
        Some(seen) if seen.alive(now) => None,
        Some(seen) => Some(format!("no forwarder has been seen for {}", ago(now, seen.at))),
        None => Some("no forwarder has ever run in this namespace".to_owned()),
    };
    if let Some(missing) = &no_forwarder {
        let what = if state == TaskState::Received {
            "not yet dispatched to its endpoint's queue"
        } else {
            "its endpoint's reports and heartbeats are not being recorded"
        };
        return Some(format!(
            "{what}: {missing} (the forwarder dispatches tasks and records what endpoints report: is ferry-forwarder running?)"
        ));
    }
    let doc = endpoint_doc(e, e.owner);
    if doc.status != "online" {
        let since = match e.last_heartbeat {
            Some(at) => format!("no heartbeat for {}", ago(now, at)),
            None => "it has never sent a heartbeat".to_owned(),
        };
        return Some(format!(
            "endpoint {} ({}) is offline ({since}): the task waits in its queue until it comes back",
            e.name, e.endpoint_id
        ));
    }
    let load: EndpointLoad = serde_json::from_value(e.details.clone()).ok()?;
    if state != TaskState::WaitingForNodes {
        return (load.pending_tasks > 0).then(|| {
            format!(
                "endpoint {} has {} tasks waiting for a worker already; this one waits in its queue behind them",
                e.name, load.pending_tasks
            )
        });
    }
    let mut why = if load.managers == 0 {
        "no manager is connected".to_owned()
    } else {
        format!(
            "all {} workers on {} managers are busy ({} tasks wait)",
            load.total_workers, load.managers, load.pending_tasks
        )
    };
    let Some(provider) = &load.provider else {
        return Some(why);
    };
    let on_the_way: Vec<String> = provider
        .blocks
        .iter()
        .filter(|b| b.ended_at.is_none() && b.managers == 0)
        .map(|b| {
            let job = b
                .job_id
                .as_deref()
                .map(|j| format!(" (job {j})"))
                .unwrap_or_default();
            let reason = b.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            format!(
                "block {}{job} is {} in {}'s queue{reason}",
                b.block_id, b.state, provider.kind
            )
        })
        .collect();
    if !on_the_way.is_empty() {
        why = format!("{why}; {}", on_the_way.join("; "));
    }
    if let Some(scaling) = &provider.scaling {
        why = format!("{why}; scaling is {scaling}");
    }
    Some(why)
}

/// Copies at most in one `still_to_run` question (a task message holds at most 1,000).
const MAX_STILL_TO_RUN: usize = 10_000;

/// `POST /v1/endpoints/{id}/still_to_run`: which of the task copies a message brought
/// the endpoint are still to run (its own tasks, unfinished, not past that attempt). The
/// endpoint asks for a message given again and for one carrying a re-dispatched copy
/// (attempt > 0) before running any of them, so neither a restart nor a stale copy of an
/// earlier attempt runs again a task whose result is recorded. Its credential only.
pub(crate) async fn still_to_run(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    FerryJson(body): FerryJson<StillToRunRequest>,
) -> ApiResult<Json<StillToRun>> {
    let id: EndpointId = parse_id(&id)?;
    match principal {
        Principal::Endpoint { endpoint, .. } if endpoint == id => {}
        Principal::Endpoint { .. } => return Err(ApiError::not_found(format!("endpoint {id} not found"))),
        Principal::User(user) => {
            // Those who do not see the endpoint learn nothing of it.
            crate::access::visible_endpoint(&state, user, id).await?;
            return Err(ApiError::new(
                Code::Forbidden,
                format!("only endpoint {id}, with its credential, asks which of its tasks are still to run"),
            ));
        }
    }
    if body.tasks.len() > MAX_STILL_TO_RUN {
        return Err(ApiError::bad_request(format!(
            "tasks names {} copies; at most {MAX_STILL_TO_RUN} in one request",
            body.tasks.len()
        )));
    }
    let copies: Vec<_> = body.tasks.iter().map(|c| (c.task_id, c.attempt)).collect();
    let run = state.store.still_to_run(id, &copies).await?;
    tracing::info!(endpoint_id = %id, asked = copies.len(), to_run = run.len(), "copies an endpoint holds (given again or re-dispatched): still to run");
    Ok(Json(StillToRun { run }))
}

/// How long ago `then` was, for people: `4 s`, `3 min`, `2 h 5 min`, `3 d`.
pub(crate) fn ago(now: ferry_proto::time::Micros, then: ferry_proto::time::Micros) -> String {
    let secs = now.saturating_sub(then) / 1_000_000;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d", secs / 86400),
    }
}
