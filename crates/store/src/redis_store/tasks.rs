//! Task records: creating them, reading them, their inputs and results, and what the
//! forwarder needs to dispatch a task again. Moving them is `apply.rs`.

use std::collections::HashMap;

use bytes::Bytes;
use ferry_proto::state::FailureCause;
use ferry_proto::time::Micros;
use ferry_proto::{Actor, EndpointId, TaskId, TaskState, UserId};
use redis::AsyncCommands;

use super::{Fields, Store, parse_id};

/// A task record's fields but its history (`hn`, `h0`..) and its input (`p`, `pi`).
const OUTCOME_FIELDS: &[&str] = &[
    "s", "a", "r", "o", "f", "e", "b", "c", "t", "seen", "why", "res", "rr", "exc", "exd", "out", "err",
];
use crate::records::*;
use crate::{Error, Result};

impl Store {
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
        let history = format!("0,0,0,{}", by.code());
        pipe.hset_multiple(
            self.batch_key(batch.batch_id),
            &[
                ("owner", owner.as_str()),
                ("ep", endpoint.as_str()),
                ("size", &batch.size.to_string()),
                ("created", at.as_str()),
                ("n0", &batch.size.to_string()),
                ("open", &batch.size.to_string()),
            ],
        )
        .ignore();
        pipe.zadd(
            self.open_batches_key(),
            batch.batch_id.to_string(),
            batch.created_at,
        )
        .ignore();
        if batch.events {
            pipe.hset(self.batch_key(batch.batch_id), "ev", 1).ignore();
        }
        if let Some(url) = &batch.callback_url {
            pipe.hset(self.batch_key(batch.batch_id), "cb", url).ignore();
            pipe.hset(
                self.batch_key(batch.batch_id),
                "cbs",
                batch.callback_secret.as_deref().unwrap_or_default(),
            )
            .ignore();
            pipe.zadd(self.hooks_key(), batch.batch_id.to_string(), 0)
                .ignore();
        }
        if let Some(deadline) = batch.deadline {
            pipe.hset(self.batch_key(batch.batch_id), "deadline", deadline)
                .ignore();
            pipe.zadd(self.batch_deadlines_key(), batch.batch_id.to_string(), deadline)
                .ignore();
        }
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
            let key = self.task_key(t.task_id);
            // One HSET per task, optional fields included.
            let cmd = pipe
                .cmd("HSET")
                .arg(&key)
                .arg("s")
                .arg(0)
                .arg("a")
                .arg(0)
                .arg("r")
                .arg(t.max_retries)
                .arg("o")
                .arg(&owner)
                .arg("f")
                .arg(t.function_id.to_string())
                .arg("e")
                .arg(&endpoint)
                .arg("b")
                .arg(&batch_id)
                .arg("c")
                .arg(&at)
                .arg("hn")
                .arg(1)
                .arg("h0")
                .arg(&history);
            if t.by_reference {
                cmd.arg("pi").arg(t.payload.len());
            } else {
                cmd.arg("p").arg(t.payload.as_ref());
            }
            if let Some(w) = t.walltime_ms {
                cmd.arg("w").arg(w);
            }
            if let Some(g) = t.result_group {
                cmd.arg("g").arg(g.to_string());
            }
            cmd.ignore();
            if t.by_reference {
                pipe.cmd("SET")
                    .arg(format!("{key}:in"))
                    .arg(t.payload.as_ref())
                    .ignore();
            }
        }
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
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

    /// Reads task records, pipelined. `None` for an unknown or expired task.
    pub async fn get_tasks(&self, ids: &[TaskId]) -> Result<Vec<Option<TaskRecord>>> {
        self.read_tasks(ids, true).await
    }

    /// Like [`Store::get_tasks`] without the history (empty in the records): the
    /// cheaper read for polling many tasks for their results.
    pub async fn get_task_outcomes(&self, ids: &[TaskId]) -> Result<Vec<Option<TaskRecord>>> {
        self.read_tasks(ids, false).await
    }

    async fn read_tasks(&self, ids: &[TaskId], history: bool) -> Result<Vec<Option<TaskRecord>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in ids {
            if history {
                pipe.hgetall(self.task_key(*id));
            } else {
                pipe.cmd("HMGET").arg(self.task_key(*id)).arg(OUTCOME_FIELDS);
            }
        }
        let mut records: Vec<Option<TaskRecord>> = if history {
            let maps: Vec<HashMap<String, Vec<u8>>> = pipe.query_async(&mut conn).await?;
            ids.iter()
                .zip(maps)
                .map(|(id, map)| {
                    if map.is_empty() {
                        Ok(None)
                    } else {
                        task_from_fields(*id, Fields::new(map, "task", id.to_string())).map(Some)
                    }
                })
                .collect::<Result<_>>()?
        } else {
            let rows: Vec<Vec<Option<Vec<u8>>>> = pipe.query_async(&mut conn).await?;
            ids.iter()
                .zip(rows)
                .map(|(id, row)| task_from_outcome_row(*id, row))
                .collect::<Result<_>>()?
        };
        // Results kept in the data plane are read in one more round trip.
        let by_ref: Vec<(usize, String)> = records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let r = r.as_ref()?;
                let attempt = r.result_ref?;
                Some((i, format!("{}:out:{attempt}", self.task_key(r.task_id))))
            })
            .collect();
        if !by_ref.is_empty() {
            let mut pipe = redis::pipe();
            for (_, key) in &by_ref {
                pipe.get(key);
            }
            let data: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
            for ((i, _), data) in by_ref.iter().zip(data) {
                let r = records[*i].as_mut().expect("present");
                match data {
                    Some(d) => r.result = Some(String::from_utf8_lossy(&d).into_owned()),
                    None => r.result_expired = true,
                }
            }
        }
        Ok(records)
    }

    /// A task's input, wherever it is kept; `None` once the task is terminal (or gone).
    pub async fn get_input(&self, id: TaskId) -> Result<Option<Bytes>> {
        let mut conn = self.conn.clone();
        let key = self.task_key(id);
        let (inline, stored): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::pipe()
            .hget(&key, "p")
            .get(format!("{key}:in"))
            .query_async(&mut conn)
            .await?;
        Ok(inline.or(stored).map(Bytes::from))
    }

    /// Stores one attempt's result in the data plane, kept as long as finished tasks.
    pub async fn put_result(&self, id: TaskId, attempt: u32, data: &[u8]) -> Result<()> {
        let mut conn = self.conn.clone();
        let key = format!("{}:out:{attempt}", self.task_key(id));
        if self.result_ttl_secs > 0 {
            conn.set_ex::<_, _, ()>(key, data, self.result_ttl_secs).await?;
        } else {
            conn.set::<_, _, ()>(key, data).await?;
        }
        Ok(())
    }

    /// One attempt's result from the data plane.
    pub async fn get_result_data(&self, id: TaskId, attempt: u32) -> Result<Option<Bytes>> {
        let mut conn = self.conn.clone();
        let data: Option<Vec<u8>> = conn.get(format!("{}:out:{attempt}", self.task_key(id))).await?;
        Ok(data.map(Bytes::from))
    }

    /// How long finished tasks are kept (0: forever).
    pub fn result_ttl_secs(&self) -> u64 {
        self.result_ttl_secs
    }

    pub async fn get_task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        Ok(self.get_tasks(&[id]).await?.pop().flatten())
    }

    // ---- dispatching again -----------------------------------------------------------

    /// The tasks an endpoint holds (waiting-for-nodes, waiting-for-launch or running),
    /// as the transition script keeps them.
    pub async fn in_flight(&self, endpoint: EndpointId) -> Result<Vec<TaskId>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.smembers(self.endpoint_running_key(endpoint)).await?;
        ids.iter()
            .map(|s| parse_id(s, "endpoint", &endpoint.to_string()))
            .collect()
    }

    /// What it takes to dispatch these tasks again; `None` for a task that is gone,
    /// finished, or was stored without its input.
    pub async fn redispatch_info(&self, ids: &[TaskId]) -> Result<Vec<Option<Redispatch>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(self.task_key(*id))
                .arg(&["s", "a", "r", "f", "e", "p", "w", "g", "pi"]);
        }
        type Row = (
            Option<u8>,
            Option<u32>,
            Option<u32>,
            Option<String>,
            Option<String>,
            Option<Vec<u8>>,
            Option<u64>,
            Option<String>,
            Option<u64>,
        );
        let rows: Vec<Row> = pipe.query_async(&mut conn).await?;
        Ok(ids
            .iter()
            .zip(rows)
            .map(|(id, (s, a, r, f, e, p, w, g, pi))| {
                let state = TaskState::from_code(s?)?;
                if state.is_terminal() || (p.is_none() && pi.is_none()) {
                    return None;
                }
                Some(Redispatch {
                    task_id: *id,
                    function_id: f?.parse().ok()?,
                    endpoint_id: e?.parse().ok()?,
                    state,
                    attempt: a?,
                    max_retries: r?,
                    payload: p.map(Bytes::from).unwrap_or_default(),
                    input_bytes: pi,
                    walltime_ms: w,
                    result_group: g.and_then(|g| g.parse().ok()),
                })
            })
            .collect())
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
                ("hn", "0".to_owned()),
            ],
        )
        .await?;
        Ok(())
    }
}

