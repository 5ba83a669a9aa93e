//! `configure NAME --from-globus PATH`: a Globus Compute endpoint's `config.yaml` (its
//! `engine` and `engine.provider` sections) carried over into Ferry's config, with a
//! list of what could not be carried and why.
//!
//! Given an endpoint directory, or a `config.yaml` with no `engine` (Globus Compute 4
//! keeps the engine in `user_config_template.yaml.j2` beside it), the template is read;
//! its `{{ variables }}` become unset settings, and say so. Parsl's defaults differ from
//! Ferry's, so the values a Globus Compute endpoint ran with are written out even where
//! the file left them to the default (`init_blocks = 1`, Slurm's `exclusive = true`, a
//! 10-minute Slurm walltime, a 20-minute PBS one).

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use super::provider::{Launcher, ProviderConfig, ProviderKind};
use super::values::{Seconds, Walltime};

/// What the import gives.
#[derive(Debug, Clone)]
pub struct Imported {
    pub provider: ProviderConfig,
    pub address: Option<String>,
    pub address_interface: Option<String>,
    /// `public` and `allowed_functions`, which mean the same in Ferry.
    pub public: bool,
    pub allowed_functions: Option<Vec<ferry_proto::FunctionId>>,
    /// The file read.
    pub source: PathBuf,
    /// Every setting not carried over, and why.
    pub not_carried: Vec<String>,
}

/// Reads a Globus Compute endpoint's config (a directory, its `config.yaml`, or a
/// `user_config_template.yaml.j2`).
pub fn import(path: &Path) -> anyhow::Result<Imported> {
    let mut source = path.to_owned();
    if path.is_dir() {
        source = path.join("config.yaml");
    }
    let text = read(&source)?;
    let mut notes = Vec::new();
    let mut doc = parse(&text, &source, &mut notes)?;
    if doc.get("engine").is_none() {
        let template = source.with_file_name("user_config_template.yaml.j2");
        if !template.exists() {
            anyhow::bail!(
                "{} has no `engine` section, and there is no {} beside it to take one from",
                source.display(),
                template.display()
            );
        }
        source = template;
        doc = parse(&read(&source)?, &source, &mut notes)?;
    }
    let mut imported = convert(&doc, &mut notes)?;
    imported.source = source;
    imported.not_carried = notes;
    Ok(imported)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// YAML, after the Jinja expressions of a template are taken out (each one noted).
fn parse(text: &str, source: &Path, notes: &mut Vec<String>) -> anyhow::Result<Mapping> {
    if text.contains("{%") {
        anyhow::bail!(
            "{} holds Jinja statements ({{% ... %}}): render the template for one user first, then import that",
            source.display()
        );
    }
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    let mut variables = Vec::new();
    while let Some(at) = rest.find("{{") {
        let Some(len) = rest[at..].find("}}") else { break };
        plain.push_str(&rest[..at]);
        plain.push_str("null");
        variables.push(rest[at + 2..at + len].trim().to_owned());
        rest = &rest[at + len + 2..];
    }
    plain.push_str(rest);
    if !variables.is_empty() {
        notes.push(format!(
            "template variables left unset (set their settings by hand): {}",
            variables.join(", ")
        ));
    }
    let doc: Value = serde_yaml_ng::from_str(&plain)
        .map_err(|e| anyhow::anyhow!("{} is not valid YAML: {e}", source.display()))?;
    match doc {
        Value::Mapping(m) => Ok(m),
        _ => anyhow::bail!("{} is not a YAML mapping", source.display()),
    }
}

fn get<'a>(m: &'a Mapping, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn type_of(m: &Mapping) -> Option<&str> {
    get(m, "type").and_then(Value::as_str)
}

fn string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok()).or_else(|| {
        v.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as u32)
    })
}

