//! The Redis implementation of Ferry's store.

use std::collections::HashMap;

use bytes::Bytes;
use ferry_proto::messages::FunctionKind;
use ferry_proto::state::FailureCause;
use ferry_proto::time::Micros;
use ferry_proto::{Actor, BatchId, EndpointId, FunctionId, Ignored, TaskGroupId, TaskId, TaskState, UserId};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use sha2::{Digest, Sha256};

use crate::records::*;
use crate::{Error, Result};

const APPLY_LUA: &str = include_str!("scripts/apply.lua");

/// Marks a task as seen alive, unless it is finished or gone (never creates a record).
const TOUCH_LUA: &str = "local s = redis.call('HGET', KEYS[1], 's') \
    if s and tonumber(s) < 5 then redis.call('HSET', KEYS[1], 'seen', ARGV[1]) end return 0";

/// Ferry's records in one Redis, under one namespace. Cheap to clone: clones share the
/// connection (a multiplexed connection that reconnects by itself).
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    ns: String,
    apply: Script,
    touch: Script,
    /// How long a finished task (and its result) is kept; 0 keeps it forever.
    result_ttl_secs: u64,
}

impl Store {
    /// Connects to `url` (`redis://host:port/db`); every key is prefixed by `namespace`.
    pub async fn connect(url: &str, namespace: &str, result_ttl_secs: u64) -> Result<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(6)
            .set_max_delay(std::time::Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            conn,
            ns: namespace.to_owned(),
            apply: Script::new(APPLY_LUA),
            touch: Script::new(TOUCH_LUA),
            result_ttl_secs,
        })
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

    fn batch_tasks_key(&self, id: BatchId) -> String {
        format!("{}:batch:{{{id}}}:tasks", self.ns)
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

    fn token_key(&self, token: &str) -> String {
        format!(
            "{}:token:{}",
            self.ns,
            hex::encode(Sha256::digest(token.as_bytes()))
        )
    }

    // ---- users -------------------------------------------------------------------

    /// Creates a user and returns its id and a new bearer token. Only the token's hash
    /// is stored.
    pub async fn create_user(&self, name: &str) -> Result<(UserId, String)> {
        let user_id = UserId::new();
        let token = format!("fy_{}", hex::encode(rand::random::<[u8; 24]>()));
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hset_multiple(
                self.user_key(user_id),
                &[
                    ("name", name.to_owned()),
                    ("created", ferry_proto::time::now_micros().to_string()),
                ],
            )
            .set(self.token_key(&token), user_id.to_string())
            .query_async::<()>(&mut conn)
            .await?;
        Ok((user_id, token))
    }

    /// The user a bearer token belongs to.
    pub async fn user_for_token(&self, token: &str) -> Result<Option<UserId>> {
        let mut conn = self.conn.clone();
        let id: Option<String> = conn.get(self.token_key(token)).await?;
        id.map(|s| parse_id(&s, "user", &s)).transpose()
    }

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
        conn.hset_multiple::<_, _, _, ()>(self.function_key(f.function_id), &fields)
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
        }))
    }

    // ---- endpoints ---------------------------------------------------------------

    /// Creates or renames an endpoint record (heartbeat fields are left alone).
    pub async fn put_endpoint(&self, e: &EndpointRecord) -> Result<()> {
        let mut conn = self.conn.clone();
        let key = self.endpoint_key(e.endpoint_id);
        redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("owner", e.owner.to_string()),
                    ("name", e.name.clone()),
                    ("created", e.created_at.to_string()),
                ],
            )
            .sadd(self.user_endpoints_key(e.owner), e.endpoint_id.to_string())
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
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
            details: f
                .opt_string("load")
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(serde_json::Value::Null),
        }))
    }

    pub async fn list_endpoints(&self, owner: UserId) -> Result<Vec<EndpointRecord>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.smembers(self.user_endpoints_key(owner)).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let id: EndpointId = parse_id(&id, "endpoint", &id)?;
            if let Some(e) = self.get_endpoint(id).await? {
                out.push(e);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Records a heartbeat of a known endpoint. Heartbeats of unknown endpoints are
    /// dropped (the endpoint must register over HTTP first).
    pub async fn record_heartbeat(
        &self,
        id: EndpointId,
        at: Micros,
        interval_ms: u64,
        load: &serde_json::Value,
    ) -> Result<bool> {
        let mut conn = self.conn.clone();
        let key = self.endpoint_key(id);
        let exists: bool = conn.hexists(&key, "owner").await?;
        if !exists {
            return Ok(false);
        }
        conn.hset_multiple::<_, _, _, ()>(
            &key,
            &[
                ("hb", at.to_string()),
                ("hbi", interval_ms.to_string()),
                ("load", load.to_string()),
            ],
        )
        .await?;
        Ok(true)
    }

    // ---- tasks -------------------------------------------------------------------

    /// Writes a batch and its tasks as `received`, all in one MULTI/EXEC: either every
    /// task exists afterwards or none does.
    pub async fn create_tasks(&self, batch: &BatchRecord, tasks: &[NewTask], by: Actor) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        let at = batch.created_at.to_string();
        let owner = batch.owner.to_string();
        let endpoint = batch.endpoint_id.to_string();
        let batch_id = batch.batch_id.to_string();
        let history = format!("0,0,{at},{};", by.code());
        pipe.hset_multiple(
            self.batch_key(batch.batch_id),
            &[
                ("owner", owner.as_str()),
                ("ep", endpoint.as_str()),
                ("size", &batch.size.to_string()),
                ("created", at.as_str()),
            ],
        )
        .ignore();
        if let Some(group) = batch.task_group {
            pipe.hset(self.batch_key(batch.batch_id), "tg", group.to_string())
                .ignore();
        }
        for chunk in tasks.chunks(4096) {
            let ids: Vec<String> = chunk.iter().map(|t| t.task_id.to_string()).collect();
            pipe.rpush(self.batch_tasks_key(batch.batch_id), ids).ignore();
        }
        if let Some(group) = batch.task_group {
            pipe.hset_nx(self.group_key(group), "owner", &owner).ignore();
            for chunk in tasks.chunks(4096) {
                let entries: Vec<String> = chunk.iter().map(|t| format!("{},{at}", t.task_id)).collect();
                pipe.rpush(self.group_tasks_key(group), entries).ignore();
            }
        }
        for t in tasks {
            pipe.hset_multiple(
                self.task_key(t.task_id),
                &[
                    ("s", "0"),
                    ("a", "0"),
                    ("r", &t.max_retries.to_string()),
                    ("o", owner.as_str()),
                    ("f", &t.function_id.to_string()),
                    ("e", endpoint.as_str()),
                    ("b", batch_id.as_str()),
                    ("c", at.as_str()),
                    ("h", history.as_str()),
                ],
            )
            .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Applies reports through the transition script, pipelined: one round trip for
    /// the whole slice, and one script call per task (its reports in slice order).
    pub async fn apply(&self, reports: &[Report]) -> Result<Vec<Applied>> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        // Group each task's reports, in order. A group carries at most one result, so a
        // second result for the same task starts a group of its own (run after).
        let mut groups: Vec<(TaskId, Vec<usize>, Option<usize>)> = Vec::new();
        let mut open: HashMap<TaskId, usize> = HashMap::new();
        for (i, r) in reports.iter().enumerate() {
            let reuse = open
                .get(&r.task_id)
                .copied()
                .filter(|&g| !(r.finish.is_some() && groups[g].2.is_some()));
            let g = match reuse {
                Some(g) => g,
                None => {
                    groups.push((r.task_id, Vec::new(), None));
                    open.insert(r.task_id, groups.len() - 1);
                    groups.len() - 1
                }
            };
            groups[g].1.push(i);
            if r.finish.is_some() {
                groups[g].2 = Some(i);
            }
        }
        let mut conn = self.conn.clone();
        let ttl = self.result_ttl_secs.to_string();
        let build = || {
            let mut pipe = redis::pipe();
            for (task_id, members, finish) in &groups {
                let mut inv = self.apply.key(self.task_key(*task_id));
                inv.arg(&ttl).arg(members.len());
                for &i in members {
                    let r = &reports[i];
                    inv.arg(r.event.kind.code())
                        .arg(r.event.attempt)
                        .arg(r.at)
                        .arg(r.by.code());
                }
                if let Some(f) = finish.and_then(|i| reports[i].finish.as_ref()) {
                    inv.arg(if f.success { "1" } else { "0" })
                        .arg(f.data.as_ref())
                        .arg(f.exception.as_ref())
                        .arg(f.stdout.as_str())
                        .arg(f.stderr.as_str());
                }
                pipe.invoke_script(&inv);
            }
            pipe
        };
        let replies: Vec<Vec<i64>> = match build().query_async(&mut conn).await {
            Ok(r) => r,
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // Redis restarted (or flushed its scripts): load it and go again.
                self.apply.prepare_invoke().load_async(&mut conn).await?;
                build().query_async(&mut conn).await?
            }
            Err(e) => return Err(e.into()),
        };
        let mut out = vec![Applied::Unknown; reports.len()];
        for ((_, members, _), reply) in groups.iter().zip(replies) {
            for (&i, chunk) in members.iter().zip(reply.chunks(4)) {
                out[i] = decode_applied(chunk);
            }
        }
        Ok(out)
    }

    /// Records that these tasks were seen alive at `at` (unfinished ones only).
    pub async fn touch_tasks(&self, ids: &[TaskId], at: Micros) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let build = || {
            let mut pipe = redis::pipe();
            for id in ids {
                pipe.invoke_script(self.touch.key(self.task_key(*id)).arg(at))
                    .ignore();
            }
            pipe
        };
        match build().query_async::<()>(&mut conn).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.touch.prepare_invoke().load_async(&mut conn).await?;
                Ok(build().query_async::<()>(&mut conn).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Loads the transition script (done once at start so the first batch is not a miss).
    pub async fn load_scripts(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        self.apply.prepare_invoke().load_async(&mut conn).await?;
        self.touch.prepare_invoke().load_async(&mut conn).await?;
        Ok(())
    }

    /// Reads task records, pipelined. `None` for an unknown or expired task.
    pub async fn get_tasks(&self, ids: &[TaskId]) -> Result<Vec<Option<TaskRecord>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(self.task_key(*id));
        }
        let maps: Vec<HashMap<String, Vec<u8>>> = pipe.query_async(&mut conn).await?;
        ids.iter()
            .zip(maps)
            .map(|(id, map)| {
                if map.is_empty() {
                    Ok(None)
                } else {
                    task_from_fields(*id, map).map(Some)
                }
            })
            .collect()
    }

    pub async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        Ok(self.get_tasks(&[id]).await?.pop().flatten())
    }

    /// A batch and the ids of its tasks, in submission order.
    pub async fn get_batch(&self, id: BatchId) -> Result<Option<(BatchRecord, Vec<TaskId>)>> {
        let mut conn = self.conn.clone();
        let (map, ids): (HashMap<String, String>, Vec<String>) = redis::pipe()
            .hgetall(self.batch_key(id))
            .lrange(self.batch_tasks_key(id), 0, -1)
            .query_async(&mut conn)
            .await?;
        if map.is_empty() {
            return Ok(None);
        }
        let f = Fields::new(
            map.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
            "batch",
            id.to_string(),
        );
        let record = BatchRecord {
            batch_id: id,
            owner: f.id("owner")?,
            endpoint_id: f.id("ep")?,
            size: f.num("size")?,
            created_at: f.num("created")?,
            task_group: f.opt_string("tg").and_then(|s| s.parse().ok()),
        };
        let ids = ids
            .iter()
            .map(|s| parse_id(s, "batch", &id.to_string()))
            .collect::<Result<Vec<TaskId>>>()?;
        Ok(Some((record, ids)))
    }

    /// The owner of a task group, if the group exists.
    pub async fn task_group_owner(&self, id: TaskGroupId) -> Result<Option<UserId>> {
        let mut conn = self.conn.clone();
        let owner: Option<String> = conn.hget(self.group_key(id), "owner").await?;
        owner
            .map(|s| parse_id(&s, "task group", &id.to_string()))
            .transpose()
    }

    /// Every task ever submitted into a group, in submission order, with its creation
    /// time.
    pub async fn task_group_tasks(&self, id: TaskGroupId) -> Result<Vec<(TaskId, Micros)>> {
        let mut conn = self.conn.clone();
        let entries: Vec<String> = conn.lrange(self.group_tasks_key(id), 0, -1).await?;
        entries
            .iter()
            .map(|e| {
                let (task, at) = e.split_once(',').unwrap_or((e, "0"));
                Ok((
                    parse_id(task, "task group", &id.to_string())?,
                    at.parse().unwrap_or(0),
                ))
            })
            .collect()
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

    /// Writes a raw task record in any state (the script-agreement test uses it).
    #[doc(hidden)]
    pub async fn force_task_state(
        &self,
        id: TaskId,
        state: TaskState,
        attempt: u32,
        max_retries: u32,
    ) -> Result<()> {
        let mut conn = self.conn.clone();
        let key = self.task_key(id);
        conn.del::<_, ()>(&key).await?;
        let nil = UserId(uuid::Uuid::nil()).to_string();
        conn.hset_multiple::<_, _, _, ()>(
            &key,
            &[
                ("s", state.code().to_string()),
                ("a", attempt.to_string()),
                ("r", max_retries.to_string()),
                ("o", nil.clone()),
                ("f", nil.clone()),
                ("e", nil.clone()),
                ("b", nil),
                ("c", "0".to_owned()),
                ("h", String::new()),
            ],
        )
        .await?;
        Ok(())
    }
}

