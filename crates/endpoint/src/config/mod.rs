//! The endpoint's configuration file, `<ferry home>/endpoints/<name>/config.toml`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod environments;
pub mod file;
pub mod globus;
mod lines;
pub mod provider;
pub mod values;

pub use provider::{Launcher, Problem, ProviderConfig, ProviderKind, PythonRunDirs};
pub use values::{Seconds, Walltime};

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Where managers connect (`host:port`; port 0 picks a free one). Default
    /// `127.0.0.1:0`, or `0.0.0.0:0` for a Slurm or PBS provider, whose managers run on
    /// other nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The host name or IP address managers on compute nodes use to reach this
    /// endpoint (default: this machine's host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Take the address from this network interface instead (`"ib0"`, `"hsn0"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_interface: Option<String>,
    /// A PEM file of CA certificates to trust for the service's `https://` and the
    /// broker's `amqps://`, besides the system's (`FERRY_CA_FILE` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Task messages held unacked at once.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// A manager silent for this many seconds is declared lost.
    #[serde(default = "default_manager_timeout")]
    pub manager_timeout_secs: u64,
    /// On stop (SIGTERM, `ferry-endpoint stop`, Ctrl-C) the endpoint takes no new task
    /// and gives the running ones this long to finish and report; those still running
    /// then are stopped and go back to the queue.
    #[serde(default = "default_stop_grace")]
    pub stop_grace_secs: u64,
    /// A task waiting at the endpoint counts one priority higher for every this many
    /// seconds it has waited, so lower priorities are not starved (default: no aging,
    /// strict priorities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_aging_secs: Option<u64>,
    /// Serve Prometheus metrics at `/metrics` on this address (`127.0.0.1:9465`);
    /// default: not served (docs/operations.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Which manager gets tasks next: `least-loaded` (the default), `fill-by-priority`,
    /// `round-robin` or `environment-affinity` (docs/scheduling.md#strategies).
    #[serde(default, skip_serializing_if = "is_default_strategy")]
    pub strategy: crate::interchange::strategy::StrategyKind,
    /// Anyone with an account on the service may send it tasks (default: its owner
    /// only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
    /// Users (ids, from `ferry-web-service user list`) who may send it tasks besides
    /// its owner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<ferry_proto::UserId>,
    /// When set, the only functions (ids) it runs, whoever sends them: the service
    /// refuses others (403), and the endpoint fails any that reaches it anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_functions: Option<Vec<ferry_proto::FunctionId>>,
    /// How managers are started.
    #[serde(default)]
    pub provider: ProviderConfig,
}

fn is_default_strategy(kind: &crate::interchange::strategy::StrategyKind) -> bool {
    *kind == crate::interchange::strategy::StrategyKind::default()
}

