//! Ferry's manager: one per node. It connects to its endpoint over TLS, accepting only
//! the endpoint certificate it was told to pin, and proves it knows the endpoint's
//! secret (`link`); it keeps a fixed number of worker processes ([`slot`]), hands each
//! its tasks, and forwards what they report. A worker that dies is replaced; the task it
//! held is reported lost.
//!
//! No task waits behind a long one while a worker is idle. Each slot holds up to
//! `tasks_per_worker` tasks (the one running and those queued in its worker's pipe), so
//! short tasks follow each other without a round trip; a slot whose task has run for
//! `steal_after_ms` takes no more, and when another slot is idle it is asked for the
//! tasks queued behind its long one back ([`slot::Slot::withdraw`]): they go to the
//! idle workers.
//!
//! In a block with an end (a batch job's walltime), the manager drains `drain_secs`
//! before it: it takes no more tasks, gives back the ones it has not started, finishes
//! what runs, and exits once idle, so the block ends early rather than under a task.
//! When the scheduler ends the block anyway (SIGTERM at the walltime, a cancel, a
//! preemption), it tells the endpoint it is leaving first: its tasks go back to the
//! queue without being charged an attempt.

mod link;
pub mod node;
pub mod simulate;
pub mod slot;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::frames::{CertFingerprint, FromManager, ManagerInfo, ToManager};
use ferry_proto::messages::{FunctionCode, FunctionKind, TaskSpec};
use ferry_proto::{FunctionId, ManagerId, TaskId};
use futures_util::SinkExt;
use link::{FromEndpoint, Link, ToEndpoint};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::LengthDelimitedCodec;
use tokio_util::sync::CancellationToken;

/// How long a worker's death is held back before it is reported: when the scheduler
/// ends a block it signals every process at once, and a worker may die a moment before
/// the manager hears of it; its task then goes back with the block, not charged.
const DEATH_GRACE: Duration = Duration::from_secs(1);

/// When stopped, the manager takes what its workers report until they have been quiet
/// this long (results already in their pipes)...
const LEAVE_SETTLE_QUIET: Duration = Duration::from_millis(100);
/// ...but no longer than this: the scheduler's SIGKILL follows its SIGTERM.
const LEAVE_SETTLE_MAX: Duration = Duration::from_millis(500);

