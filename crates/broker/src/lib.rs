//! Ferry's RabbitMQ broker: the queue names, confirmed publishing, consuming with
//! manual acks, and dead letters. No `lapin` type leaves this crate.
//!
//! Queues (all durable, all prefixed by the namespace `<ns>`):
//! - `<ns>.submissions`: web-service -> forwarder, [`ferry_proto::messages::TaskBatch`]
//! - `<ns>.ep.<endpoint-id>.tasks`: forwarder -> endpoint, `TaskBatch`
//! - `<ns>.ep.<endpoint-id>.control`: forwarder -> endpoint, cancellations
//!
//!   Both are declared with `x-overflow: reject-publish`: should an operator's policy
//!   give them a `max-length`, a publish beyond it is refused (nacked: [`Error::Nacked`],
//!   which [`Error::is_backpressure`] counts as backpressure, for the publisher to try
//!   again) instead of RabbitMQ's default of silently dropping the oldest message. A
//!   queue declared by an older version without the argument is used as it is (see
//!   [`Broker::declare_endpoint`]).
//! - `<ns>.status` and `<ns>.results`: endpoint -> forwarder, `EndpointMessage`
//! - `<ns>.dead`: messages nobody could decode, with the reason in the
//!   `x-ferry-reason` header
//! - `<ns>.tg.<user-id>.<task-group-id>`: forwarder -> a Globus Compute SDK, the
//!   results of one user's task group (they expire unused)
//!
//! An endpoint writes only through its own exchange, `<ns>.ep.<endpoint-id>.out`
//! (direct), whose routes `results`, `status`, `dead` and `retry` lead to the results,
//! status and dead queues and to its own task queue: with a broker identity of its own
//! (see the web-service's `broker_admin`), write permission on that one exchange and
//! read permission on its two queues is all it has, and every message it publishes
//! carries its user name in `user_id`, which RabbitMQ checks. A [`Broker`] connected
//! with [`Options::endpoint`] set does this by itself.
//!
//! Every message is persistent; publishes wait for the broker's confirm (or hand back a
//! [`Confirm`] to wait on).

use std::time::Duration;

use ferry_proto::{EndpointId, TaskId, UserId};
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// What can go wrong talking to RabbitMQ.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused (nacked) a message for queue {queue}")]
    Nacked { queue: String },
    #[error("cannot encode a message: {0}")]
    Codec(String),
    #[error("an endpoint's connection may not publish to {queue}")]
    NotAllowed { queue: String },
    /// RabbitMQ blocks publishers (a memory or disk alarm: `connection.blocked`).
    #[error("RabbitMQ is refusing messages for now (a memory or disk alarm)")]
    Blocked,
    /// A publish did not complete within its deadline (RabbitMQ is slow or blocked).
    #[error("RabbitMQ did not take the message within {0:?}")]
    Deadline(Duration),
}

impl Error {
    /// The broker is up but not taking messages now: try later, on the same connection.
    /// A nack counts: RabbitMQ refuses a message for a queue at its `max-length` with
    /// `x-overflow: reject-publish` (or on an internal error); the channel stays open.
    pub fn is_backpressure(&self) -> bool {
        matches!(self, Error::Blocked | Error::Deadline(_) | Error::Nacked { .. })
    }

    /// RabbitMQ refused a declaration whose arguments differ from the existing queue's
    /// (`PRECONDITION_FAILED`, which closes the channel).
    fn is_precondition_failed(&self) -> bool {
        matches!(self, Error::Amqp(e) if matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == 406))
    }
}

/// The overflow behaviour Ferry declares its endpoint queues with.
pub const ENDPOINT_QUEUE_OVERFLOW: &str = "reject-publish";

/// Endpoint queues found declared without [`ENDPOINT_QUEUE_OVERFLOW`] (by an older
/// version): warned about once per process.
static OLD_QUEUES_WARNED: std::sync::Mutex<Option<std::collections::HashSet<String>>> =
    std::sync::Mutex::new(None);

/// Whether `queue` is warned about for the first time.
fn first_warning(queue: &str) -> bool {
    OLD_QUEUES_WARNED
        .lock()
        .expect("poisoned")
        .get_or_insert_with(Default::default)
        .insert(queue.to_owned())
}

