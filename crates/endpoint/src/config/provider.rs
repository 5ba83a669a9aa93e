//! The `[provider]` table: how an endpoint gets managers, and how many.
//!
//! Keys a Globus Compute (Parsl) user knows keep their names and meaning where they
//! apply (`max_workers_per_node`, `nodes_per_block`, `init_blocks`, `min_blocks`,
//! `max_blocks`, `walltime`, `partition`, `account`, `qos`, `scheduler_options`,
//! `worker_init`, `launcher`, `cmd_timeout`). Defaults depend on the kind, so the
//! optional ones are read through methods that know them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::values::{Seconds, Walltime};

/// Where managers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Managers are processes on this machine, restarted when they exit.
    #[default]
    Local,
    /// The endpoint starts none; managers are started by hand with `ferry-manager`.
    Manual,
    /// Blocks are Slurm jobs (`sbatch`, `squeue`, `scancel`).
    Slurm,
    /// Blocks are PBS Pro / OpenPBS jobs (`qsub`, `qstat`, `qdel`).
    Pbs,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Manual => "manual",
            ProviderKind::Slurm => "slurm",
            ProviderKind::Pbs => "pbs",
        }
    }

    /// Slurm or PBS: blocks are batch jobs on compute nodes.
    pub fn is_batch(self) -> bool {
        matches!(self, ProviderKind::Slurm | ProviderKind::Pbs)
    }
}

/// How the managers of a block are started on its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Launcher {
    /// The block script starts the one manager itself (one node per block).
    None,
    /// `srun`, one task per node (Slurm).
    Srun,
    /// `mpiexec`, one process per node of `$PBS_NODEFILE` (PBS).
    Mpiexec,
    /// `pbsdsh`, one process per node (PBS).
    Pbsdsh,
}

impl Launcher {
    pub fn name(self) -> &'static str {
        match self {
            Launcher::None => "none",
            Launcher::Srun => "srun",
            Launcher::Mpiexec => "mpiexec",
            Launcher::Pbsdsh => "pbsdsh",
        }
    }
}

