//! Frames between an endpoint and its managers (TCP) and between a manager and its
//! workers (pipes). Each frame is a [`crate::codec`] message behind a 4-byte big-endian
//! length.

use serde::{Deserialize, Serialize};

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
}

/// Endpoint -> manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToManager {
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
    Register(ManagerInfo),
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
