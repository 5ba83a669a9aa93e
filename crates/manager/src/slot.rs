//! One worker slot: a `ferry-worker` process, restarted whenever it dies.
//!
//! A slot keeps several tasks in its worker's pipe (the manager decides how many), so
//! the worker starts the next task the moment it finishes one. The worker runs them in
//! order: the oldest task in flight is the one running. If the worker dies, that task is
//! reported lost and the ones queued behind it go back to the manager untouched.
//!
//! A slot asked to withdraw ([`Slot::withdraw`]) asks its worker for the tasks it holds
//! that have not begun; those the worker gives back go back to the manager
//! ([`SlotEvent::Returned`]), untouched: they never ran here.
//!
//! A cancelled task is stopped by killing its worker: at once if it is running, the
//! moment it starts if it is queued in the pipe. It is reported lost with the reason
//! `cancelled` (its record is already terminal, so nothing retries it).
//!
//! A worker's processes end with it. The worker leads its own process group, which is
//! killed with it, and the manager is a child subreaper (`main`): the processes of a
//! dead worker, in its group or out of it (`setsid`, a double fork), are reparented to
//! the manager, which kills them once the worker is reaped ([`end_orphans`]): every
//! descendant of the manager but the live workers and theirs. That walk of `/proc`
//! happens only when a worker dies, never per task.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::frames::{FromManager, FromWorker, ToWorker};
use ferry_proto::messages::{FunctionCode, TaskSpec};
use ferry_proto::{BatchId, FunctionId, TaskId};
use futures_util::{SinkExt, StreamExt};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::{SlotEvent, codec};

/// What the manager tells a slot. Sent and consumed one at a time: boxing the task
/// would cost an allocation per task for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum SlotInput {
    Run(Arc<FunctionCode>, TaskSpec),
    Cancel(Arc<HashSet<TaskId>>),
    Withdraw,
    /// Passed on to the worker ([`ToWorker::Unreferenced`]).
    Unreferenced(Arc<str>),
    /// Passed on to the worker ([`ToWorker::SessionDone`]).
    SessionDone(BatchId),
}

/// The pids of the workers whose exit tokio has not collected yet: their processes are
/// not orphans, and their exit status is tokio's to reap.
static WORKERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn workers() -> HashSet<u32> {
    WORKERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect()
}

fn forget_worker(pid: u32) {
    WORKERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
}

/// How long ending a dead worker's orphans may take (a process stuck in the kernel
/// resists SIGKILL).
const ORPHANS_WITHIN: Duration = Duration::from_secs(2);

