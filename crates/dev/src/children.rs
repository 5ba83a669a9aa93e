//! The processes `ferry dev` runs (the server and the endpoint): each in a process group of its own (so a
//! terminal's Ctrl-C reaches `ferry dev` alone, which stops them in order), told its
//! parent's pid (`FERRY_PARENT_PID`: it stops if `ferry dev` dies, however it dies),
//! logging to a file of its own.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running child.
pub(crate) struct Child {
    pub(crate) name: &'static str,
    pub(crate) log: PathBuf,
    process: tokio::process::Child,
}

/// The Ferry binary `name`: beside this one (an install puts them together), else
/// whatever `PATH` finds.
pub(crate) fn binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Environment a child must not inherit from the user's shell: `ferry dev` decides its
/// backends, and broker identities and TLS are for real deployments.
const NOT_INHERITED: &[&str] = &[
    "FERRY_AMQP_ADMIN_URL",
    "FERRY_TLS_CERT",
    "FERRY_TLS_KEY",
    "FERRY_PUBLIC_AMQP_URL",
    "FERRY_REDIS_URL",
    "FERRY_AMQP_URL",
    "FERRY_NAMESPACE",
    "FERRY_LISTEN",
    "FERRY_CA_FILE",
];

/// A command for the binary `name` with the environment cleaned of [`NOT_INHERITED`].
pub(crate) fn command(name: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary(name));
    for var in NOT_INHERITED {
        command.env_remove(var);
    }
    command
}

impl Child {
    /// Starts `command` (named `name` in messages) with its output appended to `log`.
    pub(crate) fn spawn(
        name: &'static str,
        mut command: tokio::process::Command,
        log: PathBuf,
    ) -> anyhow::Result<Child> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let process = command
            .env("FERRY_PARENT_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start the {name} ({}): is Ferry installed? Its binaries are looked for beside ferry-dev, then on PATH",
                    command.as_std().get_program().to_string_lossy()
                )
            })?;
        Ok(Child { name, log, process })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// Its exit status if it has ended.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL if it has not ended `within`.
    pub(crate) async fn stop(&mut self, within: Duration) {
        if self.exited().is_some() {
            return;
        }
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(within, self.process.wait()).await.is_err() {
            tracing::warn!(child = self.name, "did not stop within {within:?}: killing it");
            let _ = self.process.kill().await;
        }
    }

    /// Why it ended, with the end of its log.
    pub(crate) fn obituary(&mut self, status: std::process::ExitStatus) -> String {
        format!(
            "the {} exited ({status}); the end of {}:\n{}",
            self.name,
            self.log.display(),
            tail(&self.log, 20)
        )
    }
}

/// The last `lines` lines of a log.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
