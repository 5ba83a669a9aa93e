//! Redis dies (kill -9) and comes back from its append-only file: the services reconnect
//! by themselves and every accepted task finishes. The test runs its own Redis on another
//! port (the shared one stays up) and removes it on every exit path.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::{Stack, amqp_url};

struct Redis {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start(dir: tempfile::TempDir, port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
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
            dir,
            port,
            child: Some(child),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(mut self) -> Self {
        self.kill();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::start(dir, self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn the_services_reconnect_after_redis_is_killed_and_restarted() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = Redis::start(tempfile::tempdir().unwrap(), port);
    let url = format!("redis://127.0.0.1:{port}");
    let mut stack = Stack::start_with(amqp_url(), url).await;
    stack.start_endpoint().await;
    let f = stack.register("shell", "n", "echo {n}").await;
    let first = stack.submit(&[(&f, r#"{"n": 1}"#)]).await;
    assert_eq!(
        stack.wait_done(first[0], Duration::from_secs(60)).await.status,
        "success"
    );

    let slow = stack.register("shell", "slow", "sleep 1; echo {n}").await;
    let in_flight = stack.submit(&[(&slow, r#"{"n": 2}"#)]).await;
    let redis = redis.restart();

    // Records written before the crash are still there (AOF), and new work goes through.
    let after = vec![
        stack
            .submit_until_accepted(&f, r#"{"n": 3}"#, Duration::from_secs(60))
            .await,
    ];
    for id in in_flight.iter().chain(&after) {
        let doc = stack.wait_done(*id, Duration::from_secs(120)).await;
        assert_eq!(doc.status, "success", "task {id}: {:?}", doc.exception);
    }
    assert_eq!(stack.task(first[0]).await.status, "success");
    stack.shutdown().await;
    drop(redis);
}
