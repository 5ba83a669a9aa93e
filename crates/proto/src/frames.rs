//! Frames between an endpoint and its managers (TCP) and between a manager and its
//! workers (pipes). Each frame is a [`crate::codec`] message behind a 4-byte big-endian
//! length.
//!
//! A manager proves it belongs to the endpoint before it is given anything: the
//! endpoint opens with [`ToManager::Hello`] and a fresh nonce, and the manager answers
//! [`FromManager::Register`] with an HMAC-SHA256 of the nonce and its id under the
//! endpoint's secret ([`registration_proof`]). The secret itself never travels.
//!
//! The endpoint proves itself first: the connection is TLS, and the manager accepts
//! exactly the certificate whose SHA-256 it was given ([`CertFingerprint`], pinned), for
//! the name [`ENDPOINT_CERT_NAME`] whatever address it dialled.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::messages::{FunctionCode, TaskResult, TaskSpec};
use crate::time::Micros;
use crate::{BatchId, ManagerId, TaskId};

/// Facts about a manager's node, sent when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerInfo {
    pub manager_id: ManagerId,
    pub hostname: String,
    /// Worker slots: how many tasks it runs at once.
    pub workers: u32,
    /// How many tasks it takes at once: its workers plus those queued in their pipes, so
    /// a worker never waits for the endpoint between two tasks.
    pub capacity: u32,
    /// The node's facts, which a task's [`crate::messages::Requires`] is checked
    /// against: its cores, memory, GPUs and tags (`FERRY_NODE_TAGS`).
    pub cores: u32,
    pub memory_bytes: u64,
    pub gpus: u32,
    pub tags: Vec<String>,
    /// The provider's block this manager belongs to, if any.
    pub block_id: Option<String>,
    /// Unix seconds when the manager's block ends (its walltime), if it has an end.
    pub block_end: Option<u64>,
    /// Higher first, for the endpoint's `fill-by-priority` strategy
    /// (`FERRY_MANAGER_PRIORITY`, default 0).
    pub priority: i32,
}

/// The proof a manager sends with its registration: HMAC-SHA256, under the endpoint's
/// secret, of the endpoint's nonce and the manager's id.
pub fn registration_proof(secret: &[u8], nonce: &[u8], manager_id: ManagerId) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"ferry-manager-register-v1");
    mac.update(nonce);
    mac.update(manager_id.0.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Checks a registration's proof in constant time.
pub fn proof_holds(secret: &[u8], nonce: &[u8], manager_id: ManagerId, proof: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"ferry-manager-register-v1");
    mac.update(nonce);
    mac.update(manager_id.0.as_bytes());
    mac.verify_slice(proof).is_ok()
}

/// The name in the endpoint's certificate, and the one a manager asks for: the
/// certificate is pinned by its digest, so the host name or address a manager dials
/// does not matter.
pub const ENDPOINT_CERT_NAME: &str = "ferry-endpoint";

/// The SHA-256 digest of an endpoint's certificate (its DER bytes): what its managers
/// pin (`FERRY_ENDPOINT_CERT_SHA256`). Written as 64 lower-case hex digits; read in
/// either case, with or without colons between the bytes (as `openssl x509
/// -fingerprint -sha256` prints it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CertFingerprint([u8; 32]);

