//! `check NAME`: the first thing to run on a new cluster. It renders the block script,
//! submits a short test job, waits until a manager from it connects back to this machine
//! (proving the scheduler, `worker_init`, the manager binary, the network, the pin of
//! the endpoint's certificate and the secret all work), cancels the job, and says at
//! each step what failed and why. It needs no Ferry service: the check listens for the
//! manager itself.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_proto::frames::ToManager;
use futures_util::SinkExt;

use super::load;
use crate::config::{EndpointConfig, ProviderKind};
use crate::forge::BlockScript;
use crate::provider::local::{Local, LocalManagers};
use crate::provider::{BlockJob, JobState, Provider, pbs::Pbs, slurm::Slurm};
use crate::{address, service, state};

/// The longest walltime a test job asks for.
const TEST_WALLTIME_SECS: u64 = 300;

fn ok(what: impl std::fmt::Display) {
    println!("[ok]   {what}");
}

fn fail(what: impl std::fmt::Display) {
    println!("[fail] {what}");
}

fn wait(what: impl std::fmt::Display) {
    println!("[..]   {what}");
}

/// Runs the check; `Ok(true)` when every step passed.
pub async fn check(name: &str, within: Duration) -> anyhow::Result<bool> {
    let (dir, config) = load(name)?;
    let kind = config.provider.kind;
    ok(format!(
        "config {} (provider {})",
        dir.join("config.toml").display(),
        kind.name()
    ));
    if kind == ProviderKind::Manual {
        println!("a manual endpoint starts no managers: nothing to check");
        return Ok(true);
    }
    let commands: &[&str] = match kind {
        ProviderKind::Slurm => &["sbatch", "squeue", "scancel"],
        ProviderKind::Pbs => &["qsub", "qstat", "qdel"],
        _ => &[],
    };
    let missing: Vec<&str> = commands
        .iter()
        .copied()
        .filter(|c| on_path(c).is_none())
        .collect();
    if !missing.is_empty() {
        fail(format!(
            "not on PATH: {} (is this a login node of the cluster, or is a module to load missing?)",
            missing.join(", ")
        ));
        return Ok(false);
    }
    if !commands.is_empty() {
        ok(format!("{} found", commands.join(", ")));
    }
    let manager_bin = match service::manager_bin(&config) {
        Ok(bin) => bin,
        Err(e) => {
            fail(e);
            return Ok(false);
        }
    };
    ok(format!("manager binary {}", manager_bin.display()));
    let listener = match tokio::net::TcpListener::bind(config.listen()).await {
        Ok(l) => l,
        Err(e) => {
            fail(format!("cannot listen on {}: {e}", config.listen()));
            return Ok(false);
        }
    };
    let bound = listener.local_addr()?;
    let auth = crate::managers::Auth::load(&dir)?;
    let connect_to = match kind {
        ProviderKind::Local => bound.to_string(),
        _ => address::for_managers(&config, bound)?,
    };
    ok(format!(
        "listening on {bound}; managers are told to connect to {connect_to}"
    ));
    let passed = match kind {
        ProviderKind::Slurm => {
            let timeout = config.provider.cmd_timeout();
            batch(
                Slurm { timeout },
                name,
                &dir,
                &config,
                listener,
                &connect_to,
                &auth,
                &manager_bin,
                within,
            )
            .await?
        }
        ProviderKind::Pbs => {
            let timeout = config.provider.cmd_timeout();
            batch(
                Pbs { timeout },
                name,
                &dir,
                &config,
                listener,
                &connect_to,
                &auth,
                &manager_bin,
                within,
            )
            .await?
        }
        _ => {
            let p = &config.provider;
            let local = Local::new(LocalManagers {
                bin: manager_bin,
                endpoint: connect_to,
                workers: p.workers_per_node().unwrap_or(2),
                nodes: 1,
                python: p.python.clone(),
                run_root: Some(p.with_run_dir(&dir).run_dir.expect("filled in")),
                keep_run_dirs: p.keep_run_dirs(),
                app_env_script: p.app_env_script.clone(),
                python_run_dirs: p.python_run_dirs.map(crate::config::PythonRunDirs::name),
                env: p.manager_env(),
                secret: auth.secret.to_string(),
                cert_sha256: auth.cert_sha256,
            });
            let job = BlockJob {
                block_id: "check".into(),
                dir: dir.clone(),
                script: dir.join("none"),
            };
            let id = local.submit(&job).await?;
            let connected = connect_back(&listener, &auth, within).await;
            local.cancel(&[id]).await?;
            connected.is_ok()
        }
    };
    if passed {
        println!("all good: endpoint {name} can get managers");
    }
    Ok(passed)
}

