//! Sorted set commands: ZADD, ZREM, ZSCORE, ZCARD, ZRANGEBYSCORE.

use bytes::Bytes;

use super::{Ctx, Reply, float, int, keyword, syntax_error};
use crate::embedded::frame::Frame;
use crate::embedded::zset::{ScoreBound, format_score};

/// `ZADD key [NX|XX] [GT|LT] [CH] score member [score member ...]`.
pub(super) fn zadd(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let (mut nx, mut xx, mut gt, mut lt, mut ch) = (false, false, false, false, false);
    let mut at = 2;
    while at < args.len() {
        match keyword(&args[at]).as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "GT" => gt = true,
            "LT" => lt = true,
            "CH" => ch = true,
            "INCR" => {
                return Err(Frame::error(
                    "ERR ZADD INCR is not supported by Ferry's embedded store",
                ));
            }
            _ => break,
        }
        at += 1;
    }
    let pairs = &args[at..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(syntax_error());
    }
    if nx && (xx || gt || lt) || (gt && lt) {
        return Err(Frame::error(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    // Every score is checked before anything is written.
    let scores = pairs
        .chunks_exact(2)
        .map(|p| float(&p[0]))
        .collect::<Result<Vec<f64>, Frame>>()?;
    let set = ctx.db.sorted_set_mut(&args[1])?;
    let (mut added, mut changed) = (0, 0);
    for (pair, score) in pairs.chunks_exact(2).zip(scores) {
        let member = &pair[1];
        match set.score(member) {
            None if !xx => {
                set.insert(member.clone(), score);
                added += 1;
            }
            Some(old) if !nx && old != score && (!gt || score > old) && (!lt || score < old) => {
                set.insert(member.clone(), score);
                changed += 1;
            }
            _ => {}
        }
    }
    ctx.db.drop_if_empty(&args[1]);
    Ok(Frame::Integer(if ch { added + changed } else { added }))
}

pub(super) fn zrem(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    if ctx.db.sorted_set(&args[1])?.is_none() {
        return Ok(Frame::Integer(0));
    }
    let set = ctx.db.sorted_set_mut(&args[1])?;
    let removed = args[2..].iter().filter(|m| set.remove(m)).count();
    ctx.db.drop_if_empty(&args[1]);
    Ok(Frame::Integer(removed as i64))
}

pub(super) fn zscore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let score = ctx.db.sorted_set(&args[1])?.and_then(|z| z.score(&args[2]));
    Ok(score.map_or(Frame::Null, |s| Frame::bulk(format_score(s))))
}

pub(super) fn zcard(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    Ok(Frame::Integer(
        ctx.db.sorted_set(&args[1])?.map_or(0, |z| z.len()) as i64,
    ))
}

/// `5`, `(5`, `-inf`, `+inf`.
fn score_bound(arg: &[u8]) -> Result<ScoreBound, Frame> {
    let (exclusive, number) = match arg.split_first() {
        Some((b'(', rest)) => (true, rest),
        _ => (false, arg),
    };
    let value = float(number).map_err(|_| Frame::error("ERR min or max is not a float"))?;
    Ok(ScoreBound { value, exclusive })
}

/// `ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count]`.
pub(super) fn zrangebyscore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    range_by_score(ctx, args, false)
}

/// `ZREVRANGEBYSCORE key max min [WITHSCORES] [LIMIT offset count]`: highest first.
pub(super) fn zrevrangebyscore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    range_by_score(ctx, args, true)
}

/// `ZREMRANGEBYSCORE key min max`: how many members it removed.
pub(super) fn zremrangebyscore(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let min = score_bound(&args[2])?;
    let max = score_bound(&args[3])?;
    let Some(set) = ctx.db.sorted_set(&args[1])? else {
        return Ok(Frame::Integer(0));
    };
    let doomed: Vec<Bytes> = set.range_by_score(min, max).map(|(m, _)| m.clone()).collect();
    let set = ctx.db.sorted_set_mut(&args[1])?;
    for member in &doomed {
        set.remove(member);
    }
    ctx.db.drop_if_empty(&args[1]);
    Ok(Frame::Integer(doomed.len() as i64))
}

fn range_by_score(ctx: &mut Ctx<'_>, args: &[Bytes], reverse: bool) -> Reply {
    let (min, max) = if reverse {
        (&args[3], &args[2])
    } else {
        (&args[2], &args[3])
    };
    let min = score_bound(min)?;
    let max = score_bound(max)?;
    let (mut with_scores, mut offset, mut limit) = (false, 0usize, None);
    let mut options = args[4..].iter();
    while let Some(option) = options.next() {
        match keyword(option).as_str() {
            "WITHSCORES" => with_scores = true,
            "LIMIT" => {
                let o = int(options.next().ok_or_else(syntax_error)?)?;
                let c = int(options.next().ok_or_else(syntax_error)?)?;
                if o < 0 {
                    return Ok(Frame::Array(Vec::new()));
                }
                offset = o as usize;
                // A negative count means no limit.
                limit = usize::try_from(c).ok();
            }
            _ => return Err(syntax_error()),
        }
    }
    let mut out = Vec::new();
    if let Some(set) = ctx.db.sorted_set(&args[1])? {
        let mut all: Vec<(&Bytes, f64)> = set.range_by_score(min, max).collect();
        if reverse {
            all.reverse();
        }
        for (member, score) in all.into_iter().skip(offset).take(limit.unwrap_or(usize::MAX)) {
            out.push(Frame::Bulk(member.clone()));
            if with_scores {
                out.push(Frame::bulk(format_score(score)));
            }
        }
    }
    Ok(Frame::Array(out))
}
