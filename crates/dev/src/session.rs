//! One `ferry dev` from start to stop: check what could make it fail before starting
//! anything (the home, the port, the endpoint's Python), start the backends, the
//! server (`ferry-server`: the web-service and the forwarder in one process), a user
//! and the endpoint, say where they are, then wait for Ctrl-C (or a child's death) and
//! stop them in order: the endpoint first (it hands back what it holds while the
//! forwarder still listens), then the server, then the embedded servers (the store
//! writes its snapshot).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::args::Args;
use crate::backends::Backends;
use crate::children::{self, Child};
use crate::home::{ClientConfig, Home};

/// The local endpoint's name, in `dev/endpoints/`.
pub(crate) const ENDPOINT: &str = "local";

/// How long a child may take to come up.
const READY_WITHIN: Duration = Duration::from_secs(60);

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let home = Home::prepare(Home::locate(args.home.clone())?, args.fresh)?;
    check_port(&args)?;
    let python = endpoint_python(args.python.clone())?;
    check_python(&python)?;

    let backends = Backends::start(args.redis.clone(), args.amqp.clone(), home.snapshot()).await?;
    let mut running = Vec::new();
    let outcome = start_and_wait(&args, &home, &backends, &python, &mut running).await;
    // The endpoint first, while the forwarder still takes what it hands back.
    for child in running.iter_mut().rev() {
        let within = if child.name == "endpoint" {
            Duration::from_secs(90)
        } else {
            Duration::from_secs(15)
        };
        child.stop(within).await;
    }
    backends.stop().await;
    if outcome.is_ok() {
        println!("ferry dev stopped");
    }
    outcome
}

/// Starts the two processes (pushed to `running` as they start, so the caller stops
/// whatever did), prints where they are, and waits for a signal or a death.
async fn start_and_wait(
    args: &Args,
    home: &Home,
    backends: &Backends,
    python: &std::path::Path,
    running: &mut Vec<Child>,
) -> anyhow::Result<()> {
    let url = format!("http://{}", args.listen);
    let service_env = |command: &mut tokio::process::Command| {
        command
            .env("FERRY_REDIS_URL", &backends.redis_url)
            .env("FERRY_AMQP_URL", &backends.amqp_url)
            .env("FERRY_NAMESPACE", &args.namespace);
    };

    // The web-service and the forwarder in one process: a submission reaches the
    // dispatcher in memory, a recorded result wakes the waiting request in memory.
    let mut server = children::command("ferry-server");
    service_env(&mut server);
    server
        .env("FERRY_LISTEN", args.listen.to_string())
        .env("FERRY_PUBLIC_AMQP_URL", &backends.endpoint_amqp_url);
    running.push(Child::spawn("server", server, home.logs.join("server.log"))?);
    wait_serving(&url, running).await?;

    let token = user_token(home, &url, &service_env).await?;

    configure_endpoint(home, &url, &token, args.workers, python).await?;
    let mut endpoint = children::command("ferry-endpoint");
    endpoint
        .env("FERRY_HOME", &home.dev)
        .args(["start", ENDPOINT, "--foreground"]);
    let log = home.endpoint_dir().join("endpoint.log");
    running.push(Child::spawn("endpoint", endpoint, log)?);
    let endpoint_id = wait_endpoint(home, running).await?;

    home.write_client_config(&ClientConfig {
        url: url.clone(),
        token: token.clone(),
        endpoint_id: endpoint_id.clone(),
    })?;
    println!("Ferry is running on {}; Ctrl-C stops it", backends.describe());
    println!("  URL       {url}");
    println!("  token     {token}");
    println!("  endpoint  {endpoint_id}");
    println!(
        "  client    {} (Client() and Executor() with no arguments use it)",
        home.client_config().display()
    );
    println!(
        "  logs      {} and {}",
        home.logs.display(),
        home.endpoint_dir().join("endpoint.log").display()
    );
    println!("  python    {}", python.display());
    println!("  store     {}", backends.store_shown());
    println!("  broker    {}", backends.broker_shown());

    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = interrupt.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if let Some(message) = any_dead(running) {
                    bail!(message);
                }
            }
        }
    }
    println!("stopping (the endpoint first)");
    Ok(())
}

/// Refuses an address already taken, before anything starts.
fn check_port(args: &Args) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(args.listen) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "{} is in use (another ferry dev, or another server): stop it or choose another address with --listen 127.0.0.1:PORT",
            args.listen
        ),
        Err(e) => bail!("cannot listen on {}: {e}", args.listen),
    }
}

