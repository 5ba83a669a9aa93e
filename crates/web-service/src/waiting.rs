//! Long polls: requests that wait for tasks to finish (`?wait_secs=` on
//! `GET /v1/tasks/{id}`, `wait_secs` in `POST /v1/tasks/status`) sleep until the
//! transition script announces one of their tasks (see `Store::finished_tasks`), then
//! read the records again. One subscription per web-service serves every waiter. In a
//! process that also records results (`ferry-server`), the ends its own forwarder
//! records wake waiters in memory too (`Store::finished_here`), before Redis's message
//! comes back around.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::TaskId;
use ferry_store::Store;
use tokio::sync::Notify;

use crate::error::{ApiError, ApiResult};

/// The longest a request may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// A waiter reads its tasks again at least this often, whatever it heard: a last
/// guard should an announcement be lost with Redis.
pub const RECHECK: Duration = Duration::from_secs(5);

/// Who waits for which task. Cheap to clone.
#[derive(Clone, Default)]
pub struct Waiters {
    by_task: Arc<Mutex<HashMap<TaskId, Vec<Arc<Notify>>>>>,
}

/// One request's wait on some tasks; leaves the table when dropped.
pub struct Waiting {
    waiters: Waiters,
    ids: Vec<TaskId>,
    notify: Arc<Notify>,
}

impl Waiters {
    /// Starts waiting for any of `ids` to finish. Register before reading the records:
    /// an announcement between the read and the wait is then kept, not lost.
    pub fn register(&self, ids: &[TaskId]) -> Waiting {
        let notify = Arc::new(Notify::new());
        let mut by_task = self.by_task.lock().expect("waiters poisoned");
        for id in ids {
            by_task.entry(*id).or_default().push(notify.clone());
        }
        Waiting {
            waiters: self.clone(),
            ids: ids.to_vec(),
            notify,
        }
    }

