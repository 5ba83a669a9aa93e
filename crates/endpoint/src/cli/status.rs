//! `status NAME` and `list`: the same facts about each endpoint ([`Facts`]), as lines
//! or a table for people and as JSON (`--json`) for programs. Two views are kept apart:
//! the local process (from the endpoint's files and the process table) and the service
//! (online while heartbeats come), since each can be wrong while the other is right
//! (a killed endpoint still reads online for a few heartbeats; a running one whose
//! broker is gone reads offline).

use std::path::PathBuf;
use std::time::Duration;

use ferry_proto::EndpointId;
use ferry_proto::messages::{EndpointLoad, ProviderReport};
use serde::Serialize;

use super::{check_name, load, log_path};
use crate::config::{EndpointConfig, endpoint_dir, ferry_home};
use crate::state::{self, Process};

/// What `status` and `list` say about one endpoint; the fields of their `--json`
/// (documented in docs/endpoints.md: add fields, never rename or remove one).
#[derive(Debug, Serialize)]
pub struct Facts {
    pub name: String,
    /// Its id at the service; `None` until its first registration.
    pub endpoint_id: Option<EndpointId>,
    /// `running`, `not-running`, or `dead` (a file names a process that is gone).
    pub process: &'static str,
    /// `process == "running"`.
    pub running: bool,
    /// The running process, or the dead one a file names.
    pub pid: Option<u32>,
    /// The file a dead process left (`running.json`, `endpoint.pid`).
    pub left: Option<&'static str>,
    /// Why its `config.toml` cannot be read; the config's facts are then `None`.
    pub config_error: Option<String>,
    pub provider_kind: Option<&'static str>,
    /// Worker processes per manager, as configured (`None` on a cluster without
    /// `max_workers_per_node`: one per core the node was given).
    pub workers_per_node: Option<u32>,
    /// The workers' Python, as configured or its default.
    pub python: Option<String>,
    /// The web-service it registers with.
    pub url: Option<String>,
    /// Where a detached endpoint logs.
    pub log: PathBuf,
    /// What the service says; `None` when the endpoint was never registered.
    pub service: Option<ServiceView>,
}

/// The service's view of an endpoint (`GET /v1/endpoints/{id}`).
#[derive(Debug, Serialize)]
pub struct ServiceView {
    /// `online` (heartbeats come), `offline`, or `unknown` (it could not be asked: see
    /// `error`).
    pub status: String,
    /// Unix seconds of the last heartbeat the service recorded; `None`: none recorded.
    pub last_heartbeat: Option<f64>,
    /// Seconds since then, by this machine's clock.
    pub heartbeat_age_secs: Option<f64>,
    /// From the last heartbeat, while online: managers connected, their workers, idle
    /// workers, tasks waiting at the endpoint for a manager and tasks held by managers.
    pub managers: Option<u32>,
    pub workers: Option<u32>,
    pub idle_workers: Option<u32>,
    pub pending_tasks: Option<u32>,
    pub outstanding_tasks: Option<u32>,
    /// Why the service could not be asked.
    pub error: Option<String>,
}

/// `status --json`: the [`Facts`], and what only the running endpoint knows.
#[derive(Serialize)]
struct StatusDoc {
    #[serde(flatten)]
    facts: Facts,
    /// Where managers connect (`host:port`), while it runs.
    manager_addr: Option<std::net::SocketAddr>,
    /// The SHA-256 of the certificate managers pin, once made.
    manager_cert_sha256: Option<ferry_proto::frames::CertFingerprint>,
    /// The provider's blocks and scaling, while it runs.
    provider: Option<ProviderReport>,
}

/// `status NAME`: the [`Facts`], where managers connect, the certificate they pin, and
/// the provider's blocks (lines and a table, or one JSON object with `--json`). True
/// when the process runs (`main` exits 3 when not).
pub async fn status(name: &str, json: bool) -> anyhow::Result<bool> {
    let (dir, config) = load(name)?;
    let facts = facts(name, Ok(&config)).await;
    let running = facts.running;
    // The report is the running endpoint's; a stopped one's file is history.
    let report = running.then(|| crate::blocks::read_report(&dir)).flatten();
    let manager_addr = running
        .then(|| state::read_running(&dir))
        .flatten()
        .map(|r| r.manager_addr);
    let doc = StatusDoc {
        facts,
        manager_addr,
        manager_cert_sha256: state::manager_cert_fingerprint(&dir),
        provider: report,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", status_text(&doc, &config));
    }
    Ok(running)
}

