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
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
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
            EventKind::Queued | EventKind::EndpointLost => TaskState::WaitingForEp,
            EventKind::Received | EventKind::Lost => TaskState::WaitingForNodes,
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
            EventKind::Lost => &[WaitingForLaunch, Running],
            EventKind::EndpointLost => &[WaitingForNodes, WaitingForLaunch, Running],
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

/// Why a task failed without its function raising.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureCause {
    /// The function raised or the command failed; the exception is in the result.
    Exception,
    /// The task was lost and its retries are spent.
    RetriesExhausted,
    Cancelled,
    Timeout,
}

impl FailureCause {
    pub const ALL: [FailureCause; 4] = [
        FailureCause::Exception,
        FailureCause::RetriesExhausted,
        FailureCause::Cancelled,
        FailureCause::Timeout,
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
/// - `EndpointLost` sends the task back to `WaitingForEp` with attempt+1.
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
        return terminal(Failed, status.attempt, Some(cause));
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
    match kind {
        EventKind::Succeeded => terminal(Success, attempt, None),
        EventKind::Failed => terminal(Failed, attempt, Some(FailureCause::Exception)),
        EventKind::Lost if attempt >= status.max_retries => {
            terminal(Failed, attempt, Some(FailureCause::RetriesExhausted))
        }
        EventKind::Lost | EventKind::EndpointLost => Outcome::Applied(Transition {
            to: kind.target(),
            attempt: attempt + 1,
            cause: None,
            effects: vec![Effect::Redispatch],
        }),
        _ => Outcome::Applied(Transition {
            to: kind.target(),
            attempt,
            cause: None,
            effects: Vec::new(),
        }),
    }
}

fn terminal(to: TaskState, attempt: u32, cause: Option<FailureCause>) -> Outcome {
    Outcome::Applied(Transition {
        to,
        attempt,
        cause,
        effects: vec![Effect::RecordResult, Effect::NotifyCompletion],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventKind as E;
    use TaskState::*;

    fn status(state: TaskState, attempt: u32) -> TaskStatus {
        TaskStatus {
            state,
            attempt,
            max_retries: 2,
        }
    }

    fn ev(kind: EventKind, attempt: u32) -> Event {
        Event { kind, attempt }
    }

    /// The expected `(to, attempt)` for every (state, event) pair within attempt 0, with
    /// `None` for an ignored event. Rows are states, columns follow `EventKind::ALL`.
    #[test]
    fn every_state_event_pair_within_an_attempt_follows_the_table() {
        type Cell = Option<(TaskState, u32)>;
        let f = Some((Failed, 0));
        let table: [(TaskState, [Cell; 10]); 7] = [
            //             Queued                  Received               Assigned                 Started             Succeeded        Failed Lost                   EndpointLost            Cancelled TimedOut
            (
                Received,
                [
                    Some((WaitingForEp, 0)),
                    Some((WaitingForNodes, 0)),
                    None,
                    None,
                    Some((Success, 0)),
                    f,
                    None,
                    None,
                    f,
                    f,
                ],
            ),
            (
                WaitingForEp,
                [
                    None,
                    Some((WaitingForNodes, 0)),
                    None,
                    None,
                    Some((Success, 0)),
                    f,
                    None,
                    None,
                    f,
                    f,
                ],
            ),
            (
                WaitingForNodes,
                [
                    None,
                    None,
                    Some((WaitingForLaunch, 0)),
                    Some((Running, 0)),
                    Some((Success, 0)),
                    f,
                    None,
                    Some((WaitingForEp, 1)),
                    f,
                    f,
                ],
            ),
            (
                WaitingForLaunch,
                [
                    None,
                    None,
                    None,
                    Some((Running, 0)),
                    Some((Success, 0)),
                    f,
                    Some((WaitingForNodes, 1)),
                    Some((WaitingForEp, 1)),
                    f,
                    f,
                ],
            ),
            (
                Running,
                [
                    None,
                    None,
                    None,
                    None,
                    Some((Success, 0)),
                    f,
                    Some((WaitingForNodes, 1)),
                    Some((WaitingForEp, 1)),
                    f,
                    f,
                ],
            ),
            (Success, [None; 10]),
            (Failed, [None; 10]),
        ];
        for (state, row) in table {
            for (kind, expected) in E::ALL.into_iter().zip(row) {
                let got = match transition(status(state, 0), ev(kind, 0)) {
                    Outcome::Applied(t) => Some((t.to, t.attempt)),
                    Outcome::Ignored(_) => None,
                };
                assert_eq!(got, expected, "{state:?} + {kind:?}");
            }
        }
    }

    #[test]
    fn terminal_states_absorb_every_event() {
        for state in [Success, Failed] {
            for kind in E::ALL {
                for attempt in 0..3 {
                    assert_eq!(
                        transition(status(state, 1), ev(kind, attempt)),
                        Outcome::Ignored(Ignored::Terminal)
                    );
                }
            }
        }
    }

    #[test]
    fn report_from_older_attempt_is_ignored() {
        assert_eq!(
            transition(status(WaitingForNodes, 2), ev(E::Started, 1)),
            Outcome::Ignored(Ignored::StaleAttempt)
        );
        assert_eq!(
            transition(status(WaitingForNodes, 2), ev(E::Succeeded, 1)),
            Outcome::Ignored(Ignored::StaleAttempt)
        );
    }

    #[test]
    fn report_from_newer_attempt_moves_the_record_to_that_attempt() {
        let Outcome::Applied(t) = transition(status(Running, 0), ev(E::Assigned, 1)) else {
            panic!("expected a transition");
        };
        assert_eq!((t.to, t.attempt), (WaitingForLaunch, 1));
    }

    #[test]
    fn lost_task_fails_once_retries_are_spent() {
        let Outcome::Applied(t) = transition(status(Running, 2), ev(E::Lost, 2)) else {
            panic!("expected a transition");
        };
        assert_eq!((t.to, t.cause), (Failed, Some(FailureCause::RetriesExhausted)));
    }

    #[test]
    fn cancel_applies_whatever_the_attempt() {
        let Outcome::Applied(t) = transition(status(Running, 3), ev(E::Cancelled, 0)) else {
            panic!("expected a transition");
        };
        assert_eq!(
            (t.to, t.attempt, t.cause),
            (Failed, 3, Some(FailureCause::Cancelled))
        );
    }

    #[test]
    fn codes_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::from_code(s.code()), Some(s));
            assert_eq!(TaskState::from_wire_name(s.wire_name()), Some(s));
        }
        for k in E::ALL {
            assert_eq!(EventKind::from_code(k.code()), Some(k));
        }
    }

    proptest::proptest! {
        /// Within one attempt no sequence of events moves a task backwards, and once
        /// terminal it stays put.
        #[test]
        fn no_sequence_of_events_moves_a_task_backwards_within_an_attempt(
            kinds in proptest::collection::vec(0u8..10, 0..20)
        ) {
            let mut st = status(Received, 0);
            for k in kinds {
                let kind = EventKind::from_code(k).unwrap();
                if let Outcome::Applied(t) = transition(st, ev(kind, st.attempt)) {
                    if t.attempt == st.attempt {
                        proptest::prop_assert!(t.to > st.state, "{:?} -> {:?}", st.state, t.to);
                    }
                    proptest::prop_assert!(t.attempt >= st.attempt);
                    st = TaskStatus { state: t.to, attempt: t.attempt, max_retries: st.max_retries };
                }
            }
        }
    }
}
