//! Announcements of finished tasks. The transition script publishes, once per call, the
//! ids of the tasks that call ended on `<ns>:finished`; a web-service listens so that a
//! caller waiting for a result (a long poll) is answered as soon as its task ends,
//! without polling Redis.
//!
//! A process that both applies transitions and waits for them (`ferry-server`: the
//! forwarder records results, the web-service answers long polls) also hears its own
//! calls' ends in memory, as soon as each call returns ([`Store::finished_here`]),
//! without waiting for Redis's message to come back around.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ferry_proto::TaskId;
use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::Store;
use crate::Result;

/// Announcements kept before a slow in-process listener is told it missed some.
const HERE_CAPACITY: usize = 1024;

/// Tasks that one transition call of this process ended.
pub type EndedHere = Arc<[TaskId]>;

/// In-process channels, one per namespace, made by the first listener.
static HERE: OnceLock<Mutex<HashMap<String, broadcast::Sender<EndedHere>>>> = OnceLock::new();
/// Whether anyone in this process listens: a process without a listener (a forwarder
/// of its own) pays one atomic load per call.
static ANYONE_HERE: AtomicBool = AtomicBool::new(false);

fn here() -> &'static Mutex<HashMap<String, broadcast::Sender<EndedHere>>> {
    HERE.get_or_init(Default::default)
}

impl Store {
    /// The channel the transition script announces finished tasks on.
    pub fn finished_channel(&self) -> String {
        format!("{}:finished", self.ns)
    }

    /// Subscribes to finished-task announcements on a connection of its own. Whatever
    /// was announced before this returns, or while the connection is down, is not
    /// heard: a listener reads again what it waits for once subscribed.
    pub async fn finished_tasks(&self) -> Result<FinishedTasks> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.finished_channel()).await?;
        Ok(FinishedTasks {
            stream: pubsub.into_on_message(),
        })
    }

    /// Listens to the ends this process's own transition calls make under this
    /// namespace (whichever `Store` made them), each heard as soon as its call returned
    /// and the records were written. A lagging receiver gets
    /// `RecvError::Lagged`: it should read again what it waits for.
    pub fn finished_here(&self) -> broadcast::Receiver<EndedHere> {
        let mut channels = here().lock().expect("in-process announcements poisoned");
        let receiver = channels
            .entry(self.ns.clone())
            .or_insert_with(|| broadcast::channel(HERE_CAPACITY).0)
            .subscribe();
        ANYONE_HERE.store(true, Ordering::Release);
        receiver
    }

    /// Tells this process's listeners (if any) that these tasks ended.
    pub(super) fn announce_here(&self, ended: impl FnOnce() -> Vec<TaskId>) {
        if !ANYONE_HERE.load(Ordering::Acquire) {
            return;
        }
        let ended = ended();
        if ended.is_empty() {
            return;
        }
        let channels = here().lock().expect("in-process announcements poisoned");
        if let Some(sender) = channels.get(&self.ns) {
            // No receiver left is not an error: no one waits.
            let _ = sender.send(ended.into());
        }
    }
}

/// A subscription to finished-task announcements (see [`Store::finished_tasks`]).
pub struct FinishedTasks {
    stream: redis::aio::PubSubStream,
}

impl FinishedTasks {
    /// The next announcement: task ids separated by single spaces. `None` once the
    /// connection is lost.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            let message = self.stream.next().await?;
            match message.get_payload::<String>() {
                Ok(ids) => return Some(ids),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a finished-task announcement that is not text")
                }
            }
        }
    }
}
