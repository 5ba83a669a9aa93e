//! The `ferry-endpoint` commands.
//!
//! - [`configure`]: writes a commented `config.toml` (or imports a Globus Compute
//!   endpoint's `config.yaml`).
//! - [`reconfigure`]: `configure NAME` on an existing endpoint, changing only the
//!   settings given.
//! - [`python`]: the workers' Python, tried before `start`.
//! - [`lifecycle`]: `start` (detached), `stop`, `restart`, `delete`.
//! - [`status`]: `status` (the process, the service's view, the blocks) and `list`.
//! - [`logs`]: `logs` (the end of `endpoint.log`, and `--follow`).
//! - [`check`]: a dry run on a new cluster: the block script, a short test job, a
//!   manager connecting back from it.

use std::path::{Path, PathBuf};

use crate::config::{EndpointConfig, endpoint_dir};
use crate::state;

pub mod check;
pub mod configure;
pub mod lifecycle;
pub mod logs;
pub mod python;
pub mod reconfigure;
pub mod status;

pub use configure::{Configure, configure};
pub use lifecycle::{delete, restart, start_daemon, stop};
pub use logs::logs;
pub use python::check_python;
pub use status::{list, status};

/// Checks an endpoint name: it becomes a directory name.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if !ok {
        anyhow::bail!("invalid endpoint name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// Loads the config of endpoint `name`.
pub fn load(name: &str) -> anyhow::Result<(PathBuf, EndpointConfig)> {
    check_name(name)?;
    let dir = endpoint_dir(name);
    let path = dir.join("config.toml");
    if !path.exists() {
        anyhow::bail!("no endpoint named {name}: run `ferry-endpoint configure {name}` first");
    }
    Ok((dir, EndpointConfig::load(&path)?))
}

/// Where a detached endpoint logs (its stdout and stderr).
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("endpoint.log")
}

/// The pid of the running endpoint `name`, if it runs.
fn running_pid(dir: &Path) -> Option<u32> {
    state::read_pid(dir)
        .filter(state::RecordedPid::alive)
        .map(|r| r.pid)
}
