//! Endpoints on PBS, through the command shim in `tests/pbs-shim/` (no PBS server is
//! packaged for Debian): `qsub`, `qstat -f -F json -x` and `qdel` that print what real
//! PBS prints and run each job as local processes, enforcing its walltime. The provider
//! runs unchanged: the forged script, `pbsdsh` starting a manager per node, the parsing,
//! the scaling, the walltime's end. (The parsers are also checked against samples of
//! real output in `crates/endpoint/tests/scheduler_output.rs`.)

use std::time::Duration;

use ferry_tests::{Stack, python, repo_root};
use serde_json::{Value, json};

/// A stack whose endpoint finds the shim first on its PATH.
async fn stack_with_shim() -> Stack {
    let mut stack = Stack::start_without_endpoint().await;
    let shim = repo_root().join("tests/pbs-shim");
    let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap_or_default());
    let state = stack.dir.path().join("pbs");
    stack.set_env("PATH", &path);
    stack.set_env("FERRY_PBS_SHIM_DIR", &state.display().to_string());
    stack
}

fn pbs_config(extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n\n[provider]\nkind = \"pbs\"\nqueue = \"workq\"\nmax_workers_per_node = 2\n\
         strategy_period = \"1s\"\npoll_period = \"1s\"\npython = \"{}\"\n{extra}",
        python()
    )
}

fn blocks(stack: &Stack) -> Vec<Value> {
    stack.blocks()["blocks"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pbs_endpoint_runs_two_node_blocks_through_pbsdsh_and_cancels_them_when_idle() {
    let mut stack = stack_with_shim().await;
    stack
        .start_endpoint_with(&pbs_config(
            "nodes_per_block = 2\ninit_blocks = 0\nmax_blocks = 2\nidle_timeout = \"3s\"\nwalltime = \"00:10:00\"\n",
        ))
        .await;
    let body = stack.identity_session(300).await;
    let (status, answer): (u16, Value) = stack.post("/v1/sessions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let session = answer["sessions"][0]["session_id"].as_str().unwrap().to_owned();
    let (this, session) = (&stack, &session);
    stack
        .wait_until(Duration::from_secs(180), "the session completes", || async move {
            let (_, doc): (u16, Value) = this.get(&format!("/v1/sessions/{session}")).await;
            doc["status"] == "completed" && doc["counts"]["success"] == 300
        })
        .await;
    let first = blocks(&stack)[0].clone();
    assert!(first["job_id"].as_str().unwrap().ends_with(".shim"), "{first}");
    // pbsdsh started a manager on each of the block's two "nodes".
    let log = std::fs::read_to_string(
        stack
            .endpoint_dir()
            .join("blocks")
            .join(first["block_id"].as_str().unwrap())
            .join("job.out"),
    )
    .unwrap();
    assert_eq!(log.matches("manager registered").count(), 2, "{log}");
    stack
        .wait_until(
            Duration::from_secs(60),
            "idle blocks are cancelled with qdel",
            || async {
                let b = blocks(&stack);
                !b.is_empty()
                    && b.iter()
                        .all(|b| b["state"] == "cancelled" && b["ended_at"].is_u64())
            },
        )
        .await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pbs_block_killed_at_its_walltime_hands_its_tasks_on_uncharged() {
    let mut stack = stack_with_shim().await;
    stack.set_env("FERRY_TASKS_PER_WORKER", "1");
    stack
        .start_endpoint_with(&pbs_config(
            "init_blocks = 1\nmax_blocks = 1\nwalltime = \"00:00:20\"\ndrain = \"8s\"\n",
        ))
        .await;
    let marks = stack.dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let f = stack
        .register(
            "shell",
            "long-then-short",
            &format!(
                "m={}/{{n}}; if [ -e $m ]; then echo again on $PBS_JOBID; else touch $m; sleep 600; fi",
                marks.display()
            ),
        )
        .await;
    let ids = stack
        .submit_each(&f, &[json!({"n": "a"}), json!({"n": "b"})], 0)
        .await;
    for id in &ids {
        let doc = stack.wait_done(*id, Duration::from_secs(120)).await;
        assert_eq!(doc.status, "success", "{doc:?}");
        assert_eq!(doc.attempt, 1);
        let last_wait = doc
            .history
            .iter()
            .rfind(|h| h.state == "waiting-for-nodes")
            .unwrap();
        assert_eq!(
            last_wait.reason.as_deref(),
            Some("block-ended"),
            "{:?}",
            doc.history
        );
    }
    let first = blocks(&stack)[0].clone();
    assert_eq!(first["state"], "timed-out", "{first}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_queue_shows_pbs_words_in_the_endpoint_status() {
    let mut stack = stack_with_shim().await;
    stack
        .start_endpoint_with(
            &pbs_config("min_blocks = 1\nmax_failures = 1\n")
                .replace("queue = \"workq\"", "queue = \"nosuchq\""),
        )
        .await;
    stack
        .wait_until(Duration::from_secs(30), "scaling pauses", || async {
            stack.blocks()["scaling"]
                .as_str()
                .is_some_and(|s| s.starts_with("paused"))
        })
        .await;
    let reason = blocks(&stack)[0]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("qsub: Unknown queue"), "{reason}");
    assert!(reason.contains("exit status 170"), "{reason}");
    let out = stack.endpoint_cli(&["status", "ep", "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["running"], true, "{doc}");
    assert!(
        doc["provider"]["scaling"]
            .as_str()
            .unwrap()
            .contains("Unknown queue"),
        "{doc}"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_runs_a_pbs_test_job_through_qsub_and_pbsdsh() {
    let stack = stack_with_shim().await;
    let dir = stack.endpoint_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!("url = \"{}\"\n{}", stack.url, pbs_config("nodes_per_block = 2\n"));
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let out = stack.endpoint_cli(&["check", "ep", "--timeout", "1m"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("qsub, qstat, qdel found"), "{said}");
    assert!(said.contains("manager connected back"), "{said}");
    assert!(said.contains("cancelled test job"), "{said}");
    stack.shutdown().await;
}
