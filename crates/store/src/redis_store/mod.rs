//! The Redis implementation of Ferry's store: the connection and key layout here;
//! [`registry`] (users, functions, endpoints), [`tasks`] (tasks, task groups, the
//! transition script), [`batches`] (sessions), [`events`] (event streams, webhooks)
//! and [`finished`] (announcements of finished tasks) add their methods to [`Store`].

mod apply;
mod batches;
mod credentials;
mod events;
mod finished;
mod idempotency;
mod liveness;
mod pending;
mod registry;
mod rows;
mod tasks;

pub use tasks::{ByReference, RESULT_GROUP_BYTES};

pub use credentials::{CredentialInfo, Principal, UserInfo};
pub use events::{EventReader, EventWaker};
pub use finished::{EndedHere, FinishedTasks};
pub use idempotency::KeyClaim;
pub use liveness::ForwarderSeen;
pub use registry::LostClaim;

use std::borrow::Cow;
use std::collections::HashMap;

use ferry_proto::{BatchId, EndpointId, FunctionId, TaskGroupId, TaskId, UserId};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use crate::{Error, Result};

/// Ends a batch (`batch_done`): the start of every script that can.
macro_rules! batch_done_lua {
    () => {
        include_str!("../scripts/batch_done.lua")
    };
}
pub(super) use batch_done_lua;

const APPLY_LUA: &str = concat!(batch_done_lua!(), include_str!("../scripts/apply.lua"));

/// Marks a task as seen alive at ARGV[1] by endpoint ARGV[2], unless it is finished,
/// gone (never creates a record) or another endpoint's.
const TOUCH_LUA: &str = "local r = redis.call('HMGET', KEYS[1], 's', 'e') \
    if r[1] and tonumber(r[1]) < 5 and r[2] == ARGV[2] then redis.call('HSET', KEYS[1], 'seen', ARGV[1]) end return 0";

/// Ferry's records in one Redis, under one namespace. Cheap to clone: clones share the
/// connection (a multiplexed connection that reconnects by itself).
#[derive(Clone)]
pub struct Store {
    client: redis::Client,
    conn: ConnectionManager,
    ns: String,
    apply: Script,
    touch: Script,
    /// How long a finished task (and its result) is kept; 0 keeps it forever.
    result_ttl_secs: u64,
    /// The most result bytes kept in the data plane that one read of several tasks may
    /// carry (0: no bound); past it the read fails with [`crate::Error::TooLarge`].
    response_budget: u64,
}

impl Store {
    /// Connects to `url` (`redis://host:port/db`); every key is prefixed by `namespace`.
    pub async fn connect(url: &str, namespace: &str, result_ttl_secs: u64) -> Result<Self> {
        Self::connect_tls(url, None, namespace, result_ttl_secs).await
    }

