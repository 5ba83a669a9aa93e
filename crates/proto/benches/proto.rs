//! Micro-benchmarks of the pieces every task passes through: the codec (a 1,000-task
//! batch, as the submissions queue carries them) and the state machine.
//!
//! `cargo bench -p ferry-proto`

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ferry_proto::messages::{FunctionCode, FunctionKind, TaskBatch, TaskSpec};
use ferry_proto::state::{TaskStatus, transition};
use ferry_proto::{EndpointId, Event, EventKind, FunctionId, TaskId, TaskState};

fn batch(n: usize) -> TaskBatch {
    let function_id = FunctionId::new();
    TaskBatch {
        endpoint_id: EndpointId::new(),
        functions: vec![FunctionCode {
            function_id,
            kind: FunctionKind::Python,
            code: Bytes::from(vec![b'x'; 400]),
            by_reference: None,
            python: None,
        }],
        tasks: (0..n)
            .map(|_| TaskSpec {
                task_id: TaskId::new(),
                function_id,
                attempt: 0,
                max_retries: 3,
                // The size of a packed no-op call's arguments.
                payload: Bytes::from(vec![b'a'; 80]),
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
            .collect(),
    }
}

fn codec(c: &mut Criterion) {
    let b = batch(1000);
    let bytes = ferry_proto::codec::encode(&b).unwrap();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("encode 1000-task batch", |bench| {
        bench.iter(|| ferry_proto::codec::encode(std::hint::black_box(&b)).unwrap())
    });
    g.bench_function("decode 1000-task batch", |bench| {
        bench.iter(|| ferry_proto::codec::decode::<TaskBatch>(std::hint::black_box(&bytes)).unwrap())
    });
    g.finish();
}

fn state_machine(c: &mut Criterion) {
    let mut g = c.benchmark_group("state machine");
    let life = [
        EventKind::Queued,
        EventKind::Received,
        EventKind::Assigned,
        EventKind::Started,
        EventKind::Succeeded,
    ];
    g.throughput(Throughput::Elements(life.len() as u64));
    g.bench_function("one task's life", |bench| {
        bench.iter_batched(
            || TaskStatus {
                state: TaskState::Received,
                attempt: 0,
                max_retries: 3,
            },
            |mut status| {
                for kind in life {
                    if let ferry_proto::Outcome::Applied(t) = transition(status, Event { kind, attempt: 0 }) {
                        status.state = t.to;
                        status.attempt = t.attempt;
                    }
                }
                status
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, codec, state_machine);
criterion_main!(benches);
