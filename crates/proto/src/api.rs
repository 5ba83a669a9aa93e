//! JSON bodies of Ferry's HTTP API (`/v1`). Ids are typed, so a malformed id is refused
//! by the extractor with the path of the offending field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{BatchId, EndpointId, FunctionId, TaskId, UserId};

/// The body of every error answer: a closed `code` and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    /// Each problem on its own where there were several (an application's inputs: every
    /// one wrong is listed, with its name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One problem of a request: where (`tasks[3].inputs.steps`, an input's name) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// Where in the request: for an application's inputs, `tasks[I].<input name>`.
    pub at: String,
    /// The input's name, for an application's inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    pub message: String,
}

/// `GET /v1/version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Version {
    pub api: String,
    pub version: String,
}

/// `GET /v1/health`: what this web-service can reach, and whether a forwarder runs.
/// Answered 200 when the store and the broker answer and a forwarder is alive, else 503
/// with the same body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok`, or `degraded` when any check below failed.
    pub status: String,
    pub version: String,
    pub store: HealthCheck,
    pub broker: HealthCheck,
    pub forwarder: ForwarderHealth,
}

/// One backend's answer to the health check.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthCheck {
    pub ok: bool,
    /// What failed (when not `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether a forwarder (which dispatches tasks and records endpoints' reports and
/// heartbeats) has swept recently.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForwarderHealth {
    pub alive: bool,
    /// Unix seconds of its last sweep; absent when none ever ran in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<f64>,
}

/// A function's kind, as the API names it (for the API's description; the wire carries
/// a string, checked by `messages::FunctionKind::from_wire_name`).
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum KindName {
    Python,
    Shell,
    Application,
}

/// `POST /v1/functions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterFunction {
    pub name: String,
    /// `"python"` (default) or `"shell"`.
    #[serde(default = "python")]
    #[cfg_attr(feature = "openapi", schema(value_type = KindName))]
    pub kind: String,
    /// Python: a serialized function (`"01\n<base64 dill>"` and the other strategies of
    /// the Globus Compute serializer). Shell: the command template, `{name}` placeholders
    /// filled from the task's named arguments.
    pub code: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Anyone with an account may run it (default: only its owner).
    #[serde(default)]
    pub public: bool,
    /// Users (ids) who may run it besides its owner.
    #[serde(default)]
    pub shared_with: Vec<UserId>,
    /// The Python version (`3.12.1`) that serialized `code` (Python functions; the SDK
    /// sends its own). Code serialized as bytecode runs only where the workers' Python
    /// has the same major.minor: elsewhere its tasks fail saying so.
    #[serde(default)]
    pub python_version: Option<String>,
}

/// `PUT /v1/functions/{id}/sharing` (its owner only): who besides the owner may run it.
/// It replaces what was set before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Sharing {
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub shared_with: Vec<UserId>,
}

fn python() -> String {
    "python".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionRegistered {
    pub function_id: FunctionId,
}

/// `GET /v1/functions/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionDoc {
    pub function_id: FunctionId,
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = KindName))]
    pub kind: String,
    pub description: Option<String>,
    pub created_at: f64,
    pub owner: UserId,
    pub public: bool,
    /// Who else may run it: shown to its owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_with: Option<Vec<UserId>>,
    /// An application's spec (its inputs, for a form; its phases), to whoever may run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub application: Option<serde_json::Value>,
    /// The Python version its code is bound to (bytecode): it runs only on workers of
    /// that major.minor. Absent: any Python (source, or not a Python function).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_version: Option<String>,
}

