//! Batch event streams (read by WebSocket clients) and webhooks (delivered by the
//! forwarder from the same streams).

use std::collections::HashMap;

use ferry_proto::BatchId;
use ferry_proto::time::Micros;
use redis::AsyncCommands;

use super::rows::parse_step;
use super::{Store, parse_id};
use crate::Result;
use crate::records::*;

impl Store {
    // ---- event streams ------------------------------------------------------------

    /// Starts the batch's event stream (if it was not kept from the start): steps from
    /// now on are recorded.
    pub async fn watch_batch(&self, id: BatchId) -> Result<()> {
        let mut conn = self.conn.clone();
        conn.hset::<_, _, _, ()>(self.batch_key(id), "ev", 1).await?;
        Ok(())
    }

    /// A reader of batch event streams on a connection of its own (its reads block),
    /// named `<namespace>:events` in Redis's `CLIENT LIST`.
    pub async fn event_reader(&self) -> Result<EventReader> {
        Ok(EventReader {
            conn: self.blocking_connection().await?,
            store: self.clone(),
            wake_key: format!("{}:wake:{}", self.ns, uuid::Uuid::new_v4().simple()),
            // Only wake-ups from now on count.
            wake_cursor: "$".to_owned(),
        })
    }

    /// A connection for blocking reads, apart from the shared one.
    async fn blocking_connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        // Its reads block for up to their own timeout: the client's default response
        // timeout (500 ms) would cut them off.
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(std::time::Duration::from_secs(30)));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // The name is only for operators (and tests) to tell it apart: a namespace
        // Redis will not take as a name (spaces) leaves it unnamed.
        let _ = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("{}:events", self.ns))
            .query_async::<()>(&mut conn)
            .await;
        Ok(conn)
    }

    // ---- webhooks -------------------------------------------------------------------

    /// Claims up to `limit` webhooks due by `now` for `lease` (another forwarder skips
    /// them meanwhile). A batch that is gone is dropped from the schedule.
    pub async fn claim_due_hooks(&self, now: Micros, lease: Micros, limit: usize) -> Result<Vec<Hook>> {
        const CLAIM: &str = "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3]) \
            for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], id) end return due";
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::Script::new(CLAIM)
            .key(self.hooks_key())
            .arg(now)
            .arg(now + lease)
            .arg(limit)
            .invoke_async(&mut conn)
            .await?;
        let mut hooks = Vec::with_capacity(ids.len());
        for id in ids {
            let batch_id: BatchId = parse_id(&id, "batch", &id)?;
            let fields: HookFields = redis::cmd("HMGET")
                .arg(self.batch_key(batch_id))
                .arg(&["cb", "cbs", "cbc", "cbf", "done"])
                .query_async(&mut conn)
                .await?;
            match fields {
                (Some(url), secret, cursor, failures, done) => hooks.push(Hook {
                    batch_id,
                    url,
                    secret: secret.unwrap_or_default(),
                    cursor: cursor.unwrap_or_else(|| "0".to_owned()),
                    failures: failures.unwrap_or(0),
                    batch_done: done.is_some(),
                }),
                _ => {
                    conn.zrem::<_, _, ()>(self.hooks_key(), &id).await?;
                }
            }
        }
        Ok(hooks)
    }

    /// Events of a batch after `cursor`, at most `count`.
    pub async fn batch_events_after(
        &self,
        id: BatchId,
        cursor: &str,
        count: usize,
    ) -> Result<Vec<BatchEvent>> {
        let mut conn = self.conn.clone();
        let start = if cursor == "0" {
            "-".to_owned()
        } else {
            format!("({cursor}")
        };
        type Entries = Vec<(String, HashMap<String, String>)>;
        let entries: Entries = redis::cmd("XRANGE")
            .arg(self.batch_events_key(id))
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(cursor, fields)| {
                let task_id = fields.get("t")?.parse().ok()?;
                let step = parse_step(fields.get("e")?, 0)?;
                Some(BatchEvent {
                    batch_id: id,
                    cursor,
                    task_id,
                    step,
                })
            })
            .collect())
    }

    /// The cursor of a batch's last event (`None` when its stream is empty or gone).
    pub async fn last_batch_event(&self, id: BatchId) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
            .arg(self.batch_events_key(id))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        Ok(entries.into_iter().next().map(|(cursor, _)| cursor))
    }

    /// Records a delivery: `delivered` events up to `cursor` went through; the hook is
    /// due again at `next` (or is finished and leaves the schedule).
    pub async fn hook_delivered(
        &self,
        id: BatchId,
        cursor: &str,
        delivered: u64,
        next: Option<Micros>,
    ) -> Result<()> {
        let mut conn = self.conn.clone();
        let key = self.batch_key(id);
        let mut pipe = redis::pipe();
        pipe.hset(&key, "cbc", cursor)
            .ignore()
            .hincr(&key, "cbd", delivered)
            .ignore()
            .hset(&key, "cbe", "")
            .ignore();
        match next {
            Some(at) => pipe.zadd(self.hooks_key(), id.to_string(), at).ignore(),
            None => pipe
                .hset(&key, "cbdone", 1)
                .ignore()
                .zrem(self.hooks_key(), id.to_string())
                .ignore(),
        };
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Records a failed delivery; it is tried again at `next`, or never (`None`: given up).
    pub async fn hook_failed(&self, id: BatchId, error: &str, next: Option<Micros>) -> Result<()> {
        let mut conn = self.conn.clone();
        let key = self.batch_key(id);
        let mut pipe = redis::pipe();
        pipe.hincr(&key, "cbf", 1)
            .ignore()
            .hset(&key, "cbe", error)
            .ignore();
        match next {
            Some(at) => pipe.zadd(self.hooks_key(), id.to_string(), at).ignore(),
            None => pipe.zrem(self.hooks_key(), id.to_string()).ignore(),
        };
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Reschedules a hook with nothing to deliver yet.
    pub async fn hook_idle(&self, id: BatchId, next: Micros) -> Result<()> {
        let mut conn = self.conn.clone();
        conn.zadd::<_, _, _, ()>(self.hooks_key(), id.to_string(), next)
            .await?;
        Ok(())
    }
}

/// A webhook's fields: url, secret, cursor, failures, done.
type HookFields = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<u64>,
    Option<String>,
);

