//! The end-to-end harness: [`Stack::start`] runs the real binaries (web-service,
//! forwarder, an endpoint with its managers and workers) against the real RabbitMQ and
//! Redis, in a namespace of their own, so tests run in parallel without meeting; with
//! `FERRY_TEST_BACKENDS=embedded`, against Ferry's embedded store and broker instead.
//!
//! Each part gets a log file in the stack's temp dir; `FERRY_TEST_KEEP_DIR=1` keeps the
//! dir (and prints where it is) for a look after the run. [`env`] says where the
//! services, binaries and Python are; [`payloads`] writes task payloads by hand.

mod env;
mod payloads;
pub mod rabbit;
pub mod redis;
pub mod tls;

use env::bin;
pub use env::free_port;
pub use env::{amqp_admin_url, amqp_url, bin_dir, embedded, python, redis_url, repo_root};
pub use payloads::{json_args, pack, python_source};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_proto::api::TaskDoc;
use ferry_proto::{EndpointId, TaskId};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The parts of a stack a test can stop or kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    WebService,
    Forwarder,
    Endpoint,
}

/// A running Ferry.
pub struct Stack {
    pub namespace: String,
    /// The RabbitMQ every part of this stack uses.
    pub amqp: String,
    /// The Redis every part of this stack uses.
    pub redis: String,
    pub url: String,
    pub token: String,
    pub endpoint_id: Option<EndpointId>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    web: Option<Child>,
    forwarder: Option<Child>,
    endpoint: Option<Child>,
    web_port: u16,
    /// Settings for parts started from now on, besides the stack's own.
    env: Vec<(String, String)>,
}

impl Stack {
    /// Web-service, forwarder, a user, and an endpoint named `ep` with one manager of two
    /// workers, running and registered.
    pub async fn start() -> Self {
        let mut stack = Self::start_without_endpoint().await;
        stack.start_endpoint().await;
        stack
    }

    /// Web-service, forwarder and a user; no endpoint yet.
    pub async fn start_without_endpoint() -> Self {
        Self::start_on(amqp_url()).await
    }

    /// Web-service, forwarder and a user, all on the RabbitMQ at `amqp`; no endpoint yet.
    pub async fn start_on(amqp: String) -> Self {
        Self::start_with(amqp, redis_url()).await
    }

    /// Web-service, forwarder and a user on the given RabbitMQ and Redis; no endpoint yet.
    pub async fn start_with(amqp: String, redis: String) -> Self {
        Self::start_configured(amqp, redis, &[]).await
    }

    /// Like [`Stack::start`], with these settings for every part (a webhook test
    /// allowing loopback receivers, say).
    pub async fn start_with_env(env: &[(&str, &str)]) -> Self {
        let mut stack = Self::start_configured(amqp_url(), redis_url(), env).await;
        stack.start_endpoint().await;
        stack
    }

    /// Web-service, forwarder and a user, every part with `env` besides the stack's own.
    /// On the shared RabbitMQ, endpoints get broker identities of their own (unless `env`
    /// names another `FERRY_AMQP_ADMIN_URL`).
    pub async fn start_configured(amqp: String, redis: String, env: &[(&str, &str)]) -> Self {
        let admin = amqp_admin_url();
        let mut env = env.to_vec();
        // (The embedded broker has no management API: one identity for all.)
        if amqp == amqp_url() && !embedded() && !env.iter().any(|(k, _)| *k == "FERRY_AMQP_ADMIN_URL") {
            env.push(("FERRY_AMQP_ADMIN_URL", admin.as_str()));
        }
        let env = env.as_slice();
        let namespace = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let dir = tempfile::Builder::new()
            .prefix("ferry-e2e-")
            .tempdir()
            .expect("temp dir");
        let web_port = free_port();
        // With a certificate the web-service serves HTTPS, for the name the test
        // certificate carries; clients trust the test CA.
        let setting = |key: &str| env.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned());
        let tls = setting("FERRY_TLS_CERT").is_some();
        let mut http = reqwest::Client::builder();
        if let Some(ca) = setting("FERRY_CA_FILE") {
            let pem = std::fs::read(ca).expect("the CA file");
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM CA"));
        }
        let mut stack = Self {
            url: if tls {
                format!("https://localhost:{web_port}")
            } else {
                format!("http://127.0.0.1:{web_port}")
            },
            namespace,
            amqp,
            redis,
            token: String::new(),
            endpoint_id: None,
            dir,
            http: http.build().expect("an HTTP client"),
            web: None,
            forwarder: None,
            endpoint: None,
            web_port,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        stack.start_part(Part::WebService);
        stack.start_part(Part::Forwarder);
        stack.wait_until_serving().await;
        let out = stack
            .command("ferry-web-service")
            .args(["create-user", "tester"])
            .stderr(Stdio::null())
            .output()
            .expect("create-user");
        assert!(out.status.success(), "create-user failed");
        stack.token = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();
        stack
    }

