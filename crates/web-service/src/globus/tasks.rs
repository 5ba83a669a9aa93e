//! Submission, task documents, batch status and task-group listings in the Globus
//! Compute shapes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use ferry_proto::{EndpointId, FunctionId, TaskGroupId, TaskId};
use ferry_store::TaskRecord;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::answer::{Answer, write_keyed};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, FerryJson, parse_id};
use crate::submit::{Submission, Submitted};

/// The submit body (`Batch.prepare()`). Every field is typed and no other is taken (a
/// 400 names it). `resource_specification`, `user_endpoint_config`, `user_runtime` and
/// `result_serializers` are checked (objects, or a list of strings, of bounded size)
/// and not used: results always come back as `00` (docs/globus-compute.md).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GlobusSubmit)]
pub(crate) struct SubmitBody {
    /// Declare the task group's result queue before answering (the `Executor` does).
    #[serde(default)]
    create_queue: bool,
    /// Function id -> packed arguments, one per task.
    tasks: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    task_group_id: Option<TaskGroupId>,
    #[serde(default)]
    resource_specification: Option<Map<String, Value>>,
    #[serde(default)]
    user_endpoint_config: Option<Map<String, Value>>,
    #[serde(default)]
    user_runtime: Option<Map<String, Value>>,
    #[serde(default)]
    result_serializers: Option<Vec<String>>,
}

/// The bytes (as JSON) and the nesting one of the submit's free-form objects may have.
const MAX_OBJECT_BYTES: usize = 64 * 1024;
const MAX_OBJECT_DEPTH: usize = 16;
/// Result serializers at most, and bytes per name.
const MAX_SERIALIZERS: usize = 16;
const MAX_SERIALIZER_BYTES: usize = 256;

impl SubmitBody {
    /// The sizes of the fields Ferry checks and does not use.
    fn check_bounds(&self) -> ApiResult<()> {
        let objects = [
            ("resource_specification", &self.resource_specification),
            ("user_endpoint_config", &self.user_endpoint_config),
            ("user_runtime", &self.user_runtime),
        ];
        for (field, object) in objects {
            let Some(object) = object else { continue };
            let bytes = serde_json::to_vec(object).map(|b| b.len()).unwrap_or(usize::MAX);
            if bytes > MAX_OBJECT_BYTES {
                return Err(ApiError::bad_request(format!(
                    "{field} is {bytes} bytes as JSON; at most {MAX_OBJECT_BYTES} are taken"
                )));
            }
            if object.values().map(depth).max().unwrap_or(0) + 1 > MAX_OBJECT_DEPTH {
                return Err(ApiError::bad_request(format!(
                    "{field} is nested deeper than {MAX_OBJECT_DEPTH} levels"
                )));
            }
        }
        if let Some(names) = &self.result_serializers {
            if names.len() > MAX_SERIALIZERS {
                return Err(ApiError::bad_request(format!(
                    "result_serializers names {}; at most {MAX_SERIALIZERS} are taken",
                    names.len()
                )));
            }
            if let Some(i) = names.iter().position(|n| n.len() > MAX_SERIALIZER_BYTES) {
                return Err(ApiError::bad_request(format!(
                    "result_serializers[{i}] is longer than {MAX_SERIALIZER_BYTES} bytes"
                )));
            }
        }
        Ok(())
    }
}

/// How deeply a JSON value nests (a scalar is 1).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 1,
    }
}

/// The answer to a submission: each function's task ids in the order of its payloads.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = GlobusSubmitted)]
pub(crate) struct SubmitAnswer {
    #[schema(value_type = String, format = Uuid)]
    request_id: ferry_proto::BatchId,
    #[schema(value_type = String, format = Uuid)]
    task_group_id: TaskGroupId,
    #[schema(value_type = String, format = Uuid)]
    endpoint_id: EndpointId,
    #[schema(value_type = BTreeMap<String, Vec<String>>)]
    tasks: BTreeMap<String, Vec<TaskId>>,
}

