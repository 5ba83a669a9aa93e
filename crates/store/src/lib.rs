//! Ferry's records in Redis.
//!
//! - [`records`]: the typed records (users, functions, endpoints, batches, tasks) and the
//!   [`records::Report`] that carries one state-machine event into the store.
//! - [`redis_store`]: the [`Store`] over a Redis connection manager: one pipelined round
//!   trip per batch of records, and the atomic transition script `scripts/apply.lua`,
//!   the mirror of `ferry_proto::state::transition`.
//! - [`embedded`]: a Redis-compatible server inside the process (RESP2 over TCP, Lua
//!   5.1 for the scripts), so `ferry dev` runs the same store code with no Redis.
//!
//! Every key starts with the store's namespace, so tests (and several Ferry deployments)
//! share one Redis without meeting. The transition script also updates the task's
//! batch counters and its endpoint's in-flight set in the same atomic step, so Ferry
//! needs one Redis (not a cluster spread across slots).

pub mod embedded;
pub mod records;
mod redis_store;

pub use records::*;
pub use redis_store::{
    ByReference, CredentialInfo, EndedHere, EventReader, EventWaker, FinishedTasks, ForwarderSeen, KeyClaim,
    LostClaim, Principal, RESULT_GROUP_BYTES, Store, UserInfo,
};

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("corrupt {what} record {id}: {detail}")]
    Corrupt {
        what: &'static str,
        id: String,
        detail: String,
    },
    /// A read would carry more result bytes than the store's response budget.
    #[error("the results asked for are {bytes} bytes together; one answer carries at most {limit}")]
    TooLarge { bytes: u64, limit: u64 },
    /// Redis is set to evict keys: it would drop tokens, sessions and task records
    /// silently when full. The services refuse to start on it.
    #[error(
        "Redis's maxmemory-policy is {policy:?}: it evicts keys when memory is full, and Ferry's \
         records (tokens, sessions, tasks) would vanish without a word. Set \
         `maxmemory-policy noeviction` (redis.conf, or `CONFIG SET maxmemory-policy noeviction`): \
         a full Redis then refuses writes, which Ferry answers with 503s and retries"
    )]
    Evicting { policy: String },
}

pub type Result<T> = std::result::Result<T, Error>;
