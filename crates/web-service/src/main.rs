//! `ferry-web-service`: serve the HTTP API, or create a user.

use clap::{Parser, Subcommand};
use ferry_web_service::Config;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "Ferry's HTTP API: functions, endpoints, task submission and status"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Create a user and print its bearer token on stdout.
    CreateUser {
        /// A name to recognise the user by.
        name: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ferry_telemetry::init("ferry_web_service=info,tower_http=warn");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let shutdown = CancellationToken::new();
            tokio::spawn(ferry_telemetry::cancel_on_signal(shutdown.clone()));
            ferry_web_service::run(cli.config, shutdown).await
        }
        Command::CreateUser { name } => {
            let c = &cli.config;
            let store = ferry_store::Store::connect(&c.redis_url, &c.namespace, c.result_ttl_secs).await?;
            let (user, token) = store.create_user(&name).await?;
            eprintln!("created user {name} ({user})");
            println!("{token}");
            Ok(())
        }
    }
}
