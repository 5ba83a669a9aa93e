//! The connection to the endpoint, and how each end proves itself to the other.
//!
//! The manager dials TCP (retrying while the endpoint starts or the node's network comes
//! up), then TLS 1.3: it accepts exactly the certificate whose SHA-256 it was given
//! (`FERRY_ENDPOINT_CERT_SHA256`, [`Pinned`]), for the name
//! [`ENDPOINT_CERT_NAME`] whatever address it dialled, and the handshake's signature
//! shows the endpoint holds that certificate's key. A stranger on the cluster's network
//! can then neither read the frames nor pose as the endpoint. Inside, the endpoint greets
//! with a nonce and the manager registers with an HMAC of it under the endpoint's secret,
//! which proves the manager to the endpoint.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferry_proto::frames::{
    CertFingerprint, ENDPOINT_CERT_NAME, FromManager, ManagerInfo, ToManager, registration_proof,
};
use futures_util::{SinkExt, StreamExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::{codec, encode};

/// How long the endpoint has to finish the TLS handshake and greet.
const GREETING_WITHIN: Duration = Duration::from_secs(30);

/// How long a manager the endpoint turns away keeps trying.
const RETRY_FOR: Duration = Duration::from_secs(60);

pub(crate) type ToEndpoint = FramedWrite<WriteHalf<TlsStream<TcpStream>>, LengthDelimitedCodec>;
pub(crate) type FromEndpoint = FramedRead<ReadHalf<TlsStream<TcpStream>>, LengthDelimitedCodec>;

/// Where the endpoint is and what proves each end: the pin of its certificate (in the
/// TLS connector) and its secret. Cheap to clone: the simulated managers share one.
#[derive(Clone)]
pub(crate) struct Link {
    endpoint: String,
    tls: TlsConnector,
    secret: Arc<str>,
}

impl Link {
    pub(crate) fn new(endpoint: &str, pin: CertFingerprint, secret: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            tls: connector(pin),
            secret: secret.into(),
        }
    }

    /// Connects, checks the endpoint's certificate, proves the secret and registers:
    /// the endpoint speaks first with a nonce. A connection the endpoint closes before
    /// it greets (it turns new ones away while 256 others are registering: a large
    /// block starting at once) is tried again, for a minute at most.
    pub(crate) async fn handshake(&self, info: ManagerInfo) -> anyhow::Result<(FromEndpoint, ToEndpoint)> {
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        // Managers turned away together come back spread out: a fraction of the delay
        // from the random bits of the manager's id.
        let spread = (info.manager_id.0.as_u128() % 1000) as f64 / 1000.0;
        loop {
            match self.try_handshake(info.clone()).await {
                Ok(connection) => return Ok(connection),
                Err(Failed::TurnedAway(e)) if started.elapsed() < RETRY_FOR => {
                    tracing::debug!(error = %format!("{e:#}"), "turned away by the endpoint; trying again");
                    tokio::time::sleep(delay + delay.mul_f64(spread)).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(Failed::TurnedAway(e) | Failed::Fatal(e)) => return Err(e),
            }
        }
    }

    async fn try_handshake(&self, info: ManagerInfo) -> Result<(FromEndpoint, ToEndpoint), Failed> {
        let endpoint = &self.endpoint;
        let tcp = connect(endpoint).await.map_err(Failed::Fatal)?;
        tcp.set_nodelay(true).map_err(|e| Failed::Fatal(e.into()))?;
        let greeted = tokio::time::timeout(GREETING_WITHIN, async {
            let name = ServerName::try_from(ENDPOINT_CERT_NAME).expect("a DNS name");
            let stream = self.tls.connect(name, tcp).await.map_err(|e| {
                if let Some(wrong) = wrong_certificate(&e) {
                    return Failed::Fatal(anyhow::anyhow!("refusing the endpoint at {endpoint}: {wrong}"));
                }
                let tls_error = e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
                let failed = anyhow::anyhow!(
                    "TLS handshake with the endpoint at {endpoint} failed: {e} (is it a Ferry endpoint of this version?)"
                );
                // A TLS error is the endpoint's answer; a connection closed or reset
                // under the handshake is the endpoint turning it away.
                if tls_error { Failed::Fatal(failed) } else { Failed::TurnedAway(failed) }
            })?;
            let (rd, wr) = tokio::io::split(stream);
            let mut from_endpoint = FramedRead::new(rd, codec());
            let hello = match next_frame(&mut from_endpoint).await {
                Some(Ok(hello)) => hello,
                Some(Err(e)) => return Err(Failed::Fatal(e.into())),
                None => {
                    return Err(Failed::TurnedAway(anyhow::anyhow!(
                        "the endpoint at {endpoint} closed the connection before greeting"
                    )));
                }
            };
            Ok((from_endpoint, FramedWrite::new(wr, codec()), hello))
        })
        .await
        .map_err(|_| {
            Failed::Fatal(anyhow::anyhow!(
                "the endpoint at {endpoint} did not greet within {}s",
                GREETING_WITHIN.as_secs()
            ))
        })?;
        let (from_endpoint, mut to_endpoint, hello) = greeted?;
        let register = async {
            let ToManager::Hello { nonce } = ferry_proto::codec::decode::<ToManager>(&hello)? else {
                anyhow::bail!(
                    "the endpoint at {endpoint} did not open with a greeting: is it a Ferry endpoint?"
                );
            };
            let proof = registration_proof(self.secret.as_bytes(), &nonce, info.manager_id);
            to_endpoint
                .send(encode(&FromManager::Register { info, proof })?)
                .await?;
            anyhow::Ok(())
        };
        register.await.map_err(Failed::Fatal)?;
        Ok((from_endpoint, to_endpoint))
    }
}

/// Why a try at the handshake failed.
enum Failed {
    /// The endpoint closed the connection before it greeted: worth another try.
    TurnedAway(anyhow::Error),
    /// Anything else (a certificate other than the pinned one, a stranger, no greeting
    /// in time): trying again would end the same way.
    Fatal(anyhow::Error),
}

/// The next frame from the endpoint; `None` once it closed the connection, with TLS's
/// close_notify or without (an endpoint that exits or is killed sends none; a frame cut
/// short is an error all the same).
pub(crate) async fn next_frame(from_endpoint: &mut FromEndpoint) -> Option<std::io::Result<BytesMut>> {
    match from_endpoint.next().await {
        Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
        other => other,
    }
}

/// The endpoint's certificate is not the one this manager pins.
#[derive(Debug, thiserror::Error)]
#[error(
    "its certificate's SHA-256 is {actual}, but FERRY_ENDPOINT_CERT_SHA256 expects {expected} \
     (another endpoint at that address, a man in the middle, or an endpoint whose certificate was made again: \
     `ferry-endpoint status NAME` shows the current one)"
)]
pub(crate) struct WrongCertificate {
    pub(crate) expected: CertFingerprint,
    pub(crate) actual: CertFingerprint,
}

