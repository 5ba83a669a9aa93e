//! The OpenAPI description of Ferry's REST API (`GET /openapi.json`), made from the wire
//! types in `ferry_proto::api` (their `ToSchema`) and the route list below.
//!
//! The functions here only carry each route's description for the generator; the
//! handlers live in [`crate::api`]. Schemathesis runs against the live service with
//! this description in CI (`tests/contract`), so a route that answers otherwise than
//! described here, or with a 5xx to any input the description allows, fails the suite.
//! The Globus-compatible routes are in it too (tag `globus-compute`), with the bodies
//! the unmodified Globus Compute SDK sends; the WebSocket (`/v1/ws`) is not.

#![allow(dead_code)]

use ferry_proto::api::*;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::globus::functions::{
    FunctionRegistered as GlobusFunctionRegistered, RegisterFunction as GlobusRegisterFunction,
};
use crate::globus::tasks::{
    BatchStatusBody as GlobusBatchStatus, SubmitAnswer as GlobusSubmitted, SubmitBody as GlobusSubmit,
};

/// `GET /v1/whoami`.
#[derive(Serialize, ToSchema)]
pub struct Whoami {
    #[schema(value_type = String, format = Uuid)]
    user_id: uuid::Uuid,
    name: Option<String>,
    /// Set for an endpoint's credential: the endpoint it acts for.
    #[schema(value_type = Option<String>, format = Uuid)]
    endpoint_id: Option<uuid::Uuid>,
}

/// `DELETE /v1/endpoints/{id}`.
#[derive(Serialize, ToSchema)]
pub struct EndpointDeleted {
    #[schema(value_type = String, format = Uuid)]
    endpoint_id: uuid::Uuid,
    deleted: bool,
}

/// A cancelled batch or session.
#[derive(Serialize, ToSchema)]
pub struct BatchCancelled {
    #[schema(value_type = String, format = Uuid)]
    batch_id: uuid::Uuid,
    cancelled: u64,
    size: u64,
}

/// The `Idempotency-Key` header of submissions.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// 1 to 200 printable ASCII characters: a submission sent again with the key it was
    /// sent with before gets the first answer (the same task ids), not a second session.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 200,
        pattern = "^[!-~]+$"
    )]
    idempotency_key: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Ferry", description = "Ferry's HTTP API (v1): functions, endpoints, tasks, sessions and their data (docs/http-api.md); and the routes the Globus Compute SDK calls (tag globus-compute, docs/globus-compute.md)."),
    paths(
        version, health, whoami, register_function, get_function, share_function, register_endpoint,
        list_endpoints, get_endpoint, delete_endpoint, submit, create_sessions, list_sessions, get_session,
        session_tasks, cancel_session, get_task, cancel_task, get_batch, cancel_batch, status,
        task_input, task_function, put_result, still_to_run,
        globus_version, globus_register_function, globus_get_function, globus_submit, globus_get_task,
        globus_batch_status, globus_task_group, globus_amqp_url, globus_list_endpoints,
        globus_get_endpoint, globus_endpoint_status,
    ),
    components(schemas(ErrorBody, ferry_proto::api::FieldError)),
    modifiers(&Bearer),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The description as JSON.
pub fn json() -> String {
    ApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI description serializes")
}

#[utoipa::path(get, path = "/v1/version", security(()), responses((status = 200, body = Version)))]
fn version() {}

#[utoipa::path(get, path = "/v1/health", security(()), responses(
    (status = 200, body = Health, description = "the store and the broker answer and a forwarder is alive"),
    (status = 503, body = Health, description = "a check failed: the body says which")))]
fn health() {}

#[utoipa::path(get, path = "/v1/whoami", responses(
    (status = 200, body = Whoami), (status = 401, body = ErrorBody)))]
fn whoami() {}

#[utoipa::path(post, path = "/v1/functions", request_body = RegisterFunction, responses(
    (status = 200, body = FunctionRegistered), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
    (status = 429, body = ErrorBody)))]
fn register_function() {}

#[utoipa::path(get, path = "/v1/functions/{id}", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, body = FunctionDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
fn get_function() {}

