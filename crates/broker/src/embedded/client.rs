//! The client side of the embedded broker: a [`Transport`] over one TCP connection, or
//! straight onto the queues of a broker in this process ([`super::InProcess`]).
//!
//! Over TCP, requests carry an id and are answered in any order; a writer task sends
//! the frames queued by every handle in order, a reader task routes replies to their
//! waiters and deliveries to their consumers. In the process, a request is carried out
//! on the queues by the handle that makes it (no frame is encoded, no task woken) and
//! only deliveries go through the reader. When the connection ends, every waiter gets
//! an error and every consumer's stream ends.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::Io;
use super::protocol::{self, Answer, ClientFrame, Message, Op, ServerFrame};
use super::queues::{ConnId, Queues};
use crate::transport::{Acker, Deliveries, PendingConfirm, Properties, QueueSpec, RawDelivery, Transport};
use crate::{Error, Result};

/// How long connecting, and the server's answer to the hello, may take.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// How long [`Transport::close`] waits for the server to close its side.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// The user of a URL that names none.
const DEFAULT_USER: &str = "guest";

type Wire = Framed<Box<dyn Io>, LengthDelimitedCodec>;
type Waiters = HashMap<u64, oneshot::Sender<std::result::Result<Answer, String>>>;

/// One connection to an embedded broker. Cheap handles ([`Acker`]s, consumers) share it;
/// it closes when the last is dropped.
pub(crate) struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    link: Link,
    state: Arc<State>,
}

/// How a client's requests reach the broker.
enum Link {
    /// As frames over a byte stream, which a writer task sends.
    Wire(mpsc::UnboundedSender<ClientFrame>),
    /// Onto the queues of a broker in this process, as connection `conn`.
    Direct {
        queues: Arc<Mutex<Queues>>,
        conn: ConnId,
    },
}

/// What the reader task shares with the handles.
struct State {
    next_id: AtomicU64,
    /// Requests waiting for their reply; `None` once the connection is lost.
    waiters: Mutex<Option<Waiters>>,
    /// Each consumer's deliveries; `None` once the connection is lost.
    consumers: Mutex<Option<HashMap<u64, mpsc::UnboundedSender<Incoming>>>>,
    /// Why the connection ended, once it has.
    lost: watch::Sender<Option<String>>,
}

/// A delivery on its way to its consumer.
struct Incoming {
    tag: u64,
    routing_key: String,
    redelivered: bool,
    message: Message,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The parts of `ferry-mq://[user[:password]@]host:port[/]`.
struct Url<'a> {
    user: &'a str,
    password: Option<&'a str>,
    address: &'a str,
}

fn parse_url(url: &str) -> Result<Url<'_>> {
    let rest = url
        .strip_prefix(super::SCHEME)
        .and_then(|rest| rest.strip_prefix("://"))
        .ok_or_else(|| Error::Embedded("the URL must start with ferry-mq://".to_owned()))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (userinfo, address) = rest.rsplit_once('@').unwrap_or(("", rest));
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    if address.is_empty() || address.contains('/') {
        return Err(Error::Embedded(
            "the URL must be ferry-mq://[user[:password]@]host:port".to_owned(),
        ));
    }
    Ok(Url {
        user: if user.is_empty() { DEFAULT_USER } else { user },
        password,
        address,
    })
}

impl Client {
    /// Connects to the server at `url` and says hello; returns the client and the user
    /// name it connected as.
    pub(crate) async fn connect(url: &str) -> Result<(Client, String)> {
        let url = parse_url(url)?;
        let wire = tokio::time::timeout(CONNECT_WITHIN, async {
            let stream = TcpStream::connect(url.address)
                .await
                .map_err(|e| Error::Embedded(format!("cannot connect to {}: {e}", url.address)))?;
            let _ = stream.set_nodelay(true);
            hello(Box::new(stream), url.user, url.password).await
        })
        .await
        .map_err(|_| {
            Error::Embedded(format!(
                "no answer from {} within {CONNECT_WITHIN:?}",
                url.address
            ))
        })??;
        Ok((Self::run(wire), url.user.to_owned()))
    }

