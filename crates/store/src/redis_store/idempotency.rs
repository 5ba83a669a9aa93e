//! Idempotency keys: a client that sends a submission again with the same key (after a
//! timeout, a dropped connection, a 503) gets the first answer back instead of a second
//! session.

use ferry_proto::UserId;

use super::Store;
use crate::Result;

/// What a request's idempotency key says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is new: the request goes ahead (the key is held for it).
    Fresh,
    /// A request with this key is still being answered.
    InProgress,
    /// A request with this key was answered: this is its answer (JSON).
    Answered(String),
    /// The key was used for another request (another body or route).
    Reused,
}

/// `GET` the key; when absent, `SET` it pending (for ARGV[2] seconds).
const CLAIM: &str = "local v = redis.call('GET', KEYS[1]) \
    if v then return v end \
    redis.call('SET', KEYS[1], 'p:' .. ARGV[1], 'EX', ARGV[2]) return false";

impl Store {
    fn idempotency_key(&self, user: UserId, key: &str) -> String {
        format!("{}:idem:{user}:{key}", self.ns)
    }

    /// Claims `key` of `user` for a request whose body and route hash to `fingerprint`
    /// (hex, no colon). A fresh key is held as pending for `pending_secs` (a web-service
    /// that dies mid-request frees it then).
    pub async fn claim_key(
        &self,
        user: UserId,
        key: &str,
        fingerprint: &str,
        pending_secs: u64,
    ) -> Result<KeyClaim> {
        let seen: Option<String> = redis::Script::new(CLAIM)
            .key(self.idempotency_key(user, key))
            .arg(fingerprint)
            .arg(pending_secs.max(1))
            .invoke_async(&mut self.conn.clone())
            .await?;
        let Some(seen) = seen else {
            return Ok(KeyClaim::Fresh);
        };
        let (state, rest) = seen.split_at(seen.len().min(2));
        let (print, answer) = rest.split_once(':').unwrap_or((rest, ""));
        Ok(match state {
            _ if print != fingerprint => KeyClaim::Reused,
            "p:" => KeyClaim::InProgress,
            _ => KeyClaim::Answered(answer.to_owned()),
        })
    }

    /// Keeps the answer of a request made with `key`, for `keep_secs`.
    pub async fn answer_key(
        &self,
        user: UserId,
        key: &str,
        fingerprint: &str,
        answer: &str,
        keep_secs: u64,
    ) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.idempotency_key(user, key))
            .arg(format!("d:{fingerprint}:{answer}"))
            .arg("EX")
            .arg(keep_secs.max(1))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Frees `key` after its request failed (nothing of it stands): the client may send
    /// it again.
    pub async fn release_key(&self, user: UserId, key: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(self.idempotency_key(user, key))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}
