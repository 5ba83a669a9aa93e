//! Running an endpoint in the foreground: register, connect, serve managers, consume
//! the task queue, report, until told to stop.

use std::path::Path;
use std::time::Duration;

use ferry_broker::Broker;
use ferry_proto::EndpointId;
use ferry_proto::api::{EndpointRegistered, ErrorBody, RegisterEndpoint};
use ferry_proto::messages::{CancelTasks, EndpointLoad, EndpointMessage, TaskBatch};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::blocks::{Forge, Scaler};
use crate::config::{EndpointConfig, ProviderKind};
use crate::data::DataPlane;
use crate::interchange::{Capacity, Input, Interchange};
use crate::provider::local::{Local, LocalManagers};
use crate::provider::{Provider, pbs::Pbs, slurm::Slurm};
use crate::{address, forge, managers, reporter, state};

/// Tasks waiting for a manager above which the endpoint takes no further message from
/// its queue.
const MOST_WAITING: usize = 1000;

/// How long after RabbitMQ last blocked publishes (a memory or disk alarm) a task
/// message is checked like a redelivered one: cancels made during the block reach the
/// endpoint only once it clears and the forwarder publishes them again, and the task
/// messages that come meanwhile may be of tasks already cancelled.
const CHECK_AFTER_BLOCK: Duration = Duration::from_secs(30);

/// When this endpoint's connection was last seen blocked, checked every 250 ms.
#[derive(Clone, Default)]
struct BlockWatch(std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl BlockWatch {
    /// Watches `broker` until dropped with the returned task.
    fn start(&self, broker: Broker) -> tokio::task::JoinHandle<()> {
        let last = self.0.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if broker.blocked() {
                    *last.lock().expect("poisoned") = Some(std::time::Instant::now());
                }
            }
        })
    }

    /// Whether the broker blocked publishes within [`CHECK_AFTER_BLOCK`].
    fn recent(&self) -> bool {
        self.0
            .lock()
            .expect("poisoned")
            .is_some_and(|at| at.elapsed() < CHECK_AFTER_BLOCK)
    }
}

/// The token the endpoint talks to the service with: its own credential (`credential`
/// in its directory, made when it was first registered, or `FERRY_ENDPOINT_TOKEN`),
/// else its owner's token (`FERRY_TOKEN`, or `token` in config.toml), which registers it
/// and gets it a credential of its own.
pub fn token(dir: &Path, config: &EndpointConfig) -> anyhow::Result<String> {
    std::env::var("FERRY_ENDPOINT_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| state::read_credential(dir))
        .or_else(|| std::env::var("FERRY_TOKEN").ok().filter(|t| !t.is_empty()))
        .or_else(|| config.token.clone())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no credential: run `ferry-endpoint configure NAME --token <your token>` (or set FERRY_TOKEN) once"
            )
        })
}

/// What the endpoint's workers run Python with (asked of `provider.python`); `None` for
/// managers started by hand, whose Python the endpoint does not know.
pub fn workers_env(config: &EndpointConfig) -> Option<ferry_proto::api::WorkerEnv> {
    (config.provider.kind != crate::config::ProviderKind::Manual)
        .then(|| crate::cli::python::worker_env(&config.provider.python))
        .flatten()
}

/// The task environments, each with its Python as its hosts would start (asked once, at
/// start; not for managers started by hand, whose environments are their own).
fn environments(
    config: &EndpointConfig,
) -> std::collections::BTreeMap<String, crate::interchange::EnvironmentInfo> {
    let manual = config.provider.kind == crate::config::ProviderKind::Manual;
    config
        .provider
        .host_environments()
        .into_iter()
        .map(|(name, e)| {
            let python = (!manual)
                .then(|| crate::cli::python::environment_env(&e))
                .flatten()
                .map(|found| crate::interchange::WorkersPython {
                    version: found.python_version,
                    interpreter: e.python.clone(),
                });
            match &python {
                Some(p) => tracing::info!(environment = %name, python = %p.version, interpreter = %p.interpreter, "task environment"),
                None => tracing::warn!(environment = %name, interpreter = %e.python, "task environment whose Python could not be asked its version (does it have Ferry's SDK?)"),
            }
            let info = crate::interchange::EnvironmentInfo {
                python,
                recycle_unreferenced: e.recycle_unreferenced,
                recycle_session: e.recycle_session,
            };
            (name, info)
        })
        .collect()
}

