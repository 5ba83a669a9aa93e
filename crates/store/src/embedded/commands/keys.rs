//! Commands on keys of any type: deleting, inspecting, expiring, listing.

use bytes::Bytes;

use super::{Ctx, Reply, bulks, count, int, keyword, syntax_error};
use crate::embedded::db::{Value, glob_match, now_ms};
use crate::embedded::frame::Frame;

pub(super) fn del(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let removed = args[1..].iter().filter(|k| ctx.db.remove(k)).count();
    Ok(Frame::Integer(removed as i64))
}

pub(super) fn exists(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let found = args[1..].iter().filter(|k| ctx.db.exists(k)).count();
    Ok(Frame::Integer(found as i64))
}

pub(super) fn key_type(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let name = ctx.db.get(&args[1]).map_or("none", |v| v.type_name());
    Ok(Frame::Simple(name.to_owned()))
}

/// -2 for no key, -1 for a key kept for good, else what is left in `unit_ms` units.
fn time_to_live(ctx: &mut Ctx<'_>, key: &[u8], unit_ms: u64) -> Reply {
    Ok(Frame::Integer(match ctx.db.expiry(key) {
        None => -2,
        Some(None) => -1,
        Some(Some(at)) => {
            let left = at.saturating_sub(now_ms());
            // Redis rounds TTL to the nearest second.
            ((left + unit_ms / 2) / unit_ms) as i64
        }
    }))
}

pub(super) fn ttl(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    time_to_live(ctx, &args[1], 1000)
}

pub(super) fn pttl(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    time_to_live(ctx, &args[1], 1)
}

/// EXPIRE and its kin: `unit_ms` per unit of the argument, `absolute` for a time
/// since the epoch rather than from now; NX, XX, GT, LT as in Redis 7.
fn expire_generic(ctx: &mut Ctx<'_>, args: &[Bytes], unit_ms: i128, absolute: bool) -> Reply {
    let name = String::from_utf8_lossy(&args[0]).to_lowercase();
    let n = i128::from(int(&args[2])?);
    let at = if absolute {
        n * unit_ms
    } else {
        i128::from(now_ms()) + n * unit_ms
    };
    if at > i128::from(i64::MAX) || (!absolute && n * unit_ms > i128::from(i64::MAX)) {
        return Err(Frame::error(format!(
            "ERR invalid expire time in '{name}' command"
        )));
    }
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in &args[3..] {
        match keyword(option).as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "GT" => gt = true,
            "LT" => lt = true,
            other => return Err(Frame::error(format!("ERR Unsupported option {other}"))),
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Frame::error(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(Frame::error(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let Some(current) = ctx.db.expiry(&args[1]) else {
        return Ok(Frame::Integer(0));
    };
    // A key kept for good counts as an infinite time to live.
    let allowed = match current {
        None => !xx && !gt,
        Some(cur) => !nx && (!gt || at > i128::from(cur)) && (!lt || at < i128::from(cur)),
    };
    if !allowed {
        return Ok(Frame::Integer(0));
    }
    ctx.db.expire_at(&args[1], at.max(0) as u64);
    Ok(Frame::Integer(1))
}

pub(super) fn expire(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    expire_generic(ctx, args, 1000, false)
}

pub(super) fn pexpire(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    expire_generic(ctx, args, 1, false)
}

pub(super) fn expireat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    expire_generic(ctx, args, 1000, true)
}

pub(super) fn pexpireat(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    expire_generic(ctx, args, 1, true)
}

pub(super) fn persist(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    Ok(Frame::Integer(i64::from(ctx.db.persist(&args[1]))))
}

pub(super) fn keys(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let pattern = &args[1];
    let matched: Vec<&Bytes> = ctx.db.keys().filter(|k| glob_match(pattern, k)).collect();
    Ok(bulks(matched))
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
pub(super) fn scan(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let cursor = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Frame::error("ERR invalid cursor"))?;
    let (mut pattern, mut batch, mut type_name) = (None, 10, None);
    let mut options = args[2..].iter();
    while let Some(option) = options.next() {
        let value = options.next().ok_or_else(syntax_error)?;
        match keyword(option).as_str() {
            "MATCH" => pattern = Some(value.clone()),
            "COUNT" => {
                batch = count(value)?;
                if batch == 0 {
                    return Err(syntax_error());
                }
            }
            "TYPE" => type_name = Some(String::from_utf8_lossy(value).to_lowercase()),
            _ => return Err(syntax_error()),
        }
    }
    let (next, found) = ctx.db.scan(cursor, batch);
    let mut keys = Vec::new();
    for key in found {
        if pattern.as_ref().is_some_and(|p| !glob_match(p, &key)) {
            continue;
        }
        if let Some(t) = &type_name
            && ctx.db.get(&key).map(|v| v.type_name()) != Some(t.as_str())
        {
            continue;
        }
        keys.push(Frame::Bulk(key));
    }
    Ok(Frame::Array(vec![
        Frame::bulk(next.to_string()),
        Frame::Array(keys),
    ]))
}

/// `MEMORY USAGE key`: about how many bytes the key and its value take (the bytes they
/// hold plus a fixed cost per key and per element; not an allocator's count).
pub(super) fn memory(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    if keyword(&args[1]) != "USAGE" || !(args.len() == 3 || args.len() == 5) {
        return Err(Frame::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try MEMORY HELP.",
            String::from_utf8_lossy(&args[1])
        )));
    }
    let key = &args[2];
    let Some(value) = ctx.db.get(key) else {
        return Ok(Frame::Null);
    };
    const PER_ELEMENT: usize = 16;
    let size = match value {
        Value::String(s) => s.len(),
        Value::Hash(h) => h.iter().map(|(f, v)| f.len() + v.len() + PER_ELEMENT).sum(),
        Value::Set(s) => s.iter().map(|m| m.len() + PER_ELEMENT).sum(),
        Value::SortedSet(z) => z.iter().map(|(m, _)| m.len() + 8 + PER_ELEMENT).sum(),
        Value::List(l) => l.iter().map(|i| i.len() + PER_ELEMENT).sum(),
        Value::Stream(s) => s
            .iter()
            .map(|(_, fields)| 16 + fields.iter().map(|f| f.len() + PER_ELEMENT).sum::<usize>())
            .sum(),
    };
    Ok(Frame::Integer((key.len() + size + 56) as i64))
}