/// Kills every descendant of the manager but the workers tokio still waits for (and
/// their subtrees), round after round until none is left: what a dead worker left
/// running, reparented to the manager (a child subreaper) when the worker died. Only
/// when a worker has died, never per task.
pub(crate) async fn end_orphans(slot: usize, task: Option<TaskId>) {
    let deadline = tokio::time::Instant::now() + ORPHANS_WITHIN;
    let mut killed = HashSet::new();
    loop {
        let round = ferry_proctree::round(&workers());
        killed.extend(round.killed);
        let task_id = task.map(tracing::field::display);
        if round.remaining == 0 {
            if !killed.is_empty() {
                tracing::info!(
                    slot,
                    task_id,
                    killed = killed.len(),
                    "stopped the processes a dead worker left"
                );
            }
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::error!(
                slot,
                task_id,
                left = round.remaining,
                "processes a dead worker left resisted SIGKILL"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The manager's handle on a slot.
pub struct Slot {
    tasks: mpsc::UnboundedSender<SlotInput>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Slot {
    /// Starts the slot's supervisor, which starts its worker and reports `Ready` once
    /// the worker is up.
    pub(crate) fn spawn(index: usize, launch: Launch, events: mpsc::UnboundedSender<SlotEvent>) -> Self {
        let (tasks, rx) = mpsc::unbounded_channel();
        let supervisor = tokio::spawn(supervise(index, launch, rx, events));
        Self { tasks, supervisor }
    }

    /// Gives the slot a task.
    pub fn assign(&self, function: Arc<FunctionCode>, task: TaskSpec) {
        let _ = self.tasks.send(SlotInput::Run(function, task));
    }

    /// Asks for the tasks queued behind the running one back: answered by
    /// [`SlotEvent::Returned`] (possibly empty; one or two, as the worker answers), unless
    /// the worker dies first ([`SlotEvent::Gone`]).
    pub fn withdraw(&self) {
        let _ = self.tasks.send(SlotInput::Withdraw);
    }

    /// Tells the worker no task of `environment` is left at the endpoint.
    pub fn unreferenced(&self, environment: Arc<str>) {
        let _ = self.tasks.send(SlotInput::Unreferenced(environment));
    }

    /// Tells the worker no task of `session` is left at the endpoint.
    pub fn session_done(&self, session: BatchId) {
        let _ = self.tasks.send(SlotInput::SessionDone(session));
    }

    /// Stops whichever of these tasks the slot holds.
    pub fn cancel(&self, tasks: Arc<HashSet<TaskId>>) {
        let _ = self.tasks.send(SlotInput::Cancel(tasks));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

/// How a slot starts its worker.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// The `ferry-worker` binary.
    pub bin: PathBuf,
    /// The run directories' root, passed on as `FERRY_RUN_ROOT`.
    pub run_root: PathBuf,
}

async fn supervise(
    index: usize,
    launch: Launch,
    mut tasks: mpsc::UnboundedReceiver<SlotInput>,
    events: mpsc::UnboundedSender<SlotEvent>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match Worker::start(index, &launch, &events).await {
            Ok(mut worker) => {
                backoff = Duration::from_millis(100);
                match worker.serve(&mut tasks).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(slot = index, error = %e, "worker gone; starting another"),
                }
            }
            Err(e) => tracing::warn!(slot = index, error = %e, "cannot start a worker"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A running worker process and the tasks in its pipe.
struct Worker<'a> {
    index: usize,
    child: Child,
    pid: u32,
    to_worker: FramedWrite<tokio::process::ChildStdin, LengthDelimitedCodec>,
    from_worker: FramedRead<ChildStdout, LengthDelimitedCodec>,
    seen: HashSet<FunctionId>,
    in_flight: VecDeque<TaskSpec>,
    /// Tasks in the pipe to stop (by killing the worker) the moment they start.
    cancelled: HashSet<TaskId>,
    events: &'a mpsc::UnboundedSender<SlotEvent>,
}

impl Drop for Worker<'_> {
    /// The worker goes with its whole process group (its interpreter, the command a task
    /// runs and whatever that started), not only its own process: SIGKILL alone would
    /// leave them running as orphans. What left the group is reparented to the manager
    /// and ended by [`end_orphans`] (or, at the manager's stop, by its final sweep).
    fn drop(&mut self) {
        // Only while it is still alive: then its group id cannot belong to anyone else.
        if matches!(self.child.try_wait(), Ok(None))
            && let Some(pgid) = rustix::process::Pid::from_raw(self.pid as i32)
        {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        forget_worker(self.pid);
    }
}

impl<'a> Worker<'a> {
    async fn start(
        index: usize,
        launch: &Launch,
        events: &'a mpsc::UnboundedSender<SlotEvent>,
    ) -> anyhow::Result<Worker<'a>> {
        let worker_bin = &launch.bin;
        let mut child = {
            // Known as a worker from the moment it exists: a round of `end_orphans` never
            // sees it unlisted.
            let mut workers = WORKERS.lock().unwrap_or_else(|e| e.into_inner());
            let child = Command::new(worker_bin)
                .env("FERRY_RUN_ROOT", &launch.run_root)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                // Its own process group, so stopping a cancelled task kills the worker
                // with its interpreter and any command it runs.
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", worker_bin.display()))?;
            workers.extend(child.id());
            child
        };
        let to_worker = FramedWrite::new(child.stdin.take().expect("piped"), codec());
        let mut from_worker = FramedRead::new(child.stdout.take().expect("piped"), codec());
        let ready = next_message(&mut from_worker).await;
        let Ok(FromWorker::Ready { pid }) = ready else {
            // Dropped, so killed; tokio reaps it.
            forget_worker(child.id().unwrap_or(0));
            return Err(ready
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("worker spoke before it was ready")));
        };
        tracing::debug!(slot = index, pid, "worker ready");
        let _ = events.send(SlotEvent::Ready(index));
        Ok(Worker {
            index,
            child,
            pid,
            to_worker,
            from_worker,
            seen: HashSet::new(),
            in_flight: VecDeque::new(),
            cancelled: HashSet::new(),
            events,
        })
    }

    /// Feeds tasks to the worker and relays what it says, until the manager goes away
    /// (`Ok`) or the worker dies (`Err`, after settling its tasks).
    async fn serve(&mut self, tasks: &mut mpsc::UnboundedReceiver<SlotInput>) -> anyhow::Result<()> {
        loop {
            let outcome = tokio::select! {
                input = tasks.recv() => match input {
                    None => return Ok(()),
                    Some(input) => self.take(input, tasks).await,
                },
                frame = next_message(&mut self.from_worker) => match frame {
                    Ok(message) => self.relay(message),
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = outcome {
                self.died(e).await?;
            }
        }
    }

    /// Handles `first` and every input already queued behind it, then flushes once:
    /// tasks handed over together reach the worker in one write, not one each.
    async fn take(
        &mut self,
        first: SlotInput,
        tasks: &mut mpsc::UnboundedReceiver<SlotInput>,
    ) -> anyhow::Result<()> {
        let mut next = Some(first);
        while let Some(input) = next {
            match input {
                SlotInput::Run(function, task) => self.feed(&function, task).await?,
                SlotInput::Cancel(ids) => self.cancel(&ids)?,
                SlotInput::Withdraw if self.in_flight.len() < 2 => {
                    let _ = self.events.send(SlotEvent::Returned(self.index, Vec::new()));
                }
                SlotInput::Withdraw => self.say(&ToWorker::Withdraw).await?,
                SlotInput::Unreferenced(environment) => {
                    let environment = environment.to_string();
                    self.say(&ToWorker::Unreferenced { environment }).await?;
                }
                SlotInput::SessionDone(session) => self.say(&ToWorker::SessionDone { session }).await?,
            }
            next = tasks.try_recv().ok();
        }
        SinkExt::<Bytes>::flush(&mut self.to_worker)
            .await
            .map_err(|e| anyhow::anyhow!("cannot write to the worker: {e}"))
    }

    /// Queues a frame for the worker (written at the next flush).
    async fn say(&mut self, frame: &ToWorker) -> anyhow::Result<()> {
        let frame = Bytes::from(ferry_proto::codec::encode(frame)?);
        self.to_worker
            .feed(frame)
            .await
            .map_err(|e| anyhow::anyhow!("cannot write to the worker: {e}"))
    }

    async fn feed(&mut self, function: &FunctionCode, task: TaskSpec) -> anyhow::Result<()> {
        let first_time = self.seen.insert(function.function_id);
        let frame = ToWorker::Run {
            function: first_time.then(|| function.clone()),
            task: task.clone(),
        };
        self.in_flight.push_back(task);
        self.to_worker
            .feed(Bytes::from(ferry_proto::codec::encode(&frame)?))
            .await
            .map_err(|e| anyhow::anyhow!("cannot write to the worker: {e}"))
    }

    /// Marks the held tasks among `ids`; kills the worker if one of them is running.
    fn cancel(&mut self, ids: &HashSet<TaskId>) -> anyhow::Result<()> {
        self.cancelled.extend(
            self.in_flight
                .iter()
                .map(|t| t.task_id)
                .filter(|id| ids.contains(id)),
        );
        match self.in_flight.front() {
            Some(running) if self.cancelled.contains(&running.task_id) => self.stop(running.task_id),
            _ => Ok(()),
        }
    }

    fn stop(&mut self, task_id: TaskId) -> anyhow::Result<()> {
        if let Some(pgid) = self
            .child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        let _ = self.child.start_kill();
        anyhow::bail!("stopped for cancelled task {task_id}")
    }

    fn relay(&mut self, message: FromWorker) -> anyhow::Result<()> {
        match message {
            FromWorker::Started { task_id, .. } if self.cancelled.contains(&task_id) => {
                return self.stop(task_id);
            }
            FromWorker::Started { task_id, attempt, at } => {
                let _ = self
                    .events
                    .send(SlotEvent::Report(FromManager::Started { task_id, attempt, at }));
            }
            FromWorker::Finished(result) => {
                if self.in_flight.front().map(|t| t.task_id) != Some(result.task_id) {
                    anyhow::bail!("worker finished task {} out of order", result.task_id);
                }
                self.in_flight.pop_front();
                self.cancelled.remove(&result.task_id);
                let _ = self.events.send(SlotEvent::Report(FromManager::Finished(result)));
                let _ = self.events.send(SlotEvent::Done(self.index));
            }
            FromWorker::Withdrawn { task_ids } => {
                let back: HashSet<TaskId> = task_ids.into_iter().collect();
                let (returned, kept): (Vec<TaskSpec>, Vec<TaskSpec>) =
                    self.in_flight.drain(..).partition(|t| back.contains(&t.task_id));
                if returned.len() != back.len() {
                    anyhow::bail!(
                        "worker gave back {} tasks it was not holding",
                        back.len() - returned.len()
                    );
                }
                self.in_flight = kept.into();
                for task in &returned {
                    self.cancelled.remove(&task.task_id);
                }
                let _ = self.events.send(SlotEvent::Returned(self.index, returned));
            }
            FromWorker::Ready { .. } => anyhow::bail!("worker said ready twice"),
        }
        Ok(())
    }

    /// The worker is gone: its running task is lost, the ones behind it go back.
    async fn died(&mut self, cause: anyhow::Error) -> anyhow::Result<()> {
        let status = match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(s)) => describe(s),
            _ => {
                let _ = self.child.kill().await;
                "unresponsive, killed".to_owned()
            }
        };
        // Reaped: what it left running (reparented here) goes now.
        forget_worker(self.pid);
        end_orphans(self.index, self.in_flight.front().map(|t| t.task_id)).await;
        let reason = format!("worker {} died ({status}): {cause}", self.pid);
        let at = ferry_proto::time::now_micros();
        let cancelled = std::mem::take(&mut self.cancelled);
        let lost = |task: &TaskSpec, reason: String| FromManager::Lost {
            task_id: task.task_id,
            attempt: task.attempt,
            at,
            reason,
        };
        if let Some(running) = self.in_flight.pop_front() {
            if cancelled.contains(&running.task_id) {
                tracing::info!(task_id = %running.task_id, slot = self.index, "cancelled task stopped");
                let _ = self
                    .events
                    .send(SlotEvent::Report(lost(&running, "cancelled".to_owned())));
            } else {
                tracing::warn!(task_id = %running.task_id, slot = self.index, %reason, "task lost");
                let _ = self.events.send(SlotEvent::Died(lost(&running, reason.clone())));
            }
        }
        let (dropped, waiting): (Vec<TaskSpec>, Vec<TaskSpec>) = self
            .in_flight
            .drain(..)
            .partition(|t| cancelled.contains(&t.task_id));
        for task in &dropped {
            let _ = self
                .events
                .send(SlotEvent::Report(lost(task, "cancelled".to_owned())));
        }
        let _ = self.events.send(SlotEvent::Gone(self.index, waiting));
        anyhow::bail!(reason)
    }
}

async fn next_message(
    from_worker: &mut FramedRead<ChildStdout, LengthDelimitedCodec>,
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
