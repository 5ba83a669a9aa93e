//! An embedded Redis-compatible server, for `ferry dev`: Ferry with no Redis installed.
//!
//! It runs in-process, speaks RESP2 over TCP on 127.0.0.1, keeps the keyspace in
//! memory, and runs Lua scripts in an embedded Lua 5.1, so the very same [`crate::Store`]
//! code and the very same scripts run on it as on Redis: nothing is written twice;
//! only Redis's commands are. The store's test suite runs against both
//! (`FERRY_TEST_REDIS=embedded`).
//!
//! In the style of tokio's mini-redis, one concern per module:
//! - `frame`: RESP2 without I/O (requests parsed in two steps, replies encoded);
//! - `connection`: a client's socket, its buffers and batched writes;
//! - `db`, `zset`, `stream`: the keyspace, its value types, expiry (lazy on access
//!   plus a periodic sweep);
//! - `commands`: the commands Ferry sends, a file per value type;
//! - `scripting`: EVAL, EVALSHA and SCRIPT with Redis's `redis` library;
//! - `pubsub`: channels and patterns;
//! - `session`: AUTH, MULTI/EXEC, subscriptions and blocking XREAD per client;
//! - `snapshot`: the keyspace written at shutdown and read at start;
//! - `server`: the listener, the sweeper and shutdown.
//!
//! One lock guards the keyspace and is held for a whole command, a whole EXEC and a
//! whole script, so transactions and scripts are atomic as in Redis.

mod commands;
mod connection;
mod db;
mod frame;
mod pubsub;
mod scripting;
mod server;
mod session;
mod snapshot;
mod stream;
mod zset;

pub use server::{Options, Server};