#[utoipa::path(put, path = "/v1/functions/{id}/sharing", params(("id" = String, Path, format = Uuid)),
    request_body = Sharing, responses(
    (status = 200, body = FunctionDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
fn share_function() {}

#[utoipa::path(post, path = "/v1/endpoints", request_body = RegisterEndpoint, responses(
    (status = 200, body = EndpointRegistered), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
fn register_endpoint() {}

#[utoipa::path(get, path = "/v1/endpoints", responses(
    (status = 200, body = Vec<EndpointDoc>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
fn list_endpoints() {}

#[utoipa::path(get, path = "/v1/endpoints/{id}", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, body = EndpointDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
fn get_endpoint() {}

#[utoipa::path(delete, path = "/v1/endpoints/{id}", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, body = EndpointDeleted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
fn delete_endpoint() {}

#[utoipa::path(post, path = "/v1/tasks", request_body = SubmitRequest, params(IdempotencyKey), responses(
    (status = 200, body = SubmitResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)))]
fn submit() {}

#[utoipa::path(post, path = "/v1/sessions", request_body = SessionsRequest, params(IdempotencyKey), responses(
    (status = 200, body = SessionsResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)))]
fn create_sessions() {}

#[utoipa::path(get, path = "/v1/sessions", params(
    ("before" = Option<f64>, Query, minimum = 0, description = "only sessions created before this (Unix seconds): the last page's next_before"),
    ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000)),
    responses((status = 200, body = SessionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
fn list_sessions() {}

#[utoipa::path(get, path = "/v1/sessions/{id}", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, body = SessionDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
fn get_session() {}

#[utoipa::path(get, path = "/v1/sessions/{id}/tasks", params(
    ("id" = String, Path, format = Uuid), ("offset" = Option<i32>, Query, minimum = 0),
    ("limit" = Option<u64>, Query, minimum = 1, maximum = 10000)),
    responses(
    (status = 200, body = SessionTasksPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
fn session_tasks() {}

#[utoipa::path(post, path = "/v1/sessions/{id}/cancel", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, body = BatchCancelled), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
fn cancel_session() {}

#[utoipa::path(get, path = "/v1/tasks/{id}", params(
    ("id" = String, Path, format = Uuid), ("wait_secs" = Option<f64>, Query, minimum = 0, maximum = 60)),
    responses(
    (status = 200, body = TaskDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
fn get_task() {}

#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, body = TaskDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
fn cancel_task() {}

#[utoipa::path(get, path = "/v1/batches/{id}", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, body = BatchDoc), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
fn get_batch() {}

#[utoipa::path(post, path = "/v1/batches/{id}/cancel", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, body = BatchCancelled), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
fn cancel_batch() {}

#[utoipa::path(post, path = "/v1/tasks/status", request_body = StatusRequest, responses(
    (status = 200, body = Object, description = "`{\"tasks\": {id: task document}, \"unknown\": [ids]}`"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
fn status() {}

#[utoipa::path(get, path = "/v1/tasks/{id}/input", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
fn task_input() {}

#[utoipa::path(get, path = "/v1/tasks/{id}/function", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
fn task_function() {}

#[utoipa::path(put, path = "/v1/tasks/{id}/results/{attempt}", params(
    ("id" = String, Path, format = Uuid), ("attempt" = u32, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 410, body = ErrorBody), (status = 413, body = ErrorBody)))]
fn put_result() {}

#[utoipa::path(post, path = "/v1/endpoints/{id}/still_to_run", params(("id" = String, Path, format = Uuid)),
    request_body = StillToRunRequest, responses(
    (status = 200, body = StillToRun), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
fn still_to_run() {}

// ---- the Globus-compatible routes (crate::globus) ----------------------------------

#[utoipa::path(get, path = "/v2/version", tag = "globus-compute", security(()),
    params(("service" = Option<String>, Query, description = "any value: the versions as an object")),
    responses((status = 200, body = serde_json::Value, description = "the version, or with `service` an object of versions")))]
fn globus_version() {}

#[utoipa::path(post, path = "/v3/functions", tag = "globus-compute", request_body = GlobusRegisterFunction, responses(
    (status = 200, body = GlobusFunctionRegistered), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
    (status = 429, body = ErrorBody)))]
