//! `ferry-endpoint` as a user drives it: `configure` (a commented file, or a Globus
//! Compute import), bad configs refused by key and line, `check` naming a missing
//! scheduler, `status` listing blocks, `delete` deregistering (and refusing while tasks
//! wait).

use std::path::Path;
use std::process::{Command, Output};

use std::time::Duration;

use ferry_tests::{Part, Stack, bin_dir, repo_root};
use serde_json::{Value, json};

/// `ferry-endpoint ARGS` with `FERRY_HOME` at `home` and nothing else of a stack.
fn endpoint(home: &Path, args: &[&str]) -> Output {
    Command::new(bin_dir().join("ferry-endpoint"))
        .args(args)
        .env("FERRY_HOME", home)
        .env_remove("FERRY_TOKEN")
        .env_remove("FERRY_URL")
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
