//! The embedded broker's wire protocol: frames of a 4-byte big-endian length followed
//! by one message in Ferry's codec ([`ferry_proto::codec`]), at most
//! [`MAX_FRAME_BYTES`].
//!
//! A client opens with [`ClientFrame::Hello`]; the server answers
//! [`ServerFrame::Welcome`] or [`ServerFrame::Fatal`] and closes. After that, each
//! [`ClientFrame::Request`] gets one [`ServerFrame::Reply`] with the same id (id 0 asks
//! for none), and deliveries come as [`ServerFrame::Deliver`] whenever the client's
//! consumers have room. A frame the server cannot read gets a `Fatal` naming why, and
//! the connection is closed.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

/// The largest frame either side accepts: the largest message Ferry encodes, and room
/// for the envelope.
pub(crate) const MAX_FRAME_BYTES: usize = ferry_proto::codec::MAX_MESSAGE_BYTES + 64 * 1024;

/// The frame codec both sides use.
pub(crate) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// Encodes a frame's message.
pub(crate) fn encode<T: Serialize>(frame: &T) -> Result<Bytes, String> {
    ferry_proto::codec::encode(frame)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// Decodes a frame's message.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    ferry_proto::codec::decode(bytes).map_err(|e| e.to_string())
}

/// What a client sends.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ClientFrame {
    /// The first frame: who connects, and the server's password when it has one.
    Hello { user: String, password: Option<String> },
    /// An operation; `id` 0 asks for no reply.
    Request { id: u64, op: Op },
    /// The client is done: its unacked messages go back to their queues.
    Close,
}

/// An operation on the broker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    /// Idempotent: an existing queue is left as it is.
    DeclareQueue {
        name: String,
        expires_ms: Option<u64>,
    },
    /// A direct exchange; each route is `(key, queue)`, the queue must exist.
    DeclareExchange {
        name: String,
        routes: Vec<(String, String)>,
    },
    DeleteExchange {
        name: String,
    },
    /// Answered once the message is in its queue (or dropped, when nothing routes it).
    Publish {
        exchange: String,
        key: String,
        message: Message,
    },
    /// `consumer` is chosen by the client, unique within its connection.
    Consume {
        consumer: u64,
        queue: String,
        prefetch: u16,
    },
    Cancel {
        consumer: u64,
    },
    Ack {
        tag: u64,
    },
    Requeue {
        tag: u64,
    },
    QueueLen {
        name: String,
    },
    DeleteQueue {
        name: String,
    },
    Ping,
}

/// A message as the broker holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Message {
    pub(crate) body: Bytes,
    pub(crate) timestamp: Option<u64>,
    /// Checked against the connection's user when set.
    pub(crate) user_id: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
}

/// What the server sends.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ServerFrame {
    Welcome,
    Reply {
        id: u64,
        outcome: Result<Answer, String>,
    },
    Deliver {
        consumer: u64,
        /// The connection's delivery tag, to ack or requeue it with.
        tag: u64,
        routing_key: String,
        redelivered: bool,
        message: Message,
    },
    /// The consumer's queue was deleted: it gets nothing more.
    Cancelled {
        consumer: u64,
    },
    /// The server closes the connection, saying why.
    Fatal {
        reason: String,
    },
}

/// A successful operation's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Answer {
    Done,
    Count(u32),
}
