//! Ferry's broker: the queue names, confirmed publishing, consuming with manual acks,
//! and dead letters, over RabbitMQ or the embedded broker of `ferry dev`. No `lapin`
//! type leaves this crate.
//!
//! Modules:
//! - this file: [`Broker`], the part both transports share (queue names, an endpoint's
//!   routes and what it may publish to, [`Error`]);
//! - `delivery`: [`Consumer`], [`Delivery`] and [`Confirm`];
//! - `transport`: the trait a broker implements for [`Broker`];
//! - `amqp`: RabbitMQ over lapin (`amqp://`, `amqps://`);
//! - [`embedded`]: a small broker in memory, its [`embedded::Server`] and the client of
//!   its TCP protocol (`ferry-mq://`), so Ferry runs with no RabbitMQ installed.
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
//! carries its user name in `user_id`, which the broker checks. A [`Broker`] connected
//! with [`Options::endpoint`] set does this by itself, and refuses ([`Error::NotAllowed`])
//! a publish to any other queue.
//!
//! Every message is persistent (held in memory only by the embedded broker); publishes
//! wait for the broker's confirm (or hand back a [`Confirm`] to wait on).

mod amqp;
mod delivery;
pub mod embedded;
mod overlay;
mod transport;

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferry_proto::{EndpointId, TaskId, UserId};

pub use delivery::{Confirm, Consumer, Delivery};
use transport::{PendingConfirm, Properties, QueueSpec, Transport};

/// What can go wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The embedded broker refused a connection or an operation, or the connection to
    /// it failed.
    #[error("embedded broker: {0}")]
    Embedded(String),
    /// The broker URL names no transport Ferry knows.
    #[error("unsupported broker URL scheme {0:?}: expected amqp://, amqps:// or ferry-mq://")]
    Scheme(String),
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
}

/// The overflow behaviour Ferry declares its endpoint queues with.
pub const ENDPOINT_QUEUE_OVERFLOW: &str = "reject-publish";

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

/// The queues this process keeps in memory, once [`keep_in_process`] named them.
struct InProcessQueues {
    broker: embedded::InProcess,
    names: std::sync::Mutex<Arc<HashSet<String>>>,
}

static IN_PROCESS: OnceLock<InProcessQueues> = OnceLock::new();

/// From now on every [`Broker`] this process connects keeps the queues `names` (full
/// names, such as `<ns>.submissions`) in this process, in an embedded broker whose
/// queues it works on directly (no frame encoded), and everything else on the broker its URL names: what
/// `ferry-server` does so that a submission goes from its web-service to its forwarder
/// in memory. The queues' messages are lost with the process (a submission's tasks are
/// written `received` before it is handed over, and the sweeper submits again what a
/// crash stranded). The first call starts the in-process broker (on a thread of its
/// own); a later call adds queues for the brokers connected after it.
pub fn keep_in_process(names: impl IntoIterator<Item = String>) -> Result<()> {
    let kept = match IN_PROCESS.get() {
        Some(kept) => kept,
        None => {
            let mut broker = Some(
                embedded::InProcess::start()
                    .map_err(|e| Error::Embedded(format!("cannot start the in-process broker: {e}")))?,
            );
            let kept = IN_PROCESS.get_or_init(|| InProcessQueues {
                broker: broker.take().expect("not taken yet"),
                names: std::sync::Mutex::default(),
            });
            // Another thread started one first: this one goes.
            if let Some(spare) = broker {
                spare.abandon();
            }
            kept
        }
    };
    let mut all = kept
        .names
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut more = HashSet::clone(&all);
    more.extend(names);
    *all = Arc::new(more);
    Ok(())
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
    amqp::url_parts(url)
}

/// One connection to the broker. Cheap to clone.
///
/// ```no_run
/// # async fn run() -> ferry_broker::Result<()> {
/// let broker = ferry_broker::Broker::connect(
///     "amqp://guest:guest@127.0.0.1:5672/%2f",
///     "ferry",
///     Default::default(),
/// )
/// .await?;
/// broker.declare_core().await?;
/// broker.publish(&broker.submissions_queue(), b"hello").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Broker {
    transport: Arc<dyn Transport>,
    ns: String,
    options: Options,
    /// The user name the connection logged in with.
    user: String,
}

