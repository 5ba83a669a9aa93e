//! Messages that travel over RabbitMQ.
//!
//! - [`TaskBatch`]: web-service -> forwarder (`<ns>.submissions`) and forwarder ->
//!   endpoint (`<ns>.ep.<endpoint-id>.tasks`). Tasks travel many to a message; the code
//!   of each function they use travels once per message.
//! - [`CancelTasks`]: web-service or forwarder -> endpoint (`<ns>.ep.<endpoint-id>.control`).
//! - [`EndpointMessage`]: endpoint -> forwarder: heartbeats (`<ns>.status`), and status
//!   updates with results (`<ns>.results`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::state::{Actor, EventKind};
use crate::time::Micros;
use crate::{BatchId, EndpointId, FunctionId, ManagerId, TaskGroupId, TaskId};

/// What a function is: Python code run by a warm interpreter, a shell command run
/// directly, or an application (a JSON spec of typed inputs and up to three phase
/// scripts, see the `ferry-app` crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FunctionKind {
    Python,
    Shell,
    Application,
}

impl FunctionKind {
    pub fn wire_name(self) -> &'static str {
        match self {
            FunctionKind::Python => "python",
            FunctionKind::Shell => "shell",
            FunctionKind::Application => "application",
        }
    }

    pub fn from_wire_name(name: &str) -> Option<Self> {
        match name {
            "python" => Some(FunctionKind::Python),
            "shell" => Some(FunctionKind::Shell),
            "application" => Some(FunctionKind::Application),
            _ => None,
        }
    }
}

/// A function's code as the worker needs it. Opaque to Rust for Python functions (a
/// serialized-function string); the command template for shell functions.
///
/// In a task message, code larger than [`FUNCTION_INLINE_LIMIT`] travels by reference:
/// `code` is empty and `by_reference` its size, and the endpoint fetches it once (`GET
/// /v1/tasks/{id}/function` for one of the message's tasks) and keeps it, so a large
/// function submitted many times is not copied into every message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCode {
    pub function_id: FunctionId,
    pub kind: FunctionKind,
    pub code: Bytes,
    /// Set: the code (this many bytes) is not in the message; fetch it.
    pub by_reference: Option<u64>,
    /// The Python version (`3.12.1`) the code was serialized on, when it loads only
    /// there (Python bytecode, see [`crate::python`]); `None`: any Python.
    pub python: Option<String>,
}

/// Function code above this many bytes travels by reference in task messages.
pub const FUNCTION_INLINE_LIMIT: usize = 64 * 1024;

impl FunctionCode {
    /// The code inline.
    pub fn inline(function_id: FunctionId, kind: FunctionKind, code: Bytes) -> Self {
        Self {
            function_id,
            kind,
            code,
            by_reference: None,
            python: None,
        }
    }

    /// The same, bound to the Python version it was serialized on (`None`: any).
    pub fn bound_to(mut self, python: Option<String>) -> Self {
        self.python = python;
        self
    }

    /// As a task message carries it: inline up to [`FUNCTION_INLINE_LIMIT`], by
    /// reference above.
    pub fn for_message(function_id: FunctionId, kind: FunctionKind, code: &Bytes) -> Self {
        if code.len() <= FUNCTION_INLINE_LIMIT {
            return Self::inline(function_id, kind, code.clone());
        }
        Self {
            function_id,
            kind,
            code: Bytes::new(),
            by_reference: Some(code.len() as u64),
            python: None,
        }
    }
}

/// One task as it is dispatched: which function, which input, which attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: TaskId,
    pub function_id: FunctionId,
    /// The attempt this dispatch belongs to; every report about it carries it back.
    pub attempt: u32,
    /// How many times the endpoint may retry the task after losing its worker or manager.
    pub max_retries: u32,
    /// The serialized arguments (opaque to Rust for Python functions; a JSON object of
    /// named values for shell functions).
    pub payload: Bytes,
    /// The task group whose result queue gets the result, when the submitter asked for
    /// one.
    pub group: Option<TaskGroupId>,
    /// How long the task may run; the worker stops it after that and it fails with the
    /// cause `timeout`.
    pub walltime_ms: Option<u64>,
    /// Set when the input is too large to travel in the message: `payload` is empty and
    /// the endpoint fetches these many bytes from the web-service's data plane.
    pub input_bytes: Option<u64>,
    /// How many times the task went back to its endpoint's queue because the block
    /// running it ended (walltime, preemption), without being charged an attempt. The
    /// endpoint charges the next such loss once this reaches its limit, so a task longer
    /// than any block cannot go around for ever.
    pub requeues: u32,
    /// Higher goes first: the endpoint hands out its waiting tasks by priority, first
    /// come first within one (0 unless the submission set one).
    pub priority: i32,
    /// What the node that runs it must have; `None`: any node.
    pub requires: Option<Requires>,
    /// Which failures run it again, and after how long; `None`: none (only a lost
    /// worker or manager does, as for every task).
    pub retry: Option<RetryPolicy>,
    /// Unix micros before which it is not handed to a manager (the backoff of a retry).
    pub not_before: Option<Micros>,
    /// The task environment (`[provider.environments.<name>]` of the endpoint) whose
    /// Python host runs it; `None`: the endpoint's own (`provider.python`), or, for
    /// bytecode of another Python, an environment the endpoint picks with a matching one
    /// (docs/scheduling.md#task-environments).
    pub environment: Option<String>,
    /// The session (batch) it was submitted in: an environment that recycles when a
    /// session completes replaces the hosts that ran it.
    pub session: Option<BatchId>,
}

