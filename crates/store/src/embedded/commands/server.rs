//! Server commands: PING, ECHO, SELECT, CONFIG, INFO, COMMAND, DBSIZE, FLUSHALL,
//! PUBLISH.

use bytes::Bytes;

use super::{Ctx, Reply, keyword, syntax_error};
use crate::embedded::db::glob_match;
use crate::embedded::frame::Frame;

/// The Redis version this server answers as (what Ferry relies on is Redis 7's).
pub(crate) const REDIS_VERSION: &str = "7.2.0";

pub(super) fn ping(_: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    match args {
        [_] => Ok(Frame::Simple("PONG".to_owned())),
        [_, message] => Ok(Frame::Bulk(message.clone())),
        _ => Err(super::wrong_arity("ping")),
    }
}

pub(super) fn echo(_: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    Ok(Frame::Bulk(args[1].clone()))
}

/// Only database 0 exists.
pub(super) fn select(_: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    match super::int(&args[1])? {
        0 => Ok(Frame::ok()),
        _ => Err(Frame::error("ERR DB index is out of range")),
    }
}

/// The settings a client may ask about, as a Redis that never evicts and never saves
/// on its own would answer.
const SETTINGS: &[(&str, &str)] = &[
    ("maxmemory-policy", "noeviction"),
    ("maxmemory", "0"),
    ("databases", "1"),
    ("save", ""),
    ("appendonly", "no"),
];

/// `CONFIG GET pattern...`; CONFIG SET is refused (nothing here can be tuned).
pub(super) fn config(_: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    match keyword(&args[1]).as_str() {
        "GET" if args.len() >= 3 => {
            let mut out = Vec::new();
            for (name, value) in SETTINGS {
                if args[2..]
                    .iter()
                    .any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes()))
                {
                    out.push(Frame::bulk(*name));
                    out.push(Frame::bulk(*value));
                }
            }
            Ok(Frame::Array(out))
        }
        "GET" => Err(super::wrong_arity("config|get")),
        "RESETSTAT" => Ok(Frame::ok()),
        "SET" => Err(Frame::error(
            "ERR CONFIG SET is not supported by Ferry's embedded store",
        )),
        other => Err(Frame::error(format!(
            "ERR unknown subcommand '{other}'. Try CONFIG HELP."
        ))),
    }
}

/// A few lines of each section: enough for a person or a tool that checks the version,
/// the memory policy or the keys.
pub(super) fn info(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Reply {
    let keys = ctx.db.len();
    let text = format!(
        "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\n\
         ferry_embedded:1\r\n\r\n# Memory\r\nused_memory:0\r\nmaxmemory:0\r\n\
         maxmemory_policy:noeviction\r\n\r\n# Persistence\r\nloading:0\r\n\r\n\
         # Keyspace\r\ndb0:keys={keys},expires=0,avg_ttl=0\r\n"
    );
    Ok(Frame::bulk(text))
}

/// `COMMAND` with no documentation to give (redis-cli asks for it on start).
pub(super) fn command(_: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    match args.get(1).map(|a| keyword(a)).as_deref() {
        Some("COUNT") => Ok(Frame::Integer(0)),
        _ => Ok(Frame::Array(Vec::new())),
    }
}

pub(super) fn dbsize(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Reply {
    Ok(Frame::Integer(ctx.db.len() as i64))
}

/// FLUSHALL and FLUSHDB (one database: the same), with an optional ASYNC or SYNC.
pub(super) fn flush(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    match args.get(1).map(|a| keyword(a)).as_deref() {
        None | Some("ASYNC") | Some("SYNC") if args.len() <= 2 => {
            ctx.db.clear();
            Ok(Frame::ok())
        }
        _ => Err(syntax_error()),
    }
}

pub(super) fn publish(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    Ok(Frame::Integer(ctx.hub.publish(&args[1], &args[2])))
}
