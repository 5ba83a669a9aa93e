//! Helpers shared by the store's tests against a real Redis (`FERRY_TEST_REDIS`,
//! default 127.0.0.1:6379), each test in its own namespace.

#![allow(dead_code)] // each test file uses its own part

use bytes::Bytes;
use ferry_proto::{Actor, BatchId, EndpointId, Event, EventKind, FunctionId, TaskId, UserId};
use ferry_store::{BatchRecord, NewTask, Report, Store, TaskOutcome, TaskRecord};

pub(crate) async fn store() -> Store {
    let url = std::env::var("FERRY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let ns = format!("ferry-test-{}", uuid::Uuid::new_v4().simple());
    Store::connect(&url, &ns, 600)
        .await
        .expect("redis must be running")
}

pub(crate) fn new_task() -> NewTask {
    NewTask {
        task_id: TaskId::new(),
        function_id: FunctionId::new(),
        max_retries: 2,
        payload: Bytes::from_static(b"input"),
        walltime_ms: None,
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
