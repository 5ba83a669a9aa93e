//! Submissions being dispatched whose `waiting-for-ep` is not recorded yet.
//!
//! The record waits a moment ([`HOLD`] after the broker's confirm, or less when many
//! submissions wait) so that it can go in the same transition call as the endpoint's
//! first report on the task: one script group per task instead of two (a fifth of the
//! transition script's Redis time per no-op task), and a history that always shows the
//! step, since it is applied just before the endpoint's. A task the endpoint does not
//! report on within the hold (its endpoint is offline or busy) is recorded on its own.
//!
//! A record is written on its own only once the broker has confirmed the message
//! (should RabbitMQ lose it, the task must still read `received` for the sweeper to
//! submit it again). With an endpoint report it may go before: the report shows the
//! message arrived, and, applied right after it in the same call, moves the task past
//! `waiting-for-ep`, so no task reads `waiting-for-ep` with its message unconfirmed.
//! Only once every task of a submission is recorded, and the message confirmed, is the
//! submission acked: a forwarder that dies meanwhile leaves it to be redelivered, as
//! before.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_broker::{Broker, Delivery};
use ferry_proto::{EndpointId, Ignored, TaskId};
use ferry_store::{Applied, Report, Store};

/// How long a `waiting-for-ep` record waits for the endpoint's first report on its task.
/// The endpoint reports a task it holds within about half a second even while it waits
/// for a worker (its `waiting-for-nodes` linger).
pub const HOLD: Duration = Duration::from_millis(500);

/// Held `waiting-for-ep` records, shared by the dispatcher (which holds them and records
/// the overdue ones) and the appliers (which record them with the endpoint's reports).
/// Cheap to clone.
pub struct Held<D = Delivery> {
    inner: Arc<Mutex<Inner<D>>>,
    /// Most submissions held at once: beyond, the oldest are recorded at once, so that
    /// the submissions consumer's prefetch (which bounds how many may wait unacked)
    /// always has room for new ones.
    most: usize,
}

impl<D> Clone for Held<D> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            most: self.most,
        }
    }
}

struct Inner<D> {
    /// Task -> the submission that holds its record, and the record.
    tasks: HashMap<TaskId, (u64, Report)>,
    /// Submissions by arrival.
    messages: BTreeMap<u64, Message<D>>,
    next: u64,
}

struct Message<D> {
    /// The submission, once the broker confirmed its message to the endpoint's queue.
    delivery: Option<D>,
    endpoint: EndpointId,
    /// Records not written yet.
    left: usize,
    /// When it was confirmed (or held, until then).
    since: Instant,
}

/// Records taken out of the hold to be applied, and for each, `(submission, task)`.
#[derive(Default)]
pub struct Taken {
    pub records: Vec<Report>,
    pub from: Vec<(u64, TaskId)>,
}

impl Taken {
    fn new(taken: impl Iterator<Item = (u64, Report)>) -> Self {
        let mut out = Taken::default();
        for (key, record) in taken {
            out.from.push((key, record.task_id));
            out.records.push(record);
        }
        out
    }
}

