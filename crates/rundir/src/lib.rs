//! Run directories: each task runs in a directory of its own under the endpoint's
//! `run_dir`, never where the endpoint happened to start.
//!
//! - `<root>/<task id>`: a task's run directory. A shell task runs in it (made before the
//!   task starts); a Python task is told its path (`GC_TASK_SANDBOX_DIR`) and the
//!   directory is made when the task asks for it (Globus Compute's `ShellFunction`
//!   does): making and removing a directory costs ~100 µs on ext4, twice a no-op
//!   task's whole CPU, so it is not done for the tasks that never use one.
//! - `<root>/worker-<host>-<pid>`: the working directory of a worker's Python tasks.
//! - `<root>/.done/<name>`: a marker that `<root>/<name>` finished; once the marker is
//!   older than the keep time, [`sweep`] removes both. A run directory left empty is
//!   removed at once ([`RunDirs::finish`]); one without a marker (its task is running,
//!   or its worker was killed) is never swept.
//!
//! The root may be on a file system shared by many nodes: every operation here is one
//! that two managers may race on harmlessly (a directory already gone is not an error).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The markers' directory under the root.
pub const DONE: &str = ".done";

/// The run directories' root when none is configured: `$FERRY_HOME/runs`, else
/// `~/.ferry/runs`, else `$TMPDIR/ferry-runs`.
pub fn default_root() -> PathBuf {
    if let Some(home) = std::env::var_os("FERRY_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home).join("runs");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home).join(".ferry").join("runs");
    }
    std::env::temp_dir().join("ferry-runs")
}

/// A root of run directories.
#[derive(Debug, Clone)]
pub struct RunDirs {
    root: PathBuf,
}

impl RunDirs {
    /// The root at `root`, made (with its marker directory) if missing.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join(DONE)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot make the run directory root {}: {e}", root.display()),
            )
        })?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the run directory named `name` (a task's id) is.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Makes the run directory `name` (kept as it is if a previous attempt of the task
    /// left it) and returns its path.
    pub fn create(&self, name: &str) -> io::Result<PathBuf> {
        let path = self.path(name);
        match std::fs::create_dir(&path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(path),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("cannot make the run directory {}: {e}", path.display()),
            )),
        }
    }

    /// The task in `name` is done: an empty (or missing) directory is removed and
    /// `None` returned; one with something in it is marked for [`sweep`] and its path
    /// returned, kept for inspection until the keep time has passed.
    pub fn finish(&self, name: &str) -> Option<PathBuf> {
        let path = self.path(name);
        match std::fs::remove_dir(&path) {
            Ok(()) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(_) => {
                if let Err(e) = std::fs::File::create(self.root.join(DONE).join(name)) {
                    // Unmarked, it stays: better than removing what a task may still use.
                    tracing::warn!(
                        run_dir = %path.display(),
                        error = %e,
                        "cannot mark the run directory done: it will not be removed"
                    );
                }
                Some(path)
            }
        }
    }
}

/// What a [`sweep`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Run directories removed.
    pub removed: usize,
    /// Marked ones not old enough yet.
    pub kept: usize,
}

/// Removes each run directory under `root` whose marker is older than `keep`, and the
/// marker. A missing root or marker directory is nothing to sweep.
pub fn sweep(root: &Path, keep: Duration) -> io::Result<Swept> {
    let done = root.join(DONE);
    let entries = match std::fs::read_dir(&done) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Swept::default()),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let mut swept = Swept::default();
    for entry in entries.flatten() {
        let name = entry.file_name();
        // A marker names a directory right under the root, nothing else.
        let Some(name) = name
            .to_str()
            .filter(|n| !n.contains('/') && *n != "." && *n != "..")
        else {
            continue;
        };
        let marked = entry.metadata().and_then(|m| m.modified()).ok();
        let age = marked
            .and_then(|at| now.duration_since(at).ok())
            .unwrap_or_default();
        if age < keep {
            swept.kept += 1;
            continue;
        }
        let dir = root.join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => swept.removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(run_dir = %dir.display(), error = %e, "cannot remove the run directory");
                continue;
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_run_directory_goes_at_once_and_one_with_files_is_kept_and_marked() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = RunDirs::open(tmp.path().join("runs")).unwrap();

        let empty = dirs.create("a").unwrap();
        assert!(empty.is_dir());
        assert_eq!(dirs.finish("a"), None);
        assert!(!empty.exists());

        let used = dirs.create("b").unwrap();
        std::fs::write(used.join("out.txt"), "x").unwrap();
        assert_eq!(dirs.finish("b"), Some(used.clone()));
        assert!(used.join("out.txt").exists());
        assert!(dirs.root().join(DONE).join("b").exists());

        // Made again (a second attempt): what the first left is still there.
        assert_eq!(dirs.create("b").unwrap(), used);
        assert!(used.join("out.txt").exists());
        // Never made (a Python task that did not ask for it): nothing to do.
        assert_eq!(dirs.finish("never"), None);
    }

    #[test]
    fn a_sweep_removes_what_was_marked_longer_ago_than_the_keep_time_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = RunDirs::open(tmp.path()).unwrap();
        for name in ["old", "running"] {
            let dir = dirs.create(name).unwrap();
            std::fs::create_dir(dir.join("sub")).unwrap();
            std::fs::write(dir.join("sub/f"), "x").unwrap();
        }
        dirs.finish("old");

        assert_eq!(
            sweep(dirs.root(), Duration::from_secs(3600)).unwrap(),
            Swept { removed: 0, kept: 1 }
        );
        assert!(dirs.path("old").exists());

        assert_eq!(
            sweep(dirs.root(), Duration::ZERO).unwrap(),
            Swept { removed: 1, kept: 0 }
        );
        assert!(!dirs.path("old").exists());
        assert!(!dirs.root().join(DONE).join("old").exists());
        assert!(
            dirs.path("running").join("sub/f").exists(),
            "unmarked: never swept"
        );

        assert_eq!(
            sweep(&tmp.path().join("nothing"), Duration::ZERO).unwrap(),
            Swept::default()
        );
    }
}
