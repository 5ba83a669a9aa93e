//! The Redis commands, one file per value type, and the table that names them with
//! their arity and flags. A command is a plain function over the locked keyspace that
//! returns its reply; a bad argument is an error reply naming what was wrong, as Redis
//! words it (clients key on the first word: `ERR`, `WRONGTYPE`, `NOSCRIPT`...).
//!
//! Only what Ferry sends is here (its Rust code, its Lua scripts, what redis-rs sends
//! on connect), plus the basics a person at `redis-cli` expects.

mod hashes;
mod keys;
mod lists;
mod server;
mod sets;
mod sorted_sets;
pub(crate) mod streams;
mod strings;

pub(crate) use server::REDIS_VERSION;

use bytes::Bytes;

use super::db::Db;
use super::frame::Frame;
use super::pubsub::Hub;

/// A command's reply, or its error reply (so `?` ends a command with an error).
pub(crate) type Reply = Result<Frame, Frame>;

/// What a command runs against.
pub(crate) struct Ctx<'a> {
    pub(crate) db: &'a mut Db,
    pub(crate) hub: &'a Hub,
    /// Set while a script runs the command (`redis.call`).
    pub(crate) script: Option<ScriptMode>,
}

/// How the running script was declared.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScriptMode {
    /// `#!lua flags=no-writes`: its write commands are refused.
    pub(crate) read_only: bool,
}

/// Who carries a command out.
#[derive(Clone, Copy)]
pub(crate) enum Handler {
    /// A function over the keyspace.
    Data(fn(&mut Ctx<'_>, &[Bytes]) -> Reply),
    /// EVAL, EVALSHA, SCRIPT: the script engine.
    Scripting,
    /// AUTH, MULTI, SUBSCRIBE...: the client's connection itself.
    Session,
}

/// One command: its name, Redis's arity (the name included; negative: at least that
/// many), and whether it writes or is barred from scripts.
pub(crate) struct Command {
    pub(crate) name: &'static str,
    pub(crate) arity: i32,
    pub(crate) write: bool,
    pub(crate) no_script: bool,
    pub(crate) handler: Handler,
}

const fn data(
    name: &'static str,
    arity: i32,
    write: bool,
    run: fn(&mut Ctx<'_>, &[Bytes]) -> Reply,
) -> Command {
    Command {
        name,
        arity,
        write,
        no_script: false,
        handler: Handler::Data(run),
    }
}

const fn special(name: &'static str, arity: i32, handler: Handler) -> Command {
    Command {
        name,
        arity,
        write: false,
        no_script: true,
        handler,
    }
}

const W: bool = true;
const R: bool = false;

static COMMANDS: &[Command] = &[
    // connection and server
    special("AUTH", -2, Handler::Session),
    special("HELLO", -1, Handler::Session),
    special("CLIENT", -2, Handler::Session),
    special("QUIT", -1, Handler::Session),
    special("RESET", 1, Handler::Session),
    special("MULTI", 1, Handler::Session),
    special("EXEC", 1, Handler::Session),
    special("DISCARD", 1, Handler::Session),
    special("SUBSCRIBE", -2, Handler::Session),
    special("UNSUBSCRIBE", -1, Handler::Session),
    special("PSUBSCRIBE", -2, Handler::Session),
    special("PUNSUBSCRIBE", -1, Handler::Session),
    special("EVAL", -3, Handler::Scripting),
    special("EVALSHA", -3, Handler::Scripting),
    special("SCRIPT", -2, Handler::Scripting),
    data("PING", -1, R, server::ping),
    data("ECHO", 2, R, server::echo),
    data("SELECT", 2, R, server::select),
    data("CONFIG", -2, R, server::config),
    data("INFO", -1, R, server::info),
    data("COMMAND", -1, R, server::command),
    data("DBSIZE", 1, R, server::dbsize),
    data("FLUSHALL", -1, W, server::flush),
    data("FLUSHDB", -1, W, server::flush),
    data("PUBLISH", 3, R, server::publish),
    // keys
    data("DEL", -2, W, keys::del),
    data("UNLINK", -2, W, keys::del),
    data("EXISTS", -2, R, keys::exists),
    data("TYPE", 2, R, keys::key_type),
    data("TTL", 2, R, keys::ttl),
    data("PTTL", 2, R, keys::pttl),
    data("EXPIRE", -3, W, keys::expire),
    data("PEXPIRE", -3, W, keys::pexpire),
    data("EXPIREAT", -3, W, keys::expireat),
    data("PEXPIREAT", -3, W, keys::pexpireat),
    data("PERSIST", 2, W, keys::persist),
    data("KEYS", 2, R, keys::keys),
    data("SCAN", -2, R, keys::scan),
    data("MEMORY", -2, R, keys::memory),
    // strings
    data("GET", 2, R, strings::get),
    data("MGET", -2, R, strings::mget),
    data("SET", -3, W, strings::set),
    data("SETEX", 4, W, strings::setex),
    data("PSETEX", 4, W, strings::psetex),
    data("SETNX", 3, W, strings::setnx),
    data("STRLEN", 2, R, strings::strlen),
    // hashes
    data("HSET", -4, W, hashes::hset),
    data("HMSET", -4, W, hashes::hmset),
    data("HSETNX", 4, W, hashes::hsetnx),
    data("HGET", 3, R, hashes::hget),
    data("HMGET", -3, R, hashes::hmget),
    data("HGETALL", 2, R, hashes::hgetall),
    data("HDEL", -3, W, hashes::hdel),
    data("HINCRBY", 4, W, hashes::hincrby),
    data("HLEN", 2, R, hashes::hlen),
    data("HEXISTS", 3, R, hashes::hexists),
    // sets
    data("SADD", -3, W, sets::sadd),
    data("SREM", -3, W, sets::srem),
    data("SMEMBERS", 2, R, sets::smembers),
    data("SISMEMBER", 3, R, sets::sismember),
    data("SCARD", 2, R, sets::scard),
    data("SRANDMEMBER", -2, R, sets::srandmember),
    // sorted sets
    data("ZADD", -4, W, sorted_sets::zadd),
    data("ZREM", -3, W, sorted_sets::zrem),
    data("ZSCORE", 3, R, sorted_sets::zscore),
    data("ZCARD", 2, R, sorted_sets::zcard),
    data("ZRANGEBYSCORE", -4, R, sorted_sets::zrangebyscore),
    data("ZREVRANGEBYSCORE", -4, R, sorted_sets::zrevrangebyscore),
    data("ZREMRANGEBYSCORE", 4, W, sorted_sets::zremrangebyscore),
    // lists
    data("RPUSH", -3, W, lists::rpush),
    data("LPUSH", -3, W, lists::lpush),
    data("LRANGE", 4, R, lists::lrange),
    data("LLEN", 2, R, lists::llen),
    // streams
    data("XADD", -5, W, streams::xadd),
    data("XRANGE", -4, R, streams::xrange),
    data("XREVRANGE", -4, R, streams::xrevrange),
    data("XLEN", 2, R, streams::xlen),
    data("XTRIM", -4, W, streams::xtrim),
    data("XREAD", -4, R, streams::xread),
];

/// Every command's name.
#[cfg(test)]
pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|c| c.name)
}

/// The command named `name` (any case).
pub(crate) fn lookup(name: &[u8]) -> Option<&'static Command> {
    COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// The command `args` names, if it exists and has an acceptable number of arguments;
/// else the error reply.
pub(crate) fn resolve(args: &[Bytes]) -> Result<&'static Command, Frame> {
    let name = args.first().ok_or_else(|| Frame::error("ERR empty command"))?;
    let Some(command) = lookup(name) else {
        return Err(unknown_command(args));
    };
    let n = args.len() as i32;
    let fits = if command.arity >= 0 {
        n == command.arity
    } else {
        n >= -command.arity
    };
    if !fits {
        return Err(wrong_arity(command.name));
    }
    Ok(command)
}

