//! Big reads: an answer about many large results (kept in the data plane) is written
//! task by task, its results read from Redis in bounded groups, so the web-service never
//! holds the whole answer (let alone several copies of it). The answers are complete and
//! correct; the web-service's peak memory grows by less than the answer's size.
//!
//! `measure_big_reads` (ignored) prints the peak for each route that reads results:
//! `cargo nextest run -p ferry-tests --test big_reads --run-ignored only --no-capture`.

use std::time::{Duration, Instant};

use ferry_proto::TaskId;
use ferry_tests::{Part, Stack, json_args, python_source};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(180);

/// Task `i` returns `n` times the letter `a + i`.
const LETTERS: &str = "def letters(i, n):\n    return chr(97 + i) * n\n";

/// Submits `count` tasks whose serialized results are a little under `bytes` each (a string is
/// pickled, then base64: 4/3 of its length), waits until all succeeded and returns
/// their ids and results (each read alone).
async fn large_results(stack: &Stack, count: usize, bytes: usize) -> (Vec<TaskId>, Vec<String>) {
    let letters = stack
        .register("python", "letters", &python_source("letters", LETTERS))
        .await;
    let length = bytes * 3 / 4 - bytes / 100;
    let payloads: Vec<String> = (0..count).map(|i| json_args(&json!([i, length]))).collect();
    let tasks: Vec<(&str, &str)> = payloads.iter().map(|p| (letters.as_str(), p.as_str())).collect();
    let ids = stack.submit(&tasks).await;
    let mut results = Vec::new();
    for id in &ids {
        let doc = stack.wait_done(*id, WITHIN).await;
        assert_eq!(doc.status, "success", "{:?}", doc.exception);
        results.push(doc.result.expect("a result"));
    }
    let distinct: std::collections::HashSet<&String> = results.iter().collect();
    assert_eq!(distinct.len(), count, "every task's result differs");
    (ids, results)
}

/// The process's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number");
    kib * 1024
}

/// Resets the process's peak to its current resident memory (Linux 4.0 and later).
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs");
}

/// A request's answer as raw bytes, with its status and how much the web-service's peak
/// memory grew while answering it (from its resident memory just before).
async fn read_measured(
    stack: &Stack,
    pid: u32,
    request: reqwest::RequestBuilder,
) -> (u16, bytes::Bytes, u64, Duration) {
    // The allocator hands back what earlier requests freed at its own pace.
    tokio::time::sleep(Duration::from_millis(200)).await;
    reset_peak(pid);
    let before = peak_rss(pid);
    let started = Instant::now();
    let response = request.bearer_auth(&stack.token).send().await.expect("request");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("body");
    let took = started.elapsed();
    (status, body, peak_rss(pid).saturating_sub(before), took)
}

#[tokio::test]
async fn a_status_read_of_many_large_results_is_complete_and_never_held_whole() {
    const COUNT: usize = 8;
    const BYTES: usize = 9 * 1024 * 1024;
    let mut stack = Stack::start().await;
    let (ids, results) = large_results(&stack, COUNT, BYTES).await;
    let pid = stack.pid(Part::WebService).expect("a web-service");
    for brief in [false, true] {
        let request = stack
            .http
            .post(format!("{}/v1/tasks/status", stack.url))
            .json(&json!({"task_ids": ids, "history": false, "brief": brief}));
        let (status, body, grew, _) = read_measured(&stack, pid, request).await;
        assert_eq!(
            status,
            200,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        );
        let answer: Value = serde_json::from_slice(&body).expect("one JSON document");
        assert_eq!(answer["unknown"], json!([]));
        let tasks = answer["tasks"].as_object().expect("tasks");
        assert_eq!(tasks.len(), COUNT);
        for (i, id) in ids.iter().enumerate() {
            let doc = &tasks[&id.to_string()];
            assert_eq!(doc["status"], "success");
            assert!(
                doc["result"].as_str() == Some(results[i].as_str()),
                "task {i}'s result is not what it returned"
            );
        }
        assert!(
            grew < 2 * body.len() as u64,
            "brief {brief}: the web-service's peak grew by {grew} bytes for an answer of {}",
            body.len()
        );
    }
    // Globus Compute's batch status, likewise.
    let request = stack
        .http
        .post(format!("{}/v2/batch_status", stack.url))
        .json(&json!({"task_ids": ids}));
    let (status, body, grew, _) = read_measured(&stack, pid, request).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).expect("one JSON document");
    assert_eq!(answer["response"], "batch");
    for (i, id) in ids.iter().enumerate() {
        let doc = &answer["results"][id.to_string()];
        assert!(doc["result"].as_str() == Some(results[i].as_str()));
    }
    assert!(grew < 2 * body.len() as u64, "batch_status: grew by {grew} bytes");
    stack.shutdown().await;
}

/// Prints, for each route that reads results, the answer's size and how much the
/// web-service's peak memory grew while answering (20 results of about 9.9 MiB by default;
/// `FERRY_BIG_READS=count,bytes` for others).
#[tokio::test]
#[ignore = "a measurement: prints figures, checks nothing"]
async fn measure_big_reads() {
    let (count, bytes) = std::env::var("FERRY_BIG_READS")
        .ok()
        .and_then(|v| {
            let (c, b) = v.split_once(',')?;
            Some((c.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((20, 10 * 1024 * 1024));
    let mut stack = Stack::start_with_env(&[("FERRY_MAX_RESPONSE_BYTES", "0")]).await;
    let (ids, _) = large_results(&stack, count, bytes).await;
    let batch = stack.task(ids[0]).await.batch_id;
    let routes: Vec<(&str, reqwest::Method, String, Option<Value>)> = vec![
        (
            "POST /v1/tasks/status",
            reqwest::Method::POST,
            "/v1/tasks/status".into(),
            Some(json!({"task_ids": ids})),
        ),
        (
            "POST /v1/tasks/status brief",
            reqwest::Method::POST,
            "/v1/tasks/status".into(),
            Some(json!({"task_ids": ids, "history": false, "brief": true})),
        ),
        (
            "POST /v2/batch_status",
            reqwest::Method::POST,
            "/v2/batch_status".into(),
            Some(json!({"task_ids": ids})),
        ),
        (
            "GET /v1/sessions/{id}/tasks",
            reqwest::Method::GET,
            format!("/v1/sessions/{batch}/tasks?limit={count}"),
            None,
        ),
        (
            "GET /v1/tasks/{id}",
            reqwest::Method::GET,
            format!("/v1/tasks/{}", ids[0]),
            None,
        ),
        (
            "GET /v2/tasks/{id}",
            reqwest::Method::GET,
            format!("/v2/tasks/{}", ids[0]),
            None,
        ),
    ];
    eprintln!("{count} results; the growth of a fresh web-service's peak RSS while answering:");
    for (name, method, path, body) in routes {
        // A fresh process each time: the allocator keeps what earlier answers freed.
        stack.stop(Part::WebService);
        stack.start_part(Part::WebService);
        let pid = stack.pid(Part::WebService).expect("a web-service");
        stack
            .wait_until(WITHIN, "the web-service answers", || async {
                stack
                    .http
                    .get(format!("{}/v1/version", stack.url))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await;
        let mut request = stack.http.request(method, format!("{}{path}", stack.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, body, grew, took) = read_measured(&stack, pid, request).await;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        eprintln!(
            "{name}: {status}, answer {:.1} MiB, peak +{:.1} MiB ({:.2}x), {took:.2?}",
            mib(body.len() as u64),
            mib(grew),
            grew as f64 / body.len() as f64
        );
    }
    stack.shutdown().await;
}
