//! Stream commands: XADD, XRANGE, XREVRANGE, XLEN, XTRIM, and XREAD (here without
//! waiting; a blocking XREAD waits in the client's session and reads with
//! [`XRead::read`] each time a stream grows).

use std::ops::Bound;

use bytes::Bytes;

use super::{Ctx, Reply, count, int, keyword, syntax_error, wrong_arity};
use crate::embedded::db::{Db, now_ms};
use crate::embedded::frame::Frame;
use crate::embedded::stream::{Stream, StreamId};

fn invalid_id() -> Frame {
    Frame::error("ERR Invalid stream ID specified as stream command argument")
}

/// How XADD or XTRIM trims: keep at most `MAXLEN` entries, or none below `MINID`.
enum Trim {
    MaxLen(usize),
    MinId(StreamId),
}

/// Reads `MAXLEN|MINID [=|~] threshold [LIMIT n]` from `args[at..]`; where it ended.
fn parse_trim(args: &[Bytes], mut at: usize) -> Result<(Trim, usize), Frame> {
    let kind = keyword(&args[at]);
    at += 1;
    let mut approximate = false;
    if let Some(mark) = args.get(at).filter(|a| a.as_ref() == b"=" || a.as_ref() == b"~") {
        approximate = mark.as_ref() == b"~";
        at += 1;
    }
    let threshold = args.get(at).ok_or_else(syntax_error)?;
    at += 1;
    let trim = if kind == "MAXLEN" {
        Trim::MaxLen(count(threshold).map_err(|_| Frame::error("ERR The MAXLEN argument must be >= 0."))?)
    } else {
        Trim::MinId(StreamId::parse(threshold, 0).ok_or_else(invalid_id)?)
    };
    if args.get(at).is_some_and(|a| keyword(a) == "LIMIT") {
        if !approximate {
            return Err(Frame::error(
                "ERR syntax error, LIMIT cannot be used without the special ~ option",
            ));
        }
        int(args.get(at + 1).ok_or_else(syntax_error)?)?;
        at += 2;
    }
    // `~` lets Redis keep a few more; trimming exactly is within its contract.
    Ok((trim, at))
}

fn apply_trim(stream: &mut Stream, trim: &Trim) -> usize {
    match trim {
        Trim::MaxLen(n) => stream.trim_to(*n),
        Trim::MinId(min) => {
            let below = stream
                .range(Bound::Unbounded, Bound::Excluded(*min), false, usize::MAX)
                .len();
            stream.trim_to(stream.len() - below)
        }
    }
}

/// `XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT n]] *|id field value ...`.
pub(super) fn xadd(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let mut at = 2;
    let (mut no_make, mut trim) = (false, None);
    loop {
        match args.get(at).map(|a| keyword(a)).as_deref() {
            Some("NOMKSTREAM") => {
                no_make = true;
                at += 1;
            }
            Some("MAXLEN") | Some("MINID") => {
                let (t, next) = parse_trim(args, at)?;
                trim = Some(t);
                at = next;
            }
            _ => break,
        }
    }
    let id_arg = args.get(at).ok_or_else(syntax_error)?;
    let fields = &args[at + 1..];
    if fields.is_empty() || !fields.len().is_multiple_of(2) {
        return Err(wrong_arity("xadd"));
    }
    if no_make && ctx.db.stream(&args[1])?.is_none() {
        return Ok(Frame::Null);
    }
    let stream = ctx.db.stream_mut(&args[1])?;
    let last = stream.last_id();
    let id = match id_arg.as_ref() {
        b"*" => next_id(last, now_ms())?,
        explicit => {
            let id = match explicit.strip_suffix(b"-*") {
                Some(ms) => match StreamId::parse(ms, 0).ok_or_else(invalid_id)?.ms {
                    // Below the last entry's millisecond: refused just below.
                    ms if ms < last.ms => StreamId { ms, seq: 0 },
                    ms => next_id(last, ms)?,
                },
                None => StreamId::parse(explicit, 0).ok_or_else(invalid_id)?,
            };
            if id == StreamId::default() {
                return Err(Frame::error(
                    "ERR The ID specified in XADD must be greater than 0-0",
                ));
            }
            if id <= last {
                return Err(Frame::error(
                    "ERR The ID specified in XADD is equal or smaller than the target stream top item",
                ));
            }
            id
        }
    };
    stream.push(id, fields.to_vec());
    if let Some(trim) = &trim {
        apply_trim(stream, trim);
    }
    ctx.db.note_stream_added();
    Ok(Frame::bulk(id.to_string()))
}

/// The ID XADD gives an entry in millisecond `ms` (`*`, `ms-*`): the first of `ms`,
/// or the one after the last when the stream is there already (or the clock went back).
fn next_id(last: StreamId, ms: u64) -> Result<StreamId, Frame> {
    if ms > last.ms {
        return Ok(StreamId { ms, seq: 0 });
    }
    last.next().ok_or_else(|| {
        Frame::error("ERR The stream has exhausted the last possible ID, unable to add more items")
    })
}

/// One end of an XRANGE: `-`, `+`, `id`, `(id` (exclusive), or `ms` alone (the first
/// or last sequence number of that millisecond, by `end`).
fn range_bound(arg: &[u8], end: bool) -> Result<Bound<StreamId>, Frame> {
    match arg {
        b"-" | b"+" => Ok(Bound::Unbounded),
        [b'(', id @ ..] => {
            let id = StreamId::parse(id, if end { u64::MAX } else { 0 }).ok_or_else(invalid_id)?;
            Ok(Bound::Excluded(id))
        }
        id => {
            let id = StreamId::parse(id, if end { u64::MAX } else { 0 }).ok_or_else(invalid_id)?;
            Ok(Bound::Included(id))
        }
    }
}

