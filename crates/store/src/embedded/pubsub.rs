//! Pub/sub: which connection listens to which channel or pattern. A message is pushed
//! to each listener's queue at once (from PUBLISH, or from a script), and the
//! listener's connection writes it as a RESP2 `message`/`pmessage` array.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::db::glob_match;
use super::frame::Frame;

/// Where a connection receives the messages pushed to it.
pub(crate) type Inbox = mpsc::UnboundedSender<Frame>;

/// Listeners by channel and by pattern, each keyed by connection id.
#[derive(Default)]
pub(crate) struct Hub {
    inner: Mutex<Listeners>,
}

#[derive(Default)]
struct Listeners {
    channels: HashMap<Bytes, HashMap<u64, Inbox>>,
    patterns: HashMap<Bytes, HashMap<u64, Inbox>>,
}

impl Hub {
    fn listeners(&self) -> std::sync::MutexGuard<'_, Listeners> {
        // A panic elsewhere while holding it left plain maps: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn subscribe(&self, connection: u64, inbox: &Inbox, channel: Bytes, pattern: bool) {
        let mut l = self.listeners();
        let map = if pattern { &mut l.patterns } else { &mut l.channels };
        map.entry(channel).or_default().insert(connection, inbox.clone());
    }

    pub(crate) fn unsubscribe(&self, connection: u64, channel: &[u8], pattern: bool) {
        let mut l = self.listeners();
        let map = if pattern { &mut l.patterns } else { &mut l.channels };
        if let Some(listeners) = map.get_mut(channel) {
            listeners.remove(&connection);
            if listeners.is_empty() {
                map.remove(channel);
            }
        }
    }

    /// Pushes `message` to every listener of `channel`; how many received it.
    pub(crate) fn publish(&self, channel: &Bytes, message: &Bytes) -> i64 {
        let l = self.listeners();
        let mut received = 0;
        if let Some(listeners) = l.channels.get(channel) {
            for inbox in listeners.values() {
                let push = Frame::Array(vec![
                    Frame::bulk("message"),
                    Frame::Bulk(channel.clone()),
                    Frame::Bulk(message.clone()),
                ]);
                received += i64::from(inbox.send(push).is_ok());
            }
        }
        for (pattern, listeners) in &l.patterns {
            if !glob_match(pattern, channel) {
                continue;
            }
            for inbox in listeners.values() {
                let push = Frame::Array(vec![
                    Frame::bulk("pmessage"),
                    Frame::Bulk(pattern.clone()),
                    Frame::Bulk(channel.clone()),
                    Frame::Bulk(message.clone()),
                ]);
                received += i64::from(inbox.send(push).is_ok());
            }
        }
        received
    }
}
