//! Ferry's endpoint: the daemon a user runs on a cluster's login node.
//!
//! - [`config`]: the endpoint's `config.toml` and where endpoint directories live.
//! - [`cli`]: `configure`, `start` (detached, or `--foreground`), `stop`, `status`, `list`.
//! - [`service`]: registration over HTTP, then the running endpoint: its task queue
//!   consumer, the manager server, the reporters, the provider.
//! - [`data`]: large inputs and results, over HTTP (the data plane).
//! - [`interchange`]: which manager runs which task; acks a delivery once every task in
//!   it is settled.
//! - [`managers`]: the connections with managers: TLS with the endpoint's certificate,
//!   then their proof of its secret.
//! - [`reporter`]: batched status updates, results and heartbeats to RabbitMQ.
//! - [`metrics`]: what `/metrics` shows, on `metrics_listen`.
//! - [`provider`]: how blocks of managers are started: local processes, Slurm, PBS.
//! - [`blocks`]: the blocks an endpoint holds, and when to add or cancel one.
//! - [`forge`]: block scripts made from templates with `@@NAME@@` markup.
//! - [`address`]: the address managers on other nodes use to reach the endpoint.
//! - [`state`]: the files in the endpoint directory (id, pid, running marker, the manager
//!   secret and certificate).

pub mod address;
pub mod blocks;
pub mod cli;
pub mod config;
pub mod data;
pub mod forge;
pub mod interchange;
pub mod managers;
pub mod metrics;
pub mod provider;
pub mod reporter;
pub mod service;
pub mod state;