/// When a task that failed runs again, within its `max_retries`: on which failures, and
/// after how long. A task cancelled or stopped at its walltime never runs again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// `exception` (any Python exception), `exit` (a command or application that
    /// failed), or exception type names (`ConnectionError`, matched against the type the
    /// traceback ends with, with or without its module).
    pub on: Vec<String>,
    /// The wait before the first retry, doubled for each next one...
    pub backoff_ms: u64,
    /// ...up to this.
    pub max_backoff_ms: u64,
}

impl RetryPolicy {
    /// Whether a failure of a function of `kind` with this traceback is one to retry.
    pub fn matches(&self, kind: FunctionKind, traceback: &str) -> bool {
        match kind {
            FunctionKind::Python => {
                self.on.iter().any(|o| o == "exception")
                    || exception_type(traceback).is_some_and(|t| {
                        let short = t.rsplit('.').next().unwrap_or(t);
                        self.on.iter().any(|o| o == t || o == short)
                    })
            }
            FunctionKind::Shell | FunctionKind::Application => self.on.iter().any(|o| o == "exit"),
        }
    }

    /// The wait before running again after attempt `attempt` (0 the first) failed.
    pub fn backoff(&self, attempt: u32) -> std::time::Duration {
        let ms = self
            .backoff_ms
            .saturating_mul(1u64 << attempt.min(32))
            .min(self.max_backoff_ms.max(self.backoff_ms));
        std::time::Duration::from_millis(ms)
    }
}

/// The exception type a Python traceback ends with: `ValueError` of `ValueError: bad`,
/// `requests.exceptions.ConnectionError` as written (the last line naming one).
pub fn exception_type(traceback: &str) -> Option<&str> {
    traceback.lines().rev().find_map(|line| {
        let name = line.split(':').next()?.trim_end();
        (!line.starts_with(' ') && is_exception_name(name)).then_some(name)
    })
}

