//! The `ferry-endpoint` commands: configure, start, stop, status, list.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::config::{EndpointConfig, ProviderConfig, endpoint_dir, ferry_home};
use crate::state;

/// `configure NAME`: writes `config.toml`.
#[derive(Debug, clap::Args)]
pub struct Configure {
    /// The endpoint's name (also its directory name).
    pub name: String,
    /// The Ferry web-service URL.
    #[arg(long, env = "FERRY_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// The bearer token (stored in config.toml, readable by you only).
    #[arg(long, env = "FERRY_TOKEN")]
    pub token: Option<String>,
    /// Managers (nodes) to keep.
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// Worker processes per manager.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// The Python interpreter workers use.
    #[arg(long, env = "FERRY_PYTHON", default_value = "python3")]
    pub python: String,
    /// Replace an existing config.
    #[arg(long)]
    pub force: bool,
}

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

pub fn configure(args: Configure) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let dir = endpoint_dir(&args.name);
    let path = dir.join("config.toml");
    if path.exists() && !args.force {
        anyhow::bail!("{} exists; pass --force to replace it", path.display());
    }
    let config = EndpointConfig {
        url: args.url,
        token: args.token,
        listen: "127.0.0.1:0".to_owned(),
        prefetch: 64,
        manager_timeout_secs: 30,
        provider: ProviderConfig {
            nodes: args.nodes,
            workers_per_node: args.workers,
            python: args.python,
            ..ProviderConfig::default()
        },
    };
    let text = toml::to_string(&config)?;
    EndpointConfig::parse(&text).map_err(|e| anyhow::anyhow!(e))?;
    std::fs::create_dir_all(&dir)?;
    std::fs::write(&path, text)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    println!("configured endpoint {} in {}", args.name, path.display());
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

/// The pid of the running endpoint `name`, if it runs.
fn running_pid(dir: &std::path::Path) -> Option<u32> {
    state::read_pid(dir).filter(|&pid| state::alive(pid))
}

/// `start NAME` without `--foreground`: starts the endpoint detached and waits until it
/// is registered and serving (or says why it could not start).
pub fn start_daemon(name: &str) -> anyhow::Result<()> {
    let (dir, _) = load(name)?;
    if let Some(pid) = running_pid(&dir) {
        anyhow::bail!("endpoint {name} is already running (pid {pid})");
    }
    let _ = std::fs::remove_file(dir.join("running.json"));
    let log_path = dir.join("endpoint.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["start", name, "--foreground"])
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

/// `stop NAME`: SIGTERM, then SIGKILL after 30 s.
pub fn stop(name: &str) -> anyhow::Result<()> {
    let (dir, _) = load(name)?;
    let Some(pid) = running_pid(&dir) else {
        println!("endpoint {name} is not running");
        return Ok(());
    };
    let target = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while state::alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if state::alive(pid) {
        let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
        state::clear_running(&dir);
        println!("endpoint {name} (pid {pid}) did not stop in 30 s and was killed");
    } else {
        println!("endpoint {name} stopped");
    }
    Ok(())
}

/// `status NAME`: local process state, and what the web-service says. Exits 3 when the
/// endpoint is not running.
pub async fn status(name: &str) -> anyhow::Result<bool> {
    let (dir, config) = load(name)?;
    let pid = running_pid(&dir);
    let id = state::read_id(&dir);
    println!("endpoint:  {name}");
    println!(
        "id:        {}",
        id.map(|i| i.to_string())
            .unwrap_or_else(|| "(never registered)".into())
    );
    match pid {
        Some(pid) => println!("process:   running (pid {pid})"),
        None => println!("process:   stopped"),
    }
    if let (Some(id), Ok(token)) = (id, crate::service::token(&config)) {
        let url = format!("{}/v1/endpoints/{id}", config.url.trim_end_matches('/'));
        let answer = reqwest::Client::new()
            .get(&url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => {
                let doc: ferry_proto::api::EndpointDoc = r.json().await?;
                println!(
                    "service:   {} (last heartbeat {:?})",
                    doc.status, doc.last_heartbeat
                );
            }
            Ok(r) => println!("service:   cannot ask ({})", r.status()),
            Err(e) => println!("service:   unreachable ({e})"),
        }
    }
    Ok(pid.is_some())
}

/// `list`: every configured endpoint.
pub fn list() -> anyhow::Result<()> {
    let root = ferry_home().join("endpoints");
    let mut names: Vec<String> = match std::fs::read_dir(&root) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("config.toml").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    println!("{:<24} {:<38} STATE", "NAME", "ID");
    for name in names {
        let dir = endpoint_dir(&name);
        let id = state::read_id(&dir)
            .map(|i| i.to_string())
            .unwrap_or_else(|| "-".into());
        let state = if running_pid(&dir).is_some() {
            "running"
        } else {
            "stopped"
        };
        println!("{name:<24} {id:<38} {state}");
    }
    Ok(())
}
