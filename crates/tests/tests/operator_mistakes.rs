//! Settings that would lose work silently are refused at start, naming the setting.
//! The tests run their own Redis on another port and remove it on every exit path.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::{amqp_url, bin_dir};

/// A private Redis, killed when dropped.
struct Redis(Child);

impl Redis {
    fn start(port: u16, args: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no"])
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let redis = Self(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the private Redis did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a service binary against `redis` until it exits (killed after 30 s): its exit
/// status and stderr.
fn run(binary: &str, redis: &str) -> (Option<i32>, String) {
    let mut child = Command::new(bin_dir().join(binary))
        .env("FERRY_REDIS_URL", redis)
        .env("FERRY_AMQP_URL", amqp_url())
        .env(
            "FERRY_NAMESPACE",
            format!("mistake{}", uuid::Uuid::new_v4().simple()),
        )
        .env("FERRY_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn a_redis_that_evicts_keys_is_refused_by_every_service_naming_the_setting() {
    for policy in ["allkeys-lru", "volatile-ttl"] {
        let port = free_port();
        let _redis = Redis::start(port, &["--maxmemory", "64mb", "--maxmemory-policy", policy]);
        let url = format!("redis://127.0.0.1:{port}");
        for binary in ["ferry-web-service", "ferry-forwarder"] {
            let (code, text) = run(binary, &url);
            assert!(
                code.is_some_and(|c| c != 0),
                "{binary} refuses to start on {policy} (exit {code:?}): {text}"
            );
            assert!(
                text.contains("maxmemory-policy") && text.contains(policy) && text.contains("noeviction"),
                "{binary} names the setting, its value and the fix: {text}"
            );
        }
    }
}
