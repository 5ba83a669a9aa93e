//! RESP2 on the wire, without I/O: requests are parsed from the front of a byte buffer
//! (arrays of bulk strings, as every client sends them, or inline commands typed by a
//! person), replies are encoded into one.
//!
//! Parsing is in two steps, as in mini-redis: [`check_request`] walks the buffer and
//! says whether a whole request is there (an incomplete one is not an error, a
//! malformed one is, naming what was wrong), then [`parse_request`] takes it out.

use bytes::{Buf, Bytes, BytesMut};

/// The longest bulk string a request may carry (Redis's `proto-max-bulk-len`).
pub(crate) const MAX_BULK_BYTES: usize = 512 * 1024 * 1024;
/// The most arguments one request may carry.
pub(crate) const MAX_ARGS: usize = 16 * 1024 * 1024;
/// The longest inline command (a line typed in telnet).
const MAX_INLINE_BYTES: usize = 64 * 1024;

/// One reply, as Redis sends it over RESP2.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Frame {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`: the first word is the error's code (`ERR`, `WRONGTYPE`, `NOSCRIPT`).
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// The null bulk string (`$-1`): a missing value.
    Null,
    /// The null array (`*-1`): a blocking read that timed out, an aborted EXEC.
    NullArray,
    Array(Vec<Frame>),
}

impl Frame {
    pub(crate) fn ok() -> Frame {
        Frame::Simple("OK".to_owned())
    }

    /// An error reply; `message` starts with its code (`ERR syntax error`).
    pub(crate) fn error(message: impl Into<String>) -> Frame {
        Frame::Error(message.into())
    }

    pub(crate) fn bulk(bytes: impl Into<Bytes>) -> Frame {
        Frame::Bulk(bytes.into())
    }

