//! The task state machine (DESIGN.md §3) as one pure function: [`transition`].
//!
//! A task record holds `(state, attempt)`. Every report that may change it is an
//! [`Event`] carrying the attempt it belongs to; the function answers either a
//! [`Transition`] (the new state and attempt, and the effects to carry out) or the
//! reason the event is [`Ignored`]. The Redis script in `ferry-store` is the one other
//! implementation, and a test walks every case through both.
//!
//! Codes (`TaskState::code`, `EventKind::code`) are the integers the Redis script uses;
//! they are part of the storage format and never change meaning.

use serde::{Deserialize, Serialize};

/// Where a task is in its life. `Success` and `Failed` are terminal and absorb every
/// later event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskState {
    Received,
    WaitingForEp,
    WaitingForNodes,
    WaitingForLaunch,
    Running,
    Success,
    Failed,
}

impl TaskState {
    /// Every state, in life-cycle order.
    pub const ALL: [TaskState; 7] = [
        TaskState::Received,
        TaskState::WaitingForEp,
        TaskState::WaitingForNodes,
        TaskState::WaitingForLaunch,
        TaskState::Running,
        TaskState::Success,
        TaskState::Failed,
    ];

    /// The name users see (`GET /v1/tasks/{id}` `status`).
    pub fn wire_name(self) -> &'static str {
        match self {
            TaskState::Received => "received",
            TaskState::WaitingForEp => "waiting-for-ep",
            TaskState::WaitingForNodes => "waiting-for-nodes",
            TaskState::WaitingForLaunch => "waiting-for-launch",
            TaskState::Running => "running",
            TaskState::Success => "success",
            TaskState::Failed => "failed",
        }
    }

    /// Parses a wire name.
    pub fn from_wire_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.wire_name() == name)
    }

    /// The storage code (also the rank: within an attempt a task only moves to a higher one).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The state with this storage code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(code as usize).copied()
    }

    /// `Success` or `Failed`.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Success | TaskState::Failed)
    }
}

/// Who caused a transition; recorded in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actor {
    WebService,
    Forwarder,
    Endpoint,
    Manager,
    Worker,
    User,
}

impl Actor {
    pub const ALL: [Actor; 6] = [
        Actor::WebService,
        Actor::Forwarder,
        Actor::Endpoint,
        Actor::Manager,
        Actor::Worker,
        Actor::User,
    ];

    pub fn wire_name(self) -> &'static str {
        match self {
            Actor::WebService => "web-service",
            Actor::Forwarder => "forwarder",
            Actor::Endpoint => "endpoint",
            Actor::Manager => "manager",
            Actor::Worker => "worker",
            Actor::User => "user",
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(code as usize).copied()
    }
}

/// What happened to a task. Each kind has one source (see DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// The forwarder put the task on its endpoint's queue.
    Queued,
    /// The endpoint took the task from its queue.
    Received,
    /// The endpoint's interchange gave the task to a manager.
    Assigned,
    /// A worker started running the task.
    Started,
    /// The function returned.
    Succeeded,
    /// The function raised, or the task could not run at all.
    Failed,
    /// The worker or manager running the task is gone, or its heartbeat is stale.
    Lost,
    /// The endpoint holding the task missed its heartbeats.
    EndpointLost,
    /// The user cancelled the task.
    Cancelled,
    /// The task's walltime or its batch's deadline passed.
    TimedOut,
    /// The block (batch job) running the task ended under it: its walltime, a cancel, a
    /// preemption. The function did not fail, so the task goes around again without
    /// being charged: attempt+1, and one more retry to match.
    BlockEnded,
    /// The task's message is gone from its endpoint's queue (purged, taken by someone
    /// else, lost by the broker) while the task waited for its endpoint: the forwarder
    /// published it again. Nothing ran, so it is not charged: attempt+1, one more retry.
    Requeued,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        EventKind::Queued,
        EventKind::Received,
        EventKind::Assigned,
        EventKind::Started,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::Lost,
        EventKind::EndpointLost,
        EventKind::Cancelled,
        EventKind::TimedOut,
        EventKind::BlockEnded,
        EventKind::Requeued,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(code as usize).copied()
    }

    /// The state this event leads to when it applies without a retry decision.
    fn target(self) -> TaskState {
        match self {
            EventKind::Queued | EventKind::EndpointLost | EventKind::Requeued => TaskState::WaitingForEp,
            EventKind::Received | EventKind::Lost | EventKind::BlockEnded => TaskState::WaitingForNodes,
            EventKind::Assigned => TaskState::WaitingForLaunch,
            EventKind::Started => TaskState::Running,
            EventKind::Succeeded => TaskState::Success,
            EventKind::Failed | EventKind::Cancelled | EventKind::TimedOut => TaskState::Failed,
        }
    }

    /// The states this event may leave within the same attempt.
    fn sources(self) -> &'static [TaskState] {
        use TaskState::*;
        match self {
            EventKind::Queued => &[Received],
            EventKind::Received => &[Received, WaitingForEp],
            EventKind::Assigned => &[WaitingForNodes],
            EventKind::Started => &[WaitingForNodes, WaitingForLaunch],
            EventKind::Lost | EventKind::BlockEnded => &[WaitingForLaunch, Running],
            EventKind::EndpointLost => &[WaitingForNodes, WaitingForLaunch, Running],
            EventKind::Requeued => &[WaitingForEp],
            EventKind::Succeeded | EventKind::Failed | EventKind::Cancelled | EventKind::TimedOut => {
                &[Received, WaitingForEp, WaitingForNodes, WaitingForLaunch, Running]
            }
        }
    }
}

