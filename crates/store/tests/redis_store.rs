//! The Redis store against a real Redis (`FERRY_TEST_REDIS`, default 127.0.0.1:6379),
//! each test in its own namespace.

use bytes::Bytes;
use ferry_proto::state::{Outcome, TaskStatus, transition};
use ferry_proto::{Actor, BatchId, EndpointId, Event, EventKind, FunctionId, TaskId, TaskState, UserId};
use ferry_store::{Applied, BatchRecord, Finish, NewTask, Report, Store};

async fn store() -> Store {
    let url = std::env::var("FERRY_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let ns = format!("ferry-test-{}", uuid::Uuid::new_v4().simple());
    Store::connect(&url, &ns, 600)
        .await
        .expect("redis must be running")
}

#[tokio::test]
async fn the_script_agrees_with_the_state_machine_on_every_case() {
    let store = store().await;
    let mut cases = 0;
    for state in TaskState::ALL {
        for kind in EventKind::ALL {
            for event_attempt in [0u32, 1, 2] {
                for max_retries in [0u32, 1, 3] {
                    let id = TaskId::new();
                    store.force_task_state(id, state, 1, max_retries).await.unwrap();
                    let event = Event {
                        kind,
                        attempt: event_attempt,
                    };
                    let expected = transition(
                        TaskStatus {
                            state,
                            attempt: 1,
                            max_retries,
                        },
                        event,
                    );
                    let finish = matches!(kind, EventKind::Succeeded | EventKind::Failed).then(|| Finish {
                        success: kind == EventKind::Succeeded,
                        data: Bytes::from_static(b"data"),
                        exception: Bytes::new(),
                        stdout: String::new(),
                        stderr: String::new(),
                    });
                    let got = store
                        .apply(&[Report {
                            task_id: id,
                            event,
                            at: 5,
                            by: Actor::Endpoint,
                            finish,
                        }])
                        .await
                        .unwrap()
                        .pop()
                        .unwrap();
                    let want = match expected {
                        Outcome::Applied(t) => Applied::Moved {
                            to: t.to,
                            attempt: t.attempt,
                            cause: t.cause,
                        },
                        Outcome::Ignored(i) => Applied::Ignored(i),
                    };
                    assert_eq!(
                        got, want,
                        "{state:?} attempt 1 (max {max_retries}) + {kind:?} attempt {event_attempt}"
                    );
                    let record = store.get_task(id).await.unwrap().unwrap();
                    if let Applied::Moved { to, attempt, .. } = want {
                        assert_eq!((record.state, record.attempt), (to, attempt));
                        assert_eq!(record.history.last().unwrap().state, to);
                    } else {
                        assert_eq!((record.state, record.attempt), (state, 1));
                    }
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 7 * 10 * 3 * 3);
    store.delete_namespace().await.unwrap();
}

#[tokio::test]
async fn a_task_walks_its_life_cycle_and_keeps_one_result() {
    let store = store().await;
    let batch = BatchRecord {
        batch_id: BatchId::new(),
        owner: UserId::new(),
        endpoint_id: EndpointId::new(),
        size: 1,
        created_at: 1,
        task_group: None,
    };
    let task = NewTask {
        task_id: TaskId::new(),
        function_id: FunctionId::new(),
        max_retries: 2,
    };
    store
        .create_tasks(&batch, std::slice::from_ref(&task), Actor::WebService)
        .await
        .unwrap();
    let report = |kind, at, finish| Report {
        task_id: task.task_id,
        event: Event { kind, attempt: 0 },
        at,
        by: Actor::Endpoint,
        finish,
    };
    let done = |data: &'static [u8]| {
        Some(Finish {
            success: true,
            data: Bytes::from_static(data),
            exception: Bytes::new(),
            stdout: "hi\n".into(),
            stderr: String::new(),
        })
    };
    let applied = store
        .apply(&[
            report(EventKind::Queued, 2, None),
            report(EventKind::Received, 3, None),
            report(EventKind::Assigned, 4, None),
            report(EventKind::Started, 5, None),
            report(EventKind::Succeeded, 6, done(b"first")),
            report(EventKind::Succeeded, 7, done(b"second")),
        ])
        .await
        .unwrap();
    assert_eq!(applied[5], Applied::Ignored(ferry_proto::Ignored::Terminal));
    let record = store.get_task(task.task_id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Success);
    assert_eq!(record.result.as_deref(), Some("first"));
    assert_eq!(record.stdout.as_deref(), Some("hi\n"));
    assert_eq!(record.completed_at, Some(6));
    let states: Vec<_> = record.history.iter().map(|h| h.state).collect();
    assert_eq!(
        states,
        [
            TaskState::Received,
            TaskState::WaitingForEp,
            TaskState::WaitingForNodes,
            TaskState::WaitingForLaunch,
            TaskState::Running,
            TaskState::Success
        ]
    );
    let (b, ids) = store.get_batch(batch.batch_id).await.unwrap().unwrap();
    assert_eq!((b.size, ids), (1, vec![task.task_id]));
    store.delete_namespace().await.unwrap();
}

#[tokio::test]
async fn a_report_about_an_unknown_task_says_so() {
    let store = store().await;
    let got = store
        .apply(&[Report {
            task_id: TaskId::new(),
            event: Event {
                kind: EventKind::Queued,
                attempt: 0,
            },
            at: 1,
            by: Actor::Forwarder,
            finish: None,
        }])
        .await
        .unwrap();
    assert_eq!(got, vec![Applied::Unknown]);
}

#[tokio::test]
async fn tokens_map_to_their_user_and_nothing_else() {
    let store = store().await;
    let (user, token) = store.create_user("ada").await.unwrap();
    assert_eq!(store.user_for_token(&token).await.unwrap(), Some(user));
    assert_eq!(store.user_for_token("fy_wrong").await.unwrap(), None);
    store.delete_namespace().await.unwrap();
}
