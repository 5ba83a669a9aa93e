//! The store and broker a `ferry dev` runs on: embedded in this process by default (a
//! Redis-compatible server running Ferry's own store code and Lua scripts, and a small
//! broker with RabbitMQ's queue semantics, both on 127.0.0.1 with a password made for
//! this run), or the Redis and RabbitMQ given with `--redis` / `--amqp`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

/// The URLs each process is given, and the embedded servers behind them.
pub(crate) struct Backends {
    pub(crate) redis_url: String,
    /// The web-service's and forwarder's broker URL.
    pub(crate) amqp_url: String,
    /// The broker URL endpoints are handed when they register.
    pub(crate) endpoint_amqp_url: String,
    store: Option<ferry_store::embedded::Server>,
    broker: Option<ferry_broker::embedded::Server>,
}

/// How often the embedded store writes its snapshot besides at a clean stop: what a
/// killed `ferry dev` may lose.
const SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

impl Backends {
    /// Starts the embedded servers that are not replaced by a URL. The embedded store
    /// loads `snapshot` if it exists and writes it back when stopped.
    pub(crate) async fn start(
        redis: Option<String>,
        amqp: Option<String>,
        snapshot: PathBuf,
    ) -> anyhow::Result<Backends> {
        let (redis_url, store) = match redis {
            Some(url) => (url, None),
            None => {
                let options = ferry_store::embedded::Options {
                    password: Some(secret()),
                    snapshot: Some(snapshot),
                    snapshot_every: Some(SNAPSHOT_EVERY),
                };
                let server = ferry_store::embedded::Server::start(LOOPBACK, options)
                    .await
                    .context("cannot start the embedded store")?;
                (server.url(), Some(server))
            }
        };
        let (amqp_url, endpoint_amqp_url, broker) = match amqp {
            Some(url) => (url.clone(), url, None),
            None => {
                let options = ferry_broker::embedded::ServerOptions {
                    password: Some(secret()),
                };
                let server = ferry_broker::embedded::Server::start(LOOPBACK, options)
                    .await
                    .context("cannot start the embedded broker")?;
                (server.url("ferry"), server.url("endpoint"), Some(server))
            }
        };
        Ok(Backends {
            redis_url,
            amqp_url,
            endpoint_amqp_url,
            store,
            broker,
        })
    }

    /// What it runs on, for the banner.
    pub(crate) fn describe(&self) -> String {
        match (&self.store, &self.broker) {
            (Some(_), Some(_)) => "an embedded store and broker (no Redis, no RabbitMQ)".into(),
            (Some(_), None) => format!("an embedded store and RabbitMQ at {}", redact(&self.amqp_url)),
            (None, Some(_)) => format!("Redis at {} and an embedded broker", redact(&self.redis_url)),
            (None, None) => format!(
                "Redis at {} and RabbitMQ at {}",
                redact(&self.redis_url),
                redact(&self.amqp_url)
            ),
        }
    }

    /// The store's URL for the banner: whole for the embedded one (`redis-cli -u` it to
    /// look inside), without its password for one given.
    pub(crate) fn store_shown(&self) -> String {
        if self.store.is_some() {
            self.redis_url.clone()
        } else {
            redact(&self.redis_url)
        }
    }

    /// The broker's URL for the banner, as [`Backends::store_shown`].
    pub(crate) fn broker_shown(&self) -> String {
        if self.broker.is_some() {
            self.amqp_url.clone()
        } else {
            redact(&self.amqp_url)
        }
    }

    /// Stops the embedded servers; the store writes its snapshot.
    pub(crate) async fn stop(self) {
        if let Some(broker) = self.broker {
            broker.shutdown().await;
        }
        if let Some(store) = self.store
            && let Err(e) = store.shutdown().await
        {
            eprintln!("ferry dev: the embedded store's snapshot was not written: {e}");
        }
    }
}

/// A password for one run of an embedded server.
fn secret() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}
