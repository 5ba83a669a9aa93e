//! Task records: creating them, reading them, their inputs and results, and what the
//! forwarder needs to dispatch a task again. Moving them is `apply.rs`.

use std::collections::HashMap;

use bytes::Bytes;
use ferry_proto::time::Micros;
use ferry_proto::{Actor, BatchId, EndpointId, TaskId, TaskState, UserId};
use redis::AsyncCommands;

use super::rows::{BRIEF_FIELDS, OUTCOME_FIELDS, outcome_from_row, task_from_fields, task_from_outcome_row};
use super::{Fields, Store, parse_id};

use crate::Result;
use crate::records::*;

impl Store {
    // ---- tasks -------------------------------------------------------------------

    /// How many tasks, of all users, are in each unfinished state (indexed by
    /// [`TaskState::code`], `received` to `running`). Kept since this version of Ferry
    /// first ran against the store: tasks submitted before are not counted, and a count
    /// they would take below zero reads zero.
    pub async fn tasks_in_flight(&self) -> Result<[u64; 5]> {
        let mut conn = self.conn.clone();
        let counts: Vec<Option<i64>> = redis::cmd("HMGET")
            .arg(self.states_key())
            .arg(&["n0", "n1", "n2", "n3", "n4"])
            .query_async(&mut conn)
            .await?;
        let mut out = [0u64; 5];
        for (o, c) in out.iter_mut().zip(counts) {
            *o = c.unwrap_or(0).max(0) as u64;
        }
        Ok(out)
    }

