//! `ferry-forwarder`: dispatch submissions, apply endpoint reports.

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "Ferry's forwarder: dispatch to endpoint queues, apply status and results to Redis"
)]
struct Cli {
    #[command(flatten)]
    config: ferry_forwarder::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ferry_telemetry::init("ferry_forwarder=info");
    let shutdown = CancellationToken::new();
    tokio::spawn(ferry_telemetry::cancel_on_signal(shutdown.clone()));
    ferry_forwarder::run(cli.config, shutdown).await
}
