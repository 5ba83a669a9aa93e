//! A private Redis for tests that must push Redis to its limits (memory, restarts)
//! without touching the shared one: its own port and directory, stopped on every exit
//! path (drop).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateRedis {
    pub port: u16,
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// Starts `redis-server` with no persistence and `extra` arguments
    /// (`["--maxmemory", "64mb"]`), and waits until it answers.
    pub fn start(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("a temp dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the private Redis did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            port,
            url: format!("redis://127.0.0.1:{port}"),
            child,
            _dir: dir,
        }
    }

    /// Runs one command (`["CONFIG", "SET", "maxmemory", "0"]`), returning its reply as
    /// text.
    pub async fn command(&self, args: &[&str]) -> String {
        let client = redis::Client::open(self.url.as_str()).expect("a Redis URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("the private Redis answers");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let value: redis::Value = cmd.query_async(&mut conn).await.expect("a Redis command");
        format!("{value:?}")
    }

    /// Bytes Redis holds now (`used_memory`).
    pub async fn used_memory(&self) -> u64 {
        let client = redis::Client::open(self.url.as_str()).expect("a Redis URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("the private Redis answers");
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .expect("INFO memory");
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory in INFO")
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