impl CertFingerprint {
    /// The fingerprint of a certificate, from its DER bytes.
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

/// The error for text that is not a certificate's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid certificate fingerprint {value:?}: expected the SHA-256 as 64 hex digits (colons allowed)")]
pub struct FingerprintError {
    pub value: String,
}

impl FromStr for CertFingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || FingerprintError {
            value: s.chars().take(100).collect(),
        };
        let digits: Vec<u8> = s
            .trim()
            .chars()
            .filter(|&c| c != ':')
            .map(|c| c.to_digit(16).map(|d| d as u8))
            .collect::<Option<_>>()
            .ok_or_else(error)?;
        if digits.len() != 64 {
            return Err(error());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = pair[0] << 4 | pair[1];
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

impl TryFrom<String> for CertFingerprint {
    type Error = FingerprintError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CertFingerprint> for String {
    fn from(f: CertFingerprint) -> Self {
        f.to_string()
    }
}

/// Endpoint -> manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToManager {
    /// The first frame on a connection: the nonce the manager's registration proves.
    Hello { nonce: Vec<u8> },
    /// The registration was refused (its proof does not hold); the connection closes.
    Refused { reason: String },
    /// Run these tasks. `functions` holds the code of those functions the manager has
    /// not been sent before.
    Run {
        functions: Vec<FunctionCode>,
        tasks: Vec<TaskSpec>,
    },
    /// Stop these tasks wherever they are (queued here, in a worker's pipe, running) and
    /// report each as lost with the reason `cancelled`.
    Cancel { task_ids: Vec<TaskId> },
    /// No task of this task environment is left at the endpoint: replace its idle
    /// Python hosts (the environment recycles when unreferenced).
    Unreferenced { environment: String },
    /// No task of this session is left at the endpoint: replace the Python hosts that
    /// ran one (their environment recycles when a session completes).
    SessionDone { session: BatchId },
    /// Finish what is running, send the results, exit.
    Shutdown,
}

/// Manager -> endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromManager {
    /// The answer to [`ToManager::Hello`]: who the manager is, and its proof.
    Register {
        info: ManagerInfo,
        proof: Vec<u8>,
    },
    Heartbeat {
        at: Micros,
        idle_workers: u32,
    },
    /// A worker started a task.
    Started {
        task_id: TaskId,
        attempt: u32,
        at: Micros,
    },
    Finished(TaskResult),
    /// The worker running a task died before it finished (crash, kill, out of memory).
    Lost {
        task_id: TaskId,
        attempt: u32,
        at: Micros,
        reason: String,
    },
    /// The manager's block ends soon: it takes no more tasks, and gives back these
    /// (task, attempt) it held and had not started. What it runs, it finishes if it can.
    Draining {
        returned: Vec<(TaskId, u32)>,
    },
    /// The manager is going away because its block is ending (the scheduler's SIGTERM
    /// at the walltime, a cancel, a preemption): the tasks it still holds did not fail,
    /// their allocation ended.
    Leaving {
        reason: String,
    },
}

/// Manager -> worker. Decoded and consumed one at a time: boxing the task would cost an
/// allocation per task for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run one task. `function` is present the first time the worker sees the function.
    Run {
        function: Option<FunctionCode>,
        task: TaskSpec,
    },
    /// Give back the tasks handed over that have not begun (the one running stays): they
    /// wait behind a long task while another worker is idle. Answered by
    /// [`FromWorker::Withdrawn`]: at once for what the worker holds, once its Python host
    /// answers for what it holds.
    Withdraw,
    /// No task of this task environment is left at the endpoint: a worker whose idle
    /// Python host is of it, with none of its tasks in hand, replaces it.
    Unreferenced { environment: String },
    /// No task of this session is left at the endpoint: a worker whose Python host ran
    /// one replaces it before its next task.
    SessionDone { session: BatchId },
}

/// Worker -> manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromWorker {
    /// The worker (and its Python host, if it has one) is up.
    Ready {
        pid: u32,
    },
    Started {
        task_id: TaskId,
        attempt: u32,
        at: Micros,
    },
    Finished(TaskResult),
    /// (Part of) the answer to [`ToWorker::Withdraw`]: these tasks will not run here
    /// (possibly none); the others run as sent.
    Withdrawn {
        task_ids: Vec<TaskId>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_reads_back_as_written_with_or_without_colons_in_either_case() {
        let f = CertFingerprint::of(b"a certificate");
        let text = f.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<CertFingerprint>(), Ok(f));
        let openssl: Vec<String> = text
            .as_bytes()
            .chunks(2)
            .map(|p| String::from_utf8_lossy(p).to_uppercase())
            .collect();
        assert_eq!(
            format!(" {}\n", openssl.join(":")).parse::<CertFingerprint>(),
            Ok(f)
        );
    }

    #[test]
    fn text_that_is_not_a_sha256_is_refused_naming_it() {
        for bad in [
            "",
            "abc",
            &"g".repeat(64),
            &"a".repeat(62),
            &"a".repeat(66),
            &"+f".repeat(32),
        ] {
            let e = bad.parse::<CertFingerprint>().unwrap_err();
            assert!(e.to_string().contains("64 hex digits"), "{e}");
        }
    }
}