/// `--python`, else the `python` beside the Ferry binaries (the environment they were
/// installed into), else `python3`: the endpoint's own default.
fn endpoint_python(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = flag {
        return Ok(path);
    }
    let beside = children::binary("python");
    if beside.is_absolute() {
        return Ok(beside);
    }
    Ok(PathBuf::from("python3"))
}

/// The endpoint's Python must import the SDK (its worker host is `ferry.host`) and
/// dill; refused with the cause here rather than in every task's error.
fn check_python(python: &std::path::Path) -> anyhow::Result<()> {
    let output = std::process::Command::new(python)
        .args(["-c", "import ferry, dill"])
        .output()
        .with_context(|| {
            format!(
                "cannot run the endpoint's Python {}: choose one with --python",
                python.display()
            )
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let cause = stderr.lines().last().unwrap_or("no output");
        bail!(
            "the endpoint's Python {} cannot import ferry and dill ({cause}): install Ferry into it (pip install ferry), or choose another with --python",
            python.display()
        );
    }
    Ok(())
}

/// The first dead child's obituary.
fn any_dead(running: &mut [Child]) -> Option<String> {
    running
        .iter_mut()
        .find_map(|child| child.exited().map(|status| child.obituary(status)))
}

/// Waits until the web-service answers `GET /v1/version`.
async fn wait_serving(url: &str, running: &mut [Child]) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + READY_WITHIN;
    while Instant::now() < deadline {
        if let Some(message) = any_dead(running) {
            bail!(message);
        }
        if let Ok(response) = client.get(format!("{url}/v1/version")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the web-service did not answer on {url} within {READY_WITHIN:?}")
}

/// The dev user's token: the one an earlier run kept while the store still knows it,
/// else another for the dev user, else a new user's.
async fn user_token(
    home: &Home,
    url: &str,
    service_env: &dyn Fn(&mut tokio::process::Command),
) -> anyhow::Result<String> {
    if let Some(token) = home.saved_token() {
        let known = reqwest::Client::new()
            .get(format!("{url}/v1/whoami"))
            .bearer_auth(&token)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if known {
            return Ok(token);
        }
    }
    // The dev user (kept in the store) with a token lost: another token; else a new user.
    let admin = |args: &'static [&'static str]| {
        let mut command = children::command("ferry-web-service");
        service_env(&mut command);
        command.args(args);
        command
    };
    let mut output = admin(&["token", "create", "dev", "--label", "ferry dev"])
        .output()
        .await
        .context("cannot run ferry-web-service token create")?;
    if !output.status.success() {
        output = admin(&["create-user", "dev"])
            .output()
            .await
            .context("cannot run ferry-web-service create-user")?;
    }
    if !output.status.success() {
        bail!(
            "ferry-web-service create-user failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    home.save_token(&token)?;
    Ok(token)
}

/// (Re)configures the local endpoint for this run's URL and token; it keeps its ID.
async fn configure_endpoint(
    home: &Home,
    url: &str,
    token: &str,
    workers: u32,
    python: &std::path::Path,
) -> anyhow::Result<()> {
    let output = children::command("ferry-endpoint")
        .env("FERRY_HOME", &home.dev)
        .args(["configure", ENDPOINT, "--force", "--url", url, "--token", token])
        .arg("--workers")
        .arg(workers.to_string())
        .arg("--python")
        .arg(python)
        .output()
        .await
        .context("cannot run ferry-endpoint configure")?;
    if !output.status.success() {
        bail!(
            "ferry-endpoint configure failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Waits until the endpoint says it is registered and serving (its `running.json`
/// names its pid), and answers its ID.
async fn wait_endpoint(home: &Home, running: &mut [Child]) -> anyhow::Result<String> {
    let path = home.endpoint_dir().join("running.json");
    let pid = running.last().and_then(Child::pid);
    let deadline = Instant::now() + READY_WITHIN;
    while Instant::now() < deadline {
        if let Some(message) = any_dead(running) {
            bail!(message);
        }
        if let Ok(bytes) = std::fs::read(&path)
            && let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes)
            && value["pid"].as_u64().map(|p| p as u32) == pid
            && let Some(id) = value["endpoint_id"].as_str()
        {
            return Ok(id.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the endpoint did not report ready within {READY_WITHIN:?}; see {}",
        home.endpoint_dir().join("endpoint.log").display()
    )
}
