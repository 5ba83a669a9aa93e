//! Ferry's web-service: the HTTP API the SDK talks to.
//!
//! - [`access`]: who may use which function and endpoint.
//! - [`answer`]: answers about many tasks, written task by task as their large results
//!   are read in bounded groups.
//! - [`admin`]: the operator's `user` and `token` commands.
//! - [`broker_admin`]: broker identities for endpoints and result readers.
//! - [`api`]: one module per resource (version, functions, endpoints, tasks, batches).
//! - [`extract`]: the caller from its bearer token; JSON bodies with Ferry's errors.
//! - [`globus`]: the routes the unmodified Globus Compute SDK calls, on the same records.
//! - [`limits`]: per-user request rate and WebSockets (429 naming the limit).
//! - [`openapi`]: the OpenAPI description served at `/openapi.json`.
//! - [`memo`]: bounded in-memory maps of records that rarely change.
//! - [`submit`]: accepting tasks, shared by both APIs.
//! - [`ui`]: the dashboard at `/ui`, built into the binary.
//! - [`waiting`]: long polls, woken when the tasks they wait for finish.
//! - [`error`]: the closed set of error codes and their HTTP mapping.
//!
//! It owns no state of its own: every record is in Redis, every submission is published
//! (confirmed) to RabbitMQ before its ids are returned, so any number of replicas can run
//! behind a load balancer.

pub mod access;
pub mod admin;
pub mod answer;
pub mod api;
pub mod broker_admin;
pub mod error;
pub mod event_hub;
pub mod extract;
pub mod globus;
pub mod idempotency;
pub mod limits;
pub mod memo;
pub mod metrics;
pub mod openapi;
pub mod serve;
pub mod submit;
pub mod ui;
pub mod waiting;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use ferry_broker::Broker;
use ferry_proto::{EndpointId, FunctionId, UserId};
use ferry_store::{EndpointRecord, FunctionRecord, Principal, Store};

use crate::memo::Memo;
use tokio_util::sync::CancellationToken;

/// The web-service's settings (flags, `FERRY_*` environment variables, or the `--config`
/// file: `ferry_settings`).
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Redis, RabbitMQ, the namespace and what they share with the other service.
    #[command(flatten)]
    pub backends: ferry_settings::Backends,
    /// Address to listen on.
    #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// The broker URL handed to endpoints and to Globus Compute SDKs (defaults to
    /// --amqp-url).
    #[arg(long, env = "FERRY_PUBLIC_AMQP_URL")]
    pub public_amqp_url: Option<String>,
    /// A task group's result queue is deleted after this many seconds without a consumer.
    #[arg(long, env = "FERRY_TASK_GROUP_QUEUE_EXPIRES_SECS", default_value_t = 3 * 24 * 3600)]
    pub task_group_queue_expires_secs: u64,
    /// Largest accepted request body (a batch of many tasks, or a few large ones).
    #[arg(long, env = "FERRY_MAX_REQUEST_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Largest input of one task, and largest result; larger ones are refused (413) or
    /// fail their task.
    #[arg(long, env = "FERRY_MAX_PAYLOAD_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_payload_bytes: usize,
    /// The most bytes of large results (kept in the data plane) one answer about several
    /// tasks may carry; past it, 413 (ask for fewer at once). 0: no bound.
    #[arg(long, env = "FERRY_MAX_RESPONSE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_response_bytes: u64,
    /// Largest registered function (its serialized code, or a shell command); larger
    /// ones are refused with 413. The code travels with every task message.
    #[arg(long, env = "FERRY_MAX_FUNCTION_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_function_bytes: usize,
    /// Inputs and results above this size are kept under their own keys and travel by
    /// reference, so task records and AMQP messages stay small.
    #[arg(long, env = "FERRY_INLINE_LIMIT_BYTES", default_value_t = 64 * 1024)]
    pub inline_limit_bytes: usize,
    /// Most tasks in one submission.
    #[arg(long, env = "FERRY_MAX_BATCH", default_value_t = 100_000)]
    pub max_batch: usize,
    /// Retries granted to a task that does not ask for a number.
    #[arg(long, env = "FERRY_DEFAULT_MAX_RETRIES", default_value_t = 3)]
    pub default_max_retries: u32,
    /// The most retries a task may ask for: a task that crashes its worker is tried at
    /// most this many times more.
    #[arg(long, env = "FERRY_MAX_RETRIES_LIMIT", default_value_t = 10)]
    pub max_retries_limit: u32,
    /// How often endpoints are told to send heartbeats, in milliseconds.
    #[arg(long, env = "FERRY_HEARTBEAT_INTERVAL_MS", default_value_t = 2000)]
    pub heartbeat_interval_ms: u64,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "FERRY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "FERRY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Connections open at once; past that, new ones are closed at once.
    #[arg(long, env = "FERRY_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// A connection must send a whole request head within this many seconds, and an
    /// idle one is closed after as long without a request.
    #[arg(long, env = "FERRY_HEADER_TIMEOUT_SECS", default_value_t = 30)]
    pub header_timeout_secs: u64,
    /// Requests per second a user may make (to this web-service); past it, 429 with
    /// Retry-After. 0: no limit.
    #[arg(long, env = "FERRY_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u32,
    /// How many requests a user may make at once above the rate before being held to it.
    #[arg(long, env = "FERRY_RATE_BURST", default_value_t = 2000)]
    pub rate_burst: u32,
    /// WebSockets a user may hold open (on this web-service). 0: no limit.
    #[arg(long, env = "FERRY_MAX_WEBSOCKETS_PER_USER", default_value_t = 64)]
    pub max_websockets_per_user: usize,
    /// Unfinished tasks a user may have (all endpoints); a submission that would pass it
    /// is refused whole with 429. 0: no limit.
    #[arg(long, env = "FERRY_MAX_UNFINISHED_PER_USER", default_value_t = 1_000_000)]
    pub max_unfinished_per_user: u64,
    /// Unfinished tasks an endpoint may have (its queue and what it runs), from all users.
    /// 0: no limit.
    #[arg(long, env = "FERRY_MAX_UNFINISHED_PER_ENDPOINT", default_value_t = 1_000_000)]
    pub max_unfinished_per_endpoint: u64,
}

