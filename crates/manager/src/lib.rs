//! Ferry's manager: one per node. It connects to its endpoint over TCP, keeps a fixed
//! number of worker processes ([`slot`]), hands each one task at a time, and forwards
//! what they report. A worker that dies is replaced; the task it held is reported lost.

pub mod simulate;
pub mod slot;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::frames::{FromManager, ManagerInfo, ToManager};
use ferry_proto::messages::{FunctionCode, TaskSpec};
use ferry_proto::{FunctionId, ManagerId, TaskId};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

/// The manager's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// The endpoint's manager address (`host:port`).
    #[arg(long, env = "FERRY_ENDPOINT_ADDR")]
    pub endpoint: String,
    /// Worker processes to keep.
    #[arg(long, env = "FERRY_WORKERS", default_value_t = 2)]
    pub workers: u32,
    /// Tasks each worker holds at once: the one running and those queued behind it.
    #[arg(long, env = "FERRY_TASKS_PER_WORKER", default_value_t = 16)]
    pub tasks_per_worker: u32,
    /// The `ferry-worker` binary (default: next to this one).
    #[arg(long, env = "FERRY_WORKER_BIN")]
    pub worker_bin: Option<PathBuf>,
    /// The provider block this manager was started in.
    #[arg(long, env = "FERRY_BLOCK_ID")]
    pub block_id: Option<String>,
    /// How often to tell the endpoint this manager is alive, in milliseconds.
    #[arg(long, env = "FERRY_MANAGER_HEARTBEAT_MS", default_value_t = 2000)]
    pub heartbeat_interval_ms: u64,
    /// Load generator: connect this many fake managers whose workers finish every task
    /// at once (no worker processes), to measure an endpoint's dispatch rate.
    #[arg(long, default_value_t = 0)]
    pub simulate: u32,
}

pub(crate) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(ferry_proto::codec::MAX_MESSAGE_BYTES)
        .new_codec()
}

/// What a slot tells the manager.
pub(crate) enum SlotEvent {
    /// Forward to the endpoint.
    Report(FromManager),
    /// The slot's worker is up and empty.
    Ready(usize),
    /// The slot finished a task.
    Done(usize),
    /// The slot's worker died; these tasks never started and go back to the queue.
    Gone(usize, Vec<TaskSpec>),
}

