//! The warm Python host and its pipe protocol.
//!
//! Frames both ways are a 4-byte big-endian length and a body whose first byte names it:
//! - host -> worker `R` + JSON `{"pid", "python"}`: ready, once at start;
//! - worker -> host `T` + task id (16) + function id (16) + u32 len + function code
//!   (empty when the host already has it) + u32 len + payload;
//! - host -> worker `D` + task id (16) + u8 status (0 success, 1 failure) + f64 started,
//!   f64 ended, then four u32-length fields: data (result or traceback), serialized
//!   exception, stdout, stderr.
//!
//! Tasks sent are numbered from 1 in the order sent ([`Host::send`] returns the number).
//! [`Host::withdraw`] asks for the ones from `first` to `upto` back (16 bytes, two u64s,
//! on the control socket the host holds as `FERRY_HOST_CONTROL_FD`, and a `SIGURG`);
//! the host answers `(lo, upto)`, [`Host::withdrawn`]: those from `lo` on had not begun
//! and never will (the host skips them without an answer), the others run as sent.
//!
//! The host's own stderr (outside tasks, which capture theirs) is passed on to the
//! worker's, and its last lines go into the error of a host that exits: a host that
//! dies at start (a Python without `ferry`) says why in the task's error.

use std::collections::{HashSet, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use ferry_proto::environments::HostEnvironment;
use ferry_proto::messages::{FunctionCode, TaskSpec};
use ferry_proto::time::Micros;
use ferry_proto::{FunctionId, TaskId};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Largest frame the host may send (results above it are refused, not read).
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// The host's last stderr lines kept for the error of a host that exits, and how much
/// of each: enough for a traceback's end, bounded however much it wrote.
const STDERR_TAIL_LINES: usize = 20;
const STDERR_LINE_BYTES: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start the Python host `{python} -m ferry.host`: {source}")]
    Spawn { python: String, source: std::io::Error },
    /// `stderr`: the last lines it wrote there (a host that cannot import `ferry`
    /// says why), empty when it wrote none.
    #[error("the Python host exited ({status}){}", stderr_suffix(.stderr))]
    Exited { status: String, stderr: String },
    #[error("cannot make the Python host's control socket: {0}")]
    Control(std::io::Error),
    #[error("the Python host broke the protocol: {0}")]
    Protocol(String),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; the end of its stderr:\n{stderr}")
    }
}

/// What [`Host::next_event`] found.
#[derive(Debug)]
pub enum HostEvent {
    Answer(Result<(TaskId, HostOutcome), Error>),
    Withdrawn(Result<std::ops::RangeInclusive<u64>, Error>),
}

/// What the host answered for one task.
#[derive(Debug)]
pub struct HostOutcome {
    pub success: bool,
    pub started_at: Micros,
    pub ended_at: Micros,
    pub data: Bytes,
    pub exception: Bytes,
    pub stdout: String,
    pub stderr: String,
}

/// A running Python host. Tasks may be sent ahead of their results ([`Host::send`],
/// [`Host::flush`]); the host runs them in order and answers each with one frame
/// ([`Host::next_event`]), so the pipe is never idle between tasks.
pub struct Host {
    child: Child,
    stdin: FramedWrite<ChildStdin, LengthDelimitedCodec>,
    stdout: FramedRead<ChildStdout, LengthDelimitedCodec>,
    /// Functions this host has been sent (it keeps them deserialized).
    loaded: HashSet<FunctionId>,
    stderr: StderrTail,
    /// Where withdrawals are asked and answered (see the module's doc).
    control: UnixStream,
    control_buf: BytesMut,
    /// Tasks sent so far: the number of the last one.
    sent: u64,
    pub pid: u32,
}

/// The size of a withdrawal's request and answer: two big-endian u64s.
const WITHDRAW_BYTES: usize = 16;
/// The control socket's number in the host.
const CONTROL_FD: i32 = 3;

/// The host's stderr: each line is passed on to the worker's stderr as it comes (to
/// the manager's log, where an inherited stderr went), and the last ones are kept for
/// [`Error::Exited`].
struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    /// Ends at the host's exit (the pipe's end); taken when awaited.
    reader: Option<JoinHandle<()>>,
}

impl StderrTail {
    fn start(stderr: ChildStderr) -> Self {
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let kept = lines.clone();
        let reader = tokio::spawn(async move {
            let mut from_host = tokio::io::BufReader::new(stderr);
            let mut to_log = tokio::io::stderr();
            let mut line = Vec::new();
            while let Ok(n) = from_host.read_until(b'\n', &mut line).await {
                if n == 0 {
                    break;
                }
                let _ = to_log.write_all(&line).await;
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                let mut cut = text.len().min(STDERR_LINE_BYTES);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                let mut kept = kept.lock().expect("no panic holds the lock");
                if kept.len() == STDERR_TAIL_LINES {
                    kept.pop_front();
                }
                kept.push_back(text[..cut].to_owned());
                drop(kept);
                line.clear();
            }
            let _ = to_log.flush().await;
        });
        Self {
            lines,
            reader: Some(reader),
        }
    }

