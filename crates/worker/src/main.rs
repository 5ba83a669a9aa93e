//! `ferry-worker`: run tasks handed over by a manager on stdin/stdout.

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Ferry's worker: runs one task at a time for its manager (frames on stdin/stdout)"
)]
struct Cli {
    #[command(flatten)]
    logging: ferry_telemetry::Logging,
    #[command(flatten)]
    config: ferry_worker::Config,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    ferry_telemetry::exit_code(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ferry_telemetry::init_with("ferry_worker=info", cli.logging.log_format);
    ferry_worker::lifeline::tie_to_manager()?;
    let outcome = ferry_worker::run::run(cli.config).await;
    // Stopping (stdin closed, or an error): nothing the worker started outlives it.
    ferry_worker::lifeline::end_all();
    outcome
}