/// The `[provider]` table. Unknown keys are refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `local`, `manual`, `slurm` or `pbs`.
    #[serde(default)]
    pub kind: ProviderKind,
    /// Worker processes per manager (per node). Default: 2 locally; on a cluster, one
    /// per core of the node.
    #[serde(default, alias = "workers_per_node", skip_serializing_if = "Option::is_none")]
    pub max_workers_per_node: Option<u32>,
    /// Nodes (managers) per block.
    #[serde(default, alias = "nodes", skip_serializing_if = "Option::is_none")]
    pub nodes_per_block: Option<u32>,
    /// Blocks submitted at start. Default 1 (0 on a cluster, where a block waits for
    /// the first task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_blocks: Option<u32>,
    /// Blocks kept however idle. Default 1 locally, 0 on a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_blocks: Option<u32>,
    /// Blocks at most, pending and running together. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blocks: Option<u32>,
    /// A block's walltime (Slurm `--time`, PBS `walltime`). Default `"01:00:00"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walltime: Option<Walltime>,
    /// Slurm partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// PBS queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The account (allocation) charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Slurm quality of service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// Slurm node features (`--constraint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// Whole nodes for the block (Slurm `--exclusive`; PBS `place=excl`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclusive: bool,
    /// Cores to ask for on each node (Slurm `--cpus-per-task`, PBS `ncpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores_per_node: Option<u32>,
    /// Memory to ask for on each node, in GB (Slurm `--mem`, PBS `mem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_per_node: Option<u32>,
    /// Directive lines copied as they are into the block script (`#SBATCH ...` or
    /// `#PBS ...`), after the generated ones.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scheduler_options: String,
    /// Shell lines run on each node before its manager starts: module loads, a venv
    /// or conda activate.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub worker_init: String,
    /// How a block's managers start on its nodes. Default: `none` for one node,
    /// `srun` (Slurm) or `pbsdsh` (PBS) for more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<Launcher>,
    /// Extra arguments for the launcher (`--cpu-bind=none`, `--ppn 1`), one line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub launcher_options: String,
    /// The block script's template (`@@NAME@@` markup); default: Ferry's own for the
    /// scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PathBuf>,
    /// How long a scheduler command may take before it is killed. Default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd_timeout: Option<Seconds>,
    /// A block whose managers held no task this long is cancelled (down to
    /// `min_blocks`). Default 2 minutes (Globus Compute's `max_idletime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Seconds>,
    /// A manager stops taking tasks this long before its block's walltime ends, so that
    /// what it runs can finish. Default 60 s (at most half the walltime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Seconds>,
    /// How often scaling decides. Default 5 s (1 s locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy_period: Option<Seconds>,
    /// How often the scheduler is asked about the blocks. Default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_period: Option<Seconds>,
    /// Blocks refused or failed in a row before scaling pauses. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<u32>,
    /// A block running this long with no manager connected is cancelled and counts as
    /// failed (its nodes cannot reach the endpoint). Default 5 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Seconds>,
    /// The Python interpreter the workers run (`-m ferry.host`). Default: the `python`
    /// beside `ferry-endpoint` when there is one (Ferry installed by its wheel into a
    /// virtualenv or conda environment: that environment's interpreter, which has the
    /// `ferry` package), else `python3` on the `PATH`.
    #[serde(default = "default_python")]
    pub python: String,
    /// The `ferry-manager` binary (default: next to `ferry-endpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_bin: Option<PathBuf>,
    /// Where each task's run directory is made (`<run_dir>/<task id>`), on the nodes
    /// the managers run on (a shared file system on a cluster, so the directories can be
    /// looked at from the login node). Default: the endpoint's directory's `runs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
    /// How long a finished task's run directory is kept when the task left something in
    /// it (an empty one goes at once). Default 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_run_dirs: Option<Seconds>,
    /// Shell lines sourced before each phase of every application run here (module
    /// loads, paths): the cluster's environment. An application's own `env_script`
    /// replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_env_script: Option<String>,
    /// When a Python task's run directory is made: `on-request` (the default: when the
    /// task asks, `ferry.run_dir()` or a Globus `ShellFunction`; a task starts in its
    /// worker's directory) or `per-task` (made before every task, which starts in it; an
    /// ext4 `mkdir` and `rmdir` cost ~100 µs a task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_run_dirs: Option<PythonRunDirs>,
    /// Replace a worker's Python host after this many tasks (`FERRY_RECYCLE_TASKS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle_after_tasks: Option<u64>,
    /// Replace a worker's Python host once it has been up this long (`FERRY_RECYCLE_SECS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle_after: Option<Seconds>,
    /// Replace a worker's Python host when its memory (RSS) passes this many MiB after a
    /// task (`FERRY_RECYCLE_RSS_MB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle_above_rss_mb: Option<u64>,
    /// Labels of the nodes this provider starts, which tasks may require
    /// (`FERRY_NODE_TAGS`; docs/scheduling.md#requirements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_tags: Option<Vec<String>>,
    /// Task environments, by name (`[provider.environments.<name>]`;
    /// docs/scheduling.md#task-environments).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub environments: std::collections::BTreeMap<String, super::environments::EnvironmentConfig>,
}

/// See [`ProviderConfig::python_run_dirs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PythonRunDirs {
    OnRequest,
    PerTask,
}

impl PythonRunDirs {
    /// As the managers' environment carries it (`FERRY_PYTHON_RUN_DIRS`).
    pub fn name(self) -> &'static str {
        match self {
            PythonRunDirs::OnRequest => "on-request",
            PythonRunDirs::PerTask => "per-task",
        }
    }
}

/// The workers' Python when the config names none: see [`ProviderConfig::python`].
fn default_python() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| python_beside(&exe))
        .unwrap_or_else(|| "python3".to_owned())
}

