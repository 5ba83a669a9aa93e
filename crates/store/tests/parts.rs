//! Batches written in parts (large submissions, several sessions at once) against a
//! real Redis: the counts match the records written at every point, the batch is never
//! done before its commit, a commit is all or nothing, and one whose writer died is
//! closed at the tasks it has.

use bytes::Bytes;
use ferry_proto::time::Micros;
use ferry_proto::{Actor, EndpointId, EventKind, TaskState};
use ferry_store::{BatchRecord, BatchStatus, Finish, NewTask, Part, Store};

mod common;
use common::{batch, event, new_task, store};

const NOW: Micros = 1_000;

async fn succeed(store: &Store, tasks: &[NewTask]) {
    let reports: Vec<_> = tasks
        .iter()
        .map(|t| ferry_store::Report {
            from: None,
            finish: Some(Finish {
                success: true,
                by_reference: false,
                data: Bytes::from_static(b"00"),
                exception: Bytes::new(),
                stdout: String::new(),
                stderr: String::new(),
            }),
            ..event(t.task_id, EventKind::Succeeded, 0)
        })
        .collect();
    store.apply(&reports).await.unwrap();
}

async fn status(store: &Store, batch: &BatchRecord) -> BatchStatus {
    store.batch_status(batch.batch_id).await.unwrap().unwrap()
}

/// Seconds Redis keeps the batch's hash and its task list (-1: for good).
async fn kept(store: &Store, batch: &BatchRecord) -> (i64, i64) {
    let mut conn = redis::Client::open(common::url_of(store))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("{}:batch:{{{}}}", store.namespace(), batch.batch_id);
    let hash: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await.unwrap();
    let tasks: i64 = redis::cmd("TTL")
        .arg(format!("{key}:tasks"))
        .query_async(&mut conn)
        .await
        .unwrap();
    (hash, tasks)
}