/// Runs until the endpoint closes the connection or `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    if config.simulate > 0 {
        return simulate::run(config.clone(), config.simulate, shutdown).await;
    }
    let stream = connect(&config.endpoint).await?;
    stream.set_nodelay(true)?;
    let (rd, wr) = stream.into_split();
    let mut from_endpoint = FramedRead::new(rd, codec());
    let mut to_endpoint = FramedWrite::new(wr, codec());
    let manager_id = ManagerId::new();
    let info = ManagerInfo {
        manager_id,
        hostname: hostname(),
        workers: config.workers,
        capacity: config.workers * config.tasks_per_worker.max(1),
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_bytes: 0,
        block_id: config.block_id.clone(),
    };
    let encode = |m: &FromManager| ferry_proto::codec::encode(m).map(Bytes::from);
    to_endpoint.send(encode(&FromManager::Register(info))?).await?;
    tracing::info!(%manager_id, endpoint = %config.endpoint, workers = config.workers, "manager registered");

    let worker_bin = match &config.worker_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("ferry-worker"),
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut slots = Vec::new();
    for index in 0..config.workers as usize {
        slots.push(slot::Slot::spawn(index, worker_bin.clone(), events_tx.clone()));
    }
    // Tasks each slot holds; `None` while its worker is (re)starting.
    let mut load: Vec<Option<u32>> = vec![None; slots.len()];
    let depth = config.tasks_per_worker.max(1);
    let mut queue: VecDeque<TaskSpec> = VecDeque::new();
    // Tasks cancelled lately: one may still come back from a slot whose worker died
    // (stopped for another cancel) after its own cancel went by.
    let mut cancelled: HashSet<TaskId> = HashSet::new();
    let mut functions: HashMap<FunctionId, Arc<FunctionCode>> = HashMap::new();
    let mut heartbeat = tokio::time::interval(Duration::from_millis(config.heartbeat_interval_ms.max(100)));

    loop {
        tokio::select! {
            frame = from_endpoint.next() => {
                let Some(frame) = frame else {
                    tracing::info!("endpoint closed the connection; stopping");
                    break;
                };
                match ferry_proto::codec::decode::<ToManager>(&frame?) {
                    Ok(ToManager::Run { functions: code, tasks }) => {
                        for f in code {
                            functions.insert(f.function_id, Arc::new(f));
                        }
                        queue.extend(tasks);
                    }
                    Ok(ToManager::Cancel { task_ids }) => {
                        if cancelled.len() > 100_000 {
                            cancelled.clear();
                        }
                        cancelled.extend(task_ids.iter().copied());
                        let cancel: HashSet<TaskId> = task_ids.into_iter().collect();
                        // Queued here: drop them, and say so (which frees them on the
                        // endpoint's side). In a slot: the slot stops them.
                        let at = ferry_proto::time::now_micros();
                        for task in queue.iter().filter(|t| cancel.contains(&t.task_id)) {
                            let lost = FromManager::Lost {
                                task_id: task.task_id,
                                attempt: task.attempt,
                                at,
                                reason: "cancelled".to_owned(),
                            };
                            to_endpoint.feed(encode(&lost)?).await?;
                        }
                        queue.retain(|t| !cancel.contains(&t.task_id));
                        let cancel = Arc::new(cancel);
                        for slot in &slots {
                            slot.cancel(cancel.clone());
                        }
                    }
                    Ok(ToManager::Shutdown) => break,
                    Err(e) => anyhow::bail!("malformed frame from the endpoint: {e}"),
                }
            }
            Some(event) = events.recv() => {
                // Take every event already waiting, so one flush carries them all.
                let mut next = Some(event);
                while let Some(event) = next {
                    match event {
                        SlotEvent::Report(report) => to_endpoint.feed(encode(&report)?).await?,
                        SlotEvent::Ready(index) => load[index] = Some(0),
                        SlotEvent::Done(index) => {
                            if let Some(n) = load[index].as_mut() {
                                *n = n.saturating_sub(1);
                            }
                        }
                        SlotEvent::Gone(index, waiting) => {
                            load[index] = None;
                            for task in waiting.into_iter().rev() {
                                if cancelled.contains(&task.task_id) {
                                    let lost = FromManager::Lost {
                                        task_id: task.task_id,
                                        attempt: task.attempt,
                                        at: ferry_proto::time::now_micros(),
                                        reason: "cancelled".to_owned(),
                                    };
                                    to_endpoint.feed(encode(&lost)?).await?;
                                } else {
                                    queue.push_front(task);
                                }
                            }
                        }
                    }
                    next = events.try_recv().ok();
                }
            }
            _ = heartbeat.tick() => {
                let idle = load.iter().filter(|l| **l == Some(0)).count() as u32;
                let beat = FromManager::Heartbeat { at: ferry_proto::time::now_micros(), idle_workers: idle };
                to_endpoint.feed(encode(&beat)?).await?;
            }
            _ = shutdown.cancelled() => break,
        }
        // Fill the least loaded ready slot first, one task at a time, so work spreads.
        while !queue.is_empty() {
            let Some(index) = (0..slots.len())
                .filter(|&i| load[i].is_some_and(|n| n < depth))
                .min_by_key(|&i| load[i])
            else {
                break;
            };
            let task = queue.pop_front().expect("not empty");
            let Some(function) = functions.get(&task.function_id).cloned() else {
                tracing::error!(task_id = %task.task_id, function_id = %task.function_id, "task for a function the endpoint never sent");
                continue;
            };
            if let Some(n) = load[index].as_mut() {
                *n += 1;
            }
            slots[index].assign(function, task);
        }
        SinkExt::<Bytes>::flush(&mut to_endpoint).await?;
    }
    drop(slots);
    Ok(())
}

async fn connect(addr: &str) -> anyhow::Result<tokio::net::TcpStream> {
    let mut delay = Duration::from_millis(50);
    for _ in 0..20 {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                tracing::debug!(error = %e, "endpoint not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    anyhow::bail!("cannot connect to the endpoint at {addr}")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}
