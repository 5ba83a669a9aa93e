//! The local provider: a block is `nodes_per_block` managers run as child processes of
//! the endpoint, each restarted when it exits, until the block is cancelled. With the
//! default settings an endpoint keeps one such block: its managers are always there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{BlockJob, Error, JobId, JobState, JobStatus, Provider};

/// What a local manager is started with.
#[derive(Debug, Clone)]
pub struct LocalManagers {
    pub bin: PathBuf,
    /// `host:port` of the endpoint's manager listener.
    pub endpoint: String,
    pub workers: u32,
    pub nodes: u32,
    pub python: String,
    /// The tasks' run directories' root (the managers' default when `None`).
    pub run_root: Option<PathBuf>,
    pub keep_run_dirs: Duration,
    /// Sourced before each application phase (`FERRY_APP_ENV_SCRIPT`).
    pub app_env_script: Option<String>,
    /// `FERRY_PYTHON_RUN_DIRS`: `per-task` or `on-request`.
    pub python_run_dirs: Option<&'static str>,
    /// More of the managers' environment (`ProviderConfig::manager_env`).
    pub env: Vec<(&'static str, String)>,
    pub secret: String,
    /// The SHA-256 of the endpoint's certificate, which the managers pin.
    pub cert_sha256: ferry_proto::frames::CertFingerprint,
}

struct Job {
    stop: CancellationToken,
    managers: JoinSet<()>,
}

/// The local provider.
pub struct Local {
    managers: LocalManagers,
    jobs: Mutex<HashMap<JobId, Job>>,
}

impl Local {
    pub fn new(managers: LocalManagers) -> Self {
        Self {
            managers,
            jobs: Mutex::new(HashMap::new()),
        }
    }
}

impl Provider for Local {
    async fn submit(&self, block: &BlockJob) -> Result<JobId, Error> {
        let job = JobId(format!("local-{}", block.block_id));
        let stop = CancellationToken::new();
        let mut managers = JoinSet::new();
        for node in 0..self.managers.nodes {
            managers.spawn(keep_manager(
                format!("{}/{node}", block.block_id),
                block.block_id.clone(),
                self.managers.clone(),
                stop.clone(),
            ));
        }
        self.jobs
            .lock()
            .expect("not poisoned")
            .insert(job.clone(), Job { stop, managers });
        Ok(job)
    }

    async fn status(&self, jobs: &[JobId]) -> Result<HashMap<JobId, JobStatus>, Error> {
        let held = self.jobs.lock().expect("not poisoned");
        Ok(jobs
            .iter()
            .map(|j| {
                let state = if held.contains_key(j) {
                    JobState::Running
                } else {
                    JobState::Cancelled
                };
                (j.clone(), JobStatus::new(state, state.name(), None))
            })
            .collect())
    }

    async fn cancel(&self, jobs: &[JobId]) -> Result<(), Error> {
        let taken: Vec<Job> = {
            let mut held = self.jobs.lock().expect("not poisoned");
            jobs.iter().filter_map(|j| held.remove(j)).collect()
        };
        for mut job in taken {
            job.stop.cancel();
            while job.managers.join_next().await.is_some() {}
        }
        Ok(())
    }
}

/// Keeps one manager running until `stop`, then stops it (SIGTERM, SIGKILL after 10 s).
async fn keep_manager(node: String, block_id: String, config: LocalManagers, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    while !stop.is_cancelled() {
        let child = tokio::process::Command::new(&config.bin)
            .arg("--endpoint")
            .arg(&config.endpoint)
            .arg("--workers")
            .arg(config.workers.to_string())
            .arg("--block-id")
            .arg(&block_id)
            .env("FERRY_PYTHON", &config.python)
            .envs(config.run_root.as_ref().map(|root| ("FERRY_RUN_ROOT", root)))
            .env(
                "FERRY_KEEP_RUN_DIRS_SECS",
                config.keep_run_dirs.as_secs().to_string(),
            )
            .envs(
                config
                    .app_env_script
                    .as_ref()
                    .map(|s| ("FERRY_APP_ENV_SCRIPT", s)),
            )
            .envs(config.python_run_dirs.map(|s| ("FERRY_PYTHON_RUN_DIRS", s)))
            .envs(config.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("FERRY_MANAGER_SECRET", &config.secret)
            .env("FERRY_ENDPOINT_CERT_SHA256", config.cert_sha256.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(bin = %config.bin.display(), error = %e, "cannot start a manager");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        tokio::select! {
            status = child.wait() => {
                tracing::warn!(node, ?status, "manager exited; starting another");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            _ = stop.cancelled() => {
                if let Some(pid) = child.id() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
                }
                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                return;
            }
        }
    }
}