    /// Connects as `user` to an embedded broker in this process ([`super::InProcess`]):
    /// its requests are carried out on the broker's queues at once, and the deliveries
    /// come to this runtime's reader task as values, never encoded.
    pub(crate) fn in_process(broker: &super::InProcess, user: &str) -> Client {
        let (queues, stopping) = broker.parts();
        let (frames_tx, mut frames) = mpsc::unbounded_channel();
        let conn = queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .connect(user.to_owned(), frames_tx);
        let state = new_state();
        let inner = Arc::new(Inner {
            link: Link::Direct {
                queues: queues.clone(),
                conn,
            },
            state: state.clone(),
        });
        // The broker stopping ends the connection, as a server's would.
        let mut stopped = Box::pin(stopping.cancelled_owned());
        let frames = futures_util::stream::poll_fn(move |cx| {
            if stopped.as_mut().poll(cx).is_ready() {
                let reason = "the broker closed the connection: the embedded broker is stopping";
                return Poll::Ready(Some(Err(reason.to_owned())));
            }
            frames.poll_recv(cx).map(|frame| frame.map(Ok))
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            read(frames, state, weak).await;
            // Whatever ended it, its unacked messages go back to their queues.
            queues
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .disconnect(conn);
        });
        Client { inner }
    }

    /// Starts the connection's writer and reader over `wire`, said hello on.
    fn run(wire: Wire) -> Client {
        let (out, rx) = mpsc::unbounded_channel();
        let state = new_state();
        let (sink, frames) = wire.split();
        tokio::spawn(write(sink, rx));
        let inner = Arc::new(Inner {
            link: Link::Wire(out),
            state: state.clone(),
        });
        let frames = frames.map(|frame| match frame {
            Err(e) => Err(format!("the connection failed: {e}")),
            Ok(bytes) => protocol::decode::<ServerFrame>(&bytes)
                .map_err(|e| format!("a bad frame from the broker: {e}")),
        });
        tokio::spawn(read(frames, state, Arc::downgrade(&inner)));
        Client { inner }
    }
}

fn new_state() -> Arc<State> {
    Arc::new(State {
        next_id: AtomicU64::new(1),
        waiters: Mutex::new(Some(HashMap::new())),
        consumers: Mutex::new(Some(HashMap::new())),
        lost: watch::channel(None).0,
    })
}

/// Says hello as `user` over `stream` and waits for the server's welcome.
async fn hello(stream: Box<dyn Io>, user: &str, password: Option<&str>) -> Result<Wire> {
    let mut wire = Framed::new(stream, protocol::codec());
    let hello = protocol::encode(&ClientFrame::Hello {
        user: user.to_owned(),
        password: password.map(str::to_owned),
    })
    .map_err(Error::Embedded)?;
    wire.send(hello)
        .await
        .map_err(|e| Error::Embedded(format!("cannot say hello: {e}")))?;
    let answer = match wire.next().await {
        None => {
            return Err(Error::Embedded(
                "the broker closed the connection at once".to_owned(),
            ));
        }
        Some(Err(e)) => return Err(Error::Embedded(format!("no welcome: {e}"))),
        Some(Ok(bytes)) => protocol::decode::<ServerFrame>(&bytes).map_err(Error::Embedded)?,
    };
    match answer {
        ServerFrame::Welcome => Ok(wire),
        ServerFrame::Fatal { reason } => Err(Error::Embedded(format!(
            "the broker refused the connection: {reason}"
        ))),
        other => Err(Error::Embedded(format!("expected a welcome, got {other:?}"))),
    }
}