impl Broker {
    /// Connects to `url`, choosing the transport by its scheme:
    /// - `amqp://user:pass@host:port/vhost` or `amqps://` (over TLS: the broker's
    ///   certificate is verified against the system's roots and `options.ca_pem`):
    ///   RabbitMQ;
    /// - `ferry-mq://[user[:password]@]host:port`: the embedded broker
    ///   ([`embedded::Server`]).
    ///
    /// In a process that called [`keep_in_process`], the queues it named stay in the
    /// process whatever the URL.
    pub async fn connect(url: &str, namespace: &str, options: Options) -> Result<Self> {
        let (transport, user): (Arc<dyn Transport>, String) = match url.split_once("://") {
            Some(("amqp" | "amqps", _)) => {
                let user = url_parts(url).map(|(user, _)| user).unwrap_or_default();
                let amqp = amqp::Amqp::connect(url, options.ca_pem.clone(), namespace).await?;
                (Arc::new(amqp), user)
            }
            Some((embedded::SCHEME, _)) => {
                let (client, user) = embedded::Client::connect(url).await?;
                (Arc::new(client), user)
            }
            Some((scheme, _)) => return Err(Error::Scheme(scheme.to_owned())),
            None => return Err(Error::Scheme(String::new())),
        };
        let transport: Arc<dyn Transport> = match IN_PROCESS.get() {
            Some(kept) => {
                let names = kept
                    .names
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let local = embedded::Client::in_process(&kept.broker, &user);
                Arc::new(overlay::Overlay::new(local, transport, names))
            }
            None => transport,
        };
        Ok(Self {
            transport,
            ns: namespace.to_owned(),
            options,
            user,
        })
    }

    /// Whether the broker blocks this connection's publishers now (RabbitMQ's
    /// `connection.blocked`, sent on a memory or disk alarm): a publish would wait until
    /// the alarm clears. The embedded broker never blocks.
    pub fn blocked(&self) -> bool {
        self.transport.blocked()
    }

    /// Whether the broker takes a publish now: false when it blocks this connection, or
    /// does not confirm a probe within `within`. RabbitMQ tells a connection it is
    /// blocked (a memory or disk alarm) only once the connection publishes, so a process
    /// that may not have published lately probes.
    pub async fn takes_publishes(&self, within: Duration) -> Result<bool> {
        self.transport.takes_publishes(within).await
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
        std::ptr::addr_eq(Arc::as_ptr(&self.transport), Arc::as_ptr(&other.transport))
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
        let spec = QueueSpec {
            expires: Some(expires),
            ..QueueSpec::default()
        };
        self.transport
            .declare_queue(&self.task_group_queue(owner, group), &spec)
            .await
    }

    /// Publishes messages with a `timestamp` property (Unix seconds) to their queues,
    /// then waits for every confirm.
    pub async fn publish_stamped(&self, messages: &[(String, Vec<u8>)], timestamp: u64) -> Result<()> {
        let mut confirms = Vec::with_capacity(messages.len());
        for (queue, body) in messages {
            let properties = Properties {
                timestamp: Some(timestamp),
                ..Properties::default()
            };
            confirms.push((queue, self.send(queue, body, properties).await?));
        }
        for (queue, confirm) in confirms {
            if !confirm.await? {
                return Err(Error::Nacked { queue: queue.clone() });
            }
        }
        Ok(())
    }

    /// Declares the queues the web-service and forwarder share (idempotent).
    pub async fn declare_core(&self) -> Result<()> {
        self.transport
            .declare_queue(&self.dead_queue(), &self.queue_spec(false))
            .await?;
        for q in [
            self.submissions_queue(),
            self.status_queue(),
            self.results_queue(),
        ] {
            self.transport.declare_queue(&q, &self.queue_spec(true)).await?;
        }
        Ok(())
    }

