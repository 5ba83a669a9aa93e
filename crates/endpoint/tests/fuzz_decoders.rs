//! The endpoint's manager port against arbitrary bytes. Whoever reaches the port may send
//! anything before proving the secret, so its reader (TLS, then frames of a 4-byte
//! big-endian length, at most [`codec::MAX_MESSAGE_BYTES`], then a codec message) is
//! fuzzed here through the public [`managers::greet`] on a real loopback connection:
//! arbitrary bytes in plain text (no TLS); inside TLS, arbitrary byte streams, frames
//! with huge, zero or lying lengths, cut short, or with garbage after; and a valid
//! registration followed by garbage, read on as the endpoint's connection loop reads a
//! registered manager. The answer is a refusal or a registration, in time, never a
//! panic, and a length past the limit is refused before its bytes arrive. A client
//! without TLS hears no greeting at all.
//!
//! The frame bodies themselves are fuzzed harder, type by type, in
//! `crates/proto/tests/fuzz.rs`. This file is a seeded random loop rather than proptest
//! (not a dependency of this crate): `FERRY_FUZZ_CASES` cases (default 256),
//! `FERRY_FUZZ_SEED` to replay a failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_endpoint::managers::{self, Auth, Frames};
use ferry_endpoint::state;
use ferry_proto::codec;
use ferry_proto::frames::{ENDPOINT_CERT_NAME, FromManager, ManagerInfo, ToManager, registration_proof};
use ferry_proto::messages::{Completion, TaskResult};
use ferry_proto::{ManagerId, TaskId};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

/// Longer than any case needs, far shorter than the 15 s a silent manager is given.
const IN_TIME: Duration = Duration::from_secs(5);

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// An endpoint's manager port: its certificate and secret (made in a temp dir, as a
/// first start makes them), and a TLS client that trusts that certificate, as a manager
/// pinning it does.
struct Port {
    _dir: tempfile::TempDir,
    auth: Auth,
    client: TlsConnector,
}

impl Port {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::load(dir.path()).unwrap();
        let cert = state::manager_cert(dir.path()).unwrap().cert;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        #[allow(deprecated)] // ring, the workspace's provider, has no post-quantum key exchange
        let ring = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(ring)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            _dir: dir,
            auth,
            client: TlsConnector::from(Arc::new(config)),
        }
    }

    fn secret(&self) -> &[u8] {
        self.auth.secret.as_bytes()
    }

    /// A TLS connection to the port, as a manager makes it.
    async fn connect(
        &self,
        address: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(address).await?;
        let name = ENDPOINT_CERT_NAME.try_into().expect("a DNS name");
        self.client.connect(name, tcp).await
    }
}

/// What a client sends the manager port.
#[derive(Debug, Clone)]
enum Stream {
    /// Bytes straight on TCP, without TLS: the endpoint must turn it away.
    Plaintext(Vec<u8>),
    /// Bytes inside TLS, no registration: the endpoint must turn it away.
    Unproven(Vec<u8>),
    /// A registration that proves the secret, then these bytes.
    Registered { info: ManagerInfo, then: Vec<u8> },
}

fn bytes(rng: &mut StdRng, most: usize) -> Vec<u8> {
    let mut out = vec![0; rng.random_range(0..=most)];
    rng.fill(&mut out[..]);
    out
}

fn text(rng: &mut StdRng) -> String {
    String::from_utf8_lossy(&bytes(rng, 16)).into_owned()
}

fn manager_info(rng: &mut StdRng) -> ManagerInfo {
    ManagerInfo {
        manager_id: ManagerId(uuid::Uuid::from_u128(rng.random())),
        hostname: text(rng),
        workers: rng.random(),
        capacity: rng.random(),
        cores: rng.random(),
        memory_bytes: rng.random(),
        gpus: rng.random(),
        tags: (0..rng.random_range(0..3)).map(|_| text(rng)).collect(),
        block_id: rng.random_bool(0.5).then(|| text(rng)),
        block_end: rng.random_bool(0.5).then(|| rng.random()),
        priority: rng.random(),
    }
}

