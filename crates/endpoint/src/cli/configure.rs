//! `configure NAME`: writes the endpoint's `config.toml`, every setting of its provider
//! listed with a comment (set ones as given, the rest commented out), or imported from a
//! Globus Compute endpoint's `config.yaml` with `--from-globus`. On an endpoint that has
//! a config already it changes only the settings given ([`super::reconfigure`]);
//! `--force` writes the file anew from the defaults, as for a new endpoint.

use std::path::PathBuf;

use crate::config::file::commented;
use crate::config::globus;
use crate::config::{EndpointConfig, ProviderConfig, ProviderKind, Walltime, endpoint_dir};

use super::check_name;

/// The service a new endpoint registers with when neither `--url` nor `FERRY_URL` says.
const DEFAULT_URL: &str = "http://127.0.0.1:8000";

/// `configure NAME`: writes `config.toml`, or changes the settings given in it.
///
/// `FERRY_URL`, `FERRY_TOKEN` and `FERRY_PYTHON` stand for `--url`, `--token` and
/// `--python` when a config is written anew (a new endpoint, or `--force`); changing an
/// existing one takes only what the command line says.
#[derive(Debug, clap::Args)]
pub struct Configure {
    /// The endpoint's name (also its directory name).
    pub name: String,
    /// The Ferry web-service URL (written anew: `FERRY_URL`, else
    /// http://127.0.0.1:8000).
    #[arg(long)]
    pub url: Option<String>,
    /// Your bearer token (written anew: or `FERRY_TOKEN`): the endpoint is registered
    /// with it now and gets a credential of its own (your token is not kept; should the
    /// service be unreachable, it is kept in config.toml, readable by you only, for the
    /// first start).
    #[arg(long)]
    pub token: Option<String>,
    /// A PEM file of CA certificates to trust for the service's `https://` and the
    /// broker's `amqps://`, besides the system's (written to config.toml as `ca_file`).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Where managers come from: local processes, started by hand, Slurm or PBS jobs.
    #[arg(long, value_enum)]
    pub provider: Option<ProviderKind>,
    /// Nodes (managers) per block.
    #[arg(long)]
    pub nodes: Option<u32>,
    /// Worker processes per manager (default: 2 locally, one per core on a cluster).
    #[arg(long)]
    pub workers: Option<u32>,
    /// The Python interpreter workers use, with the ferry package (written anew: or
    /// `FERRY_PYTHON`; default: the `python` beside `ferry-endpoint`, as in the
    /// environment its wheel was installed into, else `python3`).
    #[arg(long)]
    pub python: Option<String>,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// PBS queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// The account (allocation) charged for blocks.
    #[arg(long)]
    pub account: Option<String>,
    /// A block's walltime (`HH:MM:SS`).
    #[arg(long, value_parser = Walltime::parse)]
    pub walltime: Option<Walltime>,
    /// Blocks at most.
    #[arg(long)]
    pub max_blocks: Option<u32>,
    /// Import a Globus Compute endpoint: its directory, or its `config.yaml`.
    #[arg(long, value_name = "PATH")]
    pub from_globus: Option<PathBuf>,
    /// Any other setting, as its key in config.toml (`provider.` before a provider
    /// setting) and a TOML value; text may go unquoted: `--set provider.init_blocks=0`,
    /// `--set provider.worker_init="module load python"`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = super::reconfigure::parse_set)]
    pub set: Vec<(String, toml_edit::Value)>,
    /// Remove a setting from config.toml, so its default applies again
    /// (`--unset provider.partition`). Repeatable.
    #[arg(long = "unset", value_name = "KEY", value_parser = super::reconfigure::parse_key)]
    pub unset: Vec<String>,
    /// Write the config anew from the defaults and the flags given, replacing an existing
    /// one (without it, an existing config keeps every setting not given).
    #[arg(long)]
    pub force: bool,
}

impl Configure {
    /// Whether any setting is given (a bare `configure NAME` on an existing endpoint
    /// changes nothing).
    pub fn changes_anything(&self) -> bool {
        self.url.is_some()
            || self.token.is_some()
            || self.ca_file.is_some()
            || self.provider.is_some()
            || self.nodes.is_some()
            || self.workers.is_some()
            || self.python.is_some()
            || self.partition.is_some()
            || self.queue.is_some()
            || self.account.is_some()
            || self.walltime.is_some()
            || self.max_blocks.is_some()
            || self.from_globus.is_some()
            || !self.set.is_empty()
            || !self.unset.is_empty()
    }
}

fn from_env(flag: &Option<String>, variable: &str) -> Option<String> {
    flag.clone()
        .or_else(|| std::env::var(variable).ok().filter(|v| !v.is_empty()))
}

