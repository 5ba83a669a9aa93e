//! The transition table in docs/state-machine.md is the state machine's: this test reads
//! the table and checks every cell against `ferry_proto::state::transition`.

use ferry_proto::state::{Outcome, TaskStatus, transition};
use ferry_proto::{Event, EventKind, TaskState};

fn event_named(name: &str) -> EventKind {
    EventKind::ALL
        .into_iter()
        .find(|k| format!("{k:?}") == name)
        .unwrap_or_else(|| panic!("the table names an unknown event {name:?}"))
}

fn outcome(state: TaskState, kind: EventKind, max_retries: u32) -> Option<(TaskState, u32)> {
    let status = TaskStatus {
        state,
        attempt: 0,
        max_retries,
    };
    match transition(status, Event { kind, attempt: 0 }) {
        Outcome::Applied(t) => Some((t.to, t.attempt)),
        Outcome::Ignored(_) => None,
    }
}

/// `—`, `running`, `waiting-for-ep +1`, or `waiting-for-nodes +1 / failed` (retry while
/// retries remain, else fail).
fn check_cell(cell: &str, state: TaskState, kind: EventKind) {
    let cell = cell.trim();
    if cell == "—" {
        assert_eq!(
            outcome(state, kind, 1),
            None,
            "{kind:?} from {state:?}: the docs say ignored"
        );
        return;
    }
    let (with_retries, without) = match cell.split_once(" / ") {
        Some((a, b)) => (a, Some(b)),
        None => (cell, None),
    };
    let (name, bump) = match with_retries.strip_suffix(" +1") {
        Some(n) => (n, 1),
        None => (with_retries, 0),
    };
    let to = TaskState::from_wire_name(name).unwrap_or_else(|| panic!("unknown state {name:?} in the docs"));
    assert_eq!(
        outcome(state, kind, 1),
        Some((to, bump)),
        "{kind:?} from {state:?}: the docs say {cell}"
    );
    if let Some(spent) = without {
        let to = TaskState::from_wire_name(spent).unwrap();
        assert_eq!(
            outcome(state, kind, 0),
            Some((to, 0)),
            "{kind:?} from {state:?} without retries"
        );
    }
}

#[test]
fn the_documented_transition_table_is_the_state_machine() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/state-machine.md");
    let doc = std::fs::read_to_string(path).expect("docs/state-machine.md");
    let table: Vec<&str> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| event \\ from"))
        .take_while(|l| l.starts_with('|'))
        .collect();
    let header: Vec<&str> = table[0]
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let columns: Vec<Vec<TaskState>> = header[1..]
        .iter()
        .map(|h| {
            h.split(" / ")
                .map(|s| TaskState::from_wire_name(s).expect("a state"))
                .collect()
        })
        .collect();
    let mut rows = 0;
    for line in &table[2..] {
        let cells: Vec<&str> = line.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        let kind = event_named(cells[0]);
        for (cell, states) in cells[1..].iter().zip(&columns) {
            for &state in states {
                check_cell(cell, state, kind);
            }
        }
        rows += 1;
    }
    assert_eq!(rows, EventKind::ALL.len(), "one row per event");
    assert_eq!(
        columns.iter().map(Vec::len).sum::<usize>(),
        TaskState::ALL.len(),
        "a column for every state"
    );
}
