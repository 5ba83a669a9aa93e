//! The manager listener: managers connect, the endpoint proves who it is, they prove
//! they belong to this endpoint, register, and exchange frames with the interchange.
//!
//! Each proves itself to the other. Every connection is TLS 1.3 first, with the
//! endpoint's self-signed certificate (`manager.cert.pem`, kept in its directory): a
//! manager accepts only the certificate whose SHA-256 it was given
//! (`FERRY_ENDPOINT_CERT_SHA256`), so a stranger on the cluster's network can neither
//! read the frames nor pose as the endpoint. Then the endpoint speaks: [`ToManager::Hello`]
//! with a fresh nonce. A manager answers with its registration and an HMAC of the nonce
//! under the endpoint's secret (`ferry_proto::frames::registration_proof`); one that
//! cannot is told why and disconnected before it sees a task.
//!
//! Until a connection has registered it is held on a short leash: the TLS handshake and
//! the registration together within [`REGISTER_WITHIN`], frames of 64 KiB at most, and
//! at most 256 such connections at once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_proto::frames::{CertFingerprint, FromManager, ManagerInfo, ToManager, proof_holds};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::interchange::Input;
use crate::state::{self, ManagerCert};

/// How long a new connection has to finish its TLS handshake and register.
pub const REGISTER_WITHIN: Duration = Duration::from_secs(15);

/// The largest frame a connection may send before it has proved the secret (a
/// registration is well under 1 KiB): a stranger cannot make the endpoint hold more.
const REGISTRATION_FRAME_BYTES: usize = 64 * 1024;

/// Connections that have not registered yet, at most; past that, new ones are closed
/// at once (managers that proved the secret are not counted).
const GREETING_AT_ONCE: usize = 256;

/// What each side of a manager connection proves itself with: the endpoint's
/// certificate (to managers, through TLS) and its secret (which managers prove they
/// know).
#[derive(Clone)]
pub struct Auth {
    tls: TlsAcceptor,
    /// The endpoint's manager secret (`manager.secret`).
    pub secret: Arc<str>,
    /// The certificate's SHA-256, which managers pin.
    pub cert_sha256: CertFingerprint,
}

impl Auth {
    /// From the certificate and the secret.
    pub fn new(cert: &ManagerCert, secret: &str) -> anyhow::Result<Self> {
        let mut config = rustls::ServerConfig::builder_with_provider(ring())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.clone()], cert.key.clone_key())
            .map_err(|e| {
                anyhow::anyhow!(
                    "the manager certificate cannot be used ({e}): delete manager.cert.pem and \
                     manager.key.pem in the endpoint's directory to make new ones (managers then \
                     need the new fingerprint)"
                )
            })?;
        // A manager connects once and stays: nothing to resume.
        config.send_tls13_tickets = 0;
        Ok(Self {
            tls: TlsAcceptor::from(Arc::new(config)),
            secret: secret.into(),
            cert_sha256: cert.fingerprint(),
        })
    }

    /// The endpoint directory's certificate and secret, each made at the first start.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        Self::new(&state::manager_cert(dir)?, &state::manager_secret(dir)?)
    }
}

/// TLS with *ring*, the workspace's one crypto provider. (rustls 0.23.48 deprecates
/// this constructor because *ring* has no post-quantum key exchange.)
#[allow(deprecated)]
fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec()
}

/// Accepts manager connections until the listener fails.
pub async fn accept(listener: TcpListener, auth: Auth, inputs: mpsc::UnboundedSender<Input>) {
    let greeting = Arc::new(tokio::sync::Semaphore::new(GREETING_AT_ONCE));
    // Connections turned away since the last warning: a burst of thousands of managers
    // logs one line a second, not one per connection.
    let mut turned_away = 0u64;
    let mut warned = std::time::Instant::now() - Duration::from_secs(1);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(permit) = greeting.clone().try_acquire_owned() else {
                    turned_away += 1;
                    if warned.elapsed() >= Duration::from_secs(1) {
                        tracing::warn!(%peer, turned_away, "closing connections: {GREETING_AT_ONCE} others have not registered yet (their managers try again)");
                        turned_away = 0;
                        warned = std::time::Instant::now();
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, peer, auth.clone(), inputs.clone(), permit));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot accept manager connections");
                return;
            }
        }
    }
}

/// A manager's connection once TLS is up.
pub type Connection = tokio_rustls::server::TlsStream<TcpStream>;

/// The two halves of a manager's connection, framed.
pub type Frames = FramedRead<ReadHalf<Connection>, LengthDelimitedCodec>;
pub type Writer = FramedWrite<WriteHalf<Connection>, LengthDelimitedCodec>;

