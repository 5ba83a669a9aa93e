//! The authorization matrix: every route of both APIs, tried by every kind of caller,
//! answers what `docs/security.md` says.
//!
//! Callers: alice (the owner of everything below), carol (another user), bob (alice's
//! function and endpoint are shared with him; her tasks are not), alice's endpoint's own
//! credential, and four that are nobody: no token, a malformed header, a revoked token
//! and an expired one (each 401 on every route but the version routes).
//!
//! Alice's task runs (a 30 s sleep) while the matrix is tried, so the endpoint-only data
//! plane routes are tried on an unfinished task; the rows that cancel come last.

use std::time::Duration;

use ferry_tests::{Part, Stack};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WITHIN: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Who {
    Owner,
    Other,
    Shared,
    Endpoint,
    NoToken,
    Malformed,
    Revoked,
    Expired,
}

const EVERYONE: [Who; 8] = [
    Who::Owner,
    Who::Other,
    Who::Shared,
    Who::Endpoint,
    Who::NoToken,
    Who::Malformed,
    Who::Revoked,
    Who::Expired,
];

struct Callers {
    owner: String,
    other: String,
    shared: String,
    endpoint: String,
    revoked: String,
    expired: String,
}

impl Callers {
    /// The Authorization header `who` sends, if any.
    fn header(&self, who: Who) -> Option<String> {
        let bearer = |t: &str| Some(format!("Bearer {t}"));
        match who {
            Who::Owner => bearer(&self.owner),
            Who::Other => bearer(&self.other),
            Who::Shared => bearer(&self.shared),
            Who::Endpoint => bearer(&self.endpoint),
            Who::NoToken => None,
            Who::Malformed => Some(format!("Basic {}", self.owner)),
            Who::Revoked => bearer(&self.revoked),
            Who::Expired => bearer(&self.expired),
        }
    }
}

