//! A submission that Redis refuses part-way (out of memory with `noeviction`) runs none
//! of its tasks: it is answered with an error and no ids, nothing of it is published
//! (the tasks it had written fail, saying why, once Redis takes writes again), and
//! executions are counted with a side-effect log, not only records. The test runs its
//! own Redis (stopped on every exit path).

use std::time::Duration;

use ferry_store::Store;
use ferry_tests::redis::PrivateRedis;
use ferry_tests::{Stack, amqp_url};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(60);
const TASKS: usize = 20_000;

#[tokio::test]
async fn a_submission_refused_part_way_by_redis_runs_none_of_its_tasks() {
    let redis = PrivateRedis::start(&["--maxmemory-policy", "noeviction"]);
    let mut stack = Stack::start_configured(
        amqp_url(),
        redis.url.clone(),
        &[("FERRY_ABANDONED_BATCH_SECS", "1")],
    )
    .await;
    stack.start_endpoint().await;
    let log = stack.dir.path().join("runs.log");
    let f = stack
        .register("shell", "runs", &format!("echo {{n}} >> {}", log.display()))
        .await;

    // Room for the first parts of the submission (1,000 and 2,000 tasks of about
    // 700 bytes each), not for all of it.
    let pad = "x".repeat(600);
    let tasks: Vec<Value> = (0..TASKS)
        .map(|n| json!({"function_id": f, "payload": json!({"n": n, "pad": pad}).to_string()}))
        .collect();
    let body = json!({"endpoint_id": stack.endpoint_id.unwrap(), "tasks": tasks});
    let limit = redis.used_memory().await + 3 * 1024 * 1024;
    redis
        .command(&["CONFIG", "SET", "maxmemory", &limit.to_string()])
        .await;
    let (code, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    redis.command(&["CONFIG", "SET", "maxmemory", "0"]).await;
    assert!(code >= 500, "the submission was refused: {code} {answer}");
    assert!(answer.get("task_ids").is_none(), "no ids handed out: {answer}");

    // Some parts were written before Redis refused: their batch is failed, not run.
    let store = Store::connect(&redis.url, &stack.namespace, 900).await.unwrap();
    stack
        .wait_until(WITHIN, "no batch is left half-written", || {
            let store = store.clone();
            async move {
                store
                    .unfinished_batches_before(i64::MAX as _, 1)
                    .await
                    .unwrap()
                    .is_empty()
            }
        })
        .await;
    let (_, unfinished) = store
        .unfinished(ferry_proto::UserId::new(), stack.endpoint_id.unwrap())
        .await
        .unwrap();
    assert_eq!(unfinished, 0, "nothing of it is left to run");
    let pattern = format!("{}:task:*", stack.namespace);
    let count = |state: &'static str| {
        let pattern = pattern.clone();
        let redis = &redis;
        async move {
            let script = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
                          if redis.call('HGET', k, 's') == ARGV[2] then n = n + 1 end end return n";
            redis.command(&["EVAL", script, "0", &pattern, state]).await
        }
    };
    // State codes: 0 received, 6 failed.
    let failed = count("6").await;
    assert_ne!(failed, "int(0)", "some parts were written before Redis refused");
    assert_eq!(count("0").await, "int(0)", "no written task is left received");

    // A task submitted now runs, and is the only one that ever ran.
    let after = stack.submit(&[(&f, r#"{"n": "after"}"#)]).await;
    assert_eq!(stack.wait_done(after[0], WITHIN).await.status, "success");
    let runs = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(runs, "after\n", "only the task submitted after ran");
    stack.shutdown().await;
}
