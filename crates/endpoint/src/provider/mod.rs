//! Providers: how an endpoint gets managers, as blocks.
//!
//! A block is one allocation of `nodes_per_block` nodes with one manager on each: a
//! batch job for Slurm and PBS, a set of local processes for the local provider. Every
//! provider submits blocks, says what state each is in, and cancels them, behind
//! [`Provider`]; the scaling that decides when (`crate::blocks`) is the same for all.
//!
//! - [`command`]: scheduler commands with a timeout and errors that name them.
//! - [`slurm`]: `sbatch --parsable`, `squeue -t all`, `scancel`.
//! - [`pbs`]: `qsub`, `qstat -f -F json -x`, `qdel`.
//! - [`local`]: managers as child processes of the endpoint, restarted when they exit.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod command;
pub mod local;
pub mod pbs;
pub mod slurm;

/// The scheduler's name for a job (`1234`, `5678.pbs01`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is, in the scheduler's eyes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Waiting in the queue.
    Pending,
    /// Held or suspended: neither running nor about to.
    Held,
    Running,
    /// Ended on its own (its script returned).
    Completed,
    /// Ended in failure (non-zero exit, node failure, boot failure, out of memory).
    Failed,
    Cancelled,
    /// Its walltime (or deadline) passed.
    TimedOut,
    /// Preempted by the scheduler for other work.
    Preempted,
    /// Gone from the scheduler with no final state to read (it ended).
    Missing,
    /// A state this provider does not know: counted as alive (for `max_blocks`), and
    /// logged.
    Unknown,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Held => "held",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed-out",
            JobState::Preempted => "preempted",
            JobState::Missing => "missing",
            JobState::Unknown => "unknown",
        }
    }

    /// The job has ended and will not run (again).
    pub fn is_over(self) -> bool {
        matches!(
            self,
            JobState::Completed
                | JobState::Failed
                | JobState::Cancelled
                | JobState::TimedOut
                | JobState::Preempted
                | JobState::Missing
        )
    }
}

/// A job's state with the scheduler's own words for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub state: JobState,
    /// The scheduler's state name (`PENDING`, `NODE_FAIL`, `Q`, `F`).
    pub native: String,
    /// Why it waits or how it ended, when the scheduler says (`Resources`,
    /// `Insufficient amount of resource: ncpus`, `exit status 1`).
    pub reason: Option<String>,
}

impl JobStatus {
    pub fn new(state: JobState, native: impl Into<String>, reason: Option<String>) -> Self {
        Self {
            state,
            native: native.into(),
            reason: reason.filter(|r| !r.trim().is_empty()),
        }
    }
}

/// A block to submit: its script is written already.
#[derive(Debug, Clone)]
pub struct BlockJob {
    pub block_id: String,
    pub dir: PathBuf,
    pub script: PathBuf,
}

/// Why a scheduler command could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {}; it was killed", humantime::format_duration(*timeout))]
    TimedOut { command: String, timeout: Duration },
    #[error("{program} not found on PATH: is this a {program} host, or is a module to load missing?")]
    Missing { program: String },
    #[error("cannot run `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` printed what Ferry cannot read ({problem}): {output}")]
    Unreadable {
        command: String,
        problem: String,
        output: String,
    },
}

impl Error {
    pub(crate) fn unreadable(out: &command::Output, problem: impl Into<String>) -> Self {
        Error::Unreadable {
            command: out.command.clone(),
            problem: problem.into(),
            output: command::head(out.stdout.trim(), 500),
        }
    }
}

/// Submits, watches and cancels blocks.
pub trait Provider: Send + Sync + 'static {
    /// Submits a block; answers the scheduler's job id.
    fn submit(&self, block: &BlockJob) -> impl Future<Output = Result<JobId, Error>> + Send;
    /// The states of these jobs, in one call where the scheduler allows. A job the
    /// scheduler no longer knows is [`JobState::Missing`]; one left out of the answer is
    /// not known now (try again later).
    fn status(&self, jobs: &[JobId])
    -> impl Future<Output = Result<HashMap<JobId, JobStatus>, Error>> + Send;
    /// Cancels these jobs. A job that has ended already is not an error.
    fn cancel(&self, jobs: &[JobId]) -> impl Future<Output = Result<(), Error>> + Send;
}