fn entry_frames(entries: Vec<(StreamId, &[Bytes])>) -> Frame {
    Frame::Array(
        entries
            .into_iter()
            .map(|(id, fields)| {
                Frame::Array(vec![
                    Frame::bulk(id.to_string()),
                    Frame::Array(fields.iter().cloned().map(Frame::Bulk).collect()),
                ])
            })
            .collect(),
    )
}

fn range_generic(ctx: &mut Ctx<'_>, args: &[Bytes], reverse: bool) -> Reply {
    let (first, second) = (&args[2], &args[3]);
    let (start, end) = if reverse {
        (range_bound(second, false)?, range_bound(first, true)?)
    } else {
        (range_bound(first, false)?, range_bound(second, true)?)
    };
    let limit = match args.get(4) {
        None => usize::MAX,
        Some(option) if keyword(option) == "COUNT" && args.len() == 6 => {
            usize::try_from(int(&args[5])?).unwrap_or(0)
        }
        Some(_) => return Err(syntax_error()),
    };
    let Some(stream) = ctx.db.stream(&args[1])? else {
        return Ok(Frame::Array(Vec::new()));
    };
    Ok(entry_frames(stream.range(start, end, reverse, limit)))
}

pub(super) fn xrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    range_generic(ctx, args, false)
}

pub(super) fn xrevrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    range_generic(ctx, args, true)
}

pub(super) fn xlen(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    Ok(Frame::Integer(
        ctx.db.stream(&args[1])?.map_or(0, Stream::len) as i64
    ))
}

/// `XTRIM key MAXLEN|MINID [=|~] threshold [LIMIT n]`.
pub(super) fn xtrim(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    if !matches!(keyword(&args[2]).as_str(), "MAXLEN" | "MINID") {
        return Err(syntax_error());
    }
    let (trim, end) = parse_trim(args, 2)?;
    if end != args.len() {
        return Err(syntax_error());
    }
    if ctx.db.stream(&args[1])?.is_none() {
        return Ok(Frame::Integer(0));
    }
    let stream = ctx.db.stream_mut(&args[1])?;
    Ok(Frame::Integer(apply_trim(stream, &trim) as i64))
}

/// Where an XREAD starts in one stream.
#[derive(Debug, Clone, Copy)]
enum From {
    /// After this ID.
    After(StreamId),
    /// `$`: after the last entry when the read began.
    New,
}

/// A parsed `XREAD [COUNT n] [BLOCK ms] STREAMS key... id...`.
#[derive(Debug)]
pub(crate) struct XRead {
    count: usize,
    /// How long to wait for an entry (0: for ever); `None`: do not wait.
    pub(crate) block_ms: Option<u64>,
    keys: Vec<Bytes>,
    from: Vec<From>,
}

impl XRead {
    pub(crate) fn parse(args: &[Bytes]) -> Result<XRead, Frame> {
        let (mut limit, mut block_ms) = (usize::MAX, None);
        let mut at = 1;
        loop {
            let option = keyword(args.get(at).ok_or_else(syntax_error)?);
            match option.as_str() {
                "COUNT" => {
                    let n = int(args.get(at + 1).ok_or_else(syntax_error)?)?;
                    limit = if n <= 0 { usize::MAX } else { n as usize };
                    at += 2;
                }
                "BLOCK" => {
                    let ms = int(args.get(at + 1).ok_or_else(syntax_error)?)?;
                    block_ms = Some(u64::try_from(ms).map_err(|_| Frame::error("ERR timeout is negative"))?);
                    at += 2;
                }
                "STREAMS" => {
                    at += 1;
                    break;
                }
                _ => return Err(syntax_error()),
            }
        }
        let rest = &args[at..];
        if rest.is_empty() || !rest.len().is_multiple_of(2) {
            return Err(Frame::error(
                "ERR Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified.",
            ));
        }
        let (keys, ids) = rest.split_at(rest.len() / 2);
        let from = ids
            .iter()
            .map(|id| match id.as_ref() {
                b"$" => Ok(From::New),
                id => StreamId::parse(id, 0).map(From::After).ok_or_else(invalid_id),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(XRead {
            count: limit,
            block_ms,
            keys: keys.to_vec(),
            from,
        })
    }

    /// Fixes each `$` to its stream's last ID now (so entries added while the read
    /// waits are seen).
    pub(crate) fn resolve_new(&mut self, db: &mut Db) -> Result<(), Frame> {
        for (key, from) in self.keys.iter().zip(self.from.iter_mut()) {
            if let From::New = from {
                let last = db.stream(key)?.map(Stream::last_id).unwrap_or_default();
                *from = From::After(last);
            }
        }
        Ok(())
    }

    /// The entries after each stream's start; `None` when there is none anywhere.
    pub(crate) fn read(&self, db: &mut Db) -> Result<Option<Frame>, Frame> {
        let mut out = Vec::new();
        for (key, from) in self.keys.iter().zip(&self.from) {
            let From::After(after) = *from else {
                continue;
            };
            let Some(stream) = db.stream(key)? else {
                continue;
            };
            let entries = stream.range(Bound::Excluded(after), Bound::Unbounded, false, self.count);
            if !entries.is_empty() {
                out.push(Frame::Array(vec![
                    Frame::Bulk(key.clone()),
                    entry_frames(entries),
                ]));
            }
        }
        Ok((!out.is_empty()).then_some(Frame::Array(out)))
    }
}

/// XREAD without waiting (in a transaction, a script, or with no BLOCK).
pub(super) fn xread(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let mut read = XRead::parse(args)?;
    read.resolve_new(ctx.db)?;
    Ok(read.read(ctx.db)?.unwrap_or(Frame::NullArray))
}
