//! Fuzz targets that run on a stable toolchain: proptest over arbitrary and structured
//! bytes for every decoder another process's bytes reach, and over arbitrary inputs for
//! the state machine.
//!
//! - The codec ([`codec::decode`]) for each type that arrives from another process: the
//!   AMQP bodies ([`TaskBatch`] at the forwarder and the endpoint, [`CancelTasks`] at the
//!   endpoint, [`EndpointMessage`] at the forwarder) and the frame bodies of the TCP link
//!   and the worker pipes ([`ToManager`], [`FromManager`], [`ToWorker`], [`FromWorker`]).
//!   Inputs: arbitrary bytes, valid encodings mutated, cut short, followed by garbage, or
//!   declaring lengths far past [`MAX_MESSAGE_BYTES`]. The answer is a value or an error
//!   naming the message kind, never a panic; a string's or byte buffer's length is checked
//!   against the limit before its buffer is allocated (a sequence reserves at most 1 MiB
//!   up front, serde's cap), so no input costs more than about the limit.
//! - The state machine ([`transition`]): arbitrary `(state, event, attempt, retries)`, the
//!   edges of `u32` included, and random event sequences, against the rules `state.rs`
//!   documents.
//!
//! The 4-byte length in front of each frame is read by `tokio_util`'s
//! `LengthDelimitedCodec` in the process crates, not here: `crates/endpoint/tests/
//! fuzz_decoders.rs` fuzzes it where a stranger's bytes arrive, the endpoint's manager port.
//!
//! `FERRY_FUZZ_CASES` sets the cases per target (default 1024: about a second for the whole
//! file in a debug build); `scripts/fuzz` runs them long.

use std::fmt::Debug;

use bytes::Bytes;
use ferry_proto::codec::{self, Error, MAX_MESSAGE_BYTES, VERSION};
use ferry_proto::frames::{FromManager, FromWorker, ManagerInfo, ToManager, ToWorker};
use ferry_proto::messages::{
    BlockReport, CancelTasks, Completion, EndpointLoad, EndpointMessage, FunctionCode, FunctionKind,
    ManagerLoad, ProviderReport, Requires, RetryPolicy, StatusUpdate, TaskBatch, TaskResult, TaskSpec,
};
use ferry_proto::state::{Effect, FailureCause, Ignored, Outcome, TaskStatus, transition};
use ferry_proto::{
    Actor, BatchId, EndpointId, Event, EventKind, FunctionId, ManagerId, TaskGroupId, TaskId, TaskState,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Cases per target: `FERRY_FUZZ_CASES`, or few enough for a quick `cargo test`.
fn config() -> ProptestConfig {
    let cases = match std::env::var("FERRY_FUZZ_CASES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("FERRY_FUZZ_CASES={v:?} is not a number of cases")),
        Err(_) => 1024,
    };
    ProptestConfig::with_cases(cases)
}

// ---------------------------------------------------------------------------------------
// Valid messages
// ---------------------------------------------------------------------------------------

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn task_id() -> impl Strategy<Value = TaskId> {
    uuid().prop_map(TaskId)
}

fn text() -> impl Strategy<Value = String> {
    ".{0,12}"
}

fn blob() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

/// Small numbers, where most real values are, and any other.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..300, 1 => any::<u64>()]
}

fn function_code() -> impl Strategy<Value = FunctionCode> {
    (uuid(), any::<bool>(), blob()).prop_map(|(id, shell, code)| FunctionCode {
        function_id: FunctionId(id),
        kind: if shell {
            FunctionKind::Shell
        } else {
            FunctionKind::Python
        },
        code,
        by_reference: None,
        python: None,
    })
}

