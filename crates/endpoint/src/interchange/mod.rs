//! The interchange: which manager runs which task.
//!
//! One task owns all the state (pending tasks, managers and their free slots, tasks in
//! flight, the AMQP deliveries they came in) and reacts to [`Input`]s one at a time, so
//! no lock is ever taken. A delivery is acked only once every task it carried has its
//! result confirmed by the broker (or was settled as lost): delivery is at-least-once,
//! recording exactly-once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_broker::Delivery;
use ferry_proto::frames::{FromManager, ManagerInfo, ToManager};
use ferry_proto::messages::{
    EndpointLoad, FunctionCode, ManagerLoad, StatusUpdate, TaskBatch, TaskResult, TaskSpec,
};
use ferry_proto::time::now_micros;
use ferry_proto::{Actor, EndpointId, EventKind, FunctionId, ManagerId, TaskId};
use tokio::sync::{mpsc, watch};

mod environments;
mod pending;
mod ports;
mod refusals;
mod stops;
pub mod strategy;
#[cfg(test)]
mod tests;
mod trace;

pub use environments::EnvironmentInfo;
pub use ports::{Ack, BlockLoad, Capacity, Input, Sink};

/// Cancelled task ids remembered to drop copies that arrive later (a redelivery, or a
/// task still queued behind others when its cancel came). Past this many the oldest
/// half is forgotten.
const REMEMBER_CANCELLED: usize = 1_000_000;
/// Tasks whose result this endpoint published, remembered (with the attempt) to drop
/// copies of the same attempt that come later: a submission the forwarder published
/// again after it crashed, a message the broker gave back. Past this many the oldest
/// half is forgotten (a redelivered message is also checked with the web-service).
const REMEMBER_FINISHED: usize = 200_000;
/// How long a task may wait here for a manager before its `waiting-for-nodes` step is
/// reported on its own. A task handed to a manager sooner reports the step then, and
/// when it also finishes within the reporter's linger the step travels with its result:
/// under load most tasks cost the transition script one call less.
pub const RECEIVED_LINGER: Duration = Duration::from_millis(500);
/// Inputs handled together before tasks are handed out (see [`Interchange::run`]).
const MOST_INPUTS_PER_ROUND: usize = 256;

struct Manager {
    tx: mpsc::UnboundedSender<ToManager>,
    info: ManagerInfo,
    free: u32,
    functions_sent: HashSet<FunctionId>,
    /// Tasks (and which attempt of each) this manager holds.
    tasks: HashSet<(TaskId, u32)>,
    last_seen: Instant,
    /// Its block ends soon: it gets no more tasks (its strategy sees it full).
    draining: bool,
    /// The order it connected in, for the strategy.
    order: u64,
    /// Its block is ending now: what it still holds is lost with the allocation, not
    /// through a fault of the task's.
    leaving: bool,
}

impl Manager {
    /// What the strategy is told of it.
    fn facts(&self) -> strategy::Facts<'_> {
        strategy::Facts {
            info: &self.info,
            order: self.order,
        }
    }
}

struct InFlight {
    spec: TaskSpec,
    delivery: u64,
    manager: Option<ManagerId>,
    /// Endpoint-side steps of the current attempt, sent again with the result.
    steps: Vec<StatusUpdate>,
    /// Whether the `waiting-for-nodes` step (`steps[0]`) went to the sink yet.
    received_reported: bool,
}

struct Tracked<D> {
    delivery: D,
    remaining: usize,
}

