//! The workers' Python, tried before an endpoint starts: one that cannot import the
//! SDK (the workers' host is `python -m ferry.host`) or dill would fail every Python
//! task with "the Python host exited"; `start` refuses it instead, naming the
//! interpreter, the cause and the fix.

use std::process::Command;

use crate::config::{EndpointConfig, ProviderKind};

/// Runs `python -c "import ferry, dill"` with the interpreter the workers will run
/// (`provider.python`, or its default) in this process's environment, which local
/// managers and their workers inherit. Refused for a local endpoint; for Slurm and PBS,
/// whose workers run on compute nodes (after `worker_init`, which may load another
/// Python), a failure here is only a warning on stderr; a manual endpoint's managers
/// bring their own.
pub fn check_python(name: &str, config: &EndpointConfig) -> anyhow::Result<()> {
    let kind = config.provider.kind;
    if kind == ProviderKind::Manual {
        return Ok(());
    }
    let python = &config.provider.python;
    let Err(cause) = try_import(python) else {
        return Ok(());
    };
    let problem = format!("the workers' Python {python} cannot import ferry and dill: {cause}");
    let fix = format!(
        "install Ferry into it ({python} -m pip install ferry), or choose another: ferry-endpoint configure {name} --python PATH"
    );
    if kind.is_batch() {
        eprintln!(
            "warning: on this machine, {problem}; the compute nodes may see another Python (worker_init), else {fix}"
        );
        return Ok(());
    }
    anyhow::bail!("{problem}\n{fix}")
}

/// `Err(cause)`: the last line of the interpreter's stderr (`No module named 'ferry'`),
/// or why it could not run at all.
fn try_import(python: &str) -> Result<(), String> {
    let output = Command::new(python)
        .args(["-c", "import ferry, dill"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("it cannot be run: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
    Err(match last {
        Some(line) => line.trim().to_owned(),
        None => format!("it printed nothing ({})", output.status),
    })
}

/// What the workers' Python is (its version, dill's, the OS), for Globus Compute SDKs
/// to compare with theirs; `None` when it cannot say (it is checked at start anyway).
pub fn worker_env(python: &str) -> Option<ferry_proto::api::WorkerEnv> {
    environment_env(&ferry_proto::environments::HostEnvironment {
        python: python.to_owned(),
        ..Default::default()
    })
}

/// What a task environment's Python is, asked as its hosts start: its interpreter with
/// its variables, after its setup lines, under its launch command.
pub fn environment_env(
    environment: &ferry_proto::environments::HostEnvironment,
) -> Option<ferry_proto::api::WorkerEnv> {
    const ASK: &str = "import json, platform, dill; print(json.dumps({'python_version': platform.python_version(), \
                       'dill_version': dill.__version__, 'os': platform.platform()}))";
    let argv = environment.argv(&["-c", ASK]);
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    let output = command
        .envs(&environment.env)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_that_cannot_import_ferry_is_named_with_the_last_line_of_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("python");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'Traceback (most recent call last):' >&2\necho \"ModuleNotFoundError: No module named 'ferry'\" >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();

        let cause = try_import(fake.to_str().unwrap()).unwrap_err();

        assert_eq!(cause, "ModuleNotFoundError: No module named 'ferry'");
    }

    #[test]
    fn a_python_that_does_not_exist_says_it_cannot_run() {
        let cause = try_import("/nonexistent/python").unwrap_err();
        assert!(cause.starts_with("it cannot be run"), "{cause}");
    }
}
