//! Tasks no message carries any more. Whatever removed a task's message from its
//! endpoint's queue (an operator's purge, another consumer, a broker that lost what it
//! had not synced; also a message that came back when its endpoint crashed, then went),
//! the task would wait for ever: its record says `waiting-for-ep` (or in flight), and
//! nothing will ever report on it.
//!
//! The sweep looks for that from what it can see. An endpoint is judged only when it is
//! online and idle (its last heartbeat: no task waiting for a worker, none held by a
//! manager), its task queue has no message ready, and the reports queues are drained
//! (nothing on its way could still move the task). Its tasks `waiting-for-ep` or in
//! flight are noted; a second look at least `FERRY_STRANDED_AFTER_SECS` later, judged by
//! a newer heartbeat and under the same conditions, finds those still at the same attempt
//! stranded. Each is published again to its endpoint's queue as attempt+1, then recorded:
//! `requeued` for a task that never reached its endpoint (one retry more: nothing ran),
//! `endpoint-lost` for one its endpoint no longer holds. `crates/model` checks that this
//! leaves no task stuck, and that without it one is.

use std::collections::HashMap;
use std::time::Instant;

use ferry_proto::messages::EndpointLoad;
use ferry_proto::time::{Micros, now_micros};
use ferry_proto::{EndpointId, EventKind, TaskId, TaskState};
use ferry_store::Redispatch;

use super::{CHUNK, Sweeper};

/// Most tasks one look notes per endpoint.
const MOST_PER_LOOK: usize = 10_000;

/// The last look at each endpoint whose tasks looked stranded.
#[derive(Default)]
pub(super) struct Looks {
    /// When the sweep last looked at all.
    last: Option<Instant>,
    by_endpoint: HashMap<EndpointId, Look>,
}

struct Look {
    at: Instant,
    /// The endpoint's heartbeat that look judged by: the next must be newer.
    heartbeat: Micros,
    /// Task -> attempt, as the look saw them.
    tasks: HashMap<TaskId, u32>,
}

impl Sweeper {
    /// Looks for stranded tasks (at most four times per `stranded_after`) and publishes
    /// again those seen stranded twice.
    pub async fn sweep_stranded(&self) -> anyhow::Result<()> {
        if self.stranded_after.is_zero() {
            return Ok(());
        }
        let every = (self.stranded_after / 4).max(self.period);
        {
            let mut looks = self.looks.lock().expect("looks poisoned");
            if looks.last.is_some_and(|at| at.elapsed() < every) {
                return Ok(());
            }
            looks.last = Some(Instant::now());
        }
        // Reports still queued could move any task: judge nothing until they are in.
        let queued = self.broker.queue_len(&self.broker.status_queue()).await?
            + self.broker.queue_len(&self.broker.results_queue()).await?;
        if queued > 0 {
            self.looks.lock().expect("looks poisoned").by_endpoint.clear();
            return Ok(());
        }
        for endpoint in self.store.online_endpoints(now_micros()).await? {
            let seen = self.look(endpoint).await?;
            let stranded = {
                let mut looks = self.looks.lock().expect("looks poisoned");
                match seen {
                    None => {
                        looks.by_endpoint.remove(&endpoint);
                        continue;
                    }
                    Some(now) => match looks.by_endpoint.remove(&endpoint) {
                        Some(before)
                            if before.at.elapsed() >= self.stranded_after
                                && now.heartbeat > before.heartbeat =>
                        {
                            let stranded: Vec<(TaskId, u32)> = now
                                .tasks
                                .iter()
                                .filter(|(t, a)| before.tasks.get(t) == Some(a))
                                .map(|(&t, &a)| (t, a))
                                .collect();
                            if stranded.is_empty() {
                                looks.by_endpoint.insert(endpoint, now);
                            }
                            stranded
                        }
                        Some(before) => {
                            // Keep the first look until the bound has passed.
                            looks.by_endpoint.insert(endpoint, before);
                            continue;
                        }
                        None => {
                            looks.by_endpoint.insert(endpoint, now);
                            continue;
                        }
                    },
                }
            };
            if stranded.is_empty()
                || !self
                    .store
                    .claim_stranded(endpoint, self.stranded_after.as_millis() as u64)
                    .await?
            {
                continue;
            }
            let requeued = self.requeue_stranded(endpoint, &stranded).await?;
            tracing::warn!(
                %endpoint,
                tasks = requeued,
                "tasks no message carried any more (their endpoint idle, its queue empty) were published again"
            );
        }
        Ok(())
    }

