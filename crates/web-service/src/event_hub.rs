//! One reader of session event streams per web-service process, shared by every
//! WebSocket: a thousand sockets cost one Redis connection, not a thousand.
//!
//! Each socket [`joins`](EventHub::join) and asks to watch sessions from a cursor. The
//! hub reads every watched stream with one blocking `XREAD`, each from the lowest cursor
//! any socket holds for it, and hands every socket the events past its own cursor. A
//! socket that is behind (replaying a session from its start) and one that is live read
//! the same stream; the one behind catches up and from then on they share each read.
//!
//! A socket that does not keep up is never waited for: when its queue is full it is
//! skipped and its cursors stay where they were, so the events are read again for it
//! once it has room (it wakes the hub then). Nothing is lost and no socket slows another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferry_proto::BatchId;
use ferry_store::{BatchEvent, EventReader, EventWaker, Store};
use tokio::sync::mpsc;

/// How long one read of the streams waits before looking for new commands.
const BLOCK: Duration = Duration::from_millis(500);
/// Events read per stream per round, at most, and in all (shared among the streams).
const READ_COUNT: usize = 1000;
const READ_TOTAL: usize = 100_000;
/// Reads queued for one socket, at most, before it is skipped until it catches up.
const QUEUE: usize = 4;

/// The process's hub; clones share it.
#[derive(Clone)]
pub struct EventHub {
    commands: mpsc::UnboundedSender<Command>,
    /// Set once the hub's reader has connected (its wake-up stream outlives reconnects).
    waker: Arc<OnceLock<EventWaker>>,
    next_id: Arc<AtomicU64>,
}

enum Command {
    Join {
        id: u64,
        events: mpsc::Sender<Vec<BatchEvent>>,
        skipped: Arc<AtomicBool>,
    },
    Watch {
        id: u64,
        from: Vec<(BatchId, String)>,
    },
    Unwatch {
        id: u64,
        batches: Vec<BatchId>,
    },
    Leave {
        id: u64,
    },
}

/// One socket's membership: its events, and how it changes what it watches. Dropping
/// it leaves the hub.
pub struct Subscription {
    id: u64,
    hub: EventHub,
    events: mpsc::Receiver<Vec<BatchEvent>>,
    skipped: Arc<AtomicBool>,
}

impl EventHub {
    /// Starts the hub's task; it connects to Redis when a socket first watches a session.
    pub fn start(store: Store) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let waker = Arc::new(OnceLock::new());
        tokio::spawn(run(store, rx, waker.clone()));
        Self {
            commands,
            waker,
            next_id: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn join(&self) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, events) = mpsc::channel(QUEUE);
        let skipped = Arc::new(AtomicBool::new(false));
        let _ = self.commands.send(Command::Join {
            id,
            events: tx,
            skipped: skipped.clone(),
        });
        Subscription {
            id,
            hub: self.clone(),
            events,
            skipped,
        }
    }

    /// Ends the hub's current wait, so it reads what changed at once.
    async fn wake(&self) {
        if let Some(waker) = self.waker.get()
            && let Err(e) = waker.wake().await
        {
            // The read ends by itself within BLOCK.
            tracing::warn!(error = %e, "websocket: cannot wake the event reader");
        }
    }
}

impl Subscription {
    /// Watches sessions from these cursors on (a session watched already moves to the
    /// new cursor).
    pub async fn watch(&self, from: Vec<(BatchId, String)>) {
        let _ = self.hub.commands.send(Command::Watch { id: self.id, from });
        self.hub.wake().await;
    }

    /// Stops watching sessions (finished, and read to their end).
    pub fn unwatch(&self, batches: Vec<BatchId>) {
        let _ = self.hub.commands.send(Command::Unwatch { id: self.id, batches });
    }

    /// The next events of the watched sessions, in order per session; `None` when the
    /// hub stopped.
    pub async fn next(&mut self) -> Option<Vec<BatchEvent>> {
        let events = self.events.recv().await;
        if self.skipped.swap(false, Ordering::Relaxed) {
            // The hub passed this socket by while its queue was full: there is room now.
            self.hub.wake().await;
        }
        events
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.hub.commands.send(Command::Leave { id: self.id });
    }
}

/// A stream id, as Redis orders them (`"0"` is the start; `<ms>` alone is `<ms>-0`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Position(u64, u64);

