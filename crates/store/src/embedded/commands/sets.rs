//! Set commands: SADD, SREM, SMEMBERS, SISMEMBER, SCARD, SRANDMEMBER.

use bytes::Bytes;
use rand::seq::IteratorRandom;

use super::{Ctx, Reply, bulks, int};
use crate::embedded::frame::Frame;

pub(super) fn sadd(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let set = ctx.db.set_mut(&args[1])?;
    let added = args[2..].iter().filter(|m| set.insert((*m).clone())).count();
    Ok(Frame::Integer(added as i64))
}

pub(super) fn srem(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    if ctx.db.set(&args[1])?.is_none() {
        return Ok(Frame::Integer(0));
    }
    let set = ctx.db.set_mut(&args[1])?;
    let removed = args[2..].iter().filter(|m| set.remove(*m)).count();
    ctx.db.drop_if_empty(&args[1]);
    Ok(Frame::Integer(removed as i64))
}

pub(super) fn smembers(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    Ok(ctx.db.set(&args[1])?.map_or(Frame::Array(Vec::new()), bulks))
}

pub(super) fn sismember(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let found = ctx.db.set(&args[1])?.is_some_and(|s| s.contains(&args[2]));
    Ok(Frame::Integer(i64::from(found)))
}

pub(super) fn scard(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    Ok(Frame::Integer(ctx.db.set(&args[1])?.map_or(0, |s| s.len()) as i64))
}

/// `SRANDMEMBER key [count]`: one member (or nil); with a positive count, that many
/// distinct members at most; with a negative one, that many, repeats allowed.
pub(super) fn srandmember(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let wanted = args.get(2).map(|c| int(c)).transpose()?;
    if args.len() > 3 {
        return Err(super::syntax_error());
    }
    let set = ctx.db.set(&args[1])?;
    let mut rng = rand::rng();
    let Some(n) = wanted else {
        let one = set.and_then(|s| s.iter().choose(&mut rng).cloned());
        return Ok(one.map_or(Frame::Null, Frame::Bulk));
    };
    let Some(set) = set.filter(|s| !s.is_empty()) else {
        return Ok(Frame::Array(Vec::new()));
    };
    if n >= 0 {
        let picked = set.iter().choose_multiple(&mut rng, (n as usize).min(set.len()));
        Ok(bulks(picked))
    } else {
        let n = n.unsigned_abs().min(1 << 24) as usize;
        let picked: Vec<Frame> = (0..n)
            .filter_map(|_| set.iter().choose(&mut rng).cloned().map(Frame::Bulk))
            .collect();
        Ok(Frame::Array(picked))
    }
}
