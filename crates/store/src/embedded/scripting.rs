//! Lua scripts: EVAL, EVALSHA and SCRIPT, run by an embedded Lua 5.1 (the version
//! Redis embeds) with Redis's `redis` library and its conversion rules, so Ferry's
//! scripts run here unchanged.
//!
//! - A script is compiled once and kept under the SHA-1 of its text; EVALSHA of an
//!   unknown hash is `NOSCRIPT`, which redis-rs answers with SCRIPT LOAD.
//! - `redis.call` runs a command against the keyspace the script holds locked (the
//!   whole script is one atomic step) and raises its error; `redis.pcall` returns the
//!   error as a table `{err = ...}`.
//! - Lua to RESP: a number becomes an integer (truncated), `false` nil, `true` 1, a
//!   table an array up to its first nil, `{err = ...}` an error, `{ok = ...}` a status.
//!   RESP to Lua: nil becomes `false`, a status `{ok = ...}`, an error `{err = ...}`.
//! - A `#!lua flags=...` first line is accepted (`no-writes` refuses write commands).
//! - Globals are locked as in Redis 7: a script may neither create nor read an
//!   undefined global. The `cjson`, `cmsgpack`, `struct` and `bit` libraries are not
//!   here (Ferry's scripts do not use them), and a script is never cut off by a time
//!   limit.

use std::collections::HashMap;

use bytes::Bytes;
use mlua::{Function, Lua, Table, Value as LuaValue, Variadic};

use super::commands::{self, Ctx, ScriptMode};
use super::db::Db;
use super::frame::Frame;
use super::pubsub::Hub;

/// Sets up the `redis` library, the runner that reports how a script ended, and the
/// lock on globals. Returns the table that holds the dispatcher while a script runs,
/// and the runner.
const PRELUDE: &str = r#"
local holder = {}
local type, error, tostring, pcall = type, error, tostring, pcall
local function dispatch(...)
  local f = holder.dispatch
  if f == nil then error('redis.call is only available while a script runs', 2) end
  return f(...)
end
redis = {
  call = function(...)
    local reply = dispatch(...)
    if type(reply) == 'table' and reply.err ~= nil then error(reply, 2) end
    return reply
  end,
  pcall = function(...) return dispatch(...) end,
  error_reply = function(message)
    if type(message) ~= 'string' then error('wrong number or type of arguments', 2) end
    if message:sub(1, 1) == '-' then message = message:sub(2) end
    return {err = message}
  end,
  status_reply = function(message)
    if type(message) ~= 'string' then error('wrong number or type of arguments', 2) end
    return {ok = message}
  end,
  log = function() end,
  setresp = function(v)
    if v ~= 2 then error('RESP3 is not supported by this server', 2) end
  end,
  set_repl = function() end,
  replicate_commands = function() return true end,
  breakpoint = function() return false end,
  debug = function() end,
  LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
  REPL_NONE = 0, REPL_AOF = 1, REPL_SLAVE = 2, REPL_REPLICA = 2, REPL_ALL = 3,
}
-- 0 and the value when the script returned; 1 and the message when it raised an
-- error reply (redis.call); 2 and the message when Lua raised anything else.
local function run(f)
  local ok, result = pcall(f)
  if ok then return 0, result end
  if type(result) == 'table' and type(result.err) == 'string' then return 1, result.err end
  return 2, tostring(result)
end
loadfile, dofile = nil, nil
setmetatable(_G, {
  __newindex = function(_, name)
    error("Script attempted to create global variable '" .. tostring(name) .. "'", 2)
  end,
  __index = function(_, name)
    error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
  end,
})
return holder, run
"#;

/// How deep a script's reply may nest (a table that contains itself would not end).
const MAX_REPLY_DEPTH: usize = 64;

/// A compiled script.
struct Script {
    function: Function,
    /// Declared `#!lua flags=no-writes`.
    read_only: bool,
}

/// The Lua interpreter and the scripts it has compiled, by SHA-1.
pub(crate) struct Scripts {
    lua: Lua,
    holder: Table,
    runner: Function,
    cache: HashMap<String, Script>,
}

fn internal(e: mlua::Error) -> Frame {
    Frame::error(format!("ERR the script engine failed: {e}"))
}

impl Scripts {
    pub(crate) fn new() -> mlua::Result<Scripts> {
        let lua = Lua::new();
        let (holder, runner): (Table, Function) = lua.load(PRELUDE).set_name("=prelude").call(())?;
        let redis: Table = lua.globals().raw_get("redis")?;
        redis.raw_set(
            "sha1hex",
            lua.create_function(|_, text: mlua::String| Ok(sha1_hex(&text.as_bytes())))?,
        )?;
        Ok(Scripts {
            lua,
            holder,
            runner,
            cache: HashMap::new(),
        })
    }

