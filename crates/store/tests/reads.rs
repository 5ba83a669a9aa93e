//! Reading tasks back: the full record, the outcome read and the brief read agree.

mod common;

use bytes::Bytes;
use ferry_proto::{Actor, EndpointId, Event, EventKind};
use ferry_store::{Finish, Report};

use common::{one_task, outcome_of, store};

#[tokio::test]
async fn a_failed_task_reads_the_same_by_outcome_as_in_full() {
    let store = store().await;
    let (_, task) = one_task(&store, EndpointId::new()).await;
    let failed = Report {
        task_id: task.task_id,
        event: Event {
            kind: EventKind::Failed,
            attempt: 0,
        },
        at: 9,
        by: Actor::Endpoint,
        from: None,
        finish: Some(Finish {
            success: false,
            by_reference: false,
            data: Bytes::from_static(b"Traceback: boom"),
            exception: Bytes::from_static(b"00\nexc"),
            stdout: String::new(),
            stderr: "warning\n".into(),
        }),
    };
    store.apply(&[failed]).await.unwrap();
    let mut full = store.get_task(task.task_id).await.unwrap().unwrap();
    assert_eq!(full.cause, Some(ferry_proto::state::FailureCause::Exception));
    assert_eq!(full.traceback.as_deref(), Some("Traceback: boom"));
    full.history.clear();
    let outcome = store.get_task_outcomes(&[task.task_id]).await.unwrap();
    assert_eq!(outcome, vec![Some(full.clone())]);
    let brief = store.get_task_briefs(&[task.task_id]).await.unwrap();
    assert_eq!(brief, vec![Some(outcome_of(&full))]);
    store.delete_namespace().await.unwrap();
}
