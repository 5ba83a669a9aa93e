//! Live events over the WebSocket: every step of every task of a session, in order; a
//! client that disconnects mid-run and resumes from its last cursor misses no event and
//! sees none twice; a subscription to single tasks gets their results.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ferry_proto::TaskId;
use ferry_tests::{Stack, json_args, python_source};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(stack: &Stack) -> Socket {
    let url = format!("{}/v1/ws", stack.url.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", stack.token).parse().unwrap(),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket");
    socket
}

async fn next_json(socket: &mut Socket, deadline: Instant) -> Value {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .expect("a message before the deadline")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Submits a session of `n` tasks that each sleep `secs` and return their input (with
/// `events: true`, its stream kept from the start, when `events`): its id, its tasks and
/// the function's id.
async fn slowish_session(stack: &Stack, n: usize, secs: f64, events: bool) -> (String, Vec<TaskId>, String) {
    let source = format!("def slowish(x):\n    import time\n    time.sleep({secs})\n    return x\n");
    let identity = stack
        .register("python", "slowish", &python_source("slowish", &source))
        .await;
    let tasks: Vec<Value> = (0..n)
        .map(|i| json!({"function_id": identity, "payload": json_args(&json!([i]))}))
        .collect();
    let body = json!({"endpoint_id": stack.endpoint_id.unwrap(), "tasks": tasks, "events": events});
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 200, "{answer}");
    let session = answer["batch_id"].as_str().unwrap().to_owned();
    let ids = serde_json::from_value(answer["task_ids"].clone()).unwrap();
    (session, ids, identity)
}

#[tokio::test]
async fn a_client_that_reconnects_with_its_cursor_misses_no_event() {
    let stack = Stack::start().await;
    const N: usize = 200;
    let (session, ids, identity) = slowish_session(&stack, N, 0.01, true).await;
    let deadline = Instant::now() + Duration::from_secs(120);

    // First connection: read until about a third of the tasks finished, then drop.
    let mut seen: Vec<(String, String, u64)> = Vec::new();
    let mut cursor = String::new();
    let mut finished: HashSet<String> = HashSet::new();
    {
        let mut socket = connect(&stack).await;
        let sub = json!({"op": "subscribe", "sessions": [session]});
        socket.send(Message::Text(sub.to_string().into())).await.unwrap();
        assert_eq!(next_json(&mut socket, deadline).await["type"], "subscribed");
        while finished.len() < N / 3 {
            let m = next_json(&mut socket, deadline).await;
            if m["type"] != "event" {
                continue;
            }
            cursor = m["cursor"].as_str().unwrap().to_owned();
            let task = m["task_id"].as_str().unwrap().to_owned();
            if m["state"] == "success" {
                assert!(
                    m["task"]["result"].is_string(),
                    "a terminal event carries the result: {m}"
                );
                finished.insert(task.clone());
            }
            seen.push((
                task,
                m["state"].as_str().unwrap().to_owned(),
                m["attempt"].as_u64().unwrap(),
            ));
        }
    }
    // Meanwhile the run goes on (more tasks finish while no one listens); then resume
    // after the last cursor.
    let (this, id, seen_done) = (&stack, &session, finished.len() as u64);
    this.wait_until(
        Duration::from_secs(60),
        "more tasks finish while disconnected",
        || async move {
            let (_, doc): (u16, Value) = this.get(&format!("/v1/sessions/{id}")).await;
            doc["counts"]["success"].as_u64().unwrap_or(0) > seen_done + 20
        },
    )
    .await;
    let mut socket = connect(&stack).await;
    let sub = json!({"op": "subscribe", "sessions": [session], "after": {session.clone(): cursor}});
    socket.send(Message::Text(sub.to_string().into())).await.unwrap();
    assert_eq!(next_json(&mut socket, deadline).await["type"], "subscribed");
    loop {
        let m = next_json(&mut socket, deadline).await;
        match m["type"].as_str() {
            Some("event") => {
                let task = m["task_id"].as_str().unwrap().to_owned();
                if m["state"] == "success" {
                    finished.insert(task.clone());
                }
                seen.push((
                    task,
                    m["state"].as_str().unwrap().to_owned(),
                    m["attempt"].as_u64().unwrap(),
                ));
            }
            Some("session") if m["status"] == "completed" => {
                assert_eq!(
                    finished.len(),
                    N,
                    "the session's status comes after its last event"
                );
                break;
            }
            _ => {}
        }
    }

    // Exactly the steps of each task's history after `received`, in order, once each.
    let mut per_task: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for (task, state, attempt) in seen {
        per_task.entry(task).or_default().push((state, attempt));
    }
    for id in &ids {
        let doc = stack.task(*id).await;
        let want: Vec<(String, u64)> = doc.history[1..]
            .iter()
            .map(|h| (h.state.clone(), u64::from(h.attempt)))
            .collect();
        assert_eq!(per_task.get(&id.to_string()), Some(&want), "task {id}");
    }

    // A subscription to single tasks of a session submitted without `events`.
    let ids2 = stack.submit(&[(&identity, &json_args(&json!([7])))]).await;
    let sub = json!({"op": "subscribe", "tasks": [ids2[0]]});
    socket.send(Message::Text(sub.to_string().into())).await.unwrap();
    loop {
        let m = next_json(&mut socket, deadline).await;
        if m["type"] == "event" && m["task_id"] == json!(ids2[0]) && m["state"] == "success" {
            assert!(m["task"]["result"].is_string(), "{m}");
            break;
        }
    }
    // A bad message is answered, and the socket stays.
    socket
        .send(Message::Text("{\"op\": \"dance\"}".into()))
        .await
        .unwrap();
    let m = loop {
        let m = next_json(&mut socket, deadline).await;
        if m["type"] != "event" && m["type"] != "session" {
            break m;
        }
    };
    assert_eq!(m["type"], "error");
    assert!(m["message"].as_str().unwrap().contains("dance"), "{m}");
    stack.shutdown().await;
}

/// Every socket of a web-service reads its events through one Redis connection; sockets
/// that subscribe live and sockets that replay a finished session from its start each
/// get every event, once.
#[tokio::test]
async fn many_sockets_share_one_redis_connection_and_each_gets_every_event() {
    let stack = Stack::start().await;
    let identity = stack
        .register(
            "python",
            "same",
            &python_source("same", "def same(x):\n    return x\n"),
        )
        .await;
    const N: usize = 100;
    const SOCKETS: usize = 12;
    let tasks: Vec<Value> = (0..N)
        .map(|i| json!({"function_id": identity, "payload": json_args(&json!([i]))}))
        .collect();
    let body = json!({"endpoint_id": stack.endpoint_id.unwrap(), "tasks": tasks, "events": true});
    let (status, answer): (u16, Value) = stack.post("/v1/tasks", &body).await;
    assert_eq!(status, 200, "{answer}");
    let session = answer["batch_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);

    // Reads one socket until its session's status: the tasks it saw succeed, and how
    // many events it saw in all.
    async fn read_all(mut socket: Socket, deadline: Instant) -> (HashSet<String>, usize) {
        let mut succeeded = HashSet::new();
        let mut events = 0;
        loop {
            let m = next_json(&mut socket, deadline).await;
            match m["type"].as_str() {
                Some("event") => {
                    events += 1;
                    if m["state"] == "success" {
                        assert!(
                            succeeded.insert(m["task_id"].as_str().unwrap().to_owned()),
                            "an event twice: {m}"
                        );
                    }
                }
                Some("session") => return (succeeded, events),
                _ => {}
            }
        }
    }
    let subscribe = json!({"op": "subscribe", "sessions": [session]}).to_string();
    let mut live = Vec::new();
    for _ in 0..SOCKETS {
        let mut socket = connect(&stack).await;
        socket
            .send(Message::Text(subscribe.clone().into()))
            .await
            .unwrap();
        assert_eq!(next_json(&mut socket, deadline).await["type"], "subscribed");
        live.push(tokio::spawn(read_all(socket, deadline)));
    }
    let namespace = stack.namespace.clone();
    let readers = || async {
        let redis = redis::Client::open(ferry_tests::redis_url()).unwrap();
        let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap();
        let name = format!("name={namespace}:events ");
        clients.lines().filter(|l| l.contains(&name)).count()
    };
    assert_eq!(readers().await, 1, "{SOCKETS} sockets, one reader connection");
    let mut first_events = None;
    for socket in live {
        let (succeeded, events) = socket.await.unwrap();
        assert_eq!(succeeded.len(), N, "a live socket sees every task succeed");
        assert_eq!(
            *first_events.get_or_insert(events),
            events,
            "each sees every event"
        );
    }
    // Replays of the finished session, all at once, on the same connection.
    let mut replays = Vec::new();
    for _ in 0..SOCKETS {
        let mut socket = connect(&stack).await;
        socket
            .send(Message::Text(subscribe.clone().into()))
            .await
            .unwrap();
        assert_eq!(next_json(&mut socket, deadline).await["type"], "subscribed");
        replays.push(tokio::spawn(read_all(socket, deadline)));
    }
    for socket in replays {
        let (succeeded, events) = socket.await.unwrap();
        assert_eq!(succeeded.len(), N, "a replay sees every task succeed");
        assert_eq!(Some(events), first_events, "a replay sees the same events");
    }
    assert_eq!(readers().await, 1, "still one reader connection");
    stack.shutdown().await;
}

/// A socket opened the way a browser must (no headers: the token as the subprotocol
/// `ferry.bearer.<hex>` beside `ferry.v1`), subscribed to a session's progress: it gets
/// `ferry.v1` back, `progress` messages with the counts and no events, then the final
/// `session`. A subprotocol token that is not hex, or not a token, is refused.
#[tokio::test]
async fn a_browser_socket_carries_its_token_as_a_subprotocol_and_follows_progress() {
    let stack = Stack::start().await;
    let url = format!("{}/v1/ws", stack.url.replacen("http://", "ws://", 1));
    let with_protocols = |protocols: String| {
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
        request
    };
    let hex_token: String = stack.token.bytes().map(|b| format!("{b:02x}")).collect();

    for bad in ["ferry.bearer.zz", "ferry.bearer.66795f6e6f7065"] {
        let refused = tokio_tungstenite::connect_async(with_protocols(format!("ferry.v1, {bad}"))).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{bad}")
            }
            other => panic!("{bad}: expected a 401, got {other:?}"),
        }
    }

    const N: u64 = 40;
    let (session, _, _) = slowish_session(&stack, N as usize, 0.02, false).await;

    let (mut socket, response) =
        tokio_tungstenite::connect_async(with_protocols(format!("ferry.v1, ferry.bearer.{hex_token}")))
            .await
            .expect("the socket opens with the token as a subprotocol");
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "ferry.v1");
    let sub = json!({"op": "subscribe", "sessions": [session], "progress": true});
    socket.send(Message::Text(sub.to_string().into())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    assert_eq!(next_json(&mut socket, deadline).await["type"], "subscribed");
    let mut progress = 0;
    loop {
        let m = next_json(&mut socket, deadline).await;
        match m["type"].as_str().unwrap() {
            "progress" => {
                progress += 1;
                assert_eq!(m["session_id"], session.as_str());
                assert_eq!(m["size"], N);
            }
            "session" => {
                assert_eq!(m["counts"]["success"], N, "{m}");
                break;
            }
            other => panic!("a progress subscription got a {other} message: {m}"),
        }
    }
    assert!(progress >= 1, "progress came before the end");
}
