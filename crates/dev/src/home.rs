//! What `ferry dev` keeps on disk, all under Ferry's home (`$FERRY_HOME`, else
//! `~/.ferry`):
//!
//! - `client.json`: the URL, token and endpoint ID the SDK's `Client()` and `Executor()`
//!   use when given none (0600: it holds a token);
//! - `dev/state.json`: the token of the dev user, reused while the store still knows it;
//! - `dev/store.snapshot`: the embedded store's keyspace, written when `ferry dev` stops
//!   and read when it starts;
//! - `dev/endpoints/local/`: the local endpoint's directory (config, ID, `endpoint.log`,
//!   and `runs/`, its tasks' run directories);
//! - `dev/logs/`: the server's log (`server.log`: the web-service and the forwarder).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The directories of one `ferry dev`, created and checked writable.
pub(crate) struct Home {
    pub(crate) root: PathBuf,
    pub(crate) dev: PathBuf,
    pub(crate) logs: PathBuf,
}

/// What `client.json` holds.
#[derive(Serialize, Deserialize)]
pub(crate) struct ClientConfig {
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) endpoint_id: String,
}

#[derive(Serialize, Deserialize, Default)]
struct State {
    token: Option<String>,
}

impl Home {
    /// `--home`, else `$FERRY_HOME`, else `~/.ferry`.
    pub(crate) fn locate(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
        if let Some(path) = flag.or_else(|| std::env::var_os("FERRY_HOME").map(PathBuf::from)) {
            return Ok(path);
        }
        let home = std::env::var_os("HOME")
            .context("neither --home, $FERRY_HOME nor $HOME is set: say where Ferry may keep its files")?;
        Ok(PathBuf::from(home).join(".ferry"))
    }

    /// Creates the directories and proves they can be written, so a home that cannot
    /// be used is refused before anything starts.
    pub(crate) fn prepare(root: PathBuf, fresh: bool) -> anyhow::Result<Home> {
        let dev = root.join("dev");
        if fresh && dev.exists() {
            std::fs::remove_dir_all(&dev)
                .with_context(|| format!("--fresh: cannot remove {}", dev.display()))?;
        }
        let logs = dev.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| {
            format!(
                "cannot create {} (Ferry's home; choose another with --home or FERRY_HOME)",
                logs.display()
            )
        })?;
        let probe = dev.join(".writable");
        std::fs::write(&probe, b"").with_context(|| {
            format!(
                "cannot write in {} (Ferry's home; choose another with --home or FERRY_HOME)",
                dev.display()
            )
        })?;
        let _ = std::fs::remove_file(probe);
        Ok(Home { root, dev, logs })
    }

    pub(crate) fn snapshot(&self) -> PathBuf {
        self.dev.join("store.snapshot")
    }

    pub(crate) fn endpoint_dir(&self) -> PathBuf {
        self.dev.join("endpoints").join(crate::session::ENDPOINT)
    }

    pub(crate) fn client_config(&self) -> PathBuf {
        self.root.join("client.json")
    }

    /// The token an earlier run kept, if any.
    pub(crate) fn saved_token(&self) -> Option<String> {
        let text = std::fs::read(self.dev.join("state.json")).ok()?;
        serde_json::from_slice::<State>(&text).ok()?.token
    }

    pub(crate) fn save_token(&self, token: &str) -> anyhow::Result<()> {
        let state = State {
            token: Some(token.to_owned()),
        };
        write_private(&self.dev.join("state.json"), &serde_json::to_vec_pretty(&state)?)
    }

    pub(crate) fn write_client_config(&self, config: &ClientConfig) -> anyhow::Result<()> {
        write_private(&self.client_config(), &serde_json::to_vec_pretty(config)?)
    }
}

/// Writes `bytes` to `path` readable by its owner only, replacing it whole (a temporary
/// file renamed over it).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::Write::write_all(&mut file, bytes)?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}
