//! A block's submission script: the settings of the provider's config (and of the
//! block) that its template may use.
//!
//! | markup | value |
//! |---|---|
//! | `@@JOB_NAME@@` | `ferry.<endpoint>.<block>` |
//! | `@@BLOCK_ID@@`, `@@ENDPOINT_NAME@@`, `@@BLOCK_DIR@@` | the block, its endpoint, the block's directory |
//! | `@@OUTPUT@@` | `<block dir>/job.out`, the job's stdout and stderr |
//! | `@@NODES@@`, `@@WALLTIME@@`, `@@WALLTIME_SECS@@`, `@@DRAIN_SECS@@` | from the config (walltime in the scheduler's form) |
//! | `@@PARTITION@@`, `@@QUEUE@@`, `@@ACCOUNT@@`, `@@QOS@@`, `@@CONSTRAINT@@`, `@@CORES_PER_NODE@@`, `@@MEM_PER_NODE@@` | from the config; an error where unset |
//! | `@@SELECT@@` | PBS: `<nodes>[:ncpus=C][:mem=Mgb]:mpiprocs=1` |
//! | `@@DIRECTIVES@@` | generated directive lines for the optional settings that are set |
//! | `@@SCHEDULER_OPTIONS@@`, `@@WORKER_INIT@@` | from the config, as they are |
//! | `@@ENDPOINT_ADDRESS@@`, `@@PYTHON@@`, `@@MANAGER_BIN@@` | where managers connect, the workers' Python, the manager binary |
//! | `@@MANAGER_ENV@@` | `export` lines for the manager: the endpoint's secret and certificate fingerprint, the block, its end |
//! | `@@MANAGER_COMMAND@@` | the manager command line, under the launcher |

use std::collections::BTreeMap;
use std::path::Path;

use ferry_proto::frames::CertFingerprint;

use super::{Value, quote, render};
use crate::config::{Launcher, ProviderConfig, ProviderKind};

/// Ferry's own template for a provider kind.
pub fn default_template(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Pbs => include_str!("../../templates/pbs.sh"),
        _ => include_str!("../../templates/slurm.sh"),
    }
}

/// Everything a block script is made of.
#[derive(Debug, Clone)]
pub struct BlockScript<'a> {
    pub config: &'a ProviderConfig,
    pub endpoint_name: &'a str,
    pub block_id: &'a str,
    pub block_dir: &'a Path,
    /// `host:port` where managers connect.
    pub endpoint_address: &'a str,
    /// The endpoint's manager secret (goes into the script, never on a command line).
    pub secret: &'a str,
    /// The SHA-256 of the endpoint's certificate, which the managers pin.
    pub cert_sha256: CertFingerprint,
    pub manager_bin: &'a Path,
    /// Overrides the config's walltime (a short test job for `check`).
    pub walltime_secs: Option<u64>,
}