const ROUTE_RESULTS: &str = "results";
const ROUTE_STATUS: &str = "status";
const ROUTE_DEAD: &str = "dead";
const ROUTE_RETRY: &str = "retry";

pub type Result<T> = std::result::Result<T, Error>;

/// Settings shared by everything that declares queues.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Delete a queue after it has had no consumer for this long (tests use it so an
    /// aborted run cleans up after itself; production leaves it unset).
    pub queue_expires: Option<Duration>,
    /// PEM certificates of a CA to trust for `amqps://`, besides the system's roots
    /// (`FERRY_CA_FILE`).
    pub ca_pem: Option<String>,
    /// Connected as this endpoint: what it sends to the results, status and dead
    /// queues, and to its own task queue, goes through its exchange, stamped with the
    /// connection's user name.
    pub endpoint: Option<EndpointId>,
}

/// The broker user endpoint `endpoint` logs in as, when endpoints have identities of
/// their own.
pub fn endpoint_user(namespace: &str, endpoint: EndpointId) -> String {
    format!("{namespace}-ep-{endpoint}")
}

/// The broker user that reads user `owner`'s task-group result queues.
pub fn result_reader_user(namespace: &str, owner: UserId) -> String {
    format!("{namespace}-user-{owner}")
}

/// The user name and vhost of an AMQP URL (`amqp[s]://user:pass@host:port/vhost`), or
/// what is wrong with it.
pub fn url_parts(url: &str) -> std::result::Result<(String, String), String> {
    let uri = url.parse::<lapin::uri::AMQPUri>()?;
    Ok((uri.authority.userinfo.username, uri.vhost))
}

/// One connection to RabbitMQ with a confirm-mode channel for publishing. Cheap to
/// clone.
#[derive(Clone)]
pub struct Broker {
    conn: std::sync::Arc<Connection>,
    publisher: Channel,
    /// The confirm of the last [`Broker::takes_publishes`] probe, while it is awaited.
    probe: std::sync::Arc<tokio::sync::Mutex<Option<futures_util::future::BoxFuture<'static, bool>>>>,
    ns: String,
    options: Options,
    /// The user name the connection logged in with.
    user: String,
}

impl Broker {
    /// Whether RabbitMQ blocks this connection's publishers now (`connection.blocked`,
    /// sent on a memory or disk alarm): a publish would wait until the alarm clears.
    pub fn blocked(&self) -> bool {
        self.conn.status().blocked()
    }

    /// Whether RabbitMQ takes a publish now: false when it blocks this connection, or
    /// does not confirm a probe within `within`. RabbitMQ tells a connection it is
    /// blocked (a memory or disk alarm) only once the connection publishes, so a process
    /// that may not have published lately probes: an empty, unroutable message (dropped
    /// by the broker, confirmed at once when it takes publishes). A probe still
    /// unconfirmed is waited on again rather than joined by another.
    pub async fn takes_publishes(&self, within: Duration) -> Result<bool> {
        if self.blocked() {
            return Ok(false);
        }
        let mut probe = self.probe.lock().await;
        if probe.is_none() {
            let confirm = self
                .publisher
                .basic_publish(
                    "".into(),
                    format!("{}.probe", self.ns).as_str().into(),
                    BasicPublishOptions::default(),
                    b"",
                    BasicProperties::default(),
                )
                .await?;
            *probe = Some(Box::pin(async move { confirm.await.is_ok_and(|c| c.is_ack()) }));
        }
        let pending = probe.as_mut().expect("set above");
        match tokio::time::timeout(within, pending).await {
            Ok(acked) => {
                *probe = None;
                Ok(acked && !self.blocked())
            }
            Err(_) => Ok(false),
        }
    }