/// Reads batch event streams, blocking until something comes. Its blocking read also
/// watches a wake-up stream of its own, so an [`EventWaker`] can end a wait at once
/// (when the set of streams to read changes).
pub struct EventReader {
    conn: redis::aio::MultiplexedConnection,
    store: Store,
    wake_key: String,
    wake_cursor: String,
}

/// Ends an [`EventReader`]'s current wait.
#[derive(Clone)]
pub struct EventWaker {
    store: Store,
    key: String,
}

impl EventWaker {
    pub async fn wake(&self) -> Result<()> {
        let mut conn = self.store.conn.clone();
        redis::pipe()
            .cmd("XADD")
            .arg(&self.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(16)
            .arg("*")
            .arg("w")
            .arg(1)
            .ignore()
            .expire(&self.key, 3600)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}

impl EventReader {
    /// A handle that ends this reader's current wait.
    pub fn waker(&self) -> EventWaker {
        EventWaker {
            store: self.store.clone(),
            key: self.wake_key.clone(),
        }
    }

    /// Replaces the connection (after a read failed: Redis restarted); the wake-up
    /// stream and the wakers made before stay the same.
    pub async fn reconnect(&mut self) -> Result<()> {
        self.conn = self.store.blocking_connection().await?;
        Ok(())
    }

    /// Events after each batch's cursor (`"0"` for the beginning), waiting up to `block`
    /// for the first (or for a wake-up); at most `count` per batch.
    pub async fn read(
        &mut self,
        from: &[(BatchId, String)],
        block: std::time::Duration,
        count: usize,
    ) -> Result<Vec<BatchEvent>> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS");
        for (batch, _) in from {
            cmd.arg(self.store.batch_events_key(*batch));
        }
        cmd.arg(&self.wake_key);
        for (_, cursor) in from {
            cmd.arg(cursor);
        }
        cmd.arg(&self.wake_cursor);
        type Entries = Vec<(String, Vec<(String, HashMap<String, String>)>)>;
        let reply: Option<Entries> = cmd.query_async(&mut self.conn).await?;
        let mut out = Vec::new();
        for (key, entries) in reply.unwrap_or_default() {
            if key == self.wake_key {
                if let Some((last, _)) = entries.last() {
                    self.wake_cursor = last.clone();
                }
                continue;
            }
            let Some((batch, _)) = from.iter().find(|(b, _)| self.store.batch_events_key(*b) == key) else {
                continue;
            };
            for (cursor, fields) in entries {
                let (Some(task), Some(entry)) = (fields.get("t"), fields.get("e")) else {
                    continue;
                };
                let (Ok(task_id), Some(step)) = (task.parse(), parse_step(entry, 0)) else {
                    continue;
                };
                out.push(BatchEvent {
                    batch_id: *batch,
                    cursor,
                    task_id,
                    step,
                });
            }
        }
        Ok(out)
    }
}