pub(crate) async fn submit(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(endpoint): Path<String>,
    FerryJson(body): FerryJson<SubmitBody>,
) -> ApiResult<Json<SubmitAnswer>> {
    let endpoint_id: EndpointId = parse_id(&endpoint)?;
    body.check_bounds()?;
    let group = body.task_group_id.unwrap_or_default();
    let mut order: Vec<(String, usize)> = Vec::with_capacity(body.tasks.len());
    let mut tasks = Vec::new();
    for (key, payloads) in body.tasks {
        let function_id: FunctionId = key.parse().map_err(|e| {
            ApiError::bad_request(format!(
                "tasks: the key {:?} is not a function id: {e}",
                key.chars().take(40).collect::<String>()
            ))
        })?;
        order.push((key, payloads.len()));
        tasks.extend(payloads.into_iter().map(|p| Submitted {
            function_id,
            payload: Bytes::from(p),
            max_retries: None,
            walltime_ms: None,
            priority: 0,
            requires: None,
            retry: None,
            environment: None,
        }));
    }
    if body.create_queue {
        // The Executor consumes the queue right after this answer: it must exist first.
        let expires = std::time::Duration::from_secs(state.config.task_group_queue_expires_secs);
        state
            .with_broker(|b| async move { b.declare_task_group(user, group, expires).await })
            .await
            .map_err(ApiError::broker)?;
    }
    let submission = Submission {
        endpoint_id,
        tasks,
        task_group: Some(group),
        result_queue: body.create_queue,
        timeout_ms: None,
        events: false,
        callback_url: None,
    };
    let crate::submit::Accepted {
        batch_id,
        task_ids: ids,
        ..
    } = crate::submit::to_completion(
        async move { crate::submit::accept(&state, user, submission, None).await },
    )
    .await?;
    let mut by_function = BTreeMap::new();
    let mut ids = ids.into_iter();
    for (key, count) in order {
        by_function.insert(key, ids.by_ref().take(count).collect());
    }
    Ok(Json(SubmitAnswer {
        request_id: batch_id,
        task_group_id: group,
        endpoint_id,
        tasks: by_function,
    }))
}

/// A task in the shape the SDK reads (`status`, `result` or `exception`,
/// `completion_t`), taking the record's strings rather than copying them.
/// The worker environment an endpoint registered with (see
/// [`ferry_proto::api::WorkerEnv`]), as the Globus SDK reads it from a task's
/// `details`: it warns of differences from its own Python and dill, and of unknown ones.
async fn worker_env(state: &AppState, endpoint: EndpointId) -> Option<Value> {
    let json = state.store.endpoint_worker_env(endpoint).await.ok()??;
    let mut env: Value = serde_json::from_str(&json).ok()?;
    env.as_object_mut()?.insert("endpoint_id".into(), json!(endpoint));
    Some(env)
}

/// A task record with its endpoint's worker environment, for the batch answer.
struct WithEnv {
    task: TaskRecord,
    env: Option<Arc<Value>>,
}

impl ferry_store::ByReference for WithEnv {
    fn result_ref(&self) -> Option<(TaskId, u32)> {
        self.task.result_ref()
    }
    fn set_result(&mut self, result: Option<String>) {
        self.task.set_result(result);
    }
}

impl crate::answer::Entry for WithEnv {
    fn task_id(&self) -> TaskId {
        self.task.task_id
    }
}

