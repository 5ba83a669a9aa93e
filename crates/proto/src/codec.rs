//! The binary codec for everything Ferry processes send each other (AMQP bodies, TCP
//! frames, pipe frames). It is the only module that names `bincode`.
//!
//! A message is one version byte followed by the bincode-2 encoding of the value. The
//! version byte lets a newer reader refuse an unknown layout with a clear error instead
//! of misreading it. Decoding never panics: a short, oversized or malformed input is an
//! [`Error`] naming the message kind.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The layout version written in the first byte of every message.
pub const VERSION: u8 = 7;

/// The largest message a reader accepts (payloads above the data-plane threshold travel
/// by reference, so this is generous).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("empty {kind} message")]
    Empty { kind: &'static str },
    #[error("{kind} message has layout version {found}, this build reads version {VERSION}")]
    Version { kind: &'static str, found: u8 },
    #[error("malformed {kind} message: {detail}")]
    Malformed { kind: &'static str, detail: String },
    #[error("{kind} message has {extra} trailing bytes")]
    Trailing { kind: &'static str, extra: usize },
    #[error("cannot encode {kind} message: {detail}")]
    Encode { kind: &'static str, detail: String },
}

/// The name of a message type, for errors and logs.
fn kind_of<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Encodes `value` as a versioned message.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(|e| Error::Encode {
        kind: kind_of::<T>(),
        detail: e.to_string(),
    })?;
    Ok(out)
}

/// Decodes a versioned message written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let kind = kind_of::<T>();
    let (&version, body) = bytes.split_first().ok_or(Error::Empty { kind })?;
    if version != VERSION {
        return Err(Error::Version { kind, found: version });
    }
    let (value, used) = bincode::serde::decode_from_slice(body, config()).map_err(|e| Error::Malformed {
        kind,
        detail: e.to_string(),
    })?;
    if used != body.len() {
        return Err(Error::Trailing {
            kind,
            extra: body.len() - used,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{FunctionCode, FunctionKind, TaskBatch, TaskSpec};
    use crate::{EndpointId, FunctionId, TaskId};

    fn batch(n: usize) -> TaskBatch {
        let function_id = FunctionId::new();
        TaskBatch {
            endpoint_id: EndpointId::new(),
            functions: vec![FunctionCode {
                function_id,
                kind: FunctionKind::Python,
                code: "01\nabc".into(),
                by_reference: None,
                python: None,
            }],
            tasks: (0..n)
                .map(|i| TaskSpec {
                    task_id: TaskId::new(),
                    function_id,
                    attempt: 0,
                    max_retries: 3,
                    payload: format!("payload {i}").into(),
                    group: None,
                    walltime_ms: None,
                    input_bytes: None,
                    requeues: 0,
                    priority: 0,
                    requires: None,
                    retry: None,
                    not_before: None,
                    environment: None,
                    session: None,
                })
                .collect(),
        }
    }

    #[test]
    fn messages_round_trip() {
        let b = batch(3);
        let bytes = encode(&b).unwrap();
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<TaskBatch>(&bytes).unwrap(), b);
    }

    #[test]
    fn an_unknown_version_is_refused_with_the_message_kind() {
        let mut bytes = encode(&batch(1)).unwrap();
        bytes[0] = 9;
        let err = decode::<TaskBatch>(&bytes).unwrap_err().to_string();
        assert_eq!(
            err,
            "TaskBatch message has layout version 9, this build reads version 7"
        );
    }

    #[test]
    fn empty_and_truncated_messages_are_errors_not_panics() {
        assert!(matches!(decode::<TaskBatch>(&[]), Err(Error::Empty { .. })));
        let bytes = encode(&batch(2)).unwrap();
        for cut in 1..bytes.len() {
            assert!(decode::<TaskBatch>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode::<TaskBatch>(&bytes);
            let _ = decode::<crate::messages::EndpointMessage>(&bytes);
            let _ = decode::<crate::frames::ToManager>(&bytes);
        }
    }
}