fn task_spec() -> impl Strategy<Value = TaskSpec> {
    (
        task_id(),
        uuid(),
        any::<u32>(),
        any::<u32>(),
        blob(),
        proptest::option::of(uuid()),
        proptest::option::of(number()),
        proptest::option::of(number()),
        any::<u32>(),
    )
        .prop_map(
            |(
                task_id,
                function,
                attempt,
                max_retries,
                payload,
                group,
                walltime_ms,
                input_bytes,
                requeues,
            )| {
                TaskSpec {
                    task_id,
                    function_id: FunctionId(function),
                    attempt,
                    max_retries,
                    payload,
                    group: group.map(TaskGroupId),
                    walltime_ms,
                    input_bytes,
                    requeues,
                    priority: attempt as i32 - 3,
                    requires: (max_retries % 2 == 1).then(|| Requires {
                        cores: attempt,
                        memory_mb: u64::from(max_retries),
                        gpus: requeues,
                        tags: vec![format!("t{attempt}")],
                    }),
                    retry: (max_retries % 3 == 1).then(|| RetryPolicy {
                        on: vec!["exception".into(), format!("E{attempt}")],
                        backoff_ms: u64::from(attempt),
                        max_backoff_ms: u64::from(max_retries),
                    }),
                    not_before: walltime_ms,
                    environment: (attempt % 2 == 0).then(|| format!("env-{requeues}")),
                    session: (attempt % 3 == 0).then(|| BatchId(uuid::Uuid::from_u128(u128::from(requeues)))),
                }
            },
        )
}

fn task_batch() -> impl Strategy<Value = TaskBatch> {
    (uuid(), vec(function_code(), 0..3), vec(task_spec(), 0..4)).prop_map(|(id, functions, tasks)| {
        TaskBatch {
            endpoint_id: EndpointId(id),
            functions,
            tasks,
        }
    })
}

fn cancel_tasks() -> impl Strategy<Value = CancelTasks> {
    (uuid(), vec(task_id(), 0..6)).prop_map(|(id, task_ids)| CancelTasks {
        endpoint_id: EndpointId(id),
        task_ids,
    })
}

fn status_update() -> impl Strategy<Value = StatusUpdate> {
    (
        task_id(),
        any::<u32>(),
        select(EventKind::ALL.to_vec()),
        number(),
        select(Actor::ALL.to_vec()),
    )
        .prop_map(|(task_id, attempt, kind, at, by)| StatusUpdate {
            task_id,
            attempt,
            kind,
            at,
            by,
        })
}

fn completion() -> impl Strategy<Value = Completion> {
    prop_oneof![
        blob().prop_map(|result| Completion::Success { result }),
        (text(), proptest::option::of(blob()))
            .prop_map(|(traceback, exception)| Completion::Failure { traceback, exception }),
        text().prop_map(|reason| Completion::Lost { reason }),
        text().prop_map(|reason| Completion::TimedOut { reason }),
        number().prop_map(|bytes| Completion::SuccessByReference { bytes }),
    ]
}

fn task_result() -> impl Strategy<Value = TaskResult> {
    (
        task_id(),
        any::<u32>(),
        vec(status_update(), 0..3),
        completion(),
        proptest::option::of(uuid()),
        number(),
        text(),
        text(),
    )
        .prop_map(
            |(task_id, attempt, steps, completion, group, finished_at, stdout, stderr)| TaskResult {
                task_id,
                attempt,
                steps,
                completion,
                group: group.map(TaskGroupId),
                finished_at,
                stdout,
                stderr,
            },
        )
}

fn block_report() -> impl Strategy<Value = BlockReport> {
    (
        text(),
        proptest::option::of(text()),
        text(),
        proptest::option::of(text()),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        number(),
        proptest::option::of(number()),
    )
        .prop_map(
            |(block_id, job_id, state, reason, nodes, managers, tasks, submitted_at, ended_at)| BlockReport {
                block_id,
                job_id,
                state,
                reason,
                nodes,
                managers,
                tasks,
                submitted_at,
                ended_at,
            },
        )
}