/// Writes the queued frames, as many as are waiting before each flush, until every
/// handle is gone or [`ClientFrame::Close`] went out; then closes the socket.
async fn write(mut sink: SplitSink<Wire, Bytes>, mut rx: mpsc::UnboundedReceiver<ClientFrame>) {
    while let Some(frame) = rx.recv().await {
        let mut close = matches!(frame, ClientFrame::Close);
        let mut frames = vec![frame];
        while !close && let Ok(frame) = rx.try_recv() {
            close = matches!(frame, ClientFrame::Close);
            frames.push(frame);
        }
        for frame in frames {
            let Ok(bytes) = protocol::encode(&frame) else {
                tracing::error!("cannot encode a frame for the embedded broker");
                continue;
            };
            if sink.feed(bytes).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() || close {
            break;
        }
    }
    let _ = sink.close().await;
}

/// Routes the server's frames (or why they stopped) until the connection ends, then
/// fails every waiter and ends every consumer. A delivery whose consumer is gone is
/// given back through `inner`, while a handle is left.
async fn read(
    mut frames: impl Stream<Item = std::result::Result<ServerFrame, String>> + Unpin,
    state: Arc<State>,
    inner: Weak<Inner>,
) {
    let reason = loop {
        let frame = match frames.next().await {
            None => break "the connection was closed".to_owned(),
            Some(Err(reason)) => break reason,
            Some(Ok(frame)) => frame,
        };
        match frame {
            ServerFrame::Reply { id, outcome } => {
                let waiter = locked(&state.waiters).as_mut().and_then(|w| w.remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(outcome);
                }
            }
            ServerFrame::Deliver {
                consumer,
                tag,
                routing_key,
                redelivered,
                message,
            } => {
                let incoming = Incoming {
                    tag,
                    routing_key,
                    redelivered,
                    message,
                };
                let refused = match locked(&state.consumers).as_ref().and_then(|c| c.get(&consumer)) {
                    Some(tx) => tx.send(incoming).err().map(|e| e.0),
                    None => Some(incoming),
                };
                // Its consumer is gone: the message goes back for another.
                if let Some(incoming) = refused
                    && let Some(inner) = inner.upgrade()
                {
                    inner.tell(Op::Requeue { tag: incoming.tag });
                }
            }
            ServerFrame::Cancelled { consumer } => {
                locked(&state.consumers).as_mut().map(|c| c.remove(&consumer));
            }
            ServerFrame::Fatal { reason } => break format!("the broker closed the connection: {reason}"),
            ServerFrame::Welcome => {}
        }
    };
    tracing::debug!(%reason, "the connection to the embedded broker ended");
    locked(&state.waiters).take();
    locked(&state.consumers).take();
    state.lost.send_replace(Some(reason));
}

impl Inner {
    /// Why the connection ended, as an error.
    fn lost_error(&self) -> Error {
        let reason = self.state.lost.borrow().clone();
        Error::Embedded(format!(
            "the connection is lost: {}",
            reason.as_deref().unwrap_or("its writer stopped")
        ))
    }

    /// Sends a request; the receiver gets its reply (at once, in the process).
    fn start(&self, op: Op) -> Result<oneshot::Receiver<std::result::Result<Answer, String>>> {
        let mut waiters = locked(&self.state.waiters);
        let Some(waiters) = waiters.as_mut() else {
            return Err(self.lost_error());
        };
        let (tx, rx) = oneshot::channel();
        match &self.link {
            Link::Wire(out) => {
                let id = self.state.next_id.fetch_add(1, Ordering::Relaxed);
                waiters.insert(id, tx);
                if out.send(ClientFrame::Request { id, op }).is_err() {
                    waiters.remove(&id);
                    return Err(self.lost_error());
                }
            }
            Link::Direct { queues, conn } => {
                let _ = tx.send(locked(queues).handle(*conn, op));
            }
        }
        Ok(rx)
    }

    /// Sends a request that wants no reply.
    fn tell(&self, op: Op) {
        match &self.link {
            Link::Wire(out) => {
                let _ = out.send(ClientFrame::Request { id: 0, op });
            }
            Link::Direct { queues, conn } => {
                if locked(&self.state.waiters).is_none() {
                    return; // the connection is gone, and with it what it held
                }
                if let Err(e) = locked(queues).handle(*conn, op) {
                    tracing::debug!(conn, error = %e, "an unanswered operation failed");
                }
            }
        }
    }

    /// Ends the connection: its unacked messages go back to their queues.
    fn close(&self) {
        match &self.link {
            Link::Wire(out) => {
                let _ = out.send(ClientFrame::Close);
            }
            // Its frames' sender goes with it: the reader ends.
            Link::Direct { queues, conn } => locked(queues).disconnect(*conn),
        }
    }

    /// Sends a request and waits for its reply.
    async fn request(&self, op: Op) -> Result<Answer> {
        let rx = self.start(op)?;
        finish(rx, &self.state).await
    }
}

impl Drop for Inner {
    /// The last handle gone closes the connection (over a wire, the writer ends when
    /// its channel does).
    fn drop(&mut self) {
        if let Link::Direct { queues, conn } = &self.link {
            locked(queues).disconnect(*conn);
        }
    }
}

/// The reply a request's receiver gets, as a result.
async fn finish(rx: oneshot::Receiver<std::result::Result<Answer, String>>, state: &State) -> Result<Answer> {
    match rx.await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(refused)) => Err(Error::Embedded(refused)),
        Err(_) => {
            let reason = state.lost.borrow().clone().unwrap_or_default();
            Err(Error::Embedded(format!("the connection is lost: {reason}")))
        }
    }
}

