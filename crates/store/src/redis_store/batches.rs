//! Batches (sessions): their records, per-state counts, deadlines, and the watch list
//! of batches whose tasks may still be `received`; and task groups (Globus Compute's
//! grouping of tasks across submissions).

use std::collections::HashMap;

use ferry_proto::time::Micros;
use ferry_proto::{BatchId, TaskGroupId, TaskId, UserId};
use redis::AsyncCommands;

use super::{Fields, Store, parse_id};
use crate::Result;
use crate::records::*;

impl Store {
    /// A batch and the ids of its tasks, in submission order.
    /// A user's sessions, newest first: up to `limit` created before `before` (all when
    /// `None`), with their status; ones whose records expired are dropped from the list.
    pub async fn user_sessions(
        &self,
        owner: UserId,
        before: Option<Micros>,
        limit: usize,
    ) -> Result<Vec<BatchStatus>> {
        let mut conn = self.conn.clone();
        let key = self.user_sessions_key(owner);
        let max = before.map_or_else(|| "+inf".to_owned(), |b| format!("({b}"));
        let ids: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(&key)
            .arg(max)
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Ok(batch) = id.parse::<BatchId>() else {
                let _: () = conn.zrem(&key, &id).await?;
                continue;
            };
            match self.batch_status(batch).await? {
                Some(status) => out.push(status),
                None => {
                    let _: () = conn.zrem(&key, &id).await?;
                }
            }
        }
        Ok(out)
    }

    pub async fn get_batch(&self, id: BatchId) -> Result<Option<(BatchRecord, Vec<TaskId>)>> {
        let Some(status) = self.batch_status(id).await? else {
            return Ok(None);
        };
        let ids = self.batch_task_ids(id, 0, -1).await?;
        Ok(Some((status.record, ids)))
    }

    /// The ids of a batch's tasks from index `start` to `stop` (inclusive; negative
    /// counts from the end), in submission order.
    pub async fn batch_task_ids(&self, id: BatchId, start: isize, stop: isize) -> Result<Vec<TaskId>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn.lrange(self.batch_tasks_key(id), start, stop).await?;
        ids.iter()
            .map(|s| parse_id(s, "batch", &id.to_string()))
            .collect()
    }

    /// A batch's record and its per-state counts: one read of one hash, whatever the
    /// batch's size.
    pub async fn batch_status(&self, id: BatchId) -> Result<Option<BatchStatus>> {
        let mut conn = self.conn.clone();
        let map: HashMap<String, Vec<u8>> = conn.hgetall(self.batch_key(id)).await?;
        if !map.contains_key("owner") {
            return Ok(None);
        }
        let f = Fields::new(map, "batch", id.to_string());
        let record = BatchRecord {
            batch_id: id,
            owner: f.id("owner")?,
            endpoint_id: f.id("ep")?,
            size: f.num("size")?,
            created_at: f.num("created")?,
            task_group: f.opt_string("tg").and_then(|s| s.parse().ok()),
            deadline: f.opt_num("deadline")?,
            events: f.opt_string("ev").is_some(),
            callback_url: f.opt_string("cb"),
            callback_secret: f.opt_string("cbs"),
        };
        let mut counts = [0u64; 7];
        for (code, count) in counts.iter_mut().enumerate() {
            // Counts can dip below zero for a moment only if a record was forced; clamp.
            *count = f.opt_num::<i64>(&format!("n{code}"))?.unwrap_or(0).max(0) as u64;
        }
        let callback_url = record.callback_url.clone();
        Ok(Some(BatchStatus {
            record,
            counts,
            done_at: f.opt_num("done")?,
            timed_out_at: f.opt_num("timedout")?,
            cancelled_at: f.opt_num("cancelled")?,
            callback: callback_url.map(|url| ferry_proto::api::CallbackStatus {
                url,
                delivered: f.opt_num("cbd").ok().flatten().unwrap_or(0),
                failures: f.opt_num("cbf").ok().flatten().unwrap_or(0),
                last_error: f.opt_string("cbe").filter(|e| !e.is_empty()),
                done: f.opt_string("cbdone").is_some(),
            }),
        }))
    }

    /// Batches whose deadline has passed, at most `limit` of them.
    pub async fn expired_batches(&self, now: Micros, limit: isize) -> Result<Vec<BatchId>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrangebyscore_limit(self.batch_deadlines_key(), "-inf", now, 0, limit)
            .await?;
        ids.iter().map(|s| parse_id(s, "batch", s)).collect()
    }

    /// Claims an expired batch for this caller (several forwarders may race; one
    /// wins) and marks it timed out. False when another caller claimed it first.
    pub async fn claim_timed_out_batch(&self, id: BatchId, at: Micros) -> Result<bool> {
        let mut conn = self.conn.clone();
        let removed: u64 = conn.zrem(self.batch_deadlines_key(), id.to_string()).await?;
        if removed == 0 {
            return Ok(false);
        }
        let key = self.batch_key(id);
        let (exists, done): (bool, Option<String>) = redis::pipe()
            .exists(&key)
            .hget(&key, "done")
            .query_async(&mut conn)
            .await?;
        if !exists || done.is_some() {
            return Ok(false);
        }
        conn.hset::<_, _, _, ()>(&key, "timedout", at).await?;
        Ok(true)
    }

    /// Takes back a batch's timeout mark ([`Self::claim_timed_out_batch`]): its deadline
    /// failed none of its tasks (they had all finished when the sweep came).
    pub async fn unmark_timed_out(&self, id: BatchId) -> Result<()> {
        let mut conn = self.conn.clone();
        conn.hdel::<_, _, ()>(self.batch_key(id), "timedout").await?;
        Ok(())
    }

    /// Records that the batch's owner cancelled it (unless it had completed).
    pub async fn mark_batch_cancelled(&self, id: BatchId, at: Micros) -> Result<()> {
        const MARK: &str = "if redis.call('EXISTS', KEYS[1]) == 1 and not redis.call('HGET', KEYS[1], 'done') \
            then redis.call('HSETNX', KEYS[1], 'cancelled', ARGV[1]) end return 0";
        let mut conn = self.conn.clone();
        redis::Script::new(MARK)
            .key(self.batch_key(id))
            .arg(at)
            .invoke_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    // ---- batches whose tasks may still be `received` ----------------------------------

    /// Batches accepted before `before` that the sweeper has not seen leave `received`.
    pub async fn open_batches_before(&self, before: Micros, limit: isize) -> Result<Vec<BatchId>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrangebyscore_limit(self.open_batches_key(), "-inf", before, 0, limit)
            .await?;
        ids.iter().map(|s| parse_id(s, "batch", s)).collect()
    }

    /// The batch has no task left in `received`: stop watching it, unless it is still
    /// being written (its next part would bring `received` tasks).
    pub async fn close_open_batch(&self, id: BatchId) -> Result<()> {
        const CLOSE: &str = "if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end \
            return redis.call('ZREM', KEYS[1], ARGV[1])";
        let mut conn = self.conn.clone();
        redis::Script::new(CLOSE)
            .key(self.open_batches_key())
            .key(self.making_key())
            .arg(id.to_string())
            .invoke_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Look at the batch again later (its tasks were just submitted again).
    pub async fn reopen_batch(&self, id: BatchId, at: Micros) -> Result<()> {
        let mut conn = self.conn.clone();
        conn.zadd::<_, _, _, ()>(self.open_batches_key(), id.to_string(), at)
            .await?;
        Ok(())
    }

    // ---- batches written in parts -------------------------------------------------

    /// Batches whose writing began before `before` and never ended (the web-service
    /// writing them died or gave up), at most `limit`.
    pub async fn unfinished_batches_before(&self, before: Micros, limit: isize) -> Result<Vec<BatchId>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrangebyscore_limit(self.making_key(), "-inf", before, 0, limit)
            .await?;
        ids.iter().map(|s| parse_id(s, "batch", s)).collect()
    }

    /// Commits batches written in parts ([`Part::First`] and [`Part::Middle`]), all or
    /// none: each leaves the `making` list, `open` loses the writer's extra count, the
    /// sweeper watches it from `at`, and its deadline starts to count. Its tasks may be
    /// dispatched from now on. False, with nothing changed, when one of them is no
    /// longer being written (the sweeper took it for abandoned and failed its tasks).
    /// One script run that Redis refuses whole when it is out of memory, so a commit
    /// never stops half-way.
    pub async fn commit_batches(&self, batches: &[&BatchRecord], at: Micros) -> Result<bool> {
        const COMMIT: &str = concat!(
            "#!lua\n",
            super::batch_done_lua!(),
            "local n = #KEYS - 3 \
            for i = 1, n do \
              if not redis.call('ZSCORE', KEYS[1], ARGV[2 * i + 1]) then return 0 end \
            end \
            for i = 1, n do \
              local id, deadline = ARGV[2 * i + 1], ARGV[2 * i + 2] \
              redis.call('ZREM', KEYS[1], id) \
              redis.call('ZADD', KEYS[2], ARGV[1], id) \
              if deadline ~= '' then redis.call('ZADD', KEYS[3], deadline, id) end \
              if redis.call('HINCRBY', KEYS[3 + i], 'open', -1) == 0 then \
                batch_done(KEYS[3 + i], ARGV[1], tonumber(ARGV[2])) \
              end \
            end return 1"
        );
        if batches.is_empty() {
            return Ok(true);
        }
        let script = redis::Script::new(COMMIT);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.making_key())
            .key(self.open_batches_key())
            .key(self.batch_deadlines_key())
            .arg(at)
            .arg(self.result_ttl_secs);
        for b in batches {
            invocation.key(self.batch_key(b.batch_id));
            invocation.arg(b.batch_id.to_string());
            invocation.arg(b.deadline.map(|d| d.to_string()).unwrap_or_default());
        }
        let mut conn = self.conn.clone();
        let committed: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(committed == 1)
    }

    /// Whether a batch is still being written (its commit has not come).
    pub async fn being_written(&self, id: BatchId) -> Result<bool> {
        let mut conn = self.conn.clone();
        let score: Option<f64> = conn.zscore(self.making_key(), id.to_string()).await?;
        Ok(score.is_some())
    }

    /// Ends the writing of a batch whose commit will never come: its size becomes
    /// the tasks written, `open` loses the part writer's extra count (the batch is done
    /// now if they all ended, expiring like any finished batch), and its deadline, if
    /// any, starts to count. False when the batch was not being written (another
    /// caller closed it, or it was committed). Its tasks must have been failed first
    /// (nothing of an uncommitted batch may run).
    pub async fn close_unfinished_batch(&self, id: BatchId, at: Micros) -> Result<bool> {
        const CLOSE: &str = concat!(
            super::batch_done_lua!(),
            "if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then return 0 end \
            redis.call('HSET', KEYS[1], 'size', redis.call('LLEN', KEYS[2])) \
            local deadline = redis.call('HGET', KEYS[1], 'deadline') \
            if deadline then redis.call('ZADD', KEYS[4], deadline, ARGV[1]) end \
            if redis.call('HINCRBY', KEYS[1], 'open', -1) == 0 then \
              batch_done(KEYS[1], ARGV[2], tonumber(ARGV[3])) \
            end return 1"
        );
        let mut conn = self.conn.clone();
        let closed: i64 = redis::Script::new(CLOSE)
            .key(self.batch_key(id))
            .key(self.batch_tasks_key(id))
            .key(self.making_key())
            .key(self.batch_deadlines_key())
            .arg(id.to_string())
            .arg(at)
            .arg(self.result_ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        Ok(closed == 1)
    }

    // ---- Globus Compute task groups ----------------------------------------------

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
}
