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
        .route("/v1/sessions", post(batches::create_sessions))
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

async fn version() -> Json<Version> {
    Json(Version {
        api: "1".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}
