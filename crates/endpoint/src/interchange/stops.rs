//! When tasks stop short: cancelled by their owner, or lost with their worker or
//! manager (retried through the broker while retries remain, failed after).

use std::collections::{HashMap, HashSet};

use ferry_proto::frames::ToManager;
use ferry_proto::messages::{Completion, StatusUpdate, TaskBatch, TaskResult};
use ferry_proto::state::{Outcome, TaskStatus, transition};
use ferry_proto::time::now_micros;
use ferry_proto::{Actor, Event, EventKind, ManagerId, TaskId, TaskState};

use super::{Ack, Interchange, REMEMBER_CANCELLED, Sink};

impl<S: Sink, D: Ack> Interchange<S, D> {
    pub(super) async fn cancel(&mut self, task_ids: Vec<TaskId>) {
        let mut per_manager: HashMap<ManagerId, Vec<TaskId>> = HashMap::new();
        let mut dropped = HashSet::new();
        for task_id in task_ids {
            if self.cancelled.insert(task_id) {
                self.cancelled_order.push_back(task_id);
            }
            let Some(t) = self.inflight.remove(&task_id) else {
                continue;
            };
            tracing::info!(%task_id, attempt = t.spec.attempt, "cancelled; stopping it");
            match t.manager {
                // The manager reports it lost once stopped, which frees its slot.
                Some(m) => per_manager.entry(m).or_default().push(task_id),
                None => {
                    dropped.insert(task_id);
                }
            }
            self.settle(t.delivery).await;
        }
        if !dropped.is_empty() {
            self.pending.retain(|t| !dropped.contains(t));
        }
        for (manager_id, task_ids) in per_manager {
            if let Some(m) = self.managers.get(&manager_id) {
                let _ = m.tx.send(ToManager::Cancel { task_ids });
            }
        }
        while self.cancelled_order.len() > REMEMBER_CANCELLED {
            for _ in 0..REMEMBER_CANCELLED / 2 {
                if let Some(old) = self.cancelled_order.pop_front() {
                    self.cancelled.remove(&old);
                }
            }
        }
    }

    pub(super) async fn manager_gone(&mut self, manager_id: ManagerId, reason: &str) {
        let Some(manager) = self.managers.remove(&manager_id) else {
            return;
        };
        self.by_free.remove(&(manager.free, manager_id));
        tracing::warn!(%manager_id, host = %manager.info.hostname, reason, tasks = manager.tasks.len(), "manager lost");
        let at = now_micros();
        for (task_id, attempt) in manager.tasks {
            self.lost(
                task_id,
                attempt,
                at,
                &format!("manager {manager_id} lost: {reason}"),
            )
            .await;
        }
    }

    /// A task's worker or manager is gone: retry it here, or let it fail once its retries
    /// are spent. The decision is the state machine's.
    pub(super) async fn lost(&mut self, task_id: TaskId, attempt: u32, at: u64, reason: &str) {
        let Some(t) = self.inflight.get_mut(&task_id) else {
            return;
        };
        if t.spec.attempt != attempt {
            return;
        }
        let status = TaskStatus {
            state: TaskState::Running,
            attempt,
            max_retries: t.spec.max_retries,
        };
        match transition(
            status,
            Event {
                kind: EventKind::Lost,
                attempt,
            },
        ) {
            Outcome::Applied(next) if next.to == TaskState::WaitingForNodes => {
                // The retry goes through the broker: published (confirmed) before the loss
                // is reported and the old message acked, so whatever crashes in between,
                // a message of the newest attempt is in the queue.
                tracing::warn!(%task_id, attempt, reason, "task lost; retrying");
                let t = self.inflight.remove(&task_id).expect("present");
                let mut spec = t.spec;
                spec.attempt = next.attempt;
                let functions = self
                    .functions
                    .get(&spec.function_id)
                    .cloned()
                    .into_iter()
                    .collect();
                let lost = StatusUpdate {
                    task_id,
                    attempt,
                    kind: EventKind::Lost,
                    at,
                    by: Actor::Endpoint,
                };
                self.sink.retry(
                    TaskBatch {
                        endpoint_id: self.endpoint_id,
                        functions,
                        tasks: vec![spec],
                    },
                    lost,
                    t.delivery,
                );
            }
            _ => {
                // Out of retries: the result says so, and goes out like any result (the
                // delivery is settled once the broker confirms it).
                tracing::warn!(%task_id, attempt, reason, "task lost and out of retries; it fails");
                let t = self.inflight.remove(&task_id).expect("present");
                self.publishing.insert(task_id, (t.delivery, attempt));
                self.sink.result(TaskResult {
                    task_id,
                    attempt,
                    steps: t.steps,
                    completion: Completion::Lost {
                        reason: format!(
                            "task {task_id} lost on attempt {attempt} ({reason}); its {} retries are spent",
                            t.spec.max_retries
                        ),
                    },
                    group: t.spec.group,
                    finished_at: at,
                    stdout: String::new(),
                    stderr: String::new(),
                });
            }
        }
    }
}
