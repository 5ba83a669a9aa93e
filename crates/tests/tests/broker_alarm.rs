//! RabbitMQ blocks publishers (a memory alarm): a submission is answered 503 with
//! `Retry-After` at once, not left hanging; none of its tasks runs, then or after the
//! alarm clears; and once it clears submissions work again. The test runs its own
//! RabbitMQ node (the shared one is never alarmed) and removes it on every exit path.

use std::time::{Duration, Instant};

use ferry_tests::Stack;
use ferry_tests::rabbit::Rabbit;
use serde_json::{Value, json};

#[tokio::test]
async fn a_blocked_broker_is_answered_503_at_once_and_nothing_refused_runs() {
    let rabbit = Rabbit::new();
    let mut stack = Stack::start_on(rabbit.url()).await;
    stack.start_endpoint().await;
    let log = stack.dir.path().join("ran.log");
    let f = stack
        .register("shell", "mark", &format!("echo {{n}} >> {}", log.display()))
        .await;
    let first = stack.submit(&[(&f, r#"{"n": 0}"#)]).await;
    assert_eq!(
        stack.wait_done(first[0], Duration::from_secs(60)).await.status,
        "success"
    );

    rabbit.ctl(&["set_vm_memory_high_watermark", "0.0000001"]);
    // RabbitMQ tells its connections it blocks them within a moment of the alarm:
    // submissions answered 200 before that are accepted (they run once it clears).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 100;
    let refused = loop {
        n += 1;
        let body = json!({"endpoint_id": stack.endpoint_id.unwrap(),
                          "tasks": [{"function_id": f, "payload": format!(r#"{{"n": {n}}}"#)}]});
        let asked = Instant::now();
        let r = stack
            .http
            .post(format!("{}/v1/tasks", stack.url))
            .bearer_auth(&stack.token)
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        let took = asked.elapsed();
        if r.status() == 503 {
            assert!(
                took <= ferry_web_service_deadline() + Duration::from_secs(5),
                "answered within the deadline, not hung: {took:?}"
            );
            break r;
        }
        assert!(Instant::now() < deadline, "never refused during the alarm");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        refused.headers().contains_key("retry-after"),
        "{:?}",
        refused.headers()
    );
    let answer: Value = refused.json().await.unwrap();
    assert!(
        answer["message"].as_str().unwrap().contains("alarm"),
        "says why: {answer}"
    );
    rabbit.ctl(&["set_vm_memory_high_watermark", "0.6"]);

    let after = stack
        .submit_until_accepted(&f, r#"{"n": 2}"#, Duration::from_secs(60))
        .await;
    assert_eq!(
        stack.wait_done(after, Duration::from_secs(60)).await.status,
        "success"
    );
    // Give anything held back during the alarm time to arrive, then count runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ran = std::fs::read_to_string(&log).unwrap();
    let ran: Vec<&str> = ran.lines().collect();
    let refused_n = n.to_string();
    assert!(
        !ran.contains(&refused_n.as_str()),
        "the refused task ran: {ran:?}"
    );
    assert_eq!(ran.iter().filter(|l| **l == "2").count(), 1, "{ran:?}");
    stack.shutdown().await;
}

/// The web-service's broker deadline (`ferry_web_service::BROKER_DEADLINE`).
fn ferry_web_service_deadline() -> Duration {
    Duration::from_secs(10)
}
