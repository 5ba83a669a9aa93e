//! Applications: a registered spec (see the `ferry-app` crate) of typed inputs and up to
//! three phase scripts, `prolog`, `execute`, `epilog`, run in that order in the task's
//! run directory.
//!
//! The run directory holds, besides what the phases write:
//! - `<phase>.stdout`, `<phase>.stderr`: each phase's output, in full;
//! - `.ferry/<phase>`: the phase's script with its `@@NAME@@` markup filled in (values
//!   shell-quoted), `.ferry/env.sh`: the environment script (the application's, else the
//!   endpoint's `provider.app_env_script`), sourced before each phase,
//!   `.ferry/inputs.json`: the validated inputs;
//! - each file input, staged under its name (copied, or linked).
//!
//! A phase runs as `/bin/sh` (or, with a `#!` line, its own interpreter) with
//! `FERRY_RUN_DIR`, `FERRY_TASK_ID`, `FERRY_PHASE` and `FERRY_INPUT_<NAME>` set. It
//! succeeds when it exits 0; one that fails, is killed by a signal or runs past its own
//! walltime ends the run: later phases are skipped, except an `epilog` marked
//! `after_failure`. The task's walltime bounds the whole run (the task then times out).
//!
//! The result, success or failure, is one JSON document: `run_dir`, `phases` (each with
//! `name`, `state` (`succeeded`, `failed`, `timed_out`, `skipped`), `exit_status`,
//! `signal`, `reason`, `started_at`, `ended_at` (Unix seconds), and the last
//! `snippet_bytes` of its `stdout` and `stderr`), `outputs` (the files the spec's output
//! patterns match: `path`, `bytes`, `data`: the content in base64 while the files fit in
//! 6 MiB together) and `inputs`. A success carries it as its result; a
//! failure as its exception data, with a message naming the phase and why.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use bytes::Bytes;
use ferry_app::{AppSpec, Builtins, FileMode, FileSource, Inputs, Phase, PhaseName};
use ferry_proto::messages::Completion;
use serde_json::json;

use crate::shell::{Run, ShellOutcome};

/// The most output files listed in a result.
const MAX_OUTPUTS_LISTED: usize = 1000;
/// The most bytes of output files a result carries (base64 makes them 4/3 as large,
/// under the 10 MiB a result may be).
const OUTPUT_CONTENT_BYTES: u64 = 6 * 1024 * 1024;

/// Runs an application task (`task.template` is its spec, `task.payload` its inputs);
/// `None` when the task's walltime passed.
pub async fn run(task: Run<'_>) -> Option<ShellOutcome> {
    let spec = match AppSpec::parse(task.template) {
        Ok(spec) => spec,
        Err(e) => return Some(failure(format!("the application's spec is not valid: {e}"), None)),
    };
    let values = if task.payload.is_empty() {
        Ok(serde_json::Value::Object(Default::default()))
    } else {
        serde_json::from_slice(task.payload).map_err(|e| format!("the inputs are not JSON: {e}"))
    };
    let inputs = match values.map(|v| spec.validate(&v)) {
        Ok(Ok(inputs)) => inputs,
        Ok(Err(errors)) => {
            let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Some(failure(format!("invalid inputs: {}", all.join("; ")), None));
        }
        Err(e) => return Some(failure(e, None)),
    };
    let name = task.task_id.to_string();
    let dir = match task.dirs.create(&name) {
        Ok(dir) => dir,
        Err(e) => return Some(failure(e.to_string(), None)),
    };
    let outcome = run_in(&task, &spec, &inputs, &dir).await;
    task.dirs.finish(&name);
    outcome
}

/// What a phase came to.
struct PhaseRun {
    name: PhaseName,
    state: &'static str,
    exit_status: Option<i32>,
    signal: Option<String>,
    reason: Option<String>,
    started_at: f64,
    ended_at: f64,
    stdout: String,
    stderr: String,
}

