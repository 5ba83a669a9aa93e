//! A process's descendants, found through `/proc`, and their end (Linux only).
//!
//! A task's processes may leave the process group Ferry started them in (`setsid`, a
//! double fork, `subprocess.Popen(start_new_session=True)`), so killing the group does
//! not end them. A worker and a manager therefore make themselves child subreapers
//! ([`become_subreaper`]): a process orphaned below them is reparented to them, not to
//! init, and stays findable as their descendant. [`end_descendants`] kills every
//! descendant (the parent links of `/proc/PID/stat`, walked from this process), round
//! after round until none is left, since a process may fork while it is being killed,
//! and reaps the dead ones that were reparented to this process.
//!
//! Pids that another part of the program waits for (a `tokio::process::Child`) are
//! never reaped here: waiting for them would steal their exit status. A caller spares
//! them (and their subtrees) or kills and waits for them itself first.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions};

/// One process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// Dead, not yet reaped by its parent.
    pub zombie: bool,
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid ...`. The command name may hold
/// spaces and parentheses, so the fields after it are read from after the last `)`.
pub fn parse_stat(stat: &str) -> Option<Proc> {
    let (head, tail) = stat.rsplit_once(')')?;
    let pid = head.split_once('(')?.0.trim().parse().ok()?;
    let mut fields = tail.split_ascii_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Proc {
        pid,
        ppid,
        zombie: matches!(state, "Z" | "X"),
    })
}

/// Every process now in `/proc` (those that end while it is read are left out).
pub fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| parse_stat(&stat))
        .collect()
}

/// The descendants of `root` among `procs` (not `root` itself), parents before their
/// children; a pid in `spare` is left out with its whole subtree.
pub fn descendants(procs: &[Proc], root: u32, spare: &HashSet<u32>) -> Vec<Proc> {
    let mut children: HashMap<u32, Vec<Proc>> = HashMap::new();
    for p in procs.iter().filter(|p| p.pid != p.ppid) {
        children.entry(p.ppid).or_default().push(*p);
    }
    let mut found = Vec::new();
    let mut next = vec![root];
    let mut seen = HashSet::from([root]);
    while let Some(parent) = next.pop() {
        for child in children.get(&parent).into_iter().flatten() {
            if spare.contains(&child.pid) || !seen.insert(child.pid) {
                continue;
            }
            found.push(*child);
            next.push(child.pid);
        }
    }
    found
}

/// Makes this process a child subreaper: processes orphaned below it are reparented to
/// it (not to init), so they stay its descendants, and it must reap them.
pub fn become_subreaper() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    Ok(())
}

/// This process's children (from `/proc/self/task/*/children`, one list per thread):
/// cheap next to a walk of all of `/proc`, but only a hint, since a child created or
/// reparented while it is read may be missed.
pub fn own_children() -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_ascii_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether this process has a child that is not in `spare` (see [`own_children`]).
pub fn has_children_besides(spare: &[u32]) -> bool {
    own_children().iter().any(|pid| !spare.contains(pid))
}

/// What one round of [`end_descendants`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// Live descendants sent SIGKILL.
    pub killed: Vec<u32>,
    /// Descendants still there (alive, or dead and not reaped yet) after the round.
    pub remaining: usize,
}

/// One round: SIGKILL to every live descendant of this process outside `spare` (and
/// their subtrees), and a reap of its own dead children outside `spare`.
pub fn round(spare: &HashSet<u32>) -> Round {
    let me = std::process::id();
    let mut round = Round::default();
    for p in descendants(&processes(), me, spare) {
        let Some(pid) = Pid::from_raw(p.pid as i32) else {
            continue;
        };
        if !p.zombie {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            round.killed.push(p.pid);
            round.remaining += 1;
        } else if p.ppid != me || !reaped(pid) {
            // Its parent, dead or dying, hands it to this process (a subreaper).
            round.remaining += 1;
        }
    }
    round
}

fn reaped(pid: Pid) -> bool {
    matches!(
        rustix::process::waitpid(Some(pid), WaitOptions::NOHANG),
        Ok(Some(_)) | Err(_)
    )
}

/// What [`end_descendants`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Distinct processes sent SIGKILL.
    pub killed: usize,
    /// Descendants still there when the time was up (unkillable: stuck in the kernel).
    pub left: usize,
}

/// Kills every descendant of this process outside `spare` (and their subtrees) with
/// SIGKILL, round after round, until none is left (reaping the ones reparented to this
/// process) or `within` has passed. Blocks the calling thread between rounds (a few
/// milliseconds when nothing resists).
pub fn end_descendants(spare: &[u32], within: Duration) -> Sweep {
    let spare: HashSet<u32> = spare.iter().copied().collect();
    let deadline = Instant::now() + within;
    let mut killed = HashSet::new();
    let mut pause = Duration::from_millis(1);
    loop {
        let round = round(&spare);
        killed.extend(round.killed);
        if round.remaining == 0 || Instant::now() >= deadline {
            return Sweep {
                killed: killed.len(),
                left: round.remaining,
            };
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_spaces_and_parentheses_is_skipped_whole() {
        let p = parse_stat("4242 (my (odd) name) ) S 17 4242 4242 0 -1 4194560 0 0").unwrap();
        assert_eq!(
            p,
            Proc {
                pid: 4242,
                ppid: 17,
                zombie: false
            }
        );
        assert!(parse_stat("77 (x) Z 1 77").unwrap().zombie);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn descendants_follow_parent_links_and_skip_spared_subtrees() {
        let p = |pid, ppid| Proc {
            pid,
            ppid,
            zombie: false,
        };
        let procs = [
            p(1, 0),
            p(10, 1),
            p(11, 10),
            p(12, 11),
            p(13, 10),
            p(14, 13),
            p(20, 1),
        ];
        let all: Vec<u32> = descendants(&procs, 10, &HashSet::new())
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!(all.len(), 4);
        for pid in [11, 12, 13, 14] {
            assert!(all.contains(&pid), "{pid} in {all:?}");
        }
        let some: Vec<u32> = descendants(&procs, 10, &HashSet::from([13]))
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!(some, vec![11, 12]);
    }

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
            .is_some_and(|p| !p.zombie)
    }

    /// A real tree: a shell whose `sleep` leaves its session and is orphaned (a double
    /// fork through `setsid`), reparented here, found and ended by the walk.
    #[test]
    fn escaped_orphans_are_found_killed_and_reaped() {
        become_subreaper().unwrap();
        // A duration no other process uses: the sleep's own command line is its marker.
        let marker = format!("300.{}", std::process::id());
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("setsid sleep {marker} </dev/null >/dev/null 2>&1 &"))
            .output()
            .unwrap();
        assert!(out.status.success());
        // The shell is gone; the escaped process is now this process's child.
        let deadline = Instant::now() + Duration::from_secs(5);
        let escaped = loop {
            let mine = descendants(&processes(), std::process::id(), &HashSet::new());
            let found = mine.iter().find(|p| {
                std::fs::read(format!("/proc/{}/cmdline", p.pid))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
            });
            if let Some(p) = found {
                break *p;
            }
            assert!(Instant::now() < deadline, "the escaped sleep never showed up");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(escaped.ppid, std::process::id(), "reparented to the subreaper");
        assert!(has_children_besides(&[]));
        let sweep = end_descendants(&[], Duration::from_secs(5));
        assert_eq!(sweep.left, 0, "{sweep:?}");
        assert!(sweep.killed >= 1, "{sweep:?}");
        assert!(!alive(escaped.pid), "the escaped sleep survived");
        assert!(
            !std::path::Path::new(&format!("/proc/{}", escaped.pid)).exists(),
            "its zombie was not reaped"
        );
    }
}
