//! The RabbitMQ transport, over lapin: one connection with a confirm-mode channel for
//! publishing, and a channel of its own for each consumer and each operation that may
//! close its channel (a refused declaration, a passive declaration of a missing queue).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::transport::{Acker, Deliveries, PendingConfirm, Properties, QueueSpec, RawDelivery, Transport};
use crate::{ENDPOINT_QUEUE_OVERFLOW, Error, Result};

/// Queues found declared without [`ENDPOINT_QUEUE_OVERFLOW`] (by an older version):
/// warned about once per process.
static OLD_QUEUES_WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Whether `queue` is warned about for the first time.
fn first_warning(queue: &str) -> bool {
    OLD_QUEUES_WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert_with(Default::default)
        .insert(queue.to_owned())
}

/// RabbitMQ refused a declaration whose arguments differ from the existing queue's
/// (`PRECONDITION_FAILED`, which closes the channel).
fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == 406)
}

/// The user name and vhost of an AMQP URL, or what is wrong with it.
pub(crate) fn url_parts(url: &str) -> std::result::Result<(String, String), String> {
    let uri = url.parse::<lapin::uri::AMQPUri>()?;
    Ok((uri.authority.userinfo.username, uri.vhost))
}

/// One connection to RabbitMQ.
pub(crate) struct Amqp {
    conn: Connection,
    publisher: Channel,
    /// The confirm of the last [`Transport::takes_publishes`] probe, while it is awaited.
    probe: tokio::sync::Mutex<Option<BoxFuture<'static, bool>>>,
    /// Where probes go: a queue nobody declares, so RabbitMQ drops them.
    probe_key: String,
}

impl Amqp {
    /// Connects to `url` (`amqp://` or `amqps://`, whose certificate is verified against
    /// the system's roots and `ca_pem`).
    pub(crate) async fn connect(url: &str, ca_pem: Option<String>, namespace: &str) -> Result<Self> {
        let tls = lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: ca_pem,
        };
        let conn = lapin::DefaultConnectionBuilder::new()?
            .with_uri_str(url.to_owned())
            .with_properties(ConnectionProperties::default())
            .with_tls_config(tls)
            .connect()
            .await?;
        let publisher = conn.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self {
            conn,
            publisher,
            probe: Default::default(),
            probe_key: format!("{namespace}.probe"),
        })
    }

    /// Declares a queue with `x-overflow: reject-publish` on a channel of its own (a
    /// refused declaration closes its channel), falling back to a passive declaration
    /// for a queue an older version declared without it.
    async fn declare_rejecting(&self, name: &str, mut args: FieldTable) -> Result<()> {
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString(LongString::from(ENDPOINT_QUEUE_OVERFLOW)),
        );
        let channel = self.conn.create_channel().await?;
        let declared = channel
            .queue_declare(name.into(), QueueDeclareOptions::durable(), args)
            .await;
        match declared {
            Ok(_) => {
                let _ = channel.close(200, "done".into()).await;
                Ok(())
            }
            Err(e) if is_precondition_failed(&e) => {
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
            Err(e) => Err(e.into()),
        }
    }
}

/// The arguments a queue is declared with.
fn queue_args(spec: &QueueSpec) -> FieldTable {
    let mut args = FieldTable::default();
    if let Some(dead) = &spec.dead_letter_to {
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from("")),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(LongString::from(dead.as_str())),
        );
    }
    if let Some(expires) = spec.expires {
        args.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(i64::try_from(expires.as_millis()).unwrap_or(i64::MAX)),
        );
    }
    args
}

/// Ferry's properties in AMQP's form, persistent.
fn to_basic(properties: Properties) -> BasicProperties {
    let mut basic = BasicProperties::default().with_delivery_mode(2);
    if let Some(timestamp) = properties.timestamp {
        basic = basic.with_timestamp(timestamp);
    }
    if let Some(user) = properties.user_id {
        basic = basic.with_user_id(user.as_str().into());
    }
    if !properties.headers.is_empty() {
        let mut headers = FieldTable::default();
        for (name, value) in properties.headers {
            headers.insert(
                name.as_str().into(),
                AMQPValue::LongString(LongString::from(value)),
            );
        }
        basic = basic.with_headers(headers);
    }
    basic
}