/// The `python` in the directory of `exe`, if it is there. `exe` is this program's path
/// with symbolic links resolved, so a `ferry-endpoint` linked from elsewhere (pipx's
/// `~/.local/bin`) still finds its environment's interpreter; the `python` itself is
/// kept as a path in that directory, unresolved, as a virtualenv needs.
fn python_beside(exe: &Path) -> Option<String> {
    let python = exe.parent()?.join("python");
    python.is_file().then(|| python.display().to_string())
}

/// A setting that is wrong, with the key it is under (`provider.max_blocks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

pub(super) fn problem(key: &str, message: impl Into<String>) -> Problem {
    Problem {
        key: format!("provider.{key}"),
        message: message.into(),
    }
}

impl ProviderConfig {
    /// A provider of `kind` with every default.
    pub fn of_kind(kind: ProviderKind) -> Self {
        Self {
            kind,
            python: default_python(),
            ..Self::default()
        }
    }

    /// `None` on a cluster means one worker per core of the node.
    pub fn workers_per_node(&self) -> Option<u32> {
        match self.max_workers_per_node {
            Some(n) => Some(n),
            None if self.kind.is_batch() => None,
            None => Some(2),
        }
    }

    pub fn nodes_per_block(&self) -> u32 {
        self.nodes_per_block.unwrap_or(1)
    }

    pub fn init_blocks(&self) -> u32 {
        self.init_blocks
            .unwrap_or(if self.kind.is_batch() { 0 } else { 1 })
    }

    pub fn min_blocks(&self) -> u32 {
        self.min_blocks
            .unwrap_or(if self.kind.is_batch() { 0 } else { 1 })
    }

    pub fn max_blocks(&self) -> u32 {
        self.max_blocks
            .unwrap_or(1)
            .max(self.min_blocks())
            .max(self.init_blocks())
    }

    pub fn walltime(&self) -> Walltime {
        self.walltime
            .unwrap_or(Walltime(std::time::Duration::from_secs(3600)))
    }

    pub fn launcher(&self) -> Launcher {
        match (self.launcher, self.kind) {
            (Some(l), _) => l,
            (None, _) if self.nodes_per_block() == 1 => Launcher::None,
            (None, ProviderKind::Pbs) => Launcher::Pbsdsh,
            (None, _) => Launcher::Srun,
        }
    }

    /// [`ProviderConfig::run_dir`], its default under `endpoint_dir` filled in.
    pub fn with_run_dir(&self, endpoint_dir: &Path) -> Self {
        let mut resolved = self.clone();
        resolved.run_dir.get_or_insert_with(|| endpoint_dir.join("runs"));
        resolved
    }

