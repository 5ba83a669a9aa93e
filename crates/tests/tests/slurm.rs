//! Endpoints on a real Slurm (the single-node cluster `scripts/lib/slurm.sh` starts):
//! blocks submitted with `sbatch` as tasks wait, managers on them connecting back,
//! blocks cancelled when idle, a block cancelled or ended at its walltime losing nothing
//! and charging nothing, a refused submission shown in the endpoint's status.
//!
//! Without Slurm these tests say so and pass, unless `FERRY_REQUIRE_SLURM=1` (as
//! `scripts/test` sets it, having started Slurm): then a missing Slurm fails them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_proto::TaskId;
use ferry_tests::{Part, Stack, python};
use serde_json::{Value, json};

/// True when Slurm answers; panics when it must and does not.
fn slurm_ready() -> bool {
    let up = std::process::Command::new("sinfo")
        .args(["-h", "-o", "%t"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !up {
        assert!(
            std::env::var("FERRY_REQUIRE_SLURM").is_err(),
            "FERRY_REQUIRE_SLURM is set but Slurm does not answer (scripts/lib/slurm.sh starts it)"
        );
        eprintln!("no Slurm here: skipping (scripts/test starts one)");
    }
    up
}

/// The `[provider]` table of a Slurm endpoint for these tests, with `extra` lines.
fn slurm_config(extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n\n[provider]\nkind = \"slurm\"\nmax_workers_per_node = 2\n\
         strategy_period = \"1s\"\npoll_period = \"2s\"\npython = \"{}\"\n{extra}",
        python()
    )
}

/// The blocks of the endpoint's report.
fn blocks(stack: &Stack) -> Vec<Value> {
    stack.blocks()["blocks"].as_array().cloned().unwrap_or_default()
}

/// The job ids of the endpoint's blocks.
fn job_ids(stack: &Stack) -> Vec<String> {
    blocks(stack)
        .iter()
        .filter_map(|b| b["job_id"].as_str().map(str::to_owned))
        .collect()
}

/// What squeue says of these jobs (finished ones included while Slurm remembers them).
fn squeue(jobs: &[String]) -> HashMap<String, String> {
    if jobs.is_empty() {
        return HashMap::new();
    }
    let out = std::process::Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%i|%T", "-j", &jobs.join(",")])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(id, state)| (id.to_owned(), state.to_owned()))
        .collect()
}

fn alive_in_slurm(jobs: &[String]) -> usize {
    squeue(jobs)
        .values()
        .filter(|s| matches!(s.as_str(), "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING"))
        .count()
}

/// Cancels whatever jobs the stack's endpoint left (a failing test must not leave
/// blocks holding the node).
struct CancelOnDrop(Vec<String>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = std::process::Command::new("scancel").args(&self.0).output();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slurm_endpoint_scales_out_with_waiting_tasks_runs_them_and_scales_in_when_idle() {
    if !slurm_ready() {
        return;
    }
    let mut stack = Stack::start_without_endpoint().await;
    stack
        .start_endpoint_with(&slurm_config(
            "init_blocks = 0\nmax_blocks = 2\nidle_timeout = \"5s\"\nwalltime = \"00:10:00\"\n",
        ))
        .await;
    let mut cleanup = CancelOnDrop(Vec::new());
    assert!(
        job_ids(&stack).is_empty(),
        "init_blocks = 0: no block before a task"
    );

    let body = stack.identity_session(1000).await;
    let (status, answer): (u16, Value) = stack.post("/v1/sessions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let session = answer["sessions"][0]["session_id"].as_str().unwrap().to_owned();

    // Blocks appear in squeue, never more than two at once, and the session finishes.
    let mut seen_in_slurm = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let jobs = job_ids(&stack);
        cleanup.0.clone_from(&jobs);
        let alive = alive_in_slurm(&jobs);
        assert!(
            alive <= 2,
            "max_blocks = 2, but {alive} blocks are alive: {:?}",
            squeue(&jobs)
        );
        seen_in_slurm = seen_in_slurm.max(alive);
        let (_, doc): (u16, Value) = stack.get(&format!("/v1/sessions/{session}")).await;
        if doc["status"] != "running" {
            assert_eq!(doc["counts"]["success"], 1000, "{doc}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session is not done: {doc}; blocks {:?}; logs in {}",
            blocks(&stack),
            stack.dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen_in_slurm >= 1, "a block ran in Slurm");

    // Idle for 5 s: every block is cancelled, in Slurm as in the report.
    stack
        .wait_until(
            Duration::from_secs(60),
            "every block is cancelled once idle",
            || async {
                let jobs = job_ids(&stack);
                alive_in_slurm(&jobs) == 0 && blocks(&stack).iter().all(|b| b["ended_at"].is_u64())
            },
        )
        .await;
    let report = stack.blocks();
    assert!(report["scaling"].is_null(), "no failure: {report}");
    for b in blocks(&stack) {
        assert_ne!(b["state"], "failed", "{b}");
    }
    // Every result came back, in order.
    let page = stack
        .get::<Value>(&format!("/v1/sessions/{session}/tasks?offset=0&limit=1000"))
        .await
        .1;
    let tasks = page["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1000);
    assert!(tasks.iter().all(|t| t["status"] == "success"), "{page}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_cancelled_with_scancel_mid_run_loses_no_task_and_charges_none() {
    if !slurm_ready() {
        return;
    }
    let mut stack = Stack::start_without_endpoint().await;
    stack.set_env("FERRY_TASKS_PER_WORKER", "1");
    stack
        .start_endpoint_with(&slurm_config(
            "init_blocks = 1\nmax_blocks = 1\nwalltime = \"00:10:00\"\n",
        ))
        .await;
    let mut cleanup = CancelOnDrop(Vec::new());
    let log = stack.dir.path().join("runs.log");
    // Each run appends a line: executions are counted, not only records.
    let f = stack
        .register(
            "shell",
            "runs",
            &format!(
                "echo \"start {{n}}\" >> {log}; sleep 3; echo \"end {{n}}\" >> {log}",
                log = log.display()
            ),
        )
        .await;
    let payloads: Vec<Value> = (0..6).map(|n| json!({"n": n})).collect();
    let ids = stack.submit_each(&f, &payloads, 0).await;

    // Once two run, the block is cancelled under them.
    stack
        .wait_until(Duration::from_secs(120), "two tasks run", || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("start")
                .count()
                >= 2
        })
        .await;
    let first = job_ids(&stack);
    cleanup.0.clone_from(&first);
    assert_eq!(first.len(), 1, "{:?}", blocks(&stack));
    let out = std::process::Command::new("scancel")
        .args(&first)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    for id in &ids {
        let doc = stack.wait_done(*id, Duration::from_secs(180)).await;
        cleanup.0 = job_ids(&stack);
        assert_eq!(
            doc.status, "success",
            "task {id} with no retries must not be charged: {doc:?}"
        );
    }
    let runs = std::fs::read_to_string(&log).unwrap();
    for n in 0..6 {
        let ends = runs.matches(&format!("end {n}\n")).count();
        assert_eq!(ends, 1, "task {n} finished once: {runs}");
    }
    let lost: Vec<TaskId> = {
        let mut v = Vec::new();
        for id in &ids {
            if stack.task(*id).await.attempt > 0 {
                v.push(*id);
            }
        }
        v
    };
    assert!(
        !lost.is_empty(),
        "some task was running when its block was cancelled"
    );
    for id in lost {
        let doc = stack.task(id).await;
        let went_back = doc
            .history
            .iter()
            .any(|h| h.state == "waiting-for-nodes" && h.attempt == doc.attempt);
        assert!(
            went_back,
            "task {id} went back to waiting for nodes: {:?}",
            doc.history
        );
    }
    assert!(
        job_ids(&stack).len() >= 2,
        "a new block replaced the cancelled one"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_at_its_walltime_drains_and_its_unfinished_tasks_run_again_uncharged() {
    if !slurm_ready() {
        return;
    }
    let mut stack = Stack::start_without_endpoint().await;
    stack.set_env("FERRY_TASKS_PER_WORKER", "1");
    // A minute of walltime (Slurm's shortest), the last 25 s of it draining.
    stack
        .start_endpoint_with(&slurm_config(
            "init_blocks = 1\nmax_blocks = 1\nwalltime = \"00:01:00\"\ndrain = \"25s\"\n",
        ))
        .await;
    let mut cleanup = CancelOnDrop(Vec::new());
    let marks = stack.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // The first run of a task outlasts any block; a second run is quick.
    let f = stack
        .register(
            "shell",
            "long-then-short",
            &format!(
                "m={marks}/{{n}}; if [ -e $m ]; then echo again; else touch $m; sleep 600; fi",
                marks = marks.display()
            ),
        )
        .await;
    let long = stack
        .submit_each(&f, &[json!({"n": "a"}), json!({"n": "b"})], 0)
        .await;
    stack
        .wait_until(Duration::from_secs(120), "both long tasks run", || async {
            std::fs::read_dir(&marks).map(|d| d.count()).unwrap_or(0) == 2
        })
        .await;
    let first_block = job_ids(&stack);
    cleanup.0.clone_from(&first_block);
    // Past the drain point (35 s into a 60 s block) a new task goes to no manager of
    // this block: it says which job ran it.
    let job = stack
        .register("shell", "which-job", "echo job=$SLURM_JOB_ID")
        .await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    let late = stack.submit_each(&job, &[json!({})], 0).await[0];

    for id in &long {
        let doc = stack.wait_done(*id, Duration::from_secs(300)).await;
        cleanup.0 = job_ids(&stack);
        assert_eq!(
            doc.status, "success",
            "task {id} (no retries) must not be charged: {doc:?}"
        );
        assert_eq!(doc.attempt, 1, "it ran again once");
        assert_eq!(doc.stdout.as_deref().map(str::trim), Some("again"));
    }
    let doc = stack.wait_done(late, Duration::from_secs(120)).await;
    assert_eq!(doc.status, "success", "{doc:?}");
    let ran_in = doc.stdout.unwrap_or_default();
    assert!(
        !ran_in.contains(&format!("job={}", first_block[0])),
        "the draining block took a task: {ran_in}"
    );
    let first = blocks(&stack)
        .into_iter()
        .find(|b| b["job_id"] == first_block[0].as_str())
        .unwrap();
    assert_eq!(first["state"], "timed-out", "{first}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_submission_shows_the_schedulers_message_and_the_endpoint_keeps_running() {
    if !slurm_ready() {
        return;
    }
    let mut stack = Stack::start_without_endpoint().await;
    stack
        .start_endpoint_with(&slurm_config(
            "partition = \"nosuch\"\nmin_blocks = 1\nmax_failures = 2\n",
        ))
        .await;
    stack
        .wait_until(
            Duration::from_secs(60),
            "scaling pauses after two refusals",
            || async {
                stack.blocks()["scaling"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("paused"))
            },
        )
        .await;
    let report = stack.blocks();
    let refused = &report["blocks"][0];
    assert_eq!(refused["state"], "failed", "{report}");
    let reason = refused["reason"].as_str().unwrap();
    assert!(reason.contains("sbatch"), "{reason}");
    assert!(reason.contains("Invalid partition name specified"), "{reason}");
    assert!(
        report["scaling"].as_str().unwrap().contains("Invalid partition"),
        "{report}"
    );

    // The endpoint runs on, and says so to the service and in `status`.
    let id = stack.endpoint_id.unwrap();
    let this = &stack;
    this.wait_until(
        Duration::from_secs(30),
        "the service sees the paused scaling",
        || async move {
            let doc: Value = this.get(&format!("/v1/endpoints/{id}")).await.1;
            doc["status"] == "online"
                && doc["details"]["provider"]["scaling"]
                    .as_str()
                    .is_some_and(|s| s.contains("Invalid partition"))
        },
    )
    .await;
    let out = stack.endpoint_cli(&["status", "ep"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Invalid partition name specified"), "{text}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_whose_managers_never_start_is_a_failure_with_the_head_of_its_output() {
    if !slurm_ready() {
        return;
    }
    let mut stack = Stack::start_without_endpoint().await;
    stack
        .start_endpoint_with(&slurm_config(
            "init_blocks = 1\nworker_init = \"echo no such module >&2; exit 3\"\n",
        ))
        .await;
    let _cleanup = CancelOnDrop(job_ids(&stack));
    stack
        .wait_until(
            Duration::from_secs(90),
            "the block is reported failed",
            || async { blocks(&stack).first().is_some_and(|b| b["state"] == "failed") },
        )
        .await;
    let b = &blocks(&stack)[0];
    let reason = b["reason"].as_str().unwrap();
    assert!(reason.contains("before any manager connected"), "{reason}");
    assert!(reason.contains("no such module"), "{reason}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_waiting_for_a_pending_block_says_so_with_the_job_and_its_reason() {
    if !slurm_ready() {
        return;
    }
    let mut stack = Stack::start_without_endpoint().await;
    // Five nodes on a one-node cluster: Slurm takes the job and keeps it pending (the
    // reason, PartitionNodeLimit or PartitionConfig, depends on the partition's limits).
    stack
        .start_endpoint_with(&slurm_config("init_blocks = 0\nnodes_per_block = 5\n"))
        .await;
    let f = stack.register("shell", "echo", "echo hi").await;
    let id = stack.submit_each(&f, &[json!({})], 0).await[0];
    stack
        .wait_until(Duration::from_secs(60), "the task says why it waits", || async {
            let doc: Value = stack.get(&format!("/v1/tasks/{id}")).await.1;
            doc["status"] == "waiting-for-nodes"
                && doc["waiting"]
                    .as_str()
                    .is_some_and(|w| w.contains("pending in slurm's queue: Partition"))
        })
        .await;
    let jobs = job_ids(&stack);
    let _cleanup = CancelOnDrop(jobs.clone());
    let doc: Value = stack.get(&format!("/v1/tasks/{id}")).await.1;
    let waiting = doc["waiting"].as_str().unwrap();
    assert!(waiting.contains(&jobs[0]), "names the job: {waiting}");
    let out = stack.endpoint_cli(&["status", "ep"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.contains(&jobs[0]) && l.contains("pending") && l.contains("Partition")),
        "status lists the pending block with Slurm's reason:\n{table}"
    );

    // Stopping the endpoint cancels its blocks.
    stack.stop(Part::Endpoint);
    assert_eq!(squeue(&jobs).get(&jobs[0]).map(String::as_str), Some("CANCELLED"));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_runs_a_test_job_whose_manager_connects_back_and_names_what_fails() {
    if !slurm_ready() {
        return;
    }
    let stack = Stack::start_without_endpoint().await;
    let dir = stack.endpoint_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let config = |extra: &str| format!("url = \"{}\"\n{}", stack.url, slurm_config(extra));
    std::fs::write(dir.join("config.toml"), config("walltime = \"00:05:00\"\n")).unwrap();
    let out = stack.endpoint_cli(&["check", "ep", "--timeout", "2m"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("manager connected back"), "{said}");
    let job = said
        .lines()
        .find_map(|l| l.strip_prefix("[ok]   submitted test job "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let _cleanup = CancelOnDrop(vec![job.clone()]);
    assert!(said.contains(&format!("cancelled test job {job}")), "{said}");
    let script = std::fs::read_dir(dir.join("blocks"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("check-"))
        .map(|e| e.path().join("submit.sh"))
        .unwrap();
    assert!(
        script.exists(),
        "the test job's script stays for the user to read"
    );

    std::fs::write(dir.join("config.toml"), config("partition = \"nosuch\"\n")).unwrap();
    let out = stack.endpoint_cli(&["check", "ep", "--timeout", "1m"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("[fail] the scheduler refused the test job"),
        "{said}"
    );
    assert!(said.contains("Invalid partition name specified"), "{said}");
    stack.shutdown().await;
}
