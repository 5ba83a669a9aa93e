//! The few Globus Compute wire forms Ferry produces, so the unmodified
//! `globus-compute-sdk` can talk to Ferry.
//!
//! A result on a task group's queue is a "messagepack" `Result`: the version byte `0x01`
//! then compact JSON `{"message_type": "result", "data": {...}}`.

use serde::Serialize;

use crate::TaskId;

/// The error details Globus Compute gives an ordinary task failure.
pub const REMOTE_EXECUTION_ERROR: &str = "RemoteExecutionError";

#[derive(Serialize)]
struct ErrorDetails<'a> {
    code: &'a str,
    user_message: &'a str,
}

#[derive(Serialize)]
struct ResultData<'a> {
    task_id: String,
    data: &'a str,
    details: Option<()>,
    error_details: Option<ErrorDetails<'a>>,
    task_statuses: Option<()>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    message_type: &'static str,
    data: ResultData<'a>,
}

/// A `Result` message. `data` is the serialized value on success, the traceback text on
/// failure; `error_code` is `None` on success.
pub fn result_message(task_id: TaskId, data: &str, error_code: Option<&str>) -> Vec<u8> {
    let envelope = Envelope {
        message_type: "result",
        data: ResultData {
            task_id: task_id.to_string(),
            data,
            details: None,
            error_details: error_code.map(|code| ErrorDetails {
                code,
                user_message: "An error occurred during the execution of this task",
            }),
            task_statuses: None,
        },
    };
    let mut out = vec![1u8];
    serde_json::to_writer(&mut out, &envelope).expect("a result serializes");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_message_is_the_version_byte_and_compact_json() {
        let id: TaskId = "00000000-0000-0000-0000-000000000002".parse().unwrap();
        let bytes = result_message(id, "00\nabc\n", None);
        assert_eq!(bytes[0], 1);
        assert_eq!(
            std::str::from_utf8(&bytes[1..]).unwrap(),
            r#"{"message_type":"result","data":{"task_id":"00000000-0000-0000-0000-000000000002","data":"00\nabc\n","details":null,"error_details":null,"task_statuses":null}}"#
        );
    }
}