/// How long a finished task's run directory is kept by default: a week.
pub const DEFAULT_KEEP_RUN_DIRS_SECS: u64 = 7 * 24 * 3600;
/// How often run directories past their keep time are looked for: every minute, or
/// every half keep time when that is shorter (at least every second).
fn sweep_every(keep: Duration) -> Duration {
    (keep / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The manager's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// The endpoint's manager address (`host:port`).
    #[arg(long, env = "FERRY_ENDPOINT_ADDR")]
    pub endpoint: String,
    /// The SHA-256 of the endpoint's certificate (64 hex digits, colons allowed): the
    /// manager talks to no endpoint but the one holding it. The endpoint logs it at
    /// start, `ferry-endpoint status NAME` shows it, its block scripts export it.
    #[arg(long, env = "FERRY_ENDPOINT_CERT_SHA256")]
    pub endpoint_cert_sha256: Option<CertFingerprint>,
    /// Worker processes to keep: a number, or `auto` for one per core available here.
    #[arg(long, env = "FERRY_WORKERS", default_value = "2", value_parser = parse_workers)]
    pub workers: u32,
    /// Tasks each worker holds at once: the one running and those queued behind it.
    #[arg(long, env = "FERRY_TASKS_PER_WORKER", default_value_t = 16)]
    pub tasks_per_worker: u32,
    /// After how long a running task counts as long: its slot takes no more tasks, and
    /// the ones queued behind it are taken back for an idle worker. 0: never.
    #[arg(long, env = "FERRY_STEAL_AFTER_MS", default_value_t = 10)]
    pub steal_after_ms: u64,
    /// Labels of this node that tasks may require (`"requires": {"tags": [...]}`),
    /// separated by commas or spaces: `avx512,bigmem`.
    #[arg(long, env = "FERRY_NODE_TAGS", default_value = "", value_parser = node::parse_tags)]
    pub tags: node::Tags,
    /// GPUs tasks here may use (default: those `CUDA_VISIBLE_DEVICES` lists, else the
    /// NVIDIA devices in /dev).
    #[arg(long, env = "FERRY_NODE_GPUS")]
    pub gpus: Option<u32>,
    /// The `ferry-worker` binary (default: next to this one).
    #[arg(long, env = "FERRY_WORKER_BIN")]
    pub worker_bin: Option<PathBuf>,
    /// The provider block this manager was started in.
    #[arg(long, env = "FERRY_BLOCK_ID")]
    pub block_id: Option<String>,
    /// How often to tell the endpoint this manager is alive, in milliseconds.
    #[arg(long, env = "FERRY_MANAGER_HEARTBEAT_MS", default_value_t = 2000)]
    pub heartbeat_interval_ms: u64,
    /// The endpoint's manager secret (its `manager.secret` file). Read from the
    /// environment so that it never shows on a command line.
    #[arg(long, env = "FERRY_MANAGER_SECRET", hide_env_values = true, hide = true)]
    pub secret: Option<String>,
    /// A file holding the endpoint's manager secret (instead of FERRY_MANAGER_SECRET).
    #[arg(long, env = "FERRY_MANAGER_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Unix seconds when this manager's block ends (its walltime).
    #[arg(long, env = "FERRY_BLOCK_END")]
    pub block_end: Option<u64>,
    /// Higher first when the endpoint's strategy is `fill-by-priority`: its managers by
    /// priority, each filled to capacity before the next.
    #[arg(
        long,
        env = "FERRY_MANAGER_PRIORITY",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    pub priority: i32,
    /// Stop taking tasks this many seconds before the block ends.
    #[arg(long, env = "FERRY_DRAIN_SECS", default_value_t = 0)]
    pub drain_secs: u64,
    /// Where tasks' run directories go (the endpoint's `run_dir`); default
    /// `$FERRY_HOME/runs`, else `~/.ferry/runs`.
    #[arg(long, env = "FERRY_RUN_ROOT")]
    pub run_root: Option<PathBuf>,
    /// How long a finished task's run directory is kept (if it holds anything), in
    /// seconds; the manager removes older ones every minute (every half keep time when
    /// that is shorter).
    #[arg(long, env = "FERRY_KEEP_RUN_DIRS_SECS", default_value_t = DEFAULT_KEEP_RUN_DIRS_SECS)]
    pub keep_run_dirs_secs: u64,
    /// Load generator: connect this many fake managers whose workers finish every task
    /// at once (no worker processes), to measure an endpoint's dispatch rate.
    #[arg(long, default_value_t = 0)]
    pub simulate: u32,
}

/// A number, or `auto`: the cores the scheduler gave this node (`SLURM_CPUS_ON_NODE`,
/// PBS's `NCPUS`), else those this process may run on.
fn parse_workers(text: &str) -> Result<u32, String> {
    if text == "auto" {
        let from_scheduler = ["SLURM_CPUS_ON_NODE", "NCPUS"]
            .iter()
            .find_map(|v| std::env::var(v).ok()?.trim().parse::<u32>().ok())
            .filter(|&n| n > 0);
        return Ok(from_scheduler
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32)));
    }
    match text.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{text:?}: a number of workers (at least 1) or `auto`")),
    }
}