impl<D> Held<D> {
    /// An empty hold for at most `most` submissions at once.
    pub fn new(most: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                tasks: HashMap::new(),
                messages: BTreeMap::new(),
                next: 0,
            })),
            most,
        }
    }

    /// Holds a submission's `waiting-for-ep` records from before it is published (its
    /// tasks may be reported on before the broker's confirm comes back) and answers its
    /// key for [`Held::confirmed`]. A task held already, by an earlier copy of it, is
    /// not held twice.
    pub fn hold(&self, endpoint: EndpointId, records: Vec<Report>) -> u64 {
        let mut inner = self.inner.lock().expect("held poisoned");
        let key = inner.next;
        inner.next += 1;
        let mut left = 0;
        for record in records {
            if let std::collections::hash_map::Entry::Vacant(v) = inner.tasks.entry(record.task_id) {
                v.insert((key, record));
                left += 1;
            }
        }
        inner.messages.insert(
            key,
            Message {
                delivery: None,
                endpoint,
                left,
                since: Instant::now(),
            },
        );
        key
    }

    /// The broker confirmed the submission held under `key`, which is handed over to be
    /// acked once its records are written: they may now be written on their own
    /// (before, only along with an endpoint report on their task, which shows the
    /// message arrived). Answers the submission back when every record is written
    /// already: it can be acked now.
    pub fn confirmed(&self, key: u64, delivery: D) -> Option<D> {
        let mut inner = self.inner.lock().expect("held poisoned");
        let Some(message) = inner.messages.get_mut(&key) else {
            return Some(delivery);
        };
        if message.left == 0 {
            inner.messages.remove(&key);
            return Some(delivery);
        }
        message.delivery = Some(delivery);
        message.since = Instant::now();
        None
    }

    /// Takes the held records of these tasks, to be applied before their reports.
    pub fn take(&self, tasks: impl IntoIterator<Item = TaskId>) -> Taken {
        let mut inner = self.inner.lock().expect("held poisoned");
        if inner.tasks.is_empty() {
            return Taken::default();
        }
        Taken::new(tasks.into_iter().filter_map(|id| inner.tasks.remove(&id)))
    }

    /// Takes the records of the confirmed submissions held longer than `hold` (all of
    /// them when `hold` is zero), and of the oldest ones beyond the most allowed.
    pub fn due(&self, hold: Duration) -> Taken {
        let mut inner = self.inner.lock().expect("held poisoned");
        let over = inner.messages.len().saturating_sub(self.most);
        let keys: Vec<u64> = inner
            .messages
            .iter()
            .enumerate()
            .take_while(|(i, (_, m))| *i < over || m.since.elapsed() >= hold)
            .filter(|(_, (_, m))| m.delivery.is_some())
            .map(|(_, (&k, _))| k)
            .collect();
        if keys.is_empty() {
            return Taken::default();
        }
        let ids: Vec<TaskId> = inner
            .tasks
            .iter()
            .filter(|(_, (k, _))| keys.binary_search(k).is_ok())
            .map(|(&id, _)| id)
            .collect();
        Taken::new(ids.iter().filter_map(|id| inner.tasks.remove(id)))
    }

    /// Whether more submissions are held than allowed.
    pub fn overfull(&self) -> bool {
        self.inner.lock().expect("held poisoned").messages.len() > self.most
    }

    /// What to stop where, and the submissions to ack, once the records taken `from`
    /// these submissions are written (`applied`, in the same order).
    fn written(
        &self,
        from: &[(u64, TaskId)],
        applied: &[Applied],
    ) -> (HashMap<EndpointId, Vec<TaskId>>, Vec<D>) {
        let mut inner = self.inner.lock().expect("held poisoned");
        let mut stop: HashMap<EndpointId, Vec<TaskId>> = HashMap::new();
        let mut done = Vec::new();
        for (&(key, task_id), outcome) in from.iter().zip(applied) {
            let Some(message) = inner.messages.get_mut(&key) else {
                continue;
            };
            match outcome {
                Applied::Unknown => {
                    tracing::warn!(%task_id, "a submitted task has no record; stopping it");
                    stop.entry(message.endpoint).or_default().push(task_id);
                }
                Applied::Ignored(Ignored::Terminal) => {
                    tracing::debug!(%task_id, "a submitted task already finished; stopping it");
                    stop.entry(message.endpoint).or_default().push(task_id);
                }
                _ => {}
            }
            message.left -= 1;
            if message.left == 0
                && message.delivery.is_some()
                && let Some(delivery) = inner.messages.remove(&key).and_then(|m| m.delivery)
            {
                done.push(delivery);
            }
        }
        (stop, done)
    }
}

