//! `ferry dev`'s flags.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Ferry on this machine: the server (web-service and forwarder in one process) and a
/// local endpoint, on an embedded store and broker unless `--redis` / `--amqp` name real ones. Ctrl-C stops it.
#[derive(clap::Parser, Debug)]
#[command(name = "ferry dev", version)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) logging: ferry_telemetry::Logging,
    /// Where the web-service listens.
    #[arg(long, env = "FERRY_DEV_LISTEN", default_value = "127.0.0.1:8000")]
    pub(crate) listen: SocketAddr,
    /// Ferry's home: `ferry dev` keeps its state under `dev/` there and writes the SDK's
    /// `client.json`. Default: `$FERRY_HOME`, else `~/.ferry`.
    #[arg(long, value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,
    /// Use this Redis (`redis://...`) instead of the embedded store.
    #[arg(long, value_name = "URL", env = "FERRY_DEV_REDIS_URL")]
    pub(crate) redis: Option<String>,
    /// Use this RabbitMQ (`amqp://...`) instead of the embedded broker.
    #[arg(long, value_name = "URL", env = "FERRY_DEV_AMQP_URL")]
    pub(crate) amqp: Option<String>,
    /// The prefix of every Redis key and queue name, so a dev stack can share a Redis or
    /// RabbitMQ with others.
    #[arg(long, default_value = "ferry-dev")]
    pub(crate) namespace: String,
    /// Worker processes of the local endpoint.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub(crate) workers: u32,
    /// The Python the endpoint runs functions with (it must import `ferry` and `dill`).
    /// Default: the `python` beside the Ferry binaries (the environment Ferry was
    /// installed into), else `python3`.
    #[arg(long, value_name = "PATH", env = "FERRY_PYTHON")]
    pub(crate) python: Option<PathBuf>,
    /// Forget what earlier runs kept (the embedded store's snapshot, the user, the
    /// endpoint) and start from nothing.
    #[arg(long)]
    pub(crate) fresh: bool,
}
