//! `ferry-endpoint`: configure, start, stop and inspect endpoints.

use clap::{Parser, Subcommand};
use ferry_endpoint::{cli, service, state};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "Ferry's endpoint: runs tasks on this machine or cluster for a Ferry service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    logging: ferry_telemetry::Logging,
}

#[derive(Subcommand)]
enum Command {
    /// Write the config of a new endpoint, or change the settings given of an existing
    /// one.
    Configure(Box<cli::Configure>),
    /// Start an endpoint (detached unless --foreground).
    Start {
        name: String,
        /// Stay in the foreground, logging to stderr.
        #[arg(long)]
        foreground: bool,
    },
    /// Stop a running endpoint: its blocks are cancelled, the tasks it held go back to
    /// its queue.
    Stop { name: String },
    /// Stop, then start again (detached).
    Restart { name: String },
    /// Stop an endpoint, deregister it from the service and remove its directory.
    Delete { name: String },
    /// Try a block on the cluster: render the script, submit a short test job, wait
    /// for its manager to connect back, cancel it (exit code 1 when a step fails).
    Check {
        name: String,
        /// How long to wait for the test job's manager (the job may wait in the queue).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Show whether an endpoint runs, what the service sees, and its blocks (exit code 3
    /// when stopped).
    Status {
        name: String,
        /// One JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// List configured endpoints: whether each runs, what the service sees, its workers.
    List {
        /// One JSON array instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print the end of a detached endpoint's log (`endpoint.log`), and with --follow
    /// what it writes next, until Ctrl-C.
    Logs {
        name: String,
        /// Keep printing what the endpoint writes, as `tail -f`.
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines to print first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
}

fn main() -> std::process::ExitCode {
    ferry_telemetry::exit_code(run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Configure(args) => cli::configure(*args),
        Command::Start {
            name,
            foreground: false,
        } => cli::start_daemon(&name, cli.logging.log_format),
        Command::Start {
            name,
            foreground: true,
        } => foreground(&name, cli.logging.log_format),
        Command::Stop { name } => cli::stop(&name),
        Command::Restart { name } => cli::restart(&name, cli.logging.log_format),
        Command::Delete { name } => cli::delete(&name),
        Command::Check { name, timeout } => {
            let passed = runtime()?.block_on(cli::check::check(&name, timeout))?;
            std::process::exit(if passed { 0 } else { 1 })
        }
        Command::Status { name, json } => {
            let running = runtime()?.block_on(cli::status(&name, json))?;
            std::process::exit(if running { 0 } else { 3 })
        }
        Command::List { json } => runtime()?.block_on(cli::list(json)),
        Command::Logs { name, follow, lines } => cli::logs(&name, lines, follow),
    }
}

fn foreground(name: &str, log_format: ferry_telemetry::LogFormat) -> anyhow::Result<()> {
    ferry_telemetry::init_with(
        "ferry_endpoint=info,ferry_manager=info,ferry_worker=info",
        log_format,
    );
    let (dir, config) = cli::load(name)?;
    cli::check_python(name, &config)?;
    state::write_pid(&dir)?;
    // Built outside the runtime: the exporter's blocking HTTP client may not be made
    // inside one.
    let _traces = ferry_telemetry::trace::init("ferry-endpoint");
    let result = runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(ferry_telemetry::cancel_on_signal(shutdown.clone()));
        service::run(name, &dir, config, shutdown).await
    });
    state::clear_running(&dir);
    result
}

/// One thread, as in the forwarder: the endpoint mostly waits, and a second worker
/// thread only added wake-ups (18 instead of 24 context switches and 0.28 instead of
/// 0.32 ms of CPU per single-task round trip).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}