pub struct Interchange<S, D = Delivery> {
    endpoint_id: EndpointId,
    sink: S,
    manager_timeout: Duration,
    pending: pending::Waiting,
    /// Tasks whose `waiting-for-nodes` step is not reported yet, oldest first (entries
    /// whose task moved on are skipped when they come up).
    unreported: VecDeque<(Instant, TaskId)>,
    /// How many tasks wait for a manager, for the queue consumer's backpressure.
    pending_count: watch::Sender<usize>,
    /// Tasks waiting and what each block holds, for scaling (updated every tick).
    capacity: watch::Sender<Capacity>,
    inflight: HashMap<TaskId, InFlight>,
    /// Results sent to the broker, awaiting its confirm: task -> delivery.
    publishing: HashMap<TaskId, (u64, u32)>,
    functions: HashMap<FunctionId, FunctionCode>,
    managers: HashMap<ManagerId, Manager>,
    deliveries: HashMap<u64, Tracked<D>>,
    next_delivery: u64,
    cancelled: HashSet<TaskId>,
    cancelled_order: VecDeque<TaskId>,
    /// Tasks whose result was published, with its attempt (see [`REMEMBER_FINISHED`]).
    finished: HashMap<TaskId, u32>,
    finished_order: VecDeque<TaskId>,
    /// Set while stopping: nothing more is handed out, and this is told once the
    /// managers are idle and every result is published.
    draining: Option<tokio::sync::oneshot::Sender<Vec<(TaskId, u32)>>>,
    /// Which manager gets tasks next, told every `Manager::free` as it changes (the
    /// default's pick is O(log managers), not a scan: an endpoint may have thousands).
    strategy: Box<dyn strategy::Strategy>,
    /// Managers connected so far (the next one's `order`).
    connected: u64,
    /// When set, the only functions this endpoint runs (`allowed_functions`): a task of
    /// another fails at once, saying so. The service refuses such tasks already; this
    /// holds against one that reached the queue another way.
    allowed: Option<HashSet<FunctionId>>,
    /// The workers' Python (its version, and the interpreter): a task whose function is
    /// bytecode of another major.minor fails at once, naming both. `None`: not known
    /// (managers started by hand), nothing is refused.
    python: Option<WorkersPython>,
    /// The facts of every kind of node a manager has connected from since the start
    /// (one of each: an endpoint's provider starts one kind of node).
    nodes: Vec<ManagerInfo>,
    /// Fail a task whose requirements no node seen meets (`false` for managers started
    /// by hand, where another kind of node may still come).
    fail_unmet: bool,
    /// Tasks held until their `not_before` (a retry's backoff), soonest first.
    delayed: std::collections::BinaryHeap<std::cmp::Reverse<(u64, TaskId)>>,
    /// The task environments, and the tasks held of those that recycle when unreferenced.
    environments: environments::Environments,
    /// What `/metrics` shows of it.
    metrics: Arc<crate::metrics::EndpointMetrics>,
}

/// What the endpoint's workers run Python tasks with.
#[derive(Debug, Clone)]
pub struct WorkersPython {
    /// `3.11.7`
    pub version: String,
    /// The interpreter (`provider.python`).
    pub interpreter: String,
}

impl<S: Sink, D: Ack> Interchange<S, D> {
    pub fn new(endpoint_id: EndpointId, sink: S, manager_timeout: Duration) -> Self {
        Self {
            endpoint_id,
            sink,
            manager_timeout,
            pending: pending::Waiting::default(),
            unreported: VecDeque::new(),
            pending_count: watch::Sender::new(0),
            capacity: watch::Sender::new(Capacity::default()),
            inflight: HashMap::new(),
            publishing: HashMap::new(),
            functions: HashMap::new(),
            managers: HashMap::new(),
            deliveries: HashMap::new(),
            next_delivery: 0,
            cancelled: HashSet::new(),
            cancelled_order: VecDeque::new(),
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
            draining: None,
            strategy: strategy::StrategyKind::default().build(),
            connected: 0,
            allowed: None,
            python: None,
            nodes: Vec::new(),
            fail_unmet: false,
            delayed: std::collections::BinaryHeap::new(),
            environments: Default::default(),
            metrics: Default::default(),
        }
    }

    /// Remembers tasks whose results an earlier run of this endpoint published (saved
    /// when it stopped), to drop copies of them that come again.
    pub fn remembering(mut self, finished: Vec<(TaskId, u32)>) -> Self {
        for (task, attempt) in finished {
            self.remember_finished(task, attempt);
        }
        self
    }

    /// Waiting tasks gain a priority step per `aging` waited (see [`pending::Pending`]).
    pub fn aging(mut self, aging: Option<Duration>) -> Self {
        self.pending = pending::Waiting::aging(aging);
        self
    }

