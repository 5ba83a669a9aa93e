//! The worker's loop: frames from the manager on stdin, answers on stdout.
//!
//! Python tasks are pipelined: every task the manager has handed over goes to the host
//! at once, the host runs them in order, and each answer goes back the moment it comes
//! (output is flushed when no further answer is already waiting). So a busy worker moves
//! many tasks per pipe write and wake-up instead of one. A shell task (or one that
//! cannot run) waits until the host has finished the Python tasks ahead of it: tasks
//! finish in the order the manager sent them, which is what it expects.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;

use bytes::Bytes;
use ferry_proto::frames::{FromWorker, ToWorker};
use ferry_proto::messages::{Completion, FunctionCode, FunctionKind, StatusUpdate, TaskResult, TaskSpec};
use ferry_proto::time::{Micros, now_micros};
use ferry_proto::{Actor, EventKind, FunctionId, TaskId};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::Config;
use crate::host::{self, Host, HostOutcome};

/// How long a task's start may wait to share a write with its end.
const STARTED_FLUSH: std::time::Duration = std::time::Duration::from_millis(2);

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(ferry_proto::codec::MAX_MESSAGE_BYTES)
        .new_codec()
}

type PipeIn = Pin<Box<dyn AsyncRead + Send>>;
type PipeOut = Pin<Box<dyn AsyncWrite + Send>>;
type Output = FramedWrite<PipeOut, LengthDelimitedCodec>;

/// Stdin and stdout, the manager's pipes. Read and written as non-blocking pipes where
/// they are pipes: tokio's own stdin and stdout hand every read and write to a thread of
/// its blocking pool, a cross-thread hop per frame in each direction (a third of the
/// worker's CPU). Anything else (a terminal, a file) goes through those.
fn manager_pipes() -> (PipeIn, PipeOut) {
    use std::os::fd::AsFd;
    use tokio::net::unix::pipe;
    let input: PipeIn = match std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Receiver::from_owned_fd)
    {
        Ok(r) => Box::pin(r),
        Err(_) => Box::pin(tokio::io::stdin()),
    };
    let output: PipeOut = match std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Sender::from_owned_fd)
    {
        Ok(w) => Box::pin(w),
        Err(_) => Box::pin(tokio::io::stdout()),
    };
    (input, output)
}

fn frame(msg: &FromWorker) -> anyhow::Result<Bytes> {
    Ok(ferry_proto::codec::encode(msg).map(Bytes::from)?)
}

/// A task the host has been sent and has not answered yet.
struct Sent {
    task: TaskSpec,
    /// When it became the task the host is running (the oldest unanswered one).
    since: Instant,
    since_micros: Micros,
    /// Whether its start has been reported on its own (it ran past STARTED_FLUSH).
    reported: bool,
}