/// A well-formed message a manager might send.
fn from_manager(rng: &mut StdRng) -> FromManager {
    let task_id = TaskId(uuid::Uuid::from_u128(rng.random()));
    match rng.random_range(0..6) {
        0 => FromManager::Register {
            info: manager_info(rng),
            proof: bytes(rng, 40),
        },
        1 => FromManager::Heartbeat {
            at: rng.random(),
            idle_workers: rng.random(),
        },
        2 => FromManager::Started {
            task_id,
            attempt: rng.random(),
            at: rng.random(),
        },
        3 => FromManager::Lost {
            task_id,
            attempt: rng.random(),
            at: rng.random(),
            reason: text(rng),
        },
        4 => FromManager::Draining {
            returned: vec![(task_id, rng.random()); rng.random_range(0..4)],
        },
        _ => FromManager::Finished(TaskResult {
            task_id,
            attempt: rng.random(),
            steps: Vec::new(),
            completion: Completion::Success {
                result: bytes(rng, 64).into(),
            },
            group: None,
            finished_at: rng.random(),
            stdout: text(rng),
            stderr: text(rng),
        }),
    }
}

/// Frames of every sort, most well-formed, some lying about their length, the stream
/// perhaps cut short or followed by garbage.
fn frames(rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.random_range(1..4) {
        let mut body = match rng.random_range(0..4) {
            0 => bytes(rng, 64),
            _ => codec::encode(&from_manager(rng)).expect("a valid message encodes"),
        };
        if rng.random_bool(0.3) && !body.is_empty() {
            let i = rng.random_range(0..body.len());
            body[i] ^= 1 << rng.random_range(0..8);
        }
        let real = body.len() as u32;
        let max = codec::MAX_MESSAGE_BYTES as u32;
        let length = match rng.random_range(0..10) {
            0 => rng.random(),
            1 => [0, max - 1, max, max + 1, u32::MAX][rng.random_range(0..5)],
            2 => real.saturating_add(rng.random_range(1..16)),
            3 => real.saturating_sub(rng.random_range(1..16)),
            _ => real,
        };
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&body);
    }
    if rng.random_bool(0.3) {
        out.truncate(rng.random_range(0..=out.len()));
    }
    if rng.random_bool(0.3) {
        out.extend(bytes(rng, 32));
    }
    out
}

fn stream(rng: &mut StdRng) -> Stream {
    match rng.random_range(0..5) {
        0 => Stream::Unproven(bytes(rng, 256)),
        1 | 2 => Stream::Unproven(frames(rng)),
        3 => Stream::Plaintext(if rng.random_bool(0.5) {
            frames(rng)
        } else {
            bytes(rng, 256)
        }),
        _ => Stream::Registered {
            info: manager_info(rng),
            then: if rng.random_bool(0.5) {
                frames(rng)
            } else {
                bytes(rng, 128)
            },
        },
    }
}

fn frame(message: &FromManager) -> Vec<u8> {
    let body = codec::encode(message).expect("a valid message encodes");
    [&(body.len() as u32).to_be_bytes()[..], &body].concat()
}

/// Plays a manager: sends `stream` (over TLS unless it is plain text, proving the secret
/// first if it registers), then closes its side. Errors are the endpoint hanging up,
/// which it may.
async fn send(port: Arc<Port>, address: SocketAddr, stream: Stream) {
    if let Stream::Plaintext(bytes) = stream {
        let Ok(mut conn) = TcpStream::connect(address).await else {
            return;
        };
        let _ = conn.write_all(&bytes).await;
        let _ = conn.shutdown().await;
        return;
    }
    let Ok(mut conn) = port.connect(address).await else {
        return;
    };
    let then = match stream {
        Stream::Plaintext(_) => unreachable!("sent above"),
        Stream::Unproven(bytes) => bytes,
        Stream::Registered { info, then } => {
            let mut length = [0; 4];
            if conn.read_exact(&mut length).await.is_err() {
                return;
            }
            let mut hello = vec![0; u32::from_be_bytes(length) as usize];
            if conn.read_exact(&mut hello).await.is_err() {
                return;
            }
            let Ok(ToManager::Hello { nonce }) = codec::decode(&hello) else {
                panic!("the endpoint did not open with a hello");
            };
            let proof = registration_proof(port.secret(), &nonce, info.manager_id);
            [frame(&FromManager::Register { info, proof }), then].concat()
        }
    };
    let _ = conn.write_all(&then).await;
    let _ = conn.shutdown().await;
}