/// Submits a short test block, waits for its manager, cancels it.
#[allow(clippy::too_many_arguments)]
async fn batch<P: Provider>(
    provider: P,
    name: &str,
    dir: &Path,
    config: &EndpointConfig,
    listener: tokio::net::TcpListener,
    connect_to: &str,
    auth: &crate::managers::Auth,
    manager_bin: &Path,
    within: Duration,
) -> anyhow::Result<bool> {
    let template = match service::template(config) {
        Ok(t) => t,
        Err(e) => {
            fail(e);
            return Ok(false);
        }
    };
    let block_id = format!("check-{}", ferry_proto::time::now_micros() / 1_000_000);
    let block_dir = dir.join("blocks").join(&block_id);
    std::fs::create_dir_all(&block_dir)?;
    let walltime = config.provider.walltime().as_secs().min(TEST_WALLTIME_SECS);
    let resolved = config.provider.with_run_dir(dir);
    let script = BlockScript {
        config: &resolved,
        endpoint_name: name,
        block_id: &block_id,
        block_dir: &block_dir,
        endpoint_address: connect_to,
        secret: &auth.secret,
        cert_sha256: auth.cert_sha256,
        manager_bin,
        walltime_secs: Some(walltime),
    }
    .render(&template)
    .map_err(|errors| {
        anyhow::anyhow!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let path = block_dir.join("submit.sh");
    state::write_private(&path, &script, 0o700)?;
    ok(format!("block script written: {}", path.display()));
    let job = match provider
        .submit(&BlockJob {
            block_id: block_id.clone(),
            dir: block_dir.clone(),
            script: path,
        })
        .await
    {
        Ok(job) => job,
        Err(e) => {
            fail(format!("the scheduler refused the test job: {e}"));
            return Ok(false);
        }
    };
    let _ = std::fs::write(block_dir.join("job_id"), format!("{job}\n"));
    ok(format!("submitted test job {job} ({} s of walltime)", walltime));
    let started = Instant::now();
    let mut last = String::new();
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    let outcome = loop {
        tokio::select! {
            greeted = connect_back(&listener, auth, within.saturating_sub(started.elapsed())) => break greeted.is_ok(),
            _ = poll.tick() => {
                match provider.status(std::slice::from_ref(&job)).await {
                    Ok(states) => {
                        let Some(s) = states.get(&job) else { continue };
                        let line = format!(
                            "job {job} is {}{}",
                            s.state.name(),
                            s.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
                        );
                        if line != last {
                            wait(&line);
                            last = line;
                        }
                        if s.state.is_over() {
                            let output = std::fs::read_to_string(block_dir.join("job.out")).unwrap_or_default();
                            fail(format!(
                                "job {job} ended ({}) before its manager connected; the start of {}:\n{}",
                                s.state.name(),
                                block_dir.join("job.out").display(),
                                output.lines().take(20).collect::<Vec<_>>().join("\n")
                            ));
                            break false;
                        }
                    }
                    Err(e) => wait(format!("cannot read the job's state ({e}); waiting on")),
                }
            }
        }
        if started.elapsed() >= within {
            fail(format!(
                "no manager connected within {} ({last}); if the job runs, can its node reach {connect_to}? \
                 (set `address` or `address_interface`)",
                humantime::format_duration(within)
            ));
            break false;
        }
    };
    match provider.cancel(std::slice::from_ref(&job)).await {
        Ok(()) => ok(format!("cancelled test job {job}")),
        Err(e) => fail(format!("cannot cancel test job {job}: {e}")),
    }
    if let Ok(states) = provider.status(std::slice::from_ref(&job)).await
        && let Some(s) = states.get(&job)
        && s.state == JobState::Running
    {
        wait(format!("job {job} is still ending"));
    }
    Ok(outcome)
}

/// Waits for one manager to connect and prove the secret; tells it to stop.
async fn connect_back(
    listener: &tokio::net::TcpListener,
    auth: &crate::managers::Auth,
    within: Duration,
) -> Result<(), ()> {
    let started = Instant::now();
    loop {
        let accepted =
            tokio::time::timeout(within.saturating_sub(started.elapsed()), listener.accept()).await;
        let Ok(Ok((stream, peer))) = accepted else {
            // The caller reports the timeout (with what it knows of the job).
            return std::future::pending().await;
        };
        match crate::managers::greet(stream, auth).await {
            Ok((info, _frames, mut writer)) => {
                ok(format!(
                    "manager connected back from {peer} (host {}, {} workers) after {:.1} s",
                    info.hostname,
                    info.workers,
                    started.elapsed().as_secs_f64()
                ));
                if let Ok(bye) = ferry_proto::codec::encode(&ToManager::Shutdown) {
                    let _ = writer.send(bytes::Bytes::from(bye)).await;
                }
                return Ok(());
            }
            Err(why) => fail(format!(
                "a connection from {peer} was not a manager of this endpoint: {why}"
            )),
        }
    }
}

/// Where `program` is on PATH.
fn on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