    /// EVAL, EVALSHA or SCRIPT.
    pub(crate) fn handle(&mut self, db: &mut Db, hub: &Hub, args: &[Bytes]) -> Frame {
        let name = commands::keyword(&args[0]);
        let reply = match name.as_str() {
            "EVAL" => self.eval(db, hub, args, false),
            "EVALSHA" => self.eval(db, hub, args, true),
            _ => self.script_command(args),
        };
        reply.unwrap_or_else(|e| e)
    }

    fn script_command(&mut self, args: &[Bytes]) -> commands::Reply {
        match commands::keyword(&args[1]).as_str() {
            "LOAD" if args.len() == 3 => {
                let sha = self.compile(&args[2])?;
                Ok(Frame::bulk(sha))
            }
            "EXISTS" if args.len() >= 3 => Ok(Frame::Array(
                args[2..]
                    .iter()
                    .map(|sha| {
                        let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
                        Frame::Integer(i64::from(self.cache.contains_key(&sha)))
                    })
                    .collect(),
            )),
            "FLUSH" if args.len() <= 3 => {
                self.cache.clear();
                Ok(Frame::ok())
            }
            "KILL" => Err(Frame::error("NOTBUSY No scripts in execution right now.")),
            "LOAD" | "EXISTS" | "FLUSH" => Err(commands::wrong_arity("script")),
            other => Err(Frame::error(format!(
                "ERR unknown subcommand '{other}'. Try SCRIPT HELP."
            ))),
        }
    }

    /// Compiles `body` (unless it is already) and returns its SHA-1.
    fn compile(&mut self, body: &[u8]) -> Result<String, Frame> {
        let sha = sha1_hex(body);
        if self.cache.contains_key(&sha) {
            return Ok(sha);
        }
        let (code, read_only) = strip_shebang(body)?;
        let function = self
            .lua
            .load(code)
            .set_name("@user_script")
            .into_function()
            .map_err(|e| {
                Frame::error(format!(
                    "ERR Error compiling script (new function): {}",
                    first_line(&e)
                ))
            })?;
        self.cache.insert(sha.clone(), Script { function, read_only });
        Ok(sha)
    }

    /// `EVAL script numkeys key... arg...` or `EVALSHA sha1 numkeys key... arg...`.
    fn eval(&mut self, db: &mut Db, hub: &Hub, args: &[Bytes], by_sha: bool) -> commands::Reply {
        let numkeys = commands::int(&args[2])?;
        if numkeys < 0 {
            return Err(Frame::error("ERR Number of keys can't be negative"));
        }
        let rest = &args[3..];
        if numkeys as usize > rest.len() {
            return Err(Frame::error(
                "ERR Number of keys can't be greater than number of args",
            ));
        }
        let (keys, argv) = rest.split_at(numkeys as usize);
        let sha = if by_sha {
            let sha = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
            if !self.cache.contains_key(&sha) {
                return Err(Frame::error("NOSCRIPT No matching script. Please use EVAL."));
            }
            sha
        } else {
            self.compile(&args[1])?
        };
        let Some(script) = self.cache.get(&sha) else {
            return Err(Frame::error("NOSCRIPT No matching script. Please use EVAL."));
        };
        let globals = self.lua.globals();
        globals
            .raw_set("KEYS", self.strings(keys).map_err(internal)?)
            .map_err(internal)?;
        globals
            .raw_set("ARGV", self.strings(argv).map_err(internal)?)
            .map_err(internal)?;
        let mut ctx = Ctx {
            db,
            hub,
            script: Some(ScriptMode {
                read_only: script.read_only,
            }),
        };
        let (kind, value): (u8, LuaValue) = self
            .lua
            .scope(|scope| {
                let dispatch = scope.create_function_mut(|lua, args: Variadic<LuaValue>| {
                    call_from_script(lua, &mut ctx, args)
                })?;
                self.holder.raw_set("dispatch", dispatch)?;
                let outcome = self.runner.call(script.function.clone());
                self.holder.raw_set("dispatch", LuaValue::Nil)?;
                outcome
            })
            .map_err(internal)?;
        match (kind, value) {
            (0, value) => Ok(lua_to_frame(value, 0)),
            (1, LuaValue::String(message)) => Err(Frame::error(format!(
                "{} script: {sha}",
                String::from_utf8_lossy(&message.as_bytes())
            ))),
            (_, value) => Err(Frame::error(format!(
                "ERR {} script: {sha}",
                value.to_string().unwrap_or_default()
            ))),
        }
    }

    fn strings(&self, items: &[Bytes]) -> mlua::Result<Table> {
        let table = self.lua.create_table_with_capacity(items.len(), 0)?;
        for (i, item) in items.iter().enumerate() {
            table.raw_set(i + 1, self.lua.create_string(item)?)?;
        }
        Ok(table)
    }
}

