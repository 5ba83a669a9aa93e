//! The endpoint's configuration file, `<ferry home>/endpoints/<name>/config.toml`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where endpoints keep their directories: `$FERRY_HOME`, else `~/.ferry`.
pub fn ferry_home() -> PathBuf {
    if let Some(home) = std::env::var_os("FERRY_HOME") {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".ferry")
}

/// The directory of endpoint `name`.
pub fn endpoint_dir(name: &str) -> PathBuf {
    ferry_home().join("endpoints").join(name)
}

/// An endpoint's settings. Unknown keys are refused, so a typo is an error, not a
/// silently ignored setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// The Ferry web-service to register with.
    pub url: String,
    /// The bearer token to register with (`FERRY_TOKEN` overrides it).
    #[serde(default)]
    pub token: Option<String>,
    /// Where managers connect (`host:port`; port 0 picks a free one).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Task messages held unacked at once.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// A manager silent for this many seconds is declared lost.
    #[serde(default = "default_manager_timeout")]
    pub manager_timeout_secs: u64,
    /// How managers are started.
    #[serde(default)]
    pub provider: ProviderConfig,
}

/// How the endpoint gets managers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `"local"`: managers are processes on this machine. `"manual"`: the endpoint starts
    /// none; managers are started by hand (or by a load generator) with
    /// `ferry-manager --endpoint <listen address>`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Managers (nodes) to keep.
    #[serde(default = "one")]
    pub nodes: u32,
    /// Worker processes per manager.
    #[serde(default = "two")]
    pub workers_per_node: u32,
    /// The Python interpreter the workers run (`-m ferry.host`).
    #[serde(default = "default_python")]
    pub python: String,
    /// The `ferry-manager` binary (default: next to `ferry-endpoint`).
    #[serde(default)]
    pub manager_bin: Option<PathBuf>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: default_kind(),
            nodes: one(),
            workers_per_node: two(),
            python: default_python(),
            manager_bin: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:0".to_owned()
}
fn default_prefetch() -> u16 {
    64
}
fn default_manager_timeout() -> u64 {
    30
}
fn default_kind() -> String {
    "local".to_owned()
}
fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn default_python() -> String {
    "python3".to_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid endpoint config: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl EndpointConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| Error::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses and checks config text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: EndpointConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if !matches!(config.provider.kind.as_str(), "local" | "manual") {
            return Err(format!(
                "provider.kind {:?} is not supported; use \"local\" or \"manual\"",
                config.provider.kind
            ));
        }
        if config.provider.kind == "local"
            && (config.provider.nodes == 0 || config.provider.workers_per_node == 0)
        {
            return Err("provider.nodes and provider.workers_per_node must be at least 1".to_owned());
        }
        if config.prefetch == 0 {
            return Err("prefetch must be at least 1".to_owned());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_config_gets_defaults() {
        let c = EndpointConfig::parse("url = \"http://x\"").unwrap();
        assert_eq!(
            (c.provider.nodes, c.provider.workers_per_node, c.prefetch),
            (1, 2, 64)
        );
    }

    #[test]
    fn an_unknown_key_is_named() {
        let err = EndpointConfig::parse("url = \"http://x\"\nworkerz = 3").unwrap_err();
        assert!(err.contains("workerz"), "{err}");
    }

    #[test]
    fn an_unsupported_provider_is_refused() {
        let err = EndpointConfig::parse("url = \"x\"\n[provider]\nkind = \"k8s\"").unwrap_err();
        assert!(err.contains("k8s"), "{err}");
    }
}
