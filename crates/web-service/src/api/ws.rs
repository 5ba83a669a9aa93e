//! `GET /v1/ws`: live task events over a WebSocket.
//!
//! The client subscribes with a text message
//! `{"op": "subscribe", "sessions": [...], "tasks": [...], "after": {"<session>": "<cursor>"}}`
//! and receives, as JSON text messages:
//! - `{"type": "subscribed", "sessions": [...]}` once the subscription holds;
//! - `{"type": "event", "session", "cursor", "task_id", "state", "attempt", "at", "by",
//!   "reason"?, "task"?}` for every step of every subscribed task, in order per session;
//!   a terminal step carries the task's record (`task`: result or exception);
//! - `{"type": "session", ...}` (the session's counts) after the last event of a
//!   subscribed session that has no task left to finish (the last message about it);
//! - `{"type": "error", "message"}` for a message it could not use (the socket stays).
//!
//! With `"progress": true` a subscription's sessions send no events: instead
//! `{"type": "progress", ...}` (the session's document: its counts by state) at most
//! every [`PROGRESS_EVERY`] while they change, and the final `session` message. That is
//! how the dashboard draws its progress bars, whatever a session's size.
//!
//! A browser, which cannot set the `Authorization` header, offers its token as the
//! subprotocol `ferry.bearer.<the token in hex>` beside `ferry.v1`, which the server
//! selects (see [`crate::extract::WS_BEARER_PREFIX`]).
//!
//! Every event comes from the session's event stream in Redis, so a client that
//! reconnects and subscribes again with `after` = the last cursor it saw per session
//! misses nothing and sees nothing twice. Without `after` a subscription replays the
//! stream from its start (complete for sessions submitted with `events: true`; others
//! start their stream when first subscribed to).

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use ferry_proto::{BatchId, TaskId, TaskState, UserId};
use ferry_store::BatchEvent;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Caller;

/// The least time between two `progress` messages of one session.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// Most sessions and tasks in one subscription.
const MAX_SUBSCRIBE: usize = 10_000;
/// The largest message a client may send, fragments counted together (a subscription
/// of 10,000 ids fits).
pub(crate) const MAX_MESSAGE_BYTES: usize = 1 << 20;

pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Caller(user): Caller,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // The slot is the user's until the socket closes (FERRY_MAX_WEBSOCKETS_PER_USER).
    let slot = state.limits.socket(user)?;
    Ok(ws
        .protocols([crate::extract::WS_PROTOCOL])
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            if let Err(e) = serve(state, user, socket).await {
                tracing::debug!(%user, error = %format!("{e:#}"), "websocket closed");
            }
        }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    op: String,
    #[serde(default)]
    sessions: Vec<BatchId>,
    #[serde(default)]
    tasks: Vec<TaskId>,
    #[serde(default)]
    after: HashMap<BatchId, String>,
    /// The sessions' progress instead of their events.
    #[serde(default)]
    progress: bool,
}

/// One subscribed session: where its stream was read up to, and which of its tasks the
/// client wants (`None`: all).
struct Watched {
    cursor: String,
    tasks: Option<HashSet<TaskId>>,
    /// Progress instead of events: when the last went, and whether it changed since.
    progress: Option<Progress>,
}

struct Progress {
    sent: Option<tokio::time::Instant>,
    changed: bool,
}

