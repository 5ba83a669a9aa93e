//! What every Ferry binary does the same way at its edges: tracing set up once
//! (`RUST_LOG` over a per-binary default; `FERRY_LOG_FORMAT=json` for JSON lines; logs on
//! stderr, so stdout stays for data), SIGTERM / Ctrl-C turned into a cancellation,
//! with a second signal exiting at once, and an error at exit printed as its chain of
//! causes ([`exit_code`]); Prometheus metrics ([`metrics`]).

pub mod metrics;
pub mod trace;

/// A spawned task that is aborted when this is dropped (a helper that lives as long as
/// the scope that started it).
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields` with `message` and the
    /// event's fields such as `task_id`, `target`, `span`), for a log collector.
    Json,
}

/// Every binary's `--log-format` (`FERRY_LOG_FORMAT`, which the processes it starts
/// inherit; the flag is this process's alone).
#[derive(Debug, Clone, clap::Args)]
pub struct Logging {
    /// How log lines are written: text or json.
    #[arg(long = "log-format", env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Installs the global subscriber, in `FERRY_LOG_FORMAT`'s format. `default_filter`
/// applies when `RUST_LOG` is unset.
pub fn init(default_filter: &str) {
    let format = match std::env::var("FERRY_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    init_with(default_filter, format);
}

/// Installs the global subscriber, writing `format`.
pub fn init_with(default_filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = if format == LogFormat::Json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// Cancels `token` on the first SIGTERM or SIGINT; exits the process on the second.
///
/// A process started by a supervisor that set `FERRY_PARENT_PID` (`ferry dev`) also
/// stops when that parent dies, however it dies: the kernel sends it SIGTERM (the
/// parent-death signal), so a killed `ferry dev` leaves no service running.
pub async fn cancel_on_signal(token: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    if parent_gone() {
        tracing::warn!("the process that started this one (FERRY_PARENT_PID) is gone: shutting down");
        token.cancel();
    }
    for round in 0..2 {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        if round == 0 {
            tracing::info!("shutting down (signal again to exit at once)");
            token.cancel();
        } else {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    }
}

/// With `FERRY_PARENT_PID` set, asks the kernel for SIGTERM when that parent dies, and
/// says whether it is gone already (it may have died before the request). A process
/// whose parent is another one (a manager the endpoint started, which inherited the
/// variable) while the named process lives is not the one meant, and does nothing.
fn parent_gone() -> bool {
    let Some(parent) = std::env::var("FERRY_PARENT_PID")
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    if rustix::process::getppid() != Some(parent) {
        // Either that parent died already (this process was reparented), or it is not
        // this process's parent at all.
        return rustix::process::test_kill_process(parent).is_err();
    }
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM)) {
        tracing::warn!(error = %e, "cannot ask for a signal when the parent process dies");
    }
    // It may have died between the two calls.
    rustix::process::getppid() != Some(parent)
}

/// A command's outcome as the process's exit: `error: ...` and one `caused by: ...` line
/// per cause on stderr, and exit code 1. Never a backtrace, whatever `RUST_BACKTRACE`
/// says: a user needs the causes, not the frames of the code that gave up (returning
/// `anyhow::Result` from `main` prints its `Debug`, 18 frames with `RUST_BACKTRACE=1`).
///
/// ```
/// let outcome: Result<(), Box<dyn std::error::Error + Send + Sync>> = Ok(());
/// assert_eq!(ferry_telemetry::exit_code(outcome), std::process::ExitCode::SUCCESS);
/// ```
pub fn exit_code<E>(outcome: Result<(), E>) -> std::process::ExitCode
where
    E: std::ops::Deref<Target = dyn std::error::Error + Send + Sync + 'static>,
{
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", error_chain(&*e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `error: <e>` and a `caused by: <source>` line per source, each line ended. A cause
/// whose text the line before already holds (`cannot read x: <cause>`) is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("error: {e}\n");
    let mut said = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !said.contains(&text) {
            out.push_str(&format!("caused by: {text}\n"));
        }
        said = text;
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn an_error_is_printed_with_its_causes_one_per_line() {
        let e = Layer(
            "cannot start endpoint ep",
            Some(Box::new(Layer(
                "cannot reach the web-service",
                Some(Box::new(Layer("connection refused", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "error: cannot start endpoint ep\ncaused by: cannot reach the web-service\ncaused by: connection refused\n"
        );
    }

    #[test]
    fn a_cause_the_message_already_holds_is_not_repeated() {
        let e = Layer(
            "cannot read config.toml: permission denied",
            Some(Box::new(Layer("permission denied", None))),
        );
        assert_eq!(
            error_chain(&e),
            "error: cannot read config.toml: permission denied\n"
        );
    }
}