impl Config {
    /// The CA certificates of --ca-file, if set.
    pub fn ca_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.backends
            .ca_file
            .as_ref()
            .map(|path| {
                std::fs::read(path).map_err(|e| anyhow::anyhow!("FERRY_CA_FILE {}: {e}", path.display()))
            })
            .transpose()
    }

    /// The broker URL clients outside this machine should use.
    pub fn public_amqp_url(&self) -> String {
        self.public_amqp_url
            .clone()
            .unwrap_or_else(|| self.backends.amqp_url.clone())
    }

    pub fn broker_options(&self) -> anyhow::Result<ferry_broker::Options> {
        let ca_pem = match &self.backends.ca_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("FERRY_CA_FILE {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(ferry_broker::Options {
            queue_expires: (self.backends.queue_expires_secs > 0)
                .then(|| Duration::from_secs(self.backends.queue_expires_secs)),
            ca_pem,
            ..Default::default()
        })
    }

    /// The broker's management API, when --amqp-admin-url is set.
    pub fn broker_admin(&self) -> anyhow::Result<Option<broker_admin::BrokerAdmin>> {
        let Some(url) = &self.backends.amqp_admin_url else {
            return Ok(None);
        };
        let mut http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &self.backends.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| anyhow::anyhow!("FERRY_CA_FILE {}: {e}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow::anyhow!("FERRY_CA_FILE {}: {e}", path.display()))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Some(broker_admin::BrokerAdmin::new(
            url,
            &self.backends.amqp_url,
            http.build()?,
        )?))
    }
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    /// The current broker connection; replaced when RabbitMQ went away (see
    /// [`AppState::with_broker`]).
    broker: Arc<tokio::sync::RwLock<Broker>>,
    /// Function records (only their sharing changes: re-read after [`SHARING_TTL`]),
    /// with when they were read.
    functions: Memo<FunctionId, (Arc<FunctionRecord>, Instant)>,
    /// Requests waiting for tasks to finish.
    pub waiters: waiting::Waiters,
    /// Bearer tokens recently seen, with their user and when they were looked up.
    tokens: Memo<String, (Principal, Instant)>,
    /// Endpoint records, for who may send them tasks (re-read after [`SHARING_TTL`]).
    endpoints: Memo<EndpointId, (Arc<EndpointRecord>, Instant)>,
    /// How to connect to RabbitMQ again (the CA file read once, at start).
    broker_options: ferry_broker::Options,
    /// Makes broker identities, when they are on.
    pub broker_admin: Option<broker_admin::BrokerAdmin>,
    /// Users whose result-reading broker identity this process has made sure of.
    result_readers: Memo<UserId, ()>,
    /// Per-user request rate and WebSockets.
    pub limits: Arc<limits::Limits>,
    /// The one reader of session event streams, shared by every WebSocket.
    pub events: event_hub::EventHub,
    /// What `GET /metrics` serves.
    pub metrics: Arc<metrics::WebMetrics>,
}

