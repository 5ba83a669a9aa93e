//! RabbitMQ dies (kill -9) and comes back: every part reconnects by itself, tasks that
//! were in flight finish, and new submissions work. The test runs its own RabbitMQ node
//! on other ports (the shared one stays up) and removes it on every exit path.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::Stack;

/// A private RabbitMQ node (see shared/recipes/second-rabbitmq-node.md).
struct Rabbit {
    dir: tempfile::TempDir,
    node: String,
    port: u16,
    dist: u16,
}

impl Rabbit {
    fn new() -> Self {
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
        std::fs::write(dir.path().join("plugins"), "[].\n").unwrap();
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )
        .unwrap();
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
        };
        rabbit.start();
        rabbit
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start(&self) {
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

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn kill(&self) {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn every_part_reconnects_after_rabbitmq_is_killed_and_restarted() {
    let rabbit = Rabbit::new();
    let mut stack = Stack::start_on(rabbit.url()).await;
    stack.start_endpoint().await;
    let quick = stack.register("shell", "n", "echo {n}").await;
    let slow = stack.register("shell", "slow", "sleep 1; echo {n}").await;
    let before = stack.submit(&[(&quick, r#"{"n": 1}"#)]).await;
    assert_eq!(
        stack.wait_done(before[0], Duration::from_secs(60)).await.status,
        "success"
    );

    // Tasks in flight when the broker dies.
    let in_flight = stack
        .submit(&[(&slow, r#"{"n": 2}"#), (&slow, r#"{"n": 3}"#)])
        .await;
    rabbit.kill();
    rabbit.start();

    // The web-service reconnects on the first submit after the restart.
    let after = vec![
        stack
            .submit_until_accepted(&quick, r#"{"n": 4}"#, Duration::from_secs(60))
            .await,
    ];

    for id in in_flight.iter().chain(&after) {
        let doc = stack.wait_done(*id, Duration::from_secs(120)).await;
        assert_eq!(doc.status, "success", "task {id}: {:?}", doc.exception);
    }
    assert!(stack.log_text("ferry-forwarder").contains("reconnecting"));
    stack.shutdown().await;
}