/// Registers with the web-service (keeping the id from an earlier start), telling it
/// `worker_env` ([`workers_env`]). A credential the service hands back (registering
/// with the owner's token) is kept in the endpoint's directory and used from then on.
pub async fn register(
    dir: &Path,
    config: &EndpointConfig,
    name: &str,
    endpoint_id: Option<EndpointId>,
    token: &str,
    worker_env: Option<ferry_proto::api::WorkerEnv>,
) -> anyhow::Result<EndpointRegistered> {
    let url = format!("{}/v1/endpoints", config.url.trim_end_matches('/'));
    let response = config
        .http_client()?
        .post(&url)
        .bearer_auth(token)
        .json(&RegisterEndpoint {
            name: name.to_owned(),
            endpoint_id,
            public: config.public,
            shared_with: config.shared_with.clone(),
            allowed_functions: config.allowed_functions.clone(),
            worker_env,
        })
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot reach the web-service at {url}")))?;
    let status = response.status();
    if !status.is_success() {
        let body: Option<ErrorBody> = response.json().await.ok();
        let message = body
            .map(|b| format!("{}: {}", b.code, b.message))
            .unwrap_or_default();
        anyhow::bail!("registration refused by {url} ({status}): {message}");
    }
    let registered: EndpointRegistered = response.json().await?;
    if let Some(credential) = &registered.endpoint_token {
        state::write_credential(dir, credential)?;
        state::write_id(dir, registered.endpoint_id)?;
    }
    Ok(registered)
}

