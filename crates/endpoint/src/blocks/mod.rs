//! Blocks: the endpoint's allocations, submitted, watched and cancelled through its
//! [`Provider`], and scaled to the work ([`strategy`]).
//!
//! Two sources tell a block's story, and both are used. Managers connecting back (and
//! what they hold, from the interchange's [`Capacity`]) are the fast signal: a block is
//! running once a manager of it connects. The scheduler, asked every `poll_period` (more
//! often while a block is on its way), says why a block waits and how it ended; a
//! failed poll changes nothing (a state is never guessed from a silent scheduler).
//!
//! Failures do not spin: a refused submission, or a block that ends before any manager
//! of it connected (bad `worker_init`, a network the nodes cannot cross), backs
//! submissions off (5 s, doubling, at most 5 minutes), and after `max_failures` in a
//! row scaling pauses, says why in the endpoint's status, and tries again every 10
//! minutes. A block whose manager connects resets the count.
//!
//! Each batch block has a directory, `<endpoint dir>/blocks/<id>/`: `submit.sh` (the
//! forged script), `job_id`, and `job.out` (what the job printed). The newest 20 ended
//! blocks keep theirs. `blocks.json` in the endpoint directory is the current
//! [`ProviderReport`], for `ferry-endpoint status`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_proto::messages::{BlockReport, ProviderReport};
use ferry_proto::time::now_micros;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{ProviderConfig, ProviderKind};
use crate::forge::BlockScript;
use crate::interchange::Capacity;
use crate::provider::{BlockJob, JobId, JobState, JobStatus, Provider};

mod files;
pub mod strategy;

use files::{create_private_dir, job_output_head, next_block_id, write_report};
pub use files::{read_report, report_path};

/// The longest wait between two submissions after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often a paused endpoint tries a block again.
const PAUSED_RETRY: Duration = Duration::from_secs(600);
/// How often the scheduler is asked while a block is on its way, at most.
const WAITING_POLL: Duration = Duration::from_secs(5);
/// Ended blocks kept in the report and on disk.
const KEEP_ENDED: usize = 20;

/// What a batch block's script is made from (none for the local provider).
#[derive(Debug, Clone)]
pub struct Forge {
    pub endpoint_name: String,
    /// `host:port` managers connect to.
    pub endpoint_address: String,
    pub secret: String,
    /// The SHA-256 of the endpoint's certificate, which the managers pin.
    pub cert_sha256: ferry_proto::frames::CertFingerprint,
    pub manager_bin: PathBuf,
    /// The template's text (the config's file, or Ferry's own).
    pub template: String,
}

/// One block as the endpoint knows it.
#[derive(Debug, Clone)]
struct Block {
    id: String,
    job: Option<JobId>,
    /// The scheduler's last word on it.
    status: Option<JobStatus>,
    submitted_at: u64,
    /// A manager of it has connected.
    connected: bool,
    /// When the scheduler first said it runs.
    running_since: Option<Instant>,
    managers: u32,
    draining: u32,
    tasks: u32,
    idle_since: Option<Instant>,
    /// The endpoint asked the scheduler to cancel it.
    cancelling: bool,
    /// How it ended, when it has: the state, the reason, when.
    ended: Option<(String, Option<String>, u64)>,
}

impl Block {
    fn alive(&self) -> bool {
        self.ended.is_none() && !self.cancelling
    }

    fn waiting(&self) -> bool {
        !self.connected
    }

    fn report(&self, nodes: u32) -> BlockReport {
        let (state, reason) = match (&self.ended, &self.status) {
            (Some((state, reason, _)), _) => (state.clone(), reason.clone()),
            _ if self.cancelling => ("cancelling".to_owned(), None),
            _ if self.managers > 0 && self.draining == self.managers => ("draining".to_owned(), None),
            _ if self.connected => ("running".to_owned(), None),
            (None, Some(s)) => (s.state.name().to_owned(), s.reason.clone()),
            (None, None) if self.job.is_none() => ("submitting".to_owned(), None),
            (None, None) => ("pending".to_owned(), None),
        };
        BlockReport {
            block_id: self.id.clone(),
            job_id: self.job.as_ref().map(|j| j.0.clone()),
            state,
            reason,
            nodes,
            managers: self.managers,
            tasks: self.tasks,
            submitted_at: self.submitted_at,
            ended_at: self.ended.as_ref().map(|e| e.2),
        }
    }
}