    /// Connects to `url` (`amqp://user:pass@host:port/vhost`, or `amqps://` over TLS: the
    /// broker's certificate is verified against the system's roots and `options.ca_pem`).
    pub async fn connect(url: &str, namespace: &str, options: Options) -> Result<Self> {
        let tls = lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: options.ca_pem.clone(),
        };
        let user = url_parts(url).map(|(user, _)| user).unwrap_or_default();
        let conn = lapin::DefaultConnectionBuilder::new()?
            .with_uri_str(url.to_owned())
            .with_properties(ConnectionProperties::default())
            .with_tls_config(tls)
            .connect()
            .await?;
        let publisher = conn.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self {
            conn: std::sync::Arc::new(conn),
            publisher,
            probe: Default::default(),
            ns: namespace.to_owned(),
            options,
            user,
        })
    }

    /// The user name this connection logged in with.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The broker user an endpoint logs in as, when endpoints have identities of their
    /// own.
    pub fn endpoint_user(&self, endpoint: EndpointId) -> String {
        endpoint_user(&self.ns, endpoint)
    }

    /// An endpoint's own exchange: all it may write to.
    pub fn endpoint_exchange(&self, endpoint: EndpointId) -> String {
        format!("{}.ep.{endpoint}.out", self.ns)
    }

    /// Where a message for `queue` goes when this broker is an endpoint's: its exchange
    /// and the route to that queue. `None` when it publishes directly.
    fn route(&self, queue: &str) -> Result<Option<(String, &'static str)>> {
        let Some(endpoint) = self.options.endpoint else {
            return Ok(None);
        };
        let key = if queue == self.results_queue() {
            ROUTE_RESULTS
        } else if queue == self.status_queue() {
            ROUTE_STATUS
        } else if queue == self.dead_queue() {
            ROUTE_DEAD
        } else if queue == self.endpoint_queue(endpoint) {
            ROUTE_RETRY
        } else {
            return Err(Error::NotAllowed {
                queue: queue.to_owned(),
            });
        };
        Ok(Some((self.endpoint_exchange(endpoint), key)))
    }

    /// True when both handles share one connection.
    pub fn same_connection(&self, other: &Broker) -> bool {
        std::sync::Arc::ptr_eq(&self.conn, &other.conn)
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    pub fn submissions_queue(&self) -> String {
        format!("{}.submissions", self.ns)
    }

    pub fn status_queue(&self) -> String {
        format!("{}.status", self.ns)
    }

    pub fn results_queue(&self) -> String {
        format!("{}.results", self.ns)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.ns)
    }

    pub fn endpoint_queue(&self, endpoint: EndpointId) -> String {
        format!("{}.ep.{endpoint}.tasks", self.ns)
    }

    /// An endpoint's control queue: cancellations, read apart from its tasks.
    pub fn endpoint_control_queue(&self, endpoint: EndpointId) -> String {
        format!("{}.ep.{endpoint}.control", self.ns)
    }

    /// The prefix of a user's task-group result queues (the name handed to their Globus
    /// Compute SDK): each user's queues apart, so a broker identity may read one user's.
    pub fn task_group_prefix(&self, owner: UserId) -> String {
        format!("{}.tg.{owner}.", self.ns)
    }

    pub fn task_group_queue(&self, owner: UserId, group: ferry_proto::TaskGroupId) -> String {
        format!("{}{group}", self.task_group_prefix(owner))
    }

    /// Declares a task group's result queue (idempotent). It deletes itself after
    /// `expires` without a consumer, so abandoned groups clean up.
    pub async fn declare_task_group(
        &self,
        owner: UserId,
        group: ferry_proto::TaskGroupId,
        expires: Duration,
    ) -> Result<()> {
        let mut args = FieldTable::default();
        args.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(expires.as_millis() as i64),
        );
        self.publisher
            .queue_declare(
                self.task_group_queue(owner, group).as_str().into(),
                QueueDeclareOptions::durable(),
                args,
            )
            .await?;
        Ok(())
    }

    /// Publishes messages with a `timestamp` property (Unix seconds) to their queues,
    /// then waits for every confirm.
    pub async fn publish_stamped(&self, messages: &[(String, Vec<u8>)], timestamp: u64) -> Result<()> {
        let mut confirms = Vec::with_capacity(messages.len());
        for (queue, body) in messages {
            let props = BasicProperties::default().with_timestamp(timestamp);
            confirms.push((queue, self.send(queue, body, props).await?));
        }
        for (queue, confirm) in confirms {
            if !confirm.await?.is_ack() {
                return Err(Error::Nacked { queue: queue.clone() });
            }
        }
        Ok(())
    }

    /// Declares the queues the web-service and forwarder share (idempotent).
    pub async fn declare_core(&self) -> Result<()> {
        self.declare_queue(&self.dead_queue(), false).await?;
        for q in [
            self.submissions_queue(),
            self.status_queue(),
            self.results_queue(),
        ] {
            self.declare_queue(&q, true).await?;
        }
        Ok(())
    }

    /// Declares an endpoint's task and control queues and its exchange with its routes
    /// (idempotent).
    ///
    /// The queues get `x-overflow: reject-publish` ([`ENDPOINT_QUEUE_OVERFLOW`]). One
    /// that exists without it (declared by an older version) cannot be declared again
    /// with it (RabbitMQ answers `PRECONDITION_FAILED`); it is then checked passively and
    /// used as it is, with a warning (once per queue and process) naming the queue and
    /// the fix.
    pub async fn declare_endpoint(&self, endpoint: EndpointId) -> Result<()> {
        self.declare_endpoint_queue(&self.endpoint_queue(endpoint))
            .await?;
        self.declare_endpoint_queue(&self.endpoint_control_queue(endpoint))
            .await?;
        let exchange = self.endpoint_exchange(endpoint);
        self.publisher
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Direct,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        for (queue, key) in [
            (self.results_queue(), ROUTE_RESULTS),
            (self.status_queue(), ROUTE_STATUS),
            (self.dead_queue(), ROUTE_DEAD),
            (self.endpoint_queue(endpoint), ROUTE_RETRY),
        ] {
            self.publisher
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    key.into(),
                    lapin::options::QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Deletes an endpoint's exchange (its queues go with `delete_queue`).
    pub async fn delete_endpoint_exchange(&self, endpoint: EndpointId) -> Result<()> {
        let channel = self.conn.create_channel().await?;
        channel
            .exchange_delete(
                self.endpoint_exchange(endpoint).as_str().into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await?;
        let _ = channel.close(200, "done".into()).await;
        Ok(())
    }

    /// Tells an endpoint to stop tasks (best effort: their records are already terminal).
    pub async fn cancel_tasks(&self, endpoint: EndpointId, task_ids: Vec<TaskId>) -> Result<()> {
        if task_ids.is_empty() {
            return Ok(());
        }
        self.declare_endpoint(endpoint).await?;
        let body = ferry_proto::codec::encode(&ferry_proto::messages::CancelTasks {
            endpoint_id: endpoint,
            task_ids,
        })
        .map_err(|e| Error::Codec(e.to_string()))?;
        self.publish(&self.endpoint_control_queue(endpoint), &body).await
    }

    /// Declares an endpoint's queue with [`ENDPOINT_QUEUE_OVERFLOW`], on a channel of
    /// its own (a refused declaration closes its channel), falling back to a passive
    /// declaration for a queue an older version declared without it.
    async fn declare_endpoint_queue(&self, name: &str) -> Result<()> {
        let mut args = self.queue_args(true);
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString(LongString::from(ENDPOINT_QUEUE_OVERFLOW)),
        );
        let channel = self.conn.create_channel().await?;
        let declared = channel
            .queue_declare(name.into(), QueueDeclareOptions::durable(), args)
            .await
            .map_err(Error::from);
        match declared {
            Ok(_) => {
                let _ = channel.close(200, "done".into()).await;
                Ok(())
            }
            Err(e) if e.is_precondition_failed() => {
                if first_warning(name) {
                    tracing::warn!(
                        queue = name,
                        "the endpoint queue exists with other arguments (declared by an older Ferry): \
                         used as it is, without x-overflow=reject-publish, so a max-length policy \
                         would drop its oldest messages; fix: delete the queue while it is empty \
                         (rabbitmqctl delete_queue {name}) or give it a policy with \
                         overflow=reject-publish"
                    );
                }
                self.queue_len(name).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    async fn declare_queue(&self, name: &str, dead_letters: bool) -> Result<()> {
        let args = self.queue_args(dead_letters);
        self.publisher
            .queue_declare(name.into(), QueueDeclareOptions::durable(), args)
            .await?;
        Ok(())
    }

    /// The arguments Ferry declares its queues with.
    fn queue_args(&self, dead_letters: bool) -> FieldTable {
        let mut args = FieldTable::default();
        if dead_letters {
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(LongString::from("")),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(LongString::from(self.dead_queue())),
            );
        }
        if let Some(expires) = self.options.queue_expires {
            args.insert(
                "x-expires".into(),
                AMQPValue::LongLongInt(expires.as_millis() as i64),
            );
        }
        args
    }

    /// Publishes one persistent message to `queue` and waits for the broker's confirm.
    pub async fn publish(&self, queue: &str, body: &[u8]) -> Result<()> {
        self.publish_many(queue, std::iter::once(body)).await
    }

    /// Publishes several messages to `queue`, then waits for all their confirms: one
    /// round trip for the lot.
    pub async fn publish_many<'a>(
        &self,
        queue: &str,
        bodies: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        for confirm in self.send_all(queue, bodies).await? {
            if !confirm.await?.is_ack() {
                return Err(Error::Nacked {
                    queue: queue.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Publishes one persistent message to `queue` and returns at once: the returned
    /// [`Confirm`] resolves when the broker has it. Several may be in flight; on one
    /// channel they resolve in the order they were published.
    pub async fn publish_pending(&self, queue: &str, body: &[u8]) -> Result<Confirm> {
        Ok(Confirm {
            inner: self.send(queue, body, BasicProperties::default()).await?,
            queue: queue.to_owned(),
        })
    }

    /// Publishes several messages to `queue` without waiting for their confirms (a nack
    /// or a lost confirm is logged when it comes). For callers that can recover a lost
    /// message by other means; an error here means the messages did not leave.
    pub async fn publish_many_unconfirmed<'a>(
        &self,
        queue: &str,
        bodies: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        let confirms = self.send_all(queue, bodies).await?;
        let queue = queue.to_owned();
        tokio::spawn(async move {
            for confirm in confirms {
                match confirm.await {
                    Ok(c) if c.is_ack() => {}
                    Ok(_) => tracing::warn!(%queue, "the broker refused (nacked) a message"),
                    Err(e) => tracing::warn!(%queue, error = %e, "no confirm for a message"),
                }
            }
        });
        Ok(())
    }

    /// Sends persistent messages to `queue`; their confirms come later.
    async fn send_all<'a>(
        &self,
        queue: &str,
        bodies: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<lapin::PublisherConfirm>> {
        let mut confirms = Vec::new();
        for body in bodies {
            confirms.push(self.send(queue, body, BasicProperties::default()).await?);
        }
        Ok(confirms)
    }

    /// Sends one persistent message toward `queue`: directly, or through the endpoint's
    /// exchange (stamped with the user name, which RabbitMQ checks) for an endpoint's
    /// connection.
    async fn send(
        &self,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<lapin::PublisherConfirm> {
        let (exchange, key, properties) = match self.route(queue)? {
            Some((exchange, key)) => (
                exchange,
                key.to_owned(),
                properties.with_user_id(self.user.as_str().into()),
            ),
            None => (String::new(), queue.to_owned(), properties),
        };
        Ok(self
            .publisher
            .basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                body,
                properties.with_delivery_mode(2),
            )
            .await?)
    }

    /// Starts consuming `queue` on a channel of its own, at most `prefetch` unacked
    /// messages at a time.
    pub async fn consume(&self, queue: &str, prefetch: u16, tag: &str) -> Result<Consumer> {
        let channel = self.conn.create_channel().await?;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let inner = channel
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Consumer {
            inner,
            _channel: channel,
            broker: self.clone(),
        })
    }

    /// Deletes a queue (test cleanup); a missing queue is not an error.
    pub async fn delete_queue(&self, queue: &str) -> Result<()> {
        let channel = self.conn.create_channel().await?;
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await?;
        let _ = channel.close(200, "done".into()).await;
        Ok(())
    }

    /// How many messages wait in `queue` (declares it passively).
    pub async fn queue_len(&self, queue: &str) -> Result<u32> {
        let channel = self.conn.create_channel().await?;
        let q = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = channel.close(200, "done".into()).await;
        Ok(q.message_count())
    }

    /// Resolves, with what happened, once the connection has failed or closed.
    ///
    /// lapin tells each consumer when the connection dies, but a process waiting on
    /// its consumers has been seen to miss it after RabbitMQ was killed (the error
    /// logged, no consumer woken, the forwarder idle for good). Whoever holds the
    /// connection for its whole life selects on this too: the connection's error
    /// events, and its state once a second as the last guard.
    pub async fn lost(&self) -> String {
        let mut events = std::pin::pin!(self.conn.events_listener());
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(lapin::Event::Error(e)) => return format!("the connection failed: {e}"),
                    Some(_) => {}
                    None => return "the connection's events ended".to_owned(),
                },
                _ = check.tick() => {
                    let status = self.conn.status();
                    if status.errored() {
                        return "the connection failed".to_owned();
                    }
                    if status.closed() {
                        return "the connection was closed".to_owned();
                    }
                }
            }
        }
    }

    /// Closes the connection, waiting at most two seconds for RabbitMQ to agree (one
    /// that has just died never answers, and the caller wants to reconnect).
    pub async fn close(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.close(200, "bye".into())).await;
    }
}

/// Messages arriving from one queue.
pub struct Consumer {
    inner: lapin::Consumer,
    _channel: Channel,
    broker: Broker,
}

impl Consumer {
    /// The next message; `None` when the consumer was cancelled or the connection closed.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        let item = self.inner.next().await?;
        Some(self.wrap(item))
    }

    /// The next message if one has already arrived, without waiting: lets a caller
    /// take every message waiting in the prefetch window and handle them together.
    pub fn ready(&mut self) -> Option<Result<Delivery>> {
        let item = self.inner.next().now_or_never()??;
        Some(self.wrap(item))
    }

    /// Up to `most` messages and about `bytes` of bodies: the next one (waiting for it),
    /// then whichever have already arrived. Empty when the consumer ended.
    pub async fn next_batch(&mut self, most: usize, bytes: usize) -> Result<Vec<Delivery>> {
        let Some(first) = self.next().await else {
            return Ok(Vec::new());
        };
        let first = first?;
        let mut size = first.body().len();
        let mut batch = vec![first];
        while batch.len() < most
            && size < bytes
            && let Some(more) = self.ready()
        {
            let more = more?;
            size += more.body().len();
            batch.push(more);
        }
        Ok(batch)
    }

    fn wrap(&self, item: lapin::Result<lapin::message::Delivery>) -> Result<Delivery> {
        item.map_err(Error::from).map(|inner| Delivery {
            inner,
            broker: self.broker.clone(),
        })
    }
}

