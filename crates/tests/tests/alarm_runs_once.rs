//! Never run a task more than its attempts say, whatever RabbitMQ does meanwhile:
//!
//! - a memory alarm longer than the lost-endpoint window blocks the endpoint's
//!   heartbeats, but the endpoint is not declared lost and no task runs twice;
//! - a cancel made during an alarm reaches the endpoint once it clears, and no cancelled
//!   task runs;
//! - endpoint queues refuse (rather than drop) messages beyond an operator's
//!   `max-length`, the forwarder keeps publishing them, and every task finishes; a
//!   queue declared by an older version without `x-overflow` is used as it is.
//!
//! Each test that alarms or sets a policy runs its own RabbitMQ node, removed on every
//! exit path. Executions are counted in a side-effect log per task.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_tests::rabbit::Rabbit;
use ferry_tests::{Part, Stack, python};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(90);

/// Raises a memory alarm on `rabbit`: every publishing connection is blocked.
fn alarm(rabbit: &Rabbit) {
    rabbit.ctl(&["set_vm_memory_high_watermark", "0.0000001"]);
}

fn clear(rabbit: &Rabbit) {
    rabbit.ctl(&["set_vm_memory_high_watermark", "0.6"]);
}

/// The lines of a side-effect log (none when it does not exist yet).
fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A shell function that logs `{n}` and then waits for `gate` to exist.
async fn gated(stack: &Stack, log: &Path, gate: &Path) -> String {
    let code = format!(
        "echo {{n}} >> {}; while [ ! -e {} ]; do sleep 0.1; done",
        log.display(),
        gate.display()
    );
    stack.register("shell", "gated", &code).await
}

