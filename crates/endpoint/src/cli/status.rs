//! `status NAME` and `list`.

use std::time::Duration;

use super::{load, running_pid};
use crate::config::{endpoint_dir, ferry_home};
use crate::state;

/// `status NAME`: local process state, what the service says, and the provider's
/// blocks (a table, or one JSON document with `--json`). Exits 3 when the endpoint is
/// not running.
pub async fn status(name: &str, json: bool) -> anyhow::Result<bool> {
    let (dir, config) = load(name)?;
    let pid = running_pid(&dir);
    let id = state::read_id(&dir);
    let service = match (id, crate::service::token(&dir, &config)) {
        (Some(id), Ok(token)) => Some(ask_service(&config, &token, id).await),
        _ => None,
    };
    // The report is the running endpoint's; a stopped one's file is history.
    let report = pid.and_then(|_| crate::blocks::read_report(&dir));
    // What managers started by hand pin (FERRY_ENDPOINT_CERT_SHA256), and where they
    // connect while it runs.
    let cert_sha256 = state::manager_cert_fingerprint(&dir);
    let manager_addr = pid
        .and_then(|_| state::read_running(&dir))
        .map(|r| r.manager_addr);
    if json {
        let doc = serde_json::json!({
            "name": name,
            "endpoint_id": id,
            "running": pid.is_some(),
            "pid": pid,
            "provider_kind": config.provider.kind.name(),
            "manager_addr": manager_addr,
            "manager_cert_sha256": cert_sha256,
            "service": service.as_ref().map(|s| match s {
                Ok(doc) => serde_json::to_value(doc).unwrap_or_default(),
                Err(e) => serde_json::json!({"error": e}),
            }),
            "provider": report,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(pid.is_some());
    }
    println!("endpoint:  {name}");
    println!(
        "id:        {}",
        id.map(|i| i.to_string())
            .unwrap_or_else(|| "(never registered)".into())
    );
    match pid {
        Some(pid) => println!("process:   running (pid {pid})"),
        None => println!("process:   stopped"),
    }
    if let Some(addr) = manager_addr {
        println!("managers:  listening on {addr}");
    }
    if let Some(pin) = cert_sha256 {
        println!("cert:      {pin} (managers' FERRY_ENDPOINT_CERT_SHA256)");
    }
    match service {
        Some(Ok(doc)) => println!(
            "service:   {} (last heartbeat {})",
            doc.status,
            doc.last_heartbeat
                .map(|t| format!(
                    "{:.0} s ago",
                    ferry_proto::time::to_secs(ferry_proto::time::now_micros()) - t
                ))
                .unwrap_or_else(|| "never".into())
        ),
        Some(Err(e)) => println!("service:   {e}"),
        None => {}
    }
    let kind = config.provider.kind;
    match &report {
        Some(r) => {
            println!(
                "provider:  {}{}",
                kind.name(),
                r.scaling
                    .as_ref()
                    .map(|s| format!(", scaling {s}"))
                    .unwrap_or_default()
            );
            print!("{}", blocks_table(r));
        }
        None if pid.is_some() && kind != crate::config::ProviderKind::Manual => {
            println!("provider:  {} (no report yet)", kind.name())
        }
        None => println!("provider:  {}", kind.name()),
    }
    Ok(pid.is_some())
}

async fn ask_service(
    config: &crate::config::EndpointConfig,
    token: &str,
    id: ferry_proto::EndpointId,
) -> Result<ferry_proto::api::EndpointDoc, String> {
    let url = format!("{}/v1/endpoints/{id}", config.url.trim_end_matches('/'));
    let client = config.http_client().map_err(|e| e.to_string())?;
    let answer = client
        .get(&url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => r.json().await.map_err(|e| format!("unreadable answer ({e})")),
        Ok(r) => Err(format!("cannot ask ({})", r.status())),
        Err(e) => Err(format!("unreachable ({e})")),
    }
}

/// The blocks as a table, newest last.
pub fn blocks_table(report: &ferry_proto::messages::ProviderReport) -> String {
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

/// `list`: every configured endpoint.
pub fn list() -> anyhow::Result<()> {
    let root = ferry_home().join("endpoints");
    let mut names: Vec<String> = match std::fs::read_dir(&root) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("config.toml").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    println!("{:<24} {:<38} STATE", "NAME", "ID");
    for name in names {
        let dir = endpoint_dir(&name);
        let id = state::read_id(&dir)
            .map(|i| i.to_string())
            .unwrap_or_else(|| "-".into());
        let state = if running_pid(&dir).is_some() {
            "running"
        } else {
            "stopped"
        };
        println!("{name:<24} {id:<38} {state}");
    }
    Ok(())
}
