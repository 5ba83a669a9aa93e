//! Tasks an endpoint fails at once instead of running: a function it does not allow,
//! requirements no node of it has (bytecode of another Python: `environments`).

use ferry_proto::TaskId;
use ferry_proto::frames::ManagerInfo;
use ferry_proto::messages::{Completion, Requires, StatusUpdate, TaskResult, TaskSpec};
use ferry_proto::time::now_micros;

use super::{Ack, Interchange, Sink};

impl<S: Sink, D: Ack> Interchange<S, D> {
    /// Fails a task without running it: its result (`reason` as the traceback) goes out
    /// like any result, and its delivery is settled once the broker confirms it.
    pub(super) fn fail_at_once(
        &mut self,
        spec: &TaskSpec,
        delivery: u64,
        steps: Vec<StatusUpdate>,
        reason: String,
    ) {
        self.metrics.refused.inc();
        self.publishing.insert(spec.task_id, (delivery, spec.attempt));
        let result = TaskResult {
            task_id: spec.task_id,
            attempt: spec.attempt,
            steps,
            completion: Completion::Failure {
                traceback: reason,
                exception: None,
            },
            group: spec.group,
            finished_at: now_micros(),
            stdout: String::new(),
            stderr: String::new(),
        };
        super::trace::attempt(self.endpoint_id, &[], &result, None);
        self.send_result(result);
    }

    /// Why no node of this endpoint can run a task with `requires`, when none of the
    /// nodes seen meets them (and failing is on); `None` while one might.
    pub(super) fn unmet(&self, task_id: TaskId, requires: &Requires) -> Option<String> {
        if !self.fail_unmet || self.nodes.is_empty() || self.nodes.iter().any(|n| requires.met_by(n)) {
            return None;
        }
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{} lacks {}", n.hostname, requires.unmet_by(n).join(", ")))
            .collect();
        Some(format!(
            "task {task_id} requires {}, which no node of endpoint {} has ({}); its provider \
             starts no other kind of node",
            requires.describe(),
            self.endpoint_id,
            nodes.join("; ")
        ))
    }

    /// Fails the waiting tasks whose requirements no node seen meets (a manager just
    /// said what its node has).
    pub(super) fn fail_unmet_waiting(&mut self) {
        if !self.fail_unmet {
            return;
        }
        let unmet: Vec<Requires> = self
            .pending
            .requirements()
            .filter(|r| !self.nodes.iter().any(|n| r.met_by(n)))
            .cloned()
            .collect();
        for requires in unmet {
            for task_id in self.pending.take(&requires) {
                let Some(t) = self.unhold(&task_id) else {
                    continue;
                };
                let reason = self.unmet(task_id, &requires).unwrap_or_default();
                tracing::warn!(%task_id, %reason, "failing a task no node can run");
                self.fail_at_once(&t.spec, t.delivery, t.steps, reason);
            }
        }
    }

    /// Why this endpoint fails a task at once instead of running it: its function is not
    /// allowed here, or it requires what no node here has (its environment and Python:
    /// [`Interchange::route`]).
    pub(super) fn refusal(&self, spec: &TaskSpec) -> Option<String> {
        if let Some(requires) = &spec.requires
            && let Some(reason) = self.unmet(spec.task_id, requires)
        {
            return Some(reason);
        }
        if let Some(allowed) = &self.allowed
            && !allowed.contains(&spec.function_id)
        {
            return Some(format!(
                "function {} is not allowed on endpoint {}: it runs only its allowed_functions",
                spec.function_id, self.endpoint_id
            ));
        }
        None
    }
}

/// Whether two managers' nodes have the same facts.
pub(super) fn same_node(a: &ManagerInfo, b: &ManagerInfo) -> bool {
    (a.cores, a.memory_bytes, a.gpus, &a.tags) == (b.cores, b.memory_bytes, b.gpus, &b.tags)
}