    /// The last lines, once the host has exited: what it wrote just before is read
    /// first (for a second at most: a child of it may hold the pipe open).
    async fn after_exit(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), reader).await;
        }
        let lines = self.lines.lock().expect("no panic holds the lock");
        lines.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }
}

fn host_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

impl Host {
    /// Starts `python -m ferry.host` and waits for its ready frame. With `places` (the
    /// run directories' root, and the working directory of Python tasks), the host
    /// starts there and tells each task its run directory (`GC_TASK_SANDBOX_DIR`).
    pub async fn start(
        environment: &HostEnvironment,
        places: Option<(&std::path::Path, std::path::PathBuf)>,
    ) -> Result<Self, Error> {
        let python = environment.python.as_str();
        let argv = environment.argv(&["-u", "-m", "ferry.host"]);
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]).envs(&environment.env);
        if let Some((root, cwd)) = places {
            command.env("FERRY_RUN_ROOT", root).current_dir(cwd);
        }
        let (control, theirs) = std::os::unix::net::UnixStream::pair().map_err(Error::Control)?;
        control.set_nonblocking(true).map_err(Error::Control)?;
        let control = UnixStream::from_std(control).map_err(Error::Control)?;
        {
            use command_fds::{CommandFdExt, FdMapping};
            command
                .fd_mappings(vec![FdMapping {
                    parent_fd: theirs.into(),
                    child_fd: CONTROL_FD,
                }])
                .map_err(|_| Error::Control(std::io::Error::other("fd mapping collision")))?;
        }
        let mut child = command
            .env("FERRY_HOST_CONTROL_FD", CONTROL_FD.to_string())
            // The host dies with this worker (its parent-death signal), checked by pid.
            .env("FERRY_HOST_PARENT", std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn {
                python: python.to_owned(),
                source,
            })?;
        let stdin = FramedWrite::new(child.stdin.take().expect("piped stdin"), host_codec());
        let stdout = FramedRead::new(child.stdout.take().expect("piped stdout"), host_codec());
        let stderr = StderrTail::start(child.stderr.take().expect("piped stderr"));
        let mut host = Self {
            pid: child.id().unwrap_or(0),
            child,
            stdin,
            stdout,
            loaded: HashSet::new(),
            stderr,
            control,
            control_buf: BytesMut::new(),
            sent: 0,
        };
        // Our end's copy in the child was closed by the mapping; the command (holding
        // the child's end) goes with this scope.
        drop(command);
        let frame = host.read_frame().await?;
        if frame.first() != Some(&b'R') {
            return Err(Error::Protocol("expected a ready frame first".into()));
        }
        Ok(host)
    }

    /// Queues a task for the host (written at the next [`Host::flush`], or sooner when
    /// the buffer fills); returns its number.
    pub async fn send(&mut self, function: &FunctionCode, task: &TaskSpec) -> Result<u64, Error> {
        let send_code = !self.loaded.contains(&function.function_id);
        let code: &[u8] = if send_code { &function.code } else { &[] };
        let mut frame = BytesMut::with_capacity(1 + 16 + 16 + 4 + code.len() + 4 + task.payload.len());
        frame.put_u8(b'T');
        frame.put_slice(task.task_id.0.as_bytes());
        frame.put_slice(function.function_id.0.as_bytes());
        frame.put_u32(code.len() as u32);
        frame.put_slice(code);
        frame.put_u32(task.payload.len() as u32);
        frame.put_slice(&task.payload);
        if let Err(e) = self.stdin.feed(frame.freeze()).await {
            return Err(self.exit_error(e).await);
        }
        self.loaded.insert(function.function_id);
        self.sent += 1;
        Ok(self.sent)
    }

    /// Asks the host to skip the tasks numbered `first` to `upto` that it has not begun;
    /// [`Host::withdrawn`] has its answer. One at a time.
    pub async fn withdraw(&mut self, first: u64, upto: u64) -> Result<(), Error> {
        let mut request = [0u8; WITHDRAW_BYTES];
        request[..8].copy_from_slice(&first.to_be_bytes());
        request[8..].copy_from_slice(&upto.to_be_bytes());
        self.control.write_all(&request).await.map_err(Error::Control)?;
        let pid = rustix::process::Pid::from_raw(self.pid as i32)
            .ok_or_else(|| Error::Protocol("the host has no pid".into()))?;
        rustix::process::kill_process(pid, rustix::process::Signal::URG).map_err(|e| Error::Control(e.into()))
    }

    /// What the host says next: an answer to a task, for the oldest task sent, neither
    /// answered nor withdrawn (only with `answers`, when it has tasks in hand) or to [`Host::withdraw`] (only with
    /// `withdrawal`, when one was asked): the numbers of the tasks it will not run,
    /// `lo..=upto` (empty when it had begun them all). Cancel-safe; never ready when
    /// neither is awaited.
    pub async fn next_event(&mut self, answers: bool, withdrawal: bool) -> HostEvent {
        loop {
            if withdrawal && let Some(range) = self.take_withdrawn() {
                return HostEvent::Withdrawn(Ok(range));
            }
            tokio::select! {
                biased;
                frame = self.stdout.next(), if answers => {
                    let answer = match self.frame_or_error(frame).await {
                        Ok(frame) => parse_done(&frame),
                        Err(e) => Err(e),
                    };
                    return HostEvent::Answer(answer);
                }
                read = self.control.read_buf(&mut self.control_buf), if withdrawal => match read {
                    Ok(0) => return HostEvent::Withdrawn(Err(Error::Protocol("the control socket closed".into()))),
                    Ok(_) => {}
                    Err(e) => return HostEvent::Withdrawn(Err(Error::Control(e))),
                },
                else => std::future::pending::<()>().await,
            }
        }
    }

    /// An answer to [`Host::withdraw`] already written, if there is one: the host writes
    /// it before it skips any task, so an answer that passes over a task finds it here.
    pub fn try_withdrawn(&mut self) -> Option<std::ops::RangeInclusive<u64>> {
        if let Some(range) = self.take_withdrawn() {
            return Some(range);
        }
        let _ = self.control.try_read_buf(&mut self.control_buf);
        self.take_withdrawn()
    }

    fn take_withdrawn(&mut self) -> Option<std::ops::RangeInclusive<u64>> {
        if self.control_buf.len() < WITHDRAW_BYTES {
            return None;
        }
        let answer = self.control_buf.split_to(WITHDRAW_BYTES);
        let lo = u64::from_be_bytes(answer[..8].try_into().expect("8 bytes"));
        let upto = u64::from_be_bytes(answer[8..].try_into().expect("8 bytes"));
        Some(lo..=upto)
    }

    /// Writes every queued task to the host.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if let Err(e) = SinkExt::<Bytes>::flush(&mut self.stdin).await {
            return Err(self.exit_error(e).await);
        }
        Ok(())
    }

    /// Kills the host and waits for it (its own processes, reparented to the worker when
    /// it dies, are the caller's to end).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.child.wait()).await;
    }

    /// Whether answers already read from the pipe wait to be taken: when not, the
    /// caller's own output is worth flushing before it waits for the next one.
    pub fn has_buffered(&self) -> bool {
        !self.stdout.read_buffer().is_empty()
    }

    async fn read_frame(&mut self) -> Result<BytesMut, Error> {
        let frame = self.stdout.next().await;
        self.frame_or_error(frame).await
    }

    async fn frame_or_error(&mut self, frame: Option<std::io::Result<BytesMut>>) -> Result<BytesMut, Error> {
        match frame {
            Some(Ok(frame)) => Ok(frame),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => Err(Error::Protocol(format!(
                "a frame over the {MAX_FRAME}-byte limit: {e}"
            ))),
            Some(Err(e)) => Err(self.exit_error(e).await),
            None => Err(self.exit_error(std::io::ErrorKind::UnexpectedEof.into()).await),
        }
    }

    /// The error for a broken pipe: the host's exit status and the end of its stderr
    /// when it is gone.
    async fn exit_error(&mut self, e: std::io::Error) -> Error {
        match tokio::time::timeout(std::time::Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => Error::Exited {
                status: describe_status(status),
                stderr: self.stderr.after_exit().await,
            },
            _ => Error::Protocol(format!("pipe broken: {e}")),
        }
    }
}

