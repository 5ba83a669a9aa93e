//! `ferry-web-service`: serve the HTTP API, or manage users and their tokens.

use clap::Subcommand;
use ferry_web_service::{Config, admin};
use tokio_util::sync::CancellationToken;

#[derive(clap::Parser)]
#[command(
    version,
    about = "Ferry's HTTP API: functions, endpoints, task submission and status"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
    #[command(flatten)]
    file: ferry_settings::ConfigFile,
    #[command(flatten)]
    logging: ferry_telemetry::Logging,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Create a user and print its bearer token on stdout (as `user create NAME`).
    CreateUser {
        /// A name to recognise the user by.
        name: String,
    },
    /// Users: create, list.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Tokens: create, list, revoke.
    #[command(subcommand)]
    Token(admin::TokenCommand),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ferry_telemetry::exit_code(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli: Cli = ferry_settings::parse();
    ferry_telemetry::init_with("ferry_web_service=info,tower_http=warn", cli.logging.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let _traces = ferry_telemetry::trace::init("ferry-web-service");
            let shutdown = CancellationToken::new();
            tokio::spawn(ferry_telemetry::cancel_on_signal(shutdown.clone()));
            ferry_web_service::run(cli.config, shutdown).await
        }
        Command::CreateUser { name } => {
            admin::user(&cli.config, admin::UserCommand::Create { name, expires: None }).await
        }
        Command::User(command) => admin::user(&cli.config, command).await,
        Command::Token(command) => admin::token(&cli.config, command).await,
    }
}
