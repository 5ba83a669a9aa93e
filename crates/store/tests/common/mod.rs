//! Helpers shared by the store's tests, each test in its own namespace. They run
//! against a real Redis (`FERRY_TEST_REDIS`, a URL, default 127.0.0.1:6379) or, with
//! `FERRY_TEST_REDIS=embedded`, against the embedded server (`ferry_store::embedded`):
//! a fresh one for each store, with a password so every connection goes through AUTH.

#![allow(dead_code)] // each test file uses its own part

use bytes::Bytes;
use ferry_proto::{Actor, BatchId, EndpointId, Event, EventKind, FunctionId, TaskId, UserId};
use ferry_store::embedded::{Options, Server};
use ferry_store::{BatchRecord, NewTask, Report, Store, TaskOutcome, TaskRecord};
use std::sync::Mutex;

/// The embedded servers started so far (kept alive until the process ends; each runs on
/// its test's runtime) and the URL of each store's Redis, by namespace.
static EMBEDDED: Mutex<Vec<Server>> = Mutex::new(Vec::new());
static URLS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Whether the tests run against the embedded server (`FERRY_TEST_REDIS=embedded`).
pub(crate) fn embedded() -> bool {
    std::env::var("FERRY_TEST_REDIS").is_ok_and(|v| v == "embedded")
}

pub(crate) async fn store() -> Store {
    let url = if embedded() {
        let options = Options {
            password: Some(format!("pw-{}", uuid::Uuid::new_v4().simple())),
            snapshot: None,
            snapshot_every: None,
        };
        let server = Server::start("127.0.0.1:0".parse().unwrap(), options)
            .await
            .expect("the embedded server starts");
        let url = server.url();
        EMBEDDED.lock().unwrap().push(server);
        url
    } else {
        std::env::var("FERRY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    };
    let ns = format!("ferry-test-{}", uuid::Uuid::new_v4().simple());
    let store = Store::connect(&url, &ns, 600)
        .await
        .expect("redis must be running");
    URLS.lock().unwrap().push((ns, url));
    store
}

/// The URL of the Redis `store` talks to (for tests that look at keys directly).
pub(crate) fn url_of(store: &Store) -> String {
    URLS.lock()
        .unwrap()
        .iter()
        .find(|(ns, _)| ns == store.namespace())
        .map(|(_, url)| url.clone())
        .expect("a store made by common::store()")
}

pub(crate) fn new_task() -> NewTask {
    NewTask {
        task_id: TaskId::new(),
        function_id: FunctionId::new(),
        max_retries: 2,
        payload: Bytes::from_static(b"input"),
        walltime_ms: None,
        priority: 0,
        requires: None,
        retry: None,
        environment: None,
        result_group: None,
        by_reference: false,
    }
}

/// A batch of `size` tasks for `endpoint_id`, with nothing optional.
pub(crate) fn batch(endpoint_id: EndpointId, size: u64) -> BatchRecord {
    BatchRecord {
        batch_id: BatchId::new(),
        owner: UserId::new(),
        endpoint_id,
        size,
        created_at: 1,
        task_group: None,
        deadline: None,
        events: false,
        callback_url: None,
        callback_secret: None,
    }
}

pub(crate) fn event(task_id: TaskId, kind: EventKind, attempt: u32) -> Report {
    Report {
        task_id,
        event: Event { kind, attempt },
        at: 10,
        by: Actor::Endpoint,
        from: None,
        finish: None,
    }
}

/// One new task in a batch of its own, created `received`.
pub(crate) async fn one_task(store: &Store, endpoint_id: EndpointId) -> (BatchRecord, NewTask) {
    let batch = batch(endpoint_id, 1);
    let task = new_task();
    store
        .create_tasks(&batch, std::slice::from_ref(&task), Actor::WebService)
        .await
        .unwrap();
    (batch, task)
}

/// The brief read's view of a full record.
pub(crate) fn outcome_of(r: &TaskRecord) -> TaskOutcome {
    TaskOutcome {
        task_id: r.task_id,
        owner: r.owner,
        state: r.state,
        attempt: r.attempt,
        completed_at: r.completed_at,
        cause: r.cause,
        result: r.result.clone(),
        result_ref: r.result_ref,
        result_expired: r.result_expired,
        traceback: r.traceback.clone(),
        exception: r.exception.clone(),
    }
}