    /// What one look sees of an endpoint: `None` unless it is idle with its queue empty
    /// and has tasks waiting for it or in flight by their records.
    async fn look(&self, endpoint: EndpointId) -> anyhow::Result<Option<Look>> {
        let Some(record) = self.store.get_endpoint(endpoint).await? else {
            return Ok(None);
        };
        let Ok(load) = serde_json::from_value::<EndpointLoad>(record.details.clone()) else {
            return Ok(None);
        };
        let Some(heartbeat) = record.last_heartbeat else {
            return Ok(None);
        };
        if load.pending_tasks > 0 || load.outstanding_tasks > 0 {
            return Ok(None);
        }
        if self
            .broker
            .queue_len(&self.broker.endpoint_queue(endpoint))
            .await?
            > 0
        {
            return Ok(None);
        }
        let mut tasks: HashMap<TaskId, u32> = self
            .store
            .waiting_for_endpoint(endpoint, MOST_PER_LOOK)
            .await?
            .into_iter()
            .collect();
        for chunk in self.store.in_flight(endpoint).await?.chunks(CHUNK) {
            for info in self.store.redispatch_info(chunk).await?.into_iter().flatten() {
                if in_flight(info.state) && tasks.len() < MOST_PER_LOOK {
                    tasks.insert(info.task_id, info.attempt);
                }
            }
        }
        if tasks.is_empty() {
            return Ok(None);
        }
        Ok(Some(Look {
            at: Instant::now(),
            heartbeat,
            tasks,
        }))
    }

    /// Publishes stranded tasks again as attempt+1, then records it; returns how many
    /// moved. A task that moved since the look is left alone.
    async fn requeue_stranded(
        &self,
        endpoint: EndpointId,
        stranded: &[(TaskId, u32)],
    ) -> anyhow::Result<usize> {
        let expected: HashMap<TaskId, u32> = stranded.iter().copied().collect();
        let ids: Vec<TaskId> = stranded.iter().map(|(t, _)| *t).collect();
        let mut functions = HashMap::new();
        let mut moved = 0;
        self.broker.declare_endpoint(endpoint).await?;
        for chunk in ids.chunks(CHUNK) {
            let infos: Vec<Redispatch> = self
                .store
                .redispatch_info(chunk)
                .await?
                .into_iter()
                .flatten()
                .filter(|i| i.endpoint_id == endpoint && expected.get(&i.task_id) == Some(&i.attempt))
                .collect();
            // Never reached the endpoint: not charged. In flight: the endpoint lost it.
            let (waiting, held): (Vec<Redispatch>, Vec<Redispatch>) = infos
                .into_iter()
                .filter(|i| i.state == TaskState::WaitingForEp || in_flight(i.state))
                .partition(|i| i.state == TaskState::WaitingForEp);
            for (infos, kind, extra) in [
                (waiting, EventKind::Requeued, 1),
                (held, EventKind::EndpointLost, 0),
            ] {
                if infos.is_empty() {
                    continue;
                }
                let (batch, included) = self
                    .task_batch(endpoint, &infos, (1, extra), &mut functions)
                    .await?;
                for (task_id, attempt) in self.publish_again(endpoint, &batch, &included, kind).await? {
                    moved += 1;
                    tracing::warn!(%task_id, %endpoint, attempt, event = ?kind, "the task's message was gone; published again");
                }
            }
        }
        Ok(moved)
    }
}

fn in_flight(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::WaitingForNodes | TaskState::WaitingForLaunch | TaskState::Running
    )
}
