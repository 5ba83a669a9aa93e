//! The embedded broker: a small message broker in memory for `ferry dev`, so Ferry's
//! processes (web-service, forwarder, endpoint) talk to each other with no RabbitMQ
//! installed. One process runs a [`Server`]; every process connects to it with a
//! `ferry-mq://[user[:password]@]host:port` URL passed to [`crate::Broker::connect`].
//!
//! - `protocol`: the frames (length-prefixed, in [`ferry_proto::codec`]);
//! - `queues`: the state and its rules, plain synchronous code;
//! - `server`: [`Server`], the accept loop and one task per connection;
//! - `client`: the transport [`crate::Broker`] uses over a connection.
//!
//! What it does as RabbitMQ does: named queues (declaring is idempotent), the default
//! exchange and direct exchanges (an endpoint's routes), publisher confirms (a publish
//! is confirmed once the message is in its queue; a message nothing routes is dropped
//! and confirmed, as RabbitMQ does), the `timestamp` property, `user_id` checked against
//! the connection's user (a publish claiming another is refused), consumers with a
//! prefetch and round-robin between the consumers of a queue, manual acks, requeue to
//! the head of the queue marked redelivered, and every unacked message of a connection
//! that closes or dies back in its queue, marked redelivered. `x-expires` deletes a
//! queue after that long without a consumer (checked once a second). With
//! [`ServerOptions::password`] every connection must present it; users are not
//! otherwise told apart.
//!
//! What it does not do:
//! - keep anything: messages live in memory and are lost when the server stops;
//! - per-user permissions (RabbitMQ's broker identities, `FERRY_AMQP_ADMIN_URL`): every
//!   connection may read and write every queue; an endpoint [`crate::Broker`] still
//!   publishes only to its own routes ([`crate::Error::NotAllowed`]);
//! - max lengths, policies and `x-overflow` (nothing is ever refused, so no nacks),
//!   dead-lettering by the broker itself (`x-dead-letter-*`; Ferry dead-letters
//!   explicitly, which works), and queue arguments that differ on a second declaration
//!   (the first declaration's stand, no `PRECONDITION_FAILED`);
//! - memory or disk alarms (never blocked), TLS, vhosts, percent-encoding in URLs;
//! - a consumer's tag (ignored) or more than one channel's worth of ordering: a
//!   connection's frames are handled in order.

mod client;
mod protocol;
mod queues;
mod server;

pub(crate) use client::Client;
pub use server::{InProcess, Server, ServerOptions};

/// A byte stream a connection runs over (a TCP socket).
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// The URL scheme of the embedded broker.
pub const SCHEME: &str = "ferry-mq";