/// `exit code 3` or `killed by signal 9 (SIGKILL)`.
/// The name of a signal a task's process may die of (`SIGSEGV` for 11).
pub fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => return None,
    })
}

pub fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => match signal_name(sig) {
            Some(name) => format!("killed by signal {sig} ({name})"),
            None => format!("killed by signal {sig}"),
        },
        _ => "unknown status".to_owned(),
    }
}

fn parse_done(frame: &[u8]) -> Result<(TaskId, HostOutcome), Error> {
    let bad = |what: &str| Error::Protocol(format!("malformed result frame: {what}"));
    let mut cur = frame;
    let mut take = |n: usize| -> Result<&[u8], Error> {
        if cur.len() < n {
            return Err(bad("truncated"));
        }
        let (head, rest) = cur.split_at(n);
        cur = rest;
        Ok(head)
    };
    if take(1)? != b"D" {
        return Err(bad("not a result"));
    }
    let id = TaskId(uuid::Uuid::from_slice(take(16)?).map_err(|_| bad("task id"))?);
    let status = take(1)?[0];
    let started = f64::from_be_bytes(take(8)?.try_into().expect("8 bytes"));
    let ended = f64::from_be_bytes(take(8)?.try_into().expect("8 bytes"));
    let mut field = || -> Result<Vec<u8>, Error> {
        let len = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        Ok(take(len)?.to_vec())
    };
    let data = field()?;
    let exception = field()?;
    let stdout = field()?;
    let stderr = field()?;
    Ok((
        id,
        HostOutcome {
            success: status == 0,
            started_at: (started * 1e6) as Micros,
            ended_at: (ended * 1e6) as Micros,
            data: Bytes::from(data),
            exception: Bytes::from(exception),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        },
    ))
}