fn endpoint_load() -> impl Strategy<Value = EndpointLoad> {
    let provider = (text(), proptest::option::of(text()), vec(block_report(), 0..3)).prop_map(
        |(kind, scaling, blocks)| ProviderReport {
            kind,
            scaling,
            blocks,
        },
    );
    (
        any::<[u32; 5]>(),
        vec(uuid().prop_map(ManagerId), 0..3),
        proptest::option::of(provider),
        vec(
            (
                uuid(),
                text(),
                proptest::option::of(text()),
                any::<[u32; 4]>(),
                any::<u64>(),
                any::<bool>(),
            ),
            0..3,
        ),
    )
        .prop_map(|(n, manager_ids, provider, loads)| EndpointLoad {
            managers: n[0],
            total_workers: n[1],
            idle_workers: n[2],
            pending_tasks: n[3],
            outstanding_tasks: n[4],
            manager_ids,
            provider,
            manager_loads: loads
                .into_iter()
                .map(
                    |(id, hostname, block_id, n, memory_bytes, draining)| ManagerLoad {
                        manager_id: ManagerId(id),
                        hostname: hostname.clone(),
                        block_id,
                        workers: n[0],
                        tasks: n[1],
                        cores: n[2],
                        memory_bytes,
                        gpus: n[3],
                        tags: vec![hostname],
                        draining,
                    },
                )
                .collect(),
        })
}

fn endpoint_message() -> impl Strategy<Value = EndpointMessage> {
    prop_oneof![
        (uuid(), number(), number(), endpoint_load(), vec(task_id(), 0..4)).prop_map(
            |(id, at, interval_ms, load, alive)| EndpointMessage::Heartbeat {
                endpoint_id: EndpointId(id),
                at,
                interval_ms,
                load,
                alive,
            }
        ),
        (uuid(), vec(status_update(), 0..4), vec(task_result(), 0..3)).prop_map(|(id, updates, results)| {
            EndpointMessage::Reports {
                endpoint_id: EndpointId(id),
                updates,
                results,
            }
        }),
    ]
}

fn manager_info() -> impl Strategy<Value = ManagerInfo> {
    (
        uuid(),
        text(),
        any::<[u32; 3]>(),
        number(),
        proptest::option::of(text()),
        proptest::option::of(number()),
    )
        .prop_map(
            |(id, hostname, n, memory_bytes, block_id, block_end)| ManagerInfo {
                manager_id: ManagerId(id),
                hostname,
                workers: n[0],
                capacity: n[1],
                cores: n[2],
                memory_bytes,
                gpus: n[0] % 8,
                tags: vec![format!("tag{}", n[1])],
                block_id,
                block_end,
                priority: n[2] as i32 - 3,
            },
        )
}

fn to_manager() -> impl Strategy<Value = ToManager> {
    prop_oneof![
        vec(any::<u8>(), 0..40).prop_map(|nonce| ToManager::Hello { nonce }),
        text().prop_map(|reason| ToManager::Refused { reason }),
        (vec(function_code(), 0..3), vec(task_spec(), 0..4))
            .prop_map(|(functions, tasks)| ToManager::Run { functions, tasks }),
        vec(task_id(), 0..6).prop_map(|task_ids| ToManager::Cancel { task_ids }),
        Just(ToManager::Shutdown),
    ]
}

fn from_manager() -> impl Strategy<Value = FromManager> {
    prop_oneof![
        (manager_info(), vec(any::<u8>(), 0..40))
            .prop_map(|(info, proof)| FromManager::Register { info, proof }),
        (number(), any::<u32>()).prop_map(|(at, idle_workers)| FromManager::Heartbeat { at, idle_workers }),
        (task_id(), any::<u32>(), number()).prop_map(|(task_id, attempt, at)| FromManager::Started {
            task_id,
            attempt,
            at
        }),
        task_result().prop_map(FromManager::Finished),
        (task_id(), any::<u32>(), number(), text()).prop_map(|(task_id, attempt, at, reason)| {
            FromManager::Lost {
                task_id,
                attempt,
                at,
                reason,
            }
        }),
        vec((task_id(), any::<u32>()), 0..4).prop_map(|returned| FromManager::Draining { returned }),
        text().prop_map(|reason| FromManager::Leaving { reason }),
    ]
}

fn to_worker() -> impl Strategy<Value = ToWorker> {
    prop_oneof![
        (proptest::option::of(function_code()), task_spec())
            .prop_map(|(function, task)| ToWorker::Run { function, task }),
        Just(ToWorker::Withdraw),
    ]
}

