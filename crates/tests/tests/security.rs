//! Attacks tried against a running service, each answered as it should be: another
//! user's ids answer as unknown ones do, an id repeated in one request is read once, a
//! malformed cursor is refused for its own subscription only, an oversized WebSocket
//! message closes that socket, retries are capped, every error is JSON in one shape.

use std::time::{Duration, Instant};

use ferry_tests::Stack;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn websocket(stack: &Stack) -> Socket {
    let url = format!("{}/v1/ws", stack.url.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", stack.token).parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket")
        .0
}

async fn next_json(socket: &mut Socket, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .expect("a message in time")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_users_ids_answer_exactly_as_unknown_ones_do() {
    let stack = Stack::start().await;
    let f = stack.register("shell", "hi", "echo hi").await;
    let mallory = stack.create_user("mallory");
    let endpoint = stack.endpoint_id.unwrap();
    let unknown = uuid::Uuid::now_v7();
    for (theirs, none) in [
        (format!("/v1/functions/{f}"), format!("/v1/functions/{unknown}")),
        (
            format!("/v1/endpoints/{endpoint}"),
            format!("/v1/endpoints/{unknown}"),
        ),
    ] {
        let a = stack
            .request_as(Method::GET, &theirs, Some(&mallory))
            .send()
            .await
            .unwrap();
        let b = stack
            .request_as(Method::GET, &none, Some(&mallory))
            .send()
            .await
            .unwrap();
        assert_eq!((a.status().as_u16(), b.status().as_u16()), (404, 404), "{theirs}");
        let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
        assert_eq!(a["code"], b["code"]);
        assert!(!a["message"].as_str().unwrap().contains("another user"), "{a}");
    }
    // Submitting to another user's endpoint, or with their function, is the same.
    let body = json!({"endpoint_id": endpoint, "tasks": [{"function_id": f, "payload": "{}"}]});
    let r = stack
        .request_as(Method::POST, "/v1/tasks", Some(&mallory))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_repeated_in_a_status_request_is_read_once() {
    let stack = Stack::start().await;
    let f = stack.register("shell", "hi", "echo hi").await;
    let id = stack.submit(&[(&f, "")]).await[0];
    let body = json!({"task_ids": vec![id; 10_000]});
    let started = Instant::now();
    let (status, answer): (u16, Value) = stack.post("/v1/tasks/status", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["tasks"].as_object().unwrap().len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_cursor_is_refused_and_the_sockets_other_subscriptions_go_on() {
    let stack = Stack::start().await;
    let f = stack.register("shell", "hi", "echo hi").await;
    let mut socket = websocket(&stack).await;
    let ids = stack.submit(&[(&f, "")]).await;
    let session = stack.task(ids[0]).await.batch_id;
    socket
        .send(Message::Text(
            json!({"op": "subscribe", "sessions": [session]})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket, Duration::from_secs(10)).await["type"],
        "subscribed"
    );
    let other = stack.submit(&[(&f, "")]).await;
    let other_session = stack.task(other[0]).await.batch_id;
    let bad = json!({"op": "subscribe", "sessions": [other_session], "after": {other_session.to_string(): "not-a-cursor"}});
    socket.send(Message::Text(bad.to_string().into())).await.unwrap();
    // The first subscription still delivers its task's end.
    let mut refused = false;
    let mut finished = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(refused && finished) {
        let m = next_json(&mut socket, deadline.saturating_duration_since(Instant::now())).await;
        match m["type"].as_str() {
            Some("error") => {
                assert!(m["message"].as_str().unwrap().contains("not a cursor"), "{m}");
                refused = true;
            }
            Some("session") if m["session_id"] == json!(session) => finished = true,
            _ => {}
        }
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_websocket_message_closes_that_socket() {
    let stack = Stack::start().await;
    let mut socket = websocket(&stack).await;
    let huge = "x".repeat(2 << 20);
    let _ = socket.send(Message::Text(huge.into())).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closed the socket");
    // The service serves on.
    let (status, _): (u16, Value) = stack.get("/v1/version").await;
    assert_eq!(status, 200);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_are_capped_and_every_error_is_json_in_one_shape() {
    let stack = Stack::start().await;
    let f = stack.register("shell", "hi", "echo hi").await;
    let body = json!({
        "endpoint_id": stack.endpoint_id.unwrap(),
        "tasks": [{"function_id": f, "payload": "{}", "max_retries": 4294967295u32}],
    });
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("FERRY_MAX_RETRIES_LIMIT"),
        "{answer}"
    );
    for (method, path, code) in [
        (Method::GET, "/v1/no-such-thing", 404),
        (Method::DELETE, "/v1/version", 405),
        (Method::PUT, "/v1/tasks/status", 405),
        (Method::GET, "/v2/no-such-thing", 404),
    ] {
        let r = stack
            .request_as(method.clone(), path, Some(&stack.token))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code, "{method} {path}");
        let doc: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e})"));
        assert!(doc["code"].is_string() && doc["message"].is_string(), "{doc}");
    }
    stack.shutdown().await;
}

/// A receiver on loopback: `answer` is what it answers; it counts the calls it gets.
async fn receiver(
    answer: axum::http::StatusCode,
    location: Option<String>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counted = counted.clone();
            let location = location.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut response = axum::response::IntoResponse::into_response(answer);
                if let Some(to) = location {
                    response.headers_mut().insert("location", to.parse().unwrap());
                }
                response
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}/hook"), calls)
}

/// Submits one task with a webhook; the session id.
async fn session_with_hook(stack: &Stack, function: &str, url: &str) -> String {
    let body = json!({
        "endpoint_id": stack.endpoint_id.unwrap(),
        "tasks": [{"function_id": function, "payload": "{}"}],
        "callback_url": url,
    });
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["batch_id"].as_str().unwrap().to_owned()
}

async fn hook_error(stack: &Stack, session: &str) -> Option<String> {
    let (_, doc): (u16, Value) = stack.get(&format!("/v1/sessions/{session}")).await;
    doc["callback"]["last_error"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_to_internal_addresses_are_refused_in_every_spelling() {
    let stack = Stack::start().await;
    let f = stack.register("shell", "hi", "echo hi").await;
    let (url, calls) = receiver(axum::http::StatusCode::NO_CONTENT, None).await;
    let port = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    for target in [
        url.clone(),
        format!("http://2130706433:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ] {
        let session = session_with_hook(&stack, &f, &target).await;
        stack
            .wait_until(
                Duration::from_secs(30),
                &format!("{target} is refused"),
                || async {
                    hook_error(&stack, &session)
                        .await
                        .is_some_and(|e| e.contains("webhook refused"))
                },
            )
            .await;
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no call reached loopback"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_redirect_is_not_followed() {
    let stack = Stack::start_with_env(&[("FERRY_WEBHOOK_ALLOW", "127.0.0.0/8")]).await;
    let f = stack.register("shell", "hi", "echo hi").await;
    let (inside, reached) = receiver(axum::http::StatusCode::NO_CONTENT, None).await;
    let (outside, _) = receiver(axum::http::StatusCode::TEMPORARY_REDIRECT, Some(inside)).await;
    let session = session_with_hook(&stack, &f, &outside).await;
    stack
        .wait_until(
            Duration::from_secs(30),
            "the redirect counts as a failure",
            || async {
                hook_error(&stack, &session)
                    .await
                    .is_some_and(|e| e.contains("redirects are not followed"))
            },
        )
        .await;
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_receiver_that_never_answers_delays_only_its_own_sessions() {
    let stack = Stack::start_with_env(&[("FERRY_WEBHOOK_ALLOW", "127.0.0.0/8")]).await;
    let f = stack.register("shell", "hi", "echo hi").await;
    // Takes connections, never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_url = format!("http://{}/hook", hole.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    for _ in 0..12 {
        session_with_hook(&stack, &f, &hole_url).await;
    }
    let (good, calls) = receiver(axum::http::StatusCode::NO_CONTENT, None).await;
    let started = Instant::now();
    session_with_hook(&stack, &f, &good).await;
    stack
        .wait_until(
            Duration::from_secs(30),
            "the good receiver gets its first call",
            || async { calls.load(std::sync::atomic::Ordering::SeqCst) > 0 },
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the first delivery waited {:?} behind the silent receiver",
        started.elapsed()
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed_and_their_number_is_bounded() {
    use tokio::io::AsyncReadExt;
    let stack = Stack::start_with_env(&[
        ("FERRY_HEADER_TIMEOUT_SECS", "2"),
        ("FERRY_MAX_CONNECTIONS", "40"),
    ])
    .await;
    let addr = stack.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..80 {
        if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
            idle.push(s);
        }
    }
    // Every one of them is closed: past the cap at once, the others after 2 s of
    // saying nothing.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut n = 0;
        for s in &mut idle {
            let mut buf = [0u8; 1];
            if matches!(s.read(&mut buf).await, Ok(0) | Err(_)) {
                n += 1;
            }
        }
        n
    })
    .await
    .expect("the idle connections were closed in time");
    assert_eq!(closed, idle.len());
    // The service answers as before.
    let (status, _): (u16, Value) = stack.get("/v1/version").await;
    assert_eq!(status, 200);
    stack.shutdown().await;
}

/// The endpoint's own credential, as `configure` left it in its directory.
fn endpoint_credential(stack: &Stack) -> String {
    std::fs::read_to_string(stack.endpoint_dir().join("credential"))
        .expect("the endpoint's credential")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_credential_acts_for_its_endpoint_and_nothing_else() {
    let stack = Stack::start().await;
    let credential = endpoint_credential(&stack);
    assert!(credential.starts_with("fe_"));
    let config = std::fs::read_to_string(stack.endpoint_dir().join("config.toml")).unwrap();
    assert!(!config.contains(&stack.token), "the owner's token is not kept");
    let id = stack.endpoint_id.unwrap();
    let status = |method: Method, path: String, body: Option<Value>| {
        let r = stack.request_as(method, &path, Some(&credential));
        async move {
            let r = match body {
                Some(b) => r.json(&b),
                None => r,
            };
            r.send().await.unwrap().status().as_u16()
        }
    };
    // Its own endpoint: yes.
    assert_eq!(
        status(Method::GET, format!("/v1/endpoints/{id}"), None).await,
        200
    );
    // Anything a user does: no.
    assert_eq!(status(Method::GET, "/v1/endpoints".into(), None).await, 403);
    let f = stack.register("shell", "hi", "echo hi").await;
    let body = json!({"endpoint_id": id, "tasks": [{"function_id": f, "payload": "{}"}]});
    assert_eq!(status(Method::POST, "/v1/tasks".into(), Some(body)).await, 403);
    let body = json!({"name": "x", "kind": "shell", "code": "echo"});
    assert_eq!(
        status(Method::POST, "/v1/functions".into(), Some(body)).await,
        403
    );
    // Another endpoint's id: not for this credential.
    let body = json!({"name": "other", "endpoint_id": uuid::Uuid::now_v7()});
    assert_eq!(
        status(Method::POST, "/v1/endpoints".into(), Some(body)).await,
        403
    );
    let other = uuid::Uuid::now_v7();
    assert_eq!(
        status(Method::GET, format!("/v1/endpoints/{other}"), None).await,
        404
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_is_stored_only_by_the_tasks_endpoint_for_its_current_attempt_while_it_runs() {
    let stack = Stack::start().await;
    let credential = endpoint_credential(&stack);
    let f = stack.register("shell", "hi", "echo hi").await;
    let done = stack.submit(&[(&f, "")]).await[0];
    stack.wait_done(done, Duration::from_secs(30)).await;
    let slow = stack.register("shell", "slow", "sleep 30").await;
    let running = stack.submit(&[(&slow, "")]).await[0];
    stack
        .wait_until(Duration::from_secs(30), "the slow task runs", || async {
            stack.task(running).await.status == "running"
        })
        .await;
    let put = |task: ferry_proto::TaskId, attempt: u64, token: String| {
        let r = stack.request_as(
            Method::PUT,
            &format!("/v1/tasks/{task}/results/{attempt}"),
            Some(&token),
        );
        async move { r.body(vec![0u8; 1024]).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        put(running, 0, stack.token.clone()).await,
        403,
        "the owner's token may not"
    );
    assert_eq!(
        put(running, 4294967295, credential.clone()).await,
        409,
        "an attempt that is not current"
    );
    assert_eq!(
        put(done, 0, credential.clone()).await,
        409,
        "a finished task's result is kept"
    );
    assert_eq!(
        put(running, 0, credential.clone()).await,
        204,
        "its endpoint, its attempt, while it runs"
    );
    let mallory = stack.create_user("mallory");
    assert_eq!(put(running, 0, mallory).await, 403);
    let cancel: (u16, Value) = stack
        .post(&format!("/v1/tasks/{running}/cancel"), &json!({}))
        .await;
    assert_eq!(cancel.0, 200);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_listed_revoked_and_expire_within_seconds() {
    let stack = Stack::start().await;
    let admin = |args: &[&str]| stack.admin(args);
    let version_with = |token: String| {
        let r = stack.request_as(Method::GET, "/v1/endpoints", Some(&token));
        async move { r.send().await.unwrap().status().as_u16() }
    };
    // An expiring user.
    let short = admin(&["user", "create", "temp", "--expires", "2s"])
        .trim()
        .to_owned();
    assert_eq!(version_with(short.clone()).await, 200);
    stack
        .wait_until(Duration::from_secs(10), "the expired token is refused", || {
            let short = short.clone();
            async move { version_with(short).await == 401 }
        })
        .await;
    // A name is one user: asked again, create-user refuses and says how to get a token.
    let again = stack.admin_output(&["create-user", "tester"]);
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "a second user named tester was made");
    assert!(
        said.contains("a user named tester exists already") && said.contains("token create tester"),
        "{said}"
    );
    // A second token for the stack's user, listed by id, revoked by id.
    let users = admin(&["user", "list"]);
    assert!(users.contains("tester") && users.contains("temp"), "{users}");
    let extra = admin(&["token", "create", "tester", "--label", "ci"])
        .trim()
        .to_owned();
    assert_eq!(version_with(extra.clone()).await, 200);
    let listed = admin(&["token", "list", "tester"]);
    let line = listed
        .lines()
        .find(|l| l.contains(" ci"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(!listed.contains(&extra), "a list never shows a token");
    assert!(
        listed.contains("endpoint"),
        "the endpoint's credential is listed too: {listed}"
    );
    let id = line.split_whitespace().next().unwrap().to_owned();
    let said = admin(&["token", "revoke", &id]);
    assert!(said.contains("within 2 s"), "{said}");
    let revoked_at = Instant::now();
    stack
        .wait_until(Duration::from_secs(10), "the revoked token is refused", || {
            let extra = extra.clone();
            async move { version_with(extra).await == 401 }
        })
        .await;
    assert!(
        revoked_at.elapsed() < Duration::from_secs(4),
        "{:?}",
        revoked_at.elapsed()
    );
    assert_eq!(
        version_with(stack.token.clone()).await,
        200,
        "the other tokens work on"
    );
    stack.shutdown().await;
}
