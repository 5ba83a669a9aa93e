//! The interchange driven through [`Interchange::step`], as the endpoint drives it, with a
//! sink that records what it is told and acks that count: which manager gets which task,
//! in which order, what is refused and what is acknowledged.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferry_proto::messages::{Completion, FunctionKind, Requires, RetryPolicy, TaskResult};
use tokio::sync::mpsc::UnboundedReceiver;

use super::*;

#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<Said>>>);

#[derive(Debug, Clone)]
enum Said {
    Status(StatusUpdate),
    Result(TaskResult),
    Retry(TaskBatch),
}

impl Sink for Recorded {
    fn status(&self, update: StatusUpdate) {
        self.0.lock().unwrap().push(Said::Status(update));
    }
    fn result(&self, result: TaskResult) {
        self.0.lock().unwrap().push(Said::Result(result));
    }
    fn heartbeat(&self, _: EndpointLoad, _: Vec<TaskId>) {}
    /// As if the broker confirmed the retry at once: then `lost` is reported.
    fn retry(&self, batch: TaskBatch, lost: StatusUpdate, _: u64) {
        let mut said = self.0.lock().unwrap();
        said.push(Said::Retry(batch));
        said.push(Said::Status(lost));
    }
}

impl Recorded {
    /// The tasks reported as `kind`, in order.
    fn reported(&self, kind: EventKind) -> Vec<TaskId> {
        let said = self.0.lock().unwrap();
        said.iter()
            .filter_map(|s| match s {
                Said::Status(u) if u.kind == kind => Some(u.task_id),
                _ => None,
            })
            .collect()
    }