fn default_prefetch() -> u16 {
    64
}
fn default_manager_timeout() -> u64 {
    30
}
fn default_stop_grace() -> u64 {
    10
}

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid endpoint config: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl EndpointConfig {
    /// A config for `url` with every default and the given provider.
    pub fn new(url: String, provider: ProviderConfig) -> Self {
        Self {
            url,
            token: None,
            listen: None,
            address: None,
            address_interface: None,
            ca_file: None,
            prefetch: default_prefetch(),
            manager_timeout_secs: default_manager_timeout(),
            stop_grace_secs: default_stop_grace(),
            priority_aging_secs: None,
            strategy: Default::default(),
            metrics_listen: None,
            public: false,
            shared_with: Vec::new(),
            allowed_functions: None,
            provider,
        }
    }

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

    /// Parses and checks config text. A problem is named by its key and, where the file
    /// has it, its line; every problem is listed, not only the first.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: EndpointConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut problems = config.provider.check();
        if config.prefetch == 0 {
            problems.push(Problem {
                key: "prefetch".into(),
                message: "must be at least 1".into(),
            });
        }
        if config.address.is_some() && config.address_interface.is_some() {
            problems.push(Problem {
                key: "address_interface".into(),
                message: "set `address` or `address_interface`, not both".into(),
            });
        }
        if let Some(listen) = &config.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            problems.push(Problem {
                key: "listen".into(),
                message: format!("{listen:?} is not host:port with an IP address (\"0.0.0.0:0\")"),
            });
        }
        if problems.is_empty() {
            return Ok(config);
        }
        Err(problems
            .iter()
            .map(|p| match lines::of_key(text, &p.key) {
                Some(line) => format!("line {line}: {}: {}", p.key, p.message),
                None => format!("{}: {}", p.key, p.message),
            })
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// The CA certificates to trust besides the system's: `FERRY_CA_FILE`, else
    /// `ca_file`.
    pub fn ca_pem(&self) -> anyhow::Result<Option<String>> {
        let path = std::env::var_os("FERRY_CA_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| self.ca_file.clone());
        match path {
            Some(p) => Ok(Some(
                std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("ca_file {}: {e}", p.display()))?,
            )),
            None => Ok(None),
        }
    }

    /// An HTTP client for the service: `https://` verified against the system's roots
    /// and [`EndpointConfig::ca_pem`].
    pub fn http_client(&self) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = self.ca_pem()? {
            for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| anyhow::anyhow!("the CA file holds no PEM certificate: {e}"))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(builder.build()?)
    }

    /// Where managers are told to connect is decided at start (see `service`); this is
    /// where the endpoint listens.
    pub fn listen(&self) -> &str {
        match &self.listen {
            Some(l) => l,
            None if self.provider.kind.is_batch() => "0.0.0.0:0",
            None => "127.0.0.1:0",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_config_gets_defaults() {
        let c = EndpointConfig::parse("url = \"http://x\"").unwrap();
        assert_eq!(
            (
                c.provider.nodes_per_block(),
                c.provider.workers_per_node(),
                c.prefetch
            ),
            (1, Some(2), 64)
        );
        assert_eq!(c.listen(), "127.0.0.1:0");
        let c = EndpointConfig::parse("url = \"http://x\"\n[provider]\nkind = \"slurm\"").unwrap();
        assert_eq!(c.listen(), "0.0.0.0:0");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = EndpointConfig::parse("url = \"http://x\"\nworkerz = 3").unwrap_err();
        assert!(err.contains("workerz") && err.contains("line 2"), "{err}");
        let err =
            EndpointConfig::parse("url = \"x\"\n[provider]\nkind = \"slurm\"\npartion = \"a\"").unwrap_err();
        assert!(err.contains("partion") && err.contains("line 4"), "{err}");
    }

    #[test]
    fn a_strategy_is_read_by_name_and_an_unknown_one_lists_them() {
        let c = EndpointConfig::parse("url = \"x\"\nstrategy = \"round-robin\"").unwrap();
        assert_eq!(c.strategy, crate::interchange::strategy::StrategyKind::RoundRobin);
        let err = EndpointConfig::parse("url = \"x\"\nstrategy = \"fastest\"").unwrap_err();
        for needle in [
            "fastest",
            "line 2",
            "least-loaded",
            "fill-by-priority",
            "environment-affinity",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
    }

    #[test]
    fn a_wrong_type_is_named_with_its_line() {
        let err = EndpointConfig::parse("url = \"x\"\n[provider]\nmax_blocks = \"two\"").unwrap_err();
        assert!(err.contains("max_blocks") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn an_unsupported_provider_is_refused() {
        let err = EndpointConfig::parse("url = \"x\"\n[provider]\nkind = \"k8s\"").unwrap_err();
        assert!(err.contains("k8s"), "{err}");
    }

    #[test]
    fn a_bad_value_is_named_by_key_and_line_and_all_are_listed() {
        let text =
            "url = \"x\"\nprefetch = 0\n\n[provider]\nkind = \"slurm\"\nmin_blocks = 3\nmax_blocks = 2\n";
        let err = EndpointConfig::parse(text).unwrap_err();
        assert!(err.contains("line 7: provider.max_blocks"), "{err}");
        assert!(err.contains("line 2: prefetch"), "{err}");
    }
}
