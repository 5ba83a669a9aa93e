//! String commands: GET, MGET, SET (with its options), SETEX, PSETEX, SETNX, STRLEN.

use bytes::Bytes;

use super::{Ctx, Reply, int, keyword, syntax_error};
use crate::embedded::db::{Value, now_ms, wrong_type};
use crate::embedded::frame::Frame;

pub(super) fn get(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    Ok(ctx.db.string(&args[1])?.cloned().map_or(Frame::Null, Frame::Bulk))
}

/// MGET answers nil for a key of another type (it never fails on types).
pub(super) fn mget(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let values = args[1..]
        .iter()
        .map(|k| match ctx.db.get(k) {
            Some(Value::String(s)) => Frame::Bulk(s.clone()),
            _ => Frame::Null,
        })
        .collect();
    Ok(Frame::Array(values))
}

/// An expiry time (ms since the epoch) from `n` units of `unit_ms`, after now or
/// since the epoch.
fn expiry(command: &str, n: i64, unit_ms: i128, absolute: bool) -> Result<u64, Frame> {
    let ms = i128::from(n) * unit_ms;
    let at = if absolute { ms } else { i128::from(now_ms()) + ms };
    if n <= 0 || at > i128::from(i64::MAX) {
        return Err(Frame::error(format!(
            "ERR invalid expire time in '{command}' command"
        )));
    }
    Ok(at as u64)
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`.
pub(super) fn set(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let (mut nx, mut xx, mut get, mut keep_ttl) = (false, false, false, false);
    let mut expires_at = None;
    let mut options = args[3..].iter();
    while let Some(option) = options.next() {
        let option = keyword(option);
        match option.as_str() {
            "NX" if !xx => nx = true,
            "XX" if !nx => xx = true,
            "GET" => get = true,
            "KEEPTTL" if expires_at.is_none() => keep_ttl = true,
            "EX" | "PX" | "EXAT" | "PXAT" if expires_at.is_none() && !keep_ttl => {
                let n = int(options.next().ok_or_else(syntax_error)?)?;
                let unit = if option.starts_with('E') { 1000 } else { 1 };
                expires_at = Some(expiry("set", n, unit, option.ends_with("AT"))?);
            }
            _ => return Err(syntax_error()),
        }
    }
    let key = &args[1];
    let old = if get {
        ctx.db.string(key)?.cloned()
    } else {
        ctx.db.get(key).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            _ => None,
        })
    };
    let exists = ctx.db.exists(key);
    if (nx && exists) || (xx && !exists) {
        return Ok(if get {
            old.map_or(Frame::Null, Frame::Bulk)
        } else {
            Frame::Null
        });
    }
    ctx.db.put(key.clone(), Value::String(args[2].clone()), keep_ttl);
    if let Some(at) = expires_at {
        ctx.db.expire_at(key, at);
    }
    Ok(if get {
        old.map_or(Frame::Null, Frame::Bulk)
    } else {
        Frame::ok()
    })
}

fn set_expiring(ctx: &mut Ctx<'_>, args: &[Bytes], unit_ms: i128) -> Reply {
    let command = String::from_utf8_lossy(&args[0]).to_lowercase();
    let at = expiry(&command, int(&args[2])?, unit_ms, false)?;
    ctx.db.put(args[1].clone(), Value::String(args[3].clone()), false);
    ctx.db.expire_at(&args[1], at);
    Ok(Frame::ok())
}

pub(super) fn setex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    set_expiring(ctx, args, 1000)
}

pub(super) fn psetex(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    set_expiring(ctx, args, 1)
}

pub(super) fn setnx(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    if ctx.db.exists(&args[1]) {
        return Ok(Frame::Integer(0));
    }
    ctx.db.put(args[1].clone(), Value::String(args[2].clone()), false);
    Ok(Frame::Integer(1))
}

pub(super) fn strlen(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    match ctx.db.get(&args[1]) {
        None => Ok(Frame::Integer(0)),
        Some(Value::String(s)) => Ok(Frame::Integer(s.len() as i64)),
        Some(_) => Err(wrong_type()),
    }
}