    /// What the managers' environment carries for their workers from these settings:
    /// recycling (`FERRY_RECYCLE_*`), the nodes' tags (`FERRY_NODE_TAGS`) and the task
    /// environments (`FERRY_ENVIRONMENTS`, JSON).
    pub fn manager_env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if let Some(n) = self.recycle_after_tasks {
            env.push(("FERRY_RECYCLE_TASKS", n.to_string()));
        }
        if let Some(t) = self.recycle_after {
            env.push(("FERRY_RECYCLE_SECS", t.0.as_secs().max(1).to_string()));
        }
        if let Some(m) = self.recycle_above_rss_mb {
            env.push(("FERRY_RECYCLE_RSS_MB", m.to_string()));
        }
        if let Some(tags) = self.node_tags.as_ref().filter(|t| !t.is_empty()) {
            env.push(("FERRY_NODE_TAGS", tags.join(",")));
        }
        if !self.environments.is_empty() {
            let json = serde_json::to_string(&self.host_environments()).expect("environments serialize");
            env.push((ferry_proto::environments::VARIABLE, json));
        }
        env
    }

    pub fn keep_run_dirs(&self) -> std::time::Duration {
        self.keep_run_dirs.unwrap_or(Seconds::secs(7 * 24 * 3600)).0
    }

    pub fn cmd_timeout(&self) -> std::time::Duration {
        self.cmd_timeout.unwrap_or(Seconds::secs(30)).0
    }

    pub fn idle_timeout(&self) -> std::time::Duration {
        self.idle_timeout.unwrap_or(Seconds::secs(120)).0
    }

    /// The drain time, at most half the walltime.
    pub fn drain(&self) -> std::time::Duration {
        let drain = self.drain.unwrap_or(Seconds::secs(60)).0;
        drain.min(self.walltime().0 / 2)
    }

    pub fn strategy_period(&self) -> std::time::Duration {
        let default = if self.kind.is_batch() { 5 } else { 1 };
        self.strategy_period.unwrap_or(Seconds::secs(default)).0
    }

    pub fn poll_period(&self) -> std::time::Duration {
        self.poll_period.unwrap_or(Seconds::secs(30)).0
    }

    pub fn max_failures(&self) -> u32 {
        self.max_failures.unwrap_or(3).max(1)
    }

    pub fn connect_timeout(&self) -> std::time::Duration {
        self.connect_timeout.unwrap_or(Seconds::secs(300)).0
    }

    /// Checks what serde cannot: ranges, settings that belong to another scheduler,
    /// one-line values. Every problem found, not only the first.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let kind = self.kind;
        let batch_only: [(&str, bool); 16] = [
            (
                "init_blocks",
                self.init_blocks.is_some() && kind == ProviderKind::Manual,
            ),
            (
                "min_blocks",
                self.min_blocks.is_some() && kind == ProviderKind::Manual,
            ),
            (
                "max_blocks",
                self.max_blocks.is_some() && kind == ProviderKind::Manual,
            ),
            ("walltime", self.walltime.is_some() && !kind.is_batch()),
            (
                "partition",
                self.partition.is_some() && kind != ProviderKind::Slurm,
            ),
            ("queue", self.queue.is_some() && kind != ProviderKind::Pbs),
            ("account", self.account.is_some() && !kind.is_batch()),
            ("qos", self.qos.is_some() && kind != ProviderKind::Slurm),
            (
                "constraint",
                self.constraint.is_some() && kind != ProviderKind::Slurm,
            ),
            ("exclusive", self.exclusive && !kind.is_batch()),
            (
                "cores_per_node",
                self.cores_per_node.is_some() && !kind.is_batch(),
            ),
            ("mem_per_node", self.mem_per_node.is_some() && !kind.is_batch()),
            (
                "scheduler_options",
                !self.scheduler_options.is_empty() && !kind.is_batch(),
            ),
            ("launcher", self.launcher.is_some() && !kind.is_batch()),
            ("template", self.template.is_some() && !kind.is_batch()),
            ("drain", self.drain.is_some() && !kind.is_batch()),
        ];
        for (key, misplaced) in batch_only {
            if misplaced {
                let hint = match (key, kind) {
                    ("partition", ProviderKind::Pbs) => "; PBS calls it `queue`",
                    ("queue", ProviderKind::Slurm) => "; Slurm calls it `partition`",
                    _ => "",
                };
                problems.push(problem(
                    key,
                    format!("does not apply to provider kind \"{}\"{hint}", kind.name()),
                ));
            }
        }
        if kind == ProviderKind::Manual && self.nodes_per_block.is_some() {
            problems.push(problem(
                "nodes_per_block",
                "does not apply to provider kind \"manual\" (managers are started by hand)",
            ));
        }
        if self.max_workers_per_node == Some(0) {
            problems.push(problem("max_workers_per_node", "must be at least 1"));
        }
        if self.nodes_per_block == Some(0) {
            problems.push(problem("nodes_per_block", "must be at least 1"));
        }
        if let (Some(max), min) = (self.max_blocks, self.min_blocks()) {
            if max == 0 {
                problems.push(problem("max_blocks", "must be at least 1"));
            } else if max < min {
                problems.push(problem(
                    "max_blocks",
                    format!("is {max}, below min_blocks ({min})"),
                ));
            } else if max < self.init_blocks() {
                problems.push(problem(
                    "max_blocks",
                    format!("is {max}, below init_blocks ({})", self.init_blocks()),
                ));
            }
        }
        if let (Some(drain), true) = (self.drain, kind.is_batch())
            && drain.0 >= self.walltime().0
        {
            problems.push(problem(
                "drain",
                format!(
                    "({}) must be shorter than the walltime ({})",
                    humantime::format_duration(drain.0),
                    self.walltime()
                ),
            ));
        }
        if self.launcher == Some(Launcher::Srun) && kind == ProviderKind::Pbs {
            problems.push(problem(
                "launcher",
                "\"srun\" is Slurm's; use \"mpiexec\" or \"pbsdsh\" with PBS",
            ));
        }
        if matches!(self.launcher, Some(Launcher::Mpiexec | Launcher::Pbsdsh)) && kind == ProviderKind::Slurm
        {
            problems.push(problem(
                "launcher",
                "use \"srun\" (or \"none\" for one node) with Slurm",
            ));
        }
        if self.launcher == Some(Launcher::None) && self.nodes_per_block() > 1 {
            problems.push(problem(
                "launcher",
                format!(
                    "\"none\" starts one manager, but nodes_per_block is {}",
                    self.nodes_per_block()
                ),
            ));
        }
        for (key, value) in [
            ("partition", &self.partition),
            ("queue", &self.queue),
            ("account", &self.account),
            ("qos", &self.qos),
            ("constraint", &self.constraint),
        ] {
            if let Some(v) = value {
                one_line(key, v, &mut problems);
                if v.trim().is_empty() {
                    problems.push(problem(key, "is empty; leave it out instead"));
                }
            }
        }
        one_line("launcher_options", &self.launcher_options, &mut problems);
        one_line("python", &self.python, &mut problems);
        if let Some(dir) = &self.run_dir {
            if !dir.is_absolute() {
                problems.push(problem(
                    "run_dir",
                    format!("{} is not an absolute path", dir.display()),
                ));
            }
            one_line("run_dir", &dir.display().to_string(), &mut problems);
        }
        for line in self.scheduler_options.lines() {
            let line = line.trim();
            let directive = match kind {
                ProviderKind::Pbs => "#PBS",
                _ => "#SBATCH",
            };
            if !line.is_empty() && !line.starts_with(directive) {
                problems.push(problem(
                    "scheduler_options",
                    format!("holds directive lines only (each starts with {directive}); {line:?} does not"),
                ));
                break;
            }
        }
        if let Some(tag) = self
            .node_tags
            .iter()
            .flatten()
            .find(|t| !ferry_proto::messages::is_tag(t))
        {
            problems.push(problem(
                "node_tags",
                format!("{tag:?} is not a tag (1 to 64 letters, digits, `_`, `-`, `.`)"),
            ));
        }
        for (name, environment) in &self.environments {
            problems.extend(environment.check(name));
        }
        problems
    }
}