async fn send(
    stack: &Stack,
    method: Method,
    path: &str,
    header: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = stack.http.request(method, format!("{}{path}", stack.url));
    if let Some(h) = header {
        request = request.header("Authorization", h);
    }
    if let Some(b) = body {
        request = request.json(b);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// One route and what each caller that is somebody gets (owner, other, shared,
/// endpoint); nobody gets 401 unless `open`.
struct Row {
    method: Method,
    path: String,
    body: Option<Value>,
    expect: [u16; 4],
    open: bool,
}

fn row(method: Method, path: impl Into<String>, body: Option<Value>, expect: [u16; 4]) -> Row {
    Row {
        method,
        path: path.into(),
        body,
        expect,
        open: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_every_kind_of_caller_as_documented() {
    let mut stack = Stack::start().await;
    let alice = stack.token.clone();
    let bob = stack.create_user("bob");
    let carol = stack.create_user("carol");
    let (_, me) = send(
        &stack,
        Method::GET,
        "/v1/whoami",
        Some(&format!("Bearer {bob}")),
        None,
    )
    .await;
    let bob_id = me["user_id"].as_str().unwrap().to_owned();
    let endpoint = stack.endpoint_id.unwrap().to_string();

    // Alice shares her endpoint with bob (its config) ...
    stack.stop(Part::Endpoint);
    let config = stack.endpoint_dir().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("shared_with = [\"{bob_id}\"]\n{text}")).unwrap();
    stack.start_part(Part::Endpoint);
    let as_bob = format!("Bearer {bob}");
    stack
        .wait_until(WITHIN, "the endpoint shared with bob and online", || async {
            let (status, doc) = send(
                &stack,
                Method::GET,
                &format!("/v1/endpoints/{endpoint}"),
                Some(&as_bob),
                None,
            )
            .await;
            status == 200 && doc["status"] == "online"
        })
        .await;
    let endpoint_credential = std::fs::read_to_string(stack.endpoint_dir().join("credential"))
        .unwrap()
        .trim()
        .to_owned();
    // ... and a function.
    let function = stack.register("shell", "sleeper", "sleep 30").await;
    let (status, doc) = send(
        &stack,
        Method::PUT,
        &format!("/v1/functions/{function}/sharing"),
        Some(&format!("Bearer {alice}")),
        Some(&json!({"shared_with": [bob_id]})),
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    // Her session of one task, running; a Globus Compute task group.
    let one = json!({"endpoint_id": endpoint, "tasks": [{"function_id": function, "payload": ""}]});
    let (status, doc) = send(
        &stack,
        Method::POST,
        "/v1/sessions",
        Some(&format!("Bearer {alice}")),
        Some(&json!({"sessions": [one.clone()]})),
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    let session = doc["sessions"][0]["session_id"].as_str().unwrap().to_owned();
    let task = doc["sessions"][0]["task_ids"][0].as_str().unwrap().to_owned();
    let group = uuid::Uuid::new_v4().to_string();
    let globus = json!({"tasks": {function.clone(): [""]}, "task_group_id": group});
    let (status, doc) = send(
        &stack,
        Method::POST,
        &format!("/v3/endpoints/{endpoint}/submit"),
        Some(&format!("Bearer {alice}")),
        Some(&globus),
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    stack
        .wait_until(WITHIN, "alice's task running", || async {
            let (_, doc) = send(
                &stack,
                Method::GET,
                &format!("/v1/tasks/{task}"),
                Some(&format!("Bearer {alice}")),
                None,
            )
            .await;
            doc["status"] == "running"
        })
        .await;
    let attempt = 0;

    // Nobodies: a revoked token and an expired one.
    let revoked = stack.admin(&["token", "create", "tester", "--label", "revoked"]);
    let listed = stack.admin(&["token", "list", "tester"]);
    let id = listed
        .lines()
        .find(|l| l.contains(" revoked"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{listed}"))
        .to_owned();
    stack.admin(&["token", "revoke", &id]);
    let expired = stack.admin(&["token", "create", "tester", "--expires", "1s"]);
    let as_expired = format!("Bearer {expired}");
    stack
        .wait_until(WITHIN, "the expired token is refused", || async {
            send(&stack, Method::GET, "/v1/whoami", Some(&as_expired), None)
                .await
                .0
                == 401
        })
        .await;
    let callers = Callers {
        owner: alice.clone(),
        other: carol,
        shared: bob,
        endpoint: endpoint_credential,
        revoked,
        expired,
    };

    let things = Things {
        function,
        bob_id,
        endpoint,
        one,
        group,
        task: task.clone(),
        session,
        attempt,
    };
    let mut rows = rows(&things);
    // The owner's cancel goes last in each row: others are tried while the task runs.
    let order = [
        Who::NoToken,
        Who::Malformed,
        Who::Revoked,
        Who::Expired,
        Who::Other,
        Who::Shared,
        Who::Endpoint,
        Who::Owner,
    ];
    assert_eq!(order.len(), EVERYONE.len());
    let mut wrong = Vec::new();
    let mut tried = 0;
    for r in rows.drain(..) {
        for who in order {
            let want = match who {
                Who::Owner => r.expect[0],
                Who::Other => r.expect[1],
                Who::Shared => r.expect[2],
                Who::Endpoint => r.expect[3],
                _ if r.open => 200,
                _ => 401,
            };
            let header = callers.header(who);
            let (got, body) = send(
                &stack,
                r.method.clone(),
                &r.path,
                header.as_deref(),
                r.body.as_ref(),
            )
            .await;
            tried += 1;
            if got != want {
                wrong.push(format!(
                    "{} {} as {who:?}: {got}, expected {want}: {body}",
                    r.method, r.path
                ));
            }
            // Every refusal is Ferry's one error shape.
            if got >= 400 {
                assert!(
                    body["code"].is_string() && body["message"].is_string(),
                    "{} {} as {who:?}: {body}",
                    r.method,
                    r.path
                );
            }
            // A status read of another's task tells nothing about it.
            if got == 200 && matches!(who, Who::Other | Who::Shared) {
                if r.path == "/v1/tasks/status" {
                    assert_eq!(
                        (&body["tasks"], &body["unknown"]),
                        (&json!({}), &json!([task])),
                        "{body}"
                    );
                } else if r.path == "/v2/batch_status" {
                    assert!(!body.to_string().contains(&task), "{body}");
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {tried} answers were not as documented:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // The WebSocket: users only.
    let url = format!("{}/v1/ws", stack.url.replacen("http://", "ws://", 1));
    for who in EVERYONE {
        let mut request = url.clone().into_client_request().unwrap();
        if let Some(h) = callers.header(who) {
            request.headers_mut().insert("Authorization", h.parse().unwrap());
        }
        let got = match tokio_tungstenite::connect_async(request).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("{who:?}: {e}"),
        };
        let want = match who {
            Who::Owner | Who::Other | Who::Shared => 101,
            Who::Endpoint => 403,
            _ => 401,
        };
        assert_eq!(got, want, "GET /v1/ws as {who:?}");
    }
    stack.shutdown().await;
}

/// What the matrix is tried on: alice's things, and bob's id.
struct Things {
    function: String,
    bob_id: String,
    endpoint: String,
    one: Value,
    group: String,
    task: String,
    session: String,
    attempt: u32,
}

/// Every route, and what the owner, another user, the shared user and the endpoint's
/// credential get from it.
fn rows(t: &Things) -> Vec<Row> {
    let Things {
        function,
        bob_id,
        endpoint,
        one,
        group,
        task,
        session,
        attempt,
    } = t;
    let attempt = *attempt;
    use Method as M;
    let ep = &endpoint;
    let new_endpoint = json!({"name": "another"});
    vec![
        Row {
            open: true,
            ..row(M::GET, "/v1/version", None, [200, 200, 200, 200])
        },
        Row {
            open: true,
            ..row(M::GET, "/v2/version?service=all", None, [200, 200, 200, 200])
        },
        row(M::GET, "/v1/whoami", None, [200, 200, 200, 200]),
        // Functions: hers, shared with bob; only she changes who may run it.
        row(
            M::POST,
            "/v1/functions",
            Some(json!({"name": "f", "kind": "shell", "code": "true"})),
            [200, 200, 200, 403],
        ),
        row(
            M::GET,
            format!("/v1/functions/{function}"),
            None,
            [200, 404, 200, 403],
        ),
        row(
            M::PUT,
            format!("/v1/functions/{function}/sharing"),
            Some(json!({"shared_with": [bob_id]})),
            [200, 404, 403, 403],
        ),
        row(
            M::POST,
            "/v3/functions",
            Some(json!({"function_name": "f", "function_code": "st\nf:def f(): pass"})),
            [200, 200, 200, 403],
        ),
        row(
            M::GET,
            format!("/v2/functions/{function}"),
            None,
            [200, 404, 200, 403],
        ),
        // Endpoints: anyone registers their own; hers is read by bob, changed by her or
        // its credential only.
        row(M::POST, "/v1/endpoints", Some(new_endpoint), [200, 200, 200, 403]),
        row(
            M::POST,
            "/v1/endpoints",
            Some(json!({"name": "ep", "endpoint_id": ep, "shared_with": [bob_id]})),
            [200, 404, 403, 200],
        ),
        row(M::GET, "/v1/endpoints", None, [200, 200, 200, 403]),
        row(M::GET, format!("/v1/endpoints/{ep}"), None, [200, 404, 200, 200]),
        row(
            M::DELETE,
            format!("/v1/endpoints/{ep}"),
            None,
            [409, 404, 403, 409],
        ),
        row(
            M::POST,
            format!("/v1/endpoints/{ep}/still_to_run"),
            Some(json!({"tasks": [{"task_id": task, "attempt": attempt}]})),
            [403, 404, 403, 200],
        ),
        row(M::GET, "/v2/endpoints", None, [200, 200, 200, 403]),
        row(M::GET, format!("/v2/endpoints/{ep}"), None, [200, 404, 200, 403]),
        row(
            M::GET,
            format!("/v2/endpoints/{ep}/status"),
            None,
            [200, 404, 200, 403],
        ),
        // Submitting: to her endpoint with her function, by her or bob.
        row(
            M::POST,
            "/v1/tasks",
            Some(json!({"endpoint_id": ep, "tasks": [{"function_id": function, "payload": ""}]})),
            [200, 404, 200, 403],
        ),
        row(
            M::POST,
            "/v1/sessions",
            Some(json!({"sessions": [one.clone()]})),
            [200, 404, 200, 403],
        ),
        row(
            M::POST,
            format!("/v3/endpoints/{ep}/submit"),
            Some(json!({"tasks": {function.clone(): [""]}})),
            [200, 404, 200, 403],
        ),
        // Into her task group: hers alone.
        row(
            M::POST,
            format!("/v3/endpoints/{ep}/submit"),
            Some(json!({"tasks": {function.clone(): [""]}, "task_group_id": group})),
            [200, 404, 404, 403],
        ),
        // Her tasks, sessions and task groups: hers alone.
        row(M::GET, format!("/v1/tasks/{task}"), None, [200, 404, 404, 403]),
        row(
            M::POST,
            "/v1/tasks/status",
            Some(json!({"task_ids": [task]})),
            [200, 200, 200, 403],
        ),
        row(
            M::GET,
            format!("/v1/sessions/{session}"),
            None,
            [200, 404, 404, 403],
        ),
        row(
            M::GET,
            format!("/v1/sessions/{session}/tasks"),
            None,
            [200, 404, 404, 403],
        ),
        row(
            M::GET,
            format!("/v1/batches/{session}"),
            None,
            [200, 404, 404, 403],
        ),
        row(M::GET, format!("/v2/tasks/{task}"), None, [200, 404, 404, 403]),
        row(
            M::POST,
            "/v2/batch_status",
            Some(json!({"task_ids": [task]})),
            [200, 200, 200, 403],
        ),
        row(
            M::GET,
            format!("/v2/taskgroup/{group}"),
            None,
            [200, 404, 404, 403],
        ),
        row(
            M::GET,
            "/v2/get_amqp_result_connection_url",
            None,
            [200, 200, 200, 403],
        ),
        // The data plane: the task's endpoint moves its data (its owner may read the
        // input); a result only for the current attempt of the running task, and never
        // with a user's token (403 for any task id, known or not: nothing leaks).
        row(
            M::GET,
            format!("/v1/tasks/{task}/input"),
            None,
            [200, 404, 404, 200],
        ),
        row(
            M::GET,
            format!("/v1/tasks/{task}/function"),
            None,
            [200, 404, 404, 200],
        ),
        row(
            M::PUT,
            format!("/v1/tasks/{task}/results/{attempt}"),
            Some(json!("r")),
            [403, 403, 403, 204],
        ),
        row(
            M::PUT,
            format!("/v1/tasks/{task}/results/{}", attempt + 1),
            Some(json!("r")),
            [403, 403, 403, 409],
        ),
        // Cancelling last: hers alone.
        row(
            M::POST,
            format!("/v1/tasks/{task}/cancel"),
            None,
            [200, 404, 404, 403],
        ),
        row(
            M::POST,
            format!("/v1/batches/{session}/cancel"),
            None,
            [200, 404, 404, 403],
        ),
        row(
            M::POST,
            format!("/v1/sessions/{session}/cancel"),
            None,
            [200, 404, 404, 403],
        ),
    ]
}