impl Position {
    fn of(cursor: &str) -> Self {
        let (ms, seq) = cursor.split_once('-').unwrap_or((cursor, "0"));
        Self(ms.parse().unwrap_or(u64::MAX), seq.parse().unwrap_or(u64::MAX))
    }
}

struct Member {
    events: mpsc::Sender<Vec<BatchEvent>>,
    skipped: Arc<AtomicBool>,
    cursors: HashMap<BatchId, (Position, String)>,
}

async fn run(store: Store, mut commands: mpsc::UnboundedReceiver<Command>, waker: Arc<OnceLock<EventWaker>>) {
    let mut members: HashMap<u64, Member> = HashMap::new();
    let mut reader: Option<EventReader> = None;
    loop {
        loop {
            match commands.try_recv() {
                Ok(command) => apply(&mut members, command),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
        // Each watched stream from the lowest cursor of the members with room.
        let mut lowest: HashMap<BatchId, (Position, &str)> = HashMap::new();
        for member in members.values() {
            if member.events.capacity() == 0 {
                // Passed by: it wakes the hub when it has room.
                member.skipped.store(true, Ordering::Relaxed);
                continue;
            }
            for (batch, (at, cursor)) in &member.cursors {
                let low = lowest.entry(*batch).or_insert((*at, cursor));
                if *at < low.0 {
                    *low = (*at, cursor);
                }
            }
        }
        if lowest.is_empty() {
            // Nothing to read: wait for a command (or, while a member is full, look
            // again soon: it may have room by then).
            let full = members.values().any(|m| !m.cursors.is_empty());
            let wait = if full {
                Duration::from_millis(50)
            } else {
                Duration::MAX
            };
            match tokio::time::timeout(wait, commands.recv()).await {
                Ok(Some(command)) => apply(&mut members, command),
                Ok(None) => return,
                Err(_) => {}
            }
            continue;
        }
        let from: Vec<(BatchId, String)> = lowest.iter().map(|(b, (_, c))| (*b, (*c).to_owned())).collect();
        let read_from: HashMap<BatchId, Position> = lowest.iter().map(|(b, (at, _))| (*b, *at)).collect();
        let reading = match reader.as_mut() {
            Some(reader) => reader,
            None => match store.event_reader().await {
                Ok(fresh) => {
                    let _ = waker.set(fresh.waker());
                    reader.insert(fresh)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "websocket: no event reader yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        let count = (READ_TOTAL / from.len()).clamp(1, READ_COUNT);
        match reading.read(&from, BLOCK, count).await {
            Ok(events) if events.is_empty() => {}
            Ok(events) => hand_out(&mut members, &read_from, &events),
            Err(e) => {
                // Redis restarting: read again on a fresh connection, from the same
                // cursors (nothing is lost).
                tracing::warn!(error = %e, "websocket: cannot read events; reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Err(e) = reading.reconnect().await {
                    tracing::warn!(error = %e, "websocket: cannot reconnect the event reader yet");
                }
            }
        }
    }
}

fn apply(members: &mut HashMap<u64, Member>, command: Command) {
    match command {
        Command::Join { id, events, skipped } => {
            members.insert(
                id,
                Member {
                    events,
                    skipped,
                    cursors: HashMap::new(),
                },
            );
        }
        Command::Watch { id, from } => {
            if let Some(member) = members.get_mut(&id) {
                for (batch, cursor) in from {
                    member.cursors.insert(batch, (Position::of(&cursor), cursor));
                }
            }
        }
        Command::Unwatch { id, batches } => {
            if let Some(member) = members.get_mut(&id) {
                for batch in batches {
                    member.cursors.remove(&batch);
                }
            }
        }
        Command::Leave { id } => {
            members.remove(&id);
        }
    }
}

/// Gives each member the events past its cursors. `events` holds, per stream, every
/// event after `read_from` up to the last one read: a member whose cursor is not before
/// `read_from` (it was not passed by) gets those past its cursor, and its cursor moves
/// to the last one read once they are queued.
fn hand_out(
    members: &mut HashMap<u64, Member>,
    read_from: &HashMap<BatchId, Position>,
    events: &[BatchEvent],
) {
    let mut last: HashMap<BatchId, &str> = HashMap::new();
    for e in events {
        last.insert(e.batch_id, &e.cursor);
    }
    let covered = |member: &Member, batch: &BatchId| -> Option<Position> {
        let (at, _) = member.cursors.get(batch)?;
        (read_from.get(batch)? <= at).then_some(*at)
    };
    members.retain(|_, member| {
        let mine: Vec<BatchEvent> = events
            .iter()
            .filter(|e| covered(member, &e.batch_id).is_some_and(|at| Position::of(&e.cursor) > at))
            .cloned()
            .collect();
        if !mine.is_empty() {
            match member.events.try_send(mine) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Read again for it when it has room; it wakes the hub then.
                    member.skipped.store(true, Ordering::Relaxed);
                    return true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        for (batch, cursor) in &last {
            if covered(member, batch).is_none() {
                continue;
            }
            if let Some((at, text)) = member.cursors.get_mut(batch) {
                let read_to = Position::of(cursor);
                if read_to > *at {
                    *at = read_to;
                    *text = (*cursor).to_owned();
                }
            }
        }
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::TaskId;
    use ferry_proto::state::{Actor, TaskState};
    use ferry_store::HistoryStep;

    fn event(batch: BatchId, cursor: &str) -> BatchEvent {
        BatchEvent {
            batch_id: batch,
            cursor: cursor.to_owned(),
            task_id: TaskId::new(),
            step: HistoryStep {
                state: TaskState::Running,
                attempt: 1,
                at: 0,
                by: Actor::Worker,
                cause: None,
            },
        }
    }

    fn member(queue: usize, batch: BatchId, cursor: &str) -> (Member, mpsc::Receiver<Vec<BatchEvent>>) {
        let (events, rx) = mpsc::channel(queue);
        let member = Member {
            events,
            skipped: Arc::new(AtomicBool::new(false)),
            cursors: HashMap::from([(batch, (Position::of(cursor), cursor.to_owned()))]),
        };
        (member, rx)
    }

    fn cursors(events: &[BatchEvent]) -> Vec<&str> {
        events.iter().map(|e| e.cursor.as_str()).collect()
    }

    #[test]
    fn each_member_gets_the_events_past_its_cursor_and_none_it_was_passed_by_for() {
        let b = BatchId::new();
        let (behind, mut behind_rx) = member(4, b, "3-0");
        let (ahead, mut ahead_rx) = member(4, b, "5-0");
        // Its cursor is before where the read started (it was full when the read began):
        // the events between are not in this read, so it gets none and keeps its cursor.
        let (passed, mut passed_rx) = member(4, b, "1-0");
        let (full, mut full_rx) = member(1, b, "3-0");
        full.events.try_send(vec![event(b, "2-0")]).unwrap();
        let full_skipped = full.skipped.clone();
        let mut members = HashMap::from([(1, behind), (2, ahead), (3, passed), (4, full)]);
        let (gone, gone_rx) = member(4, b, "3-0");
        drop(gone_rx);
        members.insert(5, gone);

        let read = [event(b, "4-0"), event(b, "5-0"), event(b, "6-0")];
        hand_out(&mut members, &HashMap::from([(b, Position::of("3-0"))]), &read);

        assert_eq!(cursors(&behind_rx.try_recv().unwrap()), ["4-0", "5-0", "6-0"]);
        assert_eq!(cursors(&ahead_rx.try_recv().unwrap()), ["6-0"]);
        assert!(passed_rx.try_recv().is_err());
        assert_eq!(members[&1].cursors[&b].1, "6-0");
        assert_eq!(members[&2].cursors[&b].1, "6-0");
        assert_eq!(
            members[&3].cursors[&b].1, "1-0",
            "not moved past what it did not get"
        );
        // The full one is passed by, told so, and keeps its cursor: read again later.
        assert_eq!(cursors(&full_rx.try_recv().unwrap()), ["2-0"]);
        assert!(full_rx.try_recv().is_err());
        assert!(full_skipped.load(Ordering::Relaxed));
        assert_eq!(members[&4].cursors[&b].1, "3-0");
        assert!(!members.contains_key(&5), "a member whose socket closed leaves");
    }

    #[test]
    fn positions_order_as_redis_stream_ids_do() {
        assert!(Position::of("0") < Position::of("1-0"));
        assert_eq!(Position::of("5"), Position::of("5-0"));
        assert!(Position::of("5-1") > Position::of("5-0"));
        assert!(Position::of("10-0") > Position::of("9-99"));
        assert!(Position::of("99999999999999999999") > Position::of("1-0"));
    }
}
