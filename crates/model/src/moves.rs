//! How the model's state changes: queue and report bookkeeping, and the forwarder
//! applying a report through the production state machine.

use ferry_proto::state::{Outcome, TaskStatus, transition};
use ferry_proto::{Event, EventKind, TaskState};

use crate::{Message, Report, State};

pub(crate) fn report(task: usize, kind: EventKind, attempt: u32, result: bool) -> Report {
    Report {
        task,
        kind: kind.code(),
        attempt,
        result,
    }
}

/// The states the endpoint-lost sweep moves back.
pub(crate) fn in_flight(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::WaitingForNodes | TaskState::WaitingForLaunch | TaskState::Running
    )
}

impl State {
    pub(crate) fn push_report(&mut self, r: Report) {
        self.reports.push(r);
        self.reports.sort();
    }

    pub(crate) fn push_message(&mut self, m: Message) {
        self.queue.push(m);
        self.queue.sort();
    }

    pub(crate) fn ack(&mut self, task: usize, attempt: u32) {
        if let Some(i) = self
            .queue
            .iter()
            .position(|m| m.task == task && m.attempt == attempt && m.delivered)
        {
            self.queue.remove(i);
        }
    }

    /// The forwarder applies a report through the state machine; a result's steps first.
    pub(crate) fn apply(&mut self, r: Report) {
        if r.result {
            for kind in [EventKind::Received, EventKind::Assigned, EventKind::Started] {
                self.apply_one(report(r.task, kind, r.attempt, false));
            }
        }
        self.apply_one(r);
    }

    pub(crate) fn apply_one(&mut self, r: Report) {
        let rec = &mut self.records[r.task];
        let kind = EventKind::from_code(r.kind).expect("a known event");
        let status = TaskStatus {
            state: rec.state,
            attempt: rec.attempt,
            max_retries: rec.max_retries,
        };
        if let Outcome::Applied(t) = transition(
            status,
            Event {
                kind,
                attempt: r.attempt,
            },
        ) {
            self.counts[rec.state.code() as usize] -= 1;
            self.counts[t.to.code() as usize] += 1;
            let backwards = t.attempt == rec.attempt && t.to <= rec.state;
            if rec.state.is_terminal() || backwards {
                rec.violated = true;
            }
            if t.to.is_terminal() && r.result {
                rec.results += 1;
            }
            rec.state = t.to;
            rec.attempt = t.attempt;
            rec.max_retries = t.max_retries;
        }
    }
}
