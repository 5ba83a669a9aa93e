//! The records Ferry keeps, as the store hands them out.

use bytes::Bytes;
use ferry_proto::messages::FunctionKind;
use ferry_proto::state::FailureCause;
use ferry_proto::time::Micros;
use ferry_proto::{
    Actor, BatchId, EndpointId, Event, EventKind, FunctionId, TaskGroupId, TaskId, TaskState, UserId,
};

/// A registered function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRecord {
    pub function_id: FunctionId,
    pub owner: UserId,
    pub name: String,
    pub kind: FunctionKind,
    pub code: Bytes,
    pub description: Option<String>,
    pub created_at: Micros,
    /// Anyone may run it.
    pub public: bool,
    /// Users who may run it besides its owner.
    pub shared_with: Vec<UserId>,
    /// The Python version its code was serialized on, when the code loads only there
    /// (bytecode: `ferry_proto::python`); `None`: any Python.
    pub python: Option<String>,
}

impl FunctionRecord {
    /// Whether `user` may run it.
    pub fn usable_by(&self, user: UserId) -> bool {
        self.owner == user || self.public || self.shared_with.contains(&user)
    }
}

/// A registered endpoint and what its heartbeats said last.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRecord {
    pub endpoint_id: EndpointId,
    pub owner: UserId,
    pub name: String,
    pub created_at: Micros,
    pub last_heartbeat: Option<Micros>,
    /// The period the endpoint announced (0 after a clean shutdown).
    pub heartbeat_interval_ms: u64,
    /// When the forwarder declared the endpoint lost (heartbeats missed); cleared by
    /// the next heartbeat.
    pub lost_at: Option<Micros>,
    /// The endpoint's load as of its last heartbeat, as JSON.
    pub details: serde_json::Value,
    /// Anyone may send it tasks.
    pub public: bool,
    /// Users who may send it tasks besides its owner.
    pub shared_with: Vec<UserId>,
    /// When set, the only functions it runs.
    pub allowed_functions: Option<Vec<FunctionId>>,
}

impl EndpointRecord {
    /// Whether `user` may send it tasks (which functions is another question).
    pub fn usable_by(&self, user: UserId) -> bool {
        self.owner == user || self.public || self.shared_with.contains(&user)
    }

    /// Whether it runs `function`.
    pub fn allows(&self, function: FunctionId) -> bool {
        self.allowed_functions
            .as_ref()
            .is_none_or(|list| list.contains(&function))
    }
}

/// A batch of tasks submitted in one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    pub batch_id: BatchId,
    pub owner: UserId,
    pub endpoint_id: EndpointId,
    pub size: u64,
    pub created_at: Micros,
    /// The task group the batch's tasks join, if any.
    pub task_group: Option<TaskGroupId>,
    /// When the batch times out: its unfinished tasks then end `failed` (timeout).
    pub deadline: Option<Micros>,
    /// Keep an event stream of every step of its tasks from the start (a WebSocket
    /// client or a webhook will want them all).
    pub events: bool,
    /// Where state changes are POSTed (webhook), if anywhere.
    pub callback_url: Option<String>,
    /// The key the webhook's deliveries are signed with.
    pub callback_secret: Option<String>,
}

/// A webhook due for delivery: where to, with which key, and from which event on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub batch_id: BatchId,
    pub url: String,
    pub secret: String,
    /// The last delivered event (`"0"`: none yet).
    pub cursor: String,
    pub failures: u64,
    /// Every task of the batch is terminal.
    pub batch_done: bool,
}

/// One step of one task of a batch, from the batch's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEvent {
    pub batch_id: BatchId,
    /// The stream entry's id: read again after it to resume.
    pub cursor: String,
    pub task_id: TaskId,
    pub step: HistoryStep,
}

impl BatchEvent {
    /// The step as clients see it (WebSocket messages, webhook deliveries):
    /// `{"task_id", "state", "attempt", "at", "by", "reason"?}`.
    pub fn step_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "task_id": self.task_id,
            "state": self.step.state.wire_name(),
            "attempt": self.step.attempt,
            "at": ferry_proto::time::to_secs(self.step.at),
            "by": self.step.by.wire_name(),
        });
        if let Some(cause) = self.step.cause {
            v["reason"] = serde_json::json!(cause.wire_name());
        }
        v
    }
}

/// A batch as it stands: its record, how many of its tasks are in each state (kept by
/// the transition script, so reading them is O(1)), and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStatus {
    pub record: BatchRecord,
    /// Tasks per state, indexed by [`TaskState::code`]; they sum to `record.size`.
    pub counts: [u64; 7],
    /// When the last task became terminal.
    pub done_at: Option<Micros>,
    /// When the batch timed out, if it did.
    pub timed_out_at: Option<Micros>,
    /// When its owner cancelled it, if they did before it completed.
    pub cancelled_at: Option<Micros>,
    /// How its webhook deliveries are going, if it has one.
    pub callback: Option<ferry_proto::api::CallbackStatus>,
}

/// Which part of a batch's tasks a write holds (see `Store::create_part`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// All of them: the batch is committed by this one write.
    Whole,
    /// The first of several: writes the batch itself. The batch is being written
    /// until `Store::commit_batches`; none of its tasks may be dispatched before.
    First,
    /// A later one.
    Middle,
}