fn task_json(t: TaskRecord, group: Option<TaskGroupId>, env: Option<&Value>) -> Value {
    let doc = crate::api::task_doc(t);
    let mut v = json!({
        "task_id": doc.task_id,
        "status": doc.status,
        "pending": doc.pending,
        "endpoint_id": doc.endpoint_id,
        "function_id": doc.function_id,
        "created_at": doc.created_at,
    });
    let map = v.as_object_mut().expect("an object");
    if let Some(group) = group {
        map.insert("task_group_id".into(), json!(group));
    }
    if let Some(r) = doc.result {
        map.insert("result".into(), Value::String(r));
    }
    if let Some(e) = doc.exception {
        map.insert("exception".into(), Value::String(e));
    }
    if let Some(c) = doc.completion_t {
        map.insert("completion_t".into(), Value::String(c));
    }
    let transitions: Map<String, Value> = doc
        .history
        .iter()
        .map(|h| (h.state.clone(), json!(h.at)))
        .collect();
    let mut details = json!({"task_transitions": transitions});
    if let (Some(Value::Object(env)), Some(d)) = (env, details.as_object_mut()) {
        d.extend(env.clone());
    }
    map.insert("details".into(), details);
    v
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: TaskId = parse_id(&id)?;
    match state.store.get_task(id).await? {
        Some(t) if t.owner == user => {
            let env = worker_env(&state, t.endpoint_id).await;
            Ok(Json(task_json(t, None, env.as_ref())))
        }
        _ => Err(ApiError::not_found(format!("task {id} not found"))),
    }
}

/// Ids that are not task ids, unknown or another user's are left out of the answer
/// (the SDK skips them).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GlobusBatchStatus)]
pub(crate) struct BatchStatusBody {
    task_ids: Vec<String>,
}

/// Unknown, malformed and other users' ids are left out (the SDK skips them). Written
/// task by task, the large results read in bounded groups ([`crate::answer`]).
pub(crate) async fn batch_status(
    State(state): State<AppState>,
    Caller(user): Caller,
    FerryJson(body): FerryJson<BatchStatusBody>,
) -> ApiResult<Response> {
    if body.task_ids.len() > 10_000 {
        return Err(ApiError::bad_request("more than 10000 task ids in one request"));
    }
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<TaskId> = body
        .task_ids
        .iter()
        .filter_map(|s| s.parse().ok())
        .filter(|id| seen.insert(*id))
        .collect();
    let records = state.store.get_tasks_deferred(&ids, true).await?;
    let mut mine: Vec<TaskRecord> = records
        .into_iter()
        .flatten()
        .filter(|t| t.owner == user)
        .collect();
    // The order of the keys of the answer's `results` object: the ids as text.
    mine.sort_by_cached_key(|t| t.task_id.to_string());
    let endpoints: std::collections::HashSet<EndpointId> = mine.iter().map(|t| t.endpoint_id).collect();
    let mut envs = std::collections::HashMap::new();
    for endpoint in endpoints {
        envs.insert(endpoint, worker_env(&state, endpoint).await.map(Arc::new));
    }
    let records = mine
        .into_iter()
        .map(|t| WithEnv {
            env: envs.get(&t.endpoint_id).cloned().flatten(),
            task: t,
        })
        .collect();
    Answer {
        head: br#"{"response":"batch","results":{"#.to_vec(),
        records,
        tail: b"}}".to_vec(),
        write: |t: WithEnv, out| {
            let id = t.task.task_id.to_string();
            write_keyed(&id, &task_json(t.task, None, t.env.as_deref()), out);
        },
    }
    .respond(&state.store)
    .await
}

/// Every task ever submitted into the group, delivered or not.
pub(crate) async fn task_group(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: TaskGroupId = parse_id(&id)?;
    match state.store.task_group_owner(id).await? {
        Some(owner) if owner == user => {}
        _ => return Err(ApiError::not_found(format!("task group {id} not found"))),
    }
    let tasks: Vec<Value> = state
        .store
        .task_group_tasks(id)
        .await?
        .into_iter()
        .map(|(task, at)| json!({"id": task, "created_at": iso8601(at)}))
        .collect();
    Ok(Json(
        json!({"taskgroup_id": id, "create_websockets_queue": true, "tasks": tasks}),
    ))
}

/// `2026-11-23T01:22:47.972248` (UTC, no offset), as the SDK's fixtures have it.
fn iso8601(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        micros % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_print_as_the_sdk_expects() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00.000000");
        assert_eq!(
            super::iso8601(1_795_370_567_972_248),
            "2026-11-22T18:02:47.972248"
        );
    }
}
