//! Per-user limits: how fast a user may call the API, how many WebSockets they may hold
//! open, and (checked at submission, see [`crate::submit`]) how many unfinished tasks a
//! user and an endpoint may have. A refusal is a 429 with `Retry-After` whose message
//! names the limit and the setting that raises it.
//!
//! The request rate and the sockets are counted per web-service process: with N
//! replicas behind a balancer a user gets up to N times the rate. Unfinished tasks are
//! counted in Redis, so that limit holds across replicas.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use ferry_proto::UserId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// The limits of one web-service process.
pub struct Limits {
    rate: Option<(DefaultKeyedRateLimiter<UserId>, u32)>,
    max_sockets: usize,
    sockets: Arc<Mutex<HashMap<UserId, usize>>>,
}

impl Limits {
    /// `rate` requests per second per user with bursts of `burst` (0: no limit); at most
    /// `max_sockets` WebSockets per user (0: no limit).
    pub fn new(rate: u32, burst: u32, max_sockets: usize) -> Self {
        let rate = NonZeroU32::new(rate).map(|per_second| {
            let burst = NonZeroU32::new(burst.max(per_second.get())).unwrap_or(per_second);
            (
                RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
                per_second.get(),
            )
        });
        Self {
            rate,
            max_sockets,
            sockets: Arc::default(),
        }
    }

    /// Counts one request of `user`; a 429 naming the rate when they are over it.
    pub fn request(&self, user: UserId) -> Result<(), ApiError> {
        let Some((limiter, per_second)) = &self.rate else {
            return Ok(());
        };
        match limiter.check_key(&user) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                if limiter.len() > 100_000 {
                    limiter.retain_recent();
                }
                Err(ApiError::too_many_requests(
                    format!(
                        "user {user} is over the request rate of {per_second} per second \
                         (FERRY_RATE_LIMIT, bursts of FERRY_RATE_BURST); retry after {} ms",
                        wait.as_millis().max(1)
                    ),
                    wait.as_secs().max(1),
                ))
            }
        }
    }

    /// Takes one of `user`'s WebSocket slots for as long as the returned guard lives; a
    /// 429 naming the limit when all are taken.
    pub fn socket(&self, user: UserId) -> Result<SocketSlot, ApiError> {
        let mut open = self.sockets.lock().expect("socket counts");
        let n = open.entry(user).or_default();
        if self.max_sockets > 0 && *n >= self.max_sockets {
            return Err(ApiError::too_many_requests(
                format!(
                    "user {user} has {n} WebSockets open, the most allowed \
                     (FERRY_MAX_WEBSOCKETS_PER_USER); close one first",
                ),
                5,
            ));
        }
        *n += 1;
        Ok(SocketSlot {
            user,
            sockets: self.sockets.clone(),
        })
    }

    /// How many WebSockets `user` holds open here.
    pub fn sockets_of(&self, user: UserId) -> usize {
        self.sockets
            .lock()
            .expect("socket counts")
            .get(&user)
            .copied()
            .unwrap_or(0)
    }
}

/// One open WebSocket of a user; gives its slot back when dropped.
pub struct SocketSlot {
    user: UserId,
    sockets: Arc<Mutex<HashMap<UserId, usize>>>,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.sockets.lock().expect("socket counts");
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_past_the_rate_is_refused_naming_the_limit() {
        let limits = Limits::new(5, 5, 0);
        let user = UserId::new();
        for _ in 0..5 {
            limits.request(user).unwrap();
        }
        let refused = limits.request(user).unwrap_err();
        assert!(
            refused.message.contains("FERRY_RATE_LIMIT"),
            "{}",
            refused.message
        );
        assert!(refused.retry_after.unwrap() >= 1);
        // Another user is not held back by the first.
        limits.request(UserId::new()).unwrap();
    }

    #[test]
    fn no_rate_means_no_limit() {
        let limits = Limits::new(0, 0, 0);
        let user = UserId::new();
        for _ in 0..10_000 {
            limits.request(user).unwrap();
        }
    }

    #[test]
    fn a_socket_slot_is_given_back_when_dropped() {
        let limits = Limits::new(0, 0, 2);
        let user = UserId::new();
        let a = limits.socket(user).unwrap();
        let _b = limits.socket(user).unwrap();
        let refused = limits.socket(user).err().unwrap();
        assert!(refused.message.contains("FERRY_MAX_WEBSOCKETS_PER_USER"));
        drop(a);
        let _c = limits.socket(user).unwrap();
        assert_eq!(limits.sockets_of(user), 2);
    }
}
