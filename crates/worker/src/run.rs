//! The worker's loop: frames from the manager on stdin, answers on stdout.
//!
//! Python tasks are pipelined: every task the manager has handed over goes to the host
//! at once, the host runs them in order, and each answer goes back the moment it comes
//! (output is flushed when no further answer is already waiting). So a busy worker moves
//! many tasks per pipe write and wake-up instead of one. A shell task (or one that
//! cannot run) waits until the host has finished the Python tasks ahead of it, then runs
//! in the worker itself while the loop goes on reading: tasks finish in the order the
//! manager sent them, which is what it expects.
//!
//! A [`ToWorker::Withdraw`] takes back what has not begun: the tasks still here, named
//! at once in a [`FromWorker::Withdrawn`], and those sent to the host behind the one it
//! runs, which the host is asked for (`host`'s withdrawal) and which a second one names
//! when it answers (an empty one when nothing is left behind the running task before it
//! does; an answer that comes later still gives back what it names). None of them runs
//! here. The manager asks when they wait behind a long task while another worker is
//! idle.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use ferry_proto::frames::{FromWorker, ToWorker};
use ferry_proto::messages::{Completion, FunctionCode, FunctionKind, StatusUpdate, TaskResult, TaskSpec};
use ferry_proto::time::{Micros, now_micros};
use ferry_proto::{Actor, BatchId, EventKind, FunctionId, TaskId};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::Config;
use crate::host::{self, Host, HostEvent, HostOutcome};
use ferry_proto::environments::HostEnvironment;

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
    /// Its number at the host (`Host::send`).
    seq: u64,
    /// When it became the task the host is running (the oldest unanswered one).
    since: Instant,
    since_micros: Micros,
    /// Whether its start has been reported on its own (it ran past STARTED_FLUSH).
    reported: bool,
}

/// A shell command or an application, running in the worker.
type Alone<'a> = Pin<Box<dyn Future<Output = TaskResult> + 'a>>;

/// The worker's state between two turns of its loop.
struct Worker<'a> {
    config: &'a Config,
    places: &'a crate::Places,
    host: Option<Host>,
    /// The sessions whose tasks the host was sent, when its environment recycles when a
    /// session completes.
    host_sessions: HashSet<BatchId>,
    /// The environment of tasks that name none.
    default_env: &'a HostEnvironment,
    functions: HashMap<FunctionId, FunctionCode>,
    /// Handed over, not begun.
    waiting: VecDeque<TaskSpec>,
    /// Sent to the host, not answered.
    at_host: VecDeque<Sent>,
    alone: Option<Alone<'a>>,
    /// A withdrawal the manager is owed an answer to, which waits for the host's.
    withdrawing: bool,
    /// The host's control socket is read (until it breaks: its host is going).
    listening: bool,
    /// The host's environment, tasks answered and start, for recycling it.
    life: HostLife,
    output: Output,
}

/// The current Python host's environment, how much it has done, why it is to be
/// replaced, and how many were replaced before it.
struct HostLife {
    /// The task environment it was started for (`None`: the default one).
    env: Option<String>,
    tasks: u64,
    since: Instant,
    /// Why it is to be replaced once it has answered what it holds.
    recycle: Option<String>,
    recycled: u64,
}

impl HostLife {
    fn renew(&mut self) {
        (self.tasks, self.since) = (0, Instant::now());
    }
}

