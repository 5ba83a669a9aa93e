//! `ferry-dev`, run as `ferry dev`: Ferry on one machine with one command. It starts
//! `ferry-server` (the web-service and the forwarder in one process) and a local
//! endpoint as its children, by default on a
//! store and a broker embedded in this process (no Redis, no RabbitMQ), prints the URL,
//! a token and the endpoint's ID, writes them to `$FERRY_HOME/client.json` (where the
//! SDK's `Client()` finds them), and stops everything on Ctrl-C.
//!
//! The parts: [`home`] (the directories and files it keeps), [`backends`] (the embedded
//! store and broker, or the Redis and RabbitMQ given), [`children`] (starting,
//! watching and stopping the processes), [`session`] (the order of it all).

mod args;
mod backends;
mod children;
mod home;
mod session;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Args::parse();
    ferry_telemetry::init_with(
        "ferry_dev=info,ferry_store=warn,ferry_broker=warn",
        args.logging.log_format,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ferry dev: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The children are started from this thread (the future given to `block_on` runs
    // on it), which lives as long as the process: their parent-death signal fires when
    // the thread that started them ends, not a pool thread that happened to.
    match runtime.block_on(session::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry dev: {e:#}");
            ExitCode::FAILURE
        }
    }
}