/// Runs tasks until stdin closes and every task received is answered. Exits the process
/// with status 3 when the Python host dies under a task, so the manager reports the task
/// lost.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (stdin, stdout) = manager_pipes();
    let mut input = FramedRead::new(stdin, codec());
    let mut output = FramedWrite::new(stdout, codec());
    let places = crate::Places::open(&config);
    let mut host = match Host::start(&config.python, places.for_host()).await {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!(error = %e, "no Python host: Python tasks will fail until one starts");
            None
        }
    };
    output
        .send(frame(&FromWorker::Ready {
            pid: std::process::id(),
        })?)
        .await?;
    let mut functions: HashMap<FunctionId, FunctionCode> = HashMap::new();
    let mut waiting: VecDeque<TaskSpec> = VecDeque::new();
    let mut at_host: VecDeque<Sent> = VecDeque::new();
    let mut input_open = true;

    loop {
        pump(
            &config,
            &places,
            &mut host,
            &functions,
            &mut waiting,
            &mut at_host,
            &mut output,
        )
        .await?;
        if !input_open && waiting.is_empty() && at_host.is_empty() {
            places.close();
            return Ok(());
        }
        let front = at_host.front();
        let front_id = front.map(|s| s.task.task_id);
        let started_due = front.filter(|s| !s.reported).map(|s| s.since + STARTED_FLUSH);
        let walltime_due = front.and_then(|s| {
            s.task
                .walltime_ms
                .map(|ms| s.since + std::time::Duration::from_millis(ms))
        });
        tokio::select! {
            biased;
            answer = next_answer(&mut host, front_id) => {
                let sent = at_host.pop_front().expect("an answer is for a task sent");
                let outcome = match answer {
                    Ok(outcome) => outcome,
                    Err(e) => host_died(&sent.task, &e),
                };
                output.feed(frame(&FromWorker::Finished(finished(&sent.task, outcome)))?).await?;
                if let Some(next) = at_host.front_mut() {
                    (next.since, next.since_micros) = (Instant::now(), now_micros());
                }
                if !host.as_ref().is_some_and(Host::has_buffered) {
                    SinkExt::<Bytes>::flush(&mut output).await?;
                }
            }
            frame = input.next(), if input_open => {
                // Take every task already arrived with it: the next pump hands them to
                // the host in one write, not one write each.
                let mut next = Some(frame);
                while let Some(frame) = next {
                    let Some(frame) = frame else {
                        input_open = false;
                        break;
                    };
                    let ToWorker::Run { function, task } = match ferry_proto::codec::decode::<ToWorker>(&frame?) {
                        Ok(m) => m,
                        Err(e) => anyhow::bail!("malformed frame from the manager: {e}"),
                    };
                    if let Some(f) = function {
                        functions.insert(f.function_id, f);
                    }
                    waiting.push_back(task);
                    next = input.next().now_or_never();
                }
            },
            _ = at(started_due) => {
                let sent = at_host.front_mut().expect("a due start is the front task's");
                sent.reported = true;
                output
                    .send(frame(&FromWorker::Started {
                        task_id: sent.task.task_id,
                        attempt: sent.task.attempt,
                        at: sent.since_micros,
                    })?)
                    .await?;
            }
            _ = at(walltime_due) => {
                // Stopping the task means stopping its interpreter and everything below
                // the worker (in its group or out of it); the tasks sent after it go to a
                // fresh interpreter.
                let sent = at_host.pop_front().expect("a due walltime is the front task's");
                if let Some(stopped) = host.take() {
                    stopped.stop().await;
                }
                crate::lifeline::end_tree(Some(sent.task.task_id), &[]);
                for later in at_host.drain(..).rev() {
                    waiting.push_front(later.task);
                }
                let result = timed_out(&sent.task, sent.since_micros);
                output.send(frame(&FromWorker::Finished(result))?).await?;
            }
        }
    }
}

/// Sends every waiting Python task to the host (one write for all of them); runs a
/// shell task, or answers one that cannot run, once the host has nothing in hand.
async fn pump(
    config: &Config,
    places: &crate::Places,
    host: &mut Option<Host>,
    functions: &HashMap<FunctionId, FunctionCode>,
    waiting: &mut VecDeque<TaskSpec>,
    at_host: &mut VecDeque<Sent>,
    output: &mut Output,
) -> anyhow::Result<()> {
    let mut fed = false;
    while let Some(task) = waiting.front() {
        let function = functions.get(&task.function_id);
        let Some(function) = function.filter(|f| f.kind == FunctionKind::Python) else {
            if !at_host.is_empty() {
                break;
            }
            let task = waiting.pop_front().expect("front exists");
            let started = now_micros();
            if function.is_some() {
                // A command takes a while: it shows as running from the start.
                let step = FromWorker::Started {
                    task_id: task.task_id,
                    attempt: task.attempt,
                    at: started,
                };
                output.send(frame(&step)?).await?;
            }
            let spare: Vec<u32> = host.iter().map(|h| h.pid).collect();
            let result = run_alone(&task, function, started, &spare, places, config).await;
            output.send(frame(&FromWorker::Finished(result))?).await?;
            continue;
        };
        if host.is_none() {
            match Host::start(&config.python, places.for_host()).await {
                Ok(h) => *host = Some(h),
                Err(e) => {
                    let task = waiting.pop_front().expect("front exists");
                    let started = now_micros();
                    let result = failed(&task, started, e.to_string());
                    output.send(frame(&FromWorker::Finished(result))?).await?;
                    continue;
                }
            }
        }
        let running = host.as_mut().expect("started above");
        if let Err(e) = running.send(function, task).await {
            if at_host.is_empty() {
                // It died idle: nothing was lost; the next round starts another.
                tracing::warn!(error = %e, "Python host gone while idle; starting another");
                *host = None;
                continue;
            }
            let front = &at_host.front().expect("not empty").task;
            host_died(front, &e);
        }
        let task = waiting.pop_front().expect("front exists");
        at_host.push_back(Sent {
            task,
            since: Instant::now(),
            since_micros: now_micros(),
            reported: false,
        });
        fed = true;
    }
    if fed && let Err(e) = host.as_mut().expect("fed").flush().await {
        let front = &at_host.front().expect("fed").task;
        host_died(front, &e);
    }
    Ok(())
}