/// One message, to be acked once its work is safely done.
pub struct Delivery {
    inner: lapin::message::Delivery,
    broker: Broker,
}

impl Delivery {
    pub fn body(&self) -> &[u8] {
        &self.inner.data
    }

    /// True when the broker delivered it before and it was not acked.
    pub fn redelivered(&self) -> bool {
        self.inner.redelivered
    }

    /// The publisher's user name, when it stamped one (RabbitMQ checks it is the user
    /// the publisher logged in as).
    pub fn user_id(&self) -> Option<&str> {
        self.inner.properties.user_id().as_ref().map(|u| u.as_str())
    }

    /// The work is done: the broker may forget the message.
    pub async fn ack(&self) -> Result<()> {
        self.inner.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Give the message back for another delivery.
    pub async fn requeue(&self) -> Result<()> {
        self.inner
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// Moves an undecodable message to the dead-letter queue with `reason` in its
    /// `x-ferry-reason` header, then acks it. Nothing is lost and nothing loops.
    pub async fn dead_letter(&self, reason: &str) -> Result<()> {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-ferry-reason".into(),
            AMQPValue::LongString(LongString::from(reason.chars().take(1000).collect::<String>())),
        );
        headers.insert(
            "x-ferry-queue".into(),
            AMQPValue::LongString(LongString::from(self.inner.routing_key.as_str())),
        );
        let dead = self.broker.dead_queue();
        let confirm = self
            .broker
            .send(
                &dead,
                &self.inner.data,
                BasicProperties::default().with_headers(headers),
            )
            .await?;
        if !confirm.await?.is_ack() {
            return Err(Error::Nacked { queue: dead });
        }
        self.ack().await
    }
}

/// A published message's confirm, still to come.
pub struct Confirm {
    inner: lapin::PublisherConfirm,
    queue: String,
}

impl Confirm {
    /// Waits until the broker has the message (an error when it refused it).
    pub async fn wait(self) -> Result<()> {
        if self.inner.await?.is_ack() {
            Ok(())
        } else {
            Err(Error::Nacked { queue: self.queue })
        }
    }
}
