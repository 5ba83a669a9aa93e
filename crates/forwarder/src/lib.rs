//! Ferry's forwarder: the only writer of task state after `received`.
//!
//! - [`dispatch`]: consumes submissions, publishes them to their endpoint's queue, and
//!   moves their tasks to `waiting-for-ep` (through [`held`]: with the endpoint's first
//!   report on each task, or on their own half a second after the broker's confirm).
//! - [`reports`]: consumes what endpoints send (heartbeats, status updates, results) and
//!   applies it to Redis through the transition script.
//! - [`notifier`]: delivers webhooks (signed, in order, retried with backoff,
//!   concurrently across sessions).
//! - [`webhook_guard`]: where webhooks may go (no internal address unless allowed).
//! - [`sweeper`]: declares lost the endpoints whose heartbeats stopped (their tasks
//!   wait for them again, as the next attempt; not while RabbitMQ blocks publishes nor
//!   within a heartbeat window after), fails batches past their deadline, closes
//!   batches whose web-service died while writing them, and publishes the cancels
//!   RabbitMQ did not take.
//! - [`cancels`]: cancels stored in Redis until RabbitMQ confirms them.
//!
//! It keeps nothing that is not also in RabbitMQ or Redis (held records belong to
//! submissions it has not acked): several forwarders can consume the same queues.

pub mod alive;
pub mod cancels;
pub mod dispatch;
pub mod held;
pub mod metrics;
pub mod notifier;
pub mod reports;
pub mod sweeper;
mod trace;
pub mod webhook_guard;

use std::sync::Arc;
use std::time::Duration;

use ferry_broker::Broker;
use ferry_store::Store;
use tokio_util::sync::CancellationToken;

/// The forwarder's settings (flags, `FERRY_*` environment variables, or the `--config` file:
/// `ferry_settings`).
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Redis, RabbitMQ, the namespace and what they share with the other service.
    #[command(flatten)]
    pub backends: ferry_settings::Backends,
    /// Unacked submission messages (each up to 1,000 tasks) the dispatcher may hold.
    #[arg(long, env = "FERRY_PREFETCH", default_value_t = 32)]
    pub prefetch: u16,
    /// Unacked endpoint messages (status updates, results) each of their consumers may
    /// hold: whatever has arrived is applied together, in one Redis round trip.
    #[arg(long, env = "FERRY_REPORT_PREFETCH", default_value_t = 256)]
    pub report_prefetch: u16,
    /// Heartbeats an endpoint may miss in a row before it is declared lost and its
    /// in-flight tasks go back to waiting for it (as their next attempt).
    #[arg(long, env = "FERRY_ENDPOINT_MISSED_HEARTBEATS", default_value_t = 5)]
    pub endpoint_missed_heartbeats: u32,
    /// How often lost endpoints and timed-out batches are looked for, in milliseconds.
    #[arg(long, env = "FERRY_SWEEP_INTERVAL_MS", default_value_t = 1000)]
    pub sweep_interval_ms: u64,
    /// How long after its writing began a batch that was never committed (its
    /// web-service died or gave up part-way) is failed, none of its tasks having run,
    /// in seconds. Keep it above the web-service's 30 s writing limit.
    #[arg(long, env = "FERRY_ABANDONED_BATCH_SECS", default_value_t = 60)]
    pub abandoned_batch_secs: u64,
    /// A task no message carries any more (its endpoint online and idle, its queue
    /// empty) is published again after it looked so this many seconds, twice (0: never).
    #[arg(long, env = "FERRY_STRANDED_AFTER_SECS", default_value_t = 60)]
    pub stranded_after_secs: u64,
    /// Networks webhooks may reach besides public addresses (comma-separated CIDRs,
    /// like `10.0.0.0/8,127.0.0.1`): loopback, link-local and private addresses are
    /// refused otherwise.
    #[arg(long, env = "FERRY_WEBHOOK_ALLOW", default_value = "")]
    pub webhook_allow: String,
    /// Serve Prometheus metrics at `/metrics` on this address (`127.0.0.1:9464`);
    /// default: not served (docs/operations.md).
    #[arg(long, env = "FERRY_FORWARDER_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Runs until `shutdown` is cancelled. When RabbitMQ or Redis goes away the forwarder