/// How long one broker operation of a request (publishing a submission, a cancel)
/// may take before the request is answered 503.
pub const BROKER_DEADLINE: Duration = Duration::from_secs(10);

/// How long a token's principal is taken from memory before Redis is asked again: a
/// revoked or expired token stops working within this time.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);

/// How long a function's or endpoint's record is taken from memory for deciding who may
/// use it: a change of its sharing takes effect within this time on every web-service.
pub const SHARING_TTL: Duration = Duration::from_secs(5);

impl AppState {
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let ca = config.ca_pem()?;
        let store = Store::connect_tls(
            &config.backends.redis_url,
            ca.as_deref(),
            &config.backends.namespace,
            config.backends.result_ttl_secs,
        )
        .await?
        .with_response_budget(config.max_response_bytes);
        store.check_no_eviction().await?;
        let broker_options = config.broker_options()?;
        let broker_admin = config.broker_admin()?;
        let broker = Broker::connect(
            &config.backends.amqp_url,
            &config.backends.namespace,
            broker_options.clone(),
        )
        .await?;
        broker.declare_core().await?;
        Ok(Self {
            events: event_hub::EventHub::start(store.clone()),
            store,
            broker: Arc::new(tokio::sync::RwLock::new(broker)),
            functions: Memo::default(),
            waiters: waiting::Waiters::default(),
            tokens: Memo::default(),
            endpoints: Memo::default(),
            broker_options,
            broker_admin,
            result_readers: Memo::default(),
            limits: Arc::new(limits::Limits::new(
                config.rate_limit,
                config.rate_burst,
                config.max_websockets_per_user,
            )),
            config: Arc::new(config),
            metrics: Arc::default(),
        })
    }

    /// The current broker connection.
    pub async fn broker(&self) -> Broker {
        self.broker.read().await.clone()
    }

    /// Runs `op` on the broker within [`BROKER_DEADLINE`]; if it fails, connects again
    /// once and retries, so a RabbitMQ restart costs the first caller a reconnect, not an
    /// error. A broker that blocks publishers (a memory or disk alarm), refuses the
    /// message (a nack: a queue at its `max-length`) or does not answer within the
    /// deadline is an error at once ([`ferry_broker::Error::is_backpressure`]): a
    /// submission answers 503 with `Retry-After` rather than hang (a cancel keeps its
    /// message in Redis for the forwarder to publish, see `api/cancel.rs`).
    pub async fn with_broker<T, F, Fut>(&self, op: F) -> Result<T, ferry_broker::Error>
    where
        F: Fn(Broker) -> Fut,
        Fut: std::future::Future<Output = Result<T, ferry_broker::Error>>,
    {
        let op = &op;
        let within = |broker: Broker| async move {
            if broker.blocked() {
                return Err(ferry_broker::Error::Blocked);
            }
            tokio::time::timeout(BROKER_DEADLINE, op(broker))
                .await
                .unwrap_or(Err(ferry_broker::Error::Deadline(BROKER_DEADLINE)))
        };
        let current = self.broker().await;
        match within(current.clone()).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_backpressure() => {
                tracing::warn!(error = %e, "the broker is not taking messages; answering 503");
                Err(e)
            }
            Err(e) => {
                tracing::warn!(error = %e, "broker operation failed; reconnecting");
                let fresh = self.reconnect(&current).await?;
                within(fresh).await
            }
        }
    }

    async fn reconnect(&self, failed: &Broker) -> Result<Broker, ferry_broker::Error> {
        let mut slot = self.broker.write().await;
        if !slot.same_connection(failed) {
            // Another request reconnected already.
            return Ok(slot.clone());
        }
        let fresh = Broker::connect(
            &self.config.backends.amqp_url,
            &self.config.backends.namespace,
            self.broker_options.clone(),
        )
        .await?;
        fresh.declare_core().await?;
        failed.close().await;
        *slot = fresh.clone();
        Ok(fresh)
    }

    /// A function record, from memory when it was read less than [`SHARING_TTL`] ago.
    pub async fn function(&self, id: FunctionId) -> Result<Option<Arc<FunctionRecord>>, ferry_store::Error> {
        if let Some((f, at)) = self.functions.get(&id)
            && at.elapsed() < SHARING_TTL
        {
            return Ok(Some(f));
        }
        let Some(record) = self.store.get_function(id).await? else {
            self.functions.forget(&id);
            return Ok(None);
        };
        let record = Arc::new(record);
        self.functions.put(id, (record.clone(), Instant::now()));
        Ok(Some(record))
    }

    /// Forgets a function's record here (its sharing changed).
    pub fn forget_function(&self, id: FunctionId) {
        self.functions.forget(&id);
    }
}

