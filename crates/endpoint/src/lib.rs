//! Ferry's endpoint: the daemon a user runs on a cluster's login node.
//!
//! - [`config`]: the endpoint's `config.toml` and where endpoint directories live.
//! - [`cli`]: `configure`, `start` (detached, or `--foreground`), `stop`, `status`, `list`.
//! - [`service`]: registration over HTTP, then the running endpoint: its task queue
//!   consumer, the manager server, the reporters, the provider.
//! - [`data`]: large inputs and results, over HTTP (the data plane).
//! - [`interchange`]: which manager runs which task; acks a delivery once every task in
//!   it is settled.
//! - [`managers`]: the TCP connections with managers.
//! - [`reporter`]: batched status updates, results and heartbeats to RabbitMQ.
//! - [`provider`]: how managers are started (local processes).
//! - [`state`]: the files in the endpoint directory (id, pid, running marker).

pub mod cli;
pub mod config;
pub mod data;
pub mod interchange;
pub mod managers;
pub mod provider;
pub mod reporter;
pub mod service;
pub mod state;