fn from_worker() -> impl Strategy<Value = FromWorker> {
    prop_oneof![
        any::<u32>().prop_map(|pid| FromWorker::Ready { pid }),
        (task_id(), any::<u32>(), number()).prop_map(|(task_id, attempt, at)| FromWorker::Started {
            task_id,
            attempt,
            at
        }),
        task_result().prop_map(FromWorker::Finished),
        vec(task_id(), 0..4).prop_map(|task_ids| FromWorker::Withdrawn { task_ids }),
    ]
}

/// A valid message of a kind that crosses a process boundary.
#[derive(Debug, Clone)]
enum Wire {
    TaskBatch(TaskBatch),
    CancelTasks(CancelTasks),
    EndpointMessage(EndpointMessage),
    ToManager(ToManager),
    FromManager(FromManager),
    ToWorker(ToWorker),
    FromWorker(FromWorker),
}

fn wire() -> impl Strategy<Value = Wire> {
    prop_oneof![
        task_batch().prop_map(Wire::TaskBatch),
        cancel_tasks().prop_map(Wire::CancelTasks),
        endpoint_message().prop_map(Wire::EndpointMessage),
        to_manager().prop_map(Wire::ToManager),
        from_manager().prop_map(Wire::FromManager),
        to_worker().prop_map(Wire::ToWorker),
        from_worker().prop_map(Wire::FromWorker),
    ]
}

/// Runs `$body` with `$v` bound to the message inside `$wire`, whatever its kind.
macro_rules! each_kind {
    ($wire:expr, $v:ident => $body:expr) => {
        match $wire {
            Wire::TaskBatch($v) => $body,
            Wire::CancelTasks($v) => $body,
            Wire::EndpointMessage($v) => $body,
            Wire::ToManager($v) => $body,
            Wire::FromManager($v) => $body,
            Wire::ToWorker($v) => $body,
            Wire::FromWorker($v) => $body,
        }
    };
}

impl Wire {
    fn encode(&self) -> Vec<u8> {
        each_kind!(self, v => codec::encode(v).expect("a valid message encodes"))
    }

    /// Decodes `bytes` as this message's kind: `Ok(true)` when it is this very message.
    fn decode_same(&self, bytes: &[u8]) -> Result<bool, Error> {
        fn like<T: DeserializeOwned + PartialEq>(v: &T, bytes: &[u8]) -> Result<bool, Error> {
            codec::decode::<T>(bytes).map(|d| &d == v)
        }
        each_kind!(self, v => like(v, bytes))
    }

    fn kind(&self) -> &'static str {
        each_kind!(self, v => kind_of(v))
    }
}

fn kind_of<T>(_: &T) -> &'static str {
    kind_name::<T>()
}

/// How the codec's errors name a message kind.
fn kind_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

// ---------------------------------------------------------------------------------------
// What every decoder owes any input
// ---------------------------------------------------------------------------------------

/// Decodes `bytes` as a `T`: an error that names the kind, or a value that encodes back
/// to one that decodes the same. A panic fails the case by itself.
fn decodes_cleanly<T>(bytes: &[u8]) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let kind = kind_name::<T>();
    match codec::decode::<T>(bytes) {
        Err(e) => {
            let message = e.to_string();
            prop_assert!(message.contains(kind), "{message:?} does not name {kind}");
        }
        Ok(value) => {
            let again = codec::encode(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = codec::decode::<T>(&again).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, value, "{} accepted a value that does not round-trip", kind);
        }
    }
    Ok(())
}

/// Every decoder that reads another process's bytes, on the same input.
fn every_decoder_copes(bytes: &[u8]) -> Result<(), TestCaseError> {
    decodes_cleanly::<TaskBatch>(bytes)?;
    decodes_cleanly::<CancelTasks>(bytes)?;
    decodes_cleanly::<EndpointMessage>(bytes)?;
    decodes_cleanly::<ToManager>(bytes)?;
    decodes_cleanly::<FromManager>(bytes)?;
    decodes_cleanly::<ToWorker>(bytes)?;
    decodes_cleanly::<FromWorker>(bytes)?;
    Ok(())
}

/// The codec's encoding of the length `n`, as a string, a byte buffer or a sequence
/// declares its size (without the version byte).
fn length_prefix(n: u64) -> Vec<u8> {
    codec::encode(&n).expect("a u64 encodes")[1..].to_vec()
}