/// Submits, watches, scales and cancels an endpoint's blocks.
pub struct Scaler<P> {
    provider: P,
    config: ProviderConfig,
    /// The endpoint's directory.
    dir: PathBuf,
    forge: Option<Forge>,
    capacity: watch::Receiver<Capacity>,
    report: watch::Sender<ProviderReport>,
    blocks: Vec<Block>,
    next_id: u64,
    /// Failures in a row (refused submissions, blocks that never connected).
    failures: u32,
    last_failure: Option<String>,
    /// No submission before this.
    hold_until: Option<Instant>,
    paused: bool,
    last_poll: Option<Instant>,
    no_demand_since: Option<Instant>,
    started: bool,
    /// The time of the current step (every decision in a step uses it).
    now: Instant,
}

impl<P: Provider> Scaler<P> {
    pub fn new(
        provider: P,
        config: ProviderConfig,
        dir: &Path,
        forge: Option<Forge>,
        capacity: watch::Receiver<Capacity>,
    ) -> Self {
        let (report, _) = watch::channel(ProviderReport {
            kind: config.kind.name().to_owned(),
            ..ProviderReport::default()
        });
        let next_id = next_block_id(&dir.join("blocks"));
        Self {
            provider,
            config,
            dir: dir.to_owned(),
            forge,
            capacity,
            report,
            blocks: Vec::new(),
            next_id,
            failures: 0,
            last_failure: None,
            hold_until: None,
            paused: false,
            last_poll: None,
            no_demand_since: None,
            started: false,
            now: Instant::now(),
        }
    }

    /// The provider's report, current after every step.
    pub fn reports(&self) -> watch::Receiver<ProviderReport> {
        self.report.subscribe()
    }

