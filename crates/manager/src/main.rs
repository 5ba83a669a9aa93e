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
    logging: ferry_telemetry::Logging,
    #[command(flatten)]
    config: ferry_manager::Config,
}

// One thread: the manager only relays frames, and cross-thread wake-ups would cost more
// than the work.
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    ferry_telemetry::exit_code(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ferry_telemetry::init_with("ferry_manager=info", cli.logging.log_format);
    // A worker's processes that leave its process group are reparented here when the
    // worker dies, to be ended (`slot::end_orphans`), not to init.
    ferry_proctree::become_subreaper()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(ferry_telemetry::cancel_on_signal(shutdown.clone()));
    let outcome = ferry_manager::run(cli.config, shutdown).await;
    // Stopping: the workers and everything below them, in their groups or out of them.
    let sweep = ferry_proctree::end_descendants(&[], std::time::Duration::from_secs(3));
    if sweep.left > 0 {
        tracing::error!(
            killed = sweep.killed,
            left = sweep.left,
            "processes below the manager resisted SIGKILL"
        );
    }
    outcome
}
