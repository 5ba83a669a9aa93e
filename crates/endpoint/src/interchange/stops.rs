//! When tasks stop short: cancelled by their owner, or lost with their worker or
//! manager (retried through the broker while retries remain, failed after).

use std::collections::{HashMap, HashSet};

use ferry_proto::frames::ToManager;
use ferry_proto::messages::{Completion, StatusUpdate, TaskBatch, TaskResult, TaskSpec};
use ferry_proto::state::{Outcome, TaskStatus, transition};
use ferry_proto::time::now_micros;
use ferry_proto::{Actor, Event, EventKind, ManagerId, TaskId, TaskState};

use super::{Ack, Interchange, REMEMBER_CANCELLED, Sink};

/// A manager gone within this many seconds of its block's end went with the block.
const BLOCK_END_SLACK_SECS: u64 = 10;
/// How many times a task may go back to the queue with its block's end before such a
/// loss is charged like any other.
pub(super) const MAX_FREE_REQUEUES: u32 = 3;

impl<S: Sink, D: Ack> Interchange<S, D> {
    pub(super) async fn cancel(&mut self, task_ids: Vec<TaskId>) {
        let mut per_manager: HashMap<ManagerId, Vec<TaskId>> = HashMap::new();
        let mut dropped = HashSet::new();
        for task_id in task_ids {
            if self.cancelled.insert(task_id) {
                self.cancelled_order.push_back(task_id);
            }
            let Some(t) = self.unhold(&task_id) else {
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
        self.strategy.forget(manager_id);
        let at = now_micros();
        // Gone at (or after) its block's end, or after saying it leaves with its block:
        // the allocation ended, the tasks did nothing wrong.
        let block_over = manager
            .info
            .block_end
            .is_some_and(|end| at / 1_000_000 + BLOCK_END_SLACK_SECS >= end);
        if manager.leaving || block_over {
            tracing::info!(%manager_id, host = %manager.info.hostname, reason, tasks = manager.tasks.len(), "manager gone with its block");
            for (task_id, attempt) in manager.tasks {
                let why = format!("the block of manager {manager_id} ended ({reason})");
                self.block_ended(task_id, attempt, at, &why).await;
            }
            return;
        }
        tracing::warn!(%manager_id, host = %manager.info.hostname, reason, tasks = manager.tasks.len(), "manager lost");
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

    /// The block running a task ended under it: the task goes around again without
    /// being charged an attempt, unless it has done so `MAX_FREE_REQUEUES` times
    /// already (then it is an ordinary loss, so a task longer than any block ends).
    pub(super) async fn block_ended(&mut self, task_id: TaskId, attempt: u32, at: u64, reason: &str) {
        let Some(t) = self.inflight.get(&task_id) else {
            return;
        };
        if t.spec.attempt != attempt {
            return;
        }
        self.metrics.lost.inc();
        if t.spec.requeues >= MAX_FREE_REQUEUES {
            let reason =
                format!("{reason}; it went back {MAX_FREE_REQUEUES} times already, so this loss counts");
            return self.lost(task_id, attempt, at, &reason).await;
        }
        let status = TaskStatus {
            state: TaskState::Running,
            attempt,
            max_retries: t.spec.max_retries,
        };
        let Outcome::Applied(next) = transition(
            status,
            Event {
                kind: EventKind::BlockEnded,
                attempt,
            },
        ) else {
            return;
        };
        if next.to != TaskState::WaitingForNodes {
            // No next attempt (the last attempt number): it ends as a loss would end it.
            return self.lost(task_id, attempt, at, reason).await;
        }
        tracing::info!(%task_id, attempt, reason, "block ended under the task; it goes back to the queue, not charged");
        let t = self.unhold(&task_id).expect("present");
        let mut spec = t.spec;
        spec.attempt = next.attempt;
        spec.max_retries = next.max_retries;
        spec.requeues += 1;
        let update = StatusUpdate {
            task_id,
            attempt,
            kind: EventKind::BlockEnded,
            at,
            by: Actor::Endpoint,
        };
        self.republish(spec, update, t.delivery);
    }

    /// Publishes `spec` (a new attempt) to this endpoint's queue; once confirmed, `update`
    /// is reported and the old delivery settled for the task.
    fn republish(&mut self, spec: TaskSpec, update: StatusUpdate, delivery: u64) {
        let functions = self
            .functions
            .get(&spec.function_id)
            .cloned()
            .into_iter()
            .collect();
        self.sink.retry(
            TaskBatch {
                endpoint_id: self.endpoint_id,
                functions,
                tasks: vec![spec],
            },
            update,
            delivery,
        );
    }

    /// A held task failed: when its retry policy says to run it again and it has a retry
    /// left (the state machine's decision, as for a lost task), it goes back through the
    /// broker with the next attempt, held until its backoff is over, and the failed
    /// attempt shows as `lost`; `false` otherwise (the failure is its result).
    pub(super) async fn retry_failed(&mut self, result: &TaskResult) -> bool {
        let Completion::Failure { traceback, .. } = &result.completion else {
            return false;
        };
        let Some(t) = self.inflight.get(&result.task_id) else {
            return false;
        };
        let (Some(policy), Some(function)) = (&t.spec.retry, self.functions.get(&t.spec.function_id)) else {
            return false;
        };
        if !policy.matches(function.kind, traceback) {
            return false;
        }
        let status = TaskStatus {
            state: TaskState::Running,
            attempt: result.attempt,
            max_retries: t.spec.max_retries,
        };
        let event = Event {
            kind: EventKind::Lost,
            attempt: result.attempt,
        };
        let Outcome::Applied(next) = transition(status, event) else {
            return false;
        };
        if next.to != TaskState::WaitingForNodes {
            return false;
        }
        let wait = policy.backoff(result.attempt);
        let task_id = result.task_id;
        let cause = traceback
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        tracing::warn!(%task_id, attempt = result.attempt, retry_in_ms = wait.as_millis() as u64, cause, "task failed; running it again (its retry policy)");
        let t = self.unhold(&task_id).expect("present");
        for step in &result.steps {
            self.sink.status(*step);
        }
        let mut spec = t.spec;
        spec.attempt = next.attempt;
        spec.not_before = Some(now_micros() + wait.as_micros() as u64);
        let lost = StatusUpdate {
            task_id,
            attempt: result.attempt,
            kind: EventKind::Lost,
            at: result.finished_at,
            by: Actor::Endpoint,
        };
        self.republish(spec, lost, t.delivery);
        self.metrics.retried.inc();
        true
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
                let t = self.unhold(&task_id).expect("present");
                let mut spec = t.spec;
                spec.attempt = next.attempt;
                let lost = StatusUpdate {
                    task_id,
                    attempt,
                    kind: EventKind::Lost,
                    at,
                    by: Actor::Endpoint,
                };
                self.republish(spec, lost, t.delivery);
            }
            _ => {
                // Out of retries: the result says so, and goes out like any result (the
                // delivery is settled once the broker confirms it).
                tracing::warn!(%task_id, attempt, reason, "task lost and out of retries; it fails");
                let t = self.unhold(&task_id).expect("present");
                self.publishing.insert(task_id, (t.delivery, attempt));
                let result = TaskResult {
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
                };
                super::trace::attempt(self.endpoint_id, &[], &result, None);
                self.send_result(result);
            }
        }
    }
}