    /// Like [`Store::connect`]; a `rediss://` URL is verified against `ca_pem` (PEM CA
    /// certificates) when given, else against the system's roots.
    pub async fn connect_tls(
        url: &str,
        ca_pem: Option<&[u8]>,
        namespace: &str,
        result_ttl_secs: u64,
    ) -> Result<Self> {
        let client = match ca_pem {
            Some(pem) if url.starts_with("rediss://") => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            )?,
            _ => redis::Client::open(url)?,
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(6)
            .set_max_delay(std::time::Duration::from_secs(2))
            // A 100,000-task batch is one MULTI/EXEC of ~100 MB of commands: give Redis
            // time to answer it (the client's default gives up after 500 ms). A dead
            // Redis is noticed by the connection, not by this timeout.
            .set_response_timeout(Some(std::time::Duration::from_secs(60)));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self {
            client,
            conn,
            ns: namespace.to_owned(),
            apply: Script::new(APPLY_LUA),
            touch: Script::new(TOUCH_LUA),
            result_ttl_secs,
            response_budget: 0,
        })
    }

    /// Refuses a Redis that evicts keys ([`crate::Error::Evicting`]): any
    /// `maxmemory-policy` but `noeviction` (the `volatile-*` ones too: Ferry's records
    /// carry expiries). A Redis that does not let `CONFIG GET` be called (some managed
    /// services) cannot be checked: that is logged, not refused.
    pub async fn check_no_eviction(&self) -> Result<()> {
        let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut self.conn.clone())
            .await;
        match reply {
            Ok(pair) => match pair.get(1) {
                Some(policy) if policy != "noeviction" => Err(crate::Error::Evicting {
                    policy: policy.clone(),
                }),
                _ => Ok(()),
            },
            Err(e) if e.kind() == redis::ErrorKind::Io => Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read Redis's maxmemory-policy (CONFIG GET refused): make sure it is noeviction, or records may vanish when Redis is full");
                Ok(())
            }
        }
    }

    /// Bounds the result bytes one read of several tasks may carry (0: no bound).
    pub fn with_response_budget(mut self, bytes: u64) -> Self {
        self.response_budget = bytes;
        self
    }

    /// The namespace every key starts with.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    fn task_key(&self, id: TaskId) -> String {
        format!("{}:task:{{{id}}}", self.ns)
    }

    fn batch_key(&self, id: BatchId) -> String {
        format!("{}:batch:{{{id}}}", self.ns)
    }

    fn batch_events_key(&self, id: BatchId) -> String {
        format!("{}:batch:{{{id}}}:ev", self.ns)
    }

    fn batch_tasks_key(&self, id: BatchId) -> String {
        format!("{}:batch:{{{id}}}:tasks", self.ns)
    }

    /// Batches with a webhook to deliver, scored by when to try next (micros).
    fn hooks_key(&self) -> String {
        format!("{}:hooks", self.ns)
    }

    /// Batches that may still have tasks in `received`, scored by acceptance time.
    fn open_batches_key(&self) -> String {
        format!("{}:open-batches", self.ns)
    }

    /// Batches written in parts whose last part is not written yet, scored by their
    /// acceptance time.
    fn making_key(&self) -> String {
        format!("{}:making", self.ns)
    }

    /// Batches with a deadline, scored by it.
    fn batch_deadlines_key(&self) -> String {
        format!("{}:batch-deadlines", self.ns)
    }

    /// Endpoints scored by when they count as lost unless they send a heartbeat.
    fn endpoint_deadlines_key(&self) -> String {
        format!("{}:ep-deadlines", self.ns)
    }

    /// An endpoint's in-flight tasks (kept by the transition script; the name is built
    /// there too).
    fn endpoint_running_key(&self, id: EndpointId) -> String {
        format!("{}:ep:{id}:run", self.ns)
    }

    /// The endpoint's batches with tasks `waiting-for-ep` (kept by the transition script).
    fn endpoint_waiting_key(&self, id: EndpointId) -> String {
        format!("{}:ep:{id}:wait", self.ns)
    }

    fn group_key(&self, id: TaskGroupId) -> String {
        format!("{}:tg:{{{id}}}", self.ns)
    }

    fn group_tasks_key(&self, id: TaskGroupId) -> String {
        format!("{}:tg:{{{id}}}:tasks", self.ns)
    }

    fn function_key(&self, id: FunctionId) -> String {
        format!("{}:fn:{id}", self.ns)
    }

    fn endpoint_key(&self, id: EndpointId) -> String {
        format!("{}:ep:{id}", self.ns)
    }

    fn user_key(&self, id: UserId) -> String {
        format!("{}:user:{id}", self.ns)
    }

    fn user_endpoints_key(&self, id: UserId) -> String {
        format!("{}:user:{id}:eps", self.ns)
    }

    /// A user's sessions (batches), scored by when they were created: what
    /// `GET /v1/sessions` lists.
    fn user_sessions_key(&self, user: UserId) -> String {
        format!("{}:user:{user}:sessions", self.ns)
    }

    /// Unfinished tasks per user (`u:<id>`) and per endpoint (`e:<id>`).
    fn unfinished_key(&self) -> String {
        format!("{}:unfinished", self.ns)
    }

    /// Tasks in each unfinished state, all users together (`n0`..`n4`).
    fn states_key(&self) -> String {
        format!("{}:states", self.ns)
    }

    /// The endpoints that are public or shared with someone (listed to those users).
    fn shared_endpoints_key(&self) -> String {
        format!("{}:eps:shared", self.ns)
    }

    /// Loads the transition script (done once at start so the first batch is not a miss).
    pub async fn load_scripts(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        self.apply.prepare_invoke().load_async(&mut conn).await?;
        self.touch.prepare_invoke().load_async(&mut conn).await?;
        Ok(())
    }

    /// Deletes every key of this namespace (tests clean up with it).
    pub async fn delete_namespace(&self) -> Result<u64> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.ns);
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                deleted += keys.len() as u64;
                conn.del::<_, ()>(keys).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

fn parse_id<T: std::str::FromStr>(s: &str, what: &'static str, id: &str) -> Result<T> {
    s.parse().map_err(|_| Error::Corrupt {
        what,
        id: id.to_owned(),
        detail: format!("bad id {s:?}"),
    })
}

/// A hash read back from Redis, with typed getters that name the record on failure.
/// Field names are borrowed when the caller asked for them by name (`HMGET`), owned
/// when Redis listed them (`HGETALL`); values are parsed in place, not copied.
struct Fields {
    map: HashMap<Cow<'static, str>, Vec<u8>>,
    what: &'static str,
    id: String,
}

impl Fields {
    fn new<K: Into<Cow<'static, str>>>(
        map: impl IntoIterator<Item = (K, Vec<u8>)>,
        what: &'static str,
        id: String,
    ) -> Self {
        Self {
            map: map.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            what,
            id,
        }
    }

    fn corrupt(&self, field: &str) -> Error {
        Error::Corrupt {
            what: self.what,
            id: self.id.clone(),
            detail: format!("field {field:?} is missing or malformed"),
        }
    }

    fn bytes(&self, field: &str) -> Result<Vec<u8>> {
        self.map.get(field).cloned().ok_or_else(|| self.corrupt(field))
    }

    fn str(&self, field: &str) -> Result<&str> {
        let raw = self.map.get(field).ok_or_else(|| self.corrupt(field))?;
        std::str::from_utf8(raw).map_err(|_| self.corrupt(field))
    }

    fn string(&self, field: &str) -> Result<String> {
        self.str(field).map(str::to_owned)
    }

    fn opt_string(&self, field: &str) -> Option<String> {
        self.map
            .get(field)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    fn num<T: std::str::FromStr>(&self, field: &str) -> Result<T> {
        self.str(field)?.parse().map_err(|_| self.corrupt(field))
    }

    fn opt_num<T: std::str::FromStr>(&self, field: &str) -> Result<Option<T>> {
        match self.map.get(field) {
            None => Ok(None),
            Some(_) => self.num(field).map(Some),
        }
    }

    fn id<T: std::str::FromStr>(&self, field: &str) -> Result<T> {
        self.num(field)
    }
}
