//! One worker slot: a `ferry-worker` process, restarted whenever it dies.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::FunctionId;
use ferry_proto::frames::{FromManager, FromWorker, ToWorker};
use ferry_proto::messages::{FunctionCode, TaskSpec};
use futures_util::{SinkExt, StreamExt};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::{SlotEvent, codec};

/// The manager's handle on a slot.
pub struct Slot {
    tasks: mpsc::UnboundedSender<(Arc<FunctionCode>, TaskSpec)>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Slot {
    /// Starts the slot's supervisor, which starts its worker and reports `Idle` once the
    /// worker is ready.
    pub(crate) fn spawn(index: usize, worker_bin: PathBuf, events: mpsc::UnboundedSender<SlotEvent>) -> Self {
        let (tasks, rx) = mpsc::unbounded_channel();
        let supervisor = tokio::spawn(supervise(index, worker_bin, rx, events));
        Self { tasks, supervisor }
    }

    /// Gives the slot a task; only call while it is idle.
    pub fn assign(&self, function: Arc<FunctionCode>, task: TaskSpec) {
        let _ = self.tasks.send((function, task));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

async fn supervise(
    index: usize,
    worker_bin: PathBuf,
    mut tasks: mpsc::UnboundedReceiver<(Arc<FunctionCode>, TaskSpec)>,
    events: mpsc::UnboundedSender<SlotEvent>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match run_worker(index, &worker_bin, &mut tasks, &events).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(slot = index, error = %e, "worker gone; starting another");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs one worker process until it dies (`Err`) or the manager goes away (`Ok`).
async fn run_worker(
    index: usize,
    worker_bin: &PathBuf,
    tasks: &mut mpsc::UnboundedReceiver<(Arc<FunctionCode>, TaskSpec)>,
    events: &mpsc::UnboundedSender<SlotEvent>,
) -> anyhow::Result<()> {
    let mut child = Command::new(worker_bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", worker_bin.display()))?;
    let mut to_worker = FramedWrite::new(child.stdin.take().expect("piped"), codec());
    let mut from_worker = FramedRead::new(child.stdout.take().expect("piped"), codec());
    let mut seen: HashSet<FunctionId> = HashSet::new();

    let ready = next_message(&mut from_worker).await?;
    let FromWorker::Ready { pid } = ready else {
        anyhow::bail!("worker spoke before it was ready");
    };
    tracing::debug!(slot = index, pid, "worker ready");
    let _ = events.send(SlotEvent::Idle(index));

    loop {
        let Some((function, task)) = tasks.recv().await else {
            return Ok(());
        };
        let first_time = seen.insert(function.function_id);
        let frame = ToWorker::Run {
            function: first_time.then(|| (*function).clone()),
            task: task.clone(),
        };
        let sent = to_worker
            .send(Bytes::from(ferry_proto::codec::encode(&frame)?))
            .await;
        let outcome = match sent {
            Ok(()) => relay_until_finished(&mut from_worker, events).await,
            Err(e) => Err(anyhow::anyhow!("cannot write to the worker: {e}")),
        };
        if let Err(e) = outcome {
            let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                Ok(Ok(s)) => describe(s),
                _ => {
                    let _ = child.kill().await;
                    "unresponsive, killed".to_owned()
                }
            };
            let reason = format!("worker {pid} died ({status}): {e}");
            tracing::warn!(task_id = %task.task_id, slot = index, %reason, "task lost");
            let _ = events.send(SlotEvent::Report(FromManager::Lost {
                task_id: task.task_id,
                attempt: task.attempt,
                at: ferry_proto::time::now_micros(),
                reason: reason.clone(),
            }));
            anyhow::bail!(reason);
        }
        let _ = events.send(SlotEvent::Idle(index));
    }
}

async fn relay_until_finished(
    from_worker: &mut FramedRead<tokio::process::ChildStdout, tokio_util::codec::LengthDelimitedCodec>,
    events: &mpsc::UnboundedSender<SlotEvent>,
) -> anyhow::Result<()> {
    loop {
        match next_message(from_worker).await? {
            FromWorker::Started { task_id, attempt, at } => {
                let _ = events.send(SlotEvent::Report(FromManager::Started { task_id, attempt, at }));
            }
            FromWorker::Finished(result) => {
                let _ = events.send(SlotEvent::Report(FromManager::Finished(result)));
                return Ok(());
            }
            FromWorker::Ready { .. } => anyhow::bail!("worker said ready twice"),
        }
    }
}

async fn next_message(
    from_worker: &mut FramedRead<tokio::process::ChildStdout, tokio_util::codec::LengthDelimitedCodec>,
) -> anyhow::Result<FromWorker> {
    let frame = from_worker
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("the worker closed its output"))??;
    Ok(ferry_proto::codec::decode(&frame)?)
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".to_owned(),
    }
}
