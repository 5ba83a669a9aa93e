//! The files an endpoint keeps in its directory:
//! - `endpoint.json`: its id, kept across restarts;
//! - `endpoint.pid`: the pid of the running endpoint;
//! - `running.json`: written once the endpoint is registered and serving;
//! - `manager.secret`: the secret its managers prove they know (readable by its owner
//!   only; made at the first start);
//! - `credential`: the endpoint's own bearer token (0600), made when its owner first
//!   registered it.

use std::net::SocketAddr;
use std::path::Path;

use ferry_proto::EndpointId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    endpoint_id: EndpointId,
}

/// What a running endpoint says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Running {
    pub endpoint_id: EndpointId,
    pub pid: u32,
    pub manager_addr: SocketAddr,
}

pub fn read_id(dir: &Path) -> Option<EndpointId> {
    let text = std::fs::read_to_string(dir.join("endpoint.json")).ok()?;
    serde_json::from_str::<Saved>(&text).ok().map(|s| s.endpoint_id)
}

pub fn write_id(dir: &Path, endpoint_id: EndpointId) -> std::io::Result<()> {
    std::fs::write(
        dir.join("endpoint.json"),
        serde_json::to_vec(&Saved { endpoint_id })?,
    )
}

pub fn write_pid(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("endpoint.pid"), std::process::id().to_string())
}

pub fn read_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("endpoint.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn write_running(dir: &Path, endpoint_id: EndpointId, manager_addr: SocketAddr) -> std::io::Result<()> {
    let running = Running {
        endpoint_id,
        pid: std::process::id(),
        manager_addr,
    };
    std::fs::write(dir.join("running.json"), serde_json::to_vec(&running)?)
}

pub fn read_running(dir: &Path) -> Option<Running> {
    serde_json::from_slice(&std::fs::read(dir.join("running.json")).ok()?).ok()
}

pub fn clear_running(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("running.json"));
    let _ = std::fs::remove_file(dir.join("endpoint.pid"));
}

/// True when a process with this pid exists and has not exited (a zombie, which its
/// parent has not reaped yet, has).
pub fn alive(pid: u32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    // `pid (comm) S ...`: the state follows the last ')'.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// The endpoint's credential, if it has one.
pub fn read_credential(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("credential"))
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Keeps the endpoint's credential (0600).
pub fn write_credential(dir: &Path, token: &str) -> std::io::Result<()> {
    write_private(&dir.join("credential"), token, 0o600)
}

/// The endpoint's manager secret, made (64 hex digits, mode 0600) if there is none yet.
pub fn manager_secret(dir: &Path) -> std::io::Result<String> {
    let path = dir.join("manager.secret");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &secret, 0o600)?;
    Ok(secret)
}

/// Writes a file only its owner may read (`mode` 0600, or 0700 for a script): it
/// holds the manager secret or a token. An existing file gets the mode too.
pub fn write_private(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
