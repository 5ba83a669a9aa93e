//! The worker's loop: frames from the manager on stdin, answers on stdout.

use std::collections::HashMap;

use bytes::Bytes;
use ferry_proto::frames::{FromWorker, ToWorker};
use ferry_proto::messages::{Completion, FunctionCode, FunctionKind, StatusUpdate, TaskResult, TaskSpec};
use ferry_proto::time::now_micros;
use ferry_proto::{Actor, EventKind, FunctionId};
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::Config;
use crate::host::{self, Host};

/// How long a task's start may wait to share a write with its end.
const STARTED_FLUSH: std::time::Duration = std::time::Duration::from_millis(2);

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(ferry_proto::codec::MAX_MESSAGE_BYTES)
        .new_codec()
}

/// Runs tasks until stdin closes. Exits the process with status 3 when the Python host
/// dies under a task, so the manager reports the task lost.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut input = FramedRead::new(tokio::io::stdin(), codec());
    let mut output = FramedWrite::new(tokio::io::stdout(), codec());
    let mut host = match Host::start(&config.python).await {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!(error = %e, "no Python host: Python tasks will fail until one starts");
            None
        }
    };
    let send = |msg: FromWorker| ferry_proto::codec::encode(&msg).map(Bytes::from);
    output
        .send(send(FromWorker::Ready {
            pid: std::process::id(),
        })?)
        .await?;
    let mut functions: HashMap<FunctionId, FunctionCode> = HashMap::new();

    while let Some(frame) = input.next().await {
        let ToWorker::Run { function, task } = match ferry_proto::codec::decode::<ToWorker>(&frame?) {
            Ok(m) => m,
            Err(e) => anyhow::bail!("malformed frame from the manager: {e}"),
        };
        if let Some(f) = function {
            functions.insert(f.function_id, f);
        }
        let started = now_micros();
        output
            .feed(send(FromWorker::Started {
                task_id: task.task_id,
                attempt: task.attempt,
                at: started,
            })?)
            .await?;
        let span = tracing::debug_span!("run", task_id = %task.task_id, attempt = task.attempt);
        let _enter = span.enter();
        // A short task's start and end travel in one write; a longer one's start is sent
        // after STARTED_FLUSH, so the manager (and the user) still see it running.
        let deadline = task
            .walltime_ms
            .map(|ms| tokio::time::Instant::now() + std::time::Duration::from_millis(ms));
        let outcome = {
            let run = execute(&config, &mut host, &functions, &task, started);
            tokio::pin!(run);
            let walltime = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(walltime);
            let mut flushed = false;
            loop {
                tokio::select! {
                    result = &mut run => break Some(result),
                    _ = tokio::time::sleep(STARTED_FLUSH), if !flushed => {
                        SinkExt::<Bytes>::flush(&mut output).await?;
                        flushed = true;
                    }
                    _ = &mut walltime => break None,
                }
            }
        };
        let result = match outcome {
            Some(result) => result,
            None => {
                // Stopping the task means stopping its interpreter: the next Python task
                // starts a fresh one.
                host = None;
                let secs = task.walltime_ms.unwrap_or(0) as f64 / 1000.0;
                tracing::warn!(task_id = %task.task_id, walltime_secs = secs, "task stopped at its walltime");
                TaskResult {
                    task_id: task.task_id,
                    attempt: task.attempt,
                    steps: vec![StatusUpdate {
                        task_id: task.task_id,
                        attempt: task.attempt,
                        kind: EventKind::Started,
                        at: started,
                        by: Actor::Worker,
                    }],
                    completion: Completion::TimedOut {
                        reason: format!(
                            "task {} ran past its walltime of {secs} s and was stopped",
                            task.task_id
                        ),
                    },
                    group: task.group,
                    finished_at: now_micros(),
                    stdout: String::new(),
                    stderr: String::new(),
                }
            }
        };
        output.send(send(FromWorker::Finished(result))?).await?;
    }
    Ok(())
}

async fn execute(
    config: &Config,
    host: &mut Option<Host>,
    functions: &HashMap<FunctionId, FunctionCode>,
    task: &TaskSpec,
    started: u64,
) -> TaskResult {
    let step = StatusUpdate {
        task_id: task.task_id,
        attempt: task.attempt,
        kind: EventKind::Started,
        at: started,
        by: Actor::Worker,
    };
    let result = |completion, stdout, stderr| TaskResult {
        task_id: task.task_id,
        attempt: task.attempt,
        steps: vec![step],
        completion,
        group: task.group,
        finished_at: now_micros(),
        stdout,
        stderr,
    };
    let failure = |traceback: String| Completion::Failure {
        traceback,
        exception: None,
    };
    let Some(function) = functions.get(&task.function_id) else {
        return result(
            failure(format!("the worker was never sent function {}", task.function_id)),
            String::new(),
            String::new(),
        );
    };
    if function.kind == FunctionKind::Shell {
        let out = crate::shell::run(&function.code, &task.payload).await;
        return result(out.completion, out.stdout, out.stderr);
    }
    if host.is_none() {
        match Host::start(&config.python).await {
            Ok(h) => *host = Some(h),
            Err(e) => return result(failure(e.to_string()), String::new(), String::new()),
        }
    }
    let running = host.as_mut().expect("started above");
    match running.run(function, task).await {
        Ok(out) => {
            let completion = if out.success {
                Completion::Success { result: out.data }
            } else {
                Completion::Failure {
                    traceback: String::from_utf8_lossy(&out.data).into_owned(),
                    exception: (!out.exception.is_empty()).then_some(out.exception),
                }
            };
            result(completion, out.stdout, out.stderr)
        }
        Err(e @ (host::Error::Exited { .. } | host::Error::Protocol(_))) => {
            // The interpreter died under the task (segfault, os._exit, OOM kill): the
            // worker goes with it so the manager reports the task lost and retries it.
            tracing::error!(task_id = %task.task_id, error = %e, "Python host died running a task");
            std::process::exit(3);
        }
        Err(e) => result(failure(e.to_string()), String::new(), String::new()),
    }
}