/// `POST /v1/tasks`: one task or a batch, all for one endpoint; all are accepted or none.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub endpoint_id: EndpointId,
    pub tasks: Vec<SubmitTask>,
    /// Seconds the whole batch (session) may take: when they pass, its unfinished tasks
    /// end `failed` with the cause `timeout`, and the session is failed.
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// Keep the session's event stream from its start, so a WebSocket subscriber that
    /// comes later (or reconnects) misses no step.
    #[serde(default)]
    pub events: bool,
    /// An `http(s)://` URL Ferry POSTs the session's state changes to, signed (see
    /// docs/http-api.md, webhooks).
    #[serde(default)]
    pub callback_url: Option<String>,
    /// The priority of the session's tasks that do not set their own (default 0): a
    /// higher one runs first among the tasks waiting at the endpoint.
    #[serde(default)]
    pub priority: Option<i32>,
    /// What the node running each of the session's tasks must have, for the tasks that
    /// do not say their own (docs/scheduling.md#requirements).
    #[serde(default)]
    pub requires: Option<RequiresBody>,
    /// Which failures run the session's tasks again, for the tasks that do not say
    /// their own (docs/scheduling.md#retries).
    #[serde(default)]
    pub retry: Option<RetryBody>,
    /// The task environment of the endpoint that runs the session's tasks that do not
    /// name their own (docs/scheduling.md#task-environments).
    #[serde(default)]
    pub environment: Option<String>,
}

/// Which failures run a task again, within its `max_retries`, and how long each retry
/// waits: `{"on": ["ConnectionError"], "backoff_secs": 1, "max_backoff_secs": 60}`.
/// `on` takes `exception` (any Python exception), `exit` (a command or application
/// that failed) and exception type names. Each retry waits twice the one before, from
/// `backoff_secs` (default 1) up to `max_backoff_secs` (default 300). A task cancelled
/// or stopped at its walltime never runs again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    pub on: Vec<String>,
    #[serde(default)]
    pub backoff_secs: Option<f64>,
    #[serde(default)]
    pub max_backoff_secs: Option<f64>,
}

/// What a task needs of the node that runs it: `{"cores": 4, "memory_gb": 16, "gpus": 1,
/// "tags": ["avx512"]}`, each optional. A task goes only to a manager whose node has at
/// least that many cores, that much memory and GPUs, and every tag; one that no node of
/// its endpoint can give fails saying why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequiresBody {
    #[serde(default)]
    pub cores: Option<u32>,
    /// Gigabytes (GiB) of memory; fractions are fine (`0.5`).
    #[serde(default)]
    pub memory_gb: Option<f64>,
    #[serde(default)]
    pub gpus: Option<u32>,
    /// Labels the node's manager was started with (`FERRY_NODE_TAGS`): letters, digits,
    /// `_`, `-`, `.`; at most 16 of at most 64 bytes.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `POST /v1/sessions`: several sessions (batches) in one request. Every session is
/// checked before any is created; they are created together, all or none.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionsRequest {
    pub sessions: Vec<SubmitRequest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionsResponse {
    /// In the order of the request's sessions.
    pub sessions: Vec<SessionCreated>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionCreated {
    pub session_id: BatchId,
    /// In the order of the session's tasks.
    pub task_ids: Vec<TaskId>,
    /// With a `callback_url`: the key of the HMAC-SHA256 signature on every delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_secret: Option<String>,
}

/// `GET /v1/sessions/{id}`: a session's progress, read in O(1) whatever its size.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionDoc {
    pub session_id: BatchId,
    pub endpoint_id: EndpointId,
    pub size: u64,
    /// `"running"`, `"completed"` (every task terminal) or `"failed"` (timed out or
    /// cancelled; see `reason`).
    pub status: String,
    /// True while some task is not terminal.
    pub pending: bool,
    /// How many tasks are in each state (every state is listed); they sum to `size`.
    pub counts: BTreeMap<String, u64>,
    pub created_at: f64,
    /// When the last task became terminal.
    pub completed_at: Option<f64>,
    /// When the session times out, if it has a timeout.
    pub deadline: Option<f64>,
    /// Why a failed session failed: `"timeout"` or `"cancelled"`.
    pub reason: Option<String>,
    /// The webhook's delivery status, when the session has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackStatus>,
}

/// `GET /v1/sessions`: the caller's sessions, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionList {
    pub sessions: Vec<SessionDoc>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<f64>,
}

/// How a session's webhook deliveries are going.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackStatus {
    pub url: String,
    /// Events delivered (acknowledged with a 2xx).
    pub delivered: u64,
    /// Failed delivery attempts so far (each retried with backoff).
    pub failures: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
    /// True once every event of a finished session is delivered.
    pub done: bool,
}