fn decode_applied(reply: &[i64]) -> Applied {
    match reply {
        [1, to, attempt, cause, ..] => Applied::Moved {
            to: TaskState::from_code(*to as u8).unwrap_or(TaskState::Failed),
            attempt: *attempt as u32,
            cause: u8::try_from(*cause).ok().and_then(FailureCause::from_code),
        },
        [0, code, ..] => Applied::Ignored(Ignored::from_code(*code as u8).unwrap_or(Ignored::NotForward)),
        _ => Applied::Unknown,
    }
}

fn task_from_fields(id: TaskId, map: HashMap<String, Vec<u8>>) -> Result<TaskRecord> {
    let f = Fields::new(map, "task", id.to_string());
    let state_code: u8 = f.num("s")?;
    Ok(TaskRecord {
        task_id: id,
        owner: f.id("o")?,
        function_id: f.id("f")?,
        endpoint_id: f.id("e")?,
        batch_id: f.id("b")?,
        state: TaskState::from_code(state_code).ok_or_else(|| f.corrupt("s"))?,
        attempt: f.num("a")?,
        max_retries: f.num("r")?,
        created_at: f.num("c")?,
        completed_at: f.opt_num("t")?,
        last_seen: f.opt_num("seen")?,
        cause: f.opt_num::<u8>("why")?.and_then(FailureCause::from_code),
        result: f.opt_string("res"),
        traceback: f.opt_string("exc"),
        exception: f.opt_string("exd"),
        stdout: f.opt_string("out"),
        stderr: f.opt_string("err"),
        history: parse_history(&f.opt_string("h").unwrap_or_default()).ok_or_else(|| f.corrupt("h"))?,
    })
}

