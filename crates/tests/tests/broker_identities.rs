//! Broker identities, tried against a real RabbitMQ: an endpoint logs in as a broker user
//! of its own that can read only its queues and write only through its exchange; what it
//! sends is taken only for its own tasks and in its own name; a user's Globus Compute
//! result stream reads only that user's queues; a deleted endpoint's user is gone.

use std::time::Duration;

use ferry_broker::{Broker, Options};
use ferry_proto::api::EndpointRegistered;
use ferry_proto::messages::{Completion, EndpointMessage, TaskResult};
use ferry_proto::{EndpointId, TaskId};
use ferry_tests::{Stack, amqp_url};
use serde_json::json;

async fn register(stack: &Stack, name: &str) -> EndpointRegistered {
    let (status, body): (u16, serde_json::Value) = stack.post("/v1/endpoints", &json!({"name": name})).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

/// Connected as endpoint `ep` (through its exchange), or as a plain client.
async fn connect(stack: &Stack, url: &str, ep: Option<EndpointId>) -> Result<Broker, ferry_broker::Error> {
    Broker::connect(
        url,
        &stack.namespace,
        Options {
            endpoint: ep,
            ..Default::default()
        },
    )
    .await
}

fn result_for(task_id: TaskId, claimed: EndpointId) -> Vec<u8> {
    let message = EndpointMessage::Reports {
        endpoint_id: claimed,
        updates: Vec::new(),
        results: vec![TaskResult {
            task_id,
            attempt: 0,
            steps: Vec::new(),
            completion: Completion::Success {
                result: bytes::Bytes::from_static(b"forged"),
            },
            group: None,
            finished_at: ferry_proto::time::now_micros(),
            stdout: String::new(),
            stderr: String::new(),
        }],
    };
    ferry_proto::codec::encode(&message).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_can_touch_nothing_but_its_own_queues_and_tasks() {
    let mut stack = Stack::start_without_endpoint().await;
    let alice = register(&stack, "alice").await;
    let bob = register(&stack, "bob").await;
    let (a, b) = (alice.endpoint_id, bob.endpoint_id);
    // Each has a user of its own, and the service's credentials are never handed out.
    let admin = Broker::connect(&amqp_url(), &stack.namespace, Default::default())
        .await
        .unwrap();
    for (reg, id) in [(&alice, a), (&bob, b)] {
        let user = format!("{}-ep-{id}", stack.namespace);
        assert!(
            reg.broker_url.contains(&format!("//{user}:")),
            "{}",
            reg.broker_url
        );
        assert!(!reg.broker_url.contains("guest"), "{}", reg.broker_url);
    }
    // A task for alice's endpoint waits in her queue (no daemon runs).
    stack.endpoint_id = Some(a);
    let f = stack.register("shell", "hi", "echo hi").await;
    let task = stack.submit(&[(&f, "")]).await[0];
    let queue = admin.endpoint_queue(a);
    stack
        .wait_until(
            Duration::from_secs(30),
            "the task is in alice's queue",
            || async { admin.queue_len(&queue).await.unwrap_or(0) == 1 },
        )
        .await;

    // Bob cannot read alice's queues, nor write anywhere but his exchange.
    let as_bob = connect(&stack, &bob.broker_url, Some(b)).await.unwrap();
    for q in [
        admin.endpoint_queue(a),
        admin.endpoint_control_queue(a),
        admin.results_queue(),
    ] {
        let bob_plain = connect(&stack, &bob.broker_url, None).await.unwrap();
        let refused = bob_plain.consume(&q, 1, "bob").await;
        assert!(refused.is_err(), "bob consumed {q}");
    }
    let bob_plain = connect(&stack, &bob.broker_url, None).await.unwrap();
    assert!(
        bob_plain
            .publish(&admin.results_queue(), &result_for(task, b))
            .await
            .is_err(),
        "bob published to the results queue directly"
    );
    assert!(
        bob_plain.publish(&admin.endpoint_queue(a), b"{}").await.is_err(),
        "bob published to alice's task queue"
    );
    // His own queue he can read.
    as_bob.consume(&admin.endpoint_queue(b), 1, "bob").await.unwrap();

    // Through his exchange, a result in alice's name is dead-lettered, saying who sent
    // it; one in his own name about her task too, saying whose task it is not.
    as_bob
        .publish(&admin.results_queue(), &result_for(task, a))
        .await
        .unwrap();
    let dead = admin.dead_queue();
    stack
        .wait_until(
            Duration::from_secs(30),
            "the forged message is dead-lettered",
            || async { admin.queue_len(&dead).await.unwrap_or(0) == 1 },
        )
        .await;
    assert!(
        stack.log_text("ferry-forwarder").contains("not by"),
        "the reason names the sender"
    );
    as_bob
        .publish(&admin.results_queue(), &result_for(task, b))
        .await
        .unwrap();
    stack
        .wait_until(
            Duration::from_secs(30),
            "bob's report is dead-lettered",
            || async { admin.queue_len(&dead).await.unwrap_or(0) == 2 },
        )
        .await;
    assert!(
        stack.log_text("ferry-forwarder").contains(&format!(
            "endpoint {b} reported on tasks that are not its own: {task}"
        )),
        "the reason names the endpoint and the task"
    );
    assert_ne!(
        stack.task(task).await.status,
        "success",
        "a forged result was recorded"
    );

    // Alice's own identity is heard.
    let as_alice = connect(&stack, &alice.broker_url, Some(a)).await.unwrap();
    as_alice
        .publish(&admin.results_queue(), &result_for(task, a))
        .await
        .unwrap();
    let done = stack.wait_done(task, Duration::from_secs(30)).await;
    assert_eq!(done.status, "success");

    // Deleting bob's endpoint removes his broker user: he cannot log in again.
    as_bob.close().await;
    bob_plain.close().await;
    let answer = stack
        .request_as(
            reqwest::Method::DELETE,
            &format!("/v1/endpoints/{b}"),
            Some(&stack.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    assert!(
        connect(&stack, &bob.broker_url, None).await.is_err(),
        "a deleted endpoint's broker user still logs in"
    );
    as_alice.close().await;
    admin.close().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_stream_reads_only_its_users_task_groups() {
    let stack = Stack::start_without_endpoint().await;
    let mallory = stack.create_user("mallory");
    let connection = |token: String| {
        let stack = &stack;
        async move {
            let answer = stack
                .request_as(
                    reqwest::Method::GET,
                    "/v2/get_amqp_result_connection_url",
                    Some(&token),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
            let body: serde_json::Value = answer.json().await.unwrap();
            (
                body["connection_url"].as_str().unwrap().to_owned(),
                body["queue_prefix"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (url, prefix) = connection(stack.token.clone()).await;
    let (mallory_url, mallory_prefix) = connection(mallory).await;
    assert_ne!(url, mallory_url);
    assert_ne!(prefix, mallory_prefix);
    // The same URL on every call (the SDK asks on each reconnection).
    assert_eq!(connection(stack.token.clone()).await.0, url);

    // A group queue of each user, as a submit with create_queue makes it.
    let admin = Broker::connect(&amqp_url(), &stack.namespace, Default::default())
        .await
        .unwrap();
    let mine = format!("{prefix}{}", uuid::Uuid::new_v4());
    let theirs = format!("{mallory_prefix}{}", uuid::Uuid::new_v4());
    let queues = [
        (&mine, &url, true),
        (&theirs, &url, false),
        (&mine, &mallory_url, false),
    ];
    let group = |q: &str| {
        q.rsplit('.')
            .next()
            .unwrap()
            .parse::<ferry_proto::TaskGroupId>()
            .unwrap()
    };
    for q in [&mine, &theirs] {
        let owner = q.split('.').nth(2).unwrap().parse().unwrap();
        admin
            .declare_task_group(owner, group(q), Duration::from_secs(60))
            .await
            .unwrap();
    }
    for (q, url, allowed) in queues {
        let reader = connect(&stack, url, None).await.unwrap();
        let consumed = reader.consume(q, 1, "sdk").await;
        assert_eq!(consumed.is_ok(), allowed, "reading {q}");
        // Nor may it write anything, to any queue.
        let reader = connect(&stack, url, None).await.unwrap();
        assert!(
            reader.publish(q, b"x").await.is_err(),
            "a result reader published to {q}"
        );
    }
    for q in [&mine, &theirs] {
        admin.delete_queue(q).await.unwrap();
    }
    admin.close().await;
    stack.shutdown().await;
}
