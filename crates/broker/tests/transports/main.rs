//! One suite, three brokers: every case in `cases` runs against RabbitMQ
//! (`FERRY_AMQP_URL`, by default `amqp://guest:guest@127.0.0.1:5672/%2f`) in `amqp::`,
//! against an embedded [`Server`] started for the test in `embedded::`, and against
//! RabbitMQ with the namespace's submissions queue kept in this process
//! ([`ferry_broker::keep_in_process`], as `ferry-server` does) in `in_process::`, each in
//! a namespace of its own. `server` tests the embedded server alone (bad frames,
//! passwords).

mod cases;
mod server;

use std::time::Duration;

use ferry_broker::embedded::{Server, ServerOptions};
use ferry_broker::{Broker, Consumer, Delivery, Options};
use ferry_proto::EndpointId;

/// Which broker a test runs against.
pub(crate) struct Env {
    /// `None` for RabbitMQ.
    server: Option<Server>,
    amqp_url: String,
    pub(crate) namespace: String,
}

impl Env {
    pub(crate) async fn amqp() -> Self {
        Self {
            server: None,
            amqp_url: std::env::var("FERRY_AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
            namespace: namespace(),
        }
    }

    /// RabbitMQ, but the submissions queue of its namespace is kept in this process.
    pub(crate) async fn in_process() -> Self {
        let env = Self::amqp().await;
        ferry_broker::keep_in_process([format!("{}.submissions", env.namespace)])
            .expect("the in-process broker starts");
        env
    }

    pub(crate) async fn embedded() -> Self {
        let server = Server::start(
            "127.0.0.1:0".parse().expect("an address"),
            ServerOptions {
                password: Some("dev-secret".to_owned()),
            },
        )
        .await
        .expect("the embedded broker starts");
        Self {
            server: Some(server),
            amqp_url: String::new(),
            namespace: namespace(),
        }
    }

    /// The URL to connect as `user` (RabbitMQ: always its guest).
    fn url(&self, user: &str) -> String {
        match &self.server {
            Some(server) => server.url(user),
            None => self.amqp_url.clone(),
        }
    }

    /// A connection as the web-service or forwarder makes it, its queues expiring after
    /// a minute unused so an aborted run cleans up after itself.
    pub(crate) async fn broker(&self) -> Broker {
        self.connect("service", None).await
    }

    /// A connection as endpoint `endpoint` makes it.
    pub(crate) async fn endpoint_broker(&self, endpoint: EndpointId) -> Broker {
        self.connect("endpoint", Some(endpoint)).await
    }

    async fn connect(&self, user: &str, endpoint: Option<EndpointId>) -> Broker {
        let options = Options {
            queue_expires: Some(Duration::from_secs(60)),
            endpoint,
            ..Options::default()
        };
        Broker::connect(&self.url(user), &self.namespace, options)
            .await
            .expect("the broker takes the connection")
    }

    pub(crate) async fn finish(self) {
        if let Some(server) = self.server {
            server.shutdown().await;
        }
    }
}

fn namespace() -> String {
    format!("ferry-broker-test-{}", uuid::Uuid::new_v4().simple())
}

/// How long a test waits for something that should come: generous, since a loaded
/// machine (the whole suite at once on two cores) once took more than 5 s to deliver.
pub(crate) const COMES_WITHIN: Duration = Duration::from_secs(20);

/// How long a test waits to see that nothing comes.
pub(crate) const QUIET_FOR: Duration = Duration::from_millis(300);

/// The next delivery, which must come soon.
pub(crate) async fn next(consumer: &mut Consumer) -> Delivery {
    tokio::time::timeout(COMES_WITHIN, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("the consumer goes on")
        .expect("a good delivery")
}

/// True when no delivery comes for a while.
pub(crate) async fn nothing_comes(consumer: &mut Consumer) -> bool {
    tokio::time::timeout(QUIET_FOR, consumer.next()).await.is_err()
}

/// Runs a case, failing it after a minute.
pub(crate) async fn within_a_minute(
    case: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(60), case)
        .await
        .map_err(|_| anyhow::anyhow!("the case did not finish within a minute"))?
}

/// Every case in `cases`, once per broker.
macro_rules! on_every_broker {
    ($($case:ident),* $(,)?) => {
        mod amqp {
            $(
                #[tokio::test]
                async fn $case() -> anyhow::Result<()> {
                    let env = crate::Env::amqp().await;
                    let outcome = crate::within_a_minute(crate::cases::$case(&env)).await;
                    env.finish().await;
                    outcome
                }
            )*
        }
        mod in_process {
            $(
                #[tokio::test]
                async fn $case() -> anyhow::Result<()> {
                    let env = crate::Env::in_process().await;
                    let outcome = crate::within_a_minute(crate::cases::$case(&env)).await;
                    env.finish().await;
                    outcome
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test]
                async fn $case() -> anyhow::Result<()> {
                    let env = crate::Env::embedded().await;
                    let outcome = crate::within_a_minute(crate::cases::$case(&env)).await;
                    env.finish().await;
                    outcome
                }
            )*
        }
    };
}

on_every_broker!(
    a_published_message_is_consumed,
    a_consumer_holds_at_most_its_prefetch_unacked,
    an_acked_message_is_gone,
    a_requeued_message_comes_back_redelivered,
    a_dead_letter_lands_in_the_dead_queue_with_its_reason,
    unacked_messages_return_redelivered_when_the_connection_closes,
    two_consumers_share_a_queue,
    queue_len_counts_waiting_messages,
    a_deleted_queue_is_gone,
    an_endpoint_publishes_only_to_its_routes,
    user_id_is_the_connections_user,
    a_stamped_message_carries_its_timestamp,
    next_batch_takes_what_has_arrived,
    publishes_are_confirmed,
    cancels_reach_the_endpoints_control_queue,
    a_deleted_endpoint_exchange_takes_no_publishes,
    an_unused_queue_with_an_expiry_goes_away,
    a_closed_connection_is_lost,
);

/// With its submissions queue kept in this process, a namespace's submissions never
/// reach RabbitMQ (asked directly, not through a `Broker`): no such queue there, while
/// its other queues are.
#[tokio::test]
async fn kept_submissions_never_reach_rabbitmq() -> anyhow::Result<()> {
    let env = Env::in_process().await;
    let broker = env.broker().await;
    broker.declare_core().await?;
    broker.publish(&broker.submissions_queue(), b"in memory").await?;
    assert_eq!(broker.queue_len(&broker.submissions_queue()).await?, 1);

    let rabbit = lapin::Connection::connect(&env.amqp_url, lapin::ConnectionProperties::default()).await?;
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declare = |queue: String| {
        let rabbit = &rabbit;
        async move {
            let channel = rabbit.create_channel().await?;
            channel
                .queue_declare(queue.as_str().into(), passive, Default::default())
                .await
                .map(|q| q.message_count())
        }
    };
    assert!(
        declare(broker.submissions_queue()).await.is_err(),
        "RabbitMQ has no submissions queue for the namespace"
    );
    assert_eq!(
        declare(broker.status_queue()).await?,
        0,
        "its other queues are there"
    );
    let _ = rabbit.close(0, "done".into()).await;
    broker.delete_queue(&broker.status_queue()).await?;
    broker.delete_queue(&broker.results_queue()).await?;
    broker.delete_queue(&broker.dead_queue()).await?;
    env.finish().await;
    Ok(())
}