impl Config {
    /// The secret, from the environment or the file.
    pub fn secret(&self) -> anyhow::Result<String> {
        if let Some(s) = self.secret.as_ref().filter(|s| !s.trim().is_empty()) {
            return Ok(s.trim().to_owned());
        }
        if let Some(path) = &self.secret_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read the secret file {}: {e}", path.display()))?;
            return Ok(text.trim().to_owned());
        }
        anyhow::bail!(
            "no manager secret: set FERRY_MANAGER_SECRET or --secret-file to the endpoint's \
             (~/.ferry/endpoints/<name>/manager.secret)"
        )
    }

    /// The pin of the endpoint's certificate; a manager without one does not start.
    pub fn endpoint_cert(&self) -> anyhow::Result<CertFingerprint> {
        self.endpoint_cert_sha256.ok_or_else(|| {
            anyhow::anyhow!(
                "no pin of the endpoint's certificate: set FERRY_ENDPOINT_CERT_SHA256 (or \
                 --endpoint-cert-sha256) to the SHA-256 the endpoint logs when it starts \
                 (`ferry-endpoint status <name>` shows it too, and the endpoint's block scripts export it)"
            )
        })
    }

    /// How to reach the endpoint and prove both ends.
    fn link(&self) -> anyhow::Result<Link> {
        let pin = self.endpoint_cert()?;
        Ok(Link::new(&self.endpoint, pin, &self.secret()?))
    }
}

pub(crate) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(ferry_proto::codec::MAX_MESSAGE_BYTES)
        .new_codec()
}

/// What a slot tells the manager.
pub(crate) enum SlotEvent {
    /// Forward to the endpoint.
    Report(FromManager),
    /// The slot's worker died under a task: forward after `DEATH_GRACE` (see there).
    Died(FromManager),
    /// The slot's worker is up and empty.
    Ready(usize),
    /// The slot finished a task.
    Done(usize),
    /// The slot's worker died; these tasks never started and go back to the queue.
    Gone(usize, Vec<TaskSpec>),
    /// The answer to a withdrawal: these tasks never started and go back to the queue.
    Returned(usize, Vec<TaskSpec>),
}

fn encode(m: &FromManager) -> anyhow::Result<Bytes> {
    Ok(ferry_proto::codec::encode(m).map(Bytes::from)?)
}

/// Runs until the endpoint closes the connection, `shutdown` is cancelled, or a
/// drained manager has nothing left to do.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let link = config.link()?;
    if config.simulate > 0 {
        return simulate::run(config.clone(), link, config.simulate, shutdown).await;
    }
    let manager_id = ManagerId::new();
    let info = ManagerInfo {
        manager_id,
        hostname: hostname(),
        workers: config.workers,
        capacity: config.workers * config.tasks_per_worker.max(1),
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_bytes: node::memory_bytes(),
        gpus: node::gpus(config.gpus),
        tags: config.tags.0.clone(),
        block_id: config.block_id.clone(),
        block_end: config.block_end,
        priority: config.priority,
    };
    let (from_endpoint, to_endpoint) = link.handshake(info).await?;
    tracing::info!(%manager_id, endpoint = %config.endpoint, workers = config.workers, block_id = ?config.block_id, "manager registered");
    let worker_bin = match &config.worker_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("ferry-worker"),
    };
    let run_root = config.run_root.clone().unwrap_or_else(ferry_rundir::default_root);
    let sweeper = tokio::spawn(sweep_run_dirs(
        run_root.clone(),
        Duration::from_secs(config.keep_run_dirs_secs),
    ));
    let _sweeper = ferry_telemetry::AbortOnDrop(sweeper);
    let launch = slot::Launch {
        bin: worker_bin,
        run_root,
    };
    let (events_tx, events) = mpsc::unbounded_channel();
    let slots: Vec<slot::Slot> = (0..config.workers as usize)
        .map(|index| slot::Slot::spawn(index, launch.clone(), events_tx.clone()))
        .collect();
    let drain_at = config.block_end.map(|end| {
        let now = ferry_proto::time::now_micros() / 1_000_000;
        let secs = end.saturating_sub(config.drain_secs).saturating_sub(now);
        Instant::now() + Duration::from_secs(secs)
    });
    let manager = Manager {
        load: vec![None; slots.len()],
        since: vec![Instant::now(); slots.len()],
        withdrawing: vec![false; slots.len()],
        fruitless: vec![false; slots.len()],
        hosts: vec![None; slots.len()],
        steal_after: (config.steal_after_ms > 0).then(|| Duration::from_millis(config.steal_after_ms)),
        slots,
        depth: config.tasks_per_worker.max(1),
        queue: VecDeque::new(),
        cancelled: HashSet::new(),
        functions: HashMap::new(),
        to_endpoint,
        deaths: VecDeque::new(),
        draining: false,
    };
    manager
        .serve(
            from_endpoint,
            events,
            config.heartbeat_interval_ms,
            drain_at,
            shutdown,
        )
        .await
}