/// A task as submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub task_id: TaskId,
    pub function_id: FunctionId,
    pub max_retries: u32,
    /// The serialized input, kept until the task is terminal so that it can be
    /// dispatched again (after its endpoint was lost).
    pub payload: Bytes,
    pub walltime_ms: Option<u64>,
    /// Higher goes first at the endpoint; kept (when not 0) for a dispatch again.
    pub priority: i32,
    /// What its node must have; kept for a dispatch again.
    pub requires: Option<ferry_proto::messages::Requires>,
    /// Which failures run it again; kept for a dispatch again.
    pub retry: Option<ferry_proto::messages::RetryPolicy>,
    /// The endpoint's task environment that runs it; kept for a dispatch again.
    pub environment: Option<String>,
    /// The task group whose result queue gets the result, if any.
    pub result_group: Option<TaskGroupId>,
    /// Keep the input under its own key (it is large and travels by reference).
    pub by_reference: bool,
}

/// What the forwarder needs to dispatch an unfinished task again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redispatch {
    pub task_id: TaskId,
    pub function_id: FunctionId,
    pub endpoint_id: EndpointId,
    pub state: TaskState,
    pub attempt: u32,
    pub max_retries: u32,
    /// Empty when the input travels by reference (`input_bytes`).
    pub payload: Bytes,
    pub input_bytes: Option<u64>,
    pub walltime_ms: Option<u64>,
    pub priority: i32,
    pub requires: Option<ferry_proto::messages::Requires>,
    pub retry: Option<ferry_proto::messages::RetryPolicy>,
    pub environment: Option<String>,
    /// The batch (session) it was submitted in.
    pub batch_id: Option<BatchId>,
    pub result_group: Option<TaskGroupId>,
}

/// One step in a task's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryStep {
    pub state: TaskState,
    pub attempt: u32,
    pub at: Micros,
    pub by: Actor,
    pub cause: Option<FailureCause>,
}

/// A task record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub task_id: TaskId,
    pub owner: UserId,
    pub function_id: FunctionId,
    pub endpoint_id: EndpointId,
    pub batch_id: BatchId,
    pub state: TaskState,
    pub attempt: u32,
    pub max_retries: u32,
    pub created_at: Micros,
    pub completed_at: Option<Micros>,
    /// When the task was last seen alive on a manager (while it ran).
    pub last_seen: Option<Micros>,
    pub cause: Option<FailureCause>,
    pub result: Option<String>,
    /// The attempt whose result is kept in the data plane (large results).
    pub result_ref: Option<u32>,
    /// The task succeeded but its result (kept in the data plane) has expired.
    pub result_expired: bool,
    pub traceback: Option<String>,
    pub exception: Option<String>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub history: Vec<HistoryStep>,
}

/// What a caller collecting results needs of a task: its outcome, no ids, times,
/// output or history ([`crate::Store::get_task_briefs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    pub task_id: TaskId,
    pub owner: UserId,
    pub state: TaskState,
    pub attempt: u32,
    pub completed_at: Option<Micros>,
    pub cause: Option<FailureCause>,
    pub result: Option<String>,
    /// The attempt whose result is kept in the data plane (large results).
    pub result_ref: Option<u32>,
    /// The task succeeded but its result (kept in the data plane) has expired.
    pub result_expired: bool,
    pub traceback: Option<String>,
    pub exception: Option<String>,
}

/// The payload of a terminal report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub success: bool,
    /// The result is in the data plane (stored by the endpoint under the task and this
    /// report's attempt); `data` is empty.
    pub by_reference: bool,
    /// The serialized result (success) or the traceback text (failure).
    pub data: Bytes,
    /// The serialized exception, when there is one.
    pub exception: Bytes,
    pub stdout: String,
    pub stderr: String,
}

/// One event for one task, as the store applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub task_id: TaskId,
    pub event: Event,
    pub at: Micros,
    pub by: Actor,
    /// The endpoint that sent it, when an endpoint did: it applies only to a task of
    /// that endpoint (to any other it is [`Applied::Foreign`]).
    pub from: Option<EndpointId>,
    /// Present on `Succeeded` and `Failed` reports.
    pub finish: Option<Finish>,
}

impl Report {
    /// A service's own terminal report on a task it ends (a timeout, a refused
    /// submission, a deleted endpoint): `kind` at `attempt`, by `by` at `at`, the
    /// result's data saying `why`, no output.
    pub fn ended_by(
        task_id: TaskId,
        attempt: u32,
        kind: EventKind,
        by: Actor,
        at: Micros,
        why: Bytes,
    ) -> Self {
        Report {
            task_id,
            event: Event { kind, attempt },
            at,
            by,
            from: None,
            finish: Some(Finish {
                success: false,
                by_reference: false,
                data: why,
                exception: Bytes::new(),
                stdout: String::new(),
                stderr: String::new(),
            }),
        }
    }
}

/// What the store did with a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The record moved; `terminal` when this was the task's first terminal event.
    Moved {
        to: TaskState,
        attempt: u32,
        cause: Option<FailureCause>,
    },
    Ignored(ferry_proto::Ignored),
    /// No such task (expired, or never existed).
    Unknown,
    /// The report came from an endpoint other than the task's: nothing changed.
    Foreign,
}