/// Runs the endpoint `name` until `shutdown` is cancelled. A failure before the endpoint
/// first serves (bad token, unreachable service) is returned; after that, losing
/// RabbitMQ or the web-service means starting over, with backoff: the task messages
/// this endpoint had not acked come back to it on the new connection.
pub async fn run(
    name: &str,
    dir: &Path,
    config: EndpointConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut served = false;
    let mut backoff = Duration::from_millis(500);
    loop {
        match run_once(name, dir, &config, &shutdown, &mut served).await {
            Ok(()) => return Ok(()),
            Err(e) if !served => return Err(e),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), retry_in = ?backoff, "endpoint lost a backend; starting over");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn run_once(
    name: &str,
    dir: &Path,
    config: &EndpointConfig,
    shutdown: &CancellationToken,
    served: &mut bool,
) -> anyhow::Result<()> {
    let saved = state::read_id(dir);
    let env = workers_env(config);
    let registration = register(dir, config, name, saved, &token(dir, config)?, env.clone()).await?;
    let endpoint_id = registration.endpoint_id;
    state::write_id(dir, endpoint_id)?;
    tracing::info!(%endpoint_id, name, "endpoint registered");

    let broker = Broker::connect(
        &registration.broker_url,
        &registration.namespace,
        ferry_broker::Options {
            ca_pem: config.ca_pem()?,
            // Everything it sends goes through its own exchange, signed.
            endpoint: Some(endpoint_id),
            ..Default::default()
        },
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(config.listen())
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for managers on {}: {e}", config.listen()))?;
    let manager_addr = listener.local_addr()?;
    let auth = managers::Auth::load(dir)?;
    tracing::info!(cert_sha256 = %auth.cert_sha256, "managers pin this endpoint's certificate (FERRY_ENDPOINT_CERT_SHA256)");

    let data = DataPlane::new(
        config.http_client()?,
        &config.url,
        token(dir, config)?,
        registration.inline_limit_bytes,
        registration.max_result_bytes,
    );
    let (inputs, inputs_rx) = mpsc::unbounded_channel();
    let accept = tokio::spawn(managers::accept(listener, auth.clone(), inputs.clone()));
    let (sink, mut flushers) = reporter::start(
        broker.clone(),
        endpoint_id,
        registration.heartbeat_interval_ms,
        inputs.clone(),
        data.clone(),
    );
    let metrics = std::sync::Arc::new(crate::metrics::EndpointMetrics::default());
    let _serving = match config.metrics_listen {
        Some(listen) => {
            let metrics = metrics.clone();
            let text = move || metrics.render();
            Some(ferry_telemetry::metrics::serve_on(listen, "metrics_listen", text).await?)
        }
        None => None,
    };
    let interchange = Interchange::new(
        endpoint_id,
        sink.clone(),
        Duration::from_secs(config.manager_timeout_secs),
    )
    .allowing(config.allowed_functions.clone())
    .aging(config.priority_aging_secs.map(Duration::from_secs))
    .failing_unmet(config.provider.kind != crate::config::ProviderKind::Manual)
    .with_python(env.map(|e| crate::interchange::WorkersPython {
        version: e.python_version,
        interpreter: config.provider.python.clone(),
    }))
    .with_environments(environments(config))
    .with_strategy(config.strategy)
    .with_metrics(metrics)
    .remembering(take_finished(dir));
    let mut waiting = interchange.pending_tasks();
    let capacity = interchange.capacity();
    let interchange = tokio::spawn(interchange.run(inputs_rx));
    let providers = CancellationToken::new();
    let provider = start_provider(
        name,
        dir,
        config,
        manager_addr,
        &auth,
        capacity,
        &sink,
        &providers,
    )?;

    let queue = broker.endpoint_queue(endpoint_id);
    let mut consumer = broker
        .consume(&queue, config.prefetch, &format!("endpoint-{endpoint_id}"))
        .await?;
    let consume_inputs = inputs.clone();
    let blocks = BlockWatch::default();
    let block_watch = blocks.start(broker.clone());
    let mut consume = tokio::spawn(async move {
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery?;
            match ferry_proto::codec::decode::<TaskBatch>(delivery.body()) {
                Ok(mut batch) if batch.endpoint_id == endpoint_id => {
                    // While plenty of tasks wait for a manager, further messages stay
                    // in the prefetch window (unacked; their tasks still
                    // waiting-for-ep), so the tasks taken in start soon after.
                    if waiting.wait_for(|&n| n < MOST_WAITING).await.is_err() {
                        break;
                    }
                    // A message given again (this endpoint, or an earlier run of it,
                    // held it unacked when it stopped) runs only its tasks still to run;
                    // so does one carrying a re-dispatched copy (see
                    // `carries_a_redispatch`), and one that comes while or shortly after
                    // RabbitMQ blocked publishes (a cancel made meanwhile may not have
                    // reached us yet). Large inputs and functions come from the data
                    // plane. An error here starts the endpoint over and the unacked
                    // message comes back.
                    if delivery.redelivered() || carries_a_redispatch(&batch) || blocks.recent() {
                        data.keep_still_to_run(endpoint_id, &mut batch.tasks).await?;
                    }
                    data.fetch_inputs(&mut batch.tasks).await?;
                    data.fetch_functions(&mut batch).await?;
                    if consume_inputs
                        .send(Input::Tasks {
                            batch: Box::new(batch),
                            delivery: Box::new(delivery),
                        })
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(batch) => {
                    let reason = format!(
                        "tasks for endpoint {} on the queue of {endpoint_id}",
                        batch.endpoint_id
                    );
                    tracing::warn!(%reason, "dead-lettering");
                    delivery.dead_letter(&reason).await?;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dead-lettering a malformed task message");
                    delivery.dead_letter(&e.to_string()).await?;
                }
            }
        }
        anyhow::Ok(())
    });
    // Cancellations come on their own queue so they never wait behind queued tasks.
    let mut control = broker
        .consume(
            &broker.endpoint_control_queue(endpoint_id),
            config.prefetch,
            &format!("endpoint-{endpoint_id}-control"),
        )
        .await?;
    let control_inputs = inputs.clone();
    let mut controls = tokio::spawn(async move {
        while let Some(delivery) = control.next().await {
            let delivery = delivery?;
            match ferry_proto::codec::decode::<CancelTasks>(delivery.body()) {
                Ok(cancel) if cancel.endpoint_id == endpoint_id => {
                    tracing::info!(tasks = cancel.task_ids.len(), "stopping cancelled tasks");
                    if control_inputs
                        .send(Input::Cancel {
                            task_ids: cancel.task_ids,
                        })
                        .is_err()
                    {
                        break;
                    }
                    delivery.ack().await?;
                }
                Ok(cancel) => {
                    let reason = format!(
                        "a cancel for endpoint {} on the control queue of {endpoint_id}",
                        cancel.endpoint_id
                    );
                    tracing::warn!(%reason, "dead-lettering");
                    delivery.dead_letter(&reason).await?;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dead-lettering a malformed control message");
                    delivery.dead_letter(&e.to_string()).await?;
                }
            }
        }
        anyhow::Ok(())
    });
    let tick_inputs = inputs.clone();
    let interval = Duration::from_millis(registration.heartbeat_interval_ms.max(100));
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        // Between ticks, a wake-up now and then reports the tasks that have waited
        // RECEIVED_LINGER for a manager while nothing else happened.
        let mut wake = tokio::time::interval(crate::interchange::RECEIVED_LINGER / 2);
        loop {
            let input = tokio::select! {
                _ = tick.tick() => Input::Tick,
                _ = wake.tick() => Input::Wake,
            };
            if tick_inputs.send(input).is_err() {
                return;
            }
        }
    });
    state::write_running(dir, endpoint_id, manager_addr, auth.cert_sha256)?;
    *served = true;
    tracing::info!(%endpoint_id, %manager_addr, queue, "endpoint running");

    let outcome = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        r = &mut consume => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("the task queue consumer stopped")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e.into()),
        },
        r = &mut controls => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("the control queue consumer stopped")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(e.into()),
        },
        Some(r) = flushers.join_next() => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("a report publisher stopped")),
            Ok(Err(e)) => Err(e.context("publishing reports")),
            Err(e) => Err(e.into()),
        },
        lost = broker.lost() => Err(anyhow::anyhow!("RabbitMQ: {lost}")),
    };

    // Stop intake; unacked task messages return to the queue when the connection closes.
    consume.abort();
    controls.abort();
    block_watch.abort();
    // Asked to stop: the running tasks get `stop_grace_secs` to finish and report, and
    // the tasks whose results went out are saved, so that the next start drops the
    // copies of them its unacked messages bring back. (After a failure, reports may
    // not go out: no wait.)
    if outcome.is_ok() {
        let (done, drained) = tokio::sync::oneshot::channel();
        if inputs.send(Input::Drain { done }).is_ok() {
            let grace = Duration::from_secs(config.stop_grace_secs);
            match tokio::time::timeout(grace, drained).await {
                Ok(Ok(finished)) => {
                    tracing::info!(
                        finished = finished.len(),
                        "drained: no task is running and every result is out"
                    );
                    save_finished(dir, &finished);
                }
                _ => tracing::warn!(
                    "tasks still running after {grace:?} (stop_grace_secs): they are stopped and go back to the queue"
                ),
            }
        }
    }
    ticker.abort();
    accept.abort();
    let goodbye = EndpointMessage::Heartbeat {
        endpoint_id,
        at: ferry_proto::time::now_micros(),
        interval_ms: 0,
        load: EndpointLoad::default(),
        alive: Vec::new(),
    };
    if let Ok(body) = ferry_proto::codec::encode(&goodbye) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            broker.publish(&broker.status_queue(), &body),
        )
        .await;
    }
    drop(inputs);
    interchange.abort();
    // The provider cancels its blocks (their managers' tasks come back with the unacked
    // messages once the connection closes).
    providers.cancel();
    let grace = config.provider.cmd_timeout() + Duration::from_secs(15);
    if tokio::time::timeout(grace, provider).await.is_err() {
        tracing::warn!("the provider did not cancel its blocks within {grace:?}");
    }
    broker.close().await;
    state::clear_running(dir);
    outcome
}

