//! The `config.toml` that `configure` writes: every setting that applies to the
//! provider's kind, set ones as they are, the rest commented out with their default or
//! an example, each with a line saying what it does.

use std::fmt::Write;

use super::EndpointConfig;
use super::provider::{ProviderConfig, ProviderKind};

/// Which provider kinds a setting applies to.
#[derive(Clone, Copy)]
enum Applies {
    All,
    Batch,
    Slurm,
    Pbs,
}

impl Applies {
    fn to(self, kind: ProviderKind) -> bool {
        match self {
            Applies::All => kind != ProviderKind::Manual,
            Applies::Batch => kind.is_batch(),
            Applies::Slurm => kind == ProviderKind::Slurm,
            Applies::Pbs => kind == ProviderKind::Pbs,
        }
    }
}

/// A TOML value as it should read in the file: multi-line text as a literal block.
fn value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) if s.contains('\n') && !s.contains("'''") => format!("'''\n{s}'''"),
        other => other.to_string(),
    }
}

/// The file's text. It parses back to `config` (checked by `configure`).
pub fn commented(name: &str, config: &EndpointConfig) -> String {
    let mut out = String::new();
    let p = &config.provider;
    let kind = p.kind;
    let _ = writeln!(
        out,
        "# Ferry endpoint \"{name}\", written by `ferry-endpoint configure`.\n\
         # Every setting is in docs/endpoints.md; unknown keys are refused.\n"
    );
    let _ = writeln!(out, "url = {}", toml::Value::String(config.url.clone()));
    match &config.token {
        Some(t) => {
            let _ = writeln!(
                out,
                "token = {}    # FERRY_TOKEN at start overrides it",
                toml::Value::String(t.clone())
            );
        }
        None => {
            let _ = writeln!(
                out,
                "# token = \"fy_...\"    # or FERRY_TOKEN when the endpoint starts"
            );
        }
    }
    let ids = |ids: &[String]| toml::Value::Array(ids.iter().cloned().map(toml::Value::String).collect());
    let top: [(&str, Option<toml::Value>, &str, &str); 13] = [
        (
            "listen",
            config.listen.clone().map(toml::Value::String),
            "\"0.0.0.0:0\"",
            "where managers connect (port 0: any free port)",
        ),
        (
            "address",
            config.address.clone().map(toml::Value::String),
            "\"login01.cluster.org\"",
            "how compute nodes reach this machine (default: its host name)",
        ),
        (
            "address_interface",
            config.address_interface.clone().map(toml::Value::String),
            "\"ib0\"",
            "or: the address of this network interface",
        ),
        (
            "ca_file",
            config
                .ca_file
                .as_ref()
                .map(|p| toml::Value::String(p.display().to_string())),
            "\"/etc/ssl/my-site-ca.pem\"",
            "CA certificates to trust for https:// and amqps:// (besides the system's)",
        ),
        (
            "prefetch",
            Some(toml::Value::Integer(config.prefetch.into())),
            "64",
            "task messages held unacked at once",
        ),
        (
            "manager_timeout_secs",
            Some(toml::Value::Integer(config.manager_timeout_secs as i64)),
            "30",
            "a manager silent this long is lost",
        ),
        (
            "stop_grace_secs",
            Some(toml::Value::Integer(config.stop_grace_secs as i64)),
            "10",
            "on stop, running tasks get this long to finish and report",
        ),
        (
            "priority_aging_secs",
            config
                .priority_aging_secs
                .map(|s| toml::Value::Integer(s.min(i64::MAX as u64) as i64)),
            "300",
            "a waiting task counts one priority higher per this many seconds waited (default: no aging)",
        ),
        (
            "strategy",
            (config.strategy != Default::default())
                .then(|| toml::Value::String(config.strategy.name().to_owned())),
            "\"fill-by-priority\"",
            "which manager gets tasks next: least-loaded (default), fill-by-priority, round-robin, environment-affinity",
        ),
        (
            "metrics_listen",
            config.metrics_listen.map(|a| toml::Value::String(a.to_string())),
            "\"127.0.0.1:9465\"",
            "serve Prometheus metrics at /metrics on this address (default: not served)",
        ),
        (
            "public",
            config.public.then_some(toml::Value::Boolean(true)),
            "true",
            "anyone with an account may send it tasks (default: you only)",
        ),
        (
            "shared_with",
            (!config.shared_with.is_empty()).then(|| {
                ids(&config
                    .shared_with
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>())
            }),
            "[\"<user id>\"]",
            "users who may send it tasks besides you",
        ),
        (
            "allowed_functions",
            config
                .allowed_functions
                .as_ref()
                .map(|f| ids(&f.iter().map(ToString::to_string).collect::<Vec<_>>())),
            "[\"<function id>\"]",
            "the only functions it runs, whoever sends them",
        ),
    ];
    for (key, set, example, what) in top {
        if !kind.is_batch() && key.starts_with("address") {
            continue;
        }
        line(&mut out, key, set.as_ref(), example, what);
    }
    let _ = writeln!(out, "\n[provider]");
    let _ = writeln!(
        out,
        "kind = \"{}\"    # local | manual | slurm | pbs",
        kind.name()
    );
    for (key, applies, example, what) in SETTINGS {
        if applies.to(kind) {
            line(&mut out, key, setting(p, key).as_ref(), example, what);
        }
    }
    if p.environments.is_empty() {
        let _ = writeln!(
            out,
            "\n# Task environments (docs/scheduling.md#task-environments):\n\
             # [provider.environments.torch]\n\
             # python = \"/opt/envs/torch/bin/python\"    # with Ferry's SDK installed\n\
             # env = {{ OMP_NUM_THREADS = \"4\" }}\n\
             # setup = \"module load cuda\"    # shell lines run before it starts"
        );
    } else {
        // As tables under [provider], written whole so nested ones (`env`) nest right.
        let environments =
            toml::Value::try_from(&p.environments).unwrap_or(toml::Value::Table(Default::default()));
        let mut provider = toml::Table::new();
        provider.insert("environments".into(), environments);
        let mut root = toml::Table::new();
        root.insert("provider".into(), toml::Value::Table(provider));
        let _ = write!(out, "\n{}", toml::to_string(&root).unwrap_or_default());
    }
    out
}

