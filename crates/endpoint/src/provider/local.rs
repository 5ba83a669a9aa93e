//! The local provider: managers are child processes of the endpoint, restarted if they
//! exit while the endpoint runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::ProviderConfig;

/// Keeps `config.nodes` managers running until `shutdown`, then stops them.
pub async fn run(config: ProviderConfig, endpoint_addr: SocketAddr, shutdown: CancellationToken) {
    let bin = config
        .manager_bin
        .clone()
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .map(|p| p.with_file_name("ferry-manager"))
        })
        .unwrap_or_else(|| PathBuf::from("ferry-manager"));
    let mut set = tokio::task::JoinSet::new();
    for node in 0..config.nodes {
        set.spawn(keep_manager(
            node,
            bin.clone(),
            config.clone(),
            endpoint_addr,
            shutdown.clone(),
        ));
    }
    while set.join_next().await.is_some() {}
}

async fn keep_manager(
    node: u32,
    bin: PathBuf,
    config: ProviderConfig,
    endpoint_addr: SocketAddr,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let child = tokio::process::Command::new(&bin)
            .arg("--endpoint")
            .arg(endpoint_addr.to_string())
            .arg("--workers")
            .arg(config.workers_per_node.to_string())
            .arg("--block-id")
            .arg(format!("local-{node}"))
            .env("FERRY_PYTHON", &config.python)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(bin = %bin.display(), error = %e, "cannot start a manager");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        tokio::select! {
            status = child.wait() => {
                tracing::warn!(node, ?status, "manager exited; starting another");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            _ = shutdown.cancelled() => {
                if let Some(pid) = child.id() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
                }
                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                return;
            }
        }
    }
}
