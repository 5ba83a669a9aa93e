//! Endpoints this forwarder heard from lately, which cannot have been deleted since.
//!
//! The dispatcher checks in Redis that a submission's endpoint still exists before it
//! publishes to the endpoint's queue (`DELETE /v1/endpoints/{id}` may have come while
//! the submission travelled; its tasks then fail instead of waiting for nothing). That
//! check is a Redis round trip on every task's way out. It is not needed for an endpoint
//! whose heartbeat this forwarder recorded within one heartbeat interval: the web-service
//! refuses to delete an endpoint that is online, and an endpoint stays online for three
//! intervals after its last heartbeat (the sweeper declares it lost even later). The
//! window is counted from the heartbeat's own time (`at`, as this machine's clock reads
//! it), so a heartbeat that waited in the broker buys that much less, and two intervals
//! are left for the clocks of the endpoint, the forwarder and the web-service to differ.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_proto::EndpointId;
use ferry_proto::time::{Micros, now_micros};

/// Endpoints remembered at most; past this, the ones whose window has passed go.
const MOST: usize = 100_000;

/// Shared by the status consumer (which hears heartbeats) and the dispatcher.
#[derive(Clone, Default)]
pub struct Alive {
    until: Arc<Mutex<HashMap<EndpointId, Instant>>>,
}

impl Alive {
    /// A heartbeat of `endpoint`, sent at `at` (its clock) with `interval_ms` between
    /// heartbeats, was recorded: it cannot be deleted for one interval from `at`.
    pub fn heard(&self, endpoint: EndpointId, at: Micros, interval_ms: u64) {
        let age = Duration::from_micros(now_micros().saturating_sub(at));
        let Some(left) = Duration::from_millis(interval_ms).checked_sub(age) else {
            return;
        };
        let until = Instant::now() + left;
        let mut map = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MOST {
            let now = Instant::now();
            map.retain(|_, until| *until > now);
        }
        let entry = map.entry(endpoint).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Whether `endpoint` was heard from recently enough that it still exists.
    pub fn vouches_for(&self, endpoint: EndpointId) -> bool {
        let map = self.until.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&endpoint).is_some_and(|until| *until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_heartbeat_vouches_for_its_endpoint_for_an_interval() {
        let alive = Alive::default();
        let (heard, other) = (EndpointId::new(), EndpointId::new());
        alive.heard(heard, now_micros(), 60_000);
        assert!(alive.vouches_for(heard));
        assert!(!alive.vouches_for(other), "never heard from");
    }

    #[test]
    fn a_heartbeat_older_than_its_interval_vouches_for_nothing() {
        let alive = Alive::default();
        let endpoint = EndpointId::new();
        // Sent two seconds ago with a one-second interval (it waited in the broker).
        alive.heard(endpoint, now_micros() - 2_000_000, 1_000);
        assert!(!alive.vouches_for(endpoint));
    }

    #[test]
    fn the_window_ends() {
        let alive = Alive::default();
        let endpoint = EndpointId::new();
        alive.heard(endpoint, now_micros(), 30);
        assert!(alive.vouches_for(endpoint));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!alive.vouches_for(endpoint), "30 ms passed");
    }

    #[test]
    fn an_older_heartbeat_does_not_shorten_the_window() {
        let alive = Alive::default();
        let endpoint = EndpointId::new();
        alive.heard(endpoint, now_micros(), 60_000);
        alive.heard(endpoint, now_micros() - 59_990_000, 60_000);
        assert!(alive.vouches_for(endpoint));
    }
}