struct EmbeddedAcker {
    inner: Arc<Inner>,
    tag: u64,
}

#[async_trait::async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(&self) -> Result<()> {
        self.inner.request(Op::Ack { tag: self.tag }).await.map(|_| ())
    }

    async fn requeue(&self) -> Result<()> {
        self.inner
            .request(Op::Requeue { tag: self.tag })
            .await
            .map(|_| ())
    }
}

/// One consumer's deliveries. Dropping it cancels the consumer and gives back the
/// messages that arrived for it but were never taken.
struct Subscription {
    consumer: u64,
    rx: mpsc::UnboundedReceiver<Incoming>,
    inner: Arc<Inner>,
}

impl Stream for Subscription {
    type Item = Result<RawDelivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|incoming| {
            incoming.map(|incoming| {
                Ok(RawDelivery {
                    body: incoming.message.body,
                    redelivered: incoming.redelivered,
                    routing_key: incoming.routing_key,
                    properties: Properties {
                        timestamp: incoming.message.timestamp,
                        user_id: incoming.message.user_id,
                        headers: incoming.message.headers,
                    },
                    acker: Box::new(EmbeddedAcker {
                        inner: self.inner.clone(),
                        tag: incoming.tag,
                    }),
                })
            })
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        locked(&self.inner.state.consumers)
            .as_mut()
            .map(|c| c.remove(&self.consumer));
        self.inner.tell(Op::Cancel {
            consumer: self.consumer,
        });
        self.rx.close();
        while let Ok(incoming) = self.rx.try_recv() {
            self.inner.tell(Op::Requeue { tag: incoming.tag });
        }
    }
}

#[async_trait::async_trait]
impl Transport for Client {
    /// Dead-lettering arguments and `reject_overflow` are not kept: the embedded broker
    /// never dead-letters by itself and has no max length.
    async fn declare_queue(&self, name: &str, spec: &QueueSpec) -> Result<()> {
        let expires_ms = spec
            .expires
            .map(|e| u64::try_from(e.as_millis()).unwrap_or(u64::MAX));
        self.inner
            .request(Op::DeclareQueue {
                name: name.to_owned(),
                expires_ms,
            })
            .await
            .map(|_| ())
    }

    async fn declare_exchange(&self, exchange: &str, routes: &[(String, &str)]) -> Result<()> {
        let routes = routes
            .iter()
            .map(|(queue, key)| ((*key).to_owned(), queue.clone()))
            .collect();
        self.inner
            .request(Op::DeclareExchange {
                name: exchange.to_owned(),
                routes,
            })
            .await
            .map(|_| ())
    }

    async fn delete_exchange(&self, exchange: &str) -> Result<()> {
        self.inner
            .request(Op::DeleteExchange {
                name: exchange.to_owned(),
            })
            .await
            .map(|_| ())
    }

