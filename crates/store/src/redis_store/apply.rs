//! The transition script (`scripts/apply.lua`) from Rust: reports grouped per task,
//! many tasks per call, one round trip per slice.

use std::collections::HashMap;

use ferry_proto::state::FailureCause;
use ferry_proto::{EndpointId, Ignored, TaskId, TaskState};

use super::Store;
use crate::Result;
use crate::records::{Applied, Report};

/// Most tasks one call of the transition script applies.
const APPLY_TASKS_PER_CALL: usize = 256;
/// Roughly most result bytes one call carries.
const APPLY_BYTES_PER_CALL: usize = 1 << 20;

impl Store {
    /// Applies reports through the transition script: one round trip for the whole
    /// slice, and one script call per chunk of tasks (each task's reports in slice
    /// order), so a call's fixed cost is shared by many tasks.
    pub async fn apply(&self, reports: &[Report]) -> Result<Vec<Applied>> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        // Group each task's reports, in order. A group carries at most one result, and
        // Ferry's own reports then one endpoint's: a second result for the same task, a
        // report from another endpoint, or one of Ferry's after an endpoint's, starts a
        // group of its own (run after).
        let mut groups: Vec<Group> = Vec::new();
        let mut open: HashMap<TaskId, usize> = HashMap::new();
        for (i, r) in reports.iter().enumerate() {
            let reuse = open.get(&r.task_id).copied().filter(|&g| {
                let g = &groups[g];
                !(r.finish.is_some() && g.finish.is_some()) && (g.from.is_none() || g.from == r.from)
            });
            let g = match reuse {
                Some(g) => g,
                None => {
                    groups.push(Group {
                        task_id: r.task_id,
                        members: Vec::new(),
                        finish: None,
                        from: None,
                        own: 0,
                    });
                    open.insert(r.task_id, groups.len() - 1);
                    groups.len() - 1
                }
            };
            let group = &mut groups[g];
            group.members.push(i);
            match r.from {
                None => group.own += 1,
                Some(_) => group.from = r.from,
            }
            if r.finish.is_some() {
                group.finish = Some(i);
            }
        }
        // Calls of at most APPLY_TASKS_PER_CALL groups or about APPLY_BYTES_PER_CALL of
        // results: one call holds Redis for its whole run.
        let mut calls: Vec<std::ops::Range<usize>> = Vec::new();
        let (mut from, mut bytes) = (0, 0);
        for (g, group) in groups.iter().enumerate() {
            if let Some(f) = group.finish.and_then(|i| reports[i].finish.as_ref()) {
                bytes += f.data.len() + f.exception.len() + f.stdout.len() + f.stderr.len();
            }
            if g + 1 - from >= APPLY_TASKS_PER_CALL || bytes >= APPLY_BYTES_PER_CALL {
                calls.push(from..g + 1);
                (from, bytes) = (g + 1, 0);
            }
        }
        if from < groups.len() {
            calls.push(from..groups.len());
        }
        let mut conn = self.conn.clone();
        let ttl = self.result_ttl_secs.to_string();
        let build = || {
            let mut pipe = redis::pipe();
            for range in &calls {
                let mut inv = self.apply.prepare_invoke();
                inv.arg(&ttl).arg(&self.ns);
                for Group {
                    task_id,
                    members,
                    finish,
                    from,
                    own,
                } in &groups[range.clone()]
                {
                    inv.key(self.task_key(*task_id));
                    let carrier = finish.and_then(|i| members.iter().position(|&m| m == i));
                    let finish = finish.and_then(|i| reports[i].finish.as_ref());
                    inv.arg(members.len())
                        .arg(match finish {
                            None => "-",
                            Some(f) if f.success && f.by_reference => "2",
                            Some(f) if f.success => "1",
                            Some(_) => "0",
                        })
                        .arg(carrier.unwrap_or(0));
                    match from {
                        Some(endpoint) => inv.arg(endpoint.to_string()),
                        None => inv.arg("-"),
                    };
                    inv.arg(*own);
                    for &i in members {
                        let r = &reports[i];
                        inv.arg(r.event.kind.code())
                            .arg(r.event.attempt)
                            .arg(r.at)
                            .arg(r.by.code());
                    }
                    if let Some(f) = finish {
                        inv.arg(f.data.as_ref())
                            .arg(f.exception.as_ref())
                            .arg(f.stdout.as_str())
                            .arg(f.stderr.as_str());
                    }
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
        for (range, reply) in calls.iter().zip(replies) {
            let mut codes = reply.into_iter();
            for Group { members, .. } in &groups[range.clone()] {
                for (&i, code) in members.iter().zip(codes.by_ref()) {
                    out[i] = decode_applied(code);
                }
            }
        }
        self.announce_here(|| {
            reports
                .iter()
                .zip(&out)
                .filter(|(_, applied)| matches!(applied, Applied::Moved { to, .. } if to.is_terminal()))
                .map(|(r, _)| r.task_id)
                .collect()
        });
        Ok(out)
    }
}

/// One task's reports in one script call: Ferry's own (`own` of them) first, then those
/// of endpoint `from`, with at most one result among them.
struct Group {
    task_id: TaskId,
    /// Indexes into the reports, in order.
    members: Vec<usize>,
    /// The report carrying the result.
    finish: Option<usize>,
    from: Option<EndpointId>,
    own: usize,
}

/// One event's outcome as the script encodes it (see scripts/apply.lua, "Returns").
fn decode_applied(code: i64) -> Applied {
    match code & 3 {
        1 => {
            let rest = code >> 2;
            Applied::Moved {
                to: TaskState::from_code((rest & 7) as u8).unwrap_or(TaskState::Failed),
                attempt: (rest >> 6) as u32,
                cause: u8::try_from(((rest >> 3) & 7) - 1)
                    .ok()
                    .and_then(FailureCause::from_code),
            }
        }
        2 => Applied::Ignored(Ignored::from_code((code >> 2) as u8).unwrap_or(Ignored::NotForward)),
        3 => Applied::Foreign,
        _ => Applied::Unknown,
    }
}