fn status_text(doc: &StatusDoc, config: &EndpointConfig) -> String {
    let f = &doc.facts;
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{:<10} {value}\n", format!("{key}:")));
    line("endpoint", f.name.clone());
    line(
        "id",
        f.endpoint_id
            .map(|i| i.to_string())
            .unwrap_or_else(|| "(not registered yet: its first start registers it)".into()),
    );
    line("process", process_text(f));
    line("service", service_text(f.service.as_ref()));
    if let Some(workers) = workers_text(f.service.as_ref()) {
        line("workers", workers);
    }
    let kind = config.provider.kind;
    let per_node = f
        .workers_per_node
        .map(|n| format!(", {n} workers per manager"))
        .unwrap_or_default();
    let scaling = match &doc.provider {
        Some(r) => r
            .scaling
            .as_ref()
            .map(|s| format!(", scaling {s}"))
            .unwrap_or_default(),
        None if f.running && kind != crate::config::ProviderKind::Manual => " (no report yet)".into(),
        None => String::new(),
    };
    line("provider", format!("{}{per_node}{scaling}", kind.name()));
    line("python", config.provider.python.clone());
    line("url", config.url.clone());
    line("log", f.log.display().to_string());
    if let Some(addr) = doc.manager_addr {
        line("listen", format!("{addr} (where managers connect)"));
    }
    if let Some(pin) = &doc.manager_cert_sha256 {
        line("cert", format!("{pin} (managers' FERRY_ENDPOINT_CERT_SHA256)"));
    }
    if let Some(r) = &doc.provider {
        out.push_str(&blocks_table(r));
    }
    out
}

/// `running (pid 48213)`, `not running`, `dead (pid 48213, left running.json)`.
fn process_text(f: &Facts) -> String {
    match (f.process, f.pid, f.left) {
        ("running", Some(pid), _) => format!("running (pid {pid})"),
        ("dead", Some(pid), Some(left)) => format!("dead (pid {pid}, left {left})"),
        _ => "not running".to_owned(),
    }
}

fn service_text(service: Option<&ServiceView>) -> String {
    let Some(s) = service else {
        return "(not registered)".to_owned();
    };
    if let Some(e) = &s.error {
        return format!("cannot ask: {e}");
    }
    match s.heartbeat_age_secs {
        Some(age) => format!("{} (last heartbeat {})", s.status, ago(age)),
        None => format!("{} (no heartbeat recorded)", s.status),
    }
}

/// `4 (3 idle) on 2 managers; 5 tasks waiting, 1 at managers`, while online.
fn workers_text(service: Option<&ServiceView>) -> Option<String> {
    let s = service?;
    let (managers, workers) = (s.managers?, s.workers?);
    Some(format!(
        "{workers} ({} idle) on {managers} manager{}; {} tasks waiting, {} at managers",
        s.idle_workers.unwrap_or(0),
        if managers == 1 { "" } else { "s" },
        s.pending_tasks.unwrap_or(0),
        s.outstanding_tasks.unwrap_or(0),
    ))
}

