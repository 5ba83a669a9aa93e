//! RabbitMQ dies (kill -9) and comes back: every part reconnects by itself, tasks that
//! were in flight finish, and new submissions work. The test runs its own RabbitMQ node
//! on other ports (the shared one stays up) and removes it on every exit path.

use std::time::Duration;

use ferry_tests::Stack;
use ferry_tests::rabbit::Rabbit;

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
