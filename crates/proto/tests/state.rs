//! The state machine against its table, case by case, and its invariants under random
//! event sequences (proptest).

use EventKind as E;
use TaskState::*;
use ferry_proto::state::*;
use ferry_proto::{Event, EventKind, TaskState};

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
    let table: [(TaskState, [Cell; 11]); 7] = [
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
                None,
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
                None,
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
                None,
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
                Some((WaitingForNodes, 1)),
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
                Some((WaitingForNodes, 1)),
            ],
        ),
        (Success, [None; 11]),
        (Failed, [None; 11]),
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
fn a_block_ending_under_a_task_costs_it_no_retry() {
    let spent = TaskStatus {
        state: Running,
        attempt: 2,
        max_retries: 2,
    };
    let Outcome::Applied(t) = transition(spent, ev(E::BlockEnded, 2)) else {
        panic!("expected a transition");
    };
    assert_eq!((t.to, t.attempt, t.max_retries), (WaitingForNodes, 3, 3));
    // The next ordinary loss is judged against the grown budget: one retry is left.
    let after = TaskStatus {
        state: Running,
        attempt: t.attempt,
        max_retries: t.max_retries,
    };
    let Outcome::Applied(lost) = transition(after, ev(E::Lost, 3)) else {
        panic!("expected a transition");
    };
    assert_eq!(lost.to, Failed, "attempt 3 of 3 retries: spent");
    assert_eq!(
        transition(status(WaitingForNodes, 0), ev(E::BlockEnded, 0)),
        Outcome::Ignored(Ignored::NotForward),
        "a task no manager held was not running in the block"
    );
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
        kinds in proptest::collection::vec(0u8..11, 0..20)
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