/// Where a stopping endpoint keeps the tasks whose results it published.
const FINISHED_FILE: &str = "finished";

/// Saves the tasks whose results went out, one `<task id> <attempt>` per line.
fn save_finished(dir: &Path, finished: &[(ferry_proto::TaskId, u32)]) {
    let text: String = finished.iter().map(|(t, a)| format!("{t} {a}\n")).collect();
    if let Err(e) = std::fs::write(dir.join(FINISHED_FILE), text) {
        tracing::warn!(error = %e, "cannot save the finished tasks; their copies may run again after the restart");
    }
}

/// Whether a task message carries a copy of a later attempt than the first: one a
/// re-dispatch published (the sweep of a lost endpoint or of a stranded task, a block's
/// end, a retry after a lost worker). Such a copy may come after its task's result was
/// recorded (a newer attempt's, or its own attempt's through another copy), when this
/// endpoint no longer remembers that result (it crashed since) or never published it
/// (the sweep raced the result), so the endpoint asks before running it. First attempts,
/// nearly every message, go without the question.
fn carries_a_redispatch(batch: &TaskBatch) -> bool {
    batch.tasks.iter().any(|t| t.attempt > 0)
}

/// Takes what an earlier run saved with [`save_finished`] (the file is removed: from
/// now on the interchange remembers them). Lines it cannot read are skipped.
fn take_finished(dir: &Path) -> Vec<(ferry_proto::TaskId, u32)> {
    let path = dir.join(FINISHED_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let _ = std::fs::remove_file(&path);
    let finished: Vec<_> = text
        .lines()
        .filter_map(|line| {
            let (task, attempt) = line.split_once(' ')?;
            Some((task.parse().ok()?, attempt.parse().ok()?))
        })
        .collect();
    tracing::info!(
        tasks = finished.len(),
        "remembering the tasks whose results the last run published"
    );
    finished
}

/// Starts the provider's scaler (none for a manual endpoint: it waits for `stop`).
#[allow(clippy::too_many_arguments)]
fn start_provider(
    name: &str,
    dir: &Path,
    config: &EndpointConfig,
    manager_addr: std::net::SocketAddr,
    auth: &managers::Auth,
    capacity: tokio::sync::watch::Receiver<Capacity>,
    sink: &reporter::Reporter,
    stop: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let resolved = config.provider.with_run_dir(dir);
    let p = &resolved;
    let manager_bin = manager_bin(config)?;
    let timeout = p.cmd_timeout();
    match p.kind {
        ProviderKind::Manual => {
            tracing::info!(
                %manager_addr,
                cert_sha256 = %auth.cert_sha256,
                "provider \"manual\": start managers with `FERRY_MANAGER_SECRET=$(cat {}) FERRY_ENDPOINT_CERT_SHA256={} ferry-manager --endpoint {manager_addr}`",
                dir.join("manager.secret").display(),
                auth.cert_sha256,
            );
            let stop = stop.clone();
            Ok(tokio::spawn(async move { stop.cancelled().await }))
        }
        ProviderKind::Local => {
            let local = Local::new(LocalManagers {
                bin: manager_bin,
                endpoint: manager_addr.to_string(),
                workers: p.workers_per_node().unwrap_or(2),
                nodes: p.nodes_per_block(),
                python: p.python.clone(),
                run_root: p.run_dir.clone(),
                keep_run_dirs: p.keep_run_dirs(),
                app_env_script: p.app_env_script.clone(),
                python_run_dirs: p.python_run_dirs.map(crate::config::PythonRunDirs::name),
                env: p.manager_env(),
                secret: auth.secret.to_string(),
                cert_sha256: auth.cert_sha256,
            });
            Ok(spawn_scaler(
                Scaler::new(local, p.clone(), dir, None, capacity),
                sink,
                stop,
            ))
        }
        ProviderKind::Slurm | ProviderKind::Pbs => {
            let forge = Forge {
                endpoint_name: name.to_owned(),
                endpoint_address: address::for_managers(config, manager_addr)?,
                secret: auth.secret.to_string(),
                cert_sha256: auth.cert_sha256,
                manager_bin,
                template: template(config)?,
            };
            tracing::info!(address = %forge.endpoint_address, "managers of this endpoint's blocks connect to this address");
            if p.kind == ProviderKind::Slurm {
                let scaler = Scaler::new(Slurm { timeout }, p.clone(), dir, Some(forge), capacity);
                Ok(spawn_scaler(scaler, sink, stop))
            } else {
                let scaler = Scaler::new(Pbs { timeout }, p.clone(), dir, Some(forge), capacity);
                Ok(spawn_scaler(scaler, sink, stop))
            }
        }
    }
}

fn spawn_scaler<P: Provider>(
    scaler: Scaler<P>,
    sink: &reporter::Reporter,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    sink.follow_provider(scaler.reports());
    tokio::spawn(scaler.run(stop.clone()))
}

/// The `ferry-manager` binary: the config's, else the one beside this program.
pub fn manager_bin(config: &EndpointConfig) -> anyhow::Result<std::path::PathBuf> {
    let bin = match &config.provider.manager_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("ferry-manager"),
    };
    if !bin.is_file() {
        anyhow::bail!(
            "the manager binary {} does not exist (set provider.manager_bin)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The block script's template: the config's file, else Ferry's own; checked now, so a
/// wrong markup stops the start rather than the first block.
pub fn template(config: &EndpointConfig) -> anyhow::Result<String> {
    let p = &config.provider;
    let text = match &p.template {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("provider.template: cannot read {}: {e}", path.display()))?,
        None => forge::default_template(p.kind).to_owned(),
    };
    let trial = forge::BlockScript {
        config: p,
        endpoint_name: "check",
        block_id: "0",
        block_dir: Path::new("/tmp"),
        endpoint_address: "localhost:1",
        secret: "x",
        cert_sha256: ferry_proto::frames::CertFingerprint::of(b""),
        manager_bin: Path::new("ferry-manager"),
        walltime_secs: None,
    };
    if let Err(errors) = trial.render(&text) {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let path = p
            .template
            .as_ref()
            .map_or_else(|| "Ferry's own template".to_owned(), |t| t.display().to_string());
        anyhow::bail!("provider.template ({path}): {}", list.join("; "));
    }
    Ok(text)
}