fn line(out: &mut String, key: &str, set: Option<&toml::Value>, example: &str, what: &str) {
    let _ = match set {
        Some(v) => writeln!(out, "{key} = {}    # {what}", value(v)),
        None => writeln!(out, "# {key} = {example}    # {what}"),
    };
}

/// The provider's settings, in the order the file lists them.
const SETTINGS: &[(&str, Applies, &str, &str)] = &[
    (
        "max_workers_per_node",
        Applies::All,
        "4",
        "workers per node (default: 2 locally, one per core on a cluster)",
    ),
    ("nodes_per_block", Applies::All, "1", "nodes (managers) per block"),
    (
        "init_blocks",
        Applies::All,
        "0",
        "blocks submitted at start (default: 1 locally, 0 on a cluster)",
    ),
    (
        "min_blocks",
        Applies::All,
        "0",
        "blocks kept however idle (default: 1 locally, 0 on a cluster)",
    ),
    (
        "max_blocks",
        Applies::All,
        "1",
        "blocks at most, pending and running",
    ),
    ("walltime", Applies::Batch, "\"01:00:00\"", "a block's walltime"),
    ("partition", Applies::Slurm, "\"debug\"", "Slurm partition"),
    ("queue", Applies::Pbs, "\"workq\"", "PBS queue"),
    (
        "account",
        Applies::Batch,
        "\"my-allocation\"",
        "the account charged",
    ),
    ("qos", Applies::Slurm, "\"normal\"", "Slurm quality of service"),
    ("constraint", Applies::Slurm, "\"cpu\"", "Slurm node features"),
    ("exclusive", Applies::Batch, "true", "whole nodes"),
    (
        "cores_per_node",
        Applies::Batch,
        "32",
        "cores to ask for on each node",
    ),
    (
        "mem_per_node",
        Applies::Batch,
        "64",
        "memory to ask for on each node, GB",
    ),
    (
        "scheduler_options",
        Applies::Batch,
        "\"#SBATCH --gpus-per-node=4\"",
        "directive lines added to the block script",
    ),
    (
        "worker_init",
        Applies::Batch,
        "\"module load python; source ~/venv/bin/activate\"",
        "shell lines run on each node first",
    ),
    (
        "launcher",
        Applies::Batch,
        "\"srun\"",
        "none | srun | mpiexec | pbsdsh (default: none for one node)",
    ),
    (
        "launcher_options",
        Applies::Batch,
        "\"--cpu-bind=none\"",
        "extra arguments for the launcher",
    ),
    (
        "template",
        Applies::Batch,
        "\"/path/to/block-template.sh\"",
        "your own block script template (@@NAME@@ markup)",
    ),
    (
        "drain",
        Applies::Batch,
        "\"60s\"",
        "stop taking tasks this long before the walltime ends",
    ),
    (
        "idle_timeout",
        Applies::All,
        "\"2m\"",
        "cancel a block idle this long (down to min_blocks)",
    ),
    (
        "strategy_period",
        Applies::All,
        "\"5s\"",
        "how often scaling decides",
    ),
    (
        "poll_period",
        Applies::Batch,
        "\"30s\"",
        "how often the scheduler is asked about the blocks",
    ),
    (
        "cmd_timeout",
        Applies::Batch,
        "\"30s\"",
        "how long a scheduler command may take",
    ),
    (
        "max_failures",
        Applies::All,
        "3",
        "failed blocks in a row before scaling pauses",
    ),
    (
        "connect_timeout",
        Applies::Batch,
        "\"5m\"",
        "a running block with no manager this long is cancelled",
    ),
    (
        "python",
        Applies::All,
        "\"python3\"",
        "the workers' Python, with the ferry package (default: the python beside ferry-endpoint, else python3)",
    ),
    (
        "manager_bin",
        Applies::All,
        "\"/path/to/ferry-manager\"",
        "default: next to ferry-endpoint",
    ),
    (
        "run_dir",
        Applies::All,
        "\"/path/to/runs\"",
        "each task's run directory is <run_dir>/<task id> (default: runs in this endpoint's directory)",
    ),
    (
        "app_env_script",
        Applies::All,
        "\"module load gcc\"",
        "sourced before each phase of an application run (an application's own env_script replaces it)",
    ),
    (
        "python_run_dirs",
        Applies::All,
        "\"per-task\"",
        "on-request (default: made when a Python task asks) or per-task (~100 us a task)",
    ),
    (
        "keep_run_dirs",
        Applies::All,
        "\"7d\"",
        "how long a finished task's run directory is kept when it holds anything",
    ),
    (
        "recycle_after_tasks",
        Applies::All,
        "100",
        "replace a worker's Python host after this many tasks",
    ),
    (
        "recycle_after",
        Applies::All,
        "\"1h\"",
        "replace a worker's Python host once it has been up this long",
    ),
    (
        "recycle_above_rss_mb",
        Applies::All,
        "4096",
        "replace a worker's Python host when its memory passes this many MiB after a task",
    ),
    (
        "node_tags",
        Applies::All,
        "[\"avx512\"]",
        "labels of the nodes this provider starts, which tasks may require",
    ),
];

