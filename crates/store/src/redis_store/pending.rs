//! What waits on RabbitMQ: when it last blocked publishers (a memory or disk alarm), and
//! the cancels still to be published to endpoints.
//!
//! - `<ns>:broker-blocked` (string): until when (micros) some forwarder last saw
//!   RabbitMQ block publishes. An endpoint's heartbeats are blocked with everything
//!   else, so no endpoint is declared lost before a whole missed-heartbeats window has
//!   passed after that ([`Store::claim_lost_endpoint`] checks it in the claim).
//! - `<ns>:cancels` (sorted set): endpoints with cancels to publish, scored by when the
//!   latest was stored; `<ns>:ep:<id>:cancels` (set): the endpoint's cancelled task ids.
//!   Whoever cancels stores them before publishing and takes them off once RabbitMQ
//!   confirmed the message; the forwarder's sweeper publishes the ones left.

use ferry_proto::time::Micros;
use ferry_proto::{EndpointId, TaskId};
use redis::AsyncCommands;

use super::Store;
use crate::Result;

/// Raises `KEYS[1]` to `ARGV[1]` (never lowers it).
const RAISE_LUA: &str = "local v = tonumber(redis.call('GET', KEYS[1]) or '0') \
    if tonumber(ARGV[1]) > v then redis.call('SET', KEYS[1], ARGV[1]) end return 0";

/// Takes task ids `ARGV[2..]` off endpoint `ARGV[1]`'s pending cancels, and the
/// endpoint off `KEYS[1]` once none is left.
const DONE_LUA: &str = "for i = 2, #ARGV do redis.call('SREM', KEYS[2], ARGV[i]) end \
    if redis.call('SCARD', KEYS[2]) == 0 then redis.call('ZREM', KEYS[1], ARGV[1]) end return 0";

impl Store {
    pub(super) fn broker_blocked_key(&self) -> String {
        format!("{}:broker-blocked", self.ns)
    }

    fn pending_cancels_key(&self) -> String {
        format!("{}:cancels", self.ns)
    }

    fn endpoint_cancels_key(&self, id: EndpointId) -> String {
        format!("{}:ep:{id}:cancels", self.ns)
    }

    /// Records that RabbitMQ blocks publishes, counting it blocked until at least
    /// `until` (micros; a later record is never moved back).
    pub async fn note_broker_blocked(&self, until: Micros) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::Script::new(RAISE_LUA)
            .key(self.broker_blocked_key())
            .arg(until)
            .invoke_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Until when RabbitMQ was last seen blocking publishes (micros), if ever.
    pub async fn broker_blocked_until(&self) -> Result<Option<Micros>> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.broker_blocked_key()).await?)
    }

    /// Stores cancels for `endpoint` to publish (before the publish: should it fail, or
    /// the caller die, the forwarder's sweeper publishes them).
    pub async fn add_pending_cancels(&self, endpoint: EndpointId, ids: &[TaskId], at: Micros) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let members: Vec<String> = ids.iter().map(ToString::to_string).collect();
        redis::pipe()
            .atomic()
            .sadd(self.endpoint_cancels_key(endpoint), members)
            .ignore()
            .zadd(self.pending_cancels_key(), endpoint.to_string(), at)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// These cancels were published (RabbitMQ confirmed them): no longer pending.
    /// With no ids, forgets the endpoint when it has none left.
    pub async fn pending_cancels_done(&self, endpoint: EndpointId, ids: &[TaskId]) -> Result<()> {
        let mut conn = self.conn.clone();
        let done = redis::Script::new(DONE_LUA);
        let mut script = done.prepare_invoke();
        script
            .key(self.pending_cancels_key())
            .key(self.endpoint_cancels_key(endpoint))
            .arg(endpoint.to_string());
        for id in ids {
            script.arg(id.to_string());
        }
        script.invoke_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Endpoints with cancels stored at or before `before` still to publish, at most
    /// `most`.
    pub async fn endpoints_with_pending_cancels(
        &self,
        before: Micros,
        most: isize,
    ) -> Result<Vec<EndpointId>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrangebyscore_limit(self.pending_cancels_key(), "-inf", before, 0, most)
            .await?;
        ids.iter().map(|id| super::parse_id(id, "endpoint", id)).collect()
    }

    /// Up to `most` of an endpoint's cancelled tasks still to be published.
    pub async fn pending_cancels(&self, endpoint: EndpointId, most: usize) -> Result<Vec<TaskId>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("SRANDMEMBER")
            .arg(self.endpoint_cancels_key(endpoint))
            .arg(most.max(1))
            .query_async(&mut conn)
            .await?;
        ids.iter().map(|id| super::parse_id(id, "task", id)).collect()
    }
}
