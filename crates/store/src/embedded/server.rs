//! The server: a listener on a TCP port that spawns a session per client, a sweeper of
//! expired keys, and a shutdown that stops both, closes every connection and writes
//! the snapshot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::commands::{self, Ctx, Handler};
use super::db::Db;
use super::frame::Frame;
use super::pubsub::Hub;
use super::scripting::Scripts;
use super::session::Session;
use super::snapshot;

/// How the embedded server runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// When set, every connection must `AUTH` with it first (redis-rs does, from the
    /// password in the URL [`Server::url`] gives).
    pub password: Option<String>,
    /// When set, the keyspace is read from this file at start (if it exists) and
    /// written to it at [`Server::shutdown`].
    pub snapshot: Option<PathBuf>,
    /// With a snapshot, also write it this often, so a
    /// process killed (not shut down) loses at most this much.
    pub snapshot_every: Option<Duration>,
}

/// The keyspace and the scripts, behind the one lock every command takes.
pub(crate) struct Engine {
    pub(crate) db: Db,
    scripts: Scripts,
}

impl Engine {
    /// Runs one command (a keyspace command or a script) against the locked engine.
    pub(crate) fn execute(&mut self, hub: &Hub, args: &[Bytes]) -> Frame {
        match commands::resolve(args) {
            Err(e) => e,
            Ok(command) => match command.handler {
                Handler::Scripting => self.scripts.handle(&mut self.db, hub, args),
                Handler::Data(_) => commands::run(
                    &mut Ctx {
                        db: &mut self.db,
                        hub,
                        script: None,
                    },
                    args,
                ),
                Handler::Session => Frame::error(format!(
                    "ERR '{}' is not allowed here",
                    command.name.to_lowercase()
                )),
            },
        }
    }
}

/// A connected client, as `CLIENT LIST` shows it.
pub(crate) struct Client {
    pub(crate) addr: SocketAddr,
    pub(crate) name: String,
}

/// What every session shares.
pub(crate) struct Shared {
    engine: Mutex<Engine>,
    pub(crate) hub: Hub,
    pub(crate) password: Option<String>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) clients: Mutex<HashMap<u64, Client>>,
    next_client: AtomicU64,
}

impl Shared {
    /// The engine, locked. Never held across an await.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Engine> {
        // A command that panicked left the keyspace as it was at the panic: go on.
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn clients(&self) -> MutexGuard<'_, HashMap<u64, Client>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn execute(&self, args: &[Bytes]) -> Frame {
        self.lock().execute(&self.hub, args)
    }
}

/// A Redis-compatible server inside this process: RESP2 over TCP, an in-memory
/// keyspace, Lua scripts run by an embedded Lua 5.1. `ferry dev` runs Ferry on it
/// with no Redis installed; the store's test suite runs against it and a real Redis.
///
/// ```no_run
/// # async fn example() -> std::io::Result<()> {
/// use ferry_store::embedded::{Options, Server};
///
/// let server = Server::start("127.0.0.1:0".parse().unwrap(), Options::default()).await?;
/// let store = ferry_store::Store::connect(&server.url(), "dev", 0).await.unwrap();
/// # drop(store);
/// server.shutdown().await?;
/// # Ok(())
/// # }
/// ```
///
/// Dropping a `Server` stops it without writing the snapshot; [`Server::shutdown`]
/// stops it cleanly.
pub struct Server {
    shared: Arc<Shared>,
    snapshot: Option<PathBuf>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    /// Loads the snapshot (if configured and present), binds `addr` and serves on the
    /// current tokio runtime. A snapshot that cannot be read is an error naming its
    /// path.
    pub async fn start(addr: SocketAddr, options: Options) -> std::io::Result<Server> {
        let db = match options.snapshot.clone() {
            Some(path) => tokio::task::spawn_blocking(move || snapshot::load(&path))
                .await
                .map_err(std::io::Error::other)??,
            None => Db::default(),
        };
        let scripts = Scripts::new()
            .map_err(|e| std::io::Error::other(format!("cannot start the Lua interpreter: {e}")))?;
        let listener = TcpListener::bind(addr).await?;
        let shared = Arc::new(Shared {
            engine: Mutex::new(Engine { db, scripts }),
            hub: Hub::default(),
            password: options.password,
            local_addr: listener.local_addr()?,
            clients: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(1),
        });
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(accept(listener, shared.clone(), shutdown.clone(), tasks.clone()));
        tasks.spawn(sweep(shared.clone(), shutdown.clone()));
        if let (Some(path), Some(every)) = (options.snapshot.clone(), options.snapshot_every) {
            tasks.spawn(save_every(shared.clone(), path, every, shutdown.clone()));
        }
        tracing::info!(addr = %shared.local_addr, "embedded Redis-compatible store listening");
        Ok(Server {
            shared,
            snapshot: options.snapshot,
            shutdown,
            tasks,
        })
    }