impl PhaseRun {
    fn skipped(name: PhaseName) -> Self {
        Self {
            name,
            state: "skipped",
            exit_status: None,
            signal: None,
            reason: Some("an earlier phase failed".into()),
            started_at: 0.0,
            ended_at: 0.0,
            stdout: String::new(),
            stderr: String::new(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let times = self.state != "skipped";
        json!({
            "name": self.name.as_str(),
            "state": self.state,
            "exit_status": self.exit_status,
            "signal": self.signal,
            "reason": self.reason,
            "started_at": times.then_some(self.started_at),
            "ended_at": times.then_some(self.ended_at),
            "stdout": self.stdout,
            "stderr": self.stderr,
        })
    }
}

/// The run, in its directory `dir`.
async fn run_in(task: &Run<'_>, spec: &AppSpec, inputs: &Inputs, dir: &Path) -> Option<ShellOutcome> {
    let meta = dir.join(".ferry");
    let run_dir = dir.display().to_string();
    let task_id = task.task_id.to_string();
    let builtins = Builtins {
        run_dir: &run_dir,
        task_id: &task_id,
    };
    if let Err(e) = prepare(spec, inputs, dir, &meta, &builtins, task.env_script) {
        return Some(failure(
            format!("{e}\n[ferry: the run directory is kept: {run_dir}]"),
            None,
        ));
    }
    let mut env: Vec<(String, String)> = vec![
        ("FERRY_RUN_DIR".into(), run_dir.clone()),
        ("FERRY_TASK_ID".into(), task_id.clone()),
    ];
    env.extend(ferry_app::env_vars(inputs));
    let deadline = task.walltime.map(|w| Instant::now() + w);
    let mut phases: Vec<PhaseRun> = Vec::new();
    let mut failed: Option<String> = None;
    for (name, phase) in spec.phases() {
        let runs = failed.is_none() || (name == PhaseName::Epilog && phase.after_failure());
        if !runs {
            phases.push(PhaseRun::skipped(name));
            continue;
        }
        let setup = Setup {
            dir,
            env: &env,
            env_script: spec.env_script().is_some() || task.env_script.is_some(),
            snippet: spec.snippet_bytes(),
            spare: task.spare,
            task: task.task_id,
        };
        let Some(done) = run_phase(&setup, name, phase, deadline).await else {
            tracing::warn!(task_id = %task.task_id, phase = name.as_str(), "application run stopped at the task's walltime");
            return None;
        };
        if done.state != "succeeded" && failed.is_none() {
            let why = done.reason.clone().unwrap_or_default();
            let tail = tail_chars(&done.stderr, 2000);
            failed = Some(format!("application run failed in phase {name}: {why}\n{tail}"));
        }
        phases.push(done);
    }
    let doc = json!({
        "run_dir": run_dir,
        "phases": phases.iter().map(PhaseRun::to_json).collect::<Vec<_>>(),
        "outputs": outputs(dir, spec.outputs()),
        "inputs": inputs_record(inputs),
    });
    let body = Bytes::from(format!("11\n{doc}"));
    let (stdout, stderr) = last_phase_output(&phases);
    Some(match failed {
        None => ShellOutcome {
            completion: Completion::Success { result: body },
            stdout,
            stderr,
        },
        Some(why) => ShellOutcome {
            completion: Completion::Failure {
                traceback: format!("{why}\n[ferry: the run directory is kept: {run_dir}]"),
                exception: Some(body),
            },
            stdout,
            stderr,
        },
    })
}

/// The inputs as the run's record and `.ferry/inputs.json` show them: an uploaded file as
/// its name and size, not its content again (which could double a result's size).
fn inputs_record(inputs: &Inputs) -> serde_json::Value {
    let mut record = inputs.to_json();
    for (name, file) in inputs.files() {
        if let FileSource::Upload(data) = &file.source {
            // Base64's size, not a second decoding: 3 bytes per 4 characters, less padding.
            let padding = data.bytes().rev().take_while(|&b| b == b'=').count();
            let bytes = (data.len() / 4 * 3).saturating_sub(padding);
            record[name] = json!({"name": file.name, "uploaded_bytes": bytes});
        }
    }
    record
}

/// The task's stdout and stderr: the last phase that ran's snippets.
fn last_phase_output(phases: &[PhaseRun]) -> (String, String) {
    phases
        .iter()
        .rev()
        .find(|p| p.state != "skipped")
        .map(|p| (p.stdout.clone(), p.stderr.clone()))
        .unwrap_or_default()
}

/// Writes `.ferry/` (inputs, scripts) and stages the file inputs.
fn prepare(
    spec: &AppSpec,
    inputs: &Inputs,
    dir: &Path,
    meta: &Path,
    builtins: &Builtins<'_>,
    endpoint_env_script: Option<&str>,
) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("cannot write {what} in the run directory: {e}");
    std::fs::create_dir_all(meta).map_err(|e| io(".ferry/", e))?;
    std::fs::write(meta.join("inputs.json"), inputs_record(inputs).to_string())
        .map_err(|e| io(".ferry/inputs.json", e))?;
    let env_script = spec
        .render_env_script(inputs, builtins)
        .or_else(|| endpoint_env_script.map(str::to_owned));
    if let Some(text) = env_script {
        std::fs::write(meta.join("env.sh"), text).map_err(|e| io(".ferry/env.sh", e))?;
    }
    for (name, _) in spec.phases() {
        let text = spec
            .render(name, inputs, builtins)
            .expect("the spec has this phase");
        let path = meta.join(name.as_str());
        std::fs::write(&path, text).map_err(|e| io(&format!(".ferry/{name}"), e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io(&format!(".ferry/{name}"), e))?;
    }
    for (input, file) in inputs.files() {
        let target = dir.join(&file.name);
        let _ = std::fs::remove_file(&target); // an earlier attempt's copy
        match &file.source {
            FileSource::Path(source) => {
                let staged = match file.mode {
                    FileMode::Copy => std::fs::copy(source, &target).map(|_| ()),
                    FileMode::Link => std::os::unix::fs::symlink(source, &target),
                };
                staged.map_err(|e| {
                    format!(
                        "input '{input}': cannot {} {source} into the run directory: {e}",
                        file.mode.as_str()
                    )
                })?;
            }
            FileSource::Upload(data) => {
                let bytes = ferry_app::decode_upload(data)
                    .map_err(|e| format!("input '{input}': its content is not base64: {e}"))?;
                std::fs::write(&target, bytes).map_err(|e| {
                    format!(
                        "input '{input}': cannot write {} in the run directory: {e}",
                        file.name
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// What every phase of a run shares.
struct Setup<'a> {
    dir: &'a Path,
    env: &'a [(String, String)],
    env_script: bool,
    snippet: usize,
    spare: &'a [u32],
    task: ferry_proto::TaskId,
}

/// Runs one phase to its end, its own walltime, or the task's `deadline` (then `None`).
async fn run_phase(
    setup: &Setup<'_>,
    name: PhaseName,
    phase: &Phase,
    deadline: Option<Instant>,
) -> Option<PhaseRun> {
    let started_at = now_secs();
    let mut done = PhaseRun {
        name,
        state: "failed",
        exit_status: None,
        signal: None,
        reason: None,
        started_at,
        ended_at: started_at,
        stdout: String::new(),
        stderr: String::new(),
    };
    if let Some(problem) = phase.interpreter().and_then(interpreter_problem) {
        done.reason = Some(problem);
        return Some(done);
    }
    let out_path = setup.dir.join(format!("{name}.stdout"));
    let err_path = setup.dir.join(format!("{name}.stderr"));
    let files = std::fs::File::create(&out_path).and_then(|out| Ok((out, std::fs::File::create(&err_path)?)));
    let (out, err) = match files {
        Ok(files) => files,
        Err(e) => {
            done.reason = Some(format!("cannot write its output files: {e}"));
            return Some(done);
        }
    };
    let source = if setup.env_script {
        ". ./.ferry/env.sh\n"
    } else {
        ""
    };
    let exec = if phase.interpreter().is_some() {
        format!("exec ./.ferry/{name}")
    } else {
        format!("exec /bin/sh ./.ferry/{name}")
    };
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{source}{exec}"))
        .current_dir(setup.dir)
        .envs(setup.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("FERRY_PHASE", name.as_str())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            done.reason = Some(format!("cannot run /bin/sh: {e}"));
            return Some(done);
        }
    };
    let own = phase.walltime().map(|w| Instant::now() + w);
    let stop_at = match (own, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let status = match stop_at {
        None => Some(child.wait().await),
        Some(at) => tokio::time::timeout_at(at.into(), child.wait()).await.ok(),
    };
    if status.is_none() {
        let _ = child.kill().await;
    }
    // A phase's processes end with it, as a task's do.
    if ferry_proctree::has_children_besides(setup.spare) {
        crate::lifeline::end_tree(Some(setup.task), setup.spare);
    }
    done.ended_at = now_secs();
    done.stdout = tail_file(&out_path, setup.snippet);
    done.stderr = tail_file(&err_path, setup.snippet);
    // Stopped by the task's walltime (the run ends there), or by the phase's own.
    let by_task = match (own, deadline) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(own), Some(task)) => task <= own,
    };
    match status {
        None if by_task => return None,
        None => {
            done.state = "timed_out";
            let secs = phase.walltime_secs().unwrap_or_default();
            done.reason = Some(format!("ran past its walltime of {secs} s and was stopped"));
        }
        Some(Err(e)) => done.reason = Some(format!("cannot wait for it: {e}")),
        Some(Ok(status)) => {
            done.exit_status = status.code();
            done.signal = status.signal().map(signal_name);
            if status.success() {
                done.state = "succeeded";
            } else {
                done.reason = Some(match (status.code(), status.signal()) {
                    (Some(127), _) => {
                        "exited with status 127: a command (or its script's interpreter) was not found".into()
                    }
                    (Some(126), _) => {
                        "exited with status 126: a command (or its script's interpreter) could not be run"
                            .into()
                    }
                    (Some(code), _) => format!("exited with status {code}"),
                    (None, Some(sig)) => format!("was killed by {}", signal_name(sig)),
                    (None, None) => "ended without a status".into(),
                });
            }
        }
    }
    Some(done)
}

/// Why a `#!` interpreter cannot run the script, when it names an absolute path that is
/// not an executable file (`/usr/bin/env python3` is checked as `/usr/bin/env`).
fn interpreter_problem(interpreter: &str) -> Option<String> {
    let program = interpreter.split_whitespace().next()?;
    let path = Path::new(program);
    if !path.is_absolute() {
        return None;
    }
    match std::fs::metadata(path) {
        Err(_) => Some(format!("its script's interpreter {program} does not exist")),
        Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => Some(format!(
            "its script's interpreter {program} is not an executable file"
        )),
        Ok(_) => None,
    }
}

/// `SIGSEGV` for 11, `signal 64` for one without a name.
fn signal_name(signal: i32) -> String {
    crate::host::signal_name(signal).map_or_else(|| format!("signal {signal}"), str::to_owned)
}

/// The files under `dir` the output patterns match (relative paths, sizes), at most
/// [`MAX_OUTPUTS_LISTED`], each with its content (`data`, base64) while they fit in
/// [`OUTPUT_CONTENT_BYTES`] together: the result then travels through the data plane
/// like any large result. A file that does not fit has `data: null` and a `note`.
fn outputs(dir: &Path, patterns: &[String]) -> Vec<serde_json::Value> {
    let mut found: Vec<(PathBuf, u64)> = Vec::new();
    for pattern in patterns {
        let full = dir.join(pattern);
        let Ok(paths) = glob::glob(&full.to_string_lossy()) else {
            continue;
        };
        for path in paths.flatten() {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() || found.iter().any(|(p, _)| *p == path) {
                continue;
            }
            found.push((path, meta.len()));
            if found.len() >= MAX_OUTPUTS_LISTED {
                break;
            }
        }
    }
    let mut room = OUTPUT_CONTENT_BYTES;
    found
        .into_iter()
        .map(|(path, bytes)| {
            let relative = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
            let not_returned =
                |why: String| json!({"path": relative, "bytes": bytes, "data": null, "note": why});
            if bytes > room {
                return not_returned(format!(
                    "not returned: the outputs are over {} MiB together; the file stays in the run directory",
                    OUTPUT_CONTENT_BYTES >> 20
                ));
            }
            match std::fs::read(&path) {
                Ok(content) if content.len() as u64 <= room => {
                    use base64::Engine;
                    room -= content.len() as u64;
                    let data = base64::engine::general_purpose::STANDARD.encode(&content);
                    json!({"path": relative, "bytes": content.len(), "data": data})
                }
                Ok(_) => not_returned("not returned: it grew past the room left while being read".into()),
                Err(e) => not_returned(format!("not returned: cannot read it: {e}")),
            }
        })
        .collect()
}

/// The last `limit` bytes of a file, as text (cut at a character boundary).
fn tail_file(path: &Path, limit: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(limit as u64);
    if file.seek(SeekFrom::Start(from)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::with_capacity((len - from) as usize);
    let _ = file.take(limit as u64).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if from > 0 {
        format!("[ferry: {from} earlier bytes in the file]\n{text}")
    } else {
        text
    }
}

fn tail_chars(text: &str, n: usize) -> String {
    let skip = text.chars().count().saturating_sub(n);
    text.chars().skip(skip).collect()
}

fn now_secs() -> f64 {
    ferry_proto::time::now_micros() as f64 / 1e6
}

fn failure(message: String, exception: Option<Bytes>) -> ShellOutcome {
    ShellOutcome {
        completion: Completion::Failure {
            traceback: message,
            exception,
        },
        stdout: String::new(),
        stderr: String::new(),
    }
}
