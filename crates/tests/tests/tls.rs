//! TLS on every connection: the web-service serves HTTPS with its certificate, every
//! part reaches RabbitMQ over `amqps://` (a private node with a TLS listener only), all
//! trusting a test CA given in `FERRY_CA_FILE`; a client that does not trust that CA is
//! refused, whichever connection it tries.

use std::time::Duration;

use ferry_broker::Broker;
use ferry_tests::rabbit::{Rabbit, RabbitOptions};
use ferry_tests::tls::TestCa;
use ferry_tests::{Stack, redis_url};

#[tokio::test(flavor = "multi_thread")]
async fn a_task_goes_round_over_https_and_amqps_and_a_stranger_ca_is_refused() {
    let ca = TestCa::new("ferry");
    let rabbit = Rabbit::with(RabbitOptions {
        tls: Some((ca.cert(), ca.key(), ca.ca())),
        plugins: Vec::new(),
    });
    let ca_file = ca.ca().display().to_string();
    let cert = ca.cert().display().to_string();
    let key = ca.key().display().to_string();
    let mut stack = Stack::start_configured(
        rabbit.url(),
        redis_url(),
        &[
            ("FERRY_CA_FILE", &ca_file),
            ("FERRY_TLS_CERT", &cert),
            ("FERRY_TLS_KEY", &key),
        ],
    )
    .await;
    assert!(stack.url.starts_with("https://"), "{}", stack.url);
    stack.start_endpoint().await;
    let f = stack.register("shell", "echo", "echo {x}").await;
    let ids = stack.submit(&[(&f, r#"{"x": "over tls"}"#)]).await;
    let doc = stack.wait_done(ids[0], Duration::from_secs(60)).await;
    assert_eq!(doc.status, "success", "{doc:?}");
    assert_eq!(doc.stdout.as_deref(), Some("over tls\n"));

    // Someone else's CA: the service's certificate is not trusted.
    let stranger = TestCa::new("stranger");
    let pem = std::fs::read(stranger.ca()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let err = client
        .get(format!("{}/v1/version", stack.url))
        .send()
        .await
        .expect_err("a certificate from an unknown CA is refused");
    let chain = format!("{err:?}");
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");
    // Nor is the broker's.
    let options = ferry_broker::Options {
        ca_pem: Some(std::fs::read_to_string(stranger.ca()).unwrap()),
        ..Default::default()
    };
    assert!(
        Broker::connect(&rabbit.url(), &stack.namespace, options)
            .await
            .is_err(),
        "amqps with an unknown CA is refused"
    );
    // And plain HTTP gets nothing from the HTTPS port.
    let plain = stack.url.replacen("https://", "http://", 1);
    let answer = reqwest::get(format!("{plain}/v1/version")).await;
    assert!(answer.map(|r| !r.status().is_success()).unwrap_or(true));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_that_does_not_trust_the_services_ca_does_not_start() {
    let ca = TestCa::new("ferry");
    let ca_file = ca.ca().display().to_string();
    let cert = ca.cert().display().to_string();
    let key = ca.key().display().to_string();
    let mut stack = Stack::start_configured(
        ferry_tests::amqp_url(),
        redis_url(),
        &[
            ("FERRY_CA_FILE", &ca_file),
            ("FERRY_TLS_CERT", &cert),
            ("FERRY_TLS_KEY", &key),
        ],
    )
    .await;
    let stranger = TestCa::new("stranger");
    stack.set_env("FERRY_CA_FILE", &stranger.ca().display().to_string());
    let out = stack.endpoint_cli(&[
        "configure",
        "ep",
        "--url",
        &stack.url.clone(),
        "--token",
        &stack.token.clone(),
    ]);
    assert!(out.status.success());
    let out = stack.endpoint_cli(&["start", "ep", "--foreground"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "started with an untrusted service certificate"
    );
    assert!(said.contains("cannot reach the web-service"), "{said}");
    // The cause is said, not only that the request failed.
    assert!(said.to_lowercase().contains("certificate"), "{said}");

    // Given the service's CA with --ca-file, it registers at once and keeps the file's
    // absolute path in its config.
    stack.set_env("FERRY_CA_FILE", "");
    let out = stack.endpoint_cli(&[
        "configure",
        "ep",
        "--force",
        "--url",
        &stack.url.clone(),
        "--token",
        &stack.token.clone(),
        "--ca-file",
        &ca_file,
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("registered endpoint ep"), "{said}");
    let config = std::fs::read_to_string(stack.endpoint_dir().join("config.toml")).unwrap();
    assert!(config.contains(&format!("ca_file = \"{ca_file}\"")), "{config}");
    assert!(
        !config.contains(&stack.token),
        "the owner's token is not kept: {config}"
    );
    // A CA file that is not there is named.
    let out = stack.endpoint_cli(&["configure", "other", "--ca-file", "/nonexistent/ca.pem"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && said.contains("/nonexistent/ca.pem"),
        "{said}"
    );
    stack.shutdown().await;
}

/// A Redis serving TLS only, on a port of its own; killed when dropped.
struct TlsRedis(std::process::Child);

impl TlsRedis {
    fn start(ca: &TestCa, port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args(["--save", "", "--appendonly", "no", "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(ca.cert())
            .arg("--tls-key-file")
            .arg(ca.key())
            .arg("--tls-ca-cert-file")
            .arg(ca.ca())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the TLS Redis did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self(child)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_services_reach_redis_over_tls_and_a_stranger_ca_is_refused() {
    let ca = TestCa::new("ferry");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _redis = TlsRedis::start(&ca, port);
    let url = format!("rediss://localhost:{port}");
    let ca_file = ca.ca().display().to_string();
    let mut stack = Stack::start_configured(
        ferry_tests::amqp_url(),
        url.clone(),
        &[("FERRY_CA_FILE", &ca_file)],
    )
    .await;
    stack.start_endpoint().await;
    let f = stack.register("shell", "echo", "echo {x}").await;
    let ids = stack.submit(&[(&f, r#"{"x": "redis over tls"}"#)]).await;
    let doc = stack.wait_done(ids[0], Duration::from_secs(60)).await;
    assert_eq!(doc.status, "success", "{doc:?}");
    // A client that trusts another CA is refused.
    let stranger = TestCa::new("stranger");
    let pem = std::fs::read(stranger.ca()).unwrap();
    let refused = ferry_store::Store::connect_tls(&url, Some(&pem), "x", 0).await;
    assert!(refused.is_err(), "a stranger CA was trusted");
    stack.shutdown().await;
}