impl BlockScript<'_> {
    pub fn job_name(&self) -> String {
        format!("ferry.{}.{}", self.endpoint_name, self.block_id)
    }

    fn walltime_secs(&self) -> u64 {
        self.walltime_secs
            .unwrap_or_else(|| self.config.walltime().as_secs())
    }

    /// The walltime in the form the scheduler reads.
    fn walltime_text(&self) -> String {
        let w = crate::config::Walltime(std::time::Duration::from_secs(self.walltime_secs()));
        match self.config.kind {
            ProviderKind::Pbs => w.clock(),
            _ => w.slurm(),
        }
    }

    /// Renders the script from `template`.
    pub fn render(&self, template: &str) -> Result<String, Vec<super::Error>> {
        render(template, &self.settings())
    }

    /// The settings a template may use.
    pub fn settings(&self) -> BTreeMap<&'static str, Value> {
        let c = self.config;
        let q = |s: &str| Value::Quoted(s.to_owned());
        let opt = |v: &Option<String>, key: &'static str| match v {
            Some(v) => Value::Quoted(v.clone()),
            None => Value::Unset { key },
        };
        let num = |v: Option<u32>, key: &'static str| match v {
            Some(v) => Value::Quoted(v.to_string()),
            None => Value::Unset { key },
        };
        let mut s = BTreeMap::new();
        s.insert("JOB_NAME", q(&self.job_name()));
        s.insert("BLOCK_ID", q(self.block_id));
        s.insert("ENDPOINT_NAME", q(self.endpoint_name));
        s.insert("BLOCK_DIR", q(&self.block_dir.display().to_string()));
        s.insert("OUTPUT", q(&self.block_dir.join("job.out").display().to_string()));
        s.insert("NODES", q(&c.nodes_per_block().to_string()));
        s.insert("WALLTIME", q(&self.walltime_text()));
        s.insert("WALLTIME_SECS", q(&self.walltime_secs().to_string()));
        s.insert("DRAIN_SECS", q(&self.drain_secs().to_string()));
        s.insert("PARTITION", opt(&c.partition, "provider.partition"));
        s.insert("QUEUE", opt(&c.queue, "provider.queue"));
        s.insert("ACCOUNT", opt(&c.account, "provider.account"));
        s.insert("QOS", opt(&c.qos, "provider.qos"));
        s.insert("CONSTRAINT", opt(&c.constraint, "provider.constraint"));
        s.insert("CORES_PER_NODE", num(c.cores_per_node, "provider.cores_per_node"));
        s.insert("MEM_PER_NODE", num(c.mem_per_node, "provider.mem_per_node"));
        s.insert("SELECT", Value::Raw(self.select()));
        s.insert("DIRECTIVES", Value::Raw(self.directives()));
        s.insert("SCHEDULER_OPTIONS", Value::Raw(c.scheduler_options.clone()));
        s.insert("WORKER_INIT", Value::Raw(c.worker_init.clone()));
        s.insert("ENDPOINT_ADDRESS", q(self.endpoint_address));
        s.insert("PYTHON", q(&c.python));
        s.insert("MANAGER_BIN", q(&self.manager_bin.display().to_string()));
        s.insert("MANAGER_ENV", Value::Raw(self.manager_env()));
        s.insert("MANAGER_COMMAND", Value::Raw(self.manager_command()));
        s
    }

    fn drain_secs(&self) -> u64 {
        let walltime = std::time::Duration::from_secs(self.walltime_secs());
        self.config.drain().min(walltime / 2).as_secs()
    }

    /// PBS's chunk: one per node, one MPI process in each (so the node file lists each
    /// node once).
    fn select(&self) -> String {
        let c = self.config;
        let mut s = c.nodes_per_block().to_string();
        if let Some(n) = c.cores_per_node {
            s.push_str(&format!(":ncpus={n}"));
        }
        if let Some(m) = c.mem_per_node {
            s.push_str(&format!(":mem={m}gb"));
        }
        s.push_str(":mpiprocs=1");
        s
    }

    /// Directive lines for the optional settings that are set, values quoted.
    fn directives(&self) -> String {
        let c = self.config;
        let mut lines = Vec::new();
        match c.kind {
            ProviderKind::Pbs => {
                if let Some(q) = &c.queue {
                    lines.push(format!("#PBS -q {}", quote(q)));
                }
                if let Some(a) = &c.account {
                    lines.push(format!("#PBS -A {}", quote(a)));
                }
                if c.exclusive {
                    lines.push("#PBS -l place=excl".to_owned());
                }
            }
            _ => {
                let mut add = |flag: &str, v: &Option<String>| {
                    if let Some(v) = v {
                        lines.push(format!("#SBATCH --{flag}={}", quote(v)));
                    }
                };
                add("partition", &c.partition);
                add("account", &c.account);
                add("qos", &c.qos);
                add("constraint", &c.constraint);
                if c.exclusive {
                    lines.push("#SBATCH --exclusive".to_owned());
                }
                if let Some(n) = c.cores_per_node {
                    lines.push(format!("#SBATCH --cpus-per-task={n}"));
                }
                if let Some(m) = c.mem_per_node {
                    lines.push(format!("#SBATCH --mem={m}G"));
                }
            }
        }
        lines.join("\n")
    }

    /// What the manager reads from its environment: the secret (never on a command
    /// line, where `ps` shows it to everyone), the endpoint certificate's fingerprint to
    /// pin, the block, and when the block ends (Slurm
    /// says so in `SLURM_JOB_END_TIME`; otherwise counted from the script's start).
    fn manager_env(&self) -> String {
        let walltime = self.walltime_secs();
        let end = match self.config.kind {
            ProviderKind::Slurm => format!("${{SLURM_JOB_END_TIME:-$(( $(date +%s) + {walltime} ))}}"),
            _ => format!("$(( $(date +%s) + {walltime} ))"),
        };
        [
            format!("export FERRY_MANAGER_SECRET={}", quote(self.secret)),
            format!("export FERRY_ENDPOINT_CERT_SHA256={}", self.cert_sha256),
            format!("export FERRY_BLOCK_ID={}", quote(self.block_id)),
            format!("export FERRY_PYTHON={}", quote(&self.config.python)),
            format!(
                "export FERRY_KEEP_RUN_DIRS_SECS={}",
                self.config.keep_run_dirs().as_secs()
            ),
            format!("export FERRY_DRAIN_SECS={}", self.drain_secs()),
            format!("export FERRY_BLOCK_END={end}"),
        ]
        .into_iter()
        .chain(
            self.config
                .run_dir
                .as_ref()
                .map(|dir| format!("export FERRY_RUN_ROOT={}", quote(&dir.display().to_string()))),
        )
        .chain(
            self.config
                .app_env_script
                .as_ref()
                .map(|script| format!("export FERRY_APP_ENV_SCRIPT={}", quote(script))),
        )
        .chain(
            self.config
                .python_run_dirs
                .map(|dirs| format!("export FERRY_PYTHON_RUN_DIRS={}", dirs.name())),
        )
        .chain(
            self.config
                .manager_env()
                .into_iter()
                .map(|(key, value)| format!("export {key}={}", quote(&value))),
        )
        .collect::<Vec<_>>()
        .join("\n")
    }

    /// The manager command line, started once per node by the launcher.
    fn manager_command(&self) -> String {
        let c = self.config;
        let workers = c
            .workers_per_node()
            .map_or_else(|| "auto".to_owned(), |n| n.to_string());
        let manager = format!(
            "{} --endpoint {} --workers {workers}",
            quote(&self.manager_bin.display().to_string()),
            quote(self.endpoint_address)
        );
        let nodes = c.nodes_per_block();
        let options = if c.launcher_options.trim().is_empty() {
            String::new()
        } else {
            format!("{} ", c.launcher_options.trim())
        };
        match c.launcher() {
            Launcher::None => manager,
            Launcher::Srun => {
                format!("srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 {options}{manager}")
            }
            Launcher::Mpiexec => format!(
                "ferry_hosts=$(mktemp)\nsort -u \"$PBS_NODEFILE\" > \"$ferry_hosts\"\n\
                 mpiexec -n {nodes} --hostfile \"$ferry_hosts\" {options}{manager}"
            ),
            // pbsdsh passes no environment: each node runs a script written here,
            // readable by the user only, that sets it up.
            Launcher::Pbsdsh => {
                let node = quote(&self.block_dir.join("node.sh").display().to_string());
                format!(
                    "(umask 077 && cat > {node} <<'FERRY_NODE_SCRIPT'\n#!/bin/bash\n{init}\n{env}\nexec {manager}\nFERRY_NODE_SCRIPT\n)\n\
                     pbsdsh {options}-- /bin/bash {node}",
                    init = c.worker_init.trim_end(),
                    env = self.manager_env(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ProviderConfig {
        toml::from_str(text).unwrap()
    }

    fn script(config: &ProviderConfig) -> String {
        BlockScript {
            config,
            endpoint_name: "hpc",
            block_id: "7",
            block_dir: Path::new("/home/ada/.ferry/endpoints/hpc/blocks/7"),
            endpoint_address: "login1.cluster:50123",
            secret: "s3cr3t",
            cert_sha256: CertFingerprint::of(b"the endpoint's certificate"),
            manager_bin: Path::new("/opt/ferry/bin/ferry-manager"),
            walltime_secs: None,
        }
        .render(default_template(config.kind))
        .unwrap()
    }

    #[test]
    fn optional_settings_leave_no_trace_when_unset() {
        let s = script(&config("kind = \"slurm\""));
        assert!(!s.contains("--partition") && !s.contains("@@"), "{s}");
        assert!(
            s.contains("#SBATCH --time=01:00:00\n\n# Ferry block"),
            "no blank lines among the directives:\n{s}"
        );
        let s = script(&config("kind = \"slurm\"\npartition = \"debug\""));
        assert!(
            s.contains("#SBATCH --time=01:00:00\n#SBATCH --partition=debug\n"),
            "{s}"
        );
    }

    #[test]
    fn values_with_spaces_are_quoted_in_directives() {
        let s = script(&config("kind = \"slurm\"\naccount = \"my alloc\""));
        assert!(s.contains("#SBATCH --account='my alloc'\n"), "{s}");
    }

    #[test]
    fn the_secret_is_in_the_environment_not_on_the_command_line() {
        let s = script(&config("kind = \"slurm\"\nnodes_per_block = 2"));
        assert!(s.contains("export FERRY_MANAGER_SECRET=s3cr3t\n"), "{s}");
        let command = s.lines().find(|l| l.starts_with("srun")).unwrap();
        assert!(!command.contains("s3cr3t"), "{command}");
    }

    #[test]
    fn recycling_and_node_tags_are_exported_to_the_managers() {
        let s = script(&config(
            "kind = \"pbs\"\nrecycle_after_tasks = 50\nnode_tags = [\"avx512\", \"gpu-a100\"]",
        ));
        assert!(s.contains("export FERRY_RECYCLE_TASKS=50\n"), "{s}");
        assert!(s.contains("export FERRY_NODE_TAGS=avx512,gpu-a100\n"), "{s}");
        assert!(!script(&config("kind = \"pbs\"")).contains("FERRY_RECYCLE"));
    }

    #[test]
    fn the_managers_pin_the_endpoints_certificate() {
        let s = script(&config("kind = \"slurm\""));
        let pin = CertFingerprint::of(b"the endpoint's certificate");
        assert!(
            s.contains(&format!("export FERRY_ENDPOINT_CERT_SHA256={pin}\n")),
            "{s}"
        );
    }

    #[test]
    fn a_custom_template_may_use_any_setting_that_is_set() {
        let c = config("kind = \"slurm\"\npartition = \"gpu\"");
        let out = BlockScript {
            config: &c,
            endpoint_name: "hpc",
            block_id: "1",
            block_dir: Path::new("/b"),
            endpoint_address: "h:1",
            secret: "s",
            cert_sha256: CertFingerprint::of(b"c"),
            manager_bin: Path::new("/m"),
            walltime_secs: Some(90),
        }
        .render("#SBATCH -p @@PARTITION@@ -t @@WALLTIME@@\n@@MANAGER_COMMAND@@\n")
        .unwrap();
        assert_eq!(
            out,
            "#SBATCH -p gpu -t 00:02:00\n/m --endpoint h:1 --workers auto\n"
        );
    }
}