#[tokio::test]
async fn an_alarm_longer_than_the_lost_endpoint_window_runs_no_task_twice() {
    let rabbit = Rabbit::new();
    let mut stack = Stack::start_on(rabbit.url()).await;
    stack.start_endpoint().await;
    let endpoint = stack.endpoint_id.unwrap();
    let log = stack.dir.path().join("ran.log");
    let gate = stack.dir.path().join("gate");
    let f = gated(&stack, &log, &gate).await;
    let payloads: Vec<Value> = (0..8).map(|n| json!({"n": n})).collect();
    let ids = stack.submit_each(&f, &payloads, 0).await;
    // Every task is in flight at the endpoint (what a lost endpoint dispatches again).
    let (this, all) = (&stack, &ids);
    this.wait_until(WITHIN, "every task is in flight", || async move {
        for &id in all {
            let s = this.task(id).await.status;
            if !matches!(s.as_str(), "waiting-for-nodes" | "waiting-for-launch" | "running") {
                return false;
            }
        }
        true
    })
    .await;

    // Heartbeats every 500 ms, 5 may be missed: the window is 2.5 s; the alarm lasts
    // several windows.
    alarm(&rabbit);
    tokio::time::sleep(Duration::from_secs(12)).await;
    clear(&rabbit);
    // Past a window after the clear, then the tasks may end.
    tokio::time::sleep(Duration::from_secs(6)).await;
    std::fs::write(&gate, "").unwrap();

    for &id in &ids {
        let doc = stack.wait_done(id, WITHIN).await;
        assert_eq!(doc.status, "success", "{doc:?}");
        assert_eq!(doc.attempt, 0, "dispatched again: {:?}", doc.history);
    }
    let (_, doc): (u16, Value) = stack.get(&format!("/v1/endpoints/{endpoint}")).await;
    assert_eq!(doc["status"], "online", "{doc}");
    let forwarder = stack.log_text("ferry-forwarder");
    assert!(
        !forwarder.contains("endpoint lost"),
        "the endpoint was declared lost during the alarm"
    );
    let ran = lines(&log);
    for n in 0..8 {
        let runs = ran.iter().filter(|l| **l == n.to_string()).count();
        assert_eq!(runs, 1, "task {n} ran {runs} times: {ran:?}");
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn a_cancel_made_during_an_alarm_reaches_the_endpoint_after_it_clears() {
    let rabbit = Rabbit::new();
    let mut stack = Stack::start_on(rabbit.url()).await;
    // The batch waits at the endpoint and its manager, not in the worker's pipe (a task
    // queued there when its cancel comes is killed as it starts: its first moments run).
    stack.set_env("FERRY_TASKS_PER_WORKER", "1");
    stack
        .start_endpoint_with(&format!(
            "[provider]\nkind = \"local\"\nmax_workers_per_node = 1\npython = \"{}\"\n",
            python()
        ))
        .await;
    let log = stack.dir.path().join("ran.log");
    let gate = stack.dir.path().join("gate");
    let f = gated(&stack, &log, &gate).await;
    // One worker: a blocker runs, the batch waits behind it at the endpoint.
    let blocker = stack.submit_each(&f, &[json!({"n": "blocker"})], 0).await[0];
    let this = &stack;
    this.wait_until(WITHIN, "the blocker runs", || async move {
        this.task(blocker).await.status == "running"
    })
    .await;
    let payloads: Vec<Value> = (0..20).map(|n| json!({"n": n})).collect();
    let body = json!({"endpoint_id": stack.endpoint_id.unwrap(),
                      "tasks": payloads.iter().map(|p| json!({"function_id": f, "payload": p.to_string()})).collect::<Vec<_>>()});
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 200, "{answer}");
    let batch = answer["batch_id"].as_str().expect("a batch id").to_owned();
    let queued: Vec<ferry_proto::TaskId> = serde_json::from_value(answer["task_ids"].clone()).unwrap();
    let (this, all) = (&stack, &queued);
    this.wait_until(WITHIN, "the batch is at the endpoint", || async move {
        for &id in all {
            if matches!(this.task(id).await.status.as_str(), "received" | "waiting-for-ep") {
                return false;
            }
        }
        true
    })
    .await;

    // The alarm: the web-service learns it is blocked once it publishes (a submission
    // answered 503), so the cancel's publish fails at once.
    alarm(&rabbit);
    let noop = stack.register("shell", "noop", "true").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = json!({"endpoint_id": stack.endpoint_id.unwrap(), "tasks": [{"function_id": noop}]});
        let (status, _): (u16, Value) = stack.post("/v1/tasks", &body).await;
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "never refused during the alarm");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, answer): (u16, Value) = stack
        .post(&format!("/v1/batches/{batch}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cancelled"], 20, "{answer}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    clear(&rabbit);

    // The endpoint hears the cancel (the blocker still runs); give it a while, then let
    // the blocker end either way: the count below is the verdict. (Its manager is told
    // a moment after the endpoint logs it.)
    let deadline = Instant::now() + Duration::from_secs(45);
    while !stack
        .log_text("ferry-endpoint")
        .contains("stopping cancelled tasks")
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::write(&gate, "").unwrap();
    assert_eq!(stack.wait_done(blocker, WITHIN).await.status, "success");
    // A task after them all on the one worker: once it ran, the cancelled ones had
    // their turn.
    let last = stack.submit_each(&f, &[json!({"n": "last"})], 0).await[0];
    assert_eq!(stack.wait_done(last, WITHIN).await.status, "success");
    for &id in &queued {
        let doc = stack.task(id).await;
        assert_eq!(doc.status, "failed", "{doc:?}");
    }
    let ran = lines(&log);
    let cancelled_runs: Vec<&String> = ran.iter().filter(|l| l.parse::<u32>().is_ok()).collect();
    assert!(cancelled_runs.is_empty(), "cancelled tasks ran: {ran:?}");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_max_length_policy_refuses_tasks_and_every_task_still_finishes() {
    let rabbit = Rabbit::new();
    // Nothing but the forwarder's retries may bring a refused task back (the stranded
    // sweep would, a minute or two later).
    let mut stack = Stack::start_configured(
        rabbit.url(),
        ferry_tests::redis_url(),
        &[("FERRY_STRANDED_AFTER_SECS", "0")],
    )
    .await;
    stack.start_endpoint().await;
    let log = stack.dir.path().join("ran.log");
    let f = stack
        .register("shell", "mark", &format!("echo {{n}} >> {}", log.display()))
        .await;
    // The endpoint is away: its queue fills.
    stack.stop(Part::Endpoint);
    rabbit.ctl(&[
        "set_policy",
        "small",
        "\\.ep\\..*\\.tasks$",
        r#"{"max-length": 3}"#,
        "--apply-to",
        "queues",
    ]);
    let mut ids = Vec::new();
    for n in 0..20 {
        let payload = json!({"n": n});
        ids.extend(stack.submit_each(&f, &[payload], 0).await);
    }
    let this = &stack;
    this.wait_until(
        WITHIN,
        "the forwarder says the queue refused tasks",
        || async move {
            this.log_text("ferry-forwarder")
                .contains("the endpoint queue refused tasks")
        },
    )
    .await;
    stack.start_part(Part::Endpoint);
    for &id in &ids {
        let doc = stack.wait_done(id, WITHIN).await;
        assert_eq!(doc.status, "success", "{doc:?}");
    }
    let ran = lines(&log);
    for n in 0..20 {
        let runs = ran.iter().filter(|l| **l == n.to_string()).count();
        assert_eq!(runs, 1, "task {n} ran {runs} times: {ran:?}");
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_queue_declared_without_overflow_is_used_as_it_is() {
    let namespace = format!("oldq{}", uuid::Uuid::new_v4().simple());
    let url = ferry_tests::amqp_url();
    let options = ferry_broker::Options {
        queue_expires: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let broker = ferry_broker::Broker::connect(&url, &namespace, options)
        .await
        .unwrap();
    broker.declare_core().await.unwrap();
    let endpoint = ferry_proto::EndpointId::new();
    let queue = broker.endpoint_queue(endpoint);
    // As an older version declared it: without x-overflow.
    declare_old(&url, &queue, &broker.dead_queue()).await;

    broker.declare_endpoint(endpoint).await.unwrap();
    // The publisher channel survived the refused declaration.
    broker.publish(&queue, b"still works").await.unwrap();
    assert_eq!(broker.queue_len(&queue).await.unwrap(), 1);
    for q in [
        queue,
        broker.endpoint_control_queue(endpoint),
        broker.submissions_queue(),
        broker.status_queue(),
        broker.results_queue(),
        broker.dead_queue(),
    ] {
        let _ = broker.delete_queue(&q).await;
    }
    let _ = broker.delete_endpoint_exchange(endpoint).await;
}

/// Declares `queue` as Ferry did before: durable, dead letters to `dead`, an expiry, no
/// `x-overflow`.
async fn declare_old(url: &str, queue: &str, dead: &str) {
    use lapin::types::{AMQPValue, FieldTable};
    let conn = lapin::DefaultConnectionBuilder::new()
        .unwrap()
        .with_uri_str(url.to_owned())
        .connect()
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dead.into()),
    );
    args.insert("x-expires".into(), AMQPValue::LongLongInt(60_000));
    channel
        .queue_declare(queue.into(), lapin::options::QueueDeclareOptions::durable(), args)
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
}