/// Runs tasks until stdin closes and every task received is answered. Exits the process
/// with status 3 when the Python host dies under a task, so the manager reports the task
/// lost.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (stdin, stdout) = manager_pipes();
    let mut input = FramedRead::new(stdin, codec());
    let mut output = FramedWrite::new(stdout, codec());
    let places = crate::Places::open(&config);
    let default_env = config.default_environment();
    // With task environments, which host a slot needs is known when a task comes.
    let host = if config.environments.is_empty() {
        match Host::start(&default_env, places.for_host()).await {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(error = %e, "no Python host: Python tasks will fail until one starts");
                None
            }
        }
    } else {
        None
    };
    output
        .send(frame(&FromWorker::Ready {
            pid: std::process::id(),
        })?)
        .await?;
    let mut w = Worker {
        config: &config,
        places: &places,
        host,
        host_sessions: HashSet::new(),
        default_env: &default_env,
        functions: HashMap::new(),
        waiting: VecDeque::new(),
        at_host: VecDeque::new(),
        alone: None,
        withdrawing: false,
        listening: true,
        life: HostLife {
            env: None,
            tasks: 0,
            since: Instant::now(),
            recycle: None,
            recycled: 0,
        },
        output,
    };
    let mut input_open = true;

    loop {
        w.pump().await?;
        if !input_open && w.waiting.is_empty() && w.at_host.is_empty() && w.alone.is_none() {
            places.close();
            return Ok(());
        }
        let front = w.at_host.front();
        let started_due = front.filter(|s| !s.reported).map(|s| s.since + STARTED_FLUSH);
        let walltime_due = front.and_then(|s| {
            s.task
                .walltime_ms
                .map(|ms| s.since + std::time::Duration::from_millis(ms))
        });
        // The host's answers to withdrawals are always listened for: one may come after
        // the request stopped mattering here, and the tasks it names never run here.
        let (in_hand, asked) = (!w.at_host.is_empty(), w.listening);
        tokio::select! {
            biased;
            event = from_host(&mut w.host, in_hand, asked) => match event {
                HostEvent::Answer(answer) => w.answered(answer).await?,
                HostEvent::Withdrawn(Ok(range)) => w.took_back(range).await?,
                // The host is going: its death under a task says why; an idle one is
                // replaced when the next task comes.
                HostEvent::Withdrawn(Err(e)) => {
                    tracing::warn!(error = %e, "the Python host's control socket broke");
                    w.listening = false;
                    if w.at_host.is_empty() {
                        w.host = None;
                    }
                }
            },
            result = alone_done(&mut w.alone) => {
                w.alone = None;
                w.output.send(frame(&FromWorker::Finished(result))?).await?;
            }
            frame = input.next(), if input_open => {
                // Take every frame already arrived with it: the next pump hands their
                // tasks to the host in one write, not one write each.
                let mut next = Some(frame);
                while let Some(frame) = next {
                    let Some(frame) = frame else {
                        input_open = false;
                        break;
                    };
                    match ferry_proto::codec::decode::<ToWorker>(&frame?) {
                        Ok(ToWorker::Run { function, task }) => {
                            if let Some(f) = function {
                                w.functions.insert(f.function_id, f);
                            }
                            w.waiting.push_back(task);
                        }
                        Ok(ToWorker::Withdraw) => w.withdraw().await?,
                        Ok(ToWorker::Unreferenced { environment }) => w.unreferenced(&environment).await,
                        Ok(ToWorker::SessionDone { session }) => w.session_done(session).await,
                        Err(e) => anyhow::bail!("malformed frame from the manager: {e}"),
                    }
                    next = input.next().now_or_never();
                }
            },
            _ = at(started_due) => {
                let sent = w.at_host.front_mut().expect("a due start is the front task's");
                sent.reported = true;
                let step = FromWorker::Started {
                    task_id: sent.task.task_id,
                    attempt: sent.task.attempt,
                    at: sent.since_micros,
                };
                w.output.send(frame(&step)?).await?;
            }
            _ = at(walltime_due) => w.walltime().await?,
        }
    }
}

