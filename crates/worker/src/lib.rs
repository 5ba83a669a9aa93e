//! Ferry's worker: one process per worker slot, running one task at a time.
//!
//! - [`host`]: the warm Python interpreter (`python -m ferry.host`) the worker keeps for
//!   Python functions, and the small binary protocol it speaks over pipes.
//! - [`shell`]: shell functions, run directly with `/bin/sh -c`.
//! - [`lifeline`]: the worker and everything below it (in its process group or out of
//!   it: the worker is a child subreaper) end when its manager does, and a stopped or
//!   finished task's processes end with it.
//! - [`run`]: the loop that reads [`ToWorker`](ferry_proto::frames::ToWorker) frames from
//!   the manager on stdin and answers on stdout.
//!
//! If the Python host dies in the middle of a task the worker exits: the manager sees a
//! lost worker and the task is retried elsewhere, which is the rule for any worker death.

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
}

/// The `python` beside this program if there is one, else `python3` (on the `PATH`).
fn default_python() -> String {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("python")))
        .filter(|python| python.is_file());
    beside.map_or_else(|| "python3".to_owned(), |p| p.display().to_string())
}