async fn write(store: &Store, batch: &BatchRecord, tasks: &[NewTask], part: Part) {
    store
        .create_part(batch, tasks, Actor::WebService, part, NOW)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_batch_written_in_parts_is_done_only_after_its_commit() {
    let store = store().await;
    let tasks: Vec<NewTask> = (0..5).map(|_| new_task()).collect();
    let batch = BatchRecord {
        deadline: Some(50),
        ..batch(EndpointId::new(), 5)
    };

    write(&store, &batch, &tasks[..2], Part::First).await;
    let s = status(&store, &batch).await;
    assert_eq!((s.record.size, s.counts[0]), (5, 2));
    assert_eq!(
        store.batch_task_ids(batch.batch_id, 0, -1).await.unwrap().len(),
        2
    );
    // The deadline counts from the commit: a sweep now must not time out a batch
    // whose other tasks are not written yet.
    assert!(
        store
            .expired_batches(i64::MAX as Micros, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.unfinished_batches_before(NOW, 10).await.unwrap(),
        vec![batch.batch_id]
    );
    assert!(store.being_written(batch.batch_id).await.unwrap());

    // The sweeper's read-then-close leaves a batch still being written watched (its
    // next part brings `received` tasks).
    store.close_open_batch(batch.batch_id).await.unwrap();
    assert_eq!(
        store.open_batches_before(NOW + 1, 10).await.unwrap(),
        vec![batch.batch_id]
    );

    // Every task written so far ends before the next part: not done.
    succeed(&store, &tasks[..2]).await;
    let s = status(&store, &batch).await;
    assert_eq!((s.counts[0], s.counts[5], s.done_at), (0, 2, None));

    write(&store, &batch, &tasks[2..4], Part::Middle).await;
    succeed(&store, &tasks[2..4]).await;
    assert_eq!(status(&store, &batch).await.done_at, None);

    // The sweeper watches the batch again, from its commit, for `received` tasks.
    write(&store, &batch, &tasks[4..], Part::Middle).await;
    assert_eq!(status(&store, &batch).await.done_at, None);
    assert!(store.commit_batches(&[&batch], NOW).await.unwrap());
    assert!(!store.being_written(batch.batch_id).await.unwrap());
    let s = status(&store, &batch).await;
    assert_eq!((s.counts[0], s.counts[5], s.done_at), (1, 4, None));
    assert_eq!(
        store.open_batches_before(NOW + 1, 10).await.unwrap(),
        vec![batch.batch_id]
    );
    assert_eq!(store.expired_batches(50, 10).await.unwrap(), vec![batch.batch_id]);
    assert!(
        store
            .unfinished_batches_before(i64::MAX as Micros, 10)
            .await
            .unwrap()
            .is_empty()
    );

    succeed(&store, &tasks[4..]).await;
    let s = status(&store, &batch).await;
    assert_eq!((s.counts[5], s.done_at), (5, Some(10)));
    let (hash, list) = kept(&store, &batch).await;
    assert!(hash > 0 && list > 0, "a done batch expires: {hash} {list}");
    let ids = store.batch_task_ids(batch.batch_id, 0, -1).await.unwrap();
    assert_eq!(ids, tasks.iter().map(|t| t.task_id).collect::<Vec<_>>());
    store.delete_namespace().await.unwrap();
}

#[tokio::test]
async fn a_half_written_batch_is_closed_at_the_tasks_it_has() {
    let store = store().await;
    let tasks: Vec<NewTask> = (0..3).map(|_| new_task()).collect();
    let batch = BatchRecord {
        deadline: Some(50),
        ..batch(EndpointId::new(), 10)
    };
    write(&store, &batch, &tasks, Part::First).await;
    succeed(&store, &tasks[..2]).await;

    assert!(store.close_unfinished_batch(batch.batch_id, 77).await.unwrap());
    let s = status(&store, &batch).await;
    assert_eq!((s.record.size, s.counts[0], s.done_at), (3, 1, None));
    assert_eq!(store.expired_batches(50, 10).await.unwrap(), vec![batch.batch_id]);
    // Closed once only.
    assert!(!store.close_unfinished_batch(batch.batch_id, 78).await.unwrap());

    succeed(&store, &tasks[2..]).await;
    let s = status(&store, &batch).await;
    assert_eq!((s.counts[5], s.done_at), (3, Some(10)));
    store.delete_namespace().await.unwrap();
}

#[tokio::test]
async fn a_half_written_batch_whose_tasks_all_ended_is_done_when_closed() {
    let store = store().await;
    let tasks: Vec<NewTask> = (0..2).map(|_| new_task()).collect();
    let batch = batch(EndpointId::new(), 4);
    write(&store, &batch, &tasks, Part::First).await;
    succeed(&store, &tasks).await;
    assert_eq!(status(&store, &batch).await.done_at, None);
    assert_eq!(kept(&store, &batch).await, (-1, -1), "kept while being written");
    assert!(store.close_unfinished_batch(batch.batch_id, 77).await.unwrap());
    let s = status(&store, &batch).await;
    assert_eq!((s.record.size, s.done_at), (2, Some(77)));
    let (hash, list) = kept(&store, &batch).await;
    assert!(
        hash > 0 && list > 0,
        "a closed, done batch expires: {hash} {list}"
    );
    let task = store.get_task(tasks[0].task_id).await.unwrap().unwrap();
    assert_eq!(task.state, TaskState::Success);
    store.delete_namespace().await.unwrap();
}

#[tokio::test]
async fn batches_are_committed_together_or_not_at_all() {
    let store = store().await;
    let (a_tasks, b_tasks): (Vec<NewTask>, Vec<NewTask>) = (
        (0..2).map(|_| new_task()).collect(),
        (0..3).map(|_| new_task()).collect(),
    );
    let a = batch(EndpointId::new(), 2);
    let b = BatchRecord {
        deadline: Some(50),
        ..batch(EndpointId::new(), 3)
    };
    write(&store, &a, &a_tasks, Part::First).await;
    write(&store, &b, &b_tasks, Part::First).await;
    // The sweeper took `b` for abandoned: the commit of both changes nothing.
    assert!(store.close_unfinished_batch(b.batch_id, 77).await.unwrap());
    assert!(!store.commit_batches(&[&a, &b], NOW).await.unwrap());
    assert!(store.being_written(a.batch_id).await.unwrap());
    assert_eq!(status(&store, &a).await.done_at, None);

    // Both still being written: both commit, and each ends with its tasks.
    let c = batch(EndpointId::new(), 2);
    write(&store, &c, &a_tasks[..0], Part::First).await;
    let c_tasks: Vec<NewTask> = (0..2).map(|_| new_task()).collect();
    write(&store, &c, &c_tasks, Part::Middle).await;
    assert!(store.commit_batches(&[&a, &c], NOW).await.unwrap());
    assert!(!store.being_written(a.batch_id).await.unwrap());
    assert!(!store.being_written(c.batch_id).await.unwrap());
    succeed(&store, &a_tasks).await;
    succeed(&store, &c_tasks).await;
    assert_eq!(status(&store, &a).await.done_at, Some(10));
    assert_eq!(status(&store, &c).await.done_at, Some(10));
    store.delete_namespace().await.unwrap();
}