    fn results(&self) -> Vec<TaskResult> {
        let said = self.0.lock().unwrap();
        said.iter()
            .filter_map(|s| match s {
                Said::Result(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Counts its acks.
struct Counted(Arc<Mutex<u32>>);

impl Ack for Counted {
    async fn ack(self) -> anyhow::Result<()> {
        *self.0.lock().unwrap() += 1;
        Ok(())
    }
}

struct Bench {
    ic: Interchange<Recorded, Counted>,
    sink: Recorded,
    acks: Arc<Mutex<u32>>,
    endpoint_id: EndpointId,
    function: FunctionCode,
}

fn bench() -> Bench {
    let endpoint_id = EndpointId::new();
    let sink = Recorded::default();
    Bench {
        ic: Interchange::new(endpoint_id, sink.clone(), Duration::from_secs(3600)),
        sink,
        acks: Arc::default(),
        endpoint_id,
        function: FunctionCode::inline(
            FunctionId::new(),
            FunctionKind::Python,
            Bytes::from_static(b"01\nAAAA"),
        ),
    }
}

fn task(function: &FunctionCode, priority: i32) -> TaskSpec {
    TaskSpec {
        task_id: TaskId::new(),
        function_id: function.function_id,
        attempt: 0,
        max_retries: 3,
        payload: Bytes::new(),
        group: None,
        walltime_ms: None,
        input_bytes: None,
        requeues: 0,
        priority,
        requires: None,
        retry: None,
        not_before: None,
        environment: None,
        session: None,
    }
}

impl Bench {
    async fn send(&mut self, tasks: Vec<TaskSpec>) {
        let batch = TaskBatch {
            endpoint_id: self.endpoint_id,
            functions: vec![self.function.clone()],
            tasks,
        };
        let delivery = Box::new(Counted(self.acks.clone()));
        self.ic
            .step(Input::Tasks {
                batch: Box::new(batch),
                delivery,
            })
            .await;
    }

    async fn connect(&mut self, capacity: u32) -> (ManagerId, UnboundedReceiver<ToManager>) {
        self.connect_node(capacity, 1, &[]).await
    }

    /// A manager whose node has `cores` and `tags` (and 4 GiB, no GPU).
    async fn connect_node(
        &mut self,
        capacity: u32,
        cores: u32,
        tags: &[&str],
    ) -> (ManagerId, UnboundedReceiver<ToManager>) {
        self.connect_ranked(capacity, cores, tags, 0).await
    }

    /// A manager of `priority` (`FERRY_MANAGER_PRIORITY`).
    async fn connect_ranked(
        &mut self,
        capacity: u32,
        cores: u32,
        tags: &[&str],
        priority: i32,
    ) -> (ManagerId, UnboundedReceiver<ToManager>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let info = ManagerInfo {
            manager_id: ManagerId::new(),
            hostname: format!("node-{cores}"),
            workers: 1,
            capacity,
            cores,
            memory_bytes: 4 << 30,
            gpus: 0,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            block_id: None,
            block_end: None,
            priority,
        };
        let id = info.manager_id;
        self.ic.step(Input::ManagerConnected { info, tx }).await;
        (id, rx)
    }

    async fn finish(&mut self, manager: ManagerId, task: &TaskSpec) {
        let done = Completion::Success {
            result: Bytes::from_static(b"00\nx"),
        };
        self.report(manager, task, done).await;
    }

    async fn fail(&mut self, manager: ManagerId, task: &TaskSpec, traceback: &str) {
        let failed = Completion::Failure {
            traceback: traceback.into(),
            exception: None,
        };
        self.report(manager, task, failed).await;
    }

    /// The manager reports the task ended so.
    async fn report(&mut self, manager: ManagerId, task: &TaskSpec, completion: Completion) {
        let result = TaskResult {
            task_id: task.task_id,
            attempt: task.attempt,
            steps: Vec::new(),
            completion,
            group: None,
            finished_at: now_micros(),
            stdout: String::new(),
            stderr: String::new(),
        };
        let message = FromManager::Finished(result);
        self.ic.step(Input::FromManager { manager, message }).await;
    }
}

/// Every frame a manager was sent so far: the tasks of its `Run` frames, and whether a
/// frame carried the function's code.
fn frames(rx: &mut UnboundedReceiver<ToManager>) -> (Vec<TaskSpec>, Vec<usize>, Vec<Vec<TaskId>>) {
    let (mut tasks, mut code, mut cancels) = (Vec::new(), Vec::new(), Vec::new());
    while let Ok(frame) = rx.try_recv() {
        match frame {
            ToManager::Run { functions, tasks: t } => {
                code.push(functions.len());
                tasks.extend(t);
            }
            ToManager::Cancel { task_ids } => cancels.push(task_ids),
            _ => {}
        }
    }
    (tasks, code, cancels)
}

fn ids(tasks: &[TaskSpec]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.task_id).collect()
}

#[tokio::test]
async fn tasks_go_to_the_emptiest_manager_in_one_frame_each_with_the_code_once() {
    let mut b = bench();
    let (_, mut small) = b.connect(1).await;
    let (_, mut big) = b.connect(3).await;
    let sent: Vec<TaskSpec> = (0..4).map(|_| task(&b.function, 0)).collect();
    b.send(sent.clone()).await;
    let (to_big, big_code, _) = frames(&mut big);
    let (to_small, small_code, _) = frames(&mut small);
    assert_eq!(ids(&to_big), ids(&sent[..3]), "the emptiest first, in order");
    assert_eq!(ids(&to_small), ids(&sent[3..]));
    assert_eq!(
        (big_code, small_code),
        (vec![1], vec![1]),
        "one frame each, the code in it"
    );
    assert_eq!(
        b.sink.reported(EventKind::Assigned),
        ids(&sent),
        "each reported handed to a manager"
    );
    // The next task for a manager that has the code comes without it.
    let more = task(&b.function, 0);
    let big_id =
        b.ic.managers
            .iter()
            .find(|(_, m)| m.info.capacity == 3)
            .map(|(id, _)| *id)
            .unwrap();
    b.finish(big_id, &sent[0]).await;
    b.send(vec![more.clone()]).await;
    let (again, code, _) = frames(&mut big);
    assert_eq!((ids(&again), code), (vec![more.task_id], vec![0]));
}

#[tokio::test]
async fn the_highest_priority_is_handed_out_first_and_first_come_within_one() {
    let mut b = bench();
    let (low, mid, high, high2) = (
        task(&b.function, 0),
        task(&b.function, 2),
        task(&b.function, 5),
        task(&b.function, 5),
    );
    b.send(vec![low.clone(), high.clone()]).await;
    b.send(vec![mid.clone(), high2.clone()]).await;
    let (manager, mut rx) = b.connect(1).await;
    let mut order = Vec::new();
    for _ in 0..4 {
        let (got, _, _) = frames(&mut rx);
        assert_eq!(got.len(), 1, "one slot: one task at a time");
        order.push(got[0].task_id);
        b.finish(manager, &got[0]).await;
    }
    assert_eq!(order, ids(&[high, high2, mid, low]));
}

#[tokio::test]
async fn a_cancelled_task_is_never_handed_out_and_a_held_one_is_stopped_at_its_manager() {
    let mut b = bench();
    let (held, waiting) = (task(&b.function, 0), task(&b.function, 0));
    let (_, mut rx) = b.connect(1).await;
    b.send(vec![held.clone(), waiting.clone()]).await;
    let (got, _, _) = frames(&mut rx);
    assert_eq!(ids(&got), vec![held.task_id]);
    b.ic.step(Input::Cancel {
        task_ids: vec![held.task_id, waiting.task_id],
    })
    .await;
    let (got, _, cancels) = frames(&mut rx);
    assert!(got.is_empty(), "the waiting one is dropped, not handed out");
    assert_eq!(cancels, vec![vec![held.task_id]]);
    assert_eq!(b.ic.pending.len(), 0);
    // Both settled: the message is acknowledged.
    assert_eq!(*b.acks.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_message_is_acknowledged_once_every_result_of_it_is_published() {
    let mut b = bench();
    let (manager, mut rx) = b.connect(4).await;
    let sent = vec![task(&b.function, 0), task(&b.function, 0)];
    b.send(sent.clone()).await;
    let (got, _, _) = frames(&mut rx);
    assert_eq!(got.len(), 2);
    for t in &sent {
        b.finish(manager, t).await;
    }
    assert_eq!(b.sink.results().len(), 2);
    b.ic.step(Input::Published {
        tasks: vec![sent[0].task_id],
    })
    .await;
    assert_eq!(*b.acks.lock().unwrap(), 0, "one result is not published yet");
    b.ic.step(Input::Published {
        tasks: vec![sent[1].task_id],
    })
    .await;
    assert_eq!(*b.acks.lock().unwrap(), 1);
}

#[tokio::test]
async fn bytecode_of_another_python_fails_at_once_naming_both_and_the_rest_runs() {
    let mut b = bench();
    b.ic = Interchange::new(b.endpoint_id, b.sink.clone(), Duration::from_secs(3600)).with_python(Some(
        WorkersPython {
            version: "3.11.7".into(),
            interpreter: "/usr/bin/python3".into(),
        },
    ));
    let (_, mut rx) = b.connect(4).await;
    b.function = b.function.clone().bound_to(Some("3.12.1".into()));
    let refused = task(&b.function, 0);
    b.send(vec![refused.clone()]).await;
    b.function = FunctionCode::inline(
        FunctionId::new(),
        FunctionKind::Python,
        Bytes::from_static(b"01\nBB"),
    )
    .bound_to(Some("3.11.2".into()));
    let runs = task(&b.function, 0);
    b.send(vec![runs.clone()]).await;
    let (got, _, _) = frames(&mut rx);
    assert_eq!(ids(&got), vec![runs.task_id], "the same major.minor runs");
    let results = b.sink.results();
    assert_eq!(results.len(), 1);
    let Completion::Failure { traceback, .. } = &results[0].completion else {
        panic!("refused with a failure: {results:?}");
    };
    assert_eq!(results[0].task_id, refused.task_id);
    for needle in ["3.12.1", "3.11.7", "/usr/bin/python3", "source=True"] {
        assert!(traceback.contains(needle), "{needle} in: {traceback}");
    }
}

#[tokio::test]
async fn a_lost_managers_tasks_are_each_retried_once() {
    let mut b = bench();
    let (gone, mut rx) = b.connect(2).await;
    let sent = vec![task(&b.function, 0), task(&b.function, 0)];
    b.send(sent.clone()).await;
    assert_eq!(frames(&mut rx).0.len(), 2);
    b.ic.step(Input::ManagerGone {
        manager: gone,
        reason: "test".into(),
    })
    .await;
    let said = b.sink.0.lock().unwrap().clone();
    let retried: Vec<TaskId> = said
        .iter()
        .filter_map(|s| match s {
            Said::Retry(batch) => Some(batch.tasks.iter().map(|t| t.task_id).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut expected = ids(&sent);
    expected.sort();
    let mut retried_sorted = retried.clone();
    retried_sorted.sort();
    assert_eq!(
        retried_sorted, expected,
        "each lost task is retried once: {said:?}"
    );
}

fn needing(mut spec: TaskSpec, cores: u32, gpus: u32, tags: &[&str]) -> TaskSpec {
    spec.requires = Some(Requires {
        cores,
        memory_mb: 0,
        gpus,
        tags: tags.iter().map(|t| t.to_string()).collect(),
    });
    spec
}

#[tokio::test]
async fn a_task_goes_only_to_a_manager_whose_node_meets_its_requirements() {
    let mut b = bench();
    let (_, mut small_rx) = b.connect_node(10, 2, &[]).await;
    let (big, mut big_rx) = b.connect_node(1, 8, &["avx512"]).await;
    let avx = needing(task(&b.function, 0), 0, 0, &["avx512"]);
    let four = needing(task(&b.function, 0), 4, 0, &[]);
    let any = task(&b.function, 0);
    b.send(vec![avx.clone(), four.clone(), any.clone()]).await;
    // The emptiest manager (10 free, 2 cores, no tag) takes only what fits it; the
    // other takes the first that fits it; the rest waits for it.
    assert_eq!(ids(&frames(&mut small_rx).0), vec![any.task_id]);
    assert_eq!(ids(&frames(&mut big_rx).0), vec![avx.task_id]);
    assert_eq!(b.ic.pending.len(), 1);
    b.finish(big, &avx).await;
    assert_eq!(ids(&frames(&mut big_rx).0), vec![four.task_id]);
    assert!(frames(&mut small_rx).0.is_empty());
    let failed = b
        .sink
        .results()
        .into_iter()
        .filter(|r| matches!(r.completion, Completion::Failure { .. }))
        .count();
    assert_eq!(failed, 0);
}

#[tokio::test]
async fn a_task_no_node_can_run_fails_saying_what_it_asked_and_what_the_nodes_lack() {
    let mut b = bench();
    b.ic = Interchange::new(b.endpoint_id, b.sink.clone(), Duration::from_secs(3600)).failing_unmet(true);
    // Sent before any manager said what its node has: it waits...
    let early = needing(task(&b.function, 0), 0, 1, &[]);
    b.send(vec![early.clone()]).await;
    assert!(b.sink.results().is_empty());
    // ...until one does, and lacks it.
    let (_, mut rx) = b.connect_node(4, 2, &["avx2"]).await;
    let late = needing(task(&b.function, 0), 16, 0, &["avx512"]);
    let fine = needing(task(&b.function, 0), 2, 0, &["avx2"]);
    b.send(vec![late.clone(), fine.clone()]).await;
    assert_eq!(ids(&frames(&mut rx).0), vec![fine.task_id]);
    let results = b.sink.results();
    let failed: Vec<TaskId> = results.iter().map(|r| r.task_id).collect();
    assert_eq!(failed, vec![early.task_id, late.task_id]);
    let reason = |r: &TaskResult| match &r.completion {
        Completion::Failure { traceback, .. } => traceback.clone(),
        other => panic!("a failure, not {other:?}"),
    };
    let (early_why, late_why) = (reason(&results[0]), reason(&results[1]));
    assert!(
        early_why.contains("1 GPUs (it has 0)") && early_why.contains("node-2"),
        "{early_why}"
    );
    assert!(
        late_why.contains("16 cores (it has 2)") && late_why.contains("tag avx512"),
        "{late_why}"
    );
    assert_eq!(b.ic.pending.len(), 0);
}

#[tokio::test]
async fn with_managers_started_by_hand_an_unmet_task_waits_for_another_node() {
    let mut b = bench();
    let (_, mut rx) = b.connect_node(4, 2, &[]).await;
    let gpu = needing(task(&b.function, 0), 0, 1, &[]);
    b.send(vec![gpu.clone()]).await;
    assert!(b.sink.results().is_empty() && frames(&mut rx).0.is_empty());
    // Another kind of node comes (started by hand): the task runs there.
    let (tx, mut gpu_rx) = mpsc::unbounded_channel();
    let info = ManagerInfo {
        manager_id: ManagerId::new(),
        hostname: "gpu".into(),
        workers: 1,
        capacity: 1,
        cores: 2,
        memory_bytes: 1 << 30,
        gpus: 2,
        tags: Vec::new(),
        block_id: None,
        block_end: None,
        priority: 0,
    };
    b.ic.step(Input::ManagerConnected { info, tx }).await;
    assert_eq!(ids(&frames(&mut gpu_rx).0), vec![gpu.task_id]);
}

impl Recorded {
    fn retried(&self) -> Vec<TaskSpec> {
        let said = self.0.lock().unwrap();
        said.iter()
            .filter_map(|s| match s {
                Said::Retry(batch) => Some(batch.tasks.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

#[tokio::test]
async fn a_failure_the_retry_policy_names_runs_again_after_its_backoff_and_others_fail() {
    let mut b = bench();
    let (manager, mut rx) = b.connect(4).await;
    let policy = RetryPolicy {
        on: vec!["ConnectionError".into()],
        backoff_ms: 150,
        max_backoff_ms: 1000,
    };
    let mut flaky = task(&b.function, 0);
    flaky.retry = Some(policy.clone());
    flaky.max_retries = 1;
    let mut other = task(&b.function, 0);
    other.retry = Some(policy);
    b.send(vec![flaky.clone(), other.clone()]).await;
    assert_eq!(frames(&mut rx).0.len(), 2);

    b.fail(manager, &flaky, "Traceback...\nConnectionError: down")
        .await;
    b.fail(manager, &other, "Traceback...\nKeyError: 'x'").await;
    let retried = b.sink.retried();
    assert_eq!(retried.len(), 1, "only the named failure runs again");
    let again = &retried[0];
    assert_eq!((again.task_id, again.attempt), (flaky.task_id, 1));
    let wait = again.not_before.unwrap().saturating_sub(now_micros());
    assert!(
        (100_000..=150_000).contains(&wait),
        "held for its backoff: {wait} us"
    );
    let failed: Vec<TaskId> = b.sink.results().iter().map(|r| r.task_id).collect();
    assert_eq!(failed, vec![other.task_id]);
    assert_eq!(
        b.sink.reported(EventKind::Lost),
        vec![flaky.task_id],
        "the failed attempt shows"
    );

    // The retry comes back through the broker: held until its backoff is over.
    b.send(vec![again.clone()]).await;
    assert!(frames(&mut rx).0.is_empty());
    tokio::time::sleep(Duration::from_millis(160)).await;
    b.ic.step(Input::Wake).await;
    assert_eq!(ids(&frames(&mut rx).0), vec![flaky.task_id]);

    // Out of retries: the failure is its result.
    b.fail(manager, again, "Traceback...\nConnectionError: down again")
        .await;
    assert_eq!(b.sink.retried().len(), 1);
    assert_eq!(b.sink.results().last().unwrap().task_id, flaky.task_id);
}

/// An interchange whose default Python is 3.11 with environments `old` (3.10, replaced
/// when unreferenced) and `new` (3.12, replaced when a session completes).
fn with_environments(b: &Bench) -> Interchange<Recorded, Counted> {
    let python = |v: &str| {
        Some(WorkersPython {
            version: v.into(),
            interpreter: format!("/envs/{v}/bin/python"),
        })
    };
    let environments = [
        (
            "old".to_owned(),
            EnvironmentInfo {
                python: python("3.10.4"),
                recycle_unreferenced: true,
                recycle_session: false,
            },
        ),
        (
            "new".to_owned(),
            EnvironmentInfo {
                python: python("3.12.1"),
                recycle_unreferenced: false,
                recycle_session: true,
            },
        ),
    ];
    Interchange::new(b.endpoint_id, b.sink.clone(), Duration::from_secs(3600))
        .with_python(python("3.11.7"))
        .with_environments(environments.into_iter().collect())
}

#[tokio::test]
async fn bytecode_goes_to_the_environment_whose_python_loads_it_or_fails_listing_them() {
    let mut b = bench();
    b.ic = with_environments(&b);
    let (_, mut rx) = b.connect(8).await;
    b.function = b.function.clone().bound_to(Some("3.12.0".into()));
    let routed = task(&b.function, 0);
    let mut named_elsewhere = task(&b.function, 0);
    named_elsewhere.environment = Some("old".into());
    let mut unknown = task(&b.function, 0);
    unknown.environment = Some("gone".into());
    b.send(vec![routed.clone(), named_elsewhere.clone(), unknown.clone()])
        .await;
    b.function = FunctionCode::inline(
        FunctionId::new(),
        FunctionKind::Python,
        Bytes::from_static(b"01\nC"),
    )
    .bound_to(Some("3.9.1".into()));
    let nowhere = task(&b.function, 0);
    b.send(vec![nowhere.clone()]).await;

    let (got, _, _) = frames(&mut rx);
    assert_eq!(ids(&got), vec![routed.task_id]);
    assert_eq!(
        got[0].environment.as_deref(),
        Some("new"),
        "routed to the 3.12 environment"
    );
    let failures: HashMap<TaskId, String> = b
        .sink
        .results()
        .into_iter()
        .map(|r| match r.completion {
            Completion::Failure { traceback, .. } => (r.task_id, traceback),
            other => panic!("a failure, not {other:?}"),
        })
        .collect();
    let listed = "default: Python 3.11.7, new: Python 3.12.1, old: Python 3.10.4";
    for (task, needles) in [
        (
            &named_elsewhere,
            vec!["3.12.0", "task environment \"old\"", "3.10.4", listed],
        ),
        (&unknown, vec!["\"gone\"", listed]),
        (&nowhere, vec!["3.9.1", "3.11.7", listed]),
    ] {
        let traceback = &failures[&task.task_id];
        for needle in needles {
            assert!(traceback.contains(needle), "{needle} in: {traceback}");
        }
    }
}

#[tokio::test]
async fn the_managers_that_ran_an_environment_hear_when_its_last_task_is_done() {
    let mut b = bench();
    b.ic = with_environments(&b);
    let of = |b: &Bench, name: &str| {
        let mut t = task(&b.function, 0);
        t.environment = Some(name.into());
        t
    };
    let (first, second, other) = (of(&b, "old"), of(&b, "old"), of(&b, "new"));
    let (m1, mut rx1) = b.connect(1).await;
    b.send(vec![first.clone()]).await;
    let (m2, mut rx2) = b.connect(1).await;
    b.send(vec![other.clone(), second.clone()]).await;
    let told = |rx: &mut UnboundedReceiver<ToManager>| -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|f| match f {
                ToManager::Unreferenced { environment } => Some(environment),
                _ => None,
            })
            .collect()
    };
    b.finish(m1, &first).await;
    assert!(
        told(&mut rx1).is_empty(),
        "a second task of it is still held (and goes to m1)"
    );
    b.finish(m1, &second).await;
    b.finish(m2, &other).await;
    assert_eq!(told(&mut rx1), ["old"], "the last task of `old` is done");
    assert!(
        told(&mut rx2).is_empty(),
        "m2 never ran `old`; `new` does not recycle so"
    );
}

#[tokio::test]
async fn fill_by_priority_packs_the_highest_priority_manager_first_in_one_frame() {
    let mut b = bench();
    b.ic = Interchange::new(b.endpoint_id, b.sink.clone(), Duration::from_secs(3600))
        .with_strategy(strategy::StrategyKind::FillByPriority);
    let (_, mut first) = b.connect_ranked(4, 1, &[], 0).await;
    let (_, mut high) = b.connect_ranked(2, 1, &[], 7).await;
    let (_, mut late) = b.connect_ranked(8, 1, &[], 0).await;
    let sent: Vec<TaskSpec> = (0..5).map(|_| task(&b.function, 0)).collect();
    b.send(sent.clone()).await;
    let (to_high, high_frames, _) = frames(&mut high);
    let (to_first, first_frames, _) = frames(&mut first);
    assert_eq!(
        ids(&to_high),
        ids(&sent[..2]),
        "the highest priority is filled first"
    );
    assert_eq!(
        ids(&to_first),
        ids(&sent[2..]),
        "then the first connected, though emptier ones wait"
    );
    assert_eq!((high_frames.len(), first_frames.len()), (1, 1));
    assert!(frames(&mut late).0.is_empty());
}

#[tokio::test]
async fn round_robin_gives_each_manager_one_in_turn_in_one_frame_each() {
    let mut b = bench();
    b.ic = Interchange::new(b.endpoint_id, b.sink.clone(), Duration::from_secs(3600))
        .with_strategy(strategy::StrategyKind::RoundRobin);
    let (_, mut a) = b.connect(4).await;
    let (_, mut c) = b.connect(1).await;
    let sent: Vec<TaskSpec> = (0..4).map(|_| task(&b.function, 0)).collect();
    b.send(sent.clone()).await;
    let (to_a, a_frames, _) = frames(&mut a);
    let (to_c, c_frames, _) = frames(&mut c);
    assert_eq!(ids(&to_a), [sent[0].task_id, sent[2].task_id, sent[3].task_id]);
    assert_eq!(ids(&to_c), [sent[1].task_id]);
    assert_eq!(
        (a_frames.len(), c_frames.len()),
        (1, 1),
        "one frame per manager per round"
    );
}

#[tokio::test]
async fn environment_affinity_sends_a_task_where_its_environment_ran() {
    let mut b = bench();
    b.ic = with_environments(&b).with_strategy(strategy::StrategyKind::EnvironmentAffinity);
    let (_, mut rx1) = b.connect(4).await;
    let (_, mut rx2) = b.connect(4).await;
    let of = |b: &Bench, name: &str| {
        let mut t = task(&b.function, 0);
        t.environment = Some(name.into());
        t
    };
    let first = of(&b, "new");
    b.send(vec![first.clone()]).await;
    let got_first = !frames(&mut rx1).0.is_empty();
    let _ = frames(&mut rx2);
    let (ran_it, other) = if got_first {
        (&mut rx1, &mut rx2)
    } else {
        (&mut rx2, &mut rx1)
    };
    // The manager that ran `new` has fewer free slots now, and still gets the next ones.
    let more: Vec<TaskSpec> = (0..3).map(|_| of(&b, "new")).collect();
    b.send(more.clone()).await;
    assert_eq!(ids(&frames(ran_it).0), ids(&more));
    assert!(frames(other).0.is_empty());
    // A task of no environment goes by load: to the other one.
    let plain = task(&b.function, 0);
    b.send(vec![plain.clone()]).await;
    assert_eq!(ids(&frames(other).0), [plain.task_id]);
}

#[tokio::test]
async fn the_managers_that_ran_a_session_hear_when_its_last_task_is_done() {
    let mut b = bench();
    b.ic = with_environments(&b);
    let (m1, mut rx1) = b.connect(2).await;
    let in_session = |b: &Bench, session: ferry_proto::BatchId| {
        let mut t = task(&b.function, 0);
        t.environment = Some("new".into());
        t.session = Some(session);
        t
    };
    let (s1, s2) = (ferry_proto::BatchId::new(), ferry_proto::BatchId::new());
    let (a, c, other) = (in_session(&b, s1), in_session(&b, s1), in_session(&b, s2));
    b.send(vec![a.clone(), other.clone()]).await;
    b.send(vec![c.clone()]).await;
    let done = |rx: &mut UnboundedReceiver<ToManager>| -> Vec<ferry_proto::BatchId> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|f| match f {
                ToManager::SessionDone { session } => Some(session),
                ToManager::Unreferenced { .. } => panic!("`new` does not recycle when unreferenced"),
                _ => None,
            })
            .collect()
    };
    b.finish(m1, &a).await;
    assert!(done(&mut rx1).is_empty(), "c of the same session is still held");
    b.finish(m1, &c).await;
    assert_eq!(done(&mut rx1), [s1]);
    b.finish(m1, &other).await;
    assert_eq!(done(&mut rx1), [s2]);
}
