//! Ferry's worker: one process per worker slot, running one task at a time.
//!
//! - [`host`]: the warm Python interpreter (`python -m ferry.host`) the worker keeps for
//!   Python functions, and the small binary protocol it speaks over pipes.
//! - [`shell`]: shell functions, run directly with `/bin/sh -c`.
//! - [`app`]: applications: typed inputs, prolog / execute / epilog in one run directory.
//! - [`lifeline`]: the worker and everything below it (in its process group or out of
//!   it: the worker is a child subreaper) end when its manager does, and a stopped or
//!   finished task's processes end with it.
//! - [`run`]: the loop that reads [`ToWorker`](ferry_proto::frames::ToWorker) frames from
//!   the manager on stdin and answers on stdout.
//!
//! If the Python host dies in the middle of a task the worker exits: the manager sees a
//! lost worker and the task is retried elsewhere, which is the rule for any worker death.

pub mod app;
pub mod host;
pub mod lifeline;
pub mod run;
pub mod shell;

/// The worker's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// The Python interpreter that runs `-m ferry.host`. The endpoint's managers pass
    /// theirs; without one, the `python` beside `ferry-worker` when there is one (the
    /// environment Ferry's wheel was installed into), else `python3`.
    #[arg(long, env = "FERRY_PYTHON", default_value_t = default_python())]
    pub python: String,
    /// Where tasks' run directories go (the endpoint's `run_dir`, which its managers
    /// pass on); default `$FERRY_HOME/runs`, else `~/.ferry/runs`.
    #[arg(long, env = "FERRY_RUN_ROOT")]
    pub run_root: Option<std::path::PathBuf>,
    /// Shell lines sourced before each phase of an application run, unless the
    /// application has its own (the endpoint's `provider.app_env_script`).
    #[arg(long, env = "FERRY_APP_ENV_SCRIPT")]
    pub app_env_script: Option<String>,
    /// Start a fresh Python host after this many tasks (0: never).
    #[arg(long, env = "FERRY_RECYCLE_TASKS", default_value_t = 0)]
    pub recycle_tasks: u64,
    /// Start a fresh Python host once it has been up this many seconds (0: never).
    #[arg(long, env = "FERRY_RECYCLE_SECS", default_value_t = 0)]
    pub recycle_secs: u64,
    /// Start a fresh Python host once its memory (RSS, read after each task) passes
    /// this many MiB (0: never).
    #[arg(long, env = "FERRY_RECYCLE_RSS_MB", default_value_t = 0)]
    pub recycle_rss_mb: u64,
    /// The endpoint's task environments, as JSON (`FERRY_ENVIRONMENTS`, which the
    /// endpoint sets from its `[provider.environments.<name>]` tables): a task naming
    /// one runs in a Python host started for it. With none, the worker starts its host
    /// at once; with some, when the first Python task comes.
    #[arg(long, env = ferry_proto::environments::VARIABLE, default_value = "", value_parser = ferry_proto::environments::parse)]
    pub environments: ferry_proto::environments::Environments,
}

impl Config {
    /// The environment of tasks that name none: `python` and the `recycle_*` settings.
    pub fn default_environment(&self) -> ferry_proto::environments::HostEnvironment {
        ferry_proto::environments::HostEnvironment {
            python: self.python.clone(),
            recycle_tasks: self.recycle_tasks,
            recycle_secs: self.recycle_secs,
            recycle_rss_mb: self.recycle_rss_mb,
            ..Default::default()
        }
    }
}

/// Where this worker's tasks run: the run directories' root, and the working directory
/// of its Python tasks (`worker-<host>-<pid>` under it). `dirs` is `None` when the root
/// could not be made: shell tasks then fail saying why, Python tasks run where the
/// worker was started.
pub struct Places {
    pub dirs: Option<ferry_rundir::RunDirs>,
    /// Why there is no root.
    pub error: String,
    /// The name of the Python tasks' working directory under the root.
    pub python_dir: Option<String>,
}

impl Places {
    /// Makes the root and the Python tasks' directory; a failure is logged, not fatal.
    pub fn open(config: &Config) -> Self {
        let root = config.run_root.clone().unwrap_or_else(ferry_rundir::default_root);
        match ferry_rundir::RunDirs::open(&root) {
            Ok(dirs) => {
                let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
                let name = format!("worker-{host}-{}", std::process::id());
                let python_dir = match dirs.create(&name) {
                    Ok(_) => Some(name),
                    Err(e) => {
                        tracing::error!(error = %e, "Python tasks run in the worker's own directory");
                        None
                    }
                };
                Self {
                    dirs: Some(dirs),
                    error: String::new(),
                    python_dir,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "no run directories: shell tasks will fail");
                Self {
                    dirs: None,
                    error: e.to_string(),
                    python_dir: None,
                }
            }
        }
    }

    /// The root and the working directory a Python host is started with.
    pub fn for_host(&self) -> Option<(&std::path::Path, std::path::PathBuf)> {
        let dirs = self.dirs.as_ref()?;
        Some((dirs.root(), dirs.path(self.python_dir.as_deref()?)))
    }

    /// At the worker's end: its Python tasks' directory goes if empty, else is marked
    /// for the sweep.
    pub fn close(&self) {
        if let (Some(dirs), Some(name)) = (&self.dirs, &self.python_dir) {
            dirs.finish(name);
        }
    }
}

/// The `python` beside this program if there is one, else `python3` (on the `PATH`).
fn default_python() -> String {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("python")))
        .filter(|python| python.is_file());
    beside.map_or_else(|| "python3".to_owned(), |p| p.display().to_string())
}