/// One report about one task: what happened and to which attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// The attempt the reporter was working on. Reports from an older attempt are
    /// ignored (a fencing token); `Cancelled` and `TimedOut` apply to any attempt.
    pub attempt: u32,
}

/// The part of a task record the state machine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    pub attempt: u32,
    /// How many times a lost task may be tried again before it fails.
    pub max_retries: u32,
}

/// Why a task failed without its function raising; also, on a step that is not an end,
/// why the task went around again when that is not a fault ([`FailureCause::BlockEnded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureCause {
    /// The function raised or the command failed; the exception is in the result.
    Exception,
    /// The task was lost and its retries are spent.
    RetriesExhausted,
    Cancelled,
    Timeout,
    /// Not a failure: the block running the task ended under it, and it went back to
    /// its endpoint's queue without being charged (the `waiting-for-nodes` step of
    /// [`EventKind::BlockEnded`] carries it).
    BlockEnded,
    /// Not a failure: the task's message was lost before its endpoint took it, and the
    /// forwarder published it again, uncharged (the step of [`EventKind::Requeued`]).
    MessageLost,
}

impl FailureCause {
    pub const ALL: [FailureCause; 6] = [
        FailureCause::Exception,
        FailureCause::RetriesExhausted,
        FailureCause::Cancelled,
        FailureCause::Timeout,
        FailureCause::BlockEnded,
        FailureCause::MessageLost,
    ];

    /// The storage code (used by the Redis script).
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(code as usize).copied()
    }

    /// How the history and the API name the cause.
    pub fn wire_name(self) -> &'static str {
        match self {
            FailureCause::Exception => "exception",
            FailureCause::RetriesExhausted => "retries-exhausted",
            FailureCause::Cancelled => "cancelled",
            FailureCause::Timeout => "timeout",
            FailureCause::BlockEnded => "block-ended",
            FailureCause::MessageLost => "message-lost",
        }
    }
}

/// The effects a transition asks the caller to carry out; the state machine itself
/// does no I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// Record the result or exception that came with the event (first terminal event only).
    RecordResult,
    /// Tell subscribers and the batch that the task is finished.
    NotifyCompletion,
    /// The task goes around again: whoever holds it must dispatch it anew.
    Redispatch,
}

/// An applied event: the record's new `(state, attempt)` and the effects to carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub to: TaskState,
    pub attempt: u32,
    /// The record's retries after the event: one more after `BlockEnded` or `Requeued`
    /// (the attempt is not charged), else unchanged.
    pub max_retries: u32,
    pub cause: Option<FailureCause>,
    pub effects: Vec<Effect>,
}

/// Why an event changed nothing. Every ignored event is counted; none is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ignored {
    /// The task is already `Success` or `Failed`: a duplicate or late report.
    Terminal,
    /// The report belongs to an attempt older than the record's.
    StaleAttempt,
    /// The report would move the task backwards (or nowhere) within its attempt:
    /// it arrived out of order or twice.
    NotForward,
}