/// Lengths a hostile or corrupt message may declare.
fn huge_length() -> impl Strategy<Value = u64> {
    select(vec![
        1 << 20,
        MAX_MESSAGE_BYTES as u64 - 1,
        MAX_MESSAGE_BYTES as u64,
        MAX_MESSAGE_BYTES as u64 + 1,
        u64::from(u32::MAX),
        1 << 32,
        1 << 60,
        u64::MAX,
    ])
}

/// One change to a valid encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: Index,
        bit: u8,
    },
    Set {
        at: Index,
        byte: u8,
    },
    Insert {
        at: Index,
        byte: u8,
    },
    Delete {
        at: Index,
    },
    Truncate {
        at: Index,
    },
    Append(Vec<u8>),
    /// One byte replaced by a declared length far larger than the message.
    Length {
        at: Index,
        len: u64,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        2 => any::<Index>().prop_map(|at| Mutation::Delete { at }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        1 => vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        2 => (any::<Index>(), huge_length()).prop_map(|(at, len)| Mutation::Length { at, len }),
    ]
}

impl Mutation {
    fn apply(&self, bytes: &mut Vec<u8>) {
        let n = bytes.len();
        let within = |at: &Index| (n > 0).then(|| at.index(n));
        match self {
            Mutation::Flip { at, bit } => {
                if let Some(i) = within(at) {
                    bytes[i] ^= 1 << bit;
                }
            }
            Mutation::Set { at, byte } => {
                if let Some(i) = within(at) {
                    bytes[i] = *byte;
                }
            }
            Mutation::Insert { at, byte } => bytes.insert(at.index(n + 1), *byte),
            Mutation::Delete { at } => {
                if let Some(i) = within(at) {
                    bytes.remove(i);
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at.index(n + 1)),
            Mutation::Append(garbage) => bytes.extend_from_slice(garbage),
            Mutation::Length { at, len } => {
                if let Some(i) = within(at) {
                    bytes.splice(i..=i, length_prefix(*len));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The codec
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_are_a_value_or_an_error_for_every_decoder(bytes in vec(any::<u8>(), 0..512)) {
        every_decoder_copes(&bytes)?;
    }

    /// Past the version byte, so that every input reaches bincode.
    #[test]
    fn arbitrary_bodies_are_a_value_or_an_error_for_every_decoder(body in vec(any::<u8>(), 0..512)) {
        let mut bytes = vec![VERSION];
        bytes.extend_from_slice(&body);
        every_decoder_copes(&bytes)?;
    }

    #[test]
    fn mutated_messages_are_a_value_or_an_error_for_every_decoder(
        message in wire(),
        mutations in vec(mutation(), 1..6),
    ) {
        let mut bytes = message.encode();
        for m in &mutations {
            m.apply(&mut bytes);
        }
        every_decoder_copes(&bytes)?;
    }

    #[test]
    fn every_message_round_trips_and_each_shorter_prefix_is_an_error(
        message in wire(),
        cuts in vec(any::<Index>(), 8),
    ) {
        let bytes = message.encode();
        prop_assert!(matches!(message.decode_same(&bytes), Ok(true)), "{message:?} does not round-trip");
        // A prefix that decoded would have ended the full message's decoding early too.
        let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len())).collect();
        ends.extend([0, 1, bytes.len() - 1]);
        for end in ends {
            let err = match message.decode_same(&bytes[..end]) {
                Ok(_) => return Err(TestCaseError::fail(format!("{} decoded from its first {end} bytes", message.kind()))),
                Err(e) => e.to_string(),
            };
            prop_assert!(err.contains(message.kind()), "{err:?}");
        }
    }

    #[test]
    fn a_valid_message_followed_by_garbage_is_refused_as_trailing(
        message in wire(),
        garbage in vec(any::<u8>(), 1..64),
    ) {
        let mut bytes = message.encode();
        bytes.extend_from_slice(&garbage);
        match message.decode_same(&bytes) {
            Err(Error::Trailing { kind, extra }) => {
                prop_assert_eq!(kind, message.kind());
                prop_assert_eq!(extra, garbage.len());
            }
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    /// Whatever a length claims, decoding answers at once: an error, or a value it had
    /// the bytes for (the test process would abort on an allocation of 2^60 bytes).
    #[test]
    fn a_huge_declared_length_anywhere_is_refused_without_allocating_it(
        message in wire(),
        at in any::<Index>(),
        len in huge_length(),
    ) {
        let mut bytes = message.encode();
        let i = at.index(bytes.len());
        bytes.splice(i..=i, length_prefix(len));
        every_decoder_copes(&bytes)?;
    }
}

/// The limit is what stops a length before bincode allocates for it: a string or byte
/// field declaring more than [`MAX_MESSAGE_BYTES`] is refused with `LimitExceeded`.
#[test]
fn a_string_or_bytes_length_past_the_limit_is_refused_by_the_limit() {
    let past = [
        MAX_MESSAGE_BYTES as u64 + 1,
        u64::from(u32::MAX),
        1 << 32,
        1 << 60,
        u64::MAX,
    ];
    // A `String`: `Refused { reason: "" }` is version, variant 1, length 0.
    let refused = codec::encode(&ToManager::Refused {
        reason: String::new(),
    })
    .unwrap();
    assert_eq!(refused, [VERSION, 1, 0], "the layout this test edits");
    // A `Bytes`: the last function's code length is the fourth-to-last byte when no task
    // follows (then its `by_reference` and `python`, both `None`, and the count of tasks).
    let batch = TaskBatch {
        endpoint_id: EndpointId::new(),
        functions: vec![FunctionCode {
            function_id: FunctionId::new(),
            kind: FunctionKind::Python,
            code: Bytes::new(),
            by_reference: None,
            python: None,
        }],
        tasks: Vec::new(),
    };
    let batch_bytes = codec::encode(&batch).unwrap();
    assert_eq!(
        batch_bytes[batch_bytes.len() - 4..],
        [0, 0, 0, 0],
        "the layout this test edits"
    );
    // An id: a UUID travels as 16 bytes behind their length.
    let cancel = codec::encode(&CancelTasks {
        endpoint_id: EndpointId::new(),
        task_ids: Vec::new(),
    })
    .unwrap();
    assert_eq!(cancel[1], 16, "the layout this test edits");

    for len in past {
        let prefix = length_prefix(len);
        let reason = [&refused[..2], &prefix].concat();
        let code = [&batch_bytes[..batch_bytes.len() - 4], &prefix, &[0, 0, 0]].concat();
        let id = [&cancel[..1], &prefix, &cancel[2..]].concat();
        for err in [
            codec::decode::<ToManager>(&reason).unwrap_err(),
            codec::decode::<TaskBatch>(&code).unwrap_err(),
            codec::decode::<CancelTasks>(&id).unwrap_err(),
        ] {
            assert!(
                matches!(&err, Error::Malformed { detail, .. } if detail.contains("LimitExceeded")),
                "a length of {len}: {err}"
            );
        }
    }
}

/// Sequences are read an element at a time (at most a small capacity reserved up front),
/// so a huge count fails on the first missing element.
#[test]
fn a_sequence_declaring_more_elements_than_it_holds_is_an_error() {
    let cancel = codec::encode(&CancelTasks {
        endpoint_id: EndpointId::new(),
        task_ids: Vec::new(),
    })
    .unwrap();
    for len in [1, 1 << 20, 1 << 32, 1 << 60, u64::MAX] {
        let bytes = [&cancel[..cancel.len() - 1], &length_prefix(len)].concat();
        assert!(
            matches!(codec::decode::<CancelTasks>(&bytes), Err(Error::Malformed { .. })),
            "{len} task ids declared, none there"
        );
    }
}

/// The limit also holds for a message that really is that large: it is refused whole.
#[test]
fn a_message_larger_than_the_limit_is_refused() {
    let leaving = FromManager::Leaving {
        reason: "x".repeat(MAX_MESSAGE_BYTES + 1),
    };
    let bytes = codec::encode(&leaving).unwrap();
    let err = codec::decode::<FromManager>(&bytes).unwrap_err();
    assert!(
        matches!(&err, Error::Malformed { detail, .. } if detail.contains("LimitExceeded")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// The state machine
// ---------------------------------------------------------------------------------------

/// An attempt or a retry budget: small ones, where the rules live, and the edges of `u32`.
fn count() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0u32..5,
        2 => any::<u32>(),
        1 => Just(u32::MAX),
        1 => Just(u32::MAX - 1),
    ]
}

fn task_status() -> impl Strategy<Value = TaskStatus> {
    (select(TaskState::ALL.to_vec()), count(), count()).prop_map(|(state, attempt, max_retries)| TaskStatus {
        state,
        attempt,
        max_retries,
    })
}

fn event() -> impl Strategy<Value = Event> {
    (select(EventKind::ALL.to_vec()), count()).prop_map(|(kind, attempt)| Event { kind, attempt })
}

/// Which attempt an event in a sequence reports, relative to the record's.
#[derive(Debug, Clone, Copy)]
enum Reported {
    Current,
    Older(u32),
    Newer(u32),
    Exactly(u32),
}

fn reported() -> impl Strategy<Value = Reported> {
    prop_oneof![
        4 => Just(Reported::Current),
        1 => (1u32..3).prop_map(Reported::Older),
        1 => (1u32..3).prop_map(Reported::Newer),
        1 => count().prop_map(Reported::Exactly),
    ]
}

impl Reported {
    fn attempt(self, record: u32) -> u32 {
        match self {
            Reported::Current => record,
            Reported::Older(n) => record.saturating_sub(n),
            Reported::Newer(n) => record.saturating_add(n),
            Reported::Exactly(a) => a,
        }
    }
}

/// The rules `state.rs` documents, checked on one answer of [`transition`].
fn obeys_the_rules(status: TaskStatus, event: Event, outcome: &Outcome) -> Result<(), TestCaseError> {
    let ends_any_attempt = matches!(event.kind, EventKind::Cancelled | EventKind::TimedOut);
    if status.state.is_terminal() {
        prop_assert_eq!(
            outcome,
            &Outcome::Ignored(Ignored::Terminal),
            "terminal states absorb"
        );
        return Ok(());
    }
    let t = match outcome {
        Outcome::Ignored(Ignored::Terminal) => {
            return Err(TestCaseError::fail("a live task ignored an event as terminal"));
        }
        Outcome::Ignored(Ignored::StaleAttempt) => {
            prop_assert!(!ends_any_attempt, "a cancel or timeout ignored");
            prop_assert!(event.attempt < status.attempt, "a current report called stale");
            return Ok(());
        }
        Outcome::Ignored(Ignored::NotForward) => {
            prop_assert!(!ends_any_attempt, "a cancel or timeout ignored");
            prop_assert_eq!(
                event.attempt,
                status.attempt,
                "only a report of the same attempt can be out of order"
            );
            return Ok(());
        }
        Outcome::Applied(t) => t,
    };
    prop_assert!(t.attempt >= status.attempt, "the attempt went back");
    if t.attempt == status.attempt {
        prop_assert!(t.to > status.state, "within an attempt a task only moves forward");
    }
    if ends_any_attempt {
        let cause = if event.kind == EventKind::Cancelled {
            FailureCause::Cancelled
        } else {
            FailureCause::Timeout
        };
        prop_assert_eq!(
            (t.to, t.attempt, t.cause),
            (TaskState::Failed, status.attempt, Some(cause))
        );
    } else {
        prop_assert!(
            event.attempt >= status.attempt,
            "a report from an older attempt applied"
        );
    }
    let uncharged = matches!(event.kind, EventKind::BlockEnded | EventKind::Requeued);
    if t.effects.contains(&Effect::Redispatch) {
        prop_assert_eq!(&t.effects, &vec![Effect::Redispatch]);
        prop_assert!(!t.to.is_terminal());
        prop_assert_eq!(
            Some(t.attempt),
            event.attempt.checked_add(1),
            "a retry is the next attempt"
        );
        let retries = if uncharged {
            status.max_retries.saturating_add(1)
        } else {
            status.max_retries
        };
        prop_assert_eq!(t.max_retries, retries, "only an uncharged retry adds one");
    } else {
        prop_assert_eq!(t.max_retries, status.max_retries);
        if t.to.is_terminal() {
            prop_assert_eq!(&t.effects, &vec![Effect::RecordResult, Effect::NotifyCompletion]);
            let cause = match event.kind {
                EventKind::Succeeded => None,
                EventKind::Failed => Some(FailureCause::Exception),
                EventKind::Cancelled => Some(FailureCause::Cancelled),
                EventKind::TimedOut => Some(FailureCause::Timeout),
                EventKind::Lost => Some(FailureCause::RetriesExhausted),
                // These go around again, unless no attempt number is left.
                EventKind::EndpointLost | EventKind::BlockEnded | EventKind::Requeued
                    if event.attempt == u32::MAX =>
                {
                    Some(FailureCause::RetriesExhausted)
                }
                other => return Err(TestCaseError::fail(format!("{other:?} ended a task"))),
            };
            prop_assert_eq!(t.cause, cause);
        } else {
            prop_assert!(t.effects.is_empty());
            prop_assert_eq!(t.attempt, event.attempt);
        }
    }
    Ok(())
}

/// Found by the targets below: `attempt + 1` overflowed (a panic in debug builds, and in
/// release a record back at attempt 0, where every old report applies again).
#[test]
fn a_task_at_the_last_attempt_number_fails_rather_than_going_around() {
    for (state, kind) in [
        (TaskState::Running, EventKind::Lost),
        (TaskState::Running, EventKind::EndpointLost),
        (TaskState::Running, EventKind::BlockEnded),
        (TaskState::WaitingForEp, EventKind::Requeued),
    ] {
        let status = TaskStatus {
            state,
            attempt: u32::MAX,
            max_retries: u32::MAX,
        };
        let Outcome::Applied(t) = transition(
            status,
            Event {
                kind,
                attempt: u32::MAX,
            },
        ) else {
            panic!("{kind:?} ignored");
        };
        assert_eq!(
            (t.to, t.attempt, t.cause),
            (TaskState::Failed, u32::MAX, Some(FailureCause::RetriesExhausted)),
            "{kind:?}"
        );
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_event_on_any_record_obeys_the_rules(status in task_status(), event in event()) {
        let outcome = transition(status, event);
        obeys_the_rules(status, event, &outcome)?;
    }

    /// Along any sequence the record's attempt and retry budget never go back, and a
    /// terminal state stays.
    #[test]
    fn any_sequence_of_events_obeys_the_rules(
        start in task_status(),
        events in vec((select(EventKind::ALL.to_vec()), reported()), 0..40),
    ) {
        let mut record = start;
        let mut ended = record.state.is_terminal();
        for (kind, which) in events {
            let event = Event { kind, attempt: which.attempt(record.attempt) };
            let outcome = transition(record, event);
            obeys_the_rules(record, event, &outcome)?;
            if let Outcome::Applied(t) = outcome {
                prop_assert!(!ended, "a terminal record changed");
                prop_assert!(t.max_retries >= record.max_retries);
                record = TaskStatus { state: t.to, attempt: t.attempt, max_retries: t.max_retries };
                ended = record.state.is_terminal();
            }
        }
    }

    /// Codes come back from Redis: any byte is a known code or `None`.
    #[test]
    fn any_stored_code_is_known_or_none(code in any::<u8>()) {
        let i = usize::from(code);
        prop_assert_eq!(TaskState::from_code(code).map(TaskState::code), (i < TaskState::ALL.len()).then_some(code));
        prop_assert_eq!(EventKind::from_code(code).map(EventKind::code), (i < EventKind::ALL.len()).then_some(code));
        prop_assert_eq!(Actor::from_code(code).map(Actor::code), (i < Actor::ALL.len()).then_some(code));
        prop_assert_eq!(FailureCause::from_code(code).map(FailureCause::code), (i < FailureCause::ALL.len()).then_some(code));
        prop_assert_eq!(Ignored::from_code(code).map(Ignored::code), (i < Ignored::ALL.len()).then_some(code));
    }
}