async fn serve(state: AppState, user: UserId, mut socket: WebSocket) -> anyhow::Result<()> {
    // Events come from the process's one reader of the streams (crate::event_hub).
    let mut events = state.events.join();
    let mut watched: HashMap<BatchId, Watched> = HashMap::new();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Only a socket following some session's progress wakes for the tick.
        let following = watched.values().any(|w| w.progress.is_some());
        tokio::select! {
            _ = tick.tick(), if following => progress(&state, &mut socket, &mut watched).await?,
            message = socket.recv() => {
                let Some(message) = message else { break Ok(()) };
                match message {
                    Ok(Message::Text(text)) => {
                        let reply = match subscribe(&state, user, &text, &mut watched).await {
                            Ok(sessions) => {
                                let from = sessions
                                    .iter()
                                    .map(|b| (*b, watched[b].cursor.clone()))
                                    .collect();
                                events.watch(from).await;
                                json!({"type": "subscribed", "sessions": sessions})
                            }
                            Err(message) => json!({"type": "error", "message": message}),
                        };
                        if let Err(e) = socket.send(Message::Text(reply.to_string().into())).await {
                            break Err(e.into());
                        }
                    }
                    Ok(Message::Close(_)) => break Ok(()),
                    Ok(_) => {}
                    Err(e) => break Err(e.into()),
                }
            }
            batch = events.next() => {
                let Some(batch) = batch else { break Err(anyhow::anyhow!("the event reader stopped")) };
                match forward(&state, &mut socket, &mut watched, batch).await {
                    Ok(done) if done.is_empty() => {}
                    // Finished and read to the end: a long-lived socket does not read
                    // ever more streams.
                    Ok(done) => events.unwatch(done),
                    Err(e) => break Err(e),
                }
                progress(&state, &mut socket, &mut watched).await?;
            }
        }
    }
}

/// Applies a subscribe message; returns the sessions now watched, or what was wrong.
async fn subscribe(
    state: &AppState,
    user: UserId,
    text: &str,
    watched: &mut HashMap<BatchId, Watched>,
) -> Result<Vec<BatchId>, String> {
    let sub: Subscribe = serde_json::from_str(text).map_err(|e| format!("cannot read the message: {e}"))?;
    if sub.op != "subscribe" {
        return Err(format!("unknown op {:?}: the one op is \"subscribe\"", sub.op));
    }
    if sub.sessions.len() + sub.tasks.len() > MAX_SUBSCRIBE {
        return Err(format!(
            "more than {MAX_SUBSCRIBE} sessions and tasks in one subscription"
        ));
    }
    // A cursor goes into the stream reads of every session on this socket: a bad one
    // is refused here, before it can break them.
    for (session, cursor) in &sub.after {
        if !is_cursor(cursor) {
            return Err(format!(
                "after[{session}] {:?} is not a cursor (an event's `cursor`, like \"1796551584014-0\", or \"0\")",
                cursor.chars().take(40).collect::<String>()
            ));
        }
    }
    // Ids asked for twice are looked up once.
    let mut seen = HashSet::new();
    let sessions: Vec<BatchId> = sub
        .sessions
        .iter()
        .copied()
        .filter(|id| seen.insert(*id))
        .collect();
    let mut seen = HashSet::new();
    let tasks: Vec<TaskId> = sub.tasks.iter().copied().filter(|id| seen.insert(*id)).collect();
    let internal = |e: ferry_store::Error| format!("the store is unavailable: {e}");
    let mut wanted: HashMap<BatchId, Option<HashSet<TaskId>>> = HashMap::new();
    for id in &sessions {
        match state.store.batch_status(*id).await.map_err(internal)? {
            Some(s) if s.record.owner == user => {
                wanted.insert(*id, None);
            }
            _ => return Err(format!("session {id} not found")),
        }
    }
    if !tasks.is_empty() {
        // Whose they are, and their sessions: their large results are not needed.
        let records = state
            .store
            .get_tasks_deferred(&tasks, false)
            .await
            .map_err(internal)?;
        for (id, record) in tasks.iter().zip(records) {
            match record {
                Some(t) if t.owner == user => {
                    if let Some(tasks) = wanted.entry(t.batch_id).or_insert_with(|| Some(HashSet::new())) {
                        tasks.insert(*id);
                    }
                }
                _ => return Err(format!("task {id} not found")),
            }
        }
    }
    for (batch, tasks) in &wanted {
        state.store.watch_batch(*batch).await.map_err(internal)?;
        let cursor = sub.after.get(batch).cloned().unwrap_or_else(|| "0".to_owned());
        let entry = watched.entry(*batch).or_insert_with(|| Watched {
            cursor: cursor.clone(),
            tasks: Some(HashSet::new()),
            progress: None,
        });
        entry.cursor = cursor;
        if sub.progress && tasks.is_none() {
            entry.progress = Some(Progress {
                sent: None,
                changed: true,
            });
        }
        match (tasks, &mut entry.tasks) {
            (None, all) => *all = None,
            (Some(more), Some(have)) => have.extend(more),
            (Some(_), None) => {}
        }
    }
    Ok(wanted.into_keys().collect())
}