    /// How many unfinished tasks `user` has (on every endpoint) and `endpoint` has (from
    /// every user): kept by each submission and by the transition script as tasks end.
    pub async fn unfinished(&self, user: UserId, endpoint: EndpointId) -> Result<(u64, u64)> {
        let mut conn = self.conn.clone();
        let (u, e): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.unfinished_key())
            .arg(format!("u:{user}"))
            .arg(format!("e:{endpoint}"))
            .query_async(&mut conn)
            .await?;
        Ok((u.unwrap_or(0).max(0) as u64, e.unwrap_or(0).max(0) as u64))
    }

    /// Writes a batch and its tasks as `received`, all in one MULTI/EXEC: either every
    /// task exists afterwards or none does.
    pub async fn create_tasks(&self, batch: &BatchRecord, tasks: &[NewTask], by: Actor) -> Result<()> {
        self.create_part(batch, tasks, by, Part::Whole, batch.created_at)
            .await
    }

    /// Writes one part of a batch's tasks as `received`, in one MULTI/EXEC: a large
    /// submission (or several sessions at once) is written part by part, and committed
    /// by [`Store::commit_batches`] once every part is in; only then may its tasks be
    /// dispatched. The counts always match the records written: `n0` and `open` grow
    /// part by part (the first part holds `open` one above its tasks until the commit,
    /// so the batch cannot read done half-written), and `at` (now) re-dates the batch
    /// in the sweeper's watch list. The batch stays in the `making` list from its first
    /// part to its commit; one whose writer died or gave up is failed and closed by the
    /// sweeper ([`Store::close_unfinished_batch`]). Its deadline starts to count at the
    /// commit. A `Whole` part is written and committed at once.
    pub async fn create_part(
        &self,
        batch: &BatchRecord,
        tasks: &[NewTask],
        by: Actor,
        part: Part,
        at: Micros,
    ) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        let created = batch.created_at.to_string();
        let owner = batch.owner.to_string();
        let endpoint = batch.endpoint_id.to_string();
        let batch_id = batch.batch_id.to_string();
        let batch_key = self.batch_key(batch.batch_id);
        let history = format!("0,0,0,{}", by.code());
        let n = tasks.len() as i64;
        let first = matches!(part, Part::Whole | Part::First);
        if first {
            pipe.hset_multiple(
                &batch_key,
                &[
                    ("owner", owner.as_str()),
                    ("ep", endpoint.as_str()),
                    ("size", &batch.size.to_string()),
                    ("created", created.as_str()),
                ],
            )
            .ignore();
            // Listed by GET /v1/sessions; entries past the records' time to live go.
            let sessions = self.user_sessions_key(batch.owner);
            pipe.zadd(&sessions, &batch_id, batch.created_at).ignore();
            if self.result_ttl_secs > 0 {
                let gone = batch.created_at.saturating_sub(self.result_ttl_secs * 1_000_000);
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(&sessions)
                    .arg("-inf")
                    .arg(format!("({gone}"))
                    .ignore();
            }
            if batch.events {
                pipe.hset(&batch_key, "ev", 1).ignore();
            }
            if let Some(url) = &batch.callback_url {
                pipe.hset(&batch_key, "cb", url).ignore();
                pipe.hset(
                    &batch_key,
                    "cbs",
                    batch.callback_secret.as_deref().unwrap_or_default(),
                )
                .ignore();
                pipe.zadd(self.hooks_key(), &batch_id, 0).ignore();
            }
            if let Some(deadline) = batch.deadline {
                pipe.hset(&batch_key, "deadline", deadline).ignore();
            }
            if let Some(group) = batch.task_group {
                pipe.hset(&batch_key, "tg", group.to_string()).ignore();
                pipe.hset_nx(self.group_key(group), "owner", &owner).ignore();
            }
        }
        // Until the last part, `open` counts one more task than were written.
        let guard = match part {
            Part::Whole | Part::Middle => 0,
            Part::First => 1,
        };
        pipe.hincr(&batch_key, "n0", n).ignore();
        pipe.hincr(self.states_key(), "n0", n).ignore();
        pipe.hincr(&batch_key, "open", n + guard).ignore();
        pipe.hincr(self.unfinished_key(), format!("u:{owner}"), n)
            .ignore();
        pipe.hincr(self.unfinished_key(), format!("e:{endpoint}"), n)
            .ignore();
        pipe.zadd(self.open_batches_key(), &batch_id, at).ignore();
        if part == Part::First {
            pipe.zadd(self.making_key(), &batch_id, batch.created_at).ignore();
        }
        if part == Part::Whole
            && let Some(deadline) = batch.deadline
        {
            pipe.zadd(self.batch_deadlines_key(), &batch_id, deadline)
                .ignore();
        }
        for chunk in tasks.chunks(4096) {
            let ids: Vec<String> = chunk.iter().map(|t| t.task_id.to_string()).collect();
            pipe.rpush(self.batch_tasks_key(batch.batch_id), ids).ignore();
        }
        if let Some(group) = batch.task_group {
            for chunk in tasks.chunks(4096) {
                let entries: Vec<String> = chunk.iter().map(|t| format!("{},{created}", t.task_id)).collect();
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
                .arg(&created)
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
            if t.priority != 0 {
                cmd.arg("pr").arg(t.priority);
            }
            if let Some(r) = &t.requires {
                cmd.arg("rq").arg(requires_field(r));
            }
            if let Some(r) = &t.retry {
                cmd.arg("rt").arg(serde_json::to_string(r).unwrap_or_default());
            }
            if let Some(e) = &t.environment {
                cmd.arg("en").arg(e);
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

    /// Records that `endpoint` saw these tasks alive at `at` (its own unfinished ones
    /// only: an endpoint cannot keep another's task looking alive).
    pub async fn touch_tasks(&self, endpoint: EndpointId, ids: &[TaskId], at: Micros) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let build = || {
            let mut pipe = redis::pipe();
            for id in ids {
                pipe.invoke_script(
                    self.touch
                        .key(self.task_key(*id))
                        .arg(at)
                        .arg(endpoint.to_string()),
                )
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
        let mut records = self.get_tasks_deferred(ids, true).await?;
        self.fill_results_by_reference(&mut records).await?;
        Ok(records)
    }

    /// Like [`Store::get_tasks`] without the history (empty in the records): the
    /// cheaper read for polling many tasks for their results.
    pub async fn get_task_outcomes(&self, ids: &[TaskId]) -> Result<Vec<Option<TaskRecord>>> {
        let mut records = self.get_tasks_deferred(ids, false).await?;
        self.fill_results_by_reference(&mut records).await?;
        Ok(records)
    }

    /// Task records (with their history or not) whose results kept in the data plane
    /// are left unread (`result` is `None`, `result_ref` says which): for an answer
    /// that reads them in bounded groups as it is written ([`Store::result_groups`],
    /// [`Store::fill_results`]). One round trip.
    pub async fn get_tasks_deferred(&self, ids: &[TaskId], history: bool) -> Result<Vec<Option<TaskRecord>>> {
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
        if history {
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
                .collect()
        } else {
            let rows: Vec<Vec<Option<Vec<u8>>>> = pipe.query_async(&mut conn).await?;
            ids.iter()
                .zip(rows)
                .map(|(id, row)| task_from_outcome_row(*id, row))
                .collect()
        }
    }

    /// The outcomes of tasks, pipelined: the cheapest read for collecting results.
    /// `None` for an unknown or expired task.
    pub async fn get_task_briefs(&self, ids: &[TaskId]) -> Result<Vec<Option<TaskOutcome>>> {
        let mut outcomes = self.get_task_briefs_deferred(ids).await?;
        self.fill_results_by_reference(&mut outcomes).await?;
        Ok(outcomes)
    }

    /// Like [`Store::get_task_briefs`], the results kept in the data plane left unread
    /// (see [`Store::get_tasks_deferred`]).
    pub async fn get_task_briefs_deferred(&self, ids: &[TaskId]) -> Result<Vec<Option<TaskOutcome>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET").arg(self.task_key(*id)).arg(BRIEF_FIELDS);
        }
        let rows: Vec<Vec<Option<Vec<u8>>>> = pipe.query_async(&mut self.conn.clone()).await?;
        ids.iter()
            .zip(rows)
            .map(|(id, row)| outcome_from_row(*id, row))
            .collect()
    }

    /// Fills in the results kept in the data plane (large ones), in one more round
    /// trip (two for several: their sizes first, against the response budget); a
    /// result that has expired is marked so.
    async fn fill_results_by_reference<T: ByReference>(&self, records: &mut [T]) -> Result<()> {
        if self.response_budget > 0 && refs(records).nth(1).is_some() {
            self.result_sizes(records).await?;
        }
        self.fill_results(records).await
    }

    /// How to read the data-plane results of `records` as an answer is written: the
    /// lengths of consecutive runs of records whose results together are at most
    /// [`RESULT_GROUP_BYTES`] (or one record), each filled by one
    /// [`Store::fill_results`]. With more than one such result, their sizes are read
    /// first (one round trip) and a read past the response budget fails
    /// ([`crate::Error::TooLarge`]) before any is fetched; with none, no round trip.
    pub async fn result_groups<T: ByReference>(&self, records: &[T]) -> Result<Vec<usize>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if refs(records).nth(1).is_none() {
            return Ok(vec![records.len()]);
        }
        let mut sizes = self.result_sizes(records).await?.into_iter();
        let mut groups = Vec::new();
        let (mut len, mut bytes) = (0usize, 0u64);
        for record in records {
            let size = if record.result_ref().is_some() {
                sizes.next().unwrap_or(0)
            } else {
                0
            };
            if len > 0 && bytes + size > RESULT_GROUP_BYTES {
                groups.push(len);
                (len, bytes) = (0, 0);
            }
            len += 1;
            bytes += size;
        }
        groups.push(len);
        Ok(groups)
    }

    /// The sizes of the data-plane results of `records`, in their order (one round
    /// trip); past the response budget, [`crate::Error::TooLarge`].
    async fn result_sizes<T: ByReference>(&self, records: &[T]) -> Result<Vec<u64>> {
        let mut pipe = redis::pipe();
        for (task, attempt) in refs(records) {
            pipe.strlen(self.result_key(task, attempt));
        }
        let sizes: Vec<u64> = pipe.query_async(&mut self.conn.clone()).await?;
        let bytes: u64 = sizes.iter().sum();
        if self.response_budget > 0 && sizes.len() > 1 && bytes > self.response_budget {
            return Err(crate::Error::TooLarge {
                bytes,
                limit: self.response_budget,
            });
        }
        Ok(sizes)
    }

    /// Reads the data-plane results of `records` into them (one round trip; none if
    /// they have none), without checking the response budget: see
    /// [`Store::result_groups`]. A result that has expired is marked so.
    pub async fn fill_results<T: ByReference>(&self, records: &mut [T]) -> Result<()> {
        let mut pipe = redis::pipe();
        for (task, attempt) in refs(records) {
            pipe.get(self.result_key(task, attempt));
        }
        if pipe.is_empty() {
            return Ok(());
        }
        let data: Vec<Option<Vec<u8>>> = pipe.query_async(&mut self.conn.clone()).await?;
        let mut data = data.into_iter();
        for record in records.iter_mut().filter(|r| r.result_ref().is_some()) {
            record.set_result(data.next().flatten().map(into_text));
        }
        Ok(())
    }

    /// The data-plane key of one attempt's result.
    fn result_key(&self, task: TaskId, attempt: u32) -> String {
        format!("{}:out:{attempt}", self.task_key(task))
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
        let key = self.result_key(id, attempt);
        if self.result_ttl_secs > 0 {
            conn.set_ex::<_, _, ()>(key, data, self.result_ttl_secs).await?;
        } else {
            conn.set::<_, _, ()>(key, data).await?;
        }
        Ok(())
    }

    /// For each task, its owner and the task group its result goes to, as recorded at
    /// submission (`None` for a task with no group, or none at all): where a result is
    /// sent never depends on what its endpoint says.
    pub async fn result_routes(
        &self,
        ids: &[TaskId],
    ) -> Result<Vec<Option<(UserId, ferry_proto::TaskGroupId)>>> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET").arg(self.task_key(*id)).arg("o").arg("g");
        }
        let mut conn = self.conn.clone();
        let rows: Vec<(Option<String>, Option<String>)> = pipe.query_async(&mut conn).await?;
        ids.iter()
            .zip(rows)
            .map(|(id, row)| match row {
                (Some(owner), Some(group)) => {
                    let task = id.to_string();
                    Ok(Some((
                        parse_id(&owner, "task", &task)?,
                        parse_id(&group, "task", &task)?,
                    )))
                }
                _ => Ok(None),
            })
            .collect()
    }

    /// One attempt's result from the data plane.
    pub async fn get_result_data(&self, id: TaskId, attempt: u32) -> Result<Option<Bytes>> {
        let mut conn = self.conn.clone();
        let data: Option<Vec<u8>> = conn.get(self.result_key(id, attempt)).await?;
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
    /// Up to `most` of the endpoint's tasks `waiting-for-ep`, with their attempts: read
    /// from its batches that have some (the transition script keeps their set).
    pub async fn waiting_for_endpoint(
        &self,
        endpoint: EndpointId,
        most: usize,
    ) -> Result<Vec<(TaskId, u32)>> {
        let mut conn = self.conn.clone();
        let batches: Vec<String> = conn.smembers(self.endpoint_waiting_key(endpoint)).await?;
        let mut out = Vec::new();
        for batch in batches {
            let batch: BatchId = parse_id(&batch, "batch", &batch)?;
            let ids: Vec<String> = conn.lrange(self.batch_tasks_key(batch), 0, -1).await?;
            for chunk in ids.chunks(1000) {
                let mut pipe = redis::pipe();
                for id in chunk {
                    let id: TaskId = parse_id(id, "task", id)?;
                    pipe.cmd("HMGET").arg(self.task_key(id)).arg("s").arg("a");
                }
                let rows: Vec<(Option<u8>, Option<u32>)> = pipe.query_async(&mut conn).await?;
                for (id, row) in chunk.iter().zip(rows) {
                    if let (Some(s), Some(a)) = row
                        && s == TaskState::WaitingForEp.code()
                    {
                        out.push((parse_id(id, "task", id)?, a));
                        if out.len() >= most {
                            return Ok(out);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    pub async fn in_flight(&self, endpoint: EndpointId) -> Result<Vec<TaskId>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.smembers(self.endpoint_running_key(endpoint)).await?;
        ids.iter()
            .map(|s| parse_id(s, "endpoint", &endpoint.to_string()))
            .collect()
    }

    /// Of these (task, attempt) copies an endpoint holds, the ones still to run: the
    /// task is dispatched to `endpoint`, unfinished, and its record is not past that
    /// attempt. A finished task's copy is not, whatever its attempt; nor is one older
    /// than the record (the task was dispatched again since as a newer attempt). A copy
    /// of the record's attempt is, and so is a newer one: its publisher (the endpoint's
    /// retry, a sweep) publishes it before recording the move. One pipelined read.
    pub async fn still_to_run(&self, endpoint: EndpointId, copies: &[(TaskId, u32)]) -> Result<Vec<TaskId>> {
        if copies.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in copies {
            pipe.cmd("HMGET").arg(self.task_key(*id)).arg(&["s", "a", "e"]);
        }
        let rows: Vec<(Option<u8>, Option<u32>, Option<String>)> =
            pipe.query_async(&mut self.conn.clone()).await?;
        let endpoint = endpoint.to_string();
        Ok(copies
            .iter()
            .zip(rows)
            .filter(|((_, attempt), (s, a, e))| {
                s.and_then(TaskState::from_code).is_some_and(|s| !s.is_terminal())
                    && a.is_some_and(|a| a <= *attempt)
                    && e.as_deref() == Some(endpoint.as_str())
            })
            .map(|((id, _), _)| *id)
            .collect())
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
            pipe.cmd("HMGET").arg(self.task_key(*id)).arg(&[
                "s", "a", "r", "f", "e", "p", "w", "g", "pi", "pr", "rq", "rt", "en", "b",
            ]);
        }
        // More fields than redis-rs reads into a tuple: each is read from the row.
        let rows: Vec<Vec<redis::Value>> = pipe.query_async(&mut conn).await?;
        fn field<T: redis::FromRedisValue>(row: &[redis::Value], i: usize) -> Option<T> {
            redis::from_redis_value_ref::<Option<T>>(row.get(i)?)
                .ok()
                .flatten()
        }
        Ok(ids
            .iter()
            .zip(rows)
            .map(|(id, row)| {
                let (s, a, r) = (field::<u8>(&row, 0), field::<u32>(&row, 1), field::<u32>(&row, 2));
                let (f, e) = (field::<String>(&row, 3), field::<String>(&row, 4));
                let (p, w, g) = (
                    field::<Vec<u8>>(&row, 5),
                    field::<u64>(&row, 6),
                    field::<String>(&row, 7),
                );
                let (pi, pr) = (field::<u64>(&row, 8), field::<i32>(&row, 9));
                let (rq, rt, en) = (
                    field::<String>(&row, 10),
                    field::<String>(&row, 11),
                    field::<String>(&row, 12),
                );
                let batch = field::<String>(&row, 13);
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
                    priority: pr.unwrap_or(0),
                    requires: rq.as_deref().and_then(parse_requires),
                    retry: rt.as_deref().and_then(|r| serde_json::from_str(r).ok()),
                    environment: en,
                    batch_id: batch.and_then(|b| b.parse().ok()),
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

/// At most this many bytes of data-plane results are read in one round trip by an
/// answer written as it goes (unless one result alone is larger).
pub const RESULT_GROUP_BYTES: u64 = 8 * 1024 * 1024;

/// The data-plane results `records` refer to, in their order.
fn refs<T: ByReference>(records: &[T]) -> impl Iterator<Item = (TaskId, u32)> + '_ {
    records.iter().filter_map(ByReference::result_ref)
}

/// A result's bytes as text, without a copy when they are UTF-8 (they are: results are
/// serialized as text).
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A record read back whose result may be kept in the data plane.
pub trait ByReference {
    /// The task and the attempt whose result is kept apart, if it is.
    fn result_ref(&self) -> Option<(TaskId, u32)>;
    /// The result read from the data plane; `None` once it has expired.
    fn set_result(&mut self, result: Option<String>);
}

impl<T: ByReference> ByReference for Option<T> {
    fn result_ref(&self) -> Option<(TaskId, u32)> {
        self.as_ref()?.result_ref()
    }
    fn set_result(&mut self, result: Option<String>) {
        if let Some(r) = self.as_mut() {
            r.set_result(result);
        }
    }
}

impl ByReference for TaskRecord {
    fn result_ref(&self) -> Option<(TaskId, u32)> {
        Some((self.task_id, self.result_ref?))
    }
    fn set_result(&mut self, result: Option<String>) {
        self.result_expired = result.is_none();
        self.result = result;
    }
}

impl ByReference for TaskOutcome {
    fn result_ref(&self) -> Option<(TaskId, u32)> {
        Some((self.task_id, self.result_ref?))
    }
    fn set_result(&mut self, result: Option<String>) {
        self.result_expired = result.is_none();
        self.result = result;
    }
}

/// A task's requirements in its record: `cores:memory_mb:gpus:tag,tag` (tags hold no
/// `:` or `,`).
fn requires_field(r: &ferry_proto::messages::Requires) -> String {
    format!("{}:{}:{}:{}", r.cores, r.memory_mb, r.gpus, r.tags.join(","))
}

fn parse_requires(field: &str) -> Option<ferry_proto::messages::Requires> {
    let mut parts = field.splitn(4, ':');
    Some(ferry_proto::messages::Requires {
        cores: parts.next()?.parse().ok()?,
        memory_mb: parts.next()?.parse().ok()?,
        gpus: parts.next()?.parse().ok()?,
        tags: parts
            .next()?
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}