/// Reads a registered manager's frames until the connection ends or one is malformed,
/// as the endpoint's connection loop does; how many were well-formed.
async fn read_on(mut frames: Frames) -> usize {
    let mut read = 0;
    while let Some(Ok(frame)) = frames.next().await {
        if codec::decode::<FromManager>(&frame).is_err() {
            break;
        }
        read += 1;
    }
    read
}

/// What the endpoint made of a connection, read to its end.
async fn greet_and_read_on(listener: &TcpListener, port: &Port) -> Result<usize, String> {
    let (conn, _) = listener.accept().await.expect("accept");
    let (_, frames, _writer) = managers::greet(conn, &port.auth).await?;
    Ok(read_on(frames).await)
}

#[tokio::test]
async fn the_manager_port_answers_any_byte_stream_in_time_without_panicking() {
    let cases = env_number("FERRY_FUZZ_CASES").unwrap_or(256);
    let seed = env_number("FERRY_FUZZ_SEED").unwrap_or_else(rand::random);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let port = Arc::new(Port::new());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut refusals = BTreeMap::<&str, u64>::new();
    let mut read_after_registering = 0;
    for case in 0..cases {
        let input = stream(&mut rng);
        let replay = || format!("case {case} of FERRY_FUZZ_SEED={seed}: {input:?}");
        let client = tokio::spawn(send(port.clone(), address, input.clone()));
        let answer = tokio::time::timeout(IN_TIME, greet_and_read_on(&listener, &port))
            .await
            .unwrap_or_else(|_| panic!("no answer within {IN_TIME:?}: {}", replay()));
        match (&input, &answer) {
            (Stream::Unproven(_) | Stream::Plaintext(_), Ok(_)) => {
                panic!("registered without a proof: {}", replay())
            }
            (Stream::Registered { .. }, Err(why)) => {
                panic!("refused a valid registration ({why}): {}", replay())
            }
            (_, Ok(read)) => read_after_registering += read,
            (_, Err(why)) => *refusals.entry(refusal_kind(why)).or_default() += 1,
        }
        if let Err(e) = client.await {
            panic!("the client failed ({e}): {}", replay());
        }
    }
    eprintln!(
        "{cases} cases of FERRY_FUZZ_SEED={seed}: refused {refusals:?}; \
         {read_after_registering} frames read after a registration"
    );
    if cases >= 100 {
        // Not vacuous: lengths past the limit and cut frames (connection errors),
        // malformed bodies, and frames read after a registration all came up.
        for kind in ["connection error", "malformed", "TLS handshake failed"] {
            assert!(refusals.contains_key(kind), "no {kind} in {cases} cases");
        }
        assert!(read_after_registering > 0, "no frame read after a registration");
    }
}

/// The kind of a refusal from `greet`, for the tally.
fn refusal_kind(why: &str) -> &'static str {
    [
        "TLS handshake failed",
        "connection error",
        "malformed",
        "closed before registering",
        "a manager must register first",
    ]
    .into_iter()
    .find(|kind| why.starts_with(kind))
    .unwrap_or(if why.contains("refused") {
        "proof refused"
    } else {
        "other"
    })
}