impl Ignored {
    pub const ALL: [Ignored; 3] = [Ignored::Terminal, Ignored::StaleAttempt, Ignored::NotForward];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(code as usize).copied()
    }
}

/// The answer of the state machine to one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Applied(Transition),
    Ignored(Ignored),
}

/// The state machine: what `event` does to a task in `status`.
///
/// Rules (each a test below and an invariant elsewhere):
/// - terminal states absorb every event;
/// - `Cancelled` and `TimedOut` end any non-terminal task, whatever its attempt;
/// - an event from an older attempt is ignored;
/// - an event from a newer attempt than the record's means the reporter already moved
///   on (the report of the retry overtook the report that started it): it applies, and
///   the record takes that attempt;
/// - within an attempt a task only moves forward, along the table of DESIGN.md §3;
/// - `Lost` retries on the same endpoint (attempt+1, `WaitingForNodes`) while
///   `attempt < max_retries`, and fails the task when they are spent;
/// - `EndpointLost` sends the task back to `WaitingForEp` with attempt+1;
/// - `BlockEnded` sends it back to `WaitingForNodes` with attempt+1 and one retry more,
///   so the allocation's end costs it nothing;
/// - `Requeued` keeps a task whose message was lost in `WaitingForEp`, with attempt+1
///   and one retry more;
/// - a task whose attempt is already `u32::MAX` has no next attempt to fence the old
///   one's reports with: where it would go around again it fails (`RetriesExhausted`).
pub fn transition(status: TaskStatus, event: Event) -> Outcome {
    use TaskState::*;
    if status.state.is_terminal() {
        return Outcome::Ignored(Ignored::Terminal);
    }
    let kind = event.kind;
    if matches!(kind, EventKind::Cancelled | EventKind::TimedOut) {
        let cause = if kind == EventKind::Cancelled {
            FailureCause::Cancelled
        } else {
            FailureCause::Timeout
        };
        return terminal(Failed, status.attempt, status.max_retries, Some(cause));
    }
    if event.attempt < status.attempt {
        return Outcome::Ignored(Ignored::StaleAttempt);
    }
    // A report from a newer attempt means the reporter already moved on: whatever it
    // says of that attempt is news, so it applies without a source check.
    let attempt = event.attempt;
    if attempt == status.attempt && !kind.sources().contains(&status.state) {
        return Outcome::Ignored(Ignored::NotForward);
    }
    let retries = status.max_retries;
    match kind {
        EventKind::Succeeded => terminal(Success, attempt, retries, None),
        EventKind::Failed => terminal(Failed, attempt, retries, Some(FailureCause::Exception)),
        EventKind::Lost if attempt >= retries => {
            terminal(Failed, attempt, retries, Some(FailureCause::RetriesExhausted))
        }
        EventKind::Lost | EventKind::EndpointLost | EventKind::BlockEnded | EventKind::Requeued => {
            let Some(next) = attempt.checked_add(1) else {
                return terminal(Failed, attempt, retries, Some(FailureCause::RetriesExhausted));
            };
            let uncharged = matches!(kind, EventKind::BlockEnded | EventKind::Requeued);
            Outcome::Applied(Transition {
                to: kind.target(),
                attempt: next,
                max_retries: if uncharged {
                    retries.saturating_add(1)
                } else {
                    retries
                },
                cause: match kind {
                    EventKind::BlockEnded => Some(FailureCause::BlockEnded),
                    EventKind::Requeued => Some(FailureCause::MessageLost),
                    _ => None,
                },
                effects: vec![Effect::Redispatch],
            })
        }
        _ => Outcome::Applied(Transition {
            to: kind.target(),
            attempt,
            max_retries: retries,
            cause: None,
            effects: Vec::new(),
        }),
    }
}

fn terminal(to: TaskState, attempt: u32, max_retries: u32, cause: Option<FailureCause>) -> Outcome {
    Outcome::Applied(Transition {
        to,
        attempt,
        max_retries,
        cause,
        effects: vec![Effect::RecordResult, Effect::NotifyCompletion],
    })
}