/// connects again (with backoff) and carries on: it holds nothing of its own, and what
/// it had not acked is redelivered.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(200);
    // Kept across reconnects, so counters only grow.
    let metrics = Arc::new(metrics::ForwarderMetrics::default());
    let _serving = match config.metrics_listen {
        Some(listen) => {
            let metrics = metrics.clone();
            let text = move || metrics.render();
            Some(ferry_telemetry::metrics::serve_on(listen, "FERRY_FORWARDER_METRICS_LISTEN", text).await?)
        }
        None => None,
    };
    loop {
        let started = std::time::Instant::now();
        match run_once(&config, &shutdown, &metrics).await {
            Ok(()) => return Ok(()),
            // A setting to fix, not a backend to wait for.
            Err(e) if matches!(e.downcast_ref(), Some(ferry_store::Error::Evicting { .. })) => return Err(e),
            Err(e) => {
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(200);
                }
                tracing::error!(error = %format!("{e:#}"), retry_in = ?backoff, "forwarder lost its backends; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn run_once(
    config: &Config,
    shutdown: &CancellationToken,
    metrics: &Arc<metrics::ForwarderMetrics>,
) -> anyhow::Result<()> {
    let ca_pem = match &config.backends.ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("FERRY_CA_FILE {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let store = Store::connect_tls(
        &config.backends.redis_url,
        ca_pem.as_deref().map(str::as_bytes),
        &config.backends.namespace,
        config.backends.result_ttl_secs,
    )
    .await?;
    store.check_no_eviction().await?;
    store.load_scripts().await?;
    let allow = webhook_guard::parse_allow(&config.webhook_allow)
        .map_err(|e| anyhow::anyhow!("FERRY_WEBHOOK_ALLOW: {e}"))?;
    let notifier = notifier::Notifier::new(
        store.clone(),
        Duration::from_millis(100),
        allow,
        ca_pem.as_deref(),
    )?;
    let options = ferry_broker::Options {
        queue_expires: (config.backends.queue_expires_secs > 0)
            .then(|| Duration::from_secs(config.backends.queue_expires_secs)),
        ca_pem,
        ..Default::default()
    };
    let broker = Broker::connect(&config.backends.amqp_url, &config.backends.namespace, options).await?;
    broker.declare_core().await?;

    // Held submissions wait unacked: at most half the consumer's prefetch of them, so
    // that new ones keep coming.
    let held = held::Held::new(usize::from(config.prefetch / 2));
    // Endpoints heard from lately: the dispatcher need not ask Redis whether they exist.
    let alive = alive::Alive::default();
    let dispatcher = dispatch::Dispatcher::new(store.clone(), broker.clone(), held.clone(), alive.clone());
    let applier = reports::Applier::new(
        store.clone(),
        broker.clone(),
        held.clone(),
        config.endpoint_missed_heartbeats,
        config.backends.amqp_admin_url.is_some(),
    )
    .with_metrics(metrics.clone())
    .with_alive(alive);
    let blocks = sweeper::watch_blocks(
        store.clone(),
        broker.clone(),
        Duration::from_millis(config.sweep_interval_ms.max(10)),
    );
    let sweeper = sweeper::Sweeper::new(
        store.clone(),
        broker.clone(),
        config.endpoint_missed_heartbeats,
        Duration::from_millis(config.sweep_interval_ms.max(10)),
        Duration::from_secs(config.abandoned_batch_secs),
        Duration::from_secs(config.stranded_after_secs),
    )
    .with_metrics(metrics.clone());
    let submissions = broker
        .consume(&broker.submissions_queue(), config.prefetch, "forwarder-dispatch")
        .await?;
    let status = broker
        .consume(&broker.status_queue(), config.report_prefetch, "forwarder-status")
        .await?;
    let results = broker
        .consume(
            &broker.results_queue(),
            config.report_prefetch,
            "forwarder-results",
        )
        .await?;
    tracing::info!(namespace = %config.backends.namespace, "forwarder running");

    let outcome = tokio::select! {
        r = dispatcher.clone().run(submissions) => r,
        r = applier.clone().run(status) => r,
        r = applier.run(results) => r,
        r = sweeper.run() => r,
        r = blocks => r,
        r = notifier.run() => r,
        r = metrics::watch_queues(broker.clone(), metrics.clone()) => r,
        lost = broker.lost() => Err(anyhow::anyhow!("RabbitMQ: {lost}")),
        _ = shutdown.cancelled() => Ok(()),
    };
    // On the way out, held `waiting-for-ep` steps are written and their submissions
    // acked (when RabbitMQ or Redis is gone this fails, and the submissions come back).
    if outcome.is_ok()
        && let Err(e) = dispatcher.record_held(Duration::ZERO).await
    {
        tracing::warn!(error = %format!("{e:#}"), "could not record the held waiting-for-ep steps");
    }
    // Unacked deliveries go back to their queues when the connection closes.
    broker.close().await;
    outcome
}