    /// Creates another user of this stack's service; their bearer token.
    pub fn create_user(&self, name: &str) -> String {
        self.admin(&["create-user", name])
    }

    /// Runs an operator's command of this stack's web-service as it is, failing or not.
    pub fn admin_output(&self, args: &[&str]) -> std::process::Output {
        self.command("ferry-web-service")
            .args(args)
            .output()
            .expect("ferry-web-service")
    }

    /// Runs an operator's command of this stack's web-service (`user ...`, `token ...`);
    /// what it printed, trimmed. It must succeed.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = self
            .command("ferry-web-service")
            .args(args)
            .output()
            .expect("ferry-web-service");
        assert!(
            out.status.success(),
            "ferry-web-service {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
    }

    /// A request with another user's token (or none), as an attacker would send it.
    pub fn request_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.url));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(bin(name));
        c.env("FERRY_NAMESPACE", &self.namespace)
            .env("FERRY_REDIS_URL", &self.redis)
            .env("FERRY_AMQP_URL", &self.amqp)
            .env("FERRY_LISTEN", format!("127.0.0.1:{}", self.web_port))
            .env("FERRY_QUEUE_EXPIRES_SECS", "300")
            .env("FERRY_RESULT_TTL_SECS", "900")
            .env("FERRY_HEARTBEAT_INTERVAL_MS", "500")
            .env("FERRY_HOME", self.dir.path().join("home"))
            .env("PYTHONPATH", repo_root().join("sdk"))
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null());
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Sets an environment variable for the parts started (or restarted) from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .expect("log file")
    }

    /// Starts (or restarts) a part.
    pub fn start_part(&mut self, part: Part) {
        let (name, args): (&str, Vec<&str>) = match part {
            Part::WebService => ("ferry-web-service", vec![]),
            Part::Forwarder => ("ferry-forwarder", vec![]),
            Part::Endpoint => ("ferry-endpoint", vec!["start", "ep", "--foreground"]),
        };
        let log = self.log(name);
        let child = self
            .command(name)
            .args(args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        *self.slot(part) = Some(child);
    }

    fn slot(&mut self, part: Part) -> &mut Option<Child> {
        match part {
            Part::WebService => &mut self.web,
            Part::Forwarder => &mut self.forwarder,
            Part::Endpoint => &mut self.endpoint,
        }
    }

    /// The pid of a running part.
    pub fn pid(&mut self, part: Part) -> Option<u32> {
        self.slot(part).as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self, part: Part) {
        if let Some(mut child) = self.slot(part).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit (SIGKILL after 20 s).
    pub fn stop(&mut self, part: Part) {
        if let Some(mut child) = self.slot(part).take() {
            stop_child(&mut child);
        }
    }

    async fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/v1/version", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the web-service did not come up; logs in {}",
            self.dir.path().display()
        );
    }

    /// Configures and starts endpoint `ep` in the foreground, and waits until its
    /// managers are connected.
    pub async fn start_endpoint(&mut self) {
        let out = self
            .command("ferry-endpoint")
            .args([
                "configure",
                "ep",
                "--url",
                &self.url,
                "--token",
                &self.token,
                "--force",
            ])
            .env("FERRY_PYTHON", python())
            .output()
            .expect("configure");
        assert!(
            out.status.success(),
            "configure failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.start_part(Part::Endpoint);
        self.wait_until_registered().await;
        // Online once a heartbeat reports a connected manager.
        let id = self.endpoint_id.unwrap();
        let this = &*self;
        this.wait_until(
            Duration::from_secs(60),
            "the endpoint has a manager",
            || async move {
                let doc: serde_json::Value = this.get(&format!("/v1/endpoints/{id}")).await.1;
                doc["status"] == "online" && doc["details"]["managers"].as_u64().unwrap_or(0) > 0
            },
        )
        .await;
    }

    /// Writes endpoint `ep`'s `config.toml` (the service's `url` and `token` first, then
    /// `rest`), starts it in the foreground and waits until it is registered (not for
    /// managers: a cluster endpoint may start with none).
    pub async fn start_endpoint_with(&mut self, rest: &str) {
        let dir = self.endpoint_dir();
        std::fs::create_dir_all(&dir).expect("endpoint dir");
        let text = format!("url = \"{}\"\ntoken = \"{}\"\n{rest}", self.url, self.token);
        std::fs::write(dir.join("config.toml"), text).expect("config.toml");
        self.start_part(Part::Endpoint);
        self.wait_until_registered().await;
    }

    /// The directory of endpoint `ep` (its config, blocks, logs).
    pub fn endpoint_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("home/endpoints/ep")
    }

    async fn wait_until_registered(&mut self) {
        let home = self.endpoint_dir();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(home.join("running.json")) {
                let v: serde_json::Value = serde_json::from_str(&text).expect("running.json");
                self.endpoint_id = Some(v["endpoint_id"].as_str().unwrap().parse().unwrap());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "endpoint did not start; logs in {}",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `ferry-endpoint ARGS` with this stack's settings; its exit status and
    /// output.
    pub fn endpoint_cli(&self, args: &[&str]) -> std::process::Output {
        self.command("ferry-endpoint")
            .args(args)
            .output()
            .expect("ferry-endpoint")
    }

    /// The provider's report the running endpoint last wrote (`blocks.json`).
    pub fn blocks(&self) -> serde_json::Value {
        std::fs::read(self.endpoint_dir().join("blocks.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Polls `condition` until it holds, panicking with `what` at the deadline.
    pub async fn wait_until<F, Fut>(&self, within: Duration, what: &str, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while !condition().await {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; logs in {}",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GET with the stack's token: status and JSON body.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> (u16, T) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON body"))
    }

    /// POST JSON with the stack's token: status and JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> (u16, T) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.expect("JSON body"))
    }

    /// Registers a function; returns its id.
    pub async fn register(&self, kind: &str, name: &str, code: &str) -> String {
        let (status, body): (u16, serde_json::Value) = self
            .post(
                "/v1/functions",
                &serde_json::json!({"name": name, "kind": kind, "code": code}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["function_id"].as_str().unwrap().to_owned()
    }

    /// The body of `POST /v1/sessions` for one session of `n` tasks of a Python
    /// `identity(x)` (registered here) on the stack's endpoint, task `i` taking `i`.
    pub async fn identity_session(&self, n: usize) -> serde_json::Value {
        let identity = self
            .register(
                "python",
                "identity",
                &python_source("identity", "def identity(x):\n    return x\n"),
            )
            .await;
        let tasks: Vec<serde_json::Value> = (0..n)
            .map(|i| serde_json::json!({"function_id": identity, "payload": json_args(&serde_json::json!([i]))}))
            .collect();
        serde_json::json!({"sessions": [{"endpoint_id": self.endpoint_id.expect("an endpoint"), "tasks": tasks}]})
    }

    /// Submits tasks `(function_id, payload)` to the stack's endpoint; returns their ids.
    pub async fn submit(&self, tasks: &[(&str, &str)]) -> Vec<TaskId> {
        let tasks: Vec<_> = tasks
            .iter()
            .map(|(f, p)| serde_json::json!({"function_id": f, "payload": p}))
            .collect();
        let body = serde_json::json!({"endpoint_id": self.endpoint_id.expect("an endpoint"), "tasks": tasks});
        let (status, answer): (u16, serde_json::Value) = self.post("/v1/tasks", &body).await;
        assert_eq!(status, 200, "{answer}");
        serde_json::from_value(answer["task_ids"].clone()).unwrap()
    }

    /// Submits tasks of one function, each with its payload (a JSON value, sent as its
    /// text) and `max_retries`; their ids, in order.
    pub async fn submit_each(
        &self,
        function: &str,
        payloads: &[serde_json::Value],
        max_retries: u32,
    ) -> Vec<TaskId> {
        let tasks: Vec<serde_json::Value> = payloads
            .iter()
            .map(|p| serde_json::json!({"function_id": function, "payload": p.to_string(), "max_retries": max_retries}))
            .collect();
        let body = serde_json::json!({"endpoint_id": self.endpoint_id.expect("an endpoint"), "tasks": tasks});
        let (status, answer): (u16, serde_json::Value) = self.post("/v1/tasks", &body).await;
        assert_eq!(status, 200, "{answer}");
        serde_json::from_value(answer["task_ids"].clone()).unwrap()
    }

    /// Submits one task, retrying while the service answers with an error (a backend
    /// restarting), until `within` has passed.
    pub async fn submit_until_accepted(&self, function: &str, payload: &str, within: Duration) -> TaskId {
        let deadline = Instant::now() + within;
        let body = serde_json::json!({
            "endpoint_id": self.endpoint_id.expect("an endpoint"),
            "tasks": [{"function_id": function, "payload": payload}],
        });
        loop {
            let (status, answer): (u16, serde_json::Value) = self.post("/v1/tasks", &body).await;
            if status == 200 {
                return answer["task_ids"][0]
                    .as_str()
                    .expect("an id")
                    .parse()
                    .expect("a task id");
            }
            assert!(Instant::now() < deadline, "submissions still fail: {answer}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn task(&self, id: TaskId) -> TaskDoc {
        let (status, doc) = self.get(&format!("/v1/tasks/{id}")).await;
        assert_eq!(status, 200);
        doc
    }

    /// Waits until the task is terminal and returns it.
    pub async fn wait_done(&self, id: TaskId, within: Duration) -> TaskDoc {
        let deadline = Instant::now() + within;
        loop {
            let doc = self.task(id).await;
            if !doc.pending {
                return doc;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} still {} after {within:?}; logs in {}",
                doc.status,
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The text of a part's log.
    pub fn log_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Stops everything and deletes the stack's keys and queues.
    pub async fn shutdown(mut self) {
        self.stop(Part::Endpoint);
        self.stop(Part::Forwarder);
        self.stop(Part::WebService);
        if let Ok(store) = ferry_store::Store::connect(&self.redis, &self.namespace, 0).await {
            let _ = store.delete_namespace().await;
        }
        if let Ok(broker) =
            ferry_broker::Broker::connect(&self.amqp, &self.namespace, Default::default()).await
        {
            let mut queues = vec![
                broker.submissions_queue(),
                broker.status_queue(),
                broker.results_queue(),
                broker.dead_queue(),
            ];
            if let Some(id) = self.endpoint_id {
                queues.push(broker.endpoint_queue(id));
                queues.push(broker.endpoint_control_queue(id));
                let _ = broker.delete_endpoint_exchange(id).await;
            }
            for q in queues {
                let _ = broker.delete_queue(&q).await;
            }
            broker.close().await;
        }
        self.remove_broker_users().await;
    }

    /// The setting every part of this stack is started with, if any.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Removes the broker users made for this stack's endpoints and users (named
    /// `<namespace>-...`), through the management API it was started with.
    async fn remove_broker_users(&self) {
        let Some(admin) = self.setting("FERRY_AMQP_ADMIN_URL") else {
            return;
        };
        let Ok(mut url) = reqwest::Url::parse(admin) else {
            return;
        };
        let (user, password) = (
            url.username().to_owned(),
            url.password().unwrap_or_default().to_owned(),
        );
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let base = url.as_str().trim_end_matches('/').to_owned();
        let http = reqwest::Client::new();
        let Ok(answer) = http
            .get(format!("{base}/api/users"))
            .basic_auth(&user, Some(&password))
            .send()
            .await
        else {
            return;
        };
        let users: Vec<serde_json::Value> = answer.json().await.unwrap_or_default();
        let prefix = format!("{}-", self.namespace);
        for name in users
            .iter()
            .filter_map(|u| u["name"].as_str())
            .filter(|n| n.starts_with(&prefix))
        {
            let _ = http
                .delete(format!("{base}/api/users/{name}"))
                .basic_auth(&user, Some(&password))
                .send()
                .await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for part in [Part::Endpoint, Part::Forwarder, Part::WebService] {
            if let Some(mut child) = self.slot(part).take() {
                stop_child(&mut child);
            }
        }
        // Its broker users go on every exit path (a thread of its own: this may run
        // inside the test's runtime).
        let this = &*self;
        std::thread::scope(|s| {
            s.spawn(|| {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(this.remove_broker_users());
                }
            });
        });
        // A failing test keeps its logs (the panic message names the directory).
        if std::thread::panicking() || std::env::var_os("FERRY_TEST_KEEP_DIR").is_some() {
            let path = self.dir.path().to_owned();
            eprintln!("keeping {}", path.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("temp dir"),
            ));
        }
    }
}

fn stop_child(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