/// The script's code without its `#!lua flags=...` line (an empty line stays in its
/// place, so line numbers in errors hold), and whether it is declared read-only.
fn strip_shebang(body: &[u8]) -> Result<(Vec<u8>, bool), Frame> {
    if !body.starts_with(b"#!") {
        return Ok((body.to_vec(), false));
    }
    let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let line = String::from_utf8_lossy(&body[2..end]).into_owned();
    let mut words = line.split_whitespace();
    let engine = words.next().unwrap_or("");
    if engine != "lua" {
        return Err(Frame::error(format!("ERR Could not find engine '{engine}'")));
    }
    let mut read_only = false;
    for word in words {
        let Some(flags) = word.strip_prefix("flags=") else {
            return Err(Frame::error(format!("ERR Unknown lua shebang option: {word}")));
        };
        for flag in flags.split(',').filter(|f| !f.is_empty()) {
            match flag {
                "no-writes" => read_only = true,
                "allow-oom" | "allow-stale" | "no-cluster" | "allow-cross-slot-keys" => {}
                other => {
                    return Err(Frame::error(format!(
                        "ERR Unexpected flag in script shebang: {other}"
                    )));
                }
            }
        }
    }
    Ok((body[end..].to_vec(), read_only))
}

fn first_line(e: &mlua::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

pub(crate) fn sha1_hex(bytes: &[u8]) -> String {
    sha1_smol::Sha1::from(bytes).digest().to_string()
}

/// `redis.call`/`redis.pcall`: the command's reply as Lua sees it; an error reply is
/// the table `{err = ...}` (redis.call raises it).
fn call_from_script(lua: &Lua, ctx: &mut Ctx<'_>, args: Variadic<LuaValue>) -> mlua::Result<LuaValue> {
    if args.is_empty() {
        return error_table(
            lua,
            "ERR Please specify at least one argument for this redis lib call",
        );
    }
    let mut command = Vec::with_capacity(args.len());
    for arg in args.iter() {
        command.push(match arg {
            LuaValue::String(s) => Bytes::copy_from_slice(&s.as_bytes()),
            LuaValue::Integer(n) => Bytes::from(n.to_string()),
            LuaValue::Number(n) => Bytes::from(format_number(*n)),
            _ => {
                return error_table(
                    lua,
                    "ERR Lua redis lib command arguments must be strings or integers",
                );
            }
        });
    }
    frame_to_lua(lua, commands::run(ctx, &command))
}

fn error_table(lua: &Lua, message: &str) -> mlua::Result<LuaValue> {
    let t = lua.create_table()?;
    t.raw_set("err", message)?;
    Ok(LuaValue::Table(t))
}

/// A Lua number as a command argument: integers without a fraction.
fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e17 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn frame_to_lua(lua: &Lua, frame: Frame) -> mlua::Result<LuaValue> {
    Ok(match frame {
        Frame::Integer(n) => LuaValue::Integer(n),
        Frame::Bulk(b) => LuaValue::String(lua.create_string(&b)?),
        Frame::Null | Frame::NullArray => LuaValue::Boolean(false),
        Frame::Simple(s) => {
            let t = lua.create_table()?;
            t.raw_set("ok", s)?;
            LuaValue::Table(t)
        }
        Frame::Error(e) => error_table(lua, &e)?,
        Frame::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                t.raw_set(i + 1, frame_to_lua(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
    })
}

fn lua_to_frame(value: LuaValue, depth: usize) -> Frame {
    match value {
        LuaValue::Nil | LuaValue::Boolean(false) => Frame::Null,
        LuaValue::Boolean(true) => Frame::Integer(1),
        LuaValue::Integer(n) => Frame::Integer(n),
        // Redis truncates: 3.99 is 3.
        LuaValue::Number(n) => Frame::Integer(n as i64),
        LuaValue::String(s) => Frame::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        LuaValue::Table(t) => {
            if let Ok(LuaValue::String(e)) = t.raw_get::<LuaValue>("err") {
                let message = String::from_utf8_lossy(&e.as_bytes()).into_owned();
                let message = message.strip_prefix('-').unwrap_or(&message).to_owned();
                return Frame::Error(if message.is_empty() {
                    "ERR".to_owned()
                } else {
                    message
                });
            }
            if let Ok(LuaValue::String(s)) = t.raw_get::<LuaValue>("ok") {
                return Frame::Simple(String::from_utf8_lossy(&s.as_bytes()).into_owned());
            }
            if depth >= MAX_REPLY_DEPTH {
                return Frame::error("ERR reached lua stack limit");
            }
            let mut items = Vec::new();
            for i in 1.. {
                match t.raw_get::<LuaValue>(i) {
                    Ok(LuaValue::Nil) | Err(_) => break,
                    Ok(item) => items.push(lua_to_frame(item, depth + 1)),
                }
            }
            Frame::Array(items)
        }
        _ => Frame::Null,
    }
}