    async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        properties: Properties,
    ) -> Result<PendingConfirm> {
        let rx = self.inner.start(Op::Publish {
            exchange: exchange.to_owned(),
            key: key.to_owned(),
            message: Message {
                body: Bytes::copy_from_slice(body),
                timestamp: properties.timestamp,
                user_id: properties.user_id,
                headers: properties.headers,
            },
        })?;
        let state = self.inner.state.clone();
        Ok(Box::pin(async move { finish(rx, &state).await.map(|_| true) }))
    }

    async fn consume(&self, queue: &str, prefetch: u16, _tag: &str) -> Result<Deliveries> {
        let consumer = self.inner.state.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        match locked(&self.inner.state.consumers).as_mut() {
            Some(consumers) => consumers.insert(consumer, tx),
            None => return Err(self.inner.lost_error()),
        };
        // From here the subscription's drop cancels the consumer, should it fail.
        let subscription = Subscription {
            consumer,
            rx,
            inner: self.inner.clone(),
        };
        self.inner
            .request(Op::Consume {
                consumer,
                queue: queue.to_owned(),
                prefetch,
            })
            .await?;
        Ok(subscription.boxed())
    }

    async fn queue_len(&self, queue: &str) -> Result<u32> {
        match self
            .inner
            .request(Op::QueueLen {
                name: queue.to_owned(),
            })
            .await?
        {
            Answer::Count(n) => Ok(n),
            Answer::Done => Err(Error::Embedded("no count in the answer".to_owned())),
        }
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.inner
            .request(Op::DeleteQueue {
                name: queue.to_owned(),
            })
            .await
            .map(|_| ())
    }

    fn blocked(&self) -> bool {
        false
    }

    async fn takes_publishes(&self, within: Duration) -> Result<bool> {
        match tokio::time::timeout(within, self.inner.request(Op::Ping)).await {
            Ok(answer) => answer.map(|_| true),
            Err(_) => Ok(false),
        }
    }

    async fn lost(&self) -> String {
        let mut lost = self.inner.state.lost.subscribe();
        match lost.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the connection ended".to_owned(),
        }
    }

    async fn close(&self) {
        self.inner.close();
        let _ = tokio::time::timeout(CLOSE_WITHIN, self.lost()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In the process: a delivery comes as a value, an unacked one goes back when its
    /// client is dropped, and the broker stopping ends its connections, saying so.
    #[tokio::test]
    async fn an_in_process_client_works_on_the_queues_and_ends_when_they_stop() {
        let broker = super::super::InProcess::start().unwrap();
        let first = Client::in_process(&broker, "web");
        first.declare_queue("q", &QueueSpec::default()).await.unwrap();
        let confirm = first
            .publish("", "q", b"one", Properties::default())
            .await
            .unwrap();
        assert!(confirm.await.unwrap());
        let mut deliveries = first.consume("q", 1, "t").await.unwrap();
        let delivery = deliveries.next().await.unwrap().unwrap();
        assert_eq!((&delivery.body[..], delivery.redelivered), (&b"one"[..], false));
        drop((delivery, deliveries, first));

        let second = Client::in_process(&broker, "forwarder");
        let mut deliveries = second.consume("q", 1, "t").await.unwrap();
        let again = deliveries.next().await.unwrap().unwrap();
        assert!(
            again.redelivered,
            "the dropped client's unacked message came back"
        );
        again.acker.ack().await.unwrap();
        assert_eq!(second.queue_len("q").await.unwrap(), 0);

        broker.shutdown().await;
        let reason = tokio::time::timeout(Duration::from_secs(5), second.lost())
            .await
            .unwrap();
        assert!(reason.contains("stopping"), "{reason}");
        assert!(deliveries.next().await.is_none(), "the consumer's stream ended");
        let e = second.queue_len("q").await.unwrap_err();
        assert!(e.to_string().contains("stopping"), "{e}");
    }

    #[test]
    fn urls_name_user_password_and_address() {
        let url = parse_url("ferry-mq://ep-1:s3cr:et@127.0.0.1:5673/").unwrap();
        assert_eq!(
            (url.user, url.password, url.address),
            ("ep-1", Some("s3cr:et"), "127.0.0.1:5673")
        );
        let url = parse_url("ferry-mq://127.0.0.1:5673").unwrap();
        assert_eq!((url.user, url.password), (DEFAULT_USER, None));
        assert!(parse_url("ferry-mq://").is_err());
        assert!(parse_url("amqp://127.0.0.1:5673").is_err());
    }
}