fn globus_register_function() {}

#[utoipa::path(get, path = "/v2/functions/{id}", tag = "globus-compute", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, body = Object, description = "`function_uuid`, `function_name`, `function_code`, `description`, `metadata`"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
fn globus_get_function() {}

#[utoipa::path(post, path = "/v3/endpoints/{id}/submit", tag = "globus-compute", params(("id" = String, Path, format = Uuid)),
    request_body = GlobusSubmit, responses(
    (status = 200, body = GlobusSubmitted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
    (status = 429, body = ErrorBody)))]
fn globus_submit() {}

#[utoipa::path(get, path = "/v2/tasks/{id}", tag = "globus-compute", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, body = Object, description = "a task document: `task_id`, `status`, `pending`, `result` or `exception`, `completion_t`, ..."),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
fn globus_get_task() {}

#[utoipa::path(post, path = "/v2/batch_status", tag = "globus-compute", request_body = GlobusBatchStatus, responses(
    (status = 200, body = Object, description = "`{\"response\": \"batch\", \"results\": {id: task document}}`"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 413, body = ErrorBody)))]
fn globus_batch_status() {}

#[utoipa::path(get, path = "/v2/taskgroup/{id}", tag = "globus-compute", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, body = Object, description = "`taskgroup_id`, `create_websockets_queue`, `tasks`: `[{id, created_at}]`"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
fn globus_task_group() {}

#[utoipa::path(get, path = "/v2/get_amqp_result_connection_url", tag = "globus-compute", responses(
    (status = 200, body = Object, description = "`connection_url`, `queue_prefix`"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
fn globus_amqp_url() {}

#[utoipa::path(get, path = "/v2/endpoints", tag = "globus-compute", responses(
    (status = 200, body = Vec<serde_json::Value>, description = "the caller's endpoints and those shared with them"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
fn globus_list_endpoints() {}

#[utoipa::path(get, path = "/v2/endpoints/{id}", tag = "globus-compute", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, body = Object, description = "`uuid`, `name`, `display_name`, `owner`, `public`, `status`, ..."),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
fn globus_get_endpoint() {}

#[utoipa::path(get, path = "/v2/endpoints/{id}/status", tag = "globus-compute", params(("id" = String, Path, format = Uuid)), responses(
    (status = 200, body = Object, description = "`status` (online, offline), `details`"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
fn globus_endpoint_status() {}

#[cfg(test)]
mod tests {
    /// Every REST route the router serves (but the WebSocket) is described.
    #[test]
    fn every_schema_a_schema_names_is_described() {
        let text = super::json();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in text
            .split("\"#/components/schemas/")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap())
        {
            assert!(schemas.contains_key(name), "{name} is named but not described");
        }
        for name in ["PhaseStep", "FieldError"] {
            assert!(schemas.contains_key(name), "{name}");
        }
    }

    #[test]
    fn every_rest_route_is_described() {
        let doc: serde_json::Value = serde_json::from_str(&super::json()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let router = include_str!("api/mod.rs");
        for line in router.lines().filter(|l| l.contains(".route(\"/v1/")) {
            let path = line.split('"').nth(1).unwrap();
            if path == "/v1/ws" {
                continue;
            }
            assert!(paths.contains_key(path), "{path} is served but not described");
        }
        for line in include_str!("globus/mod.rs")
            .lines()
            .filter(|l| l.contains(".route(\"/v"))
        {
            let path = line.split('"').nth(1).unwrap();
            assert!(paths.contains_key(path), "{path} is served but not described");
        }
        // The multi-line routes of the router, by hand.
        for path in ["/v1/endpoints/{id}", "/v1/tasks/{id}/results/{attempt}"] {
            assert!(paths.contains_key(path), "{path}");
        }
        assert!(doc["components"]["schemas"]["TaskDoc"].is_object());
    }
}
