//! The embedded broker's server: accepts TCP connections, checks each one's password,
//! and runs its frames against the shared [`Queues`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Io;
use super::protocol::{self, ClientFrame, ServerFrame};
use super::queues::{ConnId, Queues};

/// How long a new connection has to say hello.
const HELLO_WITHIN: Duration = Duration::from_secs(10);

/// How often queues with an `x-expires` are checked.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// How long a closing connection's last frames (an error, say) get to go out.
const FLUSH_WITHIN: Duration = Duration::from_secs(2);

/// The server's settings.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// When set, every connection must present this password (in its URL).
    pub password: Option<String>,
}

/// A running embedded broker: queues in memory, served over TCP to Ferry's processes.
/// Its messages are lost when it stops.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use ferry_broker::embedded::{Server, ServerOptions};
///
/// let server = Server::start("127.0.0.1:0".parse().unwrap(), ServerOptions::default()).await?;
/// let url = server.url("web-service"); // ferry-mq://web-service@127.0.0.1:<port>
/// # let _ = url;
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Server {
    addr: SocketAddr,
    password: Option<String>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// What every connection's task shares.
#[derive(Clone)]
struct Shared {
    queues: Arc<Mutex<Queues>>,
    password: Option<Arc<str>>,
    cancel: CancellationToken,
}

impl Shared {
    fn queues(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and serves on the current tokio runtime
    /// until [`Server::shutdown`].
    pub async fn start(addr: SocketAddr, options: ServerOptions) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let shared = Shared {
            queues: Arc::default(),
            password: options.password.as_deref().map(Arc::from),
            cancel: cancel.clone(),
        };
        tasks.spawn(expire(shared.clone()));
        tasks.spawn(accept(listener, shared, tasks.clone()));
        tracing::info!(%addr, "the embedded broker listens");
        Ok(Server {
            addr,
            password: options.password,
            cancel,
            tasks,
        })
    }

    /// The URL a process connects with as `user` (with the server's password, when it
    /// has one). Neither is percent-encoded: a user name may not hold `:` or `@`.
    pub fn url(&self, user: &str) -> String {
        match &self.password {
            Some(password) => format!("{}://{user}:{password}@{}", super::SCHEME, self.addr),
            None => format!("{}://{user}@{}", super::SCHEME, self.addr),
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes every connection, and waits for its tasks to end. Every
    /// message it held is gone.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Accepts connections until the server stops.
async fn accept(listener: TcpListener, shared: Shared, tasks: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tasks.spawn(serve(Box::new(stream), peer.to_string(), shared.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "the embedded broker cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The embedded broker's queues served to connections inside this process: no socket,
/// no port, no frame encoded (a client carries out its requests on the queues itself,
/// and its deliveries come to it as values), the same rules as [`Server`] (acks,
/// prefetch, redelivery of what a closed connection held). What `ferry-server` keeps its
/// submissions queue in (see [`crate::keep_in_process`]). The expiry of idle queues runs
/// on a thread of its own (a runtime of one thread), so it serves brokers on any
/// runtime of the process, for as long as the process lives; its messages are lost
/// when the process ends.
pub struct InProcess {
    shared: Shared,
    tasks: TaskTracker,
}

impl InProcess {
    /// Starts one on a thread of its own.
    pub fn start() -> std::io::Result<InProcess> {
        let shared = Shared {
            queues: Arc::default(),
            password: None,
            cancel: CancellationToken::new(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let tasks = TaskTracker::new();
        tasks.spawn_on(expire(shared.clone()), &handle);
        let cancel = shared.cancel.clone();
        std::thread::Builder::new()
            .name("ferry-in-process-broker".to_owned())
            .spawn(move || runtime.block_on(cancel.cancelled()))?;
        Ok(InProcess { shared, tasks })
    }

    /// Its queues, and the token cancelled when it stops, for clients in this process
    /// ([`super::Client::in_process`]).
    pub(crate) fn parts(&self) -> (Arc<Mutex<Queues>>, CancellationToken) {
        (self.shared.queues.clone(), self.shared.cancel.clone())
    }

    /// Stops its thread without waiting (one that never served anything).
    pub(crate) fn abandon(self) {
        self.shared.cancel.cancel();
    }

    /// Closes every connection and stops its thread.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Deletes expired queues once a second.
async fn expire(shared: Shared) {
    let mut every = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = every.tick() => shared.queues().expire(Instant::now()),
        }
    }
}

type Transport = Framed<Box<dyn Io>, tokio_util::codec::LengthDelimitedCodec>;

/// Serves one connection from its hello to its end; whatever ends it, its unacked
/// messages go back to their queues. `peer` says where it comes from, for the logs.
async fn serve(stream: Box<dyn Io>, peer: String, shared: Shared) {
    let mut framed = Framed::new(stream, protocol::codec());
    let user = match hello(&mut framed, &shared).await {
        Ok(user) => user,
        Err(reason) => {
            tracing::info!(%peer, %reason, "the embedded broker refused a connection");
            let _ = send_now(&mut framed, &ServerFrame::Fatal { reason }).await;
            return;
        }
    };
    let (out, rx) = mpsc::unbounded_channel();
    let _ = out.send(ServerFrame::Welcome);
    let conn = shared.queues().connect(user.clone(), out.clone());
    tracing::debug!(%peer, %user, conn, "a connection to the embedded broker");
    let (sink, frames) = framed.split();
    let mut writer = tokio::spawn(write(sink, rx));
    let ended = read(frames, conn, &out, &shared).await;
    shared.queues().disconnect(conn);
    if let Err(reason) = &ended {
        tracing::info!(%peer, %user, %reason, "the embedded broker closes a connection");
        let _ = out.send(ServerFrame::Fatal {
            reason: reason.clone(),
        });
    }
    drop(out);
    if tokio::time::timeout(FLUSH_WITHIN, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// Reads the hello: the user's name, when the password (if any) holds.
async fn hello(framed: &mut Transport, shared: &Shared) -> Result<String, String> {
    let frame = match tokio::time::timeout(HELLO_WITHIN, framed.next()).await {
        Err(_) => return Err("no hello within 10s".to_owned()),
        Ok(None) => return Err("closed before its hello".to_owned()),
        Ok(Some(Err(e))) => return Err(format!("bad frame: {e}")),
        Ok(Some(Ok(frame))) => frame,
    };
    let (user, password) = match protocol::decode::<ClientFrame>(&frame) {
        Ok(ClientFrame::Hello { user, password }) => (user, password),
        Ok(_) => return Err("the first frame must be a hello".to_owned()),
        Err(e) => return Err(format!("bad frame: {e}")),
    };
    match (&shared.password, password) {
        (None, _) => Ok(user),
        (Some(_), None) => Err(format!(
            "user '{user}' gave no password; this broker requires one"
        )),
        (Some(expected), Some(given)) if same(expected.as_bytes(), given.as_bytes()) => Ok(user),
        (Some(_), Some(_)) => Err(format!("wrong password for user '{user}'")),
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs a connection's frames until it closes (`Ok`) or sends one the server cannot
/// take (`Err` with why).
async fn read(
    mut frames: futures_util::stream::SplitStream<Transport>,
    conn: ConnId,
    out: &mpsc::UnboundedSender<ServerFrame>,
    shared: &Shared,
) -> Result<(), String> {
    loop {
        let frame = tokio::select! {
            _ = shared.cancel.cancelled() => return Err("the embedded broker is stopping".to_owned()),
            frame = frames.next() => frame,
        };
        let bytes = match frame {
            None => return Ok(()),
            Some(Err(e)) => return Err(format!("bad frame: {e}")),
            Some(Ok(bytes)) => bytes,
        };
        match protocol::decode::<ClientFrame>(&bytes) {
            Ok(ClientFrame::Request { id, op }) => {
                let outcome = shared.queues().handle(conn, op);
                if id != 0 {
                    let _ = out.send(ServerFrame::Reply { id, outcome });
                } else if let Err(e) = outcome {
                    tracing::debug!(conn, error = %e, "an unanswered operation failed");
                }
            }
            Ok(ClientFrame::Close) => return Ok(()),
            Ok(ClientFrame::Hello { .. }) => return Err("a second hello".to_owned()),
            Err(e) => return Err(format!("bad frame: {e}")),
        }
    }
}

/// Writes a connection's frames, as many as are queued before each flush, until its
/// senders are gone or a `Fatal` went out; then closes the socket.
async fn write(
    mut sink: futures_util::stream::SplitSink<Transport, Bytes>,
    mut rx: mpsc::UnboundedReceiver<ServerFrame>,
) {
    while let Some(frame) = rx.recv().await {
        let mut last = matches!(frame, ServerFrame::Fatal { .. });
        if feed(&mut sink, &frame).await.is_err() {
            return;
        }
        while !last && let Ok(frame) = rx.try_recv() {
            last = matches!(frame, ServerFrame::Fatal { .. });
            if feed(&mut sink, &frame).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() || last {
            break;
        }
    }
    let _ = sink.close().await;
}

async fn feed(
    sink: &mut futures_util::stream::SplitSink<Transport, Bytes>,
    frame: &ServerFrame,
) -> Result<(), ()> {
    match protocol::encode(frame) {
        Ok(bytes) => sink.feed(bytes).await.map_err(|_| ()),
        Err(e) => {
            tracing::error!(error = %e, "the embedded broker cannot encode a frame");
            Err(())
        }
    }
}

/// Sends one frame at once (before the connection has its writer).
async fn send_now(framed: &mut Transport, frame: &ServerFrame) -> Result<(), ()> {
    let bytes = protocol::encode(frame).map_err(|_| ())?;
    framed.send(bytes).await.map_err(|_| ())?;
    let _ = SinkExt::<Bytes>::close(framed).await;
    Ok(())
}