/// Secures a new connection (TLS, the endpoint's certificate), greets it and checks its
/// registration: the manager's facts and its connection, or why it was turned away (it
/// is told too, when it proved nothing). The handshake and the registration together
/// have [`REGISTER_WITHIN`]; until it has proved the secret a connection may send frames
/// of [`REGISTRATION_FRAME_BYTES`] at most, after, of the codec's limit.
pub async fn greet(stream: TcpStream, auth: &Auth) -> Result<(ManagerInfo, Frames, Writer), String> {
    match tokio::time::timeout(REGISTER_WITHIN, secure_and_greet(stream, auth)).await {
        Ok(greeted) => greeted,
        Err(_) => Err(format!("did not register within {REGISTER_WITHIN:?}")),
    }
}

async fn secure_and_greet(stream: TcpStream, auth: &Auth) -> Result<(ManagerInfo, Frames, Writer), String> {
    let stream = auth
        .tls
        .accept(stream)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let (rd, wr) = tokio::io::split(stream);
    let mut frames = FramedRead::new(rd, codec(REGISTRATION_FRAME_BYTES));
    let mut writer = FramedWrite::new(wr, codec(ferry_proto::codec::MAX_MESSAGE_BYTES));
    let nonce: [u8; 32] = rand::random();
    let send = |m: &ToManager| ferry_proto::codec::encode(m).map(Bytes::from);
    let hello = send(&ToManager::Hello {
        nonce: nonce.to_vec(),
    })
    .map_err(|e| e.to_string())?;
    writer
        .send(hello)
        .await
        .map_err(|e| format!("cannot greet: {e}"))?;
    let first = match frames.next().await {
        Some(Ok(frame)) => ferry_proto::codec::decode::<FromManager>(&frame),
        Some(Err(e)) => return Err(format!("connection error: {e}")),
        None => return Err("closed before registering".to_owned()),
    };
    match first {
        Ok(FromManager::Register { info, proof })
            if proof_holds(auth.secret.as_bytes(), &nonce, info.manager_id, &proof) =>
        {
            frames
                .decoder_mut()
                .set_max_frame_length(ferry_proto::codec::MAX_MESSAGE_BYTES);
            Ok((info, frames, writer))
        }
        Ok(FromManager::Register { info, .. }) => {
            let reason = "its secret is not this endpoint's (FERRY_MANAGER_SECRET)".to_owned();
            if let Ok(frame) = send(&ToManager::Refused {
                reason: reason.clone(),
            }) {
                let _ = writer.send(frame).await;
            }
            Err(format!(
                "manager {} on {} refused: {reason}",
                info.manager_id, info.hostname
            ))
        }
        Ok(_) => Err("a manager must register first".to_owned()),
        Err(e) => Err(format!("malformed manager frame: {e}")),
    }
}

async fn serve(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    auth: Auth,
    inputs: mpsc::UnboundedSender<Input>,
    greeting: tokio::sync::OwnedSemaphorePermit,
) {
    let greeted = greet(stream, &auth).await;
    drop(greeting);
    let (info, mut frames, mut writer) = match greeted {
        Ok(greeted) => greeted,
        Err(why) => {
            tracing::warn!(%peer, "closing a manager connection: {why}");
            return;
        }
    };
    let manager = info.manager_id;
    let (tx, mut rx) = mpsc::unbounded_channel::<ToManager>();
    if inputs.send(Input::ManagerConnected { info, tx }).is_err() {
        return;
    }
    let writer_task = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let Ok(bytes) = ferry_proto::codec::encode(&message) else {
                continue;
            };
            if writer.send(Bytes::from(bytes)).await.is_err() {
                return;
            }
        }
        // The interchange let the manager go: end TLS properly (close_notify).
        let _ = SinkExt::<Bytes>::close(&mut writer).await;
    });
    let reason = loop {
        match frames.next().await {
            None => break "connection closed".to_owned(),
            // A manager that exits (or is killed) sends no close_notify.
            Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break "connection closed".to_owned();
            }
            Some(Err(e)) => break format!("connection error: {e}"),
            Some(Ok(frame)) => match ferry_proto::codec::decode::<FromManager>(&frame) {
                Ok(message) => {
                    if inputs.send(Input::FromManager { manager, message }).is_err() {
                        return;
                    }
                }
                Err(e) => break format!("malformed frame: {e}"),
            },
        }
    };
    writer_task.abort();
    let _ = inputs.send(Input::ManagerGone { manager, reason });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_with_another_key_stops_the_start_saying_what_to_do() {
        let (one, another) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        state::manager_cert(one.path()).unwrap();
        state::manager_cert(another.path()).unwrap();
        std::fs::copy(
            another.path().join("manager.key.pem"),
            one.path().join("manager.key.pem"),
        )
        .unwrap();

        let Err(e) = Auth::load(one.path()) else {
            panic!("a certificate and another's key were used");
        };

        assert!(
            e.to_string()
                .contains("delete manager.cert.pem and manager.key.pem"),
            "{e}"
        );
    }
}
