//! Webhooks: a session with a `callback_url` gets its steps POSTed there, in order, as
//! they happen, signed, and retried with backoff until the receiver takes them.
//!
//! Each delivery is `POST <url>` with a JSON body
//! `{"session_id", "events": [{"task_id", "state", "attempt", "at", "by", "reason"?}],
//! "cursor"}` and the headers `X-Ferry-Session`, `X-Ferry-Delivery` (the cursor of its
//! last event) and `X-Ferry-Signature: sha256=<hex HMAC-SHA256 of the body, keyed with
//! the session's callback secret>`. A 2xx answer moves the session's cursor past those
//! events; anything else is retried after 0.5 s, 1 s, 2 s ... (at most 5 min), up to
//! [`MAX_FAILURES`] times in a row. The events come from the session's event stream, so
//! a forwarder that dies mid-delivery leaves nothing lost: the next one starts from the
//! stored cursor (a receiver may see a delivery twice, never out of order).
//!
//! Sessions are delivered to concurrently (up to [`CONCURRENT`] at once): a receiver
//! that never answers holds up its own session's deliveries (each waits up to 10 s),
//! no other. Where a webhook may go is [`crate::webhook_guard`]'s to say: internal
//! addresses are refused, redirects not followed.

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::time::{Micros, now_micros};
use ferry_store::{BatchEvent, Hook, Store};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::webhook_guard::{Cidr, GuardedResolver, check_url};

/// Events per delivery.
const PER_DELIVERY: usize = 500;
/// Failed deliveries in a row before the webhook is given up.
pub const MAX_FAILURES: u64 = 15;
/// How long a claimed hook is this forwarder's before another may take it.
const LEASE: Micros = 60_000_000;
/// How soon a session with nothing new is looked at again.
const IDLE: Micros = 300_000;
/// Deliveries in flight at once, each to its own session.
pub const CONCURRENT: usize = 64;

#[derive(Clone)]
pub struct Notifier {
    store: Store,
    http: reqwest::Client,
    period: Duration,
    allow: Arc<Vec<Cidr>>,
}

impl Notifier {
    /// A notifier whose webhooks may reach the networks in `allow` besides public
    /// addresses, trusting the CAs in `ca_pem` besides the system's.
    pub fn new(
        store: Store,
        period: Duration,
        allow: Vec<Cidr>,
        ca_pem: Option<&str>,
    ) -> anyhow::Result<Self> {
        let allow = Arc::new(allow);
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { allow: allow.clone() }));
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            store,
            http: builder.build()?,
            period,
            allow,
        })
    }

    /// Delivers due webhooks every period until an error (the caller reconnects).
    pub async fn run(self) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut deliveries = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(done) = deliveries.join_next() => {
                    done??;
                    continue;
                }
            }
            let room = CONCURRENT.saturating_sub(deliveries.len());
            if room == 0 {
                continue;
            }
            // A claimed hook is this forwarder's for the lease: it is not claimed again
            // while its delivery runs.
            let hooks = self.store.claim_due_hooks(now_micros(), LEASE, room).await?;
            for hook in hooks {
                let this = self.clone();
                deliveries.spawn(async move { this.deliver(hook).await });
            }
        }
    }

    async fn deliver(&self, hook: Hook) -> anyhow::Result<()> {
        let events = self
            .store
            .batch_events_after(hook.batch_id, &hook.cursor, PER_DELIVERY)
            .await?;
        let Some(last) = events.last().map(|e| e.cursor.clone()) else {
            // Nothing new. A finished batch whose stream is all delivered is done.
            let next = (!hook.batch_done).then(|| now_micros() + IDLE);
            if next.is_none() {
                tracing::info!(batch = %hook.batch_id, "webhook: every event delivered");
                return Ok(self
                    .store
                    .hook_delivered(hook.batch_id, &hook.cursor, 0, None)
                    .await?);
            }
            return Ok(self
                .store
                .hook_idle(hook.batch_id, next.unwrap_or_default())
                .await?);
        };
        let url = match check_url(&hook.url, &self.allow) {
            Ok(url) => url,
            Err(why) => {
                // Nothing will change this URL's answer: given up at once.
                tracing::warn!(batch = %hook.batch_id, url = %hook.url, "{why}");
                self.store.hook_failed(hook.batch_id, &why, None).await?;
                return Ok(());
            }
        };
        let body = body(&hook, &events, &last);
        let signature = sign(&hook.secret, body.as_bytes());
        let sent = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-Ferry-Session", hook.batch_id.to_string())
            .header("X-Ferry-Delivery", &last)
            .header("X-Ferry-Signature", format!("sha256={signature}"))
            .body(body)
            .send()
            .await;
        let error = match sent {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(batch = %hook.batch_id, events = events.len(), "webhook delivered");
                // More may be waiting: look again at once.
                self.store
                    .hook_delivered(hook.batch_id, &last, events.len() as u64, Some(now_micros()))
                    .await?;
                return Ok(());
            }
            Ok(r) if r.status().is_redirection() => {
                format!(
                    "{} answered {} (redirects are not followed)",
                    hook.url,
                    r.status()
                )
            }
            Ok(r) => format!("{} answered {}", hook.url, r.status()),
            Err(e) => format!("cannot deliver to {}: {}", hook.url, error_chain(&e)),
        };
        let failures = hook.failures + 1;
        let next = (failures < MAX_FAILURES).then(|| now_micros() + backoff(failures));
        tracing::warn!(batch = %hook.batch_id, failures, error, gave_up = next.is_none(), "webhook delivery failed");
        self.store.hook_failed(hook.batch_id, &error, next).await?;
        Ok(())
    }
}

/// An error with its causes (a refused address is a cause of reqwest's error).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// 0.5 s after the first failure, doubling, at most 5 min.
fn backoff(failures: u64) -> Micros {
    let ms = 500u64.saturating_mul(1 << failures.saturating_sub(1).min(20));
    ms.min(300_000) * 1000
}

fn body(hook: &Hook, events: &[BatchEvent], cursor: &str) -> String {
    let events: Vec<_> = events.iter().map(BatchEvent::step_json).collect();
    json!({"session_id": hook.batch_id, "events": events, "cursor": cursor}).to_string()
}

/// Hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), 500_000);
        assert_eq!(backoff(2), 1_000_000);
        assert_eq!(backoff(3), 2_000_000);
        assert_eq!(backoff(40), 300_000_000);
    }

    #[test]
    fn signatures_match_the_rfc_4231_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