/// Whether `name` reads as a (dotted) Python exception type name: what a retry policy
/// names and a traceback ends with.
pub fn is_exception_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.split('.').all(|part| {
            part.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// What a task needs of the node that runs it: at least these cores, this memory,
/// these GPUs, and every one of these tags (what the node's manager says it has, see
/// [`crate::frames::ManagerInfo`]). Zero and empty ask nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requires {
    pub cores: u32,
    pub memory_mb: u64,
    pub gpus: u32,
    pub tags: Vec<String>,
}

/// Whether `tag` may name a node's property: 1 to 64 letters, digits, `_`, `-`, `.`.
pub fn is_tag(tag: &str) -> bool {
    (1..=64).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Requires {
    /// Whether a node with these facts has it all (what [`Requires::unmet_by`] finds
    /// empty, without saying so in words).
    pub fn met_by(&self, node: &crate::frames::ManagerInfo) -> bool {
        self.cores <= node.cores
            && self.memory_mb <= node.memory_bytes / (1024 * 1024)
            && self.gpus <= node.gpus
            && self.tags.iter().all(|t| node.tags.contains(t))
    }

    /// What a node with these facts lacks of it, each said as what is asked and what the
    /// node has (`"4 cores (it has 2)"`, `"tag avx512"`); empty when it has it all.
    pub fn unmet_by(&self, node: &crate::frames::ManagerInfo) -> Vec<String> {
        let mut lacks = Vec::new();
        if self.cores > node.cores {
            lacks.push(format!("{} cores (it has {})", self.cores, node.cores));
        }
        let node_mb = node.memory_bytes / (1024 * 1024);
        if self.memory_mb > node_mb {
            lacks.push(format!("{} MiB of memory (it has {node_mb})", self.memory_mb));
        }
        if self.gpus > node.gpus {
            lacks.push(format!("{} GPUs (it has {})", self.gpus, node.gpus));
        }
        for tag in &self.tags {
            if !node.tags.contains(tag) {
                lacks.push(format!("tag {tag}"));
            }
        }
        lacks
    }

    /// `4 cores, 2048 MiB, 1 GPU, tags avx512`: what is asked.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.cores > 0 {
            parts.push(format!("{} cores", self.cores));
        }
        if self.memory_mb > 0 {
            parts.push(format!("{} MiB of memory", self.memory_mb));
        }
        if self.gpus > 0 {
            parts.push(format!("{} GPUs", self.gpus));
        }
        if !self.tags.is_empty() {
            parts.push(format!("tags {}", self.tags.join(", ")));
        }
        if parts.is_empty() {
            "nothing".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// Tasks for one endpoint, with the code of every function they use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskBatch {
    pub endpoint_id: EndpointId,
    pub functions: Vec<FunctionCode>,
    pub tasks: Vec<TaskSpec>,
}

/// Stop these tasks (cancelled, or their session timed out): on an endpoint's control
/// queue (`<ns>.ep.<endpoint-id>.control`), which it reads apart from its task queue so a
/// cancel never waits behind queued tasks. The tasks' records are already terminal; this
/// only frees the workers and keeps copies still queued from running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelTasks {
    pub endpoint_id: EndpointId,
    pub task_ids: Vec<TaskId>,
}

/// One step of a task on the endpoint's side, when it happened and who saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub task_id: TaskId,
    pub attempt: u32,
    pub kind: EventKind,
    pub at: Micros,
    pub by: Actor,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Completion {
    /// The function returned; the serialized value.
    Success { result: Bytes },
    /// The function raised or the task could not run. `traceback` is the text a user
    /// reads; `exception` is the serialized exception object when it could be
    /// serialized, so the SDK can re-raise it.
    Failure {
        traceback: String,
        exception: Option<Bytes>,
    },
    /// The worker or manager running the task is gone and the task's retries are spent.
    Lost { reason: String },
    /// The task ran past its walltime and was stopped.
    TimedOut { reason: String },
    /// The function returned a value too large to travel in the message: the endpoint
    /// stored these many bytes in the data plane (under the task and attempt) first.
    SuccessByReference { bytes: u64 },
}

impl Completion {
    /// `success`, `failed`, `lost` or `timed-out`: how metrics and traces name it.
    pub fn outcome(&self) -> &'static str {
        match self {
            Completion::Success { .. } | Completion::SuccessByReference { .. } => "success",
            Completion::Failure { .. } => "failed",
            Completion::Lost { .. } => "lost",
            Completion::TimedOut { .. } => "timed-out",
        }
    }
}

/// The end of one attempt of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task_id: TaskId,
    pub attempt: u32,
    /// The task's endpoint-side steps of this attempt, oldest first. The forwarder
    /// applies them before the terminal event, so the history is complete even when the
    /// result overtakes the status reports.
    pub steps: Vec<StatusUpdate>,
    pub completion: Completion,
    /// The task group whose result queue gets this result (copied from the task).
    pub group: Option<TaskGroupId>,
    /// When the function ended.
    pub finished_at: Micros,
    pub stdout: String,
    pub stderr: String,
}

/// An endpoint's view of its capacity, sent with every heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointLoad {
    pub managers: u32,
    pub total_workers: u32,
    pub idle_workers: u32,
    /// Tasks received and not yet given to a manager.
    pub pending_tasks: u32,
    /// Tasks held by managers.
    pub outstanding_tasks: u32,
    pub manager_ids: Vec<ManagerId>,
    /// The provider's blocks and whether scaling runs (none for a manual endpoint).
    pub provider: Option<ProviderReport>,
    /// Each manager connected now (the nodes), in the order they connected.
    pub manager_loads: Vec<ManagerLoad>,
}

/// One manager (one node) as its endpoint sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerLoad {
    pub manager_id: ManagerId,
    pub hostname: String,
    /// The provider's block it belongs to, if any.
    pub block_id: Option<String>,
    pub workers: u32,
    /// Tasks it holds now (running, or queued at its workers).
    pub tasks: u32,
    pub cores: u32,
    pub memory_bytes: u64,
    pub gpus: u32,
    pub tags: Vec<String>,
    /// It gets no more tasks: its block ends soon.
    pub draining: bool,
}

/// What an endpoint's provider is doing: its blocks, and whether it may add more.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderReport {
    /// `local`, `slurm` or `pbs`.
    pub kind: String,
    /// Why scaling holds back, when it does (`paused after 3 refused submissions: ...`,
    /// `backing off after ...`); `None` while it runs freely.
    pub scaling: Option<String>,
    /// The blocks alive, and those ended lately, oldest first.
    pub blocks: Vec<BlockReport>,
}

