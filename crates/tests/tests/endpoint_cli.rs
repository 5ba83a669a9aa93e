//! `ferry-endpoint` as a user drives it: `configure` (a commented file, or a Globus
//! Compute import; on an existing endpoint, only the settings given change), bad configs
//! refused by key and line, a Python without `ferry` refused at `start` (and a worker's
//! host dying at start saying why in the task's error), `check` naming a missing
//! scheduler, `start` detached saying where it logs, `logs`, `status` and `list` telling
//! the process from the service's view, errors as their causes without a backtrace,
//! `delete` deregistering (and refusing while tasks wait).

use std::path::Path;
use std::process::{Command, Output};

use std::time::Duration;

use ferry_tests::{Part, Stack, bin_dir, json_args, python, python_source, repo_root};
use serde_json::{Value, json};

/// `ferry-endpoint ARGS` with `FERRY_HOME` at `home` and nothing else of a stack.
fn endpoint(home: &Path, args: &[&str]) -> Output {
    Command::new(bin_dir().join("ferry-endpoint"))
        .args(args)
        .env("FERRY_HOME", home)
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_URL")
        .env_remove("FERRY_PYTHON")
        .output()
        .expect("ferry-endpoint")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn configure_writes_a_commented_file_for_the_provider_that_reads_back() {
    let home = tempfile::tempdir().unwrap();
    let out = endpoint(
        home.path(),
        &[
            "configure",
            "hpc",
            "--provider",
            "slurm",
            "--partition",
            "debug",
            "--walltime",
            "02:00:00",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let file = std::fs::read_to_string(home.path().join("endpoints/hpc/config.toml")).unwrap();
    assert!(file.contains("kind = \"slurm\""), "{file}");
    assert!(
        file.contains("partition = \"debug\"    # Slurm partition"),
        "{file}"
    );
    assert!(file.contains("walltime = \"02:00:00\""), "{file}");
    assert!(
        file.contains("# worker_init ="),
        "every setting is listed: {file}"
    );
    assert!(!file.contains("queue"), "no PBS setting in a Slurm file: {file}");
    let again = endpoint(home.path(), &["configure", "hpc", "--provider", "pbs"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("--force"), "{}", text(&again));
}

#[test]
fn a_bad_config_is_refused_at_start_naming_the_key_and_its_line() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("endpoints/ep");
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "url = \"http://x\"\n[provider]\nkind = \"slurm\"\npartion = \"debug\"\n",
            &["partion", "line 4"][..],
        ),
        (
            "url = \"http://x\"\n[provider]\nkind = \"slurm\"\nmax_blocks = \"two\"\n",
            &["max_blocks", "line 4"],
        ),
        (
            "url = \"http://x\"\n[provider]\nkind = \"slurm\"\nmin_blocks = 3\nmax_blocks = 1\n",
            &["line 5: provider.max_blocks", "min_blocks"],
        ),
        (
            "url = \"http://x\"\n[provider]\nkind = \"pbs\"\npartition = \"debug\"\n",
            &["line 4: provider.partition", "queue"],
        ),
        (
            "url = \"http://x\"\n[provider]\nkind = \"slurm\"\nwalltime = \"soon\"\n",
            &["walltime", "line 4", "HH:MM:SS"],
        ),
        (
            "url = \"http://x\"\n[provider]\nkind = \"k8s\"\n",
            &["k8s", "line 3"],
        ),
    ];
    for (config, wanted) in cases {
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let out = endpoint(home.path(), &["start", "ep", "--foreground"]);
        let said = text(&out);
        assert!(!out.status.success(), "{config}: started anyway");
        assert!(!said.contains("panicked"), "{said}");
        for w in wanted {
            assert!(said.contains(w), "{config}: {w:?} not in {said}");
        }
    }
}

#[test]
fn check_names_the_scheduler_commands_that_are_missing() {
    let home = tempfile::tempdir().unwrap();
    let out = endpoint(home.path(), &["configure", "hpc", "--provider", "slurm"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new(bin_dir().join("ferry-endpoint"))
        .args(["check", "hpc"])
        .env("FERRY_HOME", home.path())
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not on PATH: sbatch, squeue, scancel"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_unwritable_home_is_a_clear_error() {
    let out = endpoint(Path::new("/dev/null/ferry"), &["configure", "ep"]);
    let said = text(&out);
    assert!(!out.status.success());
    assert!(
        said.contains("cannot create /dev/null/ferry/endpoints/ep"),
        "{said}"
    );
    assert!(!said.contains("panicked"), "{said}");
}

#[test]
fn a_globus_compute_config_is_imported_and_what_is_left_behind_is_listed() {
    let home = tempfile::tempdir().unwrap();
    let source = tempfile::tempdir().unwrap();
    let sample = repo_root().join("crates/endpoint/tests/data/globus/pbs-mpiexec.yaml");
    let filled = std::fs::read_to_string(sample)
        .unwrap()
        .replace("{{ ACCOUNT }}", "myproject")
        .replace(
            "{{ COMMAND }}",
            "\"module use /soft/modulefiles; conda activate\"",
        );
    std::fs::write(source.path().join("config.yaml"), filled).unwrap();
    let out = endpoint(
        home.path(),
        &[
            "configure",
            "cluster",
            "--from-globus",
            source.path().to_str().unwrap(),
        ],
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("select_options"),
        "what is left behind is said: {said}"
    );
    let file = std::fs::read_to_string(home.path().join("endpoints/cluster/config.toml")).unwrap();
    for line in [
        "kind = \"pbs\"",
        "queue = \"prod-small\"",
        "account = \"myproject\"",
        "address_interface = \"bond0\"",
        "launcher = \"mpiexec\"",
        "max_blocks = 4",
        "worker_init = \"module use /soft/modulefiles; conda activate\"",
    ] {
        assert!(file.contains(line), "{line} in {file}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_refuses_while_tasks_wait_for_the_endpoint_and_removes_nothing() {
    let mut stack = Stack::start().await;
    let id = stack.endpoint_id.unwrap();
    stack.stop(Part::Endpoint);
    // A task for the stopped endpoint waits in its queue: deleting would drop it.
    let f = stack.register("shell", "echo", "echo hi").await;
    let body = json!({"endpoint_id": id, "tasks": [{"function_id": f, "payload": "{}"}]});
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 200, "{answer}");
    let task: ferry_proto::TaskId = answer["task_ids"][0].as_str().unwrap().parse().unwrap();
    stack
        .wait_until(
            Duration::from_secs(30),
            "the task waits in the endpoint's queue",
            || async { stack.task(task).await.status == "waiting-for-ep" },
        )
        .await;
    let out = stack.endpoint_cli(&["delete", "ep"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("still holds tasks"), "{}", text(&out));
    assert!(
        stack.endpoint_dir().join("config.toml").exists(),
        "nothing removed"
    );
    let (status, _): (u16, Value) = stack.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(status, 200, "still registered");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_stops_and_deregisters_an_endpoint_and_removes_its_directory() {
    let stack = Stack::start().await;
    let id = stack.endpoint_id.unwrap();
    // `delete` stops the running endpoint itself (the harness started it in the
    // foreground, with its pid file, as `start` does).
    let out = stack.endpoint_cli(&["delete", "ep"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("deregistered endpoint"), "{}", text(&out));
    assert!(!stack.endpoint_dir().exists());
    let (status, _): (u16, Value) = stack.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(status, 404);
    let f = stack.register("shell", "echo", "echo hi").await;
    let body = json!({"endpoint_id": id, "tasks": [{"function_id": f, "payload": "{}"}]});
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 404, "no task for a deleted endpoint: {answer}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_on_its_way_to_an_endpoint_deleted_meanwhile_fails_saying_so() {
    let mut stack = Stack::start().await;
    let id = stack.endpoint_id.unwrap();
    stack.stop(Part::Endpoint);
    // With the forwarder down the task is accepted but not yet in the endpoint's queue,
    // so the delete goes through; the forwarder then finds the endpoint gone.
    stack.stop(Part::Forwarder);
    let f = stack.register("shell", "echo", "echo hi").await;
    let body = json!({"endpoint_id": id, "tasks": [{"function_id": f, "payload": "{}"}]});
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 200, "{answer}");
    let task: ferry_proto::TaskId = answer["task_ids"][0].as_str().unwrap().parse().unwrap();
    let out = stack.endpoint_cli(&["delete", "ep"]);
    assert!(out.status.success(), "{}", text(&out));
    stack.start_part(Part::Forwarder);
    let doc = stack.wait_done(task, Duration::from_secs(30)).await;
    assert_eq!(doc.status, "failed");
    let why = doc.exception.unwrap_or_default();
    assert!(why.contains(&format!("endpoint {id} was deleted")), "{why}");
    stack.shutdown().await;
}

/// An executable `python` in `dir` running `script` (a shell script's body).
fn fake_python(dir: &Path, script: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("python");
    std::fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// A real interpreter that cannot see the ferry package (`-I -S`: no PYTHONPATH, no
/// site-packages).
fn python_without_ferry(dir: &Path) -> String {
    fake_python(dir, "exec python3 -I -S \"$@\"\n")
}

#[test]
fn start_refuses_a_python_without_ferry_naming_it_the_cause_and_the_fix() {
    let home = tempfile::tempdir().unwrap();
    let bare = python_without_ferry(home.path());
    let out = endpoint(
        home.path(),
        &[
            "configure",
            "ep",
            "--url",
            "http://127.0.0.1:1",
            "--python",
            &bare,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    for start in [&["start", "ep", "--foreground"][..], &["start", "ep"]] {
        let out = endpoint(home.path(), start);

        let said = text(&out);
        assert!(!out.status.success(), "{start:?} started: {said}");
        assert!(said.contains(&bare), "{start:?} names the interpreter: {said}");
        assert!(
            said.contains("No module named 'ferry'"),
            "{start:?} gives the cause: {said}"
        );
        assert!(
            said.contains("ferry-endpoint configure ep --python PATH"),
            "{start:?} says how to fix it: {said}"
        );
        let dir = home.path().join("endpoints/ep");
        assert!(!dir.join("endpoint.pid").exists(), "{start:?}: nothing started");
        assert!(!dir.join("endpoint.log").exists(), "{start:?}: nothing started");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_host_that_dies_at_start_puts_its_stderr_in_the_tasks_error() {
    let mut stack = Stack::start_without_endpoint().await;
    // It passes `start`'s check (`-c "import ferry, dill"` goes to the real one), and
    // dies as the worker starts its host, as a broken environment would.
    let python = fake_python(
        stack.dir.path(),
        &format!(
            "if [ \"$1\" = -c ]; then exec {} \"$@\"; fi\n\
             echo 'Traceback (most recent call last):' >&2\n\
             echo \"ImportError: libpython-test.so: cannot open shared object file\" >&2\n\
             exit 1\n",
            python()
        ),
    );
    stack
        .start_endpoint_with(&format!(
            "[provider]\nkind = \"local\"\nmax_workers_per_node = 1\npython = \"{python}\"\n"
        ))
        .await;
    let f = stack
        .register(
            "python",
            "identity",
            &python_source("identity", "def identity(x):\n    return x\n"),
        )
        .await;

    let task = stack.submit(&[(&f, &json_args(&json!([1])))]).await[0];

    let doc = stack.wait_done(task, Duration::from_secs(60)).await;
    assert_eq!(doc.status, "failed");
    let why = doc.exception.unwrap_or_default();
    assert!(why.contains("the Python host exited (exit code 1)"), "{why}");
    assert!(
        why.contains("ImportError: libpython-test.so: cannot open shared object file"),
        "the host's stderr is in the error: {why}"
    );
    stack.shutdown().await;
}

#[test]
fn configure_on_an_existing_endpoint_changes_only_the_settings_given() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("endpoints/ep/config.toml");
    let out = endpoint(
        home.path(),
        &[
            "configure",
            "ep",
            "--url",
            "http://ferry.example:8000",
            "--workers",
            "3",
            "--python",
            "/usr/bin/python3",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    let out = endpoint(
        home.path(),
        &[
            "configure",
            "ep",
            "--python",
            "/venv/bin/python",
            "--set",
            "provider.init_blocks=0",
            "--set",
            "prefetch=16",
        ],
    );

    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("python: /usr/bin/python3 -> /venv/bin/python"),
        "{said}"
    );
    assert!(said.contains("init_blocks: (default) -> 0"), "{said}");
    assert!(said.contains("prefetch: 64 -> 16"), "{said}");
    assert!(!said.contains("url:"), "the URL did not change: {said}");
    let config = std::fs::read_to_string(&file).unwrap();
    for kept in [
        "url = \"http://ferry.example:8000\"",
        "max_workers_per_node = 3",
        "python = \"/venv/bin/python\"",
        "init_blocks = 0",
        "prefetch = 16",
        "# Ferry endpoint \"ep\"",
    ] {
        assert!(config.contains(kept), "{kept} in {config}");
    }

    // --unset removes a setting, so its default applies again; an unknown key is refused.
    let out = endpoint(home.path(), &["configure", "ep", "--unset", "prefetch"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("prefetch: 16 -> 64"), "{}", text(&out));
    let out = endpoint(home.path(), &["configure", "ep", "--unset", "provider.nope"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("provider.nope"), "{}", text(&out));
    let config = std::fs::read_to_string(&file).unwrap();
    assert!(
        config.contains("\n# prefetch = 16    # task messages"),
        "{config}"
    );
    assert!(config.contains("# token = "), "the comments stay: {config}");

    // A change that makes the config invalid is refused, and the file stays.
    let out = endpoint(home.path(), &["configure", "ep", "--set", "provider.workerz=2"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("workerz"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), config);

    // Nothing given: nothing to do, and the way to start over is named.
    let out = endpoint(home.path(), &["configure", "ep"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--force"), "{}", text(&out));

    // --force writes the file anew: what is not given goes back to its default.
    let out = endpoint(home.path(), &["configure", "ep", "--force", "--workers", "5"]);
    assert!(out.status.success(), "{}", text(&out));
    let config = std::fs::read_to_string(&file).unwrap();
    assert!(config.contains("url = \"http://127.0.0.1:8000\""), "{config}");
    assert!(config.contains("max_workers_per_node = 5"), "{config}");
}

#[test]
fn cli_errors_are_their_causes_without_a_backtrace() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("endpoints/ep");
    std::fs::create_dir_all(&dir).unwrap();
    // Registered once with a service that is gone now: deleting it must ask that service.
    std::fs::write(
        dir.join("config.toml"),
        "url = \"http://127.0.0.1:1\"\ntoken = \"fy_x\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("endpoint.json"),
        r#"{"endpoint_id":"01a24ad3-c228-705a-90cc-820478680347"}"#,
    )
    .unwrap();

    let out = Command::new(bin_dir().join("ferry-endpoint"))
        .args(["delete", "ep"])
        .env("FERRY_HOME", home.path())
        .env("RUST_BACKTRACE", "1")
        .env_remove("FERRY_TOKEN")
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: cannot reach the web-service at http://127.0.0.1:1/"),
        "{stderr}"
    );
    assert!(stderr.contains("\ncaused by: "), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert!(
        !stderr.lines().any(|l| l.trim_start().starts_with("0:")),
        "{stderr}"
    );

    // The services' binaries print their errors the same way (one shared exit).
    let out = Command::new(bin_dir().join("ferry-manager"))
        .args(["--endpoint", "127.0.0.1:1", "--workers", "1"])
        .env("RUST_BACKTRACE", "1")
        .env_remove("FERRY_ENDPOINT_CERT_SHA256")
        .env_remove("FERRY_MANAGER_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("error: "), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

/// `ferry-endpoint status NAME --json` of the stack's endpoint.
fn status_json(stack: &Stack) -> (Option<i32>, Value) {
    let out = stack.endpoint_cli(&["status", "ep", "--json"]);
    let doc =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&out)));
    (out.status.code(), doc)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_detached_endpoint_says_where_it_logs_and_status_tells_the_process_from_the_service() {
    let stack = Stack::start_without_endpoint().await;
    let out = stack.endpoint_cli(&[
        "configure",
        "ep",
        "--url",
        &stack.url,
        "--token",
        &stack.token,
        "--python",
        &python(),
        "--workers",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let log = stack.endpoint_dir().join("endpoint.log");

    // Registered by `configure`, never started: no process, and no heartbeat recorded.
    let (code, doc) = status_json(&stack);
    assert_eq!(code, Some(3), "{doc}");
    assert_eq!(doc["process"], "not-running", "{doc}");
    assert_eq!(doc["service"]["status"], "offline", "{doc}");
    assert_eq!(doc["service"]["last_heartbeat"], Value::Null, "{doc}");
    let said = text(&stack.endpoint_cli(&["status", "ep"]));
    assert!(said.contains("process:   not running"), "{said}");
    assert!(
        said.contains("service:   offline (no heartbeat recorded)"),
        "{said}"
    );

    // Detached: where it logs.
    let out = stack.endpoint_cli(&["start", "ep"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("logs: {}", log.display())),
        "{}",
        text(&out)
    );
    let running: Value =
        serde_json::from_slice(&std::fs::read(stack.endpoint_dir().join("running.json")).unwrap()).unwrap();
    let pid = running["pid"].as_u64().unwrap() as u32;
    let id = running["endpoint_id"].as_str().unwrap().to_owned();

    // Online, with a heartbeat and a manager, and the process running.
    stack
        .wait_until(
            Duration::from_secs(60),
            "status says online with a manager",
            || async {
                let doc = status_json(&stack).1;
                doc["service"]["status"] == "online" && doc["service"]["managers"] == 1
            },
        )
        .await;
    let (code, doc) = status_json(&stack);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["process"], "running", "{doc}");
    assert_eq!(doc["running"], true, "{doc}");
    assert_eq!(doc["pid"], pid, "{doc}");
    assert_eq!(doc["endpoint_id"], id.as_str(), "{doc}");
    assert_eq!(doc["python"], python().as_str(), "{doc}");
    assert_eq!(doc["url"], stack.url.as_str(), "{doc}");
    assert_eq!(doc["log"], log.display().to_string(), "{doc}");
    assert_eq!(doc["workers_per_node"], 1, "{doc}");
    assert_eq!(doc["service"]["workers"], 1, "{doc}");
    assert!(
        doc["service"]["heartbeat_age_secs"].as_f64().unwrap() < 60.0,
        "{doc}"
    );
    let out = stack.endpoint_cli(&["status", "ep"]);
    let said = text(&out);
    assert!(
        said.contains(&format!("process:   running (pid {pid})")),
        "{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with("service:   online (last heartbeat ") && l.ends_with(" s ago)")),
        "{said}"
    );
    assert!(said.contains(&format!("python:    {}", python())), "{said}");
    assert!(said.contains(&format!("log:       {}", log.display())), "{said}");
    assert!(!said.contains("Some("), "no Rust debug text: {said}");

    // `list`: the same facts, a row each.
    let out = stack.endpoint_cli(&["list"]);
    let said = text(&out);
    let row = said
        .lines()
        .find(|l| l.starts_with("ep "))
        .unwrap_or_else(|| panic!("{said}"));
    for fact in [
        format!("running (pid {pid})"),
        "online".into(),
        " s ago".into(),
        id.clone(),
    ] {
        assert!(row.contains(&fact), "{fact} in {row}");
    }
    let out = stack.endpoint_cli(&["list", "--json"]);
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all[0]["name"], "ep", "{all}");
    assert_eq!(all[0]["process"], "running", "{all}");
    assert_eq!(all[0]["service"]["status"], "online", "{all}");

    // `logs`: the end of the file, then what comes, as it comes.
    let out = stack.endpoint_cli(&["logs", "ep", "-n", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let whole = std::fs::read_to_string(&log).unwrap();
    let last3: Vec<&str> = whole
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(printed.lines().collect::<Vec<_>>(), last3);
    let follow_out = stack.dir.path().join("follow.out");
    let mut follow = Command::new(bin_dir().join("ferry-endpoint"))
        .args(["logs", "ep", "--follow", "-n", "0"])
        .env("FERRY_HOME", stack.dir.path().join("home"))
        .stdout(std::fs::File::create(&follow_out).unwrap())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(f, "a line written while logs --follow runs").unwrap();
    }
    stack
        .wait_until(
            Duration::from_secs(10),
            "logs --follow prints the new line",
            || async {
                std::fs::read_to_string(&follow_out)
                    .unwrap_or_default()
                    .contains("a line written while logs --follow runs")
            },
        )
        .await;
    assert!(follow.try_wait().unwrap().is_none(), "--follow keeps running");
    let _ = follow.kill();
    let _ = follow.wait();

    // Killed (its process group: the endpoint and its managers): the process is dead
    // and the file it left says so, whatever the service says.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    stack
        .wait_until(Duration::from_secs(10), "the endpoint is gone", || async {
            status_json(&stack).1["process"] == "dead"
        })
        .await;
    let (code, doc) = status_json(&stack);
    assert_eq!(code, Some(3), "{doc}");
    assert_eq!(
        (doc["running"].clone(), doc["pid"].clone()),
        (json!(false), json!(pid))
    );
    assert_eq!(doc["left"], "running.json", "{doc}");
    let said = text(&stack.endpoint_cli(&["status", "ep"]));
    assert!(
        said.contains(&format!("process:   dead (pid {pid}, left running.json)")),
        "{said}"
    );
    stack.shutdown().await;
}
