//! Where the test services, the built binaries and the workers' Python are.

use std::path::{Path, PathBuf};

/// Redis URL for tests (`FERRY_TEST_REDIS`), or the embedded store's (see [`embedded`]).
pub fn redis_url() -> String {
    if embedded() {
        return embedded_backends().0.clone();
    }
    std::env::var("FERRY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// RabbitMQ URL for tests (`FERRY_TEST_AMQP`), or the embedded broker's (see [`embedded`]).
pub fn amqp_url() -> String {
    if embedded() {
        return embedded_backends().1.clone();
    }
    std::env::var("FERRY_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// True with `FERRY_TEST_BACKENDS=embedded`: stacks run on Ferry's embedded store and
/// broker (what `ferry dev` runs on) instead of Redis and RabbitMQ, so the end-to-end
/// tests that need no fault injection check both backends. Started once per test
/// process, on a runtime of their own (a test's runtime ends with the test).
pub fn embedded() -> bool {
    std::env::var("FERRY_TEST_BACKENDS").as_deref() == Ok("embedded")
}

fn embedded_backends() -> &'static (String, String) {
    static BACKENDS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    BACKENDS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime for the embedded backends");
            runtime.block_on(async move {
                let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                let store = ferry_store::embedded::Server::start(
                    loopback,
                    ferry_store::embedded::Options {
                        password: Some("test-store".into()),
                        snapshot: None,
                        snapshot_every: None,
                    },
                )
                .await
                .expect("the embedded store starts");
                let broker = ferry_broker::embedded::Server::start(
                    loopback,
                    ferry_broker::embedded::ServerOptions {
                        password: Some("test-broker".into()),
                    },
                )
                .await
                .expect("the embedded broker starts");
                let _ = tx.send((store.url(), broker.url("ferry")));
                // They serve until the test process ends.
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("the embedded backends started")
    })
}

/// The management API of the RabbitMQ at [`amqp_url`] (`FERRY_TEST_AMQP_ADMIN`): stacks on
/// it give their endpoints broker identities of their own.
pub fn amqp_admin_url() -> String {
    std::env::var("FERRY_TEST_AMQP_ADMIN").unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".into())
}

/// Where the built binaries are: next to the test executable's `deps/` directory.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FERRY_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

pub(crate) fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`)",
        path.display()
    );
    path
}

/// The repository root (for the Python package the workers import).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The Python the workers run: `FERRY_TEST_PYTHON`, else the repository's `.venv`
/// (which `scripts/test` makes), else `python3`. Checked once: one that cannot import
/// `ferry` and `dill` would fail every Python task with "the Python host exited".
pub fn python() -> String {
    static CHECKED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let venv = repo_root().join(".venv/bin/python");
            let python = std::env::var("FERRY_TEST_PYTHON").unwrap_or_else(|_| {
                if venv.exists() {
                    venv.display().to_string()
                } else {
                    "python3".into()
                }
            });
            let ok = std::process::Command::new(&python)
                .args(["-c", "import ferry.host, dill"])
                .output()
                .is_ok_and(|out| out.status.success());
            assert!(
                ok,
                "{python} cannot import ferry and dill: run `source scripts/lib/env.sh && ensure_python`, \
                 or set FERRY_TEST_PYTHON to a Python that has them"
            );
            python
        })
        .clone()
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