/// A provider setting's value, if it is set (as TOML).
fn setting(p: &ProviderConfig, key: &str) -> Option<toml::Value> {
    toml::Value::try_from(p).ok()?.get(key).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Walltime;

    #[test]
    fn the_written_file_reads_back_as_the_same_config() {
        for kind in [
            ProviderKind::Local,
            ProviderKind::Manual,
            ProviderKind::Slurm,
            ProviderKind::Pbs,
        ] {
            let mut provider = ProviderConfig::of_kind(kind);
            if kind.is_batch() {
                provider.walltime = Some(Walltime::parse("00:30:00").unwrap());
                provider.worker_init = "module load python\nsource ~/venv/bin/activate".into();
                provider.max_blocks = Some(4);
                let torch = crate::config::environments::EnvironmentConfig {
                    python: Some("/opt/torch/bin/python".into()),
                    env: [("OMP_NUM_THREADS".to_owned(), "4".to_owned())].into(),
                    setup: Some("module load cuda\nexport X=1".into()),
                    recycle_when_unreferenced: true,
                    ..Default::default()
                };
                provider.environments.insert("torch.2".into(), torch);
                provider.environments.insert("plain".into(), Default::default());
            }
            let mut config = EndpointConfig::new("https://ferry.example.org".into(), provider);
            config.token = Some("fy_abc".into());
            if kind.is_batch() {
                config.strategy = crate::interchange::strategy::StrategyKind::FillByPriority;
                config.metrics_listen = Some("127.0.0.1:9465".parse().unwrap());
            }
            let text = commented("hpc", &config);
            let back = EndpointConfig::parse(&text).unwrap_or_else(|e| panic!("{kind:?}: {e}\n{text}"));
            assert_eq!(
                toml::to_string(&back).unwrap(),
                toml::to_string(&config).unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn a_slurm_file_lists_slurm_settings_and_no_pbs_ones() {
        let config = EndpointConfig::new("http://x".into(), ProviderConfig::of_kind(ProviderKind::Slurm));
        let text = commented("hpc", &config);
        assert!(text.contains("# partition = \"debug\""), "{text}");
        assert!(!text.contains("queue ="), "{text}");
        assert!(text.contains("# address_interface"), "{text}");
    }
}
