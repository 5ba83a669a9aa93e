//! Frames between an endpoint and its managers (TCP) and between a manager and its
//! workers (pipes). Each frame is a [`crate::codec`] message behind a 4-byte big-endian
//! length.
//!
//! A manager proves it belongs to the endpoint before it is given anything: the
//! endpoint opens with [`ToManager::Hello`] and a fresh nonce, and the manager answers
//! [`FromManager::Register`] with an HMAC-SHA256 of the nonce and its id under the
//! endpoint's secret ([`registration_proof`]). The secret itself never travels.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::messages::{FunctionCode, TaskResult, TaskSpec};
use crate::time::Micros;
use crate::{ManagerId, TaskId};

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
    pub cores: u32,
    pub memory_bytes: u64,
    /// The provider's block this manager belongs to, if any.
    pub block_id: Option<String>,
    /// Unix seconds when the manager's block ends (its walltime), if it has an end.
    pub block_end: Option<u64>,
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

/// Manager -> worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run one task. `function` is present the first time the worker sees the function.
    Run {
        function: Option<FunctionCode>,
        task: TaskSpec,
    },
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
}
