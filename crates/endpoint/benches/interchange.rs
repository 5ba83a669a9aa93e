//! The interchange's hot step: a 1,000-task message comes in and is handed to managers
//! (the emptiest first), then every task finishes and frees its slot. Measured with 10
//! and with 10,000 connected managers, so the cost of choosing a manager shows.
//!
//! `cargo bench -p ferry-endpoint`

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry_endpoint::interchange::{Ack, Input, Interchange, Sink};
use ferry_proto::frames::{FromManager, ManagerInfo, ToManager};
use ferry_proto::messages::{
    Completion, EndpointLoad, FunctionCode, FunctionKind, StatusUpdate, TaskBatch, TaskResult, TaskSpec,
};
use ferry_proto::{EndpointId, FunctionId, ManagerId, TaskId};
use tokio::sync::mpsc;

struct NoSink;

impl Sink for NoSink {
    fn status(&self, _: StatusUpdate) {}
    fn result(&self, _: TaskResult) {}
    fn heartbeat(&self, _: EndpointLoad, _: Vec<TaskId>) {}
    fn retry(&self, _: TaskBatch, _: StatusUpdate, _: u64) {}
}

struct NoAck;

impl Ack for NoAck {
    async fn ack(self) -> anyhow::Result<()> {
        Ok(())
    }
}

const TASKS: usize = 1000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let endpoint_id = EndpointId::new();
    let function = FunctionCode {
        function_id: FunctionId::new(),
        kind: FunctionKind::Python,
        code: Bytes::from_static(b"st\nf:def f(x): return x"),
        by_reference: None,
        python: None,
    };
    let mut group = c.benchmark_group("interchange");
    group.throughput(Throughput::Elements(TASKS as u64));
    for managers in [10usize, 10_000] {
        let mut interchange: Interchange<NoSink, NoAck> =
            Interchange::new(endpoint_id, NoSink, Duration::from_secs(3600));
        let mut receivers = Vec::new();
        let mut ids = Vec::new();
        rt.block_on(async {
            for i in 0..managers {
                let (tx, rx) = mpsc::unbounded_channel();
                let info = ManagerInfo {
                    manager_id: ManagerId::new(),
                    hostname: format!("node-{i}"),
                    workers: 4,
                    capacity: 16,
                    cores: 4,
                    memory_bytes: 0,
                    gpus: 0,
                    tags: Vec::new(),
                    block_id: None,
                    block_end: None,
                    priority: 0,
                };
                ids.push(info.manager_id);
                interchange.step(Input::ManagerConnected { info, tx }).await;
                receivers.push(rx);
            }
        });
        group.bench_function(
            format!("dispatch and finish 1,000 tasks, {managers} managers"),
            |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let tasks: Vec<TaskSpec> = (0..TASKS)
                            .map(|_| TaskSpec {
                                task_id: TaskId::new(),
                                function_id: function.function_id,
                                attempt: 0,
                                max_retries: 3,
                                payload: Bytes::from_static(b"2\n11\n[1]"),
                                group: None,
                                walltime_ms: None,
                                input_bytes: None,
                                requeues: 0,
                                priority: 0,
                                requires: None,
                                retry: None,
                                not_before: None,
                                environment: None,
                                session: None,
                            })
                            .collect();
                        let batch = TaskBatch {
                            endpoint_id,
                            functions: vec![function.clone()],
                            tasks,
                        };
                        interchange
                            .step(Input::Tasks {
                                batch: Box::new(batch),
                                delivery: Box::new(NoAck),
                            })
                            .await;
                        // Every manager got its share; each task finishes at once.
                        for (manager, rx) in ids.iter().zip(receivers.iter_mut()) {
                            while let Ok(frame) = rx.try_recv() {
                                let ToManager::Run { tasks, .. } = frame else {
                                    continue;
                                };
                                for t in tasks {
                                    let result = TaskResult {
                                        task_id: t.task_id,
                                        attempt: 0,
                                        steps: Vec::new(),
                                        completion: Completion::Success {
                                            result: Bytes::from_static(b"11\n1"),
                                        },
                                        group: None,
                                        finished_at: 0,
                                        stdout: String::new(),
                                        stderr: String::new(),
                                    };
                                    interchange
                                        .step(Input::FromManager {
                                            manager: *manager,
                                            message: FromManager::Finished(result),
                                        })
                                        .await;
                                    interchange
                                        .step(Input::Published {
                                            tasks: vec![t.task_id],
                                        })
                                        .await;
                                }
                            }
                        }
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
