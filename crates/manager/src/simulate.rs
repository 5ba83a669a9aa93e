//! `ferry-manager --simulate N`: N fake managers with instant workers, all connected to
//! one endpoint, to measure the endpoint's dispatch rate and memory with more nodes than
//! a test machine has (see `bench/simulate.py`).
//!
//! Each fake manager registers like a real one and answers every task at once: started,
//! then finished with the result `null`. No worker process is involved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_proto::ManagerId;
use ferry_proto::frames::{FromManager, ManagerInfo, ToManager};
use ferry_proto::messages::{Completion, TaskResult};
use ferry_proto::time::now_micros;
use futures_util::SinkExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::link::Link;

/// The result every simulated task returns: JSON `null` in the serialized-data form.
const NULL_RESULT: &[u8] = b"11\nnull";

/// Handshakes in flight at once, below the endpoint's cap on connections still
/// registering (256): past it the endpoint turns connections away, and thousands of
/// managers in one process would spend their time (TLS handshakes) trying again.
const HANDSHAKES_AT_ONCE: usize = 200;

/// Connects `count` fake managers and serves until `shutdown` or the endpoint goes.
pub(crate) async fn run(
    config: Config,
    link: Link,
    count: u32,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut managers = tokio::task::JoinSet::new();
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    for index in 0..count {
        let config = config.clone();
        let shutdown = shutdown.clone();
        let link = link.clone();
        let handshakes = handshakes.clone();
        managers.spawn(async move { fake(index, &config, &link, &handshakes, shutdown).await });
        // A SYN burst of thousands overflows the listen backlog; pace the connects.
        if index % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tracing::info!(managers = count, elapsed = ?started.elapsed(), "simulated managers connecting");
    let mut tasks = 0u64;
    let mut failed = 0u32;
    while let Some(joined) = managers.join_next().await {
        match joined {
            Ok(Ok(n)) => tasks += n,
            Ok(Err(e)) => {
                failed += 1;
                tracing::debug!(error = %format!("{e:#}"), "a simulated manager stopped");
            }
            Err(e) => anyhow::bail!("a simulated manager panicked: {e}"),
        }
    }
    println!("simulate: {count} managers, {tasks} tasks run, {failed} connections failed");
    Ok(())
}

/// One fake manager; returns how many tasks it ran.
async fn fake(
    index: u32,
    config: &Config,
    link: &Link,
    handshakes: &Semaphore,
    shutdown: CancellationToken,
) -> anyhow::Result<u64> {
    let encode = |m: &FromManager| ferry_proto::codec::encode(m).map(Bytes::from);
    let info = ManagerInfo {
        manager_id: ManagerId::new(),
        hostname: format!("sim-{index}"),
        workers: config.workers,
        capacity: config.workers * config.tasks_per_worker.max(1),
        cores: config.workers,
        memory_bytes: 0,
        gpus: 0,
        tags: config.tags.0.clone(),
        block_id: Some("simulated".to_owned()),
        block_end: None,
        priority: 0,
    };
    let handshake = handshakes.acquire().await?;
    let (mut from_endpoint, mut to_endpoint) = link.handshake(info).await?;
    drop(handshake);
    let mut heartbeat = tokio::time::interval(Duration::from_millis(config.heartbeat_interval_ms.max(100)));
    let mut ran = 0u64;
    loop {
        tokio::select! {
            frame = crate::link::next_frame(&mut from_endpoint) => {
                let Some(frame) = frame else { return Ok(ran) };
                match ferry_proto::codec::decode::<ToManager>(&frame?)? {
                    ToManager::Run { tasks, .. } => {
                        for task in tasks {
                            let at = now_micros();
                            to_endpoint
                                .feed(encode(&FromManager::Started { task_id: task.task_id, attempt: task.attempt, at })?)
                                .await?;
                            let result = TaskResult {
                                task_id: task.task_id,
                                attempt: task.attempt,
                                steps: Vec::new(),
                                completion: Completion::Success { result: Bytes::from_static(NULL_RESULT) },
                                group: None,
                                finished_at: now_micros(),
                                stdout: String::new(),
                                stderr: String::new(),
                            };
                            to_endpoint.feed(encode(&FromManager::Finished(result))?).await?;
                            ran += 1;
                        }
                        SinkExt::<Bytes>::flush(&mut to_endpoint).await?;
                    }
                    // Every task finished the moment it came: nothing to stop.
                    ToManager::Cancel { .. } => {}
                    // No Python hosts to replace.
                    ToManager::Unreferenced { .. } | ToManager::SessionDone { .. } => {}
                    ToManager::Shutdown => return Ok(ran),
                    ToManager::Refused { reason } => anyhow::bail!("refused: {reason}"),
                    ToManager::Hello { .. } => anyhow::bail!("the endpoint greeted twice"),
                }
            }
            _ = heartbeat.tick() => {
                let beat = FromManager::Heartbeat { at: now_micros(), idle_workers: config.workers };
                to_endpoint.send(encode(&beat)?).await?;
            }
            _ = shutdown.cancelled() => return Ok(ran),
        }
    }
}