    /// Reads with `read` until `done` accepts what it read or `wait` has passed, reading
    /// again whenever one of `ids` is announced. The wait is registered before the first
    /// read, so an end between a read and the wait is not missed.
    pub async fn read_until<T, E, F, Fut>(
        &self,
        ids: &[TaskId],
        wait: Duration,
        mut read: F,
        done: impl Fn(&T) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        if wait.is_zero() {
            return read().await;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let waiting = self.register(ids);
        loop {
            let value = read().await?;
            let now = tokio::time::Instant::now();
            if done(&value) || now >= deadline {
                return Ok(value);
            }
            waiting.announced(deadline - now).await;
        }
    }

    /// Wakes whoever waits for one of the announced tasks (`ids`: space-separated).
    pub fn finished(&self, ids: &str) {
        self.wake(ids.split(' ').filter_map(|id| id.parse::<TaskId>().ok()));
    }

    /// Wakes whoever waits for one of `ids`.
    pub fn ended(&self, ids: &[TaskId]) {
        self.wake(ids.iter().copied());
    }

    fn wake(&self, ids: impl Iterator<Item = TaskId>) {
        let by_task = self.by_task.lock().expect("waiters poisoned");
        if by_task.is_empty() {
            return;
        }
        for id in ids {
            for notify in by_task.get(&id).into_iter().flatten() {
                notify.notify_one();
            }
        }
    }

    /// Wakes every waiter (after announcements may have been missed).
    pub fn wake_all(&self) {
        for notify in self.by_task.lock().expect("waiters poisoned").values().flatten() {
            notify.notify_one();
        }
    }

    /// Listens to the store's announcements for as long as the process runs,
    /// subscribing again whenever the connection is lost; and to this process's own
    /// (see [`Store::finished_here`]).
    pub async fn listen(self, store: Store) {
        tokio::spawn(self.clone().listen_here(store.finished_here()));
        loop {
            match store.finished_tasks().await {
                Ok(mut announcements) => {
                    // Whatever ended while no one listened: waiters read again.
                    self.wake_all();
                    while let Some(ids) = announcements.next().await {
                        self.finished(&ids);
                    }
                    tracing::warn!("lost the finished-task subscription; subscribing again");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to finished tasks; trying again"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Waiters {
    /// Wakes the waiters of what this process's own transition calls ended.
    async fn listen_here(self, mut here: tokio::sync::broadcast::Receiver<ferry_store::EndedHere>) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match here.recv().await {
                Ok(ids) => self.ended(&ids),
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "in-process announcements missed; waiters read again");
                    self.wake_all();
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

impl Waiting {
    /// Returns when one of the tasks was announced, or after `limit`, whichever first.
    pub async fn announced(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit.min(RECHECK), self.notify.notified()).await;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut by_task = self.waiters.by_task.lock().expect("waiters poisoned");
        for id in &self.ids {
            if let Some(list) = by_task.get_mut(id) {
                list.retain(|n| !Arc::ptr_eq(n, &self.notify));
                if list.is_empty() {
                    by_task.remove(id);
                }
            }
        }
    }
}

/// `wait_secs` as a duration: absent or 0 is no wait; at most [`MAX_WAIT`].
pub fn wait_for(wait_secs: Option<f64>) -> ApiResult<Duration> {
    match wait_secs {
        None => Ok(Duration::ZERO),
        Some(s) if s.is_finite() && s >= 0.0 && s <= MAX_WAIT.as_secs_f64() => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(ApiError::bad_request(format!(
            "wait_secs is {s}; it must be from 0 to {}",
            MAX_WAIT.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_announcement_before_the_wait_is_kept() {
        let waiters = Waiters::default();
        let id = TaskId::new();
        let waiting = waiters.register(&[id]);
        waiters.finished(&format!("{} {}", TaskId::new(), id));
        tokio::time::timeout(Duration::from_secs(5), waiting.announced(MAX_WAIT))
            .await
            .expect("the kept announcement ends the wait at once");
    }

    #[tokio::test]
    async fn other_tasks_do_not_end_the_wait() {
        let waiters = Waiters::default();
        let waiting = waiters.register(&[TaskId::new()]);
        waiters.finished(&TaskId::new().to_string());
        let started = std::time::Instant::now();
        waiting.announced(Duration::from_millis(100)).await;
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn this_process_s_own_ends_wake_their_waiters_and_a_lag_wakes_all() {
        let waiters = Waiters::default();
        let (id, other) = (TaskId::new(), TaskId::new());
        let mine = waiters.register(&[id]);
        let theirs = waiters.register(&[other]);
        let (sender, receiver) = tokio::sync::broadcast::channel::<ferry_store::EndedHere>(1);
        tokio::spawn(waiters.clone().listen_here(receiver));
        sender.send(vec![TaskId::new(), id].into()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), mine.announced(MAX_WAIT))
            .await
            .expect("an end announced in memory wakes its waiter");
        let started = std::time::Instant::now();
        theirs.announced(Duration::from_millis(100)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "not another task's waiter"
        );

        // Two sends into a channel of one: the listener lags, so everyone reads again.
        let (sender, receiver) = tokio::sync::broadcast::channel::<ferry_store::EndedHere>(1);
        sender.send(vec![TaskId::new()].into()).unwrap();
        sender.send(vec![TaskId::new()].into()).unwrap();
        tokio::spawn(waiters.clone().listen_here(receiver));
        tokio::time::timeout(Duration::from_secs(5), theirs.announced(MAX_WAIT))
            .await
            .expect("a lagging listener wakes every waiter");
    }

    #[test]
    fn a_dropped_wait_leaves_the_table() {
        let waiters = Waiters::default();
        let id = TaskId::new();
        let first = waiters.register(&[id]);
        let second = waiters.register(&[id]);
        drop(first);
        assert_eq!(waiters.by_task.lock().unwrap()[&id].len(), 1);
        drop(second);
        assert!(waiters.by_task.lock().unwrap().is_empty());
    }

    #[test]
    fn wait_secs_is_checked() {
        assert_eq!(wait_for(None).unwrap(), Duration::ZERO);
        assert_eq!(wait_for(Some(1.5)).unwrap(), Duration::from_millis(1500));
        for bad in [-1.0, 61.0, f64::NAN] {
            let e = wait_for(Some(bad)).unwrap_err();
            assert!(format!("{e:?}").contains("wait_secs"), "{e:?}");
        }
    }
}
