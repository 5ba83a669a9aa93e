//! Task records read back from Redis: an `HMGET` row read by position, or a hash
//! (`HGETALL`) by name, and the history steps inside them.

use ferry_proto::state::FailureCause;
use ferry_proto::{Actor, TaskId, TaskState};

use super::Fields;
use crate::records::*;
use crate::{Error, Result};

/// A task record's fields but its history (`hn`, `h0`..) and its input (`p`, `pi`).
pub(super) const OUTCOME_FIELDS: &[&str] = &[
    "s", "a", "r", "o", "f", "e", "b", "c", "t", "seen", "why", "res", "rr", "exc", "exd", "out", "err",
];
/// What [`TaskOutcome`] holds: Redis looks each field up in turn, so fewer is cheaper.
pub(super) const BRIEF_FIELDS: &[&str] = &["s", "a", "o", "t", "why", "res", "rr", "exc", "exd"];

/// A [`TaskOutcome`] from an `HMGET` of [`BRIEF_FIELDS`], read by position. `None`
/// when the task does not exist (every field nil).
pub(super) fn outcome_from_row(id: TaskId, mut row: Vec<Option<Vec<u8>>>) -> Result<Option<TaskOutcome>> {
    let Some(fields) = Row::open(id, &row, BRIEF_FIELDS)? else {
        return Ok(None);
    };
    let cause: Option<u8> = fields.optional(&row, 4)?;
    Ok(Some(TaskOutcome {
        task_id: id,
        owner: fields.required(&row, 2)?,
        state: TaskState::from_code(fields.required(&row, 0)?).ok_or_else(|| fields.corrupt(0))?,
        attempt: fields.required(&row, 1)?,
        completed_at: fields.optional(&row, 3)?,
        cause: cause.and_then(FailureCause::from_code),
        result_ref: fields.optional(&row, 6)?,
        result: text(row[5].take()),
        result_expired: false,
        traceback: text(row[7].take()),
        exception: text(row[8].take()),
    }))
}

/// Reads the values of an `HMGET` by position; errors name the task and the field.
struct Row {
    id: TaskId,
    names: &'static [&'static str],
}

impl Row {
    /// A reader for `row`, or `None` when the task does not exist (every field nil).
    fn open(id: TaskId, row: &[Option<Vec<u8>>], names: &'static [&'static str]) -> Result<Option<Self>> {
        if row.len() != names.len() {
            return Err(Error::Corrupt {
                what: "task",
                id: id.to_string(),
                detail: format!("{} fields read back, {} asked for", row.len(), names.len()),
            });
        }
        Ok((!row.iter().all(Option::is_none)).then_some(Self { id, names }))
    }

    fn corrupt(&self, i: usize) -> Error {
        Error::Corrupt {
            what: "task",
            id: self.id.to_string(),
            detail: format!("field {:?} is missing or malformed", self.names[i]),
        }
    }

    fn parse<T: std::str::FromStr>(raw: &[u8]) -> Option<T> {
        std::str::from_utf8(raw).ok()?.parse().ok()
    }

    fn required<T: std::str::FromStr>(&self, row: &[Option<Vec<u8>>], i: usize) -> Result<T> {
        row[i]
            .as_deref()
            .and_then(Self::parse)
            .ok_or_else(|| self.corrupt(i))
    }

    /// A present field that does not parse is corrupt; an absent one is `None`.
    fn optional<T: std::str::FromStr>(&self, row: &[Option<Vec<u8>>], i: usize) -> Result<Option<T>> {
        row[i]
            .as_deref()
            .map(|raw| Self::parse(raw).ok_or_else(|| self.corrupt(i)))
            .transpose()
    }
}

/// A text field, taken rather than copied.
fn text(v: Option<Vec<u8>>) -> Option<String> {
    v.map(|b| String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// A task record (no history) from an `HMGET` of [`OUTCOME_FIELDS`], read by position:
/// a poller reads thousands per request, and a map per record cost a tenth of the
/// web-service's time. `None` when the task does not exist (every field nil).
pub(super) fn task_from_outcome_row(id: TaskId, mut row: Vec<Option<Vec<u8>>>) -> Result<Option<TaskRecord>> {
    let Some(fields) = Row::open(id, &row, OUTCOME_FIELDS)? else {
        return Ok(None);
    };
    let cause: Option<u8> = fields.optional(&row, 10)?;
    Ok(Some(TaskRecord {
        task_id: id,
        owner: fields.required(&row, 3)?,
        function_id: fields.required(&row, 4)?,
        endpoint_id: fields.required(&row, 5)?,
        batch_id: fields.required(&row, 6)?,
        state: TaskState::from_code(fields.required(&row, 0)?).ok_or_else(|| fields.corrupt(0))?,
        attempt: fields.required(&row, 1)?,
        max_retries: fields.required(&row, 2)?,
        created_at: fields.required(&row, 7)?,
        completed_at: fields.optional(&row, 8)?,
        last_seen: fields.optional(&row, 9)?,
        cause: cause.and_then(FailureCause::from_code),
        result_ref: fields.optional(&row, 12)?,
        result: text(row[11].take()),
        result_expired: false,
        traceback: text(row[13].take()),
        exception: text(row[14].take()),
        stdout: text(row[15].take()),
        stderr: text(row[16].take()),
        history: Vec::new(),
    }))
}

pub(super) fn task_from_fields(id: TaskId, f: Fields) -> Result<TaskRecord> {
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
