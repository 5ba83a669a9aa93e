//! Users and their tokens, functions, endpoints and their heartbeats.

use std::collections::HashMap;

use bytes::Bytes;
use ferry_proto::messages::FunctionKind;
use ferry_proto::time::Micros;
use ferry_proto::{EndpointId, FunctionId, UserId};
use redis::AsyncCommands;

use super::{Fields, Store, parse_id};
use crate::Result;
use crate::records::*;

impl Store {
    // ---- functions ---------------------------------------------------------------

    pub async fn put_function(&self, f: &FunctionRecord) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut fields: Vec<(&str, Vec<u8>)> = vec![
            ("owner", f.owner.to_string().into_bytes()),
            ("name", f.name.clone().into_bytes()),
            ("kind", f.kind.wire_name().as_bytes().to_vec()),
            ("code", f.code.to_vec()),
            ("created", f.created_at.to_string().into_bytes()),
        ];
        if let Some(d) = &f.description {
            fields.push(("desc", d.clone().into_bytes()));
        }
        if let Some(p) = &f.python {
            fields.push(("py", p.clone().into_bytes()));
        }
        fields.push(("pub", if f.public { b"1".to_vec() } else { b"0".to_vec() }));
        fields.push(("shr", join(&f.shared_with).into_bytes()));
        conn.hset_multiple::<_, _, _, ()>(self.function_key(f.function_id), &fields)
            .await?;
        Ok(())
    }

    /// Sets who besides its owner may run a function.
    pub async fn set_function_sharing(
        &self,
        id: FunctionId,
        public: bool,
        shared_with: &[UserId],
    ) -> Result<()> {
        let mut conn = self.conn.clone();
        conn.hset_multiple::<_, _, _, ()>(
            self.function_key(id),
            &[
                ("pub", if public { "1" } else { "0" }.to_owned()),
                ("shr", join(shared_with)),
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn get_function(&self, id: FunctionId) -> Result<Option<FunctionRecord>> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, Vec<u8>> = conn.hgetall(self.function_key(id)).await?;
        if map.is_empty() {
            return Ok(None);
        }
        let f = Fields::new(map, "function", id.to_string());
        Ok(Some(FunctionRecord {
            function_id: id,
            owner: f.id("owner")?,
            name: f.string("name")?,
            kind: FunctionKind::from_wire_name(&f.string("kind")?).ok_or_else(|| f.corrupt("kind"))?,
            code: Bytes::from(f.bytes("code")?),
            description: f.opt_string("desc"),
            created_at: f.num("created")?,
            public: f.opt_string("pub").as_deref() == Some("1"),
            shared_with: ids(&f, "shr")?,
            python: f.opt_string("py"),
        }))
    }

    // ---- endpoints ---------------------------------------------------------------

    /// Creates or renames an endpoint record (heartbeat fields are left alone).
    pub async fn put_endpoint(&self, e: &EndpointRecord) -> Result<()> {
        let mut conn = self.conn.clone();
        let key = self.endpoint_key(e.endpoint_id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("owner", e.owner.to_string()),
                    ("name", e.name.clone()),
                    ("created", e.created_at.to_string()),
                    ("pub", if e.public { "1" } else { "0" }.to_owned()),
                    ("shr", join(&e.shared_with)),
                ],
            )
            .ignore();
        match &e.allowed_functions {
            Some(list) => pipe.hset(&key, "allow", join(list)).ignore(),
            None => pipe.hdel(&key, "allow").ignore(),
        };
        if e.public || !e.shared_with.is_empty() {
            pipe.sadd(self.shared_endpoints_key(), e.endpoint_id.to_string())
                .ignore();
        } else {
            pipe.srem(self.shared_endpoints_key(), e.endpoint_id.to_string())
                .ignore();
        }
        pipe.sadd(self.user_endpoints_key(e.owner), e.endpoint_id.to_string())
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Forgets an endpoint: its record, its place in its owner's list and among the
    /// endpoints watched for heartbeats.
    pub async fn delete_endpoint(&self, e: &EndpointRecord) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .del(self.endpoint_key(e.endpoint_id))
            .srem(self.user_endpoints_key(e.owner), e.endpoint_id.to_string())
            .srem(self.shared_endpoints_key(), e.endpoint_id.to_string())
            .zrem(self.endpoint_deadlines_key(), e.endpoint_id.to_string())
            .del(self.endpoint_running_key(e.endpoint_id))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Whether the endpoint is registered (not deleted).
    pub async fn endpoint_exists(&self, id: EndpointId) -> Result<bool> {
        let mut conn = self.conn.clone();
        Ok(conn.exists(self.endpoint_key(id)).await?)
    }

    /// How many tasks the endpoint holds in flight (waiting for nodes to running).
    pub async fn endpoint_in_flight(&self, id: EndpointId) -> Result<u64> {
        let mut conn = self.conn.clone();
        Ok(conn.scard(self.endpoint_running_key(id)).await?)
    }

    /// Notes what the endpoint's workers' Python is (JSON, from its registration).
    pub async fn set_endpoint_worker_env(&self, id: EndpointId, json: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: () = conn.hset(self.endpoint_key(id), "wenv", json).await?;
        Ok(())
    }

    /// What [`Store::set_endpoint_worker_env`] noted, if anything.
    pub async fn endpoint_worker_env(&self, id: EndpointId) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        Ok(conn.hget(self.endpoint_key(id), "wenv").await?)
    }

    pub async fn get_endpoint(&self, id: EndpointId) -> Result<Option<EndpointRecord>> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, Vec<u8>> = conn.hgetall(self.endpoint_key(id)).await?;
        if map.is_empty() || !map.contains_key("owner") {
            return Ok(None);
        }
        let f = Fields::new(map, "endpoint", id.to_string());
        Ok(Some(EndpointRecord {
            endpoint_id: id,
            owner: f.id("owner")?,
            name: f.string("name")?,
            created_at: f.num("created")?,
            last_heartbeat: f.opt_num("hb")?,
            heartbeat_interval_ms: f.opt_num("hbi")?.unwrap_or(0),
            lost_at: f.opt_num("lost")?,
            details: f
                .opt_string("load")
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(serde_json::Value::Null),
            public: f.opt_string("pub").as_deref() == Some("1"),
            shared_with: ids(&f, "shr")?,
            allowed_functions: match f.opt_string("allow") {
                Some(_) => Some(ids(&f, "allow")?),
                None => None,
            },
        }))
    }

    /// The endpoints `user` may send tasks to: their own, then those shared with them
    /// (or public), each sorted by name.
    pub async fn list_endpoints(&self, user: UserId) -> Result<Vec<EndpointRecord>> {
        let mut conn = self.conn.clone();
        let (own, shared): (Vec<String>, Vec<String>) = redis::pipe()
            .smembers(self.user_endpoints_key(user))
            .smembers(self.shared_endpoints_key())
            .query_async(&mut conn)
            .await?;
        let mut mine = Vec::with_capacity(own.len());
        let mut others = Vec::new();
        for id in own.iter().chain(shared.iter().filter(|s| !own.contains(s))) {
            let id: EndpointId = parse_id(id, "endpoint", id)?;
            match self.get_endpoint(id).await? {
                Some(e) if e.owner == user => mine.push(e),
                Some(e) if e.usable_by(user) => others.push(e),
                _ => {}
            }
        }
        mine.sort_by(|a, b| a.name.cmp(&b.name));
        others.sort_by(|a, b| a.name.cmp(&b.name));
        mine.extend(others);
        Ok(mine)
    }

    /// Records a heartbeat of a known endpoint, which counts as lost if no other comes
    /// by `deadline`. Heartbeats of unknown endpoints are dropped (the endpoint must
    /// register over HTTP first).
    pub async fn record_heartbeat(
        &self,
        id: EndpointId,
        at: Micros,
        interval_ms: u64,
        load: &serde_json::Value,
        deadline: Micros,
    ) -> Result<bool> {
        let mut conn = self.conn.clone();
        let key = self.endpoint_key(id);
        let exists: bool = conn.hexists(&key, "owner").await?;
        if !exists {
            return Ok(false);
        }
        redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("hb", at.to_string()),
                    ("hbi", interval_ms.to_string()),
                    ("load", load.to_string()),
                ],
            )
            .ignore()
            .hdel(&key, "lost")
            .ignore()
            .zadd(self.endpoint_deadlines_key(), id.to_string(), deadline)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(true)
    }

    /// Endpoints whose heartbeat deadline has passed, with that deadline.
    pub async fn overdue_endpoints(&self, now: Micros) -> Result<Vec<(EndpointId, Micros)>> {
        let mut conn = self.conn.clone();
        let rows: Vec<(String, f64)> = conn
            .zrangebyscore_limit_withscores(self.endpoint_deadlines_key(), "-inf", now, 0, 1000)
            .await?;
        rows.into_iter()
            .map(|(id, deadline)| Ok((parse_id(&id, "endpoint", &id)?, deadline as Micros)))
            .collect()
    }

    /// Endpoints whose heartbeat deadline has not passed (online ones), at most 10,000.
    pub async fn online_endpoints(&self, now: Micros) -> Result<Vec<EndpointId>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrangebyscore_limit(self.endpoint_deadlines_key(), now, "+inf", 0, 10_000)
            .await?;
        ids.iter().map(|id| parse_id(id, "endpoint", id)).collect()
    }

    /// Claims the endpoint's stranded tasks for `window_ms` (several forwarders may
    /// sweep; one requeues them). False when another holds the claim.
    pub async fn claim_stranded(&self, id: EndpointId, window_ms: u64) -> Result<bool> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}:ep:{id}:stranded-claim", self.ns))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(window_ms.max(1))
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    /// Claims an overdue endpoint as lost (several forwarders may race; one wins) and
    /// marks it so. Refused when another caller claimed it or a heartbeat came since,
    /// and while RabbitMQ blocked publishes less than `window` (the endpoint's
    /// missed-heartbeats window) ago (see [`Store::note_broker_blocked`]): the
    /// endpoint's heartbeats were blocked with everything else, and need that long
    /// after the block to come through again.
    pub async fn claim_lost_endpoint(
        &self,
        id: EndpointId,
        deadline: Micros,
        at: Micros,
        window: Micros,
    ) -> Result<LostClaim> {
        const CLAIM: &str = "local d = redis.call('ZSCORE', KEYS[1], ARGV[1]) \
            if not d or tonumber(d) ~= tonumber(ARGV[2]) then return 0 end \
            local b = tonumber(redis.call('GET', KEYS[3]) or '0') \
            if b + tonumber(ARGV[4]) > tonumber(ARGV[3]) then return 2 end \
            redis.call('ZREM', KEYS[1], ARGV[1]) \
            redis.call('HSET', KEYS[2], 'lost', ARGV[3]) return 1";
        let mut conn = self.conn.clone();
        let claimed: i64 = redis::Script::new(CLAIM)
            .key(self.endpoint_deadlines_key())
            .key(self.endpoint_key(id))
            .key(self.broker_blocked_key())
            .arg(id.to_string())
            .arg(deadline)
            .arg(at)
            .arg(window)
            .invoke_async(&mut conn)
            .await?;
        Ok(match claimed {
            1 => LostClaim::Claimed,
            2 => LostClaim::BrokerBlocked,
            _ => LostClaim::Taken,
        })
    }
}

/// What came of claiming an overdue endpoint as lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostClaim {
    /// This caller declares it lost.
    Claimed,
    /// Another caller claimed it, or a heartbeat came since.
    Taken,
    /// RabbitMQ blocked publishes (its heartbeats too) less than a missed-heartbeats
    /// window ago: not judged yet.
    BrokerBlocked,
}

/// Ids as one comma-separated field.
fn join<T: std::fmt::Display>(ids: &[T]) -> String {
    ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// A comma-separated field of ids (absent or empty: none).
fn ids<T: std::str::FromStr>(f: &Fields, field: &'static str) -> Result<Vec<T>> {
    match f.opt_string(field) {
        None => Ok(Vec::new()),
        Some(s) => s
            .split(',')
            .filter(|id| !id.is_empty())
            .map(|id| id.parse().map_err(|_| f.corrupt(field)))
            .collect(),
    }
}
