//! A worker's processes end with its manager. The manager starts each worker as the
//! leader of its own process group, and everything the worker starts (its Python host,
//! shell commands and whatever they start) stays in that group. When the manager dies,
//! however it dies, the kernel sends the worker SIGTERM (the parent-death signal), and
//! the worker kills its whole group. Otherwise a task's command would run on as an
//! orphan, while the endpoint retries the task elsewhere.

use rustix::process::{Signal, getpgrp, getpid, getppid, kill_current_process_group};
use tokio::signal::unix::{SignalKind, signal};

/// Arranges for SIGTERM (from the manager's death, or from anyone) to stop the worker
/// and every process of its group. Call first thing in `main`, inside the runtime.
pub fn tie_to_manager() -> std::io::Result<()> {
    let parent = getppid();
    let leads_group = getpgrp() == getpid();
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
    let mut term = signal(SignalKind::terminate())?;
    // The manager may have died before the death signal was set.
    let orphaned_already = getppid() != parent;
    tokio::spawn(async move {
        if !orphaned_already {
            term.recv().await;
        }
        tracing::warn!("the manager is gone (or stopped this worker): stopping the worker and its processes");
        if leads_group {
            // The whole group, this worker included: nothing of it is left running.
            let _ = kill_current_process_group(Signal::KILL);
        }
        std::process::exit(143);
    });
    Ok(())
}