    /// Declares an endpoint's task and control queues and its exchange with its routes
    /// (idempotent).
    ///
    /// The queues get `x-overflow: reject-publish` ([`ENDPOINT_QUEUE_OVERFLOW`]). On
    /// RabbitMQ, one that exists without it (declared by an older version) cannot be
    /// declared again with it (`PRECONDITION_FAILED`); it is then checked passively and
    /// used as it is, with a warning (once per queue and process) naming the queue and
    /// the fix.
    pub async fn declare_endpoint(&self, endpoint: EndpointId) -> Result<()> {
        let spec = QueueSpec {
            reject_overflow: true,
            ..self.queue_spec(true)
        };
        for queue in [
            self.endpoint_queue(endpoint),
            self.endpoint_control_queue(endpoint),
        ] {
            self.transport.declare_queue(&queue, &spec).await?;
        }
        let routes = [
            (self.results_queue(), ROUTE_RESULTS),
            (self.status_queue(), ROUTE_STATUS),
            (self.dead_queue(), ROUTE_DEAD),
            (self.endpoint_queue(endpoint), ROUTE_RETRY),
        ];
        self.transport
            .declare_exchange(&self.endpoint_exchange(endpoint), &routes)
            .await
    }

    /// Deletes an endpoint's exchange (its queues go with `delete_queue`).
    pub async fn delete_endpoint_exchange(&self, endpoint: EndpointId) -> Result<()> {
        self.transport
            .delete_exchange(&self.endpoint_exchange(endpoint))
            .await
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

    /// How Ferry declares its queues: dead letters to the dead queue (all but the dead
    /// queue itself), and [`Options::queue_expires`].
    fn queue_spec(&self, dead_letters: bool) -> QueueSpec {
        QueueSpec {
            dead_letter_to: dead_letters.then(|| self.dead_queue()),
            expires: self.options.queue_expires,
            reject_overflow: false,
        }
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
            if !confirm.await? {
                return Err(Error::Nacked {
                    queue: queue.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Publishes one persistent message to `queue` and returns at once: the returned
    /// [`Confirm`] resolves when the broker has it. Several may be in flight; on one
    /// connection they resolve in the order they were published.
    pub async fn publish_pending(&self, queue: &str, body: &[u8]) -> Result<Confirm> {
        let pending = self.send(queue, body, Properties::default()).await?;
        Ok(Confirm::new(pending, queue.to_owned()))
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
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(%queue, "the broker refused (nacked) a message"),
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
    ) -> Result<Vec<PendingConfirm>> {
        let mut confirms = Vec::new();
        for body in bodies {
            confirms.push(self.send(queue, body, Properties::default()).await?);
        }
        Ok(confirms)
    }

    /// Sends one persistent message toward `queue`: directly, or through the endpoint's
    /// exchange (stamped with the user name, which the broker checks) for an endpoint's
    /// connection.
    async fn send(&self, queue: &str, body: &[u8], mut properties: Properties) -> Result<PendingConfirm> {
        match self.route(queue)? {
            Some((exchange, key)) => {
                properties.user_id = Some(self.user.clone());
                self.transport.publish(&exchange, key, body, properties).await
            }
            None => self.transport.publish("", queue, body, properties).await,
        }
    }

    /// Starts consuming `queue`, at most `prefetch` unacked messages at a time (on a
    /// channel of its own with RabbitMQ).
    pub async fn consume(&self, queue: &str, prefetch: u16, tag: &str) -> Result<Consumer> {
        let deliveries = self.transport.consume(queue, prefetch, tag).await?;
        Ok(Consumer::new(deliveries, self.clone()))
    }

    /// Deletes a queue (test cleanup); a missing queue is not an error.
    pub async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.transport.delete_queue(queue).await
    }

    /// How many messages wait in `queue` (declares it passively: an error when it does
    /// not exist).
    pub async fn queue_len(&self, queue: &str) -> Result<u32> {
        self.transport.queue_len(queue).await
    }

    /// Resolves, with what happened, once the connection has failed or closed. Whoever
    /// holds the connection for its whole life selects on this too, not only on its
    /// consumers.
    pub async fn lost(&self) -> String {
        self.transport.lost().await
    }

    /// Closes the connection, waiting at most two seconds for the broker to agree (one
    /// that has just died never answers, and the caller wants to reconnect). The
    /// messages its consumers hold unacked go back to their queues.
    pub async fn close(&self) {
        self.transport.close().await
    }
}