    /// Appends the RESP2 encoding of this frame to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Simple(s) => line(out, b'+', s.as_bytes()),
            Frame::Error(s) => line(out, b'-', s.as_bytes()),
            Frame::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Frame::Bulk(b) => {
                line(out, b'$', b.len().to_string().as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Null => out.extend_from_slice(b"$-1\r\n"),
            Frame::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Frame::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

/// A status or error line; a CR or LF inside would end it early, so they become spaces.
fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Why no request could be taken from the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Error {
    /// Not all of the request has arrived: read more.
    Incomplete,
    /// The bytes are not RESP: the connection answers this and closes.
    Protocol(String),
}

fn protocol(detail: impl Into<String>) -> Error {
    Error::Protocol(format!("Protocol error: {}", detail.into()))
}

/// The length of the request at the front of `buf` (in bytes), if all of it is there.
pub(crate) fn check_request(buf: &[u8]) -> Result<usize, Error> {
    match buf.first() {
        None => Err(Error::Incomplete),
        Some(b'*') => {
            let (count, mut at) = header(buf, 0, b'*')?;
            if count > MAX_ARGS as i64 {
                return Err(protocol("invalid multibulk length"));
            }
            for _ in 0..count.max(0) {
                if at >= buf.len() {
                    return Err(Error::Incomplete);
                }
                if buf[at] != b'$' {
                    return Err(protocol(format!("expected '$', got '{}'", buf[at] as char)));
                }
                let (len, body) = header(buf, at, b'$')?;
                if !(0..=MAX_BULK_BYTES as i64).contains(&len) {
                    return Err(protocol("invalid bulk length"));
                }
                let end = body + len as usize;
                if buf.len() < end + 2 {
                    return Err(Error::Incomplete);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(protocol("bulk string not ended by CRLF"));
                }
                at = end + 2;
            }
            Ok(at)
        }
        Some(_) => match buf.iter().position(|&b| b == b'\n') {
            Some(end) if end <= MAX_INLINE_BYTES => Ok(end + 1),
            Some(_) => Err(protocol("too big inline request")),
            None if buf.len() > MAX_INLINE_BYTES => Err(protocol("too big inline request")),
            None => Err(Error::Incomplete),
        },
    }
}

/// A `<kind><integer>\r\n` line at `at`: the integer and where the line ends.
fn header(buf: &[u8], at: usize, kind: u8) -> Result<(i64, usize), Error> {
    let rest = &buf[at + 1..];
    let Some(cr) = rest.iter().take(32).position(|&b| b == b'\r') else {
        return if rest.len() >= 32 {
            Err(protocol("length line too long"))
        } else {
            Err(Error::Incomplete)
        };
    };
    if rest.len() < cr + 2 {
        return Err(Error::Incomplete);
    }
    if rest[cr + 1] != b'\n' {
        return Err(protocol("length line not ended by CRLF"));
    }
    let what = if kind == b'*' { "multibulk" } else { "bulk" };
    let n = std::str::from_utf8(&rest[..cr])
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| protocol(format!("invalid {what} length")))?;
    Ok((n, at + 1 + cr + 2))
}

/// Takes the request [`check_request`] found (`len` bytes) off the front of `buf`: its
/// arguments, the command name first. An empty inline line gives no arguments.
pub(crate) fn parse_request(buf: &mut BytesMut, len: usize) -> Vec<Bytes> {
    let mut request = buf.split_to(len);
    if request.first() != Some(&b'*') {
        return request[..]
            .split(|b: &u8| b.is_ascii_whitespace())
            .filter(|word| !word.is_empty())
            .map(Bytes::copy_from_slice)
            .collect();
    }
    let mut args = Vec::new();
    // check_request vouched for every line: each parse below succeeds.
    let count = take_number(&mut request);
    for _ in 0..count.max(0) {
        let n = take_number(&mut request).max(0) as usize;
        // A copy of its own: a stored key or value must not keep the whole read buffer
        // it came in alive.
        args.push(Bytes::copy_from_slice(&request[..n.min(request.len())]));
        request.advance(n.min(request.len()));
        request.advance(2.min(request.len()));
    }
    args
}

/// Reads a `<kind><integer>\r\n` line off the front of `buf`.
fn take_number(buf: &mut BytesMut) -> i64 {
    let cr = buf.iter().position(|&b| b == b'\r').unwrap_or(buf.len());
    let n = std::str::from_utf8(buf.get(1..cr).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    buf.advance((cr + 2).min(buf.len()));
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Vec<Bytes>, Error> {
        let mut buf = BytesMut::from(bytes);
        let len = check_request(&buf)?;
        Ok(parse_request(&mut buf, len))
    }

    #[test]
    fn a_request_is_an_array_of_bulk_strings() {
        assert_eq!(
            parse(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap(),
            vec![Bytes::from("GET"), Bytes::from("k")]
        );
    }

    #[test]
    fn every_prefix_of_a_request_is_incomplete() {
        let request = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
        for n in 0..request.len() {
            assert_eq!(check_request(&request[..n]), Err(Error::Incomplete), "{n} bytes");
        }
        assert_eq!(check_request(request), Ok(request.len()));
    }

    #[test]
    fn inline_commands_split_on_spaces() {
        assert_eq!(
            parse(b"PING  hello\r\n").unwrap(),
            vec![Bytes::from("PING"), Bytes::from("hello")]
        );
        assert_eq!(parse(b"\r\n").unwrap(), Vec::<Bytes>::new());
    }

    #[test]
    fn malformed_requests_are_protocol_errors_naming_the_fault() {
        for (bytes, says) in [
            (&b"*1\r\n:3\r\n"[..], "expected '$'"),
            (b"*x\r\n", "invalid multibulk length"),
            (b"*1\r\n$-5\r\n", "invalid bulk length"),
            (b"*1\r\n$1\r\nab\r\n", "not ended by CRLF"),
            (b"*1\r\n$99999999999999999999999999999999999\r\n", "too long"),
            (b"*99999999999\r\n", "invalid multibulk length"),
        ] {
            match check_request(bytes) {
                Err(Error::Protocol(message)) => assert!(message.contains(says), "{message}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn replies_encode_as_resp2() {
        let mut out = Vec::new();
        Frame::Array(vec![
            Frame::ok(),
            Frame::error("ERR bad\r\nthing"),
            Frame::Integer(-3),
            Frame::bulk("hi"),
            Frame::Null,
            Frame::NullArray,
        ])
        .encode(&mut out);
        assert_eq!(
            out,
            b"*6\r\n+OK\r\n-ERR bad  thing\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n*-1\r\n"
        );
    }

    proptest::proptest! {
        /// Any bytes at all are a request, an incomplete one, or a protocol error.
        #[test]
        fn any_bytes_parse_or_fail_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut buf = BytesMut::from(&bytes[..]);
            if let Ok(len) = check_request(&buf) {
                parse_request(&mut buf, len);
            }
        }

        /// Requests cut anywhere are incomplete until the last byte.
        #[test]
        fn any_request_parses_back(args in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20), 1..5)) {
            let mut bytes = format!("*{}\r\n", args.len()).into_bytes();
            for a in &args {
                bytes.extend(format!("${}\r\n", a.len()).bytes());
                bytes.extend(a);
                bytes.extend(b"\r\n");
            }
            proptest::prop_assert_eq!(check_request(&bytes[..bytes.len() - 1]), Err(Error::Incomplete));
            let parsed = parse(&bytes).unwrap();
            proptest::prop_assert_eq!(parsed.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), args);
        }
    }
}
