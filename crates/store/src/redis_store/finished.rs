//! Announcements of finished tasks. The transition script publishes, once per call, the
//! ids of the tasks that call ended on `<ns>:finished`; a web-service listens so that a
//! caller waiting for a result (a long poll) is answered as soon as its task ends,
//! without polling Redis.

use futures_util::StreamExt;

use super::Store;
use crate::Result;

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