/// The mismatch inside a failed handshake, if that is why it failed.
fn wrong_certificate(e: &std::io::Error) -> Option<&WrongCertificate> {
    let rustls::Error::InvalidCertificate(CertificateError::Other(other)) =
        e.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    other.0.downcast_ref::<WrongCertificate>()
}

/// Accepts exactly the end-entity certificate with the pinned SHA-256 (no chain, no
/// dates, no name: the pin is the identity), and checks the handshake's signatures with
/// its key as any verifier does.
#[derive(Debug)]
struct Pinned {
    pin: CertFingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = CertFingerprint::of(end_entity);
        if actual == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let wrong = WrongCertificate {
            expected: self.pin,
            actual,
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(wrong)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// TLS 1.3, trusting only the pinned certificate.
fn connector(pin: CertFingerprint) -> TlsConnector {
    let provider = ring();
    let verifier = Pinned {
        pin,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // A manager connects once and stays: nothing to resume.
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// TLS with *ring*, the workspace's one crypto provider. (rustls 0.23.48 deprecates
/// this constructor because *ring* has no post-quantum key exchange.)
#[allow(deprecated)]
fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Connects, retrying for about a minute: on a cluster the endpoint may be starting,
/// or a node's network coming up.
async fn connect(addr: &str) -> anyhow::Result<TcpStream> {
    let mut delay = Duration::from_millis(50);
    let mut last = None;
    for _ in 0..40 {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                tracing::debug!(error = %e, "endpoint not reachable yet");
                last = Some(e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    anyhow::bail!(
        "cannot connect to the endpoint at {addr}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ferry_proto::ManagerId;
    use ferry_proto::frames::proof_holds;
    use rustls::pki_types::PrivateKeyDer;
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::*;

    /// A certificate such as an endpoint makes, and a TLS server holding it.
    fn endpoint_certificate() -> (CertificateDer<'static>, TlsAcceptor) {
        let made = rcgen::generate_simple_self_signed(vec![ENDPOINT_CERT_NAME.to_owned()]).unwrap();
        let cert = made.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(ring())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        (cert, TlsAcceptor::from(Arc::new(config)))
    }

    fn info() -> ManagerInfo {
        ManagerInfo {
            manager_id: ManagerId::new(),
            hostname: "node1".to_owned(),
            workers: 1,
            capacity: 1,
            cores: 1,
            memory_bytes: 0,
            gpus: 0,
            tags: Vec::new(),
            block_id: None,
            block_end: None,
            priority: 0,
        }
    }

    /// Plays an endpoint for one connection: TLS, a greeting, and the first frame the
    /// manager sends back (or why there was none).
    async fn endpoint(listener: TcpListener, tls: TlsAcceptor) -> Result<FromManager, String> {
        let (tcp, _) = listener.accept().await.unwrap();
        let stream = tls.accept(tcp).await.map_err(|e| e.to_string())?;
        let (rd, wr) = tokio::io::split(stream);
        let hello = ferry_proto::codec::encode(&ToManager::Hello {
            nonce: b"nonce".to_vec(),
        })
        .unwrap();
        let mut writer = FramedWrite::new(wr, codec());
        writer.send(Bytes::from(hello)).await.map_err(|e| e.to_string())?;
        let frame = FramedRead::new(rd, codec())
            .next()
            .await
            .ok_or("closed")?
            .map_err(|e| e.to_string())?;
        ferry_proto::codec::decode(&frame).map_err(|e| e.to_string())
    }

    async fn listen() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        (listener, address)
    }

    #[tokio::test]
    async fn a_manager_pinning_the_endpoints_certificate_registers() {
        let (cert, tls) = endpoint_certificate();
        let (listener, address) = listen().await;
        let endpoint = tokio::spawn(endpoint(listener, tls));
        let info = info();

        let link = Link::new(&address, CertFingerprint::of(&cert), "secret");
        link.handshake(info.clone()).await.unwrap();

        let Ok(FromManager::Register { info: got, proof }) = endpoint.await.unwrap() else {
            panic!("no registration");
        };
        assert_eq!(got, info);
        assert!(proof_holds(b"secret", b"nonce", info.manager_id, &proof));
    }

    #[tokio::test]
    async fn a_manager_turned_away_before_the_greeting_tries_again() {
        let (cert, tls) = endpoint_certificate();
        let (listener, address) = listen().await;
        let endpoint = tokio::spawn(async move {
            // The first connection is closed at once, as past the endpoint's cap on
            // connections still registering.
            drop(listener.accept().await.unwrap());
            endpoint(listener, tls).await
        });

        let link = Link::new(&address, CertFingerprint::of(&cert), "secret");
        link.handshake(info()).await.unwrap();

        let seen = endpoint.await.unwrap();
        assert!(matches!(seen, Ok(FromManager::Register { .. })), "{seen:?}");
    }

    #[tokio::test]
    async fn a_manager_pinning_another_certificate_refuses_the_endpoint_naming_both_fingerprints() {
        let (cert, tls) = endpoint_certificate();
        let (listener, address) = listen().await;
        let endpoint = tokio::spawn(endpoint(listener, tls));
        let pin = CertFingerprint::of(b"another endpoint's certificate");

        let link = Link::new(&address, pin, "secret");
        let error = link.handshake(info()).await.unwrap_err().to_string();

        let actual = CertFingerprint::of(&cert);
        assert!(
            error.contains(&format!("SHA-256 is {actual}")) && error.contains(&format!("expects {pin}")),
            "{error}"
        );
        // The endpoint's handshake failed too: it greeted no one, and nothing was sent.
        let seen = endpoint.await.unwrap();
        assert!(seen.as_ref().is_err_and(|e| e.contains("alert")), "{seen:?}");
    }
}