    /// Runs until `shutdown`, then cancels every block it holds.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.cancel_leftovers().await;
        let mut tick = tokio::time::interval(self.config.strategy_period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            self.step(Instant::now()).await;
        }
        self.cancel_all().await;
    }

    /// One round: learn, decide, act, report.
    pub async fn step(&mut self, now: Instant) {
        self.now = now;
        if !self.started {
            self.started = true;
            let init = self.config.init_blocks().min(self.config.max_blocks());
            for _ in 0..init {
                self.submit().await;
            }
        }
        self.observe(now);
        if self.poll_due(now) {
            self.poll(now).await;
        }
        self.give_up_unconnected(now).await;
        let views: Vec<strategy::BlockView> = self
            .blocks
            .iter()
            .map(|b| strategy::BlockView {
                alive: b.alive(),
                waiting: b.waiting(),
                draining: b.managers > 0 && b.draining == b.managers,
                idle_since: b.idle_since,
            })
            .collect();
        let limits = strategy::Limits {
            min_blocks: self.config.min_blocks(),
            max_blocks: self.config.max_blocks(),
            idle_timeout: self.config.idle_timeout(),
        };
        let pending_tasks = self.capacity.borrow().pending_tasks;
        let plan = strategy::decide(
            limits,
            &strategy::View {
                now,
                pending_tasks,
                no_demand_since: self.no_demand_since,
                may_submit: self.may_submit(now),
                blocks: &views,
            },
        );
        if !plan.cancel.is_empty() {
            self.cancel(&plan.cancel, "idle").await;
        }
        for _ in 0..plan.submit {
            self.submit().await;
            if !self.may_submit(now) {
                break;
            }
        }
        self.publish();
    }

    fn may_submit(&self, now: Instant) -> bool {
        self.hold_until.is_none_or(|t| now >= t)
    }

    /// Takes in what the interchange says each block's managers hold.
    fn observe(&mut self, now: Instant) {
        let capacity = self.capacity.borrow().clone();
        if capacity.pending_tasks > 0 {
            self.no_demand_since = None;
        } else if self.no_demand_since.is_none() {
            self.no_demand_since = Some(now);
        }
        for b in &mut self.blocks {
            let load = capacity.blocks.get(&b.id).copied().unwrap_or_default();
            (b.managers, b.draining, b.tasks) = (load.managers, load.draining, load.tasks);
            if load.managers > 0 && !b.connected {
                b.connected = true;
                tracing::info!(block_id = %b.id, job_id = ?b.job.as_ref().map(|j| &j.0), managers = load.managers, "block connected");
                if self.failures > 0 || self.paused {
                    tracing::info!(
                        failures = self.failures,
                        "a block connected: scaling runs freely again"
                    );
                }
                self.failures = 0;
                self.paused = false;
                self.hold_until = None;
            }
            b.idle_since = match (load.managers > 0, load.tasks) {
                (true, 0) => Some(b.idle_since.unwrap_or(now)),
                _ => None,
            };
        }
    }

    fn poll_due(&self, now: Instant) -> bool {
        let live = self.blocks.iter().any(|b| b.ended.is_none() && b.job.is_some());
        if !live {
            return false;
        }
        let period = if self.blocks.iter().any(|b| b.ended.is_none() && !b.connected) {
            self.config.poll_period().min(WAITING_POLL)
        } else {
            self.config.poll_period()
        };
        self.last_poll.is_none_or(|t| now.duration_since(t) >= period)
    }

    /// Asks the scheduler about every block not known to have ended.
    async fn poll(&mut self, now: Instant) {
        self.last_poll = Some(now);
        let jobs: Vec<JobId> = self
            .blocks
            .iter()
            .filter(|b| b.ended.is_none())
            .filter_map(|b| b.job.clone())
            .collect();
        let states = match self.provider.status(&jobs).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the blocks' states; keeping what was known");
                return;
            }
        };
        let mut ended = Vec::new();
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let Some(status) = b.job.as_ref().and_then(|j| states.get(j)) else {
                continue;
            };
            if status.state == JobState::Unknown
                && b.status.as_ref().map(|s| &s.native) != Some(&status.native)
            {
                tracing::warn!(block_id = %b.id, state = %status.native, "the scheduler reports a state Ferry does not know; the block counts as alive");
            }
            if status.state == JobState::Running && b.running_since.is_none() {
                b.running_since = Some(now);
            }
            b.status = Some(status.clone());
            if status.state.is_over() {
                ended.push(i);
            }
        }
        for i in ended {
            self.block_over(i).await;
        }
    }

    /// A block's job has ended: record how, and count it as a failure when no manager
    /// of it ever connected (and the endpoint did not cancel it).
    async fn block_over(&mut self, i: usize) {
        let b = &self.blocks[i];
        let status = b
            .status
            .clone()
            .unwrap_or_else(|| JobStatus::new(JobState::Missing, "", None));
        let mut reason = status.reason.clone();
        let failed = !b.connected && !b.cancelling;
        if failed {
            let output = job_output_head(&self.dir, &b.id);
            let why = format!(
                "job {} ended ({}) before any manager connected{}{}",
                b.job.as_ref().map_or("?", |j| j.0.as_str()),
                status.state.name(),
                status
                    .reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default(),
                if output.is_empty() {
                    String::new()
                } else {
                    format!("; its output begins: {output}")
                },
            );
            tracing::error!(block_id = %b.id, "{why}");
            reason = Some(why.clone());
            self.failed(why);
        } else {
            tracing::info!(block_id = %b.id, job_id = ?b.job.as_ref().map(|j| &j.0), state = status.state.name(), "block ended");
        }
        let b = &mut self.blocks[i];
        let state = if failed { "failed" } else { status.state.name() };
        b.ended = Some((state.to_owned(), reason, now_micros()));
    }

    /// Blocks that run (so says the scheduler) with no manager after `connect_timeout`
    /// cannot reach the endpoint: cancelled, and counted as failed.
    async fn give_up_unconnected(&mut self, now: Instant) {
        let timeout = self.config.connect_timeout();
        let stuck: Vec<usize> = (0..self.blocks.len())
            .filter(|&i| {
                let b = &self.blocks[i];
                b.alive() && !b.connected && b.running_since.is_some_and(|t| now.duration_since(t) >= timeout)
            })
            .collect();
        for &i in &stuck {
            let b = &self.blocks[i];
            let why = format!(
                "job {} ran {} with no manager connecting back; cancelled (can its nodes reach this endpoint's address? its output: {})",
                b.job.as_ref().map_or("?", |j| j.0.as_str()),
                humantime::format_duration(timeout),
                job_output_head(&self.dir, &b.id),
            );
            tracing::error!(block_id = %b.id, "{why}");
            self.failed(why.clone());
            self.blocks[i].ended = Some(("failed".to_owned(), Some(why), now_micros()));
            if let Some(job) = self.blocks[i].job.clone()
                && let Err(e) = self.provider.cancel(&[job]).await
            {
                tracing::warn!(error = %e, "cannot cancel a block that never connected");
            }
        }
    }

    /// One more failure in a row: back off, and pause past `max_failures`.
    fn failed(&mut self, why: String) {
        self.failures += 1;
        self.last_failure = Some(why);
        let now = self.now;
        if self.failures >= self.config.max_failures() {
            if !self.paused {
                tracing::error!(
                    failures = self.failures,
                    "scaling paused: no block is submitted for 10 minutes"
                );
            }
            self.paused = true;
            self.hold_until = Some(now + PAUSED_RETRY);
        } else {
            let backoff = Duration::from_secs(5) * 2u32.pow(self.failures - 1);
            self.hold_until = Some(now + backoff.min(MAX_BACKOFF));
        }
    }

    /// Submits one block: its directory and script first (batch), then the job.
    async fn submit(&mut self) {
        let id = self.next_id.to_string();
        self.next_id += 1;
        let mut block = Block {
            id: id.clone(),
            job: None,
            status: None,
            submitted_at: now_micros(),
            connected: false,
            running_since: None,
            managers: 0,
            draining: 0,
            tasks: 0,
            idle_since: None,
            cancelling: false,
            ended: None,
        };
        match self.submit_job(&id).await {
            Ok(job) => {
                tracing::info!(block_id = %id, job_id = %job, kind = self.config.kind.name(), "block submitted");
                block.job = Some(job);
            }
            Err(why) => {
                tracing::error!(block_id = %id, "block not submitted: {why}");
                block.ended = Some(("failed".to_owned(), Some(why.clone()), now_micros()));
                self.failed(why);
            }
        }
        self.blocks.push(block);
        self.prune();
    }

    async fn submit_job(&self, id: &str) -> Result<JobId, String> {
        let dir = self.dir.join("blocks").join(id);
        let script = dir.join("submit.sh");
        if let Some(forge) = &self.forge {
            create_private_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let text = BlockScript {
                config: &self.config,
                endpoint_name: &forge.endpoint_name,
                block_id: id,
                block_dir: &dir,
                endpoint_address: &forge.endpoint_address,
                secret: &forge.secret,
                cert_sha256: forge.cert_sha256,
                manager_bin: &forge.manager_bin,
                walltime_secs: None,
            }
            .render(&forge.template)
            .map_err(|errors| {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                format!("the block script's template is wrong: {}", list.join("; "))
            })?;
            crate::state::write_private(&script, &text, 0o700)
                .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
        }
        let job = self
            .provider
            .submit(&BlockJob {
                block_id: id.to_owned(),
                dir: dir.clone(),
                script,
            })
            .await
            .map_err(|e| format!("submission refused: {e}"))?;
        if self.forge.is_some() {
            let _ = std::fs::write(dir.join("job_id"), format!("{job}\n"));
        }
        Ok(job)
    }

    /// Cancels these blocks (by index).
    async fn cancel(&mut self, which: &[usize], why: &str) {
        let jobs: Vec<JobId> = which.iter().filter_map(|&i| self.blocks[i].job.clone()).collect();
        for &i in which {
            let b = &mut self.blocks[i];
            tracing::info!(block_id = %b.id, job_id = ?b.job.as_ref().map(|j| &j.0), why, "cancelling block");
            b.cancelling = true;
        }
        if let Err(e) = self.provider.cancel(&jobs).await {
            tracing::warn!(error = %e, "cannot cancel blocks; asking again on the next round");
            for &i in which {
                self.blocks[i].cancelling = false;
            }
            return;
        }
        if self.config.kind == ProviderKind::Local {
            for &i in which {
                self.blocks[i].ended = Some(("cancelled".to_owned(), None, now_micros()));
            }
        }
    }

    /// On shutdown: cancels every block not ended.
    pub async fn cancel_all(&mut self) {
        let live: Vec<usize> = (0..self.blocks.len())
            .filter(|&i| self.blocks[i].ended.is_none())
            .collect();
        if !live.is_empty() {
            self.cancel(&live, "the endpoint stops").await;
        }
        for b in &mut self.blocks {
            if b.ended.is_none() && b.cancelling {
                b.ended = Some((
                    "cancelled".to_owned(),
                    Some("the endpoint stopped".to_owned()),
                    now_micros(),
                ));
            }
        }
        self.publish();
    }

    /// Blocks an earlier run of this endpoint left (it was killed, or crashed): their
    /// managers cannot join this run, so they are cancelled.
    async fn cancel_leftovers(&mut self) {
        if !self.config.kind.is_batch() {
            return;
        }
        let Some(previous) = read_report(&self.dir) else {
            return;
        };
        let jobs: Vec<JobId> = previous
            .blocks
            .iter()
            .filter(|b| b.ended_at.is_none())
            .filter_map(|b| b.job_id.clone().map(JobId))
            .collect();
        if jobs.is_empty() {
            return;
        }
        tracing::warn!(jobs = ?jobs.iter().map(|j| &j.0).collect::<Vec<_>>(), "cancelling blocks an earlier run of this endpoint left");
        if let Err(e) = self.provider.cancel(&jobs).await {
            tracing::warn!(error = %e, "cannot cancel an earlier run's blocks");
        }
    }

    /// Forgets the oldest ended blocks past `KEEP_ENDED`, with their directories.
    fn prune(&mut self) {
        let ended = self.blocks.iter().filter(|b| b.ended.is_some()).count();
        if ended <= KEEP_ENDED {
            return;
        }
        let mut drop = ended - KEEP_ENDED;
        let blocks_dir = self.dir.join("blocks");
        self.blocks.retain(|b| {
            if drop > 0 && b.ended.is_some() {
                drop -= 1;
                let _ = std::fs::remove_dir_all(blocks_dir.join(&b.id));
                false
            } else {
                true
            }
        });
    }

    /// Sends the report to the heartbeat and writes `blocks.json`.
    fn publish(&mut self) {
        let nodes = self.config.nodes_per_block();
        let report = ProviderReport {
            kind: self.config.kind.name().to_owned(),
            scaling: self.scaling_note(),
            blocks: self.blocks.iter().map(|b| b.report(nodes)).collect(),
        };
        let changed = *self.report.borrow() != report;
        if changed {
            write_report(&self.dir, &report);
            self.report.send_replace(report);
        }
    }

    fn scaling_note(&self) -> Option<String> {
        let why = self.last_failure.as_deref().unwrap_or("unknown");
        if self.paused {
            Some(format!(
                "paused after {} failed blocks in a row (the last: {why}); trying again every 10 minutes, or fix the config and `ferry-endpoint restart`",
                self.failures
            ))
        } else if self.failures > 0 {
            Some(format!(
                "backing off after {} failed block(s) (the last: {why})",
                self.failures
            ))
        } else {
            None
        }
    }

    /// The blocks alive (not ended, not being cancelled).
    pub fn alive(&self) -> usize {
        self.blocks.iter().filter(|b| b.alive()).count()
    }
}

#[cfg(test)]
mod tests;
