//! `ferry-server`: the web-service and the forwarder in one process. A submission goes
//! from the one to the other in memory: the namespace's submissions queue is kept in
//! this process ([`ferry_broker::keep_in_process`]) instead of in RabbitMQ, which still
//! carries everything to and from the endpoints. The durability promise is the
//! separate binaries' one: a submission's tasks are written `received` before it is
//! handed over, and the forwarder's sweeper submits again what a crash stranded (after
//! about ten seconds).
//!
//! It takes the web-service's flags, variables and config file; the forwarder's own
//! settings come from their `FERRY_*` variables (`FERRY_PREFETCH`,
//! `FERRY_FORWARDER_METRICS_LISTEN`, ...) and its backends are the web-service's. Run
//! the separate `ferry-web-service` and `ferry-forwarder` to scale each role out (then
//! the submissions travel through RabbitMQ).

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(clap::Parser)]
#[command(
    version,
    about = "Ferry's web-service and forwarder in one process (a submission reaches the dispatcher in memory)"
)]
struct Cli {
    #[command(flatten)]
    config: ferry_web_service::Config,
    #[command(flatten)]
    file: ferry_settings::ConfigFile,
    #[command(flatten)]
    logging: ferry_telemetry::Logging,
}

/// The forwarder's settings, from its variables alone.
#[derive(clap::Parser)]
struct ForwarderSettings {
    #[command(flatten)]
    config: ferry_forwarder::Config,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ferry_telemetry::exit_code(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli: Cli = ferry_settings::parse();
    ferry_telemetry::init_with(
        "ferry_server=info,ferry_web_service=info,ferry_forwarder=info,tower_http=warn",
        cli.logging.log_format,
    );
    let _traces = ferry_telemetry::trace::init("ferry-server");
    let mut forwarder = ForwarderSettings::try_parse_from(["ferry-server"])
        .map_err(|e| anyhow::anyhow!("the forwarder's settings (FERRY_* variables): {e}"))?
        .config;
    forwarder.backends = cli.config.backends.clone();
    let namespace = &cli.config.backends.namespace;
    ferry_broker::keep_in_process([format!("{namespace}.submissions")])?;
    tracing::info!(%namespace, "web-service and forwarder in one process; submissions stay in memory");

    let shutdown = CancellationToken::new();
    tokio::spawn(ferry_telemetry::cancel_on_signal(shutdown.clone()));
    let web = ferry_web_service::run(cli.config, shutdown.clone());
    let forward = ferry_forwarder::run(forwarder, shutdown.clone());
    tokio::pin!(web, forward);
    // When one role ends (an error, or the shutdown), the other is stopped too.
    tokio::select! {
        outcome = &mut web => {
            shutdown.cancel();
            let other = forward.await;
            outcome.and(other)
        }
        outcome = &mut forward => {
            shutdown.cancel();
            let other = web.await;
            outcome.and(other)
        }
    }
}
