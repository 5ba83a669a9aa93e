//! The socket side of one client: requests read into a buffer, replies gathered and
//! written in one go once no further request is already buffered (a pipeline of a
//! thousand commands is answered with a few writes, not a thousand).

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{self, Frame};

/// What a read gave.
pub(crate) enum Read {
    /// One request: the command name and its arguments.
    Request(Vec<Bytes>),
    /// The bytes are not RESP; the message is the error reply to send before closing.
    Malformed(String),
}

pub(crate) struct Connection {
    stream: TcpStream,
    input: BytesMut,
    output: Vec<u8>,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            input: BytesMut::with_capacity(16 * 1024),
            output: Vec::with_capacity(16 * 1024),
        }
    }

    /// The next request already buffered, if a whole one is.
    pub(crate) fn buffered_request(&mut self) -> Option<Read> {
        match frame::check_request(&self.input) {
            Ok(len) => Some(Read::Request(frame::parse_request(&mut self.input, len))),
            Err(frame::Error::Incomplete) => None,
            Err(frame::Error::Protocol(message)) => Some(Read::Malformed(message)),
        }
    }

    /// Reads more bytes from the client; false once it has closed its side. Cancel
    /// safe: what was read stays in the buffer.
    pub(crate) async fn fill(&mut self) -> std::io::Result<bool> {
        if self.input.capacity() - self.input.len() < 4096 {
            self.input.reserve(16 * 1024);
        }
        Ok(self.stream.read_buf(&mut self.input).await? > 0)
    }

    /// Queues a reply (written by the next [`Connection::flush`]).
    pub(crate) fn queue(&mut self, reply: &Frame) {
        reply.encode(&mut self.output);
    }

    /// Writes the queued replies. Not cancel safe: never race it against anything.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
            if self.output.capacity() > 1024 * 1024 {
                self.output.shrink_to(16 * 1024);
            }
        }
        Ok(())
    }
}