/// The host's next answer; never ready when nothing is in its hands.
async fn next_answer(host: &mut Option<Host>, front: Option<TaskId>) -> Result<HostOutcome, host::Error> {
    match (host.as_mut(), front) {
        (Some(host), Some(id)) => host.next(id).await,
        _ => std::future::pending().await,
    }
}

async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The interpreter died under a task (segfault, os._exit, OOM kill) or broke the
/// protocol: the worker goes with it, so the manager reports the task lost and retries
/// it, and sends the ones queued behind it again.
fn host_died(task: &TaskSpec, e: &host::Error) -> ! {
    tracing::error!(task_id = %task.task_id, error = %e, "Python host died running a task");
    crate::lifeline::end_tree(Some(task.task_id), &[]);
    std::process::exit(3);
}

fn started_step(task: &TaskSpec, at: Micros) -> StatusUpdate {
    StatusUpdate {
        task_id: task.task_id,
        attempt: task.attempt,
        kind: EventKind::Started,
        at,
        by: Actor::Worker,
    }
}

fn result(
    task: &TaskSpec,
    started: Micros,
    completion: Completion,
    stdout: String,
    stderr: String,
) -> TaskResult {
    TaskResult {
        task_id: task.task_id,
        attempt: task.attempt,
        steps: vec![started_step(task, started)],
        completion,
        group: task.group,
        finished_at: now_micros(),
        stdout,
        stderr,
    }
}

fn failed(task: &TaskSpec, started: Micros, traceback: String) -> TaskResult {
    let completion = Completion::Failure {
        traceback,
        exception: None,
    };
    result(task, started, completion, String::new(), String::new())
}

/// What the host answered, as the task's result.
fn finished(task: &TaskSpec, out: HostOutcome) -> TaskResult {
    let completion = if out.success {
        Completion::Success { result: out.data }
    } else {
        Completion::Failure {
            traceback: String::from_utf8_lossy(&out.data).into_owned(),
            exception: (!out.exception.is_empty()).then_some(out.exception),
        }
    };
    result(task, out.started_at, completion, out.stdout, out.stderr)
}

fn timed_out(task: &TaskSpec, started: Micros) -> TaskResult {
    let secs = task.walltime_ms.unwrap_or(0) as f64 / 1000.0;
    tracing::warn!(task_id = %task.task_id, walltime_secs = secs, "task stopped at its walltime");
    let completion = Completion::TimedOut {
        reason: format!(
            "task {} ran past its walltime of {secs} s and was stopped",
            task.task_id
        ),
    };
    result(task, started, completion, String::new(), String::new())
}

/// A task the host does not run: a shell command or an application (run here, to its
/// walltime; what it leaves running below the worker is killed, all but `spare`, the
/// Python host), or one whose function the worker was never sent.
async fn run_alone(
    task: &TaskSpec,
    function: Option<&FunctionCode>,
    started: Micros,
    spare: &[u32],
    places: &crate::Places,
    config: &Config,
) -> TaskResult {
    let Some(function) = function else {
        return failed(
            task,
            started,
            format!("the worker was never sent function {}", task.function_id),
        );
    };
    let Some(dirs) = &places.dirs else {
        let why = format!("task {}: no run directory: {}", task.task_id, places.error);
        return failed(task, started, why);
    };
    let walltime = task.walltime_ms.map(std::time::Duration::from_millis);
    let run = crate::shell::Run {
        task_id: task.task_id,
        template: &function.code,
        payload: &task.payload,
        walltime,
        spare,
        dirs,
        env_script: config.app_env_script.as_deref(),
    };
    let outcome = match function.kind {
        FunctionKind::Application => crate::app::run(run).await,
        _ => crate::shell::run(run).await,
    };
    match outcome {
        Some(out) => result(task, started, out.completion, out.stdout, out.stderr),
        None => timed_out(task, started),
    }
}
