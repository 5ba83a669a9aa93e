//! A manager and its endpoint prove themselves to each other: the manager accepts only
//! the endpoint certificate it pins (`FERRY_ENDPOINT_CERT_SHA256`), and does not start
//! without a pin. Managers are started by hand here, against a `manual` endpoint, as a
//! user on a cluster would.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ferry_tests::{Stack, bin_dir, python, repo_root};
use serde_json::Value;

/// `ferry-manager` against the stack's endpoint, with `pin` (none: no pin at all); its
/// exit and output once it ends, or the running child.
fn manager(stack: &Stack, pin: Option<&str>) -> Command {
    let status = stack.endpoint_cli(&["status", "ep", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).expect("status --json");
    let dir = stack.endpoint_dir();
    let mut command = Command::new(bin_dir().join("ferry-manager"));
    command
        .env_remove("FERRY_ENDPOINT_CERT_SHA256")
        .env(
            "FERRY_ENDPOINT_ADDR",
            status["manager_addr"].as_str().expect("manager_addr"),
        )
        .env(
            "FERRY_MANAGER_SECRET",
            std::fs::read_to_string(dir.join("manager.secret")).expect("manager.secret"),
        )
        .env("FERRY_PYTHON", python())
        .env("PYTHONPATH", repo_root().join("sdk"))
        .args(["--workers", "1"])
        .stdin(Stdio::null());
    if let Some(pin) = pin {
        command.env("FERRY_ENDPOINT_CERT_SHA256", pin);
    }
    command
}

fn said(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_manager_pinning_another_certificate_is_refused_and_gets_no_task() {
    let mut stack = Stack::start_without_endpoint().await;
    stack.start_endpoint_with("[provider]\nkind = \"manual\"\n").await;
    let status: Value =
        serde_json::from_slice(&stack.endpoint_cli(&["status", "ep", "--json"]).stdout).unwrap();
    let pin = status["manager_cert_sha256"]
        .as_str()
        .expect("status shows the certificate's fingerprint")
        .to_owned();
    let f = stack.register("shell", "hi", "echo hi").await;
    let task = stack.submit(&[(&f, "")]).await[0];

    // Another certificate's fingerprint: the manager refuses the endpoint, naming both.
    let wrong = "ab".repeat(32);
    let out = manager(&stack, Some(&wrong)).output().expect("ferry-manager");
    assert!(!out.status.success(), "a manager with the wrong pin ran");
    let error = said(&out);
    assert!(
        error.contains(&wrong) && error.contains(&pin) && error.contains("FERRY_ENDPOINT_CERT_SHA256"),
        "the error names the expected and the actual fingerprints: {error}"
    );
    let doc = stack.task(task).await;
    assert!(
        doc.pending && !["running", "success"].contains(&doc.status.as_str()),
        "the task went nowhere: {}",
        doc.status
    );
    stack
        .wait_until(
            Duration::from_secs(10),
            "the endpoint logs the failed handshake",
            || async { stack.log_text("ferry-endpoint").contains("TLS handshake failed") },
        )
        .await;

    // The pin as `status` shows it, in the colon form `openssl x509 -fingerprint` prints:
    // the task runs.
    let colons: Vec<String> = pin
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect();
    let mut right = manager(&stack, Some(&colons.join(":")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry-manager");
    let doc = stack.wait_done(task, Duration::from_secs(60)).await;
    let _ = right.kill();
    let _ = right.wait();
    assert_eq!(doc.status, "success");
}

#[tokio::test]
async fn a_manager_without_a_pin_refuses_to_start_saying_where_to_find_one() {
    let out = Command::new(bin_dir().join("ferry-manager"))
        .env_remove("FERRY_ENDPOINT_CERT_SHA256")
        .env("FERRY_MANAGER_SECRET", "s")
        .args(["--endpoint", "127.0.0.1:1"])
        .stdin(Stdio::null())
        .output()
        .expect("ferry-manager");
    assert!(!out.status.success());
    let error = said(&out);
    assert!(
        error.contains("FERRY_ENDPOINT_CERT_SHA256") && error.contains("ferry-endpoint status"),
        "{error}"
    );
}
