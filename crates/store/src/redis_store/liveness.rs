//! Whether a forwarder is alive: every sweep (a second by default) each forwarder
//! writes when it swept and how often it sweeps into `<ns>:forwarder`; the web-service
//! reads it to say why a task waits and for `GET /v1/health`.

use ferry_proto::time::Micros;
use redis::AsyncCommands;

use super::Store;
use crate::Result;

/// When a forwarder last swept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwarderSeen {
    pub at: Micros,
    /// How often it sweeps.
    pub every_ms: u64,
}

/// Sweeps a forwarder may miss before it is taken for gone, and the least time that is.
const MISSED_SWEEPS: u64 = 5;
const AT_LEAST_MS: u64 = 5_000;

impl ForwarderSeen {
    /// True while the last sweep is recent: within five of its periods (5 s at least).
    pub fn alive(&self, now: Micros) -> bool {
        let window_ms = (self.every_ms * MISSED_SWEEPS).max(AT_LEAST_MS);
        now.saturating_sub(self.at) / 1000 < window_ms
    }
}

impl Store {
    fn forwarder_key(&self) -> String {
        format!("{}:forwarder", self.ns)
    }

    /// Notes that a forwarder swept at `now` and sweeps every `every_ms`.
    pub async fn mark_forwarder_alive(&self, now: Micros, every_ms: u64) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .hset_multiple(
                self.forwarder_key(),
                &[("at", now.to_string()), ("every_ms", every_ms.to_string())],
            )
            .await?;
        Ok(())
    }

    /// When a forwarder last swept; `None` when none ever did (in this namespace).
    pub async fn forwarder_seen(&self) -> Result<Option<ForwarderSeen>> {
        let mut conn = self.conn.clone();
        let (at, every): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.forwarder_key())
            .arg("at")
            .arg("every_ms")
            .query_async(&mut conn)
            .await?;
        Ok(at.map(|at| ForwarderSeen {
            at,
            every_ms: every.unwrap_or(1000),
        }))
    }

    /// One round trip to Redis (for health checks).
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ForwarderSeen;

    #[test]
    fn a_forwarder_is_alive_for_five_sweeps_and_at_least_five_seconds() {
        let at = 100_000_000;
        let fast = ForwarderSeen { at, every_ms: 100 };
        assert!(fast.alive(at + 4_999_000), "5 s at least, however fast it sweeps");
        assert!(!fast.alive(at + 5_000_000));
        let slow = ForwarderSeen { at, every_ms: 3_000 };
        assert!(slow.alive(at + 14_999_000), "five sweeps of 3 s");
        assert!(!slow.alive(at + 15_000_000));
        assert!(
            slow.alive(at - 1_000_000),
            "a clock a little behind is not a death"
        );
    }
}
