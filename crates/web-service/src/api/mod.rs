//! Routes, one module per resource.

mod batches;
mod cancel;
mod endpoints;
pub(crate) mod functions;
mod tasks;
mod ws;

use axum::Json;
use axum::Router;
use axum::routing::{get, post, put};
use ferry_proto::api::Version;

use crate::AppState;

pub use endpoints::endpoint_doc;
pub use tasks::task_doc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/version", get(version))
        .route("/v1/health", get(health))
        .route("/openapi.json", get(openapi))
        .route("/v1/whoami", get(whoami))
        .route("/v1/functions", post(functions::register))
        .route("/v1/functions/{id}", get(functions::get))
        .route("/v1/functions/{id}/sharing", put(functions::share))
        .route("/v1/endpoints", post(endpoints::register).get(endpoints::list))
        .route(
            "/v1/endpoints/{id}",
            get(endpoints::get).delete(endpoints::delete),
        )
        .route("/v1/endpoints/{id}/still_to_run", post(endpoints::still_to_run))
        .route("/v1/tasks", post(tasks::submit))
        .route("/v1/tasks/status", post(tasks::status))
        .route("/v1/tasks/{id}", get(tasks::get))
        .route("/v1/tasks/{id}/input", get(tasks::input))
        .route("/v1/tasks/{id}/function", get(tasks::function))
        .route(
            "/v1/tasks/{id}/results/{attempt}",
            axum::routing::put(tasks::put_result),
        )
        .route("/v1/tasks/{id}/cancel", post(cancel::task))
        .route("/v1/batches/{id}", get(batches::get))
        .route("/v1/batches/{id}/cancel", post(cancel::batch))
        .route("/v1/ws", get(ws::upgrade))
        .route(
            "/v1/sessions",
            post(batches::create_sessions).get(batches::list_sessions),
        )
        .route("/v1/sessions/{id}", get(batches::get_session))
        .route("/v1/sessions/{id}/tasks", get(batches::session_tasks))
        .route("/v1/sessions/{id}/cancel", post(cancel::batch))
}

/// `GET /v1/whoami`: the caller's user id and name (what others share things with),
/// and the endpoint an endpoint credential acts for.
async fn whoami(
    axum::extract::State(state): axum::extract::State<AppState>,
    crate::extract::Auth(principal): crate::extract::Auth,
) -> crate::error::ApiResult<Json<serde_json::Value>> {
    let user = principal.owner();
    let name = state.store.user_name(user).await?;
    let endpoint = match principal {
        ferry_store::Principal::Endpoint { endpoint, .. } => Some(endpoint),
        ferry_store::Principal::User(_) => None,
    };
    Ok(Json(
        serde_json::json!({"user_id": user, "name": name, "endpoint_id": endpoint}),
    ))
}

/// `GET /openapi.json`: the REST API's description (no token needed).
async fn openapi() -> impl axum::response::IntoResponse {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        JSON.get_or_init(crate::openapi::json).clone(),
    )
}

/// How long each health check may take.
const HEALTH_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /v1/health` (no token): whether this web-service reaches Redis and RabbitMQ and
/// whether a forwarder swept recently; 200 when all do, else 503 naming what failed.
async fn health(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> (axum::http::StatusCode, Json<ferry_proto::api::Health>) {
    use ferry_proto::api::{ForwarderHealth, Health, HealthCheck};
    let check = |outcome: Result<Result<(), String>, tokio::time::error::Elapsed>| match outcome {
        Ok(Ok(())) => HealthCheck {
            ok: true,
            error: None,
        },
        Ok(Err(e)) => HealthCheck {
            ok: false,
            error: Some(e),
        },
        Err(_) => HealthCheck {
            ok: false,
            error: Some(format!("no answer within {HEALTH_WITHIN:?}")),
        },
    };
    let store = check(
        tokio::time::timeout(HEALTH_WITHIN, state.store.ping())
            .await
            .map(|r| r.map_err(|e| e.to_string())),
    );
    let broker = check(
        tokio::time::timeout(
            HEALTH_WITHIN,
            state.with_broker(|b| async move { b.queue_len(&b.submissions_queue()).await }),
        )
        .await
        .map(|r| r.map(|_| ()).map_err(|e| e.to_string())),
    );
    let seen = if store.ok {
        state.store.forwarder_seen().await.ok().flatten()
    } else {
        None
    };
    let forwarder = ForwarderHealth {
        alive: seen.is_some_and(|s| s.alive(ferry_proto::time::now_micros())),
        last_seen: seen.map(|s| ferry_proto::time::to_secs(s.at)),
    };
    let ok = store.ok && broker.ok && forwarder.alive;
    let code = if ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Health {
            status: if ok { "ok" } else { "degraded" }.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            store,
            broker,
            forwarder,
        }),
    )
}

async fn version() -> Json<Version> {
    Json(Version {
        api: "1".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}
