//! `ferry-manager`: keep worker processes on one node for an endpoint.

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "Ferry's manager: one per node, keeps worker processes and hands them tasks"
)]
struct Cli {
    #[command(flatten)]
    config: ferry_manager::Config,
}

// One thread: the manager only relays frames, and cross-thread wake-ups would cost more
// than the work.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ferry_telemetry::init("ferry_manager=info");
    let shutdown = CancellationToken::new();
    tokio::spawn(ferry_telemetry::cancel_on_signal(shutdown.clone()));
    ferry_manager::run(cli.config, shutdown).await
}