/// One block (one scheduler job) as its endpoint sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockReport {
    pub block_id: String,
    /// The scheduler's job id, once submitted.
    pub job_id: Option<String>,
    /// `submitting`, `pending`, `held`, `running`, `draining`, `cancelling`, or how it
    /// ended: `completed`, `failed`, `cancelled`, `timed-out`, `preempted`, `missing`.
    pub state: String,
    /// The scheduler's words (why it is pending, how it failed), or the endpoint's.
    pub reason: Option<String>,
    pub nodes: u32,
    /// Managers of this block connected now.
    pub managers: u32,
    /// Tasks its managers hold now.
    pub tasks: u32,
    pub submitted_at: Micros,
    pub ended_at: Option<Micros>,
}

/// Everything an endpoint tells the forwarder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointMessage {
    /// "I am alive"; `interval_ms` is how often the next ones will come, `0` on a clean
    /// shutdown.
    Heartbeat {
        endpoint_id: EndpointId,
        at: Micros,
        interval_ms: u64,
        load: EndpointLoad,
        /// Tasks held by managers that are alive now: their records show when they were
        /// last seen, so a slow task can be told from a dead one.
        alive: Vec<TaskId>,
    },
    /// What happened to tasks since the last report: non-terminal steps, then results.
    /// One message carries both, so a busy endpoint sends one message per flush.
    Reports {
        endpoint_id: EndpointId,
        updates: Vec<StatusUpdate>,
        results: Vec<TaskResult>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManagerId;
    use crate::frames::ManagerInfo;

    fn node(cores: u32, gib: u64, gpus: u32, tags: &[&str]) -> ManagerInfo {
        ManagerInfo {
            manager_id: ManagerId::new(),
            hostname: "n1".into(),
            workers: 1,
            capacity: 1,
            cores,
            memory_bytes: gib << 30,
            gpus,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            block_id: None,
            block_end: None,
            priority: 0,
        }
    }

    #[test]
    fn requirements_are_met_at_or_under_what_the_node_has_and_what_lacks_is_named() {
        let asks = Requires {
            cores: 4,
            memory_mb: 8192,
            gpus: 1,
            tags: vec!["avx512".into()],
        };
        assert!(asks.met_by(&node(4, 8, 1, &["avx512", "x"])));
        assert!(asks.unmet_by(&node(4, 8, 1, &["avx512"])).is_empty());
        let small = node(2, 4, 0, &["avx2"]);
        assert!(!asks.met_by(&small));
        assert_eq!(
            asks.unmet_by(&small),
            [
                "4 cores (it has 2)",
                "8192 MiB of memory (it has 4096)",
                "1 GPUs (it has 0)",
                "tag avx512"
            ]
        );
        assert_eq!(
            asks.describe(),
            "4 cores, 8192 MiB of memory, 1 GPUs, tags avx512"
        );
        assert!(Requires::default().met_by(&node(0, 0, 0, &[])));
        assert!(is_tag("big.mem-2_x") && !is_tag("") && !is_tag("a,b") && !is_tag(&"x".repeat(65)));
    }

    #[test]
    fn a_retry_policy_matches_by_kind_and_exception_type_and_backs_off_to_its_cap() {
        let tb = "Traceback (most recent call last):\n  File \"x\", line 1, in f\n    raise E\nrequests.exceptions.ConnectionError: down\n";
        assert_eq!(exception_type(tb), Some("requests.exceptions.ConnectionError"));
        assert_eq!(exception_type("ValueError"), Some("ValueError"));
        assert_eq!(exception_type("a: b c: d\n  indented: x"), Some("a"));
        let on = |names: &[&str]| RetryPolicy {
            on: names.iter().map(|n| n.to_string()).collect(),
            backoff_ms: 100,
            max_backoff_ms: 250,
        };
        assert!(on(&["ConnectionError"]).matches(FunctionKind::Python, tb));
        assert!(on(&["requests.exceptions.ConnectionError"]).matches(FunctionKind::Python, tb));
        assert!(on(&["exception"]).matches(FunctionKind::Python, tb));
        assert!(!on(&["ValueError", "exit"]).matches(FunctionKind::Python, tb));
        assert!(on(&["exit"]).matches(FunctionKind::Shell, "exit status 3"));
        assert!(!on(&["exception"]).matches(FunctionKind::Application, "exit status 3"));
        let p = on(&["exception"]);
        let waits: Vec<u64> = (0..4).map(|a| p.backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 250, 250]);
    }
}