/// The reader refuses a length past the limit from its 4 bytes alone: it neither waits
/// for the bytes announced nor keeps room for them.
#[tokio::test]
async fn a_length_past_the_limit_is_refused_before_its_bytes_arrive() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let port = Arc::new(Port::new());
    // Before a connection proves the secret, a frame may be 64 KiB at most.
    for length in [
        64 * 1024 + 1,
        codec::MAX_MESSAGE_BYTES as u32 + 1,
        1 << 31,
        u32::MAX,
    ] {
        let client = tokio::spawn({
            let port = port.clone();
            async move {
                let mut client = port.connect(address).await.unwrap();
                client.write_all(&length.to_be_bytes()).await.unwrap();
                client.write_all(b"and a few bytes of the rest").await.unwrap();
                client.flush().await.unwrap();
                // The connection stays open until the endpoint ends it: only the length
                // can end the wait.
                let mut rest = Vec::new();
                let _ = client.read_to_end(&mut rest).await;
            }
        });
        let (conn, _) = listener.accept().await.unwrap();
        let answer = tokio::time::timeout(IN_TIME, managers::greet(conn, &port.auth))
            .await
            .unwrap_or_else(|_| panic!("a length of {length} kept the endpoint waiting"));
        let Err(why) = answer else {
            panic!("a length of {length} registered");
        };
        assert!(why.starts_with("connection error"), "{why}");
        client.await.unwrap();
    }
}

/// The greeting's nonce never crosses the network in clear text: a client that does not
/// start TLS hears nothing, and is closed when the time to register is up.
#[tokio::test]
async fn a_client_without_tls_hears_no_greeting_and_is_closed_in_time() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let port = Port::new();
    let client = tokio::spawn(async move {
        let mut conn = TcpStream::connect(address).await.unwrap();
        let mut heard = Vec::new();
        let _ = conn.read_to_end(&mut heard).await;
        heard
    });
    let (conn, _) = listener.accept().await.unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(
        managers::REGISTER_WITHIN + IN_TIME,
        managers::greet(conn, &port.auth),
    )
    .await
    .expect("a stalled handshake is cut off at the deadline to register");
    let Err(why) = answer else {
        panic!("registered without TLS");
    };
    assert!(why.starts_with("did not register within"), "{why}");
    assert!(started.elapsed() >= managers::REGISTER_WITHIN);
    assert_eq!(client.await.unwrap(), b"", "the client heard something");
}

/// A manager that sends its frames in clear text (one from before the port spoke TLS)
/// is refused by the TLS handshake, and hears at most a TLS alert, never a greeting.
#[tokio::test]
async fn a_manager_speaking_plain_text_is_refused_and_hears_no_greeting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let port = Port::new();
    let register = frame(&FromManager::Register {
        info: manager_info(&mut StdRng::seed_from_u64(7)),
        proof: registration_proof(port.secret(), b"a guess", ManagerId::new()),
    });
    let client = tokio::spawn(async move {
        let mut conn = TcpStream::connect(address).await.unwrap();
        conn.write_all(&register).await.unwrap();
        let mut heard = Vec::new();
        let _ = conn.read_to_end(&mut heard).await;
        heard
    });
    let (conn, _) = listener.accept().await.unwrap();
    let answer = tokio::time::timeout(IN_TIME, managers::greet(conn, &port.auth))
        .await
        .expect("refused in time");
    let Err(why) = answer else {
        panic!("registered without TLS");
    };
    assert!(why.starts_with("TLS handshake failed"), "{why}");
    let heard = client.await.unwrap();
    // 21: a TLS alert record.
    assert!(
        heard.is_empty() || heard[0] == 21,
        "the client heard something other than an alert: {heard:?}"
    );
}

#[tokio::test]
async fn a_registration_followed_by_garbage_registers_then_stops_at_the_garbage() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let heartbeat = frame(&FromManager::Heartbeat {
        at: 1,
        idle_workers: 2,
    });
    let garbage = [&[0, 0, 0, 5][..], b"\x01\xff\xff\xff\xff", b"more"].concat();
    let port = Arc::new(Port::new());
    let client = tokio::spawn(send(
        port.clone(),
        address,
        Stream::Registered {
            info: manager_info(&mut StdRng::seed_from_u64(7)),
            then: [heartbeat, garbage].concat(),
        },
    ));
    let read = tokio::time::timeout(IN_TIME, greet_and_read_on(&listener, &port))
        .await
        .expect("in time")
        .expect("registered");
    assert_eq!(
        read, 1,
        "the heartbeat, then the malformed frame ends the connection"
    );
    client.await.unwrap();
}