pub fn configure(mut args: Configure) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let dir = endpoint_dir(&args.name);
    let path = dir.join("config.toml");
    if path.exists() && !args.force {
        return super::reconfigure::reconfigure(&args, &path);
    }
    let url = from_env(&args.url, "FERRY_URL").unwrap_or_else(|| DEFAULT_URL.to_owned());
    args.token = from_env(&args.token, "FERRY_TOKEN");
    args.python = from_env(&args.python, "FERRY_PYTHON");
    let mut config = EndpointConfig::new(url, ProviderConfig::of_kind(ProviderKind::Local));
    let mut not_carried = Vec::new();
    if let Some(source) = &args.from_globus {
        let imported = globus::import(source)?;
        println!("importing {}", imported.source.display());
        config.provider = imported.provider;
        config.address = imported.address;
        config.address_interface = imported.address_interface;
        config.public = imported.public;
        config.allowed_functions = imported.allowed_functions;
        not_carried = imported.not_carried;
    }
    apply_flags(&args, &mut config);
    if let Some(ca) = &args.ca_file {
        config.ca_file = Some(ca_file(ca)?);
    }
    if !args.set.is_empty() {
        let text = super::reconfigure::apply(&commented(&args.name, &config), &args.set)?;
        config =
            EndpointConfig::parse(&text).map_err(|e| anyhow::anyhow!("the config would be invalid: {e}"))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    // With its owner's token the endpoint is registered now and gets a credential of
    // its own; the owner's token is not kept. Without the service, the token is kept in
    // config.toml (0600) for the first start to do it.
    let registered = match &args.token {
        Some(token) => match register_now(&dir, &config, &args.name, token) {
            Ok(line) => Some(line),
            Err(e) => {
                println!(
                    "could not register the endpoint now ({e:#}); its first start will, with the token kept in config.toml"
                );
                config.token = Some(token.clone());
                None
            }
        },
        None => None,
    };
    let text = commented(&args.name, &config);
    EndpointConfig::parse(&text).map_err(|e| anyhow::anyhow!("the config would be invalid: {e}"))?;
    crate::state::write_private(&path, &text, 0o600)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    println!(
        "configured endpoint {} ({}) in {}",
        args.name,
        config.provider.kind.name(),
        path.display()
    );
    if let Some(line) = registered {
        println!("{line}");
    }
    if !not_carried.is_empty() {
        println!("not carried over from the Globus Compute config:");
        for note in &not_carried {
            println!("  - {note}");
        }
    }
    if config.provider.kind.is_batch() {
        println!(
            "next: check the settings in the file, then `ferry-endpoint check {}` tries a block on the cluster",
            args.name
        );
    }
    Ok(())
}

/// `--ca-file`, absolute (the endpoint may be started from anywhere) and readable.
pub(super) fn ca_file(ca: &std::path::Path) -> anyhow::Result<PathBuf> {
    let path = std::fs::canonicalize(ca).map_err(|e| anyhow::anyhow!("--ca-file {}: {e}", ca.display()))?;
    std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("--ca-file {}: {e}", path.display()))?;
    Ok(path)
}

/// Registers the endpoint with its owner's token (again, keeping its id, if it has
/// one): the service answers with the endpoint's own credential, kept in its directory.
pub(super) fn register_now(
    dir: &std::path::Path,
    config: &EndpointConfig,
    name: &str,
    token: &str,
) -> anyhow::Result<String> {
    let saved = crate::state::read_id(dir);
    let registered = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(crate::service::register(
            dir,
            config,
            name,
            saved,
            token,
            crate::service::workers_env(config),
        ))?;
    Ok(format!(
        "registered endpoint {name} with {}: id {}; its credential is in {} (it does not use your token)",
        config.url,
        registered.endpoint_id,
        dir.join("credential").display()
    ))
}

/// Flags given on the command line win over an import.
fn apply_flags(args: &Configure, config: &mut EndpointConfig) {
    let p = &mut config.provider;
    if let Some(kind) = args.provider
        && kind != p.kind
    {
        let keep = std::mem::replace(p, ProviderConfig::of_kind(kind));
        p.python = keep.python;
    }
    if args.nodes.is_some() {
        p.nodes_per_block = args.nodes;
    }
    if args.workers.is_some() {
        p.max_workers_per_node = args.workers;
    }
    if let Some(python) = &args.python {
        p.python = python.clone();
    }
    for (flag, slot) in [
        (&args.partition, &mut p.partition),
        (&args.queue, &mut p.queue),
        (&args.account, &mut p.account),
    ] {
        if flag.is_some() {
            slot.clone_from(flag);
        }
    }
    if args.walltime.is_some() {
        p.walltime = args.walltime;
    }
    if args.max_blocks.is_some() {
        p.max_blocks = args.max_blocks;
    }
    if p.kind.is_batch() && p.walltime.is_none() {
        // Written out, so the file says what a block asks for.
        p.walltime = Some(p.walltime());
    }
}
