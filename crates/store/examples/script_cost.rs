//! What each step of a task's life costs Redis, measured on a real Redis: N tasks go
//! through what the web-service, forwarder and endpoint write under load (creation in
//! batches of 10,000, `waiting-for-ep` and `waiting-for-nodes` in slices of 1,000, then
//! each result with its steps in slices of 100), and Redis's own CPU counters are read
//! around each phase. Repeatable where the end-to-end benchmark is noisy. Last, how long
//! one lone task's record takes (a sequential round trip's), call by call:
//!
//!     cargo run --release -p ferry-store --example script_cost -- 20000

use std::time::Instant;

use bytes::Bytes;
use ferry_proto::{Actor, BatchId, EndpointId, Event, EventKind, FunctionId, TaskId, UserId};
use ferry_store::{BatchRecord, Finish, NewTask, Report, Store};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let url = std::env::var("FERRY_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let ns = format!("ferry-script-cost-{}", uuid::Uuid::new_v4().simple());
    let store = Store::connect(&url, &ns, 600).await?;
    store.load_scripts().await?;
    let mut admin = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;

    let endpoint = EndpointId::new();
    let function = FunctionId::new();
    let tasks: Vec<NewTask> = (0..n)
        .map(|_| NewTask {
            task_id: TaskId::new(),
            function_id: function,
            max_retries: 0,
            // A no-op task's serialized input, as the SDK sends it.
            payload: Bytes::from_static(b"01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"),
            walltime_ms: None,
            priority: 0,
            requires: None,
            retry: None,
            environment: None,
            result_group: None,
            by_reference: false,
        })
        .collect();
    let ids: Vec<TaskId> = tasks.iter().map(|t| t.task_id).collect();
    let report = |id: TaskId, kind: EventKind, by: Actor, finish: Option<Finish>| Report {
        task_id: id,
        event: Event { kind, attempt: 0 },
        at: ferry_proto::time::now_micros(),
        by,
        from: None,
        finish,
    };

    println!("{:<28} {:>12} {:>14}", "phase", "Redis µs/task", "wall µs/task");
    let phase = Phase::start(&mut admin).await?;
    for chunk in tasks.chunks(10_000) {
        store
            .create_tasks(&session(endpoint, chunk.len()), chunk, Actor::WebService)
            .await?;
    }
    phase.end(&mut admin, "received (create)", n).await?;

    let phase = Phase::start(&mut admin).await?;
    for chunk in ids.chunks(1000) {
        let reports: Vec<_> = chunk
            .iter()
            .map(|&id| report(id, EventKind::Queued, Actor::Forwarder, None))
            .collect();
        store.apply(&reports).await?;
    }
    phase.end(&mut admin, "waiting-for-ep", n).await?;

    let phase = Phase::start(&mut admin).await?;
    for chunk in ids.chunks(1000) {
        let reports: Vec<_> = chunk
            .iter()
            .map(|&id| report(id, EventKind::Received, Actor::Endpoint, None))
            .collect();
        store.apply(&reports).await?;
    }
    phase.end(&mut admin, "waiting-for-nodes", n).await?;

    let phase = Phase::start(&mut admin).await?;
    for chunk in ids.chunks(100) {
        let mut reports = Vec::with_capacity(chunk.len() * 3);
        for &id in chunk {
            reports.push(report(id, EventKind::Assigned, Actor::Endpoint, None));
            reports.push(report(id, EventKind::Started, Actor::Manager, None));
            reports.push(report(
                id,
                EventKind::Succeeded,
                Actor::Worker,
                Some(no_op_result()),
            ));
        }
        store.apply(&reports).await?;
    }
    phase.end(&mut admin, "result (3 steps)", n).await?;

    let phase = Phase::start(&mut admin).await?;
    for chunk in ids.chunks(1000) {
        store.get_task_outcomes(chunk).await?;
    }
    phase.end(&mut admin, "read outcomes", n).await?;

    // A sequential round trip's record: one task, in a session of its own, its whole
    // life in one call (as the forwarder applies a lone result with the held
    // `waiting-for-ep` step). Timed call by call from here (the round trip to Redis
    // included), back to back and then 2 ms apart, as they come in a sequence of
    // interactive round trips: a Redis that was idle, its caches cold, takes longer.
    for (label, pause) in [
        ("one task a call, back to back", 0),
        ("one task a call, 2 ms apart", 2),
    ] {
        let mut took = Vec::new();
        for _ in 0..300 {
            let task = NewTask {
                task_id: TaskId::new(),
                ..tasks[0].clone()
            };
            let one = std::slice::from_ref(&task);
            store
                .create_tasks(&session(endpoint, 1), one, Actor::WebService)
                .await?;
            let id = task.task_id;
            let reports = [
                report(id, EventKind::Queued, Actor::Forwarder, None),
                report(id, EventKind::Received, Actor::Endpoint, None),
                report(id, EventKind::Assigned, Actor::Endpoint, None),
                report(id, EventKind::Started, Actor::Manager, None),
                report(id, EventKind::Succeeded, Actor::Worker, Some(no_op_result())),
            ];
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            let at = Instant::now();
            store.apply(&reports).await?;
            took.push(at.elapsed());
        }
        took.sort();
        println!(
            "{label:<34} median {:>6.1} µs a call",
            took[took.len() / 2].as_secs_f64() * 1e6
        );
    }

    store.delete_namespace().await?;
    Ok(())
}

/// A session of `size` tasks on `endpoint`, of a user of its own.
fn session(endpoint: EndpointId, size: usize) -> BatchRecord {
    BatchRecord {
        batch_id: BatchId::new(),
        owner: UserId::new(),
        endpoint_id: endpoint,
        size: size as u64,
        created_at: ferry_proto::time::now_micros(),
        task_group: None,
        deadline: None,
        events: false,
        callback_url: None,
        callback_secret: None,
    }
}

/// A no-op task's result, as its worker reports it.
fn no_op_result() -> Finish {
    Finish {
        success: true,
        by_reference: false,
        data: Bytes::from_static(b"01\ngANLAS4=\n"),
        exception: Bytes::new(),
        stdout: String::new(),
        stderr: String::new(),
    }
}

/// Redis's CPU time (user + system, from `INFO cpu`) and the wall clock at a phase's start.
struct Phase {
    cpu: f64,
    wall: Instant,
}

impl Phase {
    async fn start(admin: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<Self> {
        Ok(Self {
            cpu: redis_cpu(admin).await?,
            wall: Instant::now(),
        })
    }

    async fn end(
        self,
        admin: &mut redis::aio::MultiplexedConnection,
        name: &str,
        n: usize,
    ) -> anyhow::Result<()> {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = redis_cpu(admin).await? - self.cpu;
        println!(
            "{name:<28} {:>12.1} {:>14.1}",
            cpu * 1e6 / n as f64,
            wall * 1e6 / n as f64
        );
        Ok(())
    }
}

async fn redis_cpu(admin: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(admin).await?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok(field("used_cpu_user") + field("used_cpu_sys"))
}
