//! The files an endpoint keeps in its directory:
//! - `endpoint.json`: its id, kept across restarts;
//! - `endpoint.pid`: the pid of the running endpoint, and when it started;
//! - `running.json`: written once the endpoint is registered and serving;
//! - `manager.secret`: the secret its managers prove they know (readable by its owner
//!   only; made at the first start);
//! - `manager.cert.pem`, `manager.key.pem`: the self-signed certificate its manager
//!   listener proves itself with, and its key (0600); made at the first start, kept
//!   because managers pin the certificate's SHA-256;
//! - `credential`: the endpoint's own bearer token (0600), made when its owner first
//!   registered it.

use std::net::SocketAddr;
use std::path::Path;

use ferry_proto::EndpointId;
use ferry_proto::frames::{CertFingerprint, ENDPOINT_CERT_NAME};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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
    /// The SHA-256 of the manager listener's certificate, which managers pin (absent in
    /// the file of an endpoint from before the listener spoke TLS).
    #[serde(default)]
    pub manager_cert_sha256: Option<CertFingerprint>,
    /// When the process started (see [`write_pid`]); absent in an older Ferry's file.
    #[serde(default)]
    pub started: Option<u64>,
}

impl Running {
    /// The process this file names, as [`RecordedPid`].
    pub fn recorded(&self) -> RecordedPid {
        RecordedPid {
            pid: self.pid,
            start: self.started,
        }
    }
}

pub fn read_id(dir: &Path) -> Option<EndpointId> {
    let text = std::fs::read_to_string(dir.join("endpoint.json")).ok()?;
    serde_json::from_str::<Saved>(&text).ok().map(|s| s.endpoint_id)
}

pub fn write_id(dir: &Path, endpoint_id: EndpointId) -> std::io::Result<()> {
    write_whole(
        &dir.join("endpoint.json"),
        &serde_json::to_vec(&Saved { endpoint_id })?,
    )
}

/// Writes a file whole or not at all (a temporary file renamed over it): `status`,
/// `stop`, `ferry dev` and scripts may read it at any moment.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(partial, path)
}

/// Writes `endpoint.pid`: `PID START`, START being when the process started (clock ticks
/// since boot, `/proc/PID/stat`), so a pid the kernel has since given to another process
/// (after a crash, or a reboot) is not taken for the endpoint's.
pub fn write_pid(dir: &Path) -> std::io::Result<()> {
    let pid = std::process::id();
    let text = match start_ticks(pid) {
        Some(start) => format!("{pid} {start}"),
        None => pid.to_string(),
    };
    write_whole(&dir.join("endpoint.pid"), text.as_bytes())
}

/// A pid an endpoint recorded, and when that process started (absent in a file an older
/// Ferry wrote, or where `/proc` is not there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedPid {
    pub pid: u32,
    pub start: Option<u64>,
}

impl RecordedPid {
    /// Whether the recorded process still runs: the pid is alive and, where the start
    /// time was recorded, is the same process (not a later one given the same pid).
    pub fn alive(&self) -> bool {
        alive(self.pid)
            && self
                .start
                .is_none_or(|start| start_ticks(self.pid) == Some(start))
    }
}