    /// Counts what it does in `metrics` (default: metrics of its own, served nowhere).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::EndpointMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// How the manager that gets tasks next is chosen (`strategy` in the config).
    pub fn with_strategy(mut self, kind: strategy::StrategyKind) -> Self {
        self.strategy = kind.build();
        self
    }

    /// The workers' Python, against which functions serialized as bytecode are checked.
    pub fn with_python(mut self, python: Option<WorkersPython>) -> Self {
        self.python = python;
        self
    }

    /// With `fail`, a task whose requirements no node a manager connected from meets
    /// fails at once (the provider starts only such nodes); without, it waits for one.
    pub fn failing_unmet(mut self, fail: bool) -> Self {
        self.fail_unmet = fail;
        self
    }

    /// Runs only these functions (`allowed_functions`); `None`: any.
    pub fn allowing(mut self, functions: Option<Vec<FunctionId>>) -> Self {
        self.allowed = functions.map(|f| f.into_iter().collect());
        self
    }

    /// How many tasks wait for a manager, kept current after every input.
    pub fn pending_tasks(&self) -> watch::Receiver<usize> {
        self.pending_count.subscribe()
    }

    /// Tasks waiting and what each block's managers hold, as of the last tick.
    pub fn capacity(&self) -> watch::Receiver<Capacity> {
        self.capacity.subscribe()
    }

