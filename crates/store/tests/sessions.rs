//! A user's sessions listed newest first, a page at a time, others' left out, and old
//! entries trimmed as new sessions are written (on Redis and on the embedded store).

mod common;

use common::{batch, new_task, store};
use ferry_proto::{Actor, EndpointId, UserId};
use ferry_store::BatchRecord;

async fn session(store: &ferry_store::Store, owner: UserId, created_at: u64) -> BatchRecord {
    let mut b = batch(EndpointId::new(), 1);
    b.owner = owner;
    b.created_at = created_at;
    store
        .create_tasks(&b, &[new_task()], Actor::WebService)
        .await
        .unwrap();
    b
}

#[tokio::test]
async fn a_users_sessions_come_newest_first_a_page_at_a_time() {
    let store = store().await;
    let ada = UserId::new();
    let now = ferry_proto::time::now_micros();
    let made = [
        session(&store, ada, now - 3_000_000).await,
        session(&store, ada, now - 2_000_000).await,
        session(&store, ada, now - 1_000_000).await,
    ];
    session(&store, UserId::new(), now).await;

    let all = store.user_sessions(ada, None, 10).await.unwrap();
    let ids: Vec<_> = all.iter().map(|s| s.record.batch_id).collect();
    assert_eq!(ids, [made[2].batch_id, made[1].batch_id, made[0].batch_id]);
    assert!(all.iter().all(|s| s.record.owner == ada && s.record.size == 1));

    let page = store.user_sessions(ada, None, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    let older = store
        .user_sessions(ada, Some(page[1].record.created_at), 2)
        .await
        .unwrap();
    let ids: Vec<_> = older.iter().map(|s| s.record.batch_id).collect();
    assert_eq!(ids, [made[0].batch_id], "strictly before the page's last");
}

#[tokio::test]
async fn entries_older_than_the_records_keep_are_trimmed_when_a_session_is_written() {
    // `store()` keeps records 600 s.
    let store = store().await;
    let ada = UserId::new();
    let now = ferry_proto::time::now_micros();
    session(&store, ada, now - 700_000_000).await;
    let fresh = session(&store, ada, now).await;
    let listed = store.user_sessions(ada, None, 10).await.unwrap();
    let ids: Vec<_> = listed.iter().map(|s| s.record.batch_id).collect();
    assert_eq!(ids, [fresh.batch_id]);
}