/// History entries are `state,attempt,at,actor[,cause];`.
fn parse_history(text: &str) -> Option<Vec<HistoryStep>> {
    text.split(';')
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let mut parts = entry.split(',');
            let state = TaskState::from_code(parts.next()?.parse().ok()?)?;
            let attempt = parts.next()?.parse().ok()?;
            let at = parts.next()?.parse().ok()?;
            let by = Actor::from_code(parts.next()?.parse().ok()?)?;
            let cause = match parts.next() {
                Some(c) => Some(FailureCause::from_code(c.parse().ok()?)?),
                None => None,
            };
            Some(HistoryStep {
                state,
                attempt,
                at,
                by,
                cause,
            })
        })
        .collect()
}

fn parse_id<T: std::str::FromStr>(s: &str, what: &'static str, id: &str) -> Result<T> {
    s.parse().map_err(|_| Error::Corrupt {
        what,
        id: id.to_owned(),
        detail: format!("bad id {s:?}"),
    })
}

/// A hash read back from Redis, with typed getters that name the record on failure.
struct Fields {
    map: HashMap<String, Vec<u8>>,
    what: &'static str,
    id: String,
}

impl Fields {
    fn new(map: HashMap<String, Vec<u8>>, what: &'static str, id: String) -> Self {
        Self { map, what, id }
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

    fn string(&self, field: &str) -> Result<String> {
        String::from_utf8(self.bytes(field)?).map_err(|_| self.corrupt(field))
    }

    fn opt_string(&self, field: &str) -> Option<String> {
        self.map
            .get(field)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    fn num<T: std::str::FromStr>(&self, field: &str) -> Result<T> {
        self.string(field)?.parse().map_err(|_| self.corrupt(field))
    }

    fn opt_num<T: std::str::FromStr>(&self, field: &str) -> Result<Option<T>> {
        match self.map.get(field) {
            None => Ok(None),
            Some(_) => self.num(field).map(Some),
        }
    }

    fn id<T: std::str::FromStr>(&self, field: &str) -> Result<T> {
        let s = self.string(field)?;
        s.parse().map_err(|_| self.corrupt(field))
    }
}