fn convert(doc: &Mapping, notes: &mut Vec<String>) -> anyhow::Result<Imported> {
    let engine = get(doc, "engine")
        .and_then(Value::as_mapping)
        .ok_or_else(|| anyhow::anyhow!("`engine` is not a mapping"))?;
    let provider = get(engine, "provider").and_then(Value::as_mapping);
    let kind = match provider.and_then(type_of) {
        Some("SlurmProvider") => ProviderKind::Slurm,
        Some("PBSProProvider") => ProviderKind::Pbs,
        Some("TorqueProvider") => {
            notes.push("engine.provider.type TorqueProvider: imported as Ferry's PBS provider (qsub/qstat -f -F json/qdel); check that Torque's qstat understands `-F json`".into());
            ProviderKind::Pbs
        }
        Some("LocalProvider") | None => ProviderKind::Local,
        Some(other) => anyhow::bail!(
            "engine.provider.type {other} has no Ferry provider (Ferry has local, Slurm and PBS)"
        ),
    };
    let mut p = ProviderConfig::of_kind(kind);
    let mut address = None;
    let mut address_interface = None;
    engine_keys(engine, &mut p, &mut address, &mut address_interface, notes);
    if let Some(provider) = provider {
        provider_keys(provider, &mut p, notes);
    }
    // Parsl's defaults where the file relied on them.
    if p.init_blocks.is_none() && kind != ProviderKind::Manual {
        p.init_blocks = Some(1);
    }
    if kind.is_batch() && p.walltime.is_none() {
        let minutes = if kind == ProviderKind::Slurm { 10 } else { 20 };
        p.walltime = Some(Walltime(std::time::Duration::from_secs(minutes * 60)));
    }
    if kind == ProviderKind::Slurm && provider.is_some_and(|m| get(m, "exclusive").is_none()) {
        p.exclusive = true;
    }
    let mut public = false;
    let mut allowed_functions = None;
    for (key, value) in doc {
        match key.as_str().unwrap_or_default() {
            "engine" | "" => {}
            "public" => {
                public = value
                    .as_bool()
                    .ok_or_else(|| anyhow::anyhow!("`public` is not true or false"))?;
            }
            "allowed_functions" => {
                let list = value
                    .as_sequence()
                    .ok_or_else(|| anyhow::anyhow!("`allowed_functions` is not a list"))?;
                allowed_functions = Some(
                    list.iter()
                        .map(|v| {
                            v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                                anyhow::anyhow!("allowed_functions: {v:?} is not a function id")
                            })
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?,
                );
            }
            key => notes.push(format!(
                "{key}: a Globus Compute endpoint setting Ferry does not have"
            )),
        }
    }
    Ok(Imported {
        provider: p,
        address,
        address_interface,
        public,
        allowed_functions,
        source: PathBuf::new(),
        not_carried: Vec::new(),
    })
}

fn engine_keys(
    engine: &Mapping,
    p: &mut ProviderConfig,
    address: &mut Option<String>,
    address_interface: &mut Option<String>,
    notes: &mut Vec<String>,
) {
    for (key, value) in engine {
        let key = key.as_str().unwrap_or_default();
        if value.is_null() {
            continue;
        }
        match key {
            "type" => match value.as_str().unwrap_or_default() {
                "GlobusComputeEngine" | "HighThroughputEngine" => {}
                other => notes.push(format!(
                    "engine.type {other}: Ferry runs every task in a worker of its own (no MPI engine, thread or process pool); the provider is imported"
                )),
            },
            "provider" => {}
            "max_workers_per_node" | "max_workers" => match number(value) {
                Some(n) if n > 0 => p.max_workers_per_node = Some(n),
                _ => notes.push(format!("engine.{key} {value:?}: not a whole number of workers")),
            },
            "address" => match value {
                Value::String(s) => *address = Some(s.clone()),
                Value::Mapping(m) => match type_of(m) {
                    Some("address_by_interface") => {
                        *address_interface = get(m, "ifname").and_then(string);
                    }
                    Some("address_by_hostname") => {}
                    other => notes.push(format!(
                        "engine.address type {}: set `address` or `address_interface` by hand (default: this machine's host name)",
                        other.unwrap_or("?")
                    )),
                },
                _ => notes.push("engine.address: not understood".into()),
            },
            "job_status_kwargs" => {
                if let Some(m) = value.as_mapping() {
                    for (k, v) in m {
                        match k.as_str().unwrap_or_default() {
                            "max_idletime" => p.idle_timeout = number(v).map(|n| Seconds::secs(n.into())),
                            "strategy_period" => p.strategy_period = number(v).map(|n| Seconds::secs(n.into())),
                            "strategy" => {}
                            other => notes.push(format!("engine.job_status_kwargs.{other}: no Ferry setting")),
                        }
                    }
                }
            }
            "strategy" | "worker_debug" | "encrypted" | "heartbeat_period" | "heartbeat_threshold"
            | "poll_period" => {}
            "drain_period" => notes.push(
                "engine.drain_period: Ferry's `drain` counts back from the walltime's end (default 60 s), not forward from the manager's start".into(),
            ),
            "max_retries_on_system_failure" => notes.push(
                "engine.max_retries_on_system_failure: Ferry retries lost tasks per task (`max_retries`, 3 by default) and never charges a block's end".into(),
            ),
            other => notes.push(format!("engine.{other}: no Ferry setting")),
        }
    }
}

