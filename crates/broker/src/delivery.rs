//! What consuming hands out: a [`Consumer`] of one queue, each [`Delivery`] to settle
//! (ack, requeue or dead-letter), and a publish's [`Confirm`].

use futures_util::{FutureExt, StreamExt};

use crate::transport::{Deliveries, PendingConfirm, Properties, RawDelivery};
use crate::{Broker, Error, Result};

/// The most of a reason `x-ferry-reason` carries, in characters.
const REASON_CHARS: usize = 1000;

/// Messages arriving from one queue. Dropping it cancels the consumer; the messages it
/// delivered stay unacked until settled or the connection closes.
pub struct Consumer {
    deliveries: Deliveries,
    broker: Broker,
}

impl Consumer {
    pub(crate) fn new(deliveries: Deliveries, broker: Broker) -> Self {
        Self { deliveries, broker }
    }

    /// The next message; `None` when the consumer was cancelled or the connection closed.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        let item = self.deliveries.next().await?;
        Some(self.wrap(item))
    }

    /// The next message if one has already arrived, without waiting: lets a caller
    /// take every message waiting in the prefetch window and handle them together.
    pub fn ready(&mut self) -> Option<Result<Delivery>> {
        let item = self.deliveries.next().now_or_never()??;
        Some(self.wrap(item))
    }

    /// Up to `most` messages and about `bytes` of bodies: the next one (waiting for it),
    /// then whichever have already arrived. Empty when the consumer ended.
    pub async fn next_batch(&mut self, most: usize, bytes: usize) -> Result<Vec<Delivery>> {
        let Some(first) = self.next().await else {
            return Ok(Vec::new());
        };
        let first = first?;
        let mut size = first.body().len();
        let mut batch = vec![first];
        while batch.len() < most
            && size < bytes
            && let Some(more) = self.ready()
        {
            let more = more?;
            size += more.body().len();
            batch.push(more);
        }
        Ok(batch)
    }

    fn wrap(&self, item: Result<RawDelivery>) -> Result<Delivery> {
        item.map(|inner| Delivery {
            inner,
            broker: self.broker.clone(),
        })
    }
}

/// One message, to be acked once its work is safely done.
pub struct Delivery {
    inner: RawDelivery,
    broker: Broker,
}

impl Delivery {
    pub fn body(&self) -> &[u8] {
        &self.inner.body
    }

    /// True when the broker delivered it before and it was not acked.
    pub fn redelivered(&self) -> bool {
        self.inner.redelivered
    }

    /// The publisher's user name, when it stamped one (the broker checks it is the user
    /// the publisher logged in as).
    pub fn user_id(&self) -> Option<&str> {
        self.inner.properties.user_id.as_deref()
    }

    /// The `timestamp` property (Unix seconds), when the publisher set one
    /// ([`Broker::publish_stamped`]).
    pub fn timestamp(&self) -> Option<u64> {
        self.inner.properties.timestamp
    }

    /// A string header: `x-ferry-reason` and `x-ferry-queue` on a dead letter.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner
            .properties
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }

    /// The work is done: the broker may forget the message.
    pub async fn ack(&self) -> Result<()> {
        self.inner.acker.ack().await
    }

    /// Give the message back for another delivery (at the head of its queue, marked
    /// redelivered).
    pub async fn requeue(&self) -> Result<()> {
        self.inner.acker.requeue().await
    }

    /// Moves an undecodable message to the dead-letter queue with `reason` in its
    /// `x-ferry-reason` header (and the key it came with in `x-ferry-queue`), then acks
    /// it. Nothing is lost and nothing loops.
    pub async fn dead_letter(&self, reason: &str) -> Result<()> {
        let properties = Properties {
            headers: vec![
                (
                    "x-ferry-reason".to_owned(),
                    reason.chars().take(REASON_CHARS).collect(),
                ),
                ("x-ferry-queue".to_owned(), self.inner.routing_key.clone()),
            ],
            ..Properties::default()
        };
        let dead = self.broker.dead_queue();
        let confirm = self.broker.send(&dead, &self.inner.body, properties).await?;
        if !confirm.await? {
            return Err(Error::Nacked { queue: dead });
        }
        self.ack().await
    }
}

/// A published message's confirm, still to come.
pub struct Confirm {
    inner: PendingConfirm,
    queue: String,
}

impl Confirm {
    pub(crate) fn new(inner: PendingConfirm, queue: String) -> Self {
        Self { inner, queue }
    }

    /// Waits until the broker has the message (an error when it refused it).
    pub async fn wait(self) -> Result<()> {
        if self.inner.await? {
            Ok(())
        } else {
            Err(Error::Nacked { queue: self.queue })
        }
    }
}
