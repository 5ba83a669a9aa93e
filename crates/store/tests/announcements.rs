//! What the transition script tells others besides the records: the announcement of
//! ended tasks (which wakes long polls) and a watched batch's event stream.

use ferry_proto::{Actor, EndpointId, EventKind, TaskId};

mod common;
use common::{batch, event, new_task, one_task, store, url_of};

/// Waiting callers hear of a task's end from the transition script: one announcement
/// per call, naming the tasks that call ended (and only those).
#[tokio::test]
async fn the_script_announces_the_tasks_it_ends() {
    let store = store().await;
    let batch = batch(EndpointId::new(), 3);
    let tasks = [new_task(), new_task(), new_task()];
    store
        .create_tasks(&batch, &tasks, Actor::WebService)
        .await
        .unwrap();
    let [a, b, c] = tasks.map(|t| t.task_id);
    let mut announcements = store.finished_tasks().await.unwrap();

    // b only moves on; a and c end in the same call.
    store
        .apply(&[
            event(a, EventKind::Cancelled, 0),
            event(b, EventKind::Queued, 0),
            event(c, EventKind::Cancelled, 0),
        ])
        .await
        .unwrap();
    // Ending an ended task again announces nothing; b's end is the next announcement.
    store.apply(&[event(a, EventKind::Cancelled, 0)]).await.unwrap();
    store.apply(&[event(b, EventKind::Cancelled, 0)]).await.unwrap();

    let mut heard = async || -> Vec<TaskId> {
        let ids = tokio::time::timeout(std::time::Duration::from_secs(10), announcements.next())
            .await
            .expect("an announcement within 10 s")
            .expect("the subscription holds");
        ids.split(' ').map(|id| id.parse().unwrap()).collect()
    };
    assert_eq!(heard().await, vec![a, c]);
    assert_eq!(heard().await, vec![b]);
    store.delete_namespace().await.unwrap();
}

/// In a process that both ends tasks and waits for them, a listener hears the ends
/// its own calls make in memory, from any `Store` on the same namespace, once the call
/// has returned; another namespace's ends are not heard.
#[tokio::test]
async fn this_process_hears_its_own_ends_in_memory() {
    let other = store().await;
    let store = store().await;
    let mut here = store.finished_here();
    let ours = batch(EndpointId::new(), 2);
    let tasks = [new_task(), new_task()];
    store
        .create_tasks(&ours, &tasks, Actor::WebService)
        .await
        .unwrap();
    let [a, b] = tasks.map(|t| t.task_id);
    let theirs = batch_of_one(&other).await;
    other
        .apply(&[event(theirs, EventKind::Cancelled, 0)])
        .await
        .unwrap();

    // A second Store on this namespace (as the forwarder's beside the web-service's).
    let forwarder = ferry_store::Store::connect(&url_of(&store), store.namespace(), 600)
        .await
        .unwrap();
    forwarder
        .apply(&[event(a, EventKind::Queued, 0), event(b, EventKind::Cancelled, 0)])
        .await
        .unwrap();
    forwarder
        .apply(&[event(a, EventKind::Cancelled, 0)])
        .await
        .unwrap();
    // Ending it again announces nothing.
    forwarder
        .apply(&[event(a, EventKind::Cancelled, 0)])
        .await
        .unwrap();

    let heard = here
        .try_recv()
        .expect("b's end was announced when its call returned");
    assert_eq!(&heard[..], &[b]);
    assert_eq!(&here.try_recv().unwrap()[..], &[a]);
    assert!(
        here.try_recv().is_err(),
        "nothing else: not the other namespace's, not a again"
    );
    store.delete_namespace().await.unwrap();
    other.delete_namespace().await.unwrap();
}

async fn batch_of_one(store: &ferry_store::Store) -> TaskId {
    let task = new_task();
    store
        .create_tasks(
            &batch(EndpointId::new(), 1),
            std::slice::from_ref(&task),
            Actor::WebService,
        )
        .await
        .unwrap();
    task.task_id
}

/// A watched batch's stream gets every step; its last cursor tells a reader whether it
/// has read everything.
#[tokio::test]
async fn the_last_event_of_a_watched_batch_is_its_last_step() {
    let store = store().await;
    let (batch, task) = one_task(&store, EndpointId::new()).await;
    assert_eq!(store.last_batch_event(batch.batch_id).await.unwrap(), None);
    store.watch_batch(batch.batch_id).await.unwrap();
    store
        .apply(&[
            event(task.task_id, EventKind::Queued, 0),
            event(task.task_id, EventKind::Cancelled, 0),
        ])
        .await
        .unwrap();
    let events = store.batch_events_after(batch.batch_id, "0", 100).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        store.last_batch_event(batch.batch_id).await.unwrap().as_deref(),
        Some(events[1].cursor.as_str())
    );
    store.delete_namespace().await.unwrap();
}