/// `GET /v1/sessions/{id}/tasks?offset=&limit=`: a page of a session's tasks, in
/// submission order, with their results.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionTasksPage {
    pub session_id: BatchId,
    pub offset: u64,
    pub size: u64,
    /// Where the next page starts; absent on the last page.
    pub next_offset: Option<u64>,
    pub tasks: Vec<TaskDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    pub function_id: FunctionId,
    /// Python: packed serialized `(args, kwargs)`. Shell: a JSON object of named values.
    #[serde(default)]
    pub payload: String,
    /// Retries after a lost worker or manager; the service's default when absent.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Seconds the task may run before it is stopped and fails with the cause `timeout`.
    #[serde(default)]
    pub walltime_secs: Option<f64>,
    /// Higher runs first among the tasks waiting at the endpoint (default: the
    /// session's `priority`, else 0).
    #[serde(default)]
    pub priority: Option<i32>,
    /// What the node running it must have (default: the session's `requires`).
    #[serde(default)]
    pub requires: Option<RequiresBody>,
    /// Which failures run it again (default: the session's `retry`).
    #[serde(default)]
    pub retry: Option<RetryBody>,
    /// The endpoint's task environment that runs it (default: the session's
    /// `environment`, else the endpoint's own Python).
    #[serde(default)]
    pub environment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitResponse {
    pub batch_id: BatchId,
    /// In the order of the request's tasks.
    pub task_ids: Vec<TaskId>,
    /// With a `callback_url`: the key of the HMAC-SHA256 signature on every delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_secret: Option<String>,
}

/// One entry of a task's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    pub state: String,
    pub attempt: u32,
    /// Unix seconds.
    pub at: f64,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/tasks/{id}`, and each value of a status answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskDoc {
    pub task_id: TaskId,
    /// False once the task is `success` or `failed`.
    pub pending: bool,
    pub status: String,
    pub attempt: u32,
    pub function_id: FunctionId,
    pub endpoint_id: EndpointId,
    pub batch_id: BatchId,
    pub created_at: f64,
    /// The serialized return value (success only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The task succeeded but its (large) result has passed its retention period.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub result_expired: bool,
    /// The remote traceback or failure reason (failed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// The serialized exception object, when it could be serialized (failed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_data: Option<String>,
    /// Unix seconds when the task was last seen alive on a manager, while it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<f64>,
    /// Unix seconds as a string, once terminal (the Globus Compute convention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_t: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Why the task waits (`GET /v1/tasks/{id}` only, while the task is `received`,
    /// `waiting-for-ep` or `waiting-for-nodes`): no forwarder is running to dispatch it
    /// (and since when one was seen), the endpoint is offline (and for how long), every
    /// worker is busy, a block is pending in the scheduler's queue (with its job id and
    /// the scheduler's reason), scaling is paused (and why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// An application run's phases, each a step of its own (`GET /v1/tasks/{id}` only,
    /// once the run has ended): taken from its result, or from its exception data when
    /// it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<Vec<PhaseStep>>,
    pub history: Vec<HistoryEntry>,
}

/// One phase of an application run, as the task's record shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PhaseStep {
    /// `prolog`, `execute` or `epilog`.
    pub name: String,
    /// `succeeded`, `failed`, `timed_out` or `skipped`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// The signal that killed it (`SIGSEGV`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Why it failed, or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds; absent for a skipped phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<f64>,
}

/// `POST /v1/tasks/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    pub task_ids: Vec<TaskId>,
    /// `false`: the documents leave out the history (empty), a cheaper read when
    /// polling many tasks for their results.
    #[serde(default = "yes")]
    pub history: bool,
    /// Wait up to this many seconds (at most 60) for at least one of the tasks to be
    /// finished before answering (a long poll); absent or 0 answers at once.
    #[serde(default)]
    pub wait_secs: Option<f64>,
    /// `true`: each document is a [`BriefDoc`] (the outcome alone), for a caller that
    /// collects many results and already knows the rest.
    #[serde(default)]
    pub brief: bool,
}

fn yes() -> bool {
    true
}

/// A task's outcome alone, as `POST /v1/tasks/status` answers with `"brief": true`:
/// no ids, times or history, a third of a full document's bytes to write and parse.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BriefDoc {
    /// False once the task is `success` or `failed`.
    pub pending: bool,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub result_expired: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_t: Option<String>,
}