    /// The address it listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The URL to give redis-rs (and so [`crate::Store::connect`]):
    /// `redis://:PASSWORD@127.0.0.1:PORT` with a password, else `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let addr = self.local_addr();
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        match &self.shared.password {
            Some(password) => format!("redis://:{}@{host}:{}", percent_encode(password), addr.port()),
            None => format!("redis://{host}:{}", addr.port()),
        }
    }

    /// Stops accepting, closes every connection (a blocked read ends), then writes the
    /// snapshot if one is configured.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let Some(path) = self.snapshot.clone() else {
            return Ok(());
        };
        let bytes = snapshot::capture(&self.shared.lock().db)?;
        tokio::task::spawn_blocking(move || snapshot::write(&path, &bytes))
            .await
            .map_err(std::io::Error::other)?
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Writes the snapshot every `every` until shutdown (which writes the last one). A
/// failed write is logged and tried again next time.
async fn save_every(shared: Arc<Shared>, path: PathBuf, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        let bytes = match snapshot::capture(&shared.lock().db) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, "embedded store: cannot capture the snapshot");
                continue;
            }
        };
        let target = path.clone();
        match tokio::task::spawn_blocking(move || snapshot::write(&target, &bytes)).await {
            Ok(Ok(())) => tracing::debug!(path = %path.display(), "embedded store: snapshot written"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, path = %path.display(), "embedded store: cannot write the snapshot")
            }
            Err(e) => tracing::warn!(error = %e, "embedded store: the snapshot writer failed"),
        }
    }
}

/// Accepts clients until shutdown, a session each.
async fn accept(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken, tasks: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let id = shared.next_client.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(serve(stream, addr, id, shared.clone(), shutdown.clone()));
            }
            Err(e) => {
                // Out of file descriptors, most likely: wait a little rather than spin.
                tracing::warn!(error = %e, "embedded store: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(
    stream: TcpStream,
    addr: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    shared.clients().insert(
        id,
        Client {
            addr,
            name: String::new(),
        },
    );
    let mut session = Session::new(id, shared.clone());
    if let Err(e) = session.run(stream, &shutdown).await {
        tracing::debug!(error = %e, client = id, "embedded store: connection ended");
    }
    session.close();
    shared.clients().remove(&id);
}

/// Deletes expired keys nobody reads, a few times a second.
async fn sweep(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        shared.lock().db.sweep_expired(10_000);
    }
}

/// A password as the user-info part of a URL.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Arguments drawn from what trips parsers: numbers at the edges, ranges, IDs,
    /// option words, and the keys of every type set up below.
    fn arg() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            prop::sample::select(vec![
                "s",
                "h",
                "z",
                "l",
                "x",
                "set",
                "none",
                "0",
                "1",
                "-1",
                "2",
                "-9223372036854775808",
                "9223372036854775807",
                "99999999999999999999",
                "inf",
                "-inf",
                "(1",
                "nan",
                "*",
                "$",
                "-",
                "+",
                "0-0",
                "1-*",
                "(1-1",
                "~",
                "=",
                "MAXLEN",
                "MINID",
                "LIMIT",
                "COUNT",
                "BLOCK",
                "STREAMS",
                "MATCH",
                "WITHSCORES",
                "EX",
                "PX",
                "NX",
                "XX",
                "GT",
                "LT",
                "CH",
                "GET",
                "KEEPTTL",
                "LOAD",
                "EXISTS",
                "FLUSH",
                "return redis.call('GET', KEYS[1])",
                "return {err='x'}",
                "#!lua flags=no-writes\nreturn 1",
                "#!",
                "",
            ])
            .prop_map(|s: &'static str| Bytes::from_static(s.as_bytes())),
            prop::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from),
        ]
    }

    fn engine() -> Engine {
        let mut engine = Engine {
            db: Db::default(),
            scripts: Scripts::new().unwrap(),
        };
        let hub = Hub::default();
        for command in [
            "SET s v",
            "HSET h f 1",
            "ZADD z 1 m",
            "RPUSH l a b",
            "XADD x 1-1 f v",
            "SADD set a b",
        ] {
            let args: Vec<Bytes> = command
                .split(' ')
                .map(|w| Bytes::copy_from_slice(w.as_bytes()))
                .collect();
            engine.execute(&hub, &args);
        }
        engine
    }

    proptest! {
        /// No command panics, whatever its arguments: bad input is an error reply.
        #[test]
        fn no_command_panics_on_any_arguments(
            name in prop::sample::select(commands::names().collect::<Vec<_>>()),
            args in prop::collection::vec(arg(), 0..7),
        ) {
            let mut engine = engine();
            let hub = Hub::default();
            let mut request = vec![Bytes::from_static(name.as_bytes())];
            request.extend(args);
            engine.execute(&hub, &request);
        }
    }
}
