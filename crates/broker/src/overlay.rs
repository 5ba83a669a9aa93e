//! Queues kept in this process while every other queue stays on the broker: what
//! `ferry-server` (the web-service and the forwarder in one process) does with its
//! submissions queue, so a submission reaches the dispatcher in memory instead of
//! through RabbitMQ (see [`crate::keep_in_process`]).
//!
//! The named queues live in an embedded broker in this process
//! ([`crate::embedded::InProcess`]), whose queues each client works on directly (no
//! frame encoded), with the embedded broker's rules (acks, prefetch, a closed connection's unacked messages redelivered);
//! everything else (exchanges, other queues, alarms) goes to the real broker.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::Result;
use crate::embedded::Client;
use crate::transport::{Deliveries, PendingConfirm, Properties, QueueSpec, Transport};

/// A connection to the broker with some queues kept in this process.
pub(crate) struct Overlay {
    local: Client,
    remote: Arc<dyn Transport>,
    /// The queues kept in this process (full names, `<ns>.submissions`).
    names: Arc<HashSet<String>>,
}

impl Overlay {
    pub(crate) fn new(local: Client, remote: Arc<dyn Transport>, names: Arc<HashSet<String>>) -> Self {
        Self { local, remote, names }
    }

    /// Where `queue` lives.
    fn home(&self, queue: &str) -> &dyn Transport {
        if self.names.contains(queue) {
            &self.local
        } else {
            &*self.remote
        }
    }
}

#[async_trait::async_trait]
impl Transport for Overlay {
    async fn declare_queue(&self, name: &str, spec: &QueueSpec) -> Result<()> {
        self.home(name).declare_queue(name, spec).await
    }

    async fn declare_exchange(&self, exchange: &str, routes: &[(String, &str)]) -> Result<()> {
        self.remote.declare_exchange(exchange, routes).await
    }

    async fn delete_exchange(&self, exchange: &str) -> Result<()> {
        self.remote.delete_exchange(exchange).await
    }

    async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        properties: Properties,
    ) -> Result<PendingConfirm> {
        // Only the default exchange routes to a queue by its name.
        let home = if exchange.is_empty() {
            self.home(key)
        } else {
            &*self.remote
        };
        home.publish(exchange, key, body, properties).await
    }

    async fn consume(&self, queue: &str, prefetch: u16, tag: &str) -> Result<Deliveries> {
        self.home(queue).consume(queue, prefetch, tag).await
    }

    async fn queue_len(&self, queue: &str) -> Result<u32> {
        self.home(queue).queue_len(queue).await
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.home(queue).delete_queue(queue).await
    }

    fn blocked(&self) -> bool {
        self.remote.blocked()
    }

    async fn takes_publishes(&self, within: Duration) -> Result<bool> {
        self.remote.takes_publishes(within).await
    }

    async fn lost(&self) -> String {
        tokio::select! {
            why = self.local.lost() => format!("the in-process queues: {why}"),
            why = self.remote.lost() => why,
        }
    }

    async fn close(&self) {
        // The in-process connection's unacked messages go back to their queues, as the
        // broker's do.
        tokio::join!(self.local.close(), self.remote.close());
    }
}
