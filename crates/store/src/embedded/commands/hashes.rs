//! Hash commands: HSET, HMSET, HSETNX, HGET, HMGET, HGETALL, HDEL, HINCRBY, HLEN,
//! HEXISTS.

use bytes::Bytes;

use super::{Ctx, Reply, int, wrong_arity};
use crate::embedded::frame::Frame;

/// Sets field-value pairs; how many fields are new.
fn set_pairs(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<i64, Frame> {
    if !args.len().is_multiple_of(2) {
        return Err(wrong_arity(&String::from_utf8_lossy(&args[0])));
    }
    let hash = ctx.db.hash_mut(&args[1])?;
    let mut added = 0;
    for pair in args[2..].chunks_exact(2) {
        added += i64::from(hash.insert(pair[0].clone(), pair[1].clone()).is_none());
    }
    Ok(added)
}

pub(super) fn hset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    Ok(Frame::Integer(set_pairs(ctx, args)?))
}

pub(super) fn hmset(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    set_pairs(ctx, args)?;
    Ok(Frame::ok())
}

pub(super) fn hsetnx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    if ctx.db.hash(&args[1])?.is_some_and(|h| h.contains_key(&args[2])) {
        return Ok(Frame::Integer(0));
    }
    ctx.db
        .hash_mut(&args[1])?
        .insert(args[2].clone(), args[3].clone());
    Ok(Frame::Integer(1))
}

pub(super) fn hget(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let value = ctx.db.hash(&args[1])?.and_then(|h| h.get(&args[2]).cloned());
    Ok(value.map_or(Frame::Null, Frame::Bulk))
}

pub(super) fn hmget(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let hash = ctx.db.hash(&args[1])?;
    let values = args[2..]
        .iter()
        .map(|f| {
            hash.and_then(|h| h.get(f).cloned())
                .map_or(Frame::Null, Frame::Bulk)
        })
        .collect();
    Ok(Frame::Array(values))
}

pub(super) fn hgetall(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let mut out = Vec::new();
    if let Some(hash) = ctx.db.hash(&args[1])? {
        for (field, value) in hash {
            out.push(Frame::Bulk(field.clone()));
            out.push(Frame::Bulk(value.clone()));
        }
    }
    Ok(Frame::Array(out))
}

pub(super) fn hdel(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    if ctx.db.hash(&args[1])?.is_none() {
        return Ok(Frame::Integer(0));
    }
    let hash = ctx.db.hash_mut(&args[1])?;
    let removed = args[2..].iter().filter(|f| hash.remove(*f).is_some()).count();
    ctx.db.drop_if_empty(&args[1]);
    Ok(Frame::Integer(removed as i64))
}

pub(super) fn hincrby(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let by = int(&args[3])?;
    let hash = ctx.db.hash_mut(&args[1])?;
    let current = match hash.get(&args[2]) {
        None => 0,
        Some(v) => int(v).map_err(|_| Frame::error("ERR hash value is not an integer"))?,
    };
    let next = current
        .checked_add(by)
        .ok_or_else(|| Frame::error("ERR increment or decrement would overflow"))?;
    hash.insert(args[2].clone(), Bytes::from(next.to_string()));
    Ok(Frame::Integer(next))
}

pub(super) fn hlen(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    Ok(Frame::Integer(
        ctx.db.hash(&args[1])?.map_or(0, |h| h.len()) as i64
    ))
}

pub(super) fn hexists(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let found = ctx.db.hash(&args[1])?.is_some_and(|h| h.contains_key(&args[2]));
    Ok(Frame::Integer(i64::from(found)))
}