impl<'a> Worker<'a> {
    /// The task environment `name` (`None`: the default one), if this worker has it.
    fn environment(&self, name: Option<&str>) -> Option<&'a HostEnvironment> {
        match name {
            None => Some(self.default_env),
            Some(name) => self.config.environments.get(name),
        }
    }

    /// Sends every waiting Python task to the host (one write for all of them); starts a
    /// shell task, or answers one that cannot run, once the host has nothing in hand.
    async fn pump(&mut self) -> anyhow::Result<()> {
        let mut fed = false;
        while self.alone.is_none()
            && let Some(task) = self.waiting.front()
        {
            let function = self.functions.get(&task.function_id);
            let Some(function) = function.filter(|f| f.kind == FunctionKind::Python) else {
                if !self.at_host.is_empty() {
                    break;
                }
                let task = self.waiting.pop_front().expect("front exists");
                self.start_alone(task).await?;
                continue;
            };
            let Some(environment) = self.environment(task.environment.as_deref()) else {
                let task = self.waiting.pop_front().expect("front exists");
                let why = format!(
                    "task {} names task environment {:?}, which this worker was not given \
                     (its endpoint's provider.environments changed while its managers ran?)",
                    task.task_id,
                    task.environment.as_deref().unwrap_or_default()
                );
                self.output
                    .send(frame(&FromWorker::Finished(failed(&task, now_micros(), why)))?)
                    .await?;
                continue;
            };
            // A task of another environment than the host's: once the host has answered
            // what it holds, it is replaced by one of the task's.
            let switch = self.host.is_some() && self.life.env != task.environment;
            if switch && self.at_host.is_empty() {
                self.life.recycle = Some(format!(
                    "task {} runs in environment {}, the host in {}",
                    task.task_id,
                    env_name(task.environment.as_deref()),
                    env_name(self.life.env.as_deref())
                ));
            }
            let sent = self.life.tasks + self.at_host.len() as u64;
            if self.host.is_some() && (switch || recycle_due(environment, &mut self.life, sent)) {
                if !self.at_host.is_empty() {
                    // It answers what it holds first.
                    break;
                }
                recycle_host(&mut self.host, &mut self.life).await;
            }
            if self.host.is_none() {
                match Host::start(environment, self.places.for_host()).await {
                    Ok(h) => {
                        tracing::debug!(
                            pid = h.pid,
                            environment = env_name(task.environment.as_deref()),
                            "Python host started"
                        );
                        self.host = Some(h);
                        self.life.env = task.environment.clone();
                        self.host_sessions.clear();
                        self.life.renew();
                        self.listening = true;
                    }
                    Err(e) => {
                        let task = self.waiting.pop_front().expect("front exists");
                        let started = now_micros();
                        let why = match &task.environment {
                            Some(name) => format!("task environment {name}: {e}"),
                            None => e.to_string(),
                        };
                        let result = failed(&task, started, why);
                        self.output.send(frame(&FromWorker::Finished(result))?).await?;
                        continue;
                    }
                }
            }
            if environment.recycle_session
                && let Some(session) = task.session
            {
                self.host_sessions.insert(session);
            }
            let running = self.host.as_mut().expect("started above");
            let seq = match running.send(function, task).await {
                Ok(seq) => seq,
                Err(e) if self.at_host.is_empty() => {
                    // It died idle: nothing was lost; the next round starts another.
                    tracing::warn!(error = %e, "Python host gone while idle; starting another");
                    self.host = None;
                    continue;
                }
                Err(e) => host_died(&self.at_host.front().expect("not empty").task, &e),
            };
            let task = self.waiting.pop_front().expect("front exists");
            self.at_host.push_back(Sent {
                task,
                seq,
                since: Instant::now(),
                since_micros: now_micros(),
                reported: false,
            });
            fed = true;
        }
        if fed && let Err(e) = self.host.as_mut().expect("fed").flush().await {
            let front = &self.at_host.front().expect("fed").task;
            host_died(front, &e);
        }
        Ok(())
    }

    /// Starts a task the host does not run (a command shows as running from its start).
    async fn start_alone(&mut self, task: TaskSpec) -> anyhow::Result<()> {
        let started = now_micros();
        let function = self.functions.get(&task.function_id).cloned();
        if function.is_some() {
            let step = FromWorker::Started {
                task_id: task.task_id,
                attempt: task.attempt,
                at: started,
            };
            self.output.send(frame(&step)?).await?;
        }
        let spare: Vec<u32> = self.host.iter().map(|h| h.pid).collect();
        let (places, config) = (self.places, self.config);
        self.alone = Some(Box::pin(async move {
            run_alone(&task, function.as_ref(), started, &spare, places, config).await
        }));
        Ok(())
    }

    /// The host answered a task. An answer that passes over tasks sent before it is
    /// for a task behind withdrawn ones: the host wrote its withdrawal's answer first.
    async fn answered(&mut self, answer: Result<(TaskId, HostOutcome), host::Error>) -> anyhow::Result<()> {
        let (task_id, outcome) = match answer {
            Ok(answer) => answer,
            Err(e) => host_died(
                &self.at_host.front().expect("an answer is for a task sent").task,
                &e,
            ),
        };
        let front = |w: &Self| w.at_host.front().map(|s| s.task.task_id);
        if front(self) != Some(task_id)
            && let Some(range) = self.host.as_mut().and_then(Host::try_withdrawn)
        {
            self.took_back(range).await?;
        }
        if front(self) != Some(task_id) {
            let e = host::Error::Protocol(format!("an answer for task {task_id} out of order"));
            host_died(
                &self.at_host.front().expect("an answer is for a task sent").task,
                &e,
            );
        }
        let sent = self.at_host.pop_front().expect("checked above");
        self.life.tasks += 1;
        let limit = self
            .environment(self.life.env.as_deref())
            .map_or(0, |e| e.recycle_rss_mb);
        if limit > 0
            && let Some(host) = &self.host
            && let Some(rss) = rss_bytes(host.pid)
            && rss > limit << 20
        {
            self.life.recycle = Some(format!(
                "its memory (RSS) is {} MiB, over its limit of {limit} MiB (after task {})",
                rss >> 20,
                sent.task.task_id
            ));
        }
        let result = finished(&sent.task, outcome);
        self.output.feed(frame(&FromWorker::Finished(result))?).await?;
        if self.withdrawing && self.at_host.len() < 2 {
            // Nothing is left behind a running task to take back: the manager's request
            // is answered (a late answer of the host is still taken, in `took_back`).
            self.withdrawing = false;
            self.output
                .feed(frame(&FromWorker::Withdrawn { task_ids: Vec::new() })?)
                .await?;
        }
        if let Some(next) = self.at_host.front_mut() {
            (next.since, next.since_micros) = (Instant::now(), now_micros());
        }
        if !self.host.as_ref().is_some_and(Host::has_buffered) {
            SinkExt::<Bytes>::flush(&mut self.output).await?;
        }
        Ok(())
    }

    /// No task of `environment` is left at the endpoint: an idle host of it goes, when
    /// the environment says so and no task of it has come here since.
    async fn unreferenced(&mut self, environment: &str) {
        let ours = self.host.is_some() && self.life.env.as_deref() == Some(environment);
        let recycles = self
            .config
            .environments
            .get(environment)
            .is_some_and(|e| e.recycle_unreferenced);
        let wanted = self
            .waiting
            .iter()
            .any(|t| t.environment.as_deref() == Some(environment));
        if ours && recycles && self.at_host.is_empty() && !wanted {
            self.life.recycle = Some(format!(
                "no task of environment {environment} is left at the endpoint"
            ));
            recycle_host(&mut self.host, &mut self.life).await;
        }
    }

    /// No task of `session` is left at the endpoint: a host that ran one is replaced,
    /// now if it is idle, else once it has answered what it holds.
    async fn session_done(&mut self, session: BatchId) {
        if self.host.is_none() || !self.host_sessions.remove(&session) {
            return;
        }
        if self.life.recycle.is_none() {
            self.life.recycle = Some(format!("session {session}, whose tasks it ran, completed"));
        }
        if self.at_host.is_empty() {
            recycle_host(&mut self.host, &mut self.life).await;
        }
    }

    /// The manager asks for what has not begun: the tasks waiting here now, and those
    /// behind the host's running one once the host answers.
    async fn withdraw(&mut self) -> anyhow::Result<()> {
        // What is here goes back at once, whatever the host does.
        let ids: Vec<TaskId> = self.waiting.drain(..).map(|t| t.task_id).collect();
        if !self.withdrawing
            && self.at_host.len() >= 2
            && let Some(host) = self.host.as_mut()
        {
            let (first, upto) = (self.at_host[1].seq, self.at_host.back().expect("two").seq);
            match host.withdraw(first, upto).await {
                Ok(()) => {
                    self.withdrawing = true;
                    if !ids.is_empty() {
                        self.output
                            .send(frame(&FromWorker::Withdrawn { task_ids: ids })?)
                            .await?;
                    }
                    return Ok(());
                }
                Err(e) => tracing::warn!(error = %e, "cannot ask the Python host for tasks back"),
            }
        }
        self.output
            .send(frame(&FromWorker::Withdrawn { task_ids: ids })?)
            .await?;
        Ok(())
    }

    /// The host will not run the tasks numbered in `range`: they go back.
    async fn took_back(&mut self, range: std::ops::RangeInclusive<u64>) -> anyhow::Result<()> {
        let asked = std::mem::take(&mut self.withdrawing);
        let mut ids = Vec::new();
        let front = self.at_host.front().map(|s| s.seq);
        self.at_host.retain(|s| {
            let back = range.contains(&s.seq);
            if back {
                ids.push(s.task.task_id);
            }
            !back
        });
        if self.at_host.front().map(|s| s.seq) != front
            && let Some(next) = self.at_host.front_mut()
        {
            (next.since, next.since_micros) = (Instant::now(), now_micros());
        }
        if asked || !ids.is_empty() {
            tracing::debug!(withdrawn = ids.len(), "tasks taken back from the Python host");
            self.output
                .send(frame(&FromWorker::Withdrawn { task_ids: ids })?)
                .await?;
        }
        Ok(())
    }

    /// The host's task ran past its walltime: stopping it means stopping its interpreter
    /// and everything below the worker (in its group or out of it); the tasks sent after
    /// it go to a fresh interpreter (or back to the manager, when it asked for them).
    async fn walltime(&mut self) -> anyhow::Result<()> {
        let sent = self
            .at_host
            .pop_front()
            .expect("a due walltime is the front task's");
        if let Some(stopped) = self.host.take() {
            stopped.stop().await;
        }
        crate::lifeline::end_tree(Some(sent.task.task_id), &[]);
        for later in self.at_host.drain(..).rev() {
            self.waiting.push_front(later.task);
        }
        let result = timed_out(&sent.task, sent.since_micros);
        self.output.feed(frame(&FromWorker::Finished(result))?).await?;
        if std::mem::take(&mut self.withdrawing) {
            let ids = self.waiting.drain(..).map(|t| t.task_id).collect();
            self.output
                .feed(frame(&FromWorker::Withdrawn { task_ids: ids })?)
                .await?;
        }
        SinkExt::<Bytes>::flush(&mut self.output).await?;
        Ok(())
    }
}