/// Sends the `progress` of each session watched so whose counts changed, unless its
/// last went less than [`PROGRESS_EVERY`] ago (the next tick sends it then).
async fn progress(
    state: &AppState,
    socket: &mut WebSocket,
    watched: &mut HashMap<BatchId, Watched>,
) -> anyhow::Result<()> {
    let now = tokio::time::Instant::now();
    for (batch, w) in watched.iter_mut() {
        let Some(p) = &mut w.progress else { continue };
        if !p.changed || p.sent.is_some_and(|at| now.duration_since(at) < PROGRESS_EVERY) {
            continue;
        }
        p.changed = false;
        p.sent = Some(now);
        if let Some(status) = state.store.batch_status(*batch).await? {
            let mut doc = serde_json::to_value(super::batches::session_doc(&status))?;
            doc["type"] = json!("progress");
            socket.send(Message::Text(doc.to_string().into())).await?;
        }
    }
    Ok(())
}

/// A Redis stream id (`<millis>-<seq>`, or `<millis>`), as event cursors are.
fn is_cursor(text: &str) -> bool {
    let mut parts = text.splitn(2, '-');
    let digits = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
    parts.next().is_some_and(digits) && parts.next().is_none_or(digits)
}

/// Sends the events the client wants, with each terminal task's record, then the
/// status of every session that finished and whose events have all been sent. Returns
/// those sessions: they are watched no more.
async fn forward(
    state: &AppState,
    socket: &mut WebSocket,
    watched: &mut HashMap<BatchId, Watched>,
    events: Vec<BatchEvent>,
) -> anyhow::Result<Vec<BatchId>> {
    let wanted: Vec<&BatchEvent> = events
        .iter()
        .filter(|e| {
            watched.get(&e.batch_id).is_some_and(|w| {
                w.progress.is_none() && w.tasks.as_ref().is_none_or(|t| t.contains(&e.task_id))
            })
        })
        .collect();
    let terminal: Vec<TaskId> = wanted
        .iter()
        .filter(|e| e.step.state.is_terminal())
        .map(|e| e.task_id)
        .collect();
    let records: HashMap<TaskId, Value> = state
        .store
        .get_tasks(&terminal)
        .await?
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t.task_id,
                serde_json::to_value(super::task_doc(t)).unwrap_or(Value::Null),
            )
        })
        .collect();
    for e in &wanted {
        let mut event = e.step_json();
        event["type"] = json!("event");
        event["session"] = json!(e.batch_id);
        event["cursor"] = json!(e.cursor);
        if e.step.state.is_terminal()
            && let Some(doc) = records.get(&e.task_id)
        {
            event["task"] = doc.clone();
        }
        socket.send(Message::Text(event.to_string().into())).await?;
    }
    // Cursors move past everything read, wanted or not.
    let mut finished_in: HashSet<BatchId> = HashSet::new();
    for e in &events {
        if let Some(w) = watched.get_mut(&e.batch_id) {
            w.cursor = e.cursor.clone();
            if let Some(p) = &mut w.progress {
                p.changed = true;
            }
        }
        if matches!(e.step.state, TaskState::Success | TaskState::Failed) {
            finished_in.insert(e.batch_id);
        }
    }
    let mut done = Vec::new();
    for batch in finished_in {
        if let Some(status) = state.store.batch_status(batch).await?
            && status.done_at.is_some()
        {
            // A finished session's stream never grows again: once its last event is
            // sent there is nothing left to read, and its status comes after all its
            // events (else the events still to come will bring it here again).
            let cursor = watched.get(&batch).map(|w| w.cursor.clone());
            let last = state.store.last_batch_event(batch).await?;
            if cursor.is_some() && (last.is_none() || last == cursor) {
                let mut doc = serde_json::to_value(super::batches::session_doc(&status))?;
                doc["type"] = json!("session");
                socket.send(Message::Text(doc.to_string().into())).await?;
                watched.remove(&batch);
                done.push(batch);
            }
        }
    }
    Ok(done)
}