/// A task record (no history) from an `HMGET` of [`OUTCOME_FIELDS`], read by position:
/// a poller reads thousands per request, and a map per record cost a tenth of the
/// web-service's time. `None` when the task does not exist (every field nil).
fn task_from_outcome_row(id: TaskId, mut row: Vec<Option<Vec<u8>>>) -> Result<Option<TaskRecord>> {
    if row.len() != OUTCOME_FIELDS.len() {
        return Err(Error::Corrupt {
            what: "task",
            id: id.to_string(),
            detail: format!(
                "{} fields read back, {} asked for",
                row.len(),
                OUTCOME_FIELDS.len()
            ),
        });
    }
    if row.iter().all(Option::is_none) {
        return Ok(None);
    }
    let corrupt = |i: usize| Error::Corrupt {
        what: "task",
        id: id.to_string(),
        detail: format!("field {:?} is missing or malformed", OUTCOME_FIELDS[i]),
    };
    fn field<T: std::str::FromStr>(row: &[Option<Vec<u8>>], i: usize) -> Option<T> {
        std::str::from_utf8(row[i].as_deref()?).ok()?.parse().ok()
    }
    fn text(v: Option<Vec<u8>>) -> Option<String> {
        v.map(|b| String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }
    macro_rules! req {
        ($i:expr) => {
            field(&row, $i).ok_or_else(|| corrupt($i))?
        };
    }
    // A present field that does not parse is corrupt; an absent optional one is None.
    macro_rules! optional {
        ($i:expr) => {
            match field(&row, $i) {
                Some(v) => Some(v),
                None if row[$i].is_some() => return Err(corrupt($i)),
                None => None,
            }
        };
    }
    let state = TaskState::from_code(req!(0)).ok_or_else(|| corrupt(0))?;
    let cause: Option<u8> = optional!(10);
    Ok(Some(TaskRecord {
        task_id: id,
        owner: req!(3),
        function_id: req!(4),
        endpoint_id: req!(5),
        batch_id: req!(6),
        state,
        attempt: req!(1),
        max_retries: req!(2),
        created_at: req!(7),
        completed_at: optional!(8),
        last_seen: optional!(9),
        cause: cause.and_then(FailureCause::from_code),
        result_ref: optional!(12),
        result: text(row[11].take()),
        result_expired: false,
        traceback: text(row[13].take()),
        exception: text(row[14].take()),
        stdout: text(row[15].take()),
        stderr: text(row[16].take()),
        history: Vec::new(),
    }))
}

fn task_from_fields(id: TaskId, f: Fields) -> Result<TaskRecord> {
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
        result_ref: f.opt_num("rr")?,
        result_expired: false,
        traceback: f.opt_string("exc"),
        exception: f.opt_string("exd"),
        stdout: f.opt_string("out"),
        stderr: f.opt_string("err"),
        history: {
            let created: i64 = f.num("c")?;
            let steps: u32 = f.opt_num("hn")?.unwrap_or(0);
            (0..steps)
                .map(|i| {
                    let field = format!("h{i}");
                    f.opt_string(&field)
                        .and_then(|text| parse_step(&text, created))
                        .ok_or_else(|| f.corrupt(&field))
                })
                .collect::<Result<Vec<_>>>()?
        },
    })
}

/// A history step is `state,attempt,at,actor[,cause]`, `at` in micros after `base`
/// (the task's creation in its record; 0 in event streams, which hold absolute times).
/// Step times at or past this are micros since the epoch (every step the transition
/// script writes); smaller ones are micros after the task's creation (the creation step,
/// 0, and records written before the script stored absolute times).
const ABSOLUTE_MICROS: i64 = 100_000_000_000_000;

/// One history entry, `state,attempt,at,actor[,cause]`; `base` is the creation time
/// that a relative `at` counts from.
pub(super) fn parse_step(entry: &str, base: i64) -> Option<HistoryStep> {
    let mut parts = entry.split(',');
    let state = TaskState::from_code(parts.next()?.parse().ok()?)?;
    let attempt = parts.next()?.parse().ok()?;
    let at: i64 = parts.next()?.parse().ok()?;
    let by = Actor::from_code(parts.next()?.parse().ok()?)?;
    let cause = match parts.next() {
        Some(c) => Some(FailureCause::from_code(c.parse().ok()?)?),
        None => None,
    };
    Some(HistoryStep {
        state,
        attempt,
        at: u64::try_from(if at >= ABSOLUTE_MICROS { at } else { base + at }).ok()?,
        by,
        cause,
    })
}
