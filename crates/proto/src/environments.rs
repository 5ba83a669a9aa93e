//! Task environments as an endpoint hands them to its workers: the JSON of
//! `FERRY_ENVIRONMENTS` in the managers' environment (set from the endpoint's
//! `[provider.environments.<name>]` tables; docs/scheduling.md#task-environments).
//!
//! A task that names an environment runs in a Python host started for it: its
//! interpreter, with its variables, after its setup lines, under its launch command.
//! A worker keeps one host; a task of another environment replaces an idle one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The variable the workers read their environments from.
pub const VARIABLE: &str = "FERRY_ENVIRONMENTS";

/// What a Python host of one environment is started with, and when it is replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEnvironment {
    /// The interpreter (a venv's or conda environment's `bin/python`).
    pub python: String,
    /// Variables the host starts with, besides the worker's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Shell lines run (`/bin/sh`) before the interpreter starts, in the same shell
    /// (`module load`, `source activate`): what they export, the host has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    /// A command the interpreter runs under, as shell words (`apptainer exec
    /// torch.sif`, `numactl --cpunodebind=0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<String>,
    /// Replace a host after this many tasks (0: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recycle_tasks: u64,
    /// Replace a host once it has been up this many seconds (0: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recycle_secs: u64,
    /// Replace a host whose memory (RSS) passes this many MiB after a task (0: never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recycle_rss_mb: u64,
    /// Replace an idle host once no task of its environment is left at its endpoint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recycle_unreferenced: bool,
    /// Replace a host once no task of a session (batch) it ran is left at its endpoint,
    /// so nothing a session leaves in it reaches another session's tasks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recycle_session: bool,
}

impl HostEnvironment {
    /// The command line that runs its interpreter with `args`: the interpreter itself,
    /// or, with setup lines or a launch command, `/bin/sh` running the setup and then
    /// `exec`ing the launch command and the interpreter (so the interpreter keeps the
    /// shell's pid and signals). Its `env` is the caller's to set.
    pub fn argv(&self, args: &[&str]) -> Vec<String> {
        let args = args.iter().map(|a| (*a).to_owned());
        if self.setup.is_none() && self.launch.is_none() {
            return std::iter::once(self.python.clone()).chain(args).collect();
        }
        let script = format!(
            "{}\nexec {} \"$0\" \"$@\"",
            self.setup.as_deref().unwrap_or(""),
            self.launch.as_deref().unwrap_or("")
        );
        ["/bin/sh".to_owned(), "-c".to_owned(), script, self.python.clone()]
            .into_iter()
            .chain(args)
            .collect()
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Environments by name.
pub type Environments = BTreeMap<String, HostEnvironment>;

/// Reads `FERRY_ENVIRONMENTS`' JSON; the error says what is wrong with it.
pub fn parse(json: &str) -> Result<Environments, String> {
    if json.trim().is_empty() {
        return Ok(Environments::new());
    }
    let environments: Environments =
        serde_json::from_str(json).map_err(|e| format!("{VARIABLE} is not valid: {e}"))?;
    if let Some(name) = environments.keys().find(|n| !crate::messages::is_tag(n)) {
        return Err(format!(
            "{VARIABLE}: {name:?} is not an environment name (1 to 64 letters, digits, `_`, `-`, `.`)"
        ));
    }
    if let Some((name, _)) = environments.iter().find(|(_, e)| e.python.trim().is_empty()) {
        return Err(format!("{VARIABLE}: environment {name:?} has no python"));
    }
    Ok(environments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_read_back_and_bad_ones_are_named() {
        let mut envs = Environments::new();
        envs.insert(
            "torch".into(),
            HostEnvironment {
                python: "/opt/torch/bin/python".into(),
                env: [("OMP_NUM_THREADS".to_owned(), "4".to_owned())].into(),
                setup: Some("module load cuda".into()),
                recycle_tasks: 32,
                ..Default::default()
            },
        );
        let json = serde_json::to_string(&envs).unwrap();
        assert_eq!(parse(&json).unwrap(), envs);
        assert!(parse("").unwrap().is_empty());
        assert!(
            parse("{\"a b\": {\"python\": \"p\"}}")
                .unwrap_err()
                .contains("\"a b\"")
        );
        assert!(
            parse("{\"a\": {\"python\": \" \"}}")
                .unwrap_err()
                .contains("no python")
        );
        assert!(
            parse("{\"a\": {\"python\": \"p\", \"pyton\": 1}}")
                .unwrap_err()
                .contains("pyton")
        );
        assert!(parse("[").unwrap_err().contains(VARIABLE));
    }

    #[test]
    fn a_host_runs_its_interpreter_or_a_shell_that_sets_up_and_execs_it() {
        let mut e = HostEnvironment {
            python: "/p/python".into(),
            ..Default::default()
        };
        assert_eq!(e.argv(&["-m", "ferry.host"]), ["/p/python", "-m", "ferry.host"]);
        e.setup = Some("module load x".into());
        e.launch = Some("env A=1".into());
        assert_eq!(
            e.argv(&["-c", "print(1)"]),
            [
                "/bin/sh",
                "-c",
                "module load x\nexec env A=1 \"$0\" \"$@\"",
                "/p/python",
                "-c",
                "print(1)"
            ]
        );
    }
}