    /// Reacts to inputs until the channel closes. Inputs that queued up while the last
    /// ones were handled are taken together before tasks are handed out: under load a
    /// manager then gets one `Run` frame for the slots several results freed, not one
    /// frame (and one wake-up on each side) per task. Nothing is held back in time.
    pub async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input<D>>) {
        loop {
            let due = self.delayed.peek().map(|std::cmp::Reverse((at, _))| *at);
            let input = tokio::select! {
                input = inputs.recv() => match input {
                    Some(input) => input,
                    None => break,
                },
                // A retry's backoff is over: it waits for a manager from now on.
                _ = until_micros(due) => Input::Wake,
            };
            self.handle(input).await;
            for _ in 1..MOST_INPUTS_PER_ROUND {
                let Ok(input) = inputs.try_recv() else { break };
                self.handle(input).await;
            }
            self.hand_out();
            self.drained();
        }
        for manager in self.managers.values() {
            let _ = manager.tx.send(ToManager::Shutdown);
        }
    }

    /// Handles one input, then hands out whatever can be handed out.
    pub async fn step(&mut self, input: Input<D>) {
        self.handle(input).await;
        self.hand_out();
        self.drained();
    }

    async fn handle(&mut self, input: Input<D>) {
        match input {
            Input::Tasks { batch, delivery } => self.receive(*batch, *delivery).await,
            Input::ManagerConnected { info, tx } => {
                tracing::info!(manager_id = %info.manager_id, workers = info.workers, host = %info.hostname, "manager connected");
                let free = info.capacity.max(info.workers);
                let order = self.connected;
                self.connected += 1;
                self.strategy
                    .set(info.manager_id, free, strategy::Facts { info: &info, order });
                if !self.nodes.iter().any(|n| refusals::same_node(n, &info)) {
                    self.nodes.push(info.clone());
                }
                self.managers.insert(
                    info.manager_id,
                    Manager {
                        tx,
                        free,
                        info,
                        functions_sent: HashSet::new(),
                        tasks: HashSet::new(),
                        last_seen: Instant::now(),
                        draining: false,
                        leaving: false,
                        order,
                    },
                );
                self.fail_unmet_waiting();
            }
            Input::FromManager { manager, message } => self.manager_said(manager, message).await,
            Input::ManagerGone { manager, reason } => self.manager_gone(manager, &reason).await,
            Input::Published { tasks } => {
                for task in tasks {
                    if let Some((delivery, attempt)) = self.publishing.remove(&task) {
                        self.remember_finished(task, attempt);
                        self.settle(delivery).await;
                    }
                }
            }
            Input::Settle { delivery } => self.settle(delivery).await,
            Input::Cancel { task_ids } => self.cancel(task_ids).await,
            Input::Drain { done } => {
                tracing::info!(
                    running = self.inflight.values().filter(|t| t.manager.is_some()).count(),
                    waiting = self.pending.len(),
                    "stopping: no more tasks are handed out; waiting for the running ones"
                );
                self.draining = Some(done);
            }
            Input::Wake => {}
            Input::Tick => {
                let stale: Vec<ManagerId> = self
                    .managers
                    .iter()
                    .filter(|(_, m)| m.last_seen.elapsed() > self.manager_timeout)
                    .map(|(id, _)| *id)
                    .collect();
                for id in stale {
                    self.manager_gone(id, "its heartbeats stopped").await;
                }
                let alive = self
                    .managers
                    .values()
                    .flat_map(|m| m.tasks.iter().map(|(task, _)| *task))
                    .collect();
                let load = self.load();
                self.metrics.load(&load);
                self.sink.heartbeat(load, alive);
                self.capacity.send_replace(self.block_loads());
            }
        }
    }

    /// Assigns what can be assigned and reports what has waited long enough.
    fn hand_out(&mut self) {
        self.release_delayed();
        // A stopping endpoint starts nothing new (the tasks it holds go back to the
        // queue with their unacked messages).
        if self.draining.is_none() {
            self.assign();
        }
        self.report_waiting();
        let pending = self.pending.len();
        self.pending_count
            .send_if_modified(|n| std::mem::replace(n, pending) != pending);
    }

    /// Tasks whose backoff is over wait for a manager like any other.
    fn release_delayed(&mut self) {
        let now = now_micros();
        while let Some(&std::cmp::Reverse((at, task_id))) = self.delayed.peek()
            && at <= now
        {
            self.delayed.pop();
            if let Some(t) = self.inflight.get(&task_id)
                && t.manager.is_none()
            {
                self.pending
                    .push_back(task_id, t.spec.priority, t.spec.requires.as_ref());
            }
        }
    }

    /// Reports `waiting-for-nodes` for the tasks that have waited RECEIVED_LINGER
    /// without a manager.
    fn report_waiting(&mut self) {
        if self.unreported.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some(&(at, task_id)) = self.unreported.front()
            && now.duration_since(at) >= RECEIVED_LINGER
        {
            self.unreported.pop_front();
            if let Some(t) = self.inflight.get_mut(&task_id)
                && !t.received_reported
            {
                t.received_reported = true;
                self.sink.status(t.steps[0]);
            }
        }
    }

    /// While draining: once no task runs on a manager and every result is published,
    /// tells the stopping endpoint, with the tasks whose results were published.
    fn drained(&mut self) {
        if self.draining.is_none()
            || !self.publishing.is_empty()
            || self.inflight.values().any(|t| t.manager.is_some())
        {
            return;
        }
        if let Some(done) = self.draining.take() {
            let _ = done.send(self.finished.iter().map(|(t, a)| (*t, *a)).collect());
        }
    }

    fn remember_finished(&mut self, task: TaskId, attempt: u32) {
        if self.finished.insert(task, attempt).is_none() {
            self.finished_order.push_back(task);
        }
        if self.finished_order.len() > REMEMBER_FINISHED {
            for old in self.finished_order.drain(..REMEMBER_FINISHED / 2) {
                self.finished.remove(&old);
            }
        }
    }

    async fn receive(&mut self, batch: TaskBatch, delivery: D) {
        for f in batch.functions {
            self.functions.insert(f.function_id, f);
        }
        let id = self.next_delivery;
        self.next_delivery += 1;
        let mut fresh = 0;
        let now = now_micros();
        let arrived = Instant::now();
        for mut spec in batch.tasks {
            if self.cancelled.contains(&spec.task_id) {
                tracing::debug!(task_id = %spec.task_id, "a cancelled task arrived; dropped");
                continue;
            }
            if self
                .finished
                .get(&spec.task_id)
                .is_some_and(|&a| spec.attempt <= a)
            {
                tracing::info!(task_id = %spec.task_id, attempt = spec.attempt, "a copy of a task whose result was published arrived; not run");
                continue;
            }
            // Of two copies of a task, the newer attempt wins (a copy published before the
            // forwarder crashed can arrive after a retry); older and equal copies are
            // settled at once. The model checker (crates/model) needs both rules.
            let held = self
                .inflight
                .get(&spec.task_id)
                .map(|t| t.spec.attempt)
                .or_else(|| self.publishing.get(&spec.task_id).map(|p| p.1));
            match held {
                Some(attempt) if attempt >= spec.attempt => {
                    tracing::debug!(task_id = %spec.task_id, attempt = spec.attempt, "older or equal copy of a held task; settled");
                    continue;
                }
                Some(attempt) => {
                    tracing::debug!(task_id = %spec.task_id, old = attempt, new = spec.attempt, "a newer attempt supersedes the held one");
                    if let Some(old) = self.unhold(&spec.task_id) {
                        self.settle(old.delivery).await;
                    }
                    self.pending.retain(|t| *t != spec.task_id);
                }
                None => {}
            }
            // Reported when a manager takes the task, or once it has waited
            // RECEIVED_LINGER (see report_waiting).
            let step = StatusUpdate {
                task_id: spec.task_id,
                attempt: spec.attempt,
                kind: EventKind::Received,
                at: now,
                by: Actor::Endpoint,
            };
            self.metrics.received.inc();
            if let Some(reason) = self.refusal(&spec).or_else(|| self.route(&mut spec)) {
                tracing::warn!(task_id = %spec.task_id, function_id = %spec.function_id, %reason, "refusing a task");
                self.fail_at_once(&spec, id, vec![step], reason);
                fresh += 1;
                continue;
            }
            match spec.not_before {
                Some(at) if at > now => self.delayed.push(std::cmp::Reverse((at, spec.task_id))),
                _ => self
                    .pending
                    .push_back(spec.task_id, spec.priority, spec.requires.as_ref()),
            }
            self.unreported.push_back((arrived, spec.task_id));
            self.hold(
                spec.task_id,
                InFlight {
                    spec,
                    delivery: id,
                    manager: None,
                    steps: vec![step],
                    received_reported: false,
                },
            );
            fresh += 1;
        }
        if fresh == 0 {
            if let Err(e) = delivery.ack().await {
                tracing::warn!(error = %e, "cannot ack a delivery");
            }
            return;
        }
        self.deliveries.insert(
            id,
            Tracked {
                delivery,
                remaining: fresh,
            },
        );
    }

    async fn manager_said(&mut self, manager_id: ManagerId, message: FromManager) {
        if let Some(m) = self.managers.get_mut(&manager_id) {
            m.last_seen = Instant::now();
        }
        match message {
            FromManager::Register { .. } | FromManager::Heartbeat { .. } => {}
            FromManager::Started { task_id, attempt, at } => {
                if let Some(t) = self.inflight.get_mut(&task_id)
                    && t.spec.attempt == attempt
                {
                    let step = StatusUpdate {
                        task_id,
                        attempt,
                        kind: EventKind::Started,
                        at,
                        by: Actor::Worker,
                    };
                    self.sink.status(step);
                }
            }
            FromManager::Finished(mut result) => {
                let task_id = result.task_id;
                self.release(manager_id, task_id, result.attempt);
                if self.inflight.get(&task_id).map(|t| t.spec.attempt) != Some(result.attempt) {
                    tracing::debug!(%task_id, attempt = result.attempt, "result for an attempt no longer held; dropped");
                    return;
                }
                if ferry_telemetry::trace::on()
                    && let Some(t) = self.inflight.get(&task_id)
                {
                    let host = self.managers.get(&manager_id).map(|m| m.info.hostname.as_str());
                    trace::attempt(self.endpoint_id, &t.steps, &result, host);
                }
                if self.retry_failed(&result).await {
                    return;
                }
                let t = self.unhold(&task_id).expect("checked above");
                let mut steps = t.steps;
                steps.append(&mut result.steps);
                result.steps = steps;
                result.group = t.spec.group;
                self.publishing.insert(task_id, (t.delivery, result.attempt));
                self.send_result(result);
            }
            FromManager::Lost {
                task_id,
                attempt,
                at,
                reason,
            } => {
                self.release(manager_id, task_id, attempt);
                if self.managers.get(&manager_id).is_some_and(|m| m.leaving) && reason != "cancelled" {
                    self.block_ended(task_id, attempt, at, &reason).await;
                } else {
                    self.lost(task_id, attempt, at, &reason).await;
                }
            }
            FromManager::Draining { returned } => self.draining(manager_id, returned),
            FromManager::Leaving { reason } => {
                if let Some(m) = self.managers.get_mut(&manager_id) {
                    tracing::info!(%manager_id, host = %m.info.hostname, tasks = m.tasks.len(), reason, "manager leaving with its block");
                    self.strategy.set(manager_id, 0, m.facts());
                    m.draining = true;
                    m.leaving = true;
                }
            }
        }
    }

    /// A manager no longer holds this task: its slot is free again (unless it drains).
    fn release(&mut self, manager_id: ManagerId, task_id: TaskId, attempt: u32) {
        if let Some(m) = self.managers.get_mut(&manager_id)
            && m.tasks.remove(&(task_id, attempt))
        {
            m.free += 1;
            if !m.draining {
                self.strategy.set(manager_id, m.free, m.facts());
            }
        }
    }

    /// The manager's block ends soon: it gets nothing more, and the tasks it gave back
    /// (never started) wait here again, first in line, as they were.
    fn draining(&mut self, manager_id: ManagerId, returned: Vec<(TaskId, u32)>) {
        let Some(m) = self.managers.get_mut(&manager_id) else {
            return;
        };
        tracing::info!(%manager_id, host = %m.info.hostname, returned = returned.len(), "manager draining before its block ends");
        self.strategy.set(manager_id, 0, m.facts());
        m.draining = true;
        for &(task_id, attempt) in returned.iter().rev() {
            if !m.tasks.remove(&(task_id, attempt)) {
                continue;
            }
            m.free += 1;
            if let Some(t) = self.inflight.get_mut(&task_id)
                && t.spec.attempt == attempt
            {
                t.manager = None;
                self.pending
                    .push_front(task_id, t.spec.priority, t.spec.requires.as_ref());
            }
        }
    }

    /// One more task of `delivery` is settled; ack the delivery when all are.
    async fn settle(&mut self, delivery: u64) {
        let Some(tracked) = self.deliveries.get_mut(&delivery) else {
            return;
        };
        tracked.remaining -= 1;
        if tracked.remaining == 0 {
            let tracked = self.deliveries.remove(&delivery).expect("present");
            if let Err(e) = tracked.delivery.ack().await {
                tracing::warn!(error = %e, "cannot ack a delivery");
            }
        }
    }

    /// Sends a task's result (counted by its outcome).
    fn send_result(&mut self, result: TaskResult) {
        self.metrics.finished(&result.completion);
        self.sink.result(result);
    }

    /// Hands pending tasks to managers with free slots, the highest priority first (see
    /// [`pending::Pending`]), to the managers the strategy picks (the emptiest first by
    /// default), in one frame per manager; a task with requirements only to a manager
    /// whose node meets them (see [`pending::Waiting`]).
    fn assign(&mut self) {
        // Managers left with free slots that no waiting task fits, set aside until the end.
        let mut unfit = Vec::new();
        // What each manager is given this round, sent as one frame at the end.
        let mut frames: Vec<(ManagerId, Vec<FunctionCode>, Vec<TaskSpec>)> = Vec::new();
        let mut frame_of: HashMap<ManagerId, usize> = HashMap::new();
        let now = now_micros();
        while !self.pending.is_empty() {
            let environment = match self.strategy.uses_environment() {
                true => self
                    .pending
                    .peek()
                    .and_then(|t| self.inflight.get(&t)?.spec.environment.clone()),
                false => None,
            };
            let Some((manager_id, most)) = self.strategy.next(environment.as_deref()) else {
                break;
            };
            let manager = self
                .managers
                .get_mut(&manager_id)
                .expect("the strategy knows only managers");
            let frame = *frame_of.entry(manager_id).or_insert_with(|| {
                frames.push((manager_id, Vec::new(), Vec::new()));
                frames.len() - 1
            });
            let (_, functions, tasks) = &mut frames[frame];
            let mut given = 0;
            while manager.free > 0 && given < most {
                let node = &manager.info;
                let Some(task_id) = self.pending.pop_for(|r| r.met_by(node)) else {
                    unfit.push(manager_id);
                    break;
                };
                let Some(t) = self.inflight.get_mut(&task_id) else {
                    continue;
                };
                if manager.functions_sent.insert(t.spec.function_id)
                    && let Some(f) = self.functions.get(&t.spec.function_id)
                {
                    functions.push(f.clone());
                }
                if !t.received_reported {
                    t.received_reported = true;
                    self.sink.status(t.steps[0]);
                }
                let step = StatusUpdate {
                    task_id,
                    attempt: t.spec.attempt,
                    kind: EventKind::Assigned,
                    at: now,
                    by: Actor::Endpoint,
                };
                self.sink.status(step);
                t.steps.push(step);
                t.manager = Some(manager_id);
                manager.free -= 1;
                manager.tasks.insert((task_id, t.spec.attempt));
                if let Some(name) = &t.spec.environment {
                    self.environments.sent_to(manager_id, &t.spec);
                    self.strategy.sent(manager_id, name);
                }
                tasks.push(t.spec.clone());
                given += 1;
            }
            let free = if unfit.last() == Some(&manager_id) {
                0
            } else {
                manager.free
            };
            self.strategy.set(manager_id, free, manager.facts());
        }
        for (manager_id, functions, tasks) in frames {
            let manager = self.managers.get_mut(&manager_id).expect("present");
            if !tasks.is_empty() && manager.tx.send(ToManager::Run { functions, tasks }).is_err() {
                // Its connection is closing; ManagerGone follows and puts the tasks back.
                manager.free = 0;
                self.strategy.set(manager_id, 0, manager.facts());
            }
        }
        for manager_id in unfit {
            let m = &self.managers[&manager_id];
            self.strategy.set(manager_id, m.free, m.facts());
        }
    }

    /// What scaling needs: the tasks that wait, and what each block's managers hold.
    fn block_loads(&self) -> Capacity {
        let mut blocks: HashMap<String, BlockLoad> = HashMap::new();
        for m in self.managers.values() {
            let Some(block) = &m.info.block_id else { continue };
            let b = blocks.entry(block.clone()).or_default();
            b.managers += 1;
            b.draining += u32::from(m.draining);
            b.workers += m.info.workers;
            b.tasks += m.tasks.len() as u32;
        }
        Capacity {
            pending_tasks: self.pending.len() as u32,
            blocks,
        }
    }

    fn load(&self) -> EndpointLoad {
        EndpointLoad {
            managers: self.managers.len() as u32,
            total_workers: self.managers.values().map(|m| m.info.workers).sum(),
            idle_workers: self
                .managers
                .values()
                .map(|m| m.info.workers.saturating_sub(m.tasks.len() as u32))
                .sum(),
            pending_tasks: self.pending.len() as u32,
            outstanding_tasks: self.managers.values().map(|m| m.tasks.len() as u32).sum(),
            manager_ids: self.managers.keys().copied().collect(),
            provider: None,
            manager_loads: {
                let mut loads: Vec<_> = self.managers.values().collect();
                loads.sort_by_key(|m| m.order);
                loads
                    .into_iter()
                    .map(|m| ManagerLoad {
                        manager_id: m.info.manager_id,
                        hostname: m.info.hostname.clone(),
                        block_id: m.info.block_id.clone(),
                        workers: m.info.workers,
                        tasks: m.tasks.len() as u32,
                        cores: m.info.cores,
                        memory_bytes: m.info.memory_bytes,
                        gpus: m.info.gpus,
                        tags: m.info.tags.clone(),
                        draining: m.draining,
                    })
                    .collect()
            },
        }
    }
}

/// Sleeps until Unix micros `at`; never wakes without one.
async fn until_micros(at: Option<u64>) {
    match at {
        Some(at) => {
            let wait = at.saturating_sub(now_micros());
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
        None => std::future::pending().await,
    }
}
