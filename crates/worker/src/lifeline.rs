//! A worker's processes end with its tasks and with the worker. The manager starts each
//! worker as the leader of its own process group, and everything the worker starts (its
//! Python host, shell commands and whatever they start) begins in that group. A process
//! may leave the group (`setsid`, a double fork, `Popen(start_new_session=True)`), so the
//! worker is also a child subreaper: a process orphaned below it is reparented to it, not
//! to init, and stays its descendant, found by walking `/proc` ([`ferry_proctree`]).
//!
//! When the manager dies, however it dies, the kernel sends the worker SIGTERM (the
//! parent-death signal), and the worker kills every descendant (group or not), then its
//! whole group. It does the same when it stops on its own ([`end_all`]). Otherwise a
//! task's command would run on as an orphan while the endpoint retries the task
//! elsewhere. A worker killed with SIGKILL does nothing: its manager, a subreaper too,
//! inherits its descendants and ends them.

use std::time::Duration;

use ferry_proto::TaskId;
use rustix::process::{Signal, getpgrp, getpid, getppid, kill_current_process_group};
use tokio::signal::unix::{SignalKind, signal};

/// How long killing a tree may take before the worker gives up on what resists (a
/// process stuck in the kernel).
const KILL_WITHIN: Duration = Duration::from_secs(2);

/// Arranges for SIGTERM (from the manager's death, or from anyone) to stop the worker
/// and every process below it or in its group, and makes the worker a child subreaper.
/// Call first thing in `main`, inside the runtime.
pub fn tie_to_manager() -> std::io::Result<()> {
    let parent = getppid();
    let leads_group = getpgrp() == getpid();
    ferry_proctree::become_subreaper()?;
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))?;
    let mut term = signal(SignalKind::terminate())?;
    // The manager may have died before the death signal was set.
    let orphaned_already = getppid() != parent;
    tokio::spawn(async move {
        if !orphaned_already {
            term.recv().await;
        }
        tracing::warn!("the manager is gone (or stopped this worker): stopping the worker and its processes");
        end_all();
        if leads_group {
            // The whole group, this worker included: nothing of it is left running.
            let _ = kill_current_process_group(Signal::KILL);
        }
        std::process::exit(143);
    });
    Ok(())
}

/// Kills every process below the worker (its Python host, a command and whatever they
/// started, inside the group or out of it). For the worker's own end: it reaps children
/// that tokio may be waiting for.
pub fn end_all() {
    end_tree(None, &[]);
}

/// Kills every process below the worker but `spare` (and their subtrees) after a task
/// (`task`) stopped or finished, saying so when there was one; reaps the ones that were
/// reparented to the worker. `spare` must hold every child a `tokio::process::Child` still
/// waits for.
pub fn end_tree(task: Option<TaskId>, spare: &[u32]) {
    let sweep = ferry_proctree::end_descendants(spare, KILL_WITHIN);
    if sweep.left > 0 {
        tracing::error!(
            task_id = task.map(tracing::field::display),
            killed = sweep.killed,
            left = sweep.left,
            "processes below the worker resisted SIGKILL"
        );
    } else if sweep.killed > 0 {
        tracing::info!(
            task_id = task.map(tracing::field::display),
            killed = sweep.killed,
            "stopped the processes a task left behind"
        );
    }
}