impl AppState {
    /// Who a bearer token acts for; from memory when it was looked up less than
    /// [`TOKEN_CACHE_TTL`] ago (unknown tokens are always looked up), so a revoked or
    /// expired token stops working within that time.
    pub async fn principal_for_token(&self, token: &str) -> Result<Option<Principal>, ferry_store::Error> {
        if let Some((principal, at)) = self.tokens.get(token)
            && at.elapsed() < TOKEN_CACHE_TTL
        {
            return Ok(Some(principal));
        }
        let principal = self.store.principal_for_token(token).await?;
        match principal {
            Some(p) => self.tokens.put(token.to_owned(), (p, Instant::now())),
            None => self.tokens.forget(token),
        }
        Ok(principal)
    }

    /// The broker URL `user`'s Globus Compute SDK reads its results with: with broker
    /// identities, as a user that may read only `user`'s task-group queues.
    pub async fn result_reader_url(&self, user: UserId) -> Result<String, error::ApiError> {
        let url = self.config.public_amqp_url();
        let Some(admin) = &self.broker_admin else {
            return Ok(url);
        };
        let password = self.store.result_reader_password(user).await?;
        let name = ferry_broker::result_reader_user(&self.config.backends.namespace, user);
        if self.result_readers.get(&user).is_none() {
            let prefix = self.broker().await.task_group_prefix(user);
            admin
                .result_reader(&name, &password, &prefix)
                .await
                .map_err(|e| error::ApiError::unavailable("the broker's management API is unavailable", e))?;
            self.result_readers.put(user, ());
        }
        Ok(broker_admin::with_credentials(&url, &name, &password))
    }

    /// Forgets an endpoint's record here (deleted, or registered again: who may use it
    /// may have changed). Another web-service forgets it within [`SHARING_TTL`].
    pub fn forget_endpoint(&self, id: EndpointId) {
        self.endpoints.forget(&id);
    }

    /// An endpoint's record, from memory when it was read less than [`SHARING_TTL`]
    /// ago (its load may be older: use it for who may send tasks, not for status).
    pub async fn endpoint(&self, id: EndpointId) -> Result<Option<Arc<EndpointRecord>>, ferry_store::Error> {
        if let Some((e, at)) = self.endpoints.get(&id)
            && at.elapsed() < SHARING_TTL
        {
            return Ok(Some(e));
        }
        let Some(record) = self.store.get_endpoint(id).await? else {
            self.endpoints.forget(&id);
            return Ok(None);
        };
        let record = Arc::new(record);
        self.endpoints.put(id, (record.clone(), Instant::now()));
        Ok(Some(record))
    }
}

/// The router with every route.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_request_bytes;
    api::routes()
        .merge(globus::routes())
        .merge(ui::routes())
        // Every answer is JSON in one shape, an unknown route and a wrong method too.
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            error::ApiError::new(
                error::Code::MethodNotAllowed,
                format!("{method} is not allowed on {}", uri.path()),
            )
        })
        .route("/metrics", axum::routing::get(metrics::serve))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves until `shutdown` is cancelled, then finishes in-flight requests (HTTPS when
/// the config has a certificate).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listen = config.listen;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(serve::tls_acceptor(cert, key)?),
        _ => None,
    };
    let bounds = serve::Bounds {
        max_connections: config.max_connections.max(1),
        header_timeout: Duration::from_secs(config.header_timeout_secs.max(1)),
    };
    let state = AppState::connect(config).await?;
    let listening = tokio::spawn(state.waiters.clone().listen(state.store.clone()));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, https = tls.is_some(), "web-service listening");
    serve::serve(listener, app(state.clone()), tls, bounds, shutdown).await?;
    listening.abort();
    state.broker().await.close().await;
    Ok(())
}
