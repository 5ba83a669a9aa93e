//! A private RabbitMQ node for tests that kill the broker or need another listener (TLS,
//! plugins): on ports of its own, beside the shared node, removed on every exit path
//! (see shared/recipes/second-rabbitmq-node.md).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::env::free_port;

/// A private RabbitMQ node (see shared/recipes/second-rabbitmq-node.md).
pub struct Rabbit {
    dir: tempfile::TempDir,
    node: String,
    pub port: u16,
    dist: u16,
    tls: bool,
}

/// What a private node listens with.
#[derive(Debug, Clone, Default)]
pub struct RabbitOptions {
    /// Serve AMQP over TLS only (`amqps://`), with this certificate, key and CA (PEM
    /// files the `rabbitmq` user can read).
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// Plugins to enable (`rabbitmq_management`...).
    pub plugins: Vec<String>,
}

impl Rabbit {
    /// A plain node.
    pub fn new() -> Self {
        Self::with(RabbitOptions::default())
    }

    /// A node with these options.
    pub fn with(options: RabbitOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ferry-rabbit-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let dist = free_port();
        let node = format!("ferrytest-{}-{port}@localhost", std::process::id());
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(
            dir.path().join("plugins"),
            format!("[{}].\n", options.plugins.join(",")),
        )
        .unwrap();
        let conf = match &options.tls {
            None => format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
            Some((cert, key, ca)) => {
                // Copies the rabbitmq user can read, in the node's own directory.
                for (from, to) in [(cert, "cert.pem"), (key, "key.pem"), (ca, "ca.pem")] {
                    std::fs::copy(from, dir.path().join(to)).unwrap();
                }
                let d = dir.path().display();
                format!(
                    "listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{port}\n\
                     ssl_options.cacertfile = {d}/ca.pem\nssl_options.certfile = {d}/cert.pem\n\
                     ssl_options.keyfile = {d}/key.pem\nssl_options.verify = verify_none\n\
                     ssl_options.fail_if_no_peer_cert = false\n"
                )
            }
        };
        let conf = if options.plugins.iter().any(|p| p == "rabbitmq_management") {
            format!(
                "{conf}management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {}\n",
                free_port()
            )
        } else {
            conf
        };
        std::fs::write(dir.path().join("rabbitmq.conf"), conf).unwrap();
        let status = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "chown to the rabbitmq user failed");
        let rabbit = Self {
            dir,
            node,
            port,
            dist,
            tls: options.tls.is_some(),
        };
        rabbit.start();
        rabbit
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts (or starts again) the node and waits for its listener.
    pub fn start(&self) {
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_DIST_PORT", self.dist.to_string())
            .env("RABBITMQ_CONFIG_FILE", self.path("rabbitmq"))
            .env("RABBITMQ_MNESIA_BASE", self.path("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.path("log"))
            .env("RABBITMQ_PID_FILE", self.path("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.path("plugins"))
            .status()
            .expect("rabbitmq-server must be installed");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(90);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the private RabbitMQ did not start; logs in {}",
                self.path("log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Its URL, as `guest` (`amqps://localhost` when it serves TLS, matching the test
    /// certificate's name).
    pub fn url(&self) -> String {
        if self.tls {
            format!("amqps://guest:guest@localhost:{}/%2f", self.port)
        } else {
            format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
        }
    }

    /// Runs `rabbitmqctl` against this node (`set_vm_memory_high_watermark 0.0000001`
    /// raises a memory alarm); panics when it fails.
    pub fn ctl(&self, args: &[&str]) {
        let out = Command::new("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .output()
            .expect("rabbitmqctl must be installed");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// SIGKILL, as a crash would; waits until its listener is gone.
    pub fn kill(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.path("pid")) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Rabbit {
    /// Every process of this node, told apart by the RABBITMQ_NODENAME in its
    /// environment (the node name is not on the Erlang VM's command line).
    fn node_pids(&self) -> Vec<u32> {
        let mark = format!("RABBITMQ_NODENAME={}", self.node).into_bytes();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != std::process::id())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|env| env.split(|b| *b == 0).any(|var| var == mark.as_slice()))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        self.kill();
        for pid in self.node_pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

impl Default for Rabbit {
    fn default() -> Self {
        Self::new()
    }
}
