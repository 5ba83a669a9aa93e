//! Runs the embedded Redis-compatible server on its own, until Ctrl-C or SIGTERM: to
//! point Ferry's binaries (or `redis-cli`) at it by hand.
//!
//! `cargo run -p ferry-store --example embedded_redis -- [ADDR] [SNAPSHOT]`
//! (default `127.0.0.1:6390`, no snapshot). `FERRY_EMBEDDED_PASSWORD` sets a password.
//! The first line printed is the URL to give redis-rs.

use ferry_store::embedded::{Options, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:6390".to_owned())
        .parse()?;
    let options = Options {
        password: std::env::var("FERRY_EMBEDDED_PASSWORD").ok(),
        snapshot: args.next().map(Into::into),
        snapshot_every: None,
    };
    let server = Server::start(addr, options).await?;
    println!("{}", server.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown().await?;
    Ok(())
}
