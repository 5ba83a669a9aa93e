//! `start` (detached), `stop`, `restart`, `delete`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{load, running_pid};
use crate::state;

/// `start NAME` without `--foreground`: checks the workers' Python, starts the endpoint
/// detached and waits until it is registered and serving (or says why it could not
/// start); prints where it logs.
pub fn start_daemon(name: &str, log_format: ferry_telemetry::LogFormat) -> anyhow::Result<()> {
    let (dir, config) = load(name)?;
    if let Some(pid) = running_pid(&dir) {
        anyhow::bail!("endpoint {name} is already running (pid {pid})");
    }
    super::check_python(name, &config)?;
    let _ = std::fs::remove_file(dir.join("running.json"));
    let log_path = super::log_path(&dir);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["start", name, "--foreground"])
        .args(match log_format {
            ferry_telemetry::LogFormat::Json => &["--log-format", "json"][..],
            ferry_telemetry::LogFormat::Text => &[][..],
        })
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "endpoint {name} failed to start ({status}); the end of {}:\n{}",
                log_path.display(),
                tail(&log_path, 20)
            );
        }
        if let Some(r) = state::read_running(&dir).filter(|r| r.pid == child.id()) {
            println!("endpoint {name} started: id {}, pid {}", r.endpoint_id, r.pid);
            println!(
                "logs: {} (ferry-endpoint logs {name} --follow)",
                log_path.display()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!(
        "endpoint {name} did not report ready within 60 s; see {}",
        log_path.display()
    )
}

fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `stop NAME`: SIGTERM, which cancels the endpoint's blocks and hands back the tasks
/// it held (their messages return to its queue); SIGKILL if it has not stopped within
/// the scheduler's command timeout and a minute.
pub fn stop(name: &str) -> anyhow::Result<()> {
    let (dir, config) = load(name)?;
    let Some(pid) = running_pid(&dir) else {
        println!("endpoint {name} is not running");
        return Ok(());
    };
    let target = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM)?;
    let grace = config.provider.cmd_timeout() + Duration::from_secs(60);
    let deadline = Instant::now() + grace;
    while state::alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if state::alive(pid) {
        let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
        state::clear_running(&dir);
        println!(
            "endpoint {name} (pid {pid}) did not stop in {} and was killed; check its blocks with `ferry-endpoint status {name}`",
            humantime::format_duration(grace)
        );
    } else {
        let cancelled = crate::blocks::read_report(&dir)
            .map(|r| r.blocks.iter().filter(|b| b.state == "cancelled").count())
            .unwrap_or(0);
        if cancelled > 0 {
            println!("endpoint {name} stopped; its blocks are cancelled");
        } else {
            println!("endpoint {name} stopped");
        }
    }
    Ok(())
}

/// `restart NAME`: stop (if it runs), then start detached.
pub fn restart(name: &str, log_format: ferry_telemetry::LogFormat) -> anyhow::Result<()> {
    stop(name)?;
    start_daemon(name, log_format)
}

/// `delete NAME`: stops the endpoint (cancelling its blocks), deregisters it from the
/// service, and removes its directory. The service refuses while tasks wait for the
/// endpoint; then nothing is removed.
pub fn delete(name: &str) -> anyhow::Result<()> {
    let (dir, config) = load(name)?;
    if running_pid(&dir).is_some() {
        stop(name)?;
    }
    if let Some(id) = state::read_id(&dir) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(deregister(&dir, &config, id))?;
    }
    std::fs::remove_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", dir.display()))?;
    println!("deleted endpoint {name} ({})", dir.display());
    Ok(())
}

async fn deregister(
    dir: &std::path::Path,
    config: &crate::config::EndpointConfig,
    id: ferry_proto::EndpointId,
) -> anyhow::Result<()> {
    {
        let token = crate::service::token(dir, config)?;
        let url = format!("{}/v1/endpoints/{id}", config.url.trim_end_matches('/'));
        // The service calls an endpoint online until a few heartbeats are missed: a
        // stop just now sent a last one with period 0, so it reads offline at once.
        let answer = config
            .http_client()?
            .delete(&url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| anyhow::Error::new(e).context(format!("cannot reach the web-service at {url}")))?;
        let status = answer.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            println!("the service did not know endpoint {id} (already deleted)");
        } else if !status.is_success() {
            let body: Option<ferry_proto::api::ErrorBody> = answer.json().await.ok();
            let message = body.map(|b| b.message).unwrap_or_default();
            anyhow::bail!("the service refused to delete endpoint {id} ({status}): {message}");
        } else {
            println!("deregistered endpoint {id}");
        }
    }
    Ok(())
}