fn one_line(key: &str, value: &str, problems: &mut Vec<Problem>) {
    if value.chars().any(|c| c.is_control()) {
        problems.push(problem(
            key,
            "must be one line (no newlines or control characters)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_python_is_the_one_beside_the_program_if_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("ferry-endpoint");
        assert_eq!(python_beside(&exe), None);

        std::fs::write(dir.path().join("python"), "").unwrap();
        let beside = dir.path().join("python").display().to_string();
        assert_eq!(python_beside(&exe), Some(beside));
    }

    #[test]
    fn without_a_python_beside_the_tests_the_default_is_python3_on_the_path() {
        // The test binary's directory (target/*/deps) has no `python`.
        assert_eq!(default_python(), "python3");
    }

    fn parse(text: &str) -> ProviderConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn recycling_and_node_tags_reach_the_managers_environment_and_a_bad_tag_is_named() {
        let p = parse(
            "kind = \"slurm\"\nrecycle_after_tasks = 100\nrecycle_after = \"1h\"\n\
             recycle_above_rss_mb = 4096\nnode_tags = [\"avx512\", \"bigmem\"]",
        );
        assert_eq!(
            p.manager_env(),
            [
                ("FERRY_RECYCLE_TASKS", "100".to_owned()),
                ("FERRY_RECYCLE_SECS", "3600".to_owned()),
                ("FERRY_RECYCLE_RSS_MB", "4096".to_owned()),
                ("FERRY_NODE_TAGS", "avx512,bigmem".to_owned()),
            ]
        );
        assert!(parse("kind = \"local\"").manager_env().is_empty());
        let bad = parse("kind = \"local\"\nnode_tags = [\"ok\", \"no/slash\"]");
        let problems = bad.check();
        assert!(
            problems
                .iter()
                .any(|p| p.key == "provider.node_tags" && p.message.contains("\"no/slash\"")),
            "{problems:?}"
        );
    }

    #[test]
    fn defaults_depend_on_the_kind() {
        let local = parse("kind = \"local\"");
        assert_eq!(
            (
                local.workers_per_node(),
                local.init_blocks(),
                local.min_blocks(),
                local.max_blocks()
            ),
            (Some(2), 1, 1, 1)
        );
        let slurm = parse("kind = \"slurm\"");
        assert_eq!(
            (
                slurm.workers_per_node(),
                slurm.init_blocks(),
                slurm.min_blocks(),
                slurm.max_blocks()
            ),
            (None, 0, 0, 1)
        );
        assert_eq!(slurm.launcher(), Launcher::None);
        assert_eq!(
            parse("kind = \"slurm\"\nnodes_per_block = 4").launcher(),
            Launcher::Srun
        );
        assert_eq!(
            parse("kind = \"pbs\"\nnodes_per_block = 4").launcher(),
            Launcher::Pbsdsh
        );
    }

    #[test]
    fn older_key_names_still_read() {
        let c = parse("nodes = 3\nworkers_per_node = 4");
        assert_eq!((c.nodes_per_block(), c.workers_per_node()), (3, Some(4)));
    }

    #[test]
    fn an_unknown_kind_is_refused_by_name() {
        let err = toml::from_str::<ProviderConfig>("kind = \"k8s\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("k8s") && err.contains("slurm"), "{err}");
    }

    #[test]
    fn settings_of_another_scheduler_are_named() {
        let keys = |text: &str| -> Vec<String> { parse(text).check().into_iter().map(|p| p.key).collect() };
        assert_eq!(
            keys("kind = \"pbs\"\npartition = \"debug\""),
            ["provider.partition"]
        );
        assert_eq!(keys("kind = \"slurm\"\nqueue = \"workq\""), ["provider.queue"]);
        assert_eq!(
            keys("kind = \"local\"\nwalltime = \"01:00:00\""),
            ["provider.walltime"]
        );
        let p = &parse("kind = \"pbs\"\npartition = \"debug\"").check()[0];
        assert!(p.message.contains("queue"), "{}", p.message);
    }

    #[test]
    fn block_counts_must_fit_together() {
        let p = parse("kind = \"slurm\"\nmin_blocks = 2\nmax_blocks = 1").check();
        assert_eq!(p[0].key, "provider.max_blocks");
        assert!(p[0].message.contains("min_blocks"), "{}", p[0].message);
        assert!(
            parse("kind = \"slurm\"\nmin_blocks = 1\nmax_blocks = 3")
                .check()
                .is_empty()
        );
    }

    #[test]
    fn a_value_cannot_smuggle_a_second_line() {
        let p = parse("kind = \"slurm\"\npartition = \"debug\\n#SBATCH --x\"").check();
        assert_eq!(p[0].key, "provider.partition");
    }

    #[test]
    fn scheduler_options_are_directives_only() {
        let p =
            parse("kind = \"slurm\"\nscheduler_options = \"#SBATCH --gres=gpu:1\\nmodule load x\"").check();
        assert_eq!(p[0].key, "provider.scheduler_options");
        assert!(
            parse("kind = \"pbs\"\nscheduler_options = \"#PBS -l place=scatter\"")
                .check()
                .is_empty()
        );
    }

    #[test]
    fn drain_is_shorter_than_the_walltime() {
        let p = parse("kind = \"slurm\"\nwalltime = \"00:01:00\"\ndrain = \"90s\"").check();
        assert_eq!(p[0].key, "provider.drain");
        let c = parse("kind = \"slurm\"\nwalltime = \"00:01:00\"");
        assert_eq!(c.drain().as_secs(), 30);
    }
}