/// What the host says next (see `Host::next_event`); never ready without a host.
async fn from_host(host: &mut Option<Host>, in_hand: bool, asked: bool) -> HostEvent {
    match host.as_mut() {
        Some(host) => host.next_event(in_hand, asked).await,
        None => std::future::pending().await,
    }
}

/// The result of the task running in the worker; never ready when none is.
async fn alone_done(alone: &mut Option<Alone<'_>>) -> TaskResult {
    match alone.as_mut() {
        Some(run) => run.as_mut().await,
        None => std::future::pending().await,
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

/// A process's resident memory, from `/proc/<pid>/statm`.
fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// Whether the Python host is due to be replaced (setting `recycle` to why): a task of
/// another environment is next, its memory passed the limit after a task, or it was
/// sent its environment's `recycle_tasks` tasks (`sent`) or is up `recycle_secs`.
fn recycle_due(limits: &HostEnvironment, life: &mut HostLife, sent: u64) -> bool {
    if life.recycle.is_none() && limits.recycle_tasks > 0 && sent >= limits.recycle_tasks {
        life.recycle = Some(format!("it ran {sent} tasks (its limit)"));
    }
    if life.recycle.is_none()
        && limits.recycle_secs > 0
        && life.since.elapsed() >= std::time::Duration::from_secs(limits.recycle_secs)
    {
        life.recycle = Some(format!("it has been up {} s (its limit)", limits.recycle_secs));
    }
    life.recycle.is_some()
}

/// How logs and errors name a task environment.
fn env_name(name: Option<&str>) -> &str {
    name.unwrap_or("(default)")
}

/// Replaces the (idle) Python host, logging why (`life.recycle`): the next Python task
/// starts a fresh one.
async fn recycle_host(host: &mut Option<Host>, life: &mut HostLife) {
    let environment = life.env.take();
    let Some(stopped) = host.take() else { return };
    let reason = life.recycle.take().unwrap_or_default();
    life.recycled += 1;
    tracing::info!(pid = stopped.pid, environment = env_name(environment.as_deref()), tasks = life.tasks, recycled = life.recycled, %reason, "Python host recycled");
    stopped.stop().await;
    crate::lifeline::end_tree(None, &[]);
}
