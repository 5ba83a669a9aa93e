//! The seam between [`crate::Broker`] and a message broker: what Ferry needs from one,
//! in AMQP's terms (queues, a default exchange that routes by queue name, direct
//! exchanges, confirms, consumers with prefetch and manual acks).
//!
//! Two transports implement it: RabbitMQ over lapin ([`crate::amqp`]) and the embedded
//! broker of `ferry dev` ([`crate::embedded`]). Queue names, routes and who may publish
//! where are decided above it, in [`crate::Broker`], the same for both.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use crate::Result;

/// How a queue is declared.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueueSpec {
    /// Where the broker itself dead-letters a message (RabbitMQ's
    /// `x-dead-letter-routing-key` on the default exchange).
    pub(crate) dead_letter_to: Option<String>,
    /// Delete the queue after it has had no consumer this long (`x-expires`).
    pub(crate) expires: Option<Duration>,
    /// Refuse (nack) a publish beyond a max length rather than drop the oldest message
    /// (`x-overflow: reject-publish`).
    pub(crate) reject_overflow: bool,
}

/// The properties of a message Ferry sets or reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Properties {
    /// Unix seconds.
    pub(crate) timestamp: Option<u64>,
    /// The publisher's user name, which the broker checks against the connection's.
    pub(crate) user_id: Option<String>,
    /// String-valued headers (`x-ferry-reason`, `x-ferry-queue`).
    pub(crate) headers: Vec<(String, String)>,
}

/// A publish's confirm, still to come: `true` when the broker took the message, `false`
/// when it refused it (a nack).
pub(crate) type PendingConfirm = BoxFuture<'static, Result<bool>>;

/// The deliveries of one consumer; it ends when the consumer is cancelled or the
/// connection closes. Dropping it cancels the consumer.
pub(crate) type Deliveries = BoxStream<'static, Result<RawDelivery>>;

/// One delivered message, as a transport hands it over.
pub(crate) struct RawDelivery {
    pub(crate) body: Bytes,
    pub(crate) redelivered: bool,
    /// The key it was published with (the queue's name on the default exchange).
    pub(crate) routing_key: String,
    pub(crate) properties: Properties,
    pub(crate) acker: Box<dyn Acker>,
}

/// Settles one delivery.
#[async_trait::async_trait]
pub(crate) trait Acker: Send + Sync {
    /// The broker may forget the message.
    async fn ack(&self) -> Result<()>;
    /// The message goes back to the head of its queue, marked redelivered.
    async fn requeue(&self) -> Result<()>;
}

/// One connection to a broker.
#[async_trait::async_trait]
pub(crate) trait Transport: Send + Sync {
    /// Declares a queue; declaring an existing one again is not an error.
    async fn declare_queue(&self, name: &str, spec: &QueueSpec) -> Result<()>;

    /// Declares a direct exchange and binds it: each `(queue, key)` routes messages
    /// published with `key` to `queue` (which must exist).
    async fn declare_exchange(&self, exchange: &str, routes: &[(String, &str)]) -> Result<()>;

    /// Deletes an exchange; a missing one is not an error.
    async fn delete_exchange(&self, exchange: &str) -> Result<()>;

    /// Sends one persistent message to `exchange` with `key` (the empty exchange routes
    /// to the queue named `key`). Returns once it is sent; the confirm comes later.
    async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        properties: Properties,
    ) -> Result<PendingConfirm>;

    /// Starts consuming `queue` with at most `prefetch` unacked messages at a time.
    async fn consume(&self, queue: &str, prefetch: u16, tag: &str) -> Result<Deliveries>;

    /// How many messages wait in `queue` (unacked ones not counted); an error for a
    /// missing queue.
    async fn queue_len(&self, queue: &str) -> Result<u32>;

    /// Deletes a queue and its messages; a missing one is not an error.
    async fn delete_queue(&self, queue: &str) -> Result<()>;

    /// Whether the broker blocks this connection's publishes now (an alarm).
    fn blocked(&self) -> bool;

    /// Whether the broker takes a publish now, answering within `within`.
    async fn takes_publishes(&self, within: Duration) -> Result<bool>;

    /// Resolves, with what happened, once the connection has failed or closed.
    async fn lost(&self) -> String;

    /// Closes the connection (unacked messages go back to their queues), waiting a
    /// little for the broker to agree.
    async fn close(&self);
}