impl Held<Delivery> {
    /// Settles the records taken `from` these submissions once written (`applied`, in
    /// the same order): a task the record shows finished (cancelled while it waited) or
    /// unknown is stopped at its endpoint (a cancel kept until RabbitMQ takes it, see
    /// [`crate::cancels`]), and a submission whose records are all
    /// written is acked.
    pub async fn settle(
        &self,
        store: &Store,
        broker: &Broker,
        from: &[(u64, TaskId)],
        applied: &[Applied],
    ) -> anyhow::Result<()> {
        let (stop, done) = self.written(from, applied);
        for (endpoint, ids) in stop {
            crate::cancels::stop_tasks(store, broker, endpoint, ids).await?;
        }
        for delivery in done {
            delivery.ack().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::{Actor, Event, EventKind, TaskState};

    fn queued(id: TaskId) -> Report {
        Report {
            task_id: id,
            event: Event {
                kind: EventKind::Queued,
                attempt: 0,
            },
            at: 1,
            by: Actor::Forwarder,
            from: None,
            finish: None,
        }
    }

    const MOVED: Applied = Applied::Moved {
        to: TaskState::WaitingForEp,
        attempt: 0,
        cause: None,
    };

    #[test]
    fn a_submission_is_done_once_every_record_is_written_by_a_report_or_on_its_own() {
        let held: Held<&str> = Held::new(4);
        let endpoint = EndpointId::new();
        let (a, b) = (TaskId::new(), TaskId::new());
        let key = held.hold(endpoint, vec![queued(a), queued(b)]);
        // Not confirmed yet: nothing is due on its own, however old.
        assert!(held.due(Duration::ZERO).records.is_empty());
        // The endpoint reported on `a` (even before the confirm): its record goes with
        // the report.
        let taken = held.take([a, TaskId::new()]);
        assert_eq!(taken.from.iter().map(|&(_, id)| id).collect::<Vec<_>>(), vec![a]);
        assert!(held.take([a]).records.is_empty(), "taken once");
        let (stop, done) = held.written(&taken.from, &[MOVED]);
        assert!(stop.is_empty() && done.is_empty(), "b is not written yet");
        assert_eq!(held.confirmed(key, "m1"), None);
        // Not overdue yet; then written on its own.
        assert!(held.due(HOLD).records.is_empty());
        let taken = held.due(Duration::ZERO);
        assert_eq!(taken.records.len(), 1);
        assert_eq!(taken.records[0].task_id, b);
        let (_, done) = held.written(&taken.from, &[MOVED]);
        assert_eq!(done, vec!["m1"]);
        assert!(held.due(Duration::ZERO).records.is_empty());
    }

    #[test]
    fn finished_and_unknown_tasks_are_stopped_at_their_endpoint() {
        let held: Held<&str> = Held::new(4);
        let endpoint = EndpointId::new();
        let ids: Vec<TaskId> = (0..3).map(|_| TaskId::new()).collect();
        let key = held.hold(endpoint, ids.iter().map(|&id| queued(id)).collect());
        assert_eq!(held.confirmed(key, "m"), None);
        let taken = held.due(Duration::ZERO);
        let outcome = |id: TaskId| match ids.iter().position(|&i| i == id) {
            Some(0) => Applied::Ignored(Ignored::Terminal),
            Some(1) => Applied::Unknown,
            _ => MOVED,
        };
        let applied: Vec<Applied> = taken.records.iter().map(|r| outcome(r.task_id)).collect();
        let (stop, done) = held.written(&taken.from, &applied);
        let mut stopped = stop[&endpoint].clone();
        stopped.sort();
        let mut want = ids[..2].to_vec();
        want.sort();
        assert_eq!(stopped, want);
        assert_eq!(done, vec!["m"]);
    }

    #[test]
    fn a_task_held_already_is_not_held_twice() {
        let held: Held<&str> = Held::new(4);
        let endpoint = EndpointId::new();
        let a = TaskId::new();
        let first = held.hold(endpoint, vec![queued(a)]);
        let copy = held.hold(endpoint, vec![queued(a)]);
        assert_eq!(
            held.confirmed(copy, "copy"),
            Some("copy"),
            "nothing of its own to write"
        );
        // Every record written before the confirm: acked at the confirm.
        let taken = held.take([a]);
        let (_, done) = held.written(&taken.from, &[MOVED]);
        assert!(done.is_empty());
        assert_eq!(held.confirmed(first, "first"), Some("first"));
    }

    #[test]
    fn beyond_the_most_held_the_oldest_are_due_at_once() {
        let held: Held<&str> = Held::new(1);
        let endpoint = EndpointId::new();
        let (a, b) = (TaskId::new(), TaskId::new());
        let old = held.hold(endpoint, vec![queued(a)]);
        held.confirmed(old, "old");
        assert!(!held.overfull());
        let new = held.hold(endpoint, vec![queued(b)]);
        held.confirmed(new, "new");
        assert!(held.overfull());
        let taken = held.due(HOLD);
        assert_eq!(taken.from.iter().map(|&(_, id)| id).collect::<Vec<_>>(), vec![a]);
        let (_, done) = held.written(&taken.from, &[MOVED]);
        assert_eq!(done, vec!["old"]);
        assert!(!held.overfull());

        let none: Held<&str> = Held::new(0);
        none.hold(endpoint, vec![queued(a)]);
        assert!(
            none.overfull(),
            "holding nothing: every submission is due at once"
        );
    }
}