/// The properties Ferry reads from a delivery (string headers only).
fn from_basic(basic: &BasicProperties) -> Properties {
    let headers = basic
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .filter_map(|(name, value)| {
                    let value = match value {
                        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        AMQPValue::ShortString(s) => s.as_str().to_owned(),
                        _ => return None,
                    };
                    Some((name.as_str().to_owned(), value))
                })
                .collect()
        })
        .unwrap_or_default();
    Properties {
        timestamp: *basic.timestamp(),
        user_id: basic.user_id().as_ref().map(|u| u.as_str().to_owned()),
        headers,
    }
}

struct AmqpAcker(lapin::Acker);

#[async_trait::async_trait]
impl Acker for AmqpAcker {
    async fn ack(&self) -> Result<()> {
        self.0.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    async fn requeue(&self) -> Result<()> {
        self.0
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
        Ok(())
    }
}

fn to_raw(delivery: lapin::message::Delivery) -> RawDelivery {
    RawDelivery {
        properties: from_basic(&delivery.properties),
        body: Bytes::from(delivery.data),
        redelivered: delivery.redelivered,
        routing_key: delivery.routing_key.as_str().to_owned(),
        acker: Box::new(AmqpAcker(delivery.acker)),
    }
}

#[async_trait::async_trait]
impl Transport for Amqp {
    async fn declare_queue(&self, name: &str, spec: &QueueSpec) -> Result<()> {
        let args = queue_args(spec);
        if spec.reject_overflow {
            return self.declare_rejecting(name, args).await;
        }
        self.publisher
            .queue_declare(name.into(), QueueDeclareOptions::durable(), args)
            .await?;
        Ok(())
    }

    async fn declare_exchange(&self, exchange: &str, routes: &[(String, &str)]) -> Result<()> {
        self.publisher
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        for (queue, key) in routes {
            self.publisher
                .queue_bind(
                    queue.as_str().into(),
                    exchange.into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    async fn delete_exchange(&self, exchange: &str) -> Result<()> {
        let channel = self.conn.create_channel().await?;
        channel
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await?;
        let _ = channel.close(200, "done".into()).await;
        Ok(())
    }

    async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        properties: Properties,
    ) -> Result<PendingConfirm> {
        let confirm = self
            .publisher
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                to_basic(properties),
            )
            .await?;
        Ok(Box::pin(async move { Ok(confirm.await?.is_ack()) }))
    }

    async fn consume(&self, queue: &str, prefetch: u16, tag: &str) -> Result<Deliveries> {
        let channel = self.conn.create_channel().await?;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // The stream owns the channel: it lives as long as the consumer.
        Ok(consumer
            .map(move |item| {
                let _channel = &channel;
                item.map(to_raw).map_err(Error::from)
            })
            .boxed())
    }

    async fn queue_len(&self, queue: &str) -> Result<u32> {
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

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        let channel = self.conn.create_channel().await?;
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await?;
        let _ = channel.close(200, "done".into()).await;
        Ok(())
    }

    fn blocked(&self) -> bool {
        self.conn.status().blocked()
    }

    /// RabbitMQ tells a connection it is blocked (a memory or disk alarm) only once the
    /// connection publishes, so this probes: an empty, unroutable message (dropped by
    /// the broker, confirmed at once when it takes publishes). A probe still
    /// unconfirmed is waited on again rather than joined by another.
    async fn takes_publishes(&self, within: Duration) -> Result<bool> {
        if self.blocked() {
            return Ok(false);
        }
        let mut probe = self.probe.lock().await;
        let pending = match probe.as_mut() {
            Some(pending) => pending,
            None => {
                let confirm = self
                    .publisher
                    .basic_publish(
                        "".into(),
                        self.probe_key.as_str().into(),
                        BasicPublishOptions::default(),
                        b"",
                        BasicProperties::default(),
                    )
                    .await?;
                probe.insert(Box::pin(async move { confirm.await.is_ok_and(|c| c.is_ack()) }))
            }
        };
        match tokio::time::timeout(within, pending).await {
            Ok(acked) => {
                *probe = None;
                Ok(acked && !self.blocked())
            }
            Err(_) => Ok(false),
        }
    }

    /// lapin tells each consumer when the connection dies, but a process waiting on its
    /// consumers has been seen to miss it after RabbitMQ was killed (the error logged,
    /// no consumer woken, the forwarder idle for good): this watches the connection's
    /// error events, and its state once a second as the last guard.
    async fn lost(&self) -> String {
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

    /// Waits at most two seconds for RabbitMQ to agree (one that has just died never
    /// answers, and the caller wants to reconnect).
    async fn close(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.close(200, "bye".into())).await;
    }
}