/// `4 s ago`, `3 min ago`, `2 h ago`, `5 days ago`.
pub fn ago(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..90 => format!("{s} s ago"),
        90..5400 => format!("{} min ago", s / 60),
        5400..172_800 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// The [`Facts`] of endpoint `name` with its config (or why it cannot be read), asking
/// the service (5 s at most).
pub async fn facts(name: &str, config: Result<&EndpointConfig, String>) -> Facts {
    let dir = endpoint_dir(name);
    let (process, pid, left) = match state::process(&dir) {
        Process::Running { pid } => ("running", Some(pid), None),
        Process::NotRunning => ("not-running", None, None),
        Process::Dead { pid, left } => ("dead", Some(pid), Some(left)),
    };
    let endpoint_id = state::read_id(&dir);
    let service = match (endpoint_id, &config) {
        (Some(id), Ok(config)) => Some(match crate::service::token(&dir, config) {
            Ok(token) => ask_service(config, &token, id).await,
            Err(e) => ServiceView::unknown(e.to_string()),
        }),
        (Some(_), Err(_)) => Some(ServiceView::unknown("the config cannot be read".into())),
        (None, _) => None,
    };
    let config_error = config.as_ref().err().cloned();
    let config = config.as_ref().ok();
    Facts {
        name: name.to_owned(),
        endpoint_id,
        process,
        running: process == "running",
        pid,
        left,
        config_error,
        provider_kind: config.map(|c| c.provider.kind.name()),
        workers_per_node: config.and_then(|c| c.provider.workers_per_node()),
        python: config.map(|c| c.provider.python.clone()),
        url: config.map(|c| c.url.clone()),
        log: log_path(&dir),
        service,
    }
}

impl ServiceView {
    fn unknown(error: String) -> Self {
        Self {
            status: "unknown".into(),
            last_heartbeat: None,
            heartbeat_age_secs: None,
            managers: None,
            workers: None,
            idle_workers: None,
            pending_tasks: None,
            outstanding_tasks: None,
            error: Some(error),
        }
    }
}

async fn ask_service(config: &EndpointConfig, token: &str, id: EndpointId) -> ServiceView {
    let url = format!("{}/v1/endpoints/{id}", config.url.trim_end_matches('/'));
    let client = match config.http_client() {
        Ok(c) => c,
        Err(e) => return ServiceView::unknown(e.to_string()),
    };
    let answer = client
        .get(&url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let doc: ferry_proto::api::EndpointDoc = match answer {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(doc) => doc,
            Err(e) => return ServiceView::unknown(format!("unreadable answer from {url} ({e})")),
        },
        Ok(r) => return ServiceView::unknown(format!("{url} answered {}", r.status())),
        Err(e) => return ServiceView::unknown(format!("{url} is unreachable ({e})")),
    };
    let now = ferry_proto::time::to_secs(ferry_proto::time::now_micros());
    // The load is the last heartbeat's: stale once the endpoint is offline.
    let load = (doc.status == "online")
        .then(|| serde_json::from_value::<EndpointLoad>(doc.details.clone()).ok())
        .flatten();
    ServiceView {
        status: doc.status,
        last_heartbeat: doc.last_heartbeat,
        heartbeat_age_secs: doc.last_heartbeat.map(|t| (now - t).max(0.0)),
        managers: load.as_ref().map(|l| l.managers),
        workers: load.as_ref().map(|l| l.total_workers),
        idle_workers: load.as_ref().map(|l| l.idle_workers),
        pending_tasks: load.as_ref().map(|l| l.pending_tasks),
        outstanding_tasks: load.as_ref().map(|l| l.outstanding_tasks),
        error: None,
    }
}

/// The blocks as a table, newest last.
pub fn blocks_table(report: &ProviderReport) -> String {
    if report.blocks.is_empty() {
        return "blocks:    none\n".to_owned();
    }
    let now = ferry_proto::time::now_micros();
    let mut out = format!(
        "{:<6} {:<14} {:<11} {:>5} {:>8} {:>6} {:>9}  {}\n",
        "BLOCK", "JOB", "STATE", "NODES", "MANAGERS", "TASKS", "AGE", "REASON"
    );
    for b in &report.blocks {
        let age = humantime::format_duration(Duration::from_secs(
            now.saturating_sub(b.submitted_at) / 1_000_000,
        ));
        out.push_str(&format!(
            "{:<6} {:<14} {:<11} {:>5} {:>8} {:>6} {:>9}  {}\n",
            b.block_id,
            b.job_id.as_deref().unwrap_or("-"),
            b.state,
            b.nodes,
            b.managers,
            b.tasks,
            age.to_string(),
            b.reason.as_deref().unwrap_or("")
        ));
    }
    out
}

/// `list`: every configured endpoint with its [`Facts`] (the service asked for all at
/// once), as a table or, with `--json`, a JSON array.
pub async fn list(json: bool) -> anyhow::Result<()> {
    let root = ferry_home().join("endpoints");
    let mut names: Vec<String> = match std::fs::read_dir(&root) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("config.toml").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| check_name(name).is_ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    let all = futures_util::future::join_all(names.iter().map(|name| async move {
        let path = endpoint_dir(name).join("config.toml");
        match EndpointConfig::load(&path) {
            Ok(config) => facts(name, Ok(&config)).await,
            Err(e) => facts(name, Err(e.to_string())).await,
        }
    }))
    .await;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!(
            "no endpoints in {} (ferry-endpoint configure NAME makes one)",
            root.display()
        );
        return Ok(());
    }
    print!("{}", list_table(&all));
    Ok(())
}

fn list_table(all: &[Facts]) -> String {
    let dash = || "-".to_owned();
    let mut rows = vec![
        [
            "NAME",
            "PROCESS",
            "SERVICE",
            "HEARTBEAT",
            "MANAGERS",
            "WORKERS",
            "PROVIDER",
            "URL",
            "ID",
        ]
        .map(String::from),
    ];
    for f in all {
        let service = f.service.as_ref();
        let (status, heartbeat) = match service {
            None => ("not registered".to_owned(), dash()),
            Some(s) if s.error.is_some() => (s.status.clone(), dash()),
            Some(s) => (
                s.status.clone(),
                s.heartbeat_age_secs
                    .map(ago)
                    .unwrap_or_else(|| "none recorded".into()),
            ),
        };
        let count = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_else(dash);
        rows.push([
            f.name.clone(),
            process_text(f),
            status,
            heartbeat,
            count(service.and_then(|s| s.managers)),
            count(service.and_then(|s| s.workers)),
            f.provider_kind
                .map(str::to_owned)
                .unwrap_or_else(|| "(bad config)".into()),
            f.url.clone().unwrap_or_else(dash),
            f.endpoint_id.map(|i| i.to_string()).unwrap_or_else(dash),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_ages_read_as_people_say_them() {
        assert_eq!(ago(4.2), "4 s ago");
        assert_eq!(ago(-0.3), "0 s ago", "a clock a little ahead is not the future");
        assert_eq!(ago(200.0), "3 min ago");
        assert_eq!(ago(7200.0), "2 h ago");
        assert_eq!(ago(5.0 * 86_400.0), "5 days ago");
    }
}