/// The answer to `POST /v1/tasks/status`: [`TaskDoc`]s, or [`BriefDoc`]s when asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusResponse<D = TaskDoc> {
    pub tasks: BTreeMap<TaskId, D>,
    /// Requested ids that do not exist or are not the caller's.
    pub unknown: Vec<TaskId>,
}

/// `GET /v1/batches/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchDoc {
    pub batch_id: BatchId,
    pub endpoint_id: EndpointId,
    pub size: u64,
    pub created_at: f64,
    pub task_ids: Vec<TaskId>,
}

/// `POST /v1/endpoints`: an endpoint daemon registers (or re-registers) itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterEndpoint {
    pub name: String,
    /// Present when re-registering an endpoint that already has an id.
    #[serde(default)]
    pub endpoint_id: Option<EndpointId>,
    /// Anyone with an account may send it tasks (default: only its owner). From the
    /// endpoint's config, at every registration.
    #[serde(default)]
    pub public: bool,
    /// Users (ids) who may send it tasks besides its owner.
    #[serde(default)]
    pub shared_with: Vec<UserId>,
    /// When set, the only functions it runs, whoever sends them (Globus Compute's
    /// `allowed_functions`); checked by the web-service and again by the endpoint.
    #[serde(default)]
    pub allowed_functions: Option<Vec<FunctionId>>,
    /// The versions its workers' Python runs (read by the endpoint at start, from the
    /// interpreter its local workers use), handed to Globus Compute SDKs with each task
    /// so they can compare environments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_env: Option<WorkerEnv>,
}

/// What the workers' Python is: what the Globus Compute SDK compares with its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkerEnv {
    /// `3.11.2`
    pub python_version: String,
    /// `0.3.9`
    pub dill_version: String,
    /// `platform.platform()`
    pub os: String,
}

/// `POST /v1/endpoints/{id}/still_to_run`: an endpoint given a task message again (the
/// broker redelivered it after a restart), or one carrying a re-dispatched copy (an
/// attempt after the first), asks which of its copies are still to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StillToRunRequest {
    /// At most 10,000.
    pub tasks: Vec<TaskCopy>,
}

/// A task's copy an endpoint holds: the task, at the attempt its message carries.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskCopy {
    pub task_id: TaskId,
    pub attempt: u32,
}

/// The copies to run: their task is this endpoint's, unfinished, and its record not
/// past that attempt. The others are finished, or were dispatched again as a newer
/// attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StillToRun {
    pub run: Vec<TaskId>,
}

/// What an endpoint needs to talk AMQP after registering.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointRegistered {
    pub endpoint_id: EndpointId,
    /// `amqp://user:pass@host:port/vhost`.
    pub broker_url: String,
    /// The prefix of every queue name.
    pub namespace: String,
    pub heartbeat_interval_ms: u64,
    /// Inputs and results above this size travel by reference (the data plane).
    #[serde(default = "default_inline_limit")]
    pub inline_limit_bytes: u64,
    /// Results above this size fail their task.
    #[serde(default = "default_max_data")]
    pub max_result_bytes: u64,
    /// A new credential for this endpoint (`fe_...`), when a user registered it: the
    /// endpoint keeps it and uses it from then on, instead of its owner's token. It may
    /// register, read and delete this endpoint and move its tasks' data, nothing else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_token: Option<String>,
}

fn default_inline_limit() -> u64 {
    64 * 1024
}

fn default_max_data() -> u64 {
    10 * 1024 * 1024
}

/// `GET /v1/endpoints/{id}` and each element of `GET /v1/endpoints`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointDoc {
    pub endpoint_id: EndpointId,
    pub name: String,
    /// `"online"` or `"offline"`.
    pub status: String,
    /// Unix seconds of the last heartbeat, if any.
    pub last_heartbeat: Option<f64>,
    pub details: serde_json::Value,
    pub owner: UserId,
    pub public: bool,
    /// Who else may send it tasks: shown to its owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_with: Option<Vec<UserId>>,
    /// The only functions it runs, when it is restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_functions: Option<Vec<FunctionId>>,
}