pub fn read_pid(dir: &Path) -> Option<RecordedPid> {
    let text = std::fs::read_to_string(dir.join("endpoint.pid")).ok()?;
    let mut fields = text.split_whitespace();
    let pid = fields.next()?.parse().ok()?;
    let start = fields.next().and_then(|s| s.parse().ok());
    Some(RecordedPid { pid, start })
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ppid ...`: comm may hold spaces and ')', so count after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn write_running(
    dir: &Path,
    endpoint_id: EndpointId,
    manager_addr: SocketAddr,
    manager_cert_sha256: CertFingerprint,
) -> std::io::Result<()> {
    let running = Running {
        endpoint_id,
        pid: std::process::id(),
        started: start_ticks(std::process::id()),
        manager_addr,
        manager_cert_sha256: Some(manager_cert_sha256),
    };
    write_whole(&dir.join("running.json"), &serde_json::to_vec(&running)?)
}

pub fn read_running(dir: &Path) -> Option<Running> {
    serde_json::from_slice(&std::fs::read(dir.join("running.json")).ok()?).ok()
}

pub fn clear_running(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("running.json"));
    let _ = std::fs::remove_file(dir.join("endpoint.pid"));
}

/// Whether the endpoint's process runs, as its files and the process table tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// `endpoint.pid` names a live process.
    Running { pid: u32 },
    /// Neither `endpoint.pid` nor `running.json`: stopped cleanly, or never started.
    NotRunning,
    /// A file names a process that is gone: it was killed (SIGKILL, the out-of-memory
    /// killer) or crashed, and could not clear its files. `left` is the file.
    Dead { pid: u32, left: &'static str },
}

/// The endpoint's process (see [`Process`]).
pub fn process(dir: &Path) -> Process {
    if let Some(recorded) = read_pid(dir) {
        if recorded.alive() {
            return Process::Running { pid: recorded.pid };
        }
        let left = if dir.join("running.json").exists() {
            "running.json"
        } else {
            "endpoint.pid"
        };
        return Process::Dead {
            pid: recorded.pid,
            left,
        };
    }
    match read_running(dir) {
        Some(r) if r.recorded().alive() => Process::Running { pid: r.pid },
        Some(r) => Process::Dead {
            pid: r.pid,
            left: "running.json",
        },
        None => Process::NotRunning,
    }
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

/// The certificate the manager listener proves itself with, and its key.
pub struct ManagerCert {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

impl ManagerCert {
    /// What managers pin (`FERRY_ENDPOINT_CERT_SHA256`).
    pub fn fingerprint(&self) -> CertFingerprint {
        CertFingerprint::of(&self.cert)
    }
}

const MANAGER_CERT: &str = "manager.cert.pem";
const MANAGER_KEY: &str = "manager.key.pem";

/// The manager listener's certificate, made if there is none yet: self-signed, for
/// [`ENDPOINT_CERT_NAME`], an ECDSA P-256 key (0600). It is kept across restarts because
/// managers started by hand pin its SHA-256; delete both files and restart to make a new
/// one (every manager then needs the new fingerprint).
pub fn manager_cert(dir: &Path) -> std::io::Result<ManagerCert> {
    let (cert_path, key_path) = (dir.join(MANAGER_CERT), dir.join(MANAGER_KEY));
    if cert_path.exists() && key_path.exists() {
        let unreadable = |path: &Path, e: &dyn std::fmt::Display| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: {e} (delete {MANAGER_CERT} and {MANAGER_KEY} to make new ones; managers then need the new fingerprint)",
                    path.display()
                ),
            )
        };
        let cert = CertificateDer::from_pem_file(&cert_path).map_err(|e| unreadable(&cert_path, &e))?;
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| unreadable(&key_path, &e))?;
        return Ok(ManagerCert { cert, key });
    }
    let made = rcgen::CertificateParams::new(vec![ENDPOINT_CERT_NAME.to_owned()]).and_then(|mut params| {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, ENDPOINT_CERT_NAME);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok((cert, key))
    });
    let (cert, key) = made.map_err(std::io::Error::other)?;
    // The key first: a start cut short between the two leaves no certificate, and the
    // next start makes both again.
    write_private(&key_path, &key.serialize_pem(), 0o600)?;
    std::fs::write(&cert_path, cert.pem())?;
    Ok(ManagerCert {
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    })
}

/// The fingerprint of the manager listener's certificate, if one was made (for
/// `status`, which makes nothing).
pub fn manager_cert_fingerprint(dir: &Path) -> Option<CertFingerprint> {
    let cert = CertificateDer::from_pem_file(dir.join(MANAGER_CERT)).ok()?;
    Some(CertFingerprint::of(&cert))
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_manager_certificate_is_made_once_and_kept_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(manager_cert_fingerprint(dir.path()), None);

        let made = manager_cert(dir.path()).unwrap();
        let again = manager_cert(dir.path()).unwrap();

        assert_eq!(made.fingerprint(), again.fingerprint(), "kept across starts");
        assert_eq!(manager_cert_fingerprint(dir.path()), Some(made.fingerprint()));
        let mode = std::fs::metadata(dir.path().join(MANAGER_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_lost_key_makes_a_new_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let made = manager_cert(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(MANAGER_KEY)).unwrap();

        let remade = manager_cert(dir.path()).unwrap();

        assert_ne!(made.fingerprint(), remade.fingerprint());
    }

    #[test]
    fn a_pid_file_names_its_process_only_while_that_process_runs() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(process(dir.path()), Process::NotRunning);

        write_pid(dir.path()).unwrap();
        let me = std::process::id();
        assert_eq!(process(dir.path()), Process::Running { pid: me });

        // The same pid, given since to another process (a later start time): not ours.
        let start = start_ticks(me).unwrap();
        std::fs::write(dir.path().join("endpoint.pid"), format!("{me} {}", start + 1)).unwrap();
        assert_eq!(
            process(dir.path()),
            Process::Dead {
                pid: me,
                left: "endpoint.pid"
            }
        );

        // A file from before start times were kept: the pid alone decides.
        std::fs::write(dir.path().join("endpoint.pid"), me.to_string()).unwrap();
        assert_eq!(process(dir.path()), Process::Running { pid: me });
    }
}