/// Runs a keyspace command (`Data`); the others answer that they cannot run here.
pub(crate) fn run(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Frame {
    let command = match resolve(args) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Some(mode) = ctx.script {
        if command.no_script {
            return Frame::error("ERR This Redis command is not allowed from script");
        }
        if command.write && mode.read_only {
            return Frame::error("ERR Write commands are not allowed from read-only scripts.");
        }
    }
    match command.handler {
        Handler::Data(run) => run(ctx, args).unwrap_or_else(|e| e),
        Handler::Scripting | Handler::Session => {
            Frame::error(format!("ERR '{}' cannot run here", command.name.to_lowercase()))
        }
    }
}

fn unknown_command(args: &[Bytes]) -> Frame {
    let mut message = format!(
        "ERR unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(&args[0])
    );
    for arg in args.iter().skip(1).take(20) {
        message.push_str(&format!("'{}' ", String::from_utf8_lossy(arg)));
    }
    Frame::error(message)
}

pub(crate) fn wrong_arity(name: &str) -> Frame {
    Frame::error(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_lowercase()
    ))
}

pub(crate) fn syntax_error() -> Frame {
    Frame::error("ERR syntax error")
}

/// An integer argument.
pub(crate) fn int(arg: &[u8]) -> Result<i64, Frame> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Frame::error("ERR value is not an integer or out of range"))
}

/// A non-negative integer argument (a count, an index).
pub(crate) fn count(arg: &[u8]) -> Result<usize, Frame> {
    usize::try_from(int(arg)?).map_err(|_| Frame::error("ERR value is out of range, must be positive"))
}

/// A floating-point argument (`inf`, `-inf` allowed; NaN refused).
pub(crate) fn float(arg: &[u8]) -> Result<f64, Frame> {
    let text = std::str::from_utf8(arg).unwrap_or("");
    let value = match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        t if t.contains("inf") || t.contains("nan") => f64::NAN,
        t => t.parse().unwrap_or(f64::NAN),
    };
    if value.is_nan() {
        Err(Frame::error("ERR value is not a valid float"))
    } else {
        Ok(value)
    }
}

/// An option keyword, upper-cased for matching.
pub(crate) fn keyword(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

/// A list of bulk strings.
pub(crate) fn bulks<'a>(items: impl IntoIterator<Item = &'a Bytes>) -> Frame {
    Frame::Array(items.into_iter().cloned().map(Frame::Bulk).collect())
}
