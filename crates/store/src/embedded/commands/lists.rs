//! List commands: RPUSH, LPUSH, LRANGE, LLEN.

use bytes::Bytes;

use super::{Ctx, Reply, int};
use crate::embedded::frame::Frame;

pub(super) fn rpush(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let list = ctx.db.list_mut(&args[1])?;
    list.extend(args[2..].iter().cloned());
    Ok(Frame::Integer(list.len() as i64))
}

pub(super) fn lpush(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let list = ctx.db.list_mut(&args[1])?;
    for value in &args[2..] {
        list.push_front(value.clone());
    }
    Ok(Frame::Integer(list.len() as i64))
}

/// `LRANGE key start stop`, both inclusive; negative indexes count from the end.
pub(super) fn lrange(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let (start, stop) = (int(&args[2])?, int(&args[3])?);
    let Some(list) = ctx.db.list(&args[1])? else {
        return Ok(Frame::Array(Vec::new()));
    };
    let len = list.len() as i64;
    let start = if start < 0 { (len + start).max(0) } else { start };
    let stop = if stop < 0 { len + stop } else { stop.min(len - 1) };
    if start > stop || start >= len {
        return Ok(Frame::Array(Vec::new()));
    }
    let items = list
        .range(start as usize..=stop as usize)
        .cloned()
        .map(Frame::Bulk)
        .collect();
    Ok(Frame::Array(items))
}

pub(super) fn llen(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    Ok(Frame::Integer(
        ctx.db.list(&args[1])?.map_or(0, |l| l.len()) as i64
    ))
}
