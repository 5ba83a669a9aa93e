//! `[provider.environments.<name>]`: the task environments an endpoint's workers run
//! Python tasks in (docs/scheduling.md#task-environments).
//!
//! ```toml
//! [provider.environments.torch]
//! python = "/opt/envs/torch/bin/python"   # needs Ferry's SDK installed
//! env = { OMP_NUM_THREADS = "4" }
//! setup = "module load cuda/12"
//! recycle_after_tasks = 32
//! recycle_when_unreferenced = true
//! recycle_when_session_completes = true
//! ```
//!
//! They reach the workers as `FERRY_ENVIRONMENTS` ([`ferry_proto::environments`]).

use std::collections::BTreeMap;

use ferry_proto::environments::HostEnvironment;
use serde::{Deserialize, Serialize};

use super::provider::{Problem, ProviderConfig, problem};
use super::values::Seconds;

/// One task environment. Unknown keys are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// Its interpreter: a virtualenv's or conda environment's `bin/python`, with Ferry's
    /// SDK installed (default: `provider.python`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// Variables its Python hosts start with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Shell lines run before its interpreter starts, in the same shell (`module load`,
    /// `source activate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    /// A command its interpreter runs under, as shell words (`apptainer exec
    /// /images/torch.sif`): a container where apptainer or podman is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<String>,
    /// Replace its host after this many tasks (default: `provider.recycle_after_tasks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle_after_tasks: Option<u64>,
    /// Replace its host once it has been up this long (default: `provider.recycle_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle_after: Option<Seconds>,
    /// Replace its host when its memory passes this many MiB after a task (default:
    /// `provider.recycle_above_rss_mb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle_above_rss_mb: Option<u64>,
    /// Replace its idle hosts once no task of it is left at the endpoint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recycle_when_unreferenced: bool,
    /// Replace a host of it once a session (batch) whose tasks it ran completes at the
    /// endpoint (no task of it left there), before it runs another task.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recycle_when_session_completes: bool,
}

impl EnvironmentConfig {
    /// What its hosts start with, the provider's settings filling what it leaves out.
    pub fn resolve(&self, provider: &ProviderConfig) -> HostEnvironment {
        HostEnvironment {
            python: self.python.clone().unwrap_or_else(|| provider.python.clone()),
            env: self.env.clone(),
            setup: self.setup.clone(),
            launch: self.launch.clone(),
            recycle_tasks: self
                .recycle_after_tasks
                .or(provider.recycle_after_tasks)
                .unwrap_or(0),
            recycle_secs: self
                .recycle_after
                .or(provider.recycle_after)
                .map_or(0, |t| t.0.as_secs().max(1)),
            recycle_rss_mb: self
                .recycle_above_rss_mb
                .or(provider.recycle_above_rss_mb)
                .unwrap_or(0),
            recycle_unreferenced: self.recycle_when_unreferenced,
            recycle_session: self.recycle_when_session_completes,
        }
    }

    /// What is wrong with environment `name`: its name, an empty or multi-line
    /// interpreter or launch command, a variable name the shell cannot hold.
    pub fn check(&self, name: &str) -> Vec<Problem> {
        let key = |field: &str| format!("environments.{name}.{field}");
        let mut problems = Vec::new();
        if !ferry_proto::messages::is_tag(name) {
            problems.push(problem(
                &format!("environments.{name}"),
                "is not an environment name (1 to 64 letters, digits, `_`, `-`, `.`)",
            ));
        }
        for (field, value) in [("python", &self.python), ("launch", &self.launch)] {
            match value {
                Some(v) if v.trim().is_empty() => {
                    problems.push(problem(&key(field), "is empty; leave it out instead"))
                }
                Some(v) if v.chars().any(char::is_control) => {
                    problems.push(problem(
                        &key(field),
                        "must be one line (no newlines or control characters)",
                    ));
                }
                _ => {}
            }
        }
        let variable = |k: &str| {
            k.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if let Some(k) = self.env.keys().find(|k| !variable(k)) {
            problems.push(problem(
                &key("env"),
                format!("{k:?} is not a variable name (letters, digits and `_`, not starting with a digit)"),
            ));
        }
        problems
    }
}

impl ProviderConfig {
    /// The task environments as the workers get them (`FERRY_ENVIRONMENTS`).
    pub fn host_environments(&self) -> ferry_proto::environments::Environments {
        self.environments
            .iter()
            .map(|(name, e)| (name.clone(), e.resolve(self)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(toml: &str) -> ProviderConfig {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn an_environment_takes_what_it_leaves_out_from_the_provider() {
        let p = provider(
            "python = \"/usr/bin/python3\"\nrecycle_after_tasks = 10\n\
             [environments.torch]\npython = \"/opt/torch/bin/python\"\nenv = { OMP_NUM_THREADS = \"4\" }\n\
             recycle_after = \"1m\"\nrecycle_when_unreferenced = true\n\
             [environments.plain]\n",
        );
        let envs = p.host_environments();
        let torch = &envs["torch"];
        assert_eq!(torch.python, "/opt/torch/bin/python");
        assert_eq!(torch.env["OMP_NUM_THREADS"], "4");
        assert_eq!(
            (
                torch.recycle_tasks,
                torch.recycle_secs,
                torch.recycle_unreferenced
            ),
            (10, 60, true)
        );
        assert_eq!(envs["plain"].python, "/usr/bin/python3");
        let json: Vec<_> = p
            .manager_env()
            .into_iter()
            .filter(|(k, _)| *k == "FERRY_ENVIRONMENTS")
            .collect();
        assert_eq!(ferry_proto::environments::parse(&json[0].1).unwrap(), envs);
        assert!(p.check().is_empty(), "{:?}", p.check());
    }

    #[test]
    fn a_bad_environment_is_named_with_what_is_wrong() {
        let p = provider(
            "[environments.\"a b\"]\n[environments.x]\npython = \"\"\nenv = { \"1X\" = \"v\" }\nlaunch = \"a\\nb\"\n",
        );
        let problems: Vec<String> = p
            .check()
            .into_iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        for expected in [
            "provider.environments.a b: is not an environment name",
            "provider.environments.x.python: is empty",
            "provider.environments.x.launch: must be one line",
            "provider.environments.x.env: \"1X\" is not a variable name",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected} in {problems:?}"
            );
        }
        let typo = toml::from_str::<ProviderConfig>("[environments.x]\npyton = \"p\"\n").unwrap_err();
        assert!(typo.to_string().contains("pyton"), "{typo}");
    }
}
