//! The embedded server alone: what it does with clients that are wrong.

use std::time::Duration;

use ferry_broker::embedded::{Server, ServerOptions};
use ferry_broker::{Broker, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server(password: Option<&str>) -> Server {
    Server::start(
        "127.0.0.1:0".parse().expect("an address"),
        ServerOptions {
            password: password.map(str::to_owned),
        },
    )
    .await
    .expect("the embedded broker starts")
}

/// Everything the server sends until it closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .expect("reading the answer");
    answer
}

/// Sends `bytes` raw, then closes its side, and returns what the server answered before
/// it closed.
async fn answer_to(server: &Server, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.local_addr()).await.expect("connecting");
    stream.write_all(bytes).await.expect("writing");
    stream.shutdown().await.expect("closing the write half");
    String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned()
}

/// A length-prefixed frame around `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes = u32::try_from(payload.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

#[tokio::test]
async fn a_malformed_frame_gets_an_error_and_the_connection_closed() {
    let server = server(None).await;

    let answer = answer_to(&server, &frame(b"\x02\xff\xff\xff\xff garbage")).await;

    assert!(answer.contains("bad frame"), "{answer:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_frame_of_another_layout_version_is_refused_naming_it() {
    let server = server(None).await;

    let answer = answer_to(&server, &frame(b"\x09anything")).await;

    assert!(answer.contains("layout version 9"), "{answer:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_frame_is_refused_before_it_is_read() {
    let server = server(None).await;

    let answer = answer_to(&server, &[0xff, 0xff, 0xff, 0xff, 0]).await;

    assert!(answer.contains("bad frame"), "{answer:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_bad_client_leaves_the_others_served() {
    let server = server(None).await;
    let empty = answer_to(&server, &frame(b"")).await;
    let cut_short = answer_to(&server, b"\x00\x00\x00\x09abc").await;
    assert!(empty.contains("bad frame"), "{empty:?}");
    assert!(cut_short.contains("bad frame"), "{cut_short:?}");

    let broker = Broker::connect(&server.url("ok"), "ns", Default::default())
        .await
        .expect("a good client connects");
    broker.declare_core().await.expect("declaring");
    broker
        .publish(&broker.submissions_queue(), b"still here")
        .await
        .expect("publishing");
    assert_eq!(
        broker.queue_len(&broker.submissions_queue()).await.expect("len"),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_a_clear_error() {
    let server = server(Some("right")).await;
    let port = server.local_addr().port();

    let wrong = Broker::connect(
        &format!("ferry-mq://me:wrong@127.0.0.1:{port}"),
        "ns",
        Default::default(),
    )
    .await;
    let none = Broker::connect(
        &format!("ferry-mq://me@127.0.0.1:{port}"),
        "ns",
        Default::default(),
    )
    .await;
    let right = Broker::connect(&server.url("me"), "ns", Default::default()).await;

    let wrong = wrong.err().expect("a wrong password is refused").to_string();
    assert!(wrong.contains("wrong password for user 'me'"), "{wrong}");
    assert!(!wrong.contains("right"), "the error shows the password: {wrong}");
    let none = none.err().expect("no password is refused").to_string();
    assert!(none.contains("gave no password"), "{none}");
    assert_eq!(right.expect("the right password is taken").user(), "me");
    server.shutdown().await;
}

#[tokio::test]
async fn a_url_of_another_scheme_is_refused() {
    let refused = Broker::connect("http://127.0.0.1:1", "ns", Default::default()).await;

    assert!(matches!(refused, Err(Error::Scheme(s)) if s == "http"));
}

#[tokio::test]
async fn a_stopped_server_loses_its_connections() {
    let server = server(None).await;
    let broker = Broker::connect(&server.url("me"), "ns", Default::default())
        .await
        .expect("connecting");

    server.shutdown().await;

    let lost = tokio::time::timeout(Duration::from_secs(5), broker.lost())
        .await
        .expect("the connection is lost");
    assert!(lost.contains("stopping"), "{lost}");
}