fn provider_keys(m: &Mapping, p: &mut ProviderConfig, notes: &mut Vec<String>) {
    let mut extra_directives = Vec::new();
    for (key, value) in m {
        let key = key.as_str().unwrap_or_default();
        if value.is_null() {
            continue;
        }
        let whole = |notes: &mut Vec<String>| {
            let n = number(value);
            if n.is_none() {
                notes.push(format!("engine.provider.{key} {value:?}: not a whole number"));
            }
            n
        };
        match key {
            "type" => {}
            "partition" => p.partition = string(value),
            "queue" => p.queue = string(value),
            "account" => p.account = string(value),
            "qos" => p.qos = string(value),
            "constraint" => p.constraint = string(value),
            "exclusive" => p.exclusive = value.as_bool().unwrap_or(true),
            "nodes_per_block" => p.nodes_per_block = whole(notes),
            "init_blocks" => p.init_blocks = whole(notes),
            "min_blocks" => p.min_blocks = whole(notes),
            "max_blocks" => p.max_blocks = whole(notes),
            "cores_per_node" | "cpus_per_node" => p.cores_per_node = whole(notes),
            "mem_per_node" => p.mem_per_node = whole(notes),
            "cmd_timeout" => p.cmd_timeout = whole(notes).map(|n| Seconds::secs(n.into())),
            // YAML 1.1 (what Globus Compute reads) makes an unquoted 1:00:00 an integer.
            "walltime" => match value {
                Value::Number(n) => p.walltime = n.as_u64().map(|s| Walltime(std::time::Duration::from_secs(s))),
                _ => match string(value).map(|s| Walltime::parse(&s)) {
                    Some(Ok(w)) => p.walltime = Some(w),
                    Some(Err(e)) => notes.push(format!("engine.provider.walltime: {e}")),
                    None => notes.push("engine.provider.walltime: not a string".into()),
                },
            },
            "scheduler_options" => {
                if let Some(s) = string(value) {
                    p.scheduler_options = s.trim().to_owned();
                }
            }
            "worker_init" => {
                if let Some(s) = string(value) {
                    p.worker_init = s.trim().to_owned();
                }
            }
            "gpus_per_node" => extra_directives.push(format!("#SBATCH --gpus-per-node={}", string(value).unwrap_or_default())),
            "gres" => extra_directives.push(format!("#SBATCH --gres={}", string(value).unwrap_or_default())),
            "launcher" => launcher(value, p, notes),
            "parallelism" => notes.push(
                "engine.provider.parallelism: Ferry adds one block at a time while tasks wait, up to max_blocks".into(),
            ),
            "select_options" => notes.push(format!(
                "engine.provider.select_options {value:?}: add it to the select line of a custom template (`template`), or as a `#PBS -l` line in scheduler_options"
            )),
            "move_files" | "channel" | "cmd_timeout_s" | "status_batch_size" | "regex_job_id" => {}
            other => notes.push(format!("engine.provider.{other}: no Ferry setting")),
        }
    }
    if p.launcher == Some(Launcher::None) && p.nodes_per_block.unwrap_or(1) > 1 {
        notes.push(
            "engine.provider.launcher: a single-node launcher with several nodes per block: Ferry starts one manager on each node, with srun or pbsdsh".into(),
        );
        p.launcher = None;
    }
    if !extra_directives.is_empty() {
        let mut lines: Vec<String> = p.scheduler_options.lines().map(str::to_owned).collect();
        lines.extend(extra_directives);
        p.scheduler_options = lines.join("\n");
    }
    // Parsl writes `scheduler_options` as given, directives or not; Ferry takes
    // directives only there: other lines move to the front of worker_init.
    let (directives, other): (Vec<&str>, Vec<&str>) = p
        .scheduler_options
        .lines()
        .filter(|l| !l.trim().is_empty())
        .partition(|l| l.trim_start().starts_with('#'));
    if !other.is_empty() {
        notes.push(format!(
            "engine.provider.scheduler_options: lines that are not directives moved to worker_init: {}",
            other.join("; ")
        ));
        let init = std::mem::take(&mut p.worker_init);
        p.worker_init = other
            .iter()
            .copied()
            .chain(init.lines())
            .collect::<Vec<_>>()
            .join("\n");
    }
    p.scheduler_options = directives.join("\n");
}