/// Every [`sweep_every`], removes the finished tasks' run directories kept longer than
/// `keep` (see `ferry_rundir`). Several managers may share the root: harmless.
async fn sweep_run_dirs(root: PathBuf, keep: Duration) {
    loop {
        let at = root.clone();
        match tokio::task::spawn_blocking(move || ferry_rundir::sweep(&at, keep)).await {
            Ok(Ok(swept)) if swept.removed > 0 => {
                tracing::info!(root = %root.display(), removed = swept.removed, "run directories past their keep time removed");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(root = %root.display(), error = %e, "cannot sweep run directories"),
            Err(_) => {}
        }
        tokio::time::sleep(sweep_every(keep)).await;
    }
}

/// The manager's state while it serves.
struct Manager {
    slots: Vec<slot::Slot>,
    /// Tasks each slot holds; `None` while its worker is (re)starting.
    load: Vec<Option<u32>>,
    /// When each slot's running task began (as far as the manager knows: when the one
    /// before it finished, or when it was handed to an idle slot).
    since: Vec<Instant>,
    /// Slots asked for their queued tasks back, not answered yet.
    withdrawing: Vec<bool>,
    /// Slots whose last withdrawal gave nothing back: not asked again until they finish
    /// a task or are given one (else a slot whose queued tasks have all begun, as its
    /// worker sees it, would be asked in a loop).
    fruitless: Vec<bool>,
    /// The task environment of the Python host each slot's worker has, or will have
    /// once it reaches the last Python task handed to it: `Some(None)` the default one,
    /// `None` not known (no Python task yet: with task environments, no host).
    hosts: Vec<Option<Option<String>>>,
    /// When a running task counts as long (`None`: never).
    steal_after: Option<Duration>,
    depth: u32,
    queue: VecDeque<TaskSpec>,
    /// Tasks cancelled lately: one may still come back from a slot whose worker died
    /// (stopped for another cancel) after its own cancel went by.
    cancelled: HashSet<TaskId>,
    functions: HashMap<FunctionId, Arc<FunctionCode>>,
    to_endpoint: ToEndpoint,
    /// Worker deaths held for `DEATH_GRACE`, with when each is due.
    deaths: VecDeque<(Instant, FromManager)>,
    /// The block ends soon: no more tasks.
    draining: bool,
}

impl Manager {
    async fn serve(
        mut self,
        mut from_endpoint: FromEndpoint,
        mut events: mpsc::UnboundedReceiver<SlotEvent>,
        heartbeat_ms: u64,
        drain_at: Option<Instant>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut heartbeat = tokio::time::interval(Duration::from_millis(heartbeat_ms.max(100)));
        loop {
            let death_due = self.deaths.front().map(|(at, _)| *at);
            let steal_due = self.steal_due();
            tokio::select! {
                frame = link::next_frame(&mut from_endpoint) => {
                    let Some(frame) = frame else {
                        tracing::info!("endpoint closed the connection; stopping");
                        break;
                    };
                    match ferry_proto::codec::decode::<ToManager>(&frame?) {
                        Ok(ToManager::Run { functions, tasks }) => self.take(functions, tasks).await?,
                        Ok(ToManager::Cancel { task_ids }) => self.cancel(task_ids).await?,
                        Ok(ToManager::Unreferenced { environment }) => self.unreferenced(environment),
                        Ok(ToManager::SessionDone { session }) => {
                            for slot in &self.slots {
                                slot.session_done(session);
                            }
                        }
                        Ok(ToManager::Shutdown) => break,
                        Ok(ToManager::Refused { reason }) => anyhow::bail!("the endpoint refused this manager: {reason}"),
                        Ok(ToManager::Hello { .. }) => anyhow::bail!("the endpoint greeted twice"),
                        Err(e) => anyhow::bail!("malformed frame from the endpoint: {e}"),
                    }
                }
                Some(event) = events.recv() => {
                    // Take every event already waiting, so one flush carries them all.
                    let mut next = Some(event);
                    while let Some(event) = next {
                        self.on_slot(event).await?;
                        next = events.try_recv().ok();
                    }
                }
                _ = until(death_due) => {
                    let now = Instant::now();
                    while let Some((at, _)) = self.deaths.front() && *at <= now {
                        let (_, lost) = self.deaths.pop_front().expect("front");
                        self.to_endpoint.feed(encode(&lost)?).await?;
                    }
                }
                _ = until(drain_at), if !self.draining => self.drain().await?,
                _ = until(steal_due) => {}
                _ = heartbeat.tick() => {
                    let idle = self.load.iter().filter(|l| **l == Some(0)).count() as u32;
                    let beat = FromManager::Heartbeat { at: ferry_proto::time::now_micros(), idle_workers: idle };
                    self.to_endpoint.feed(encode(&beat)?).await?;
                }
                _ = shutdown.cancelled() => {
                    self.leave(&mut events).await?;
                    break;
                }
            }
            self.fill_slots();
            self.steal();
            SinkExt::<Bytes>::flush(&mut self.to_endpoint).await?;
            if self.draining && self.idle() {
                tracing::info!("drained: nothing left to run before the block ends; stopping");
                break;
            }
        }
        // End TLS properly (close_notify), so the endpoint reads a close, not an error.
        let _ = SinkExt::<Bytes>::close(&mut self.to_endpoint).await;
        drop(self.slots);
        Ok(())
    }

    async fn take(&mut self, code: Vec<FunctionCode>, tasks: Vec<TaskSpec>) -> anyhow::Result<()> {
        for f in code {
            self.functions.insert(f.function_id, Arc::new(f));
        }
        if self.draining {
            // Sent before the endpoint heard this manager drains: give them back.
            let returned = tasks.iter().map(|t| (t.task_id, t.attempt)).collect();
            self.to_endpoint
                .feed(encode(&FromManager::Draining { returned })?)
                .await?;
            return Ok(());
        }
        self.queue.extend(tasks);
        Ok(())
    }

    async fn cancel(&mut self, task_ids: Vec<TaskId>) -> anyhow::Result<()> {
        if self.cancelled.len() > 100_000 {
            self.cancelled.clear();
        }
        self.cancelled.extend(task_ids.iter().copied());
        let cancel: HashSet<TaskId> = task_ids.into_iter().collect();
        // Queued here: drop them, and say so (which frees them on the endpoint's side).
        // In a slot: the slot stops them.
        let at = ferry_proto::time::now_micros();
        for task in self.queue.iter().filter(|t| cancel.contains(&t.task_id)) {
            let lost = FromManager::Lost {
                task_id: task.task_id,
                attempt: task.attempt,
                at,
                reason: "cancelled".to_owned(),
            };
            self.to_endpoint.feed(encode(&lost)?).await?;
        }
        self.queue.retain(|t| !cancel.contains(&t.task_id));
        let cancel = Arc::new(cancel);
        for slot in &self.slots {
            slot.cancel(cancel.clone());
        }
        Ok(())
    }

    async fn on_slot(&mut self, event: SlotEvent) -> anyhow::Result<()> {
        match event {
            SlotEvent::Report(report) => self.to_endpoint.feed(encode(&report)?).await?,
            SlotEvent::Died(lost) => self.deaths.push_back((Instant::now() + DEATH_GRACE, lost)),
            SlotEvent::Ready(index) => {
                self.load[index] = Some(0);
                self.withdrawing[index] = false;
                self.fruitless[index] = false;
                self.hosts[index] = None;
            }
            SlotEvent::Done(index) => {
                if let Some(n) = self.load[index].as_mut() {
                    *n = n.saturating_sub(1);
                }
                self.fruitless[index] = false;
                self.since[index] = Instant::now();
            }
            SlotEvent::Gone(index, waiting) => {
                self.load[index] = None;
                self.withdrawing[index] = false;
                self.requeue(waiting).await?;
            }
            SlotEvent::Returned(index, returned) => {
                self.withdrawing[index] = false;
                self.fruitless[index] = returned.is_empty();
                if let Some(n) = self.load[index].as_mut() {
                    *n = n.saturating_sub(returned.len() as u32);
                }
                if !returned.is_empty() {
                    tracing::debug!(
                        slot = index,
                        returned = returned.len(),
                        "tasks taken back from behind a long task"
                    );
                }
                self.requeue(returned).await?;
            }
        }
        Ok(())
    }

    /// Tasks that never started go back to the front of the queue, in their order (a
    /// cancelled one is reported lost instead).
    async fn requeue(&mut self, tasks: Vec<TaskSpec>) -> anyhow::Result<()> {
        for task in tasks.into_iter().rev() {
            if self.cancelled.contains(&task.task_id) {
                let lost = FromManager::Lost {
                    task_id: task.task_id,
                    attempt: task.attempt,
                    at: ferry_proto::time::now_micros(),
                    reason: "cancelled".to_owned(),
                };
                self.to_endpoint.feed(encode(&lost)?).await?;
            } else {
                self.queue.push_front(task);
            }
        }
        Ok(())
    }

    /// Whether slot `i` runs a long task (see [`Config::steal_after_ms`]).
    fn long_running(&self, i: usize, now: Instant) -> bool {
        self.steal_after
            .is_some_and(|after| self.load[i].is_some_and(|n| n > 0) && now >= self.since[i] + after)
    }

    /// Fills the least loaded ready slot first, one task at a time, so work spreads; a
    /// slot running a long task takes none. Among slots as loaded, a Python task goes to
    /// one whose host is of its task environment, else to one without a host, else to
    /// one whose host it replaces (docs/scheduling.md#task-environments).
    fn fill_slots(&mut self) {
        let now = Instant::now();
        while let Some(task) = self.queue.front() {
            let Some(function) = self.functions.get(&task.function_id).cloned() else {
                tracing::error!(task_id = %task.task_id, function_id = %task.function_id, "task for a function the endpoint never sent");
                self.queue.pop_front();
                continue;
            };
            let python = function.kind == FunctionKind::Python;
            let fit = |host: &Option<Option<String>>| match host {
                _ if !python => 0,
                Some(env) if *env == task.environment => 0,
                None => 1,
                Some(_) => 2,
            };
            let Some(index) = (0..self.slots.len())
                .filter(|&i| self.load[i].is_some_and(|n| n < self.depth) && !self.long_running(i, now))
                .min_by_key(|&i| (self.load[i], fit(&self.hosts[i])))
            else {
                break;
            };
            if self.load[index] == Some(0) {
                self.since[index] = now;
            }
            let task = self.queue.pop_front().expect("not empty");
            if let Some(n) = self.load[index].as_mut() {
                *n += 1;
            }
            self.fruitless[index] = false;
            if python && self.hosts[index].as_ref() != Some(&task.environment) {
                self.hosts[index] = Some(task.environment.clone());
            }
            self.slots[index].assign(function, task);
        }
    }

    /// No task of `environment` is left at the endpoint: every worker hears it (one
    /// whose idle host is of it replaces it, when the environment says so).
    fn unreferenced(&mut self, environment: String) {
        for i in 0..self.slots.len() {
            if self.load[i] == Some(0)
                && self.hosts[i]
                    .as_ref()
                    .is_some_and(|h| h.as_deref() == Some(&*environment))
            {
                self.hosts[i] = None;
            }
        }
        let environment: Arc<str> = environment.into();
        for slot in &self.slots {
            slot.unreferenced(environment.clone());
        }
    }

    /// While a worker is idle and nothing waits here, asks every slot running a long
    /// task with tasks queued behind it for them back.
    fn steal(&mut self) {
        if !self.queue.is_empty() || !self.load.contains(&Some(0)) {
            return;
        }
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if !self.withdrawing[i]
                && !self.fruitless[i]
                && self.load[i].is_some_and(|n| n >= 2)
                && self.long_running(i, now)
            {
                self.withdrawing[i] = true;
                self.slots[i].withdraw();
            }
        }
    }

    /// When a slot's running task next becomes long while tasks wait behind it and a
    /// worker is idle: the next [`Manager::steal`] is due then.
    fn steal_due(&self) -> Option<Instant> {
        let after = self.steal_after?;
        if !self.load.contains(&Some(0)) {
            return None;
        }
        (0..self.slots.len())
            .filter(|&i| !self.withdrawing[i] && !self.fruitless[i] && self.load[i].is_some_and(|n| n >= 2))
            .map(|i| self.since[i] + after)
            .min()
    }

    /// The block ends soon: take nothing more and give back what has not reached a
    /// worker.
    async fn drain(&mut self) -> anyhow::Result<()> {
        self.draining = true;
        let returned: Vec<(TaskId, u32)> = self.queue.drain(..).map(|t| (t.task_id, t.attempt)).collect();
        tracing::info!(returned = returned.len(), "the block ends soon: draining");
        self.to_endpoint
            .feed(encode(&FromManager::Draining { returned })?)
            .await?;
        Ok(())
    }

    /// Nothing queued, no worker holding a task, no death still to report.
    fn idle(&self) -> bool {
        self.queue.is_empty() && self.deaths.is_empty() && self.load.iter().all(|l| l.unwrap_or(0) == 0)
    }

    /// Stopped (SIGTERM: the scheduler ends the block): says so before the workers go,
    /// so the endpoint puts what they held back in the queue uncharged. What the workers
    /// already reported (a result written just before the signal reached them) is taken
    /// and forwarded first: a finished task's result is never dropped with the block,
    /// which would run the task again.
    async fn leave(&mut self, events: &mut mpsc::UnboundedReceiver<SlotEvent>) -> anyhow::Result<()> {
        let reason = "the manager was told to stop (SIGTERM): its block is ending".to_owned();
        tracing::info!("{reason}; telling the endpoint");
        let settle_by = Instant::now() + LEAVE_SETTLE_MAX;
        loop {
            let quiet = (Instant::now() + LEAVE_SETTLE_QUIET).min(settle_by);
            match tokio::time::timeout_at(quiet, events.recv()).await {
                Ok(Some(event)) => self.on_slot(event).await?,
                Ok(None) | Err(_) => break,
            }
        }
        self.to_endpoint
            .feed(encode(&FromManager::Leaving { reason })?)
            .await?;
        while let Some((_, lost)) = self.deaths.pop_front() {
            self.to_endpoint.feed(encode(&lost)?).await?;
        }
        SinkExt::<Bytes>::flush(&mut self.to_endpoint).await?;
        Ok(())
    }
}

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}