fn launcher(value: &Value, p: &mut ProviderConfig, notes: &mut Vec<String>) {
    let Some(m) = value.as_mapping() else {
        notes.push("engine.provider.launcher: not a mapping".into());
        return;
    };
    let mut overrides = get(m, "overrides")
        .and_then(string)
        .unwrap_or_default()
        .trim()
        .to_owned();
    if overrides.contains([';', '\n', '&', '|']) {
        notes.push(format!(
            "engine.provider.launcher.overrides {overrides:?}: holds shell commands, not launcher options; not carried (see `template` for a custom block script)"
        ));
        overrides.clear();
    }
    match type_of(m) {
        Some("SrunLauncher") => {
            p.launcher = Some(Launcher::Srun);
            p.launcher_options = overrides;
        }
        Some("MpiExecLauncher") => {
            p.launcher = Some(Launcher::Mpiexec);
            let bind = get(m, "bind_cmd").and_then(string).unwrap_or_else(|| "--bind-to".into());
            p.launcher_options = format!("{bind} none {overrides}").trim().to_owned();
        }
        Some("SimpleLauncher" | "SingleNodeLauncher") => p.launcher = Some(Launcher::None),
        other => notes.push(format!(
            "engine.provider.launcher type {}: no Ferry launcher (srun, mpiexec, pbsdsh, none); the default is used",
            other.unwrap_or("?")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/globus")
            .join(name)
    }

    /// A copy of a sample with its `{{ VARIABLES }}` filled, as a user's file would be.
    fn filled(name: &str, dir: &Path) -> PathBuf {
        let text = std::fs::read_to_string(sample(name)).unwrap();
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("{{") {
            let end = at + rest[at..].find("}}").unwrap();
            out.push_str(&rest[..at]);
            out.push_str(&format!("\"{}-value\"", rest[at + 2..end].trim().to_lowercase()));
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        let path = dir.join(name);
        std::fs::write(&path, out).unwrap();
        path
    }

    #[test]
    fn a_slurm_endpoint_with_srun_and_an_interface_is_carried_over() {
        let dir = tempfile::tempdir().unwrap();
        let i = import(&filled("slurm-srun.yaml", dir.path())).unwrap();
        let p = &i.provider;
        assert_eq!(p.kind, ProviderKind::Slurm);
        assert_eq!(i.address_interface.as_deref(), Some("ib0"));
        assert_eq!(p.partition.as_deref(), Some("short"));
        assert_eq!(p.account.as_deref(), Some("account-value"));
        assert_eq!(
            (p.nodes_per_block, p.init_blocks, p.max_blocks),
            (Some(2), Some(0), Some(3))
        );
        assert_eq!(
            p.walltime.unwrap().as_secs(),
            900,
            "YAML 1.1's sexagesimal 00:15:00"
        );
        assert_eq!(p.launcher, Some(Launcher::Srun));
        assert_eq!(p.launcher_options, "--cpus-per-task 64");
        assert_eq!(p.cmd_timeout, Some(Seconds::secs(60)));
        assert!(p.exclusive, "Parsl's Slurm default");
        assert!(p.check().is_empty(), "{:?}", p.check());
    }

    #[test]
    fn a_pbs_endpoint_with_mpiexec_is_carried_over_and_select_options_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let i = import(&filled("pbs-mpiexec.yaml", dir.path())).unwrap();
        let p = &i.provider;
        assert_eq!(p.kind, ProviderKind::Pbs);
        assert_eq!(i.address_interface.as_deref(), Some("bond0"));
        assert_eq!(p.queue.as_deref(), Some("prod-small"));
        assert_eq!(p.cores_per_node, Some(64));
        assert_eq!(p.max_workers_per_node, Some(8));
        assert_eq!(p.launcher, Some(Launcher::Mpiexec));
        assert_eq!(p.launcher_options, "--cpu-bind none --depth=32 --ppn 1");
        assert_eq!(p.scheduler_options, "#PBS -l filesystems=home:scratch");
        assert_eq!(p.walltime.unwrap().as_secs(), 5400);
        assert!(
            i.not_carried.iter().any(|n| n.contains("select_options")),
            "{:?}",
            i.not_carried
        );
        assert!(p.check().is_empty(), "{:?}", p.check());
    }

    #[test]
    fn a_template_next_to_a_v4_config_is_read_and_its_variables_named() {
        let i = import(&sample("v4")).unwrap();
        assert_eq!(i.provider.kind, ProviderKind::Local);
        assert_eq!(i.provider.max_workers_per_node, Some(2));
        assert!(i.source.ends_with("user_config_template.yaml.j2"));
        let notes = i.not_carried.join("\n");
        assert!(notes.contains("worker_init"), "{notes}");
        assert!(notes.contains("idle_heartbeats_soft"), "{notes}");
    }

    #[test]
    fn an_mpi_engine_keeps_its_provider_and_says_what_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let i = import(&filled("mpi-engine.yaml", dir.path())).unwrap();
        assert_eq!(i.provider.kind, ProviderKind::Slurm);
        assert_eq!(
            i.provider.launcher, None,
            "a single-node launcher on four nodes: srun instead"
        );
        assert!(
            i.not_carried.iter().any(|n| n.contains("GlobusMPIEngine")),
            "{:?}",
            i.not_carried
        );
    }

    #[test]
    fn a_provider_ferry_lacks_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = import(&filled("kubernetes.yaml", dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("KubernetesProvider"), "{err}");
    }

    #[test]
    fn scaling_settings_and_gpus_are_carried_over() {
        let dir = tempfile::tempdir().unwrap();
        let i = import(&filled("job-status-kwargs.yaml", dir.path())).unwrap();
        let p = &i.provider;
        assert_eq!(p.idle_timeout, Some(Seconds::secs(300)));
        assert_eq!(p.strategy_period, Some(Seconds::secs(10)));
        assert!(!p.exclusive);
        assert_eq!(p.scheduler_options, "#SBATCH --gpus-per-node=4");
        let i = import(&filled("launcher-shell-hack.yaml", dir.path())).unwrap();
        assert_eq!(i.provider.launcher_options, "");
        assert!(
            i.not_carried.iter().any(|n| n.contains("shell commands")),
            "{:?}",
            i.not_carried
        );
    }

    #[test]
    fn public_and_allowed_functions_are_carried_over_and_a_bad_id_is_named() {
        let i = import(&sample("restricted.yaml")).unwrap();
        assert!(i.public);
        let allowed: Vec<String> = i
            .allowed_functions
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            allowed,
            [
                "8a2d1b4c-5e6f-4a7b-9c8d-0e1f2a3b4c5d",
                "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "allowed_functions: [not-an-id]\nengine:\n  provider:\n    type: LocalProvider\n",
        )
        .unwrap();
        let e = import(&bad).unwrap_err().to_string();
        assert!(e.contains("not-an-id"), "{e}");
    }

    #[test]
    fn every_sample_either_imports_to_a_valid_config_or_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(sample("")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !name.ends_with(".yaml") {
                continue;
            }
            println!("{name}");
            match import(&filled(&name, dir.path())) {
                Ok(i) => assert!(i.provider.check().is_empty(), "{name}: {:?}", i.provider.check()),
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("no Ferry provider") || e.contains("no `engine`"),
                        "{name}: {e}"
                    )
                }
            }
        }
    }
}
