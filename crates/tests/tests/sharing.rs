//! Sharing, tried by three users of one service: alice's endpoint and functions are hers
//! until she shares them (with bob by id, or with everyone); an endpoint restricted to
//! `allowed_functions` runs those only, refused at the service (403 naming the function)
//! and again at the endpoint for a task that reached its queue before the restriction.

use std::time::Duration;

use ferry_tests::{Part, Stack};
use reqwest::Method;
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(60);

async fn call(stack: &Stack, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = stack.request_as(method, path, Some(token));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

async fn user_id(stack: &Stack, token: &str) -> String {
    let (status, me) = call(stack, Method::GET, "/v1/whoami", token, None).await;
    assert_eq!(status, 200, "{me}");
    me["user_id"].as_str().unwrap().to_owned()
}

async fn register(stack: &Stack, token: &str, name: &str) -> String {
    let body = json!({"name": name, "kind": "shell", "code": format!("echo {name}")});
    let (status, answer) = call(stack, Method::POST, "/v1/functions", token, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    answer["function_id"].as_str().unwrap().to_owned()
}

async fn submit(stack: &Stack, token: &str, function: &str) -> (u16, Value) {
    let body = json!({
        "endpoint_id": stack.endpoint_id.unwrap(),
        "tasks": [{"function_id": function, "payload": ""}],
    });
    call(stack, Method::POST, "/v1/tasks", token, Some(body)).await
}

/// Waits until `token`'s task is finished; its document.
async fn wait_done(stack: &Stack, token: &str, task: &str) -> Value {
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let (status, doc) = call(stack, Method::GET, &format!("/v1/tasks/{task}"), token, None).await;
        assert_eq!(status, 200, "{doc}");
        if doc["status"] == "success" || doc["status"] == "failed" {
            return doc;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {task} did not finish: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restarts the endpoint with these top-level settings in its config.
async fn restart_with(stack: &mut Stack, settings: &str) {
    stack.stop(Part::Endpoint);
    let path = stack.endpoint_dir().join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Top-level keys go before the first table.
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            !["public", "shared_with", "allowed_functions"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect();
    std::fs::write(&path, format!("{settings}\n{}\n", kept.join("\n"))).unwrap();
    stack.start_part(Part::Endpoint);
    let (this, id) = (&*stack, stack.endpoint_id.unwrap());
    this.wait_until(WITHIN, "the endpoint is back with a manager", || async move {
        let doc: Value = this.get(&format!("/v1/endpoints/{id}")).await.1;
        doc["status"] == "online" && doc["details"]["managers"].as_u64().unwrap_or(0) > 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_and_endpoints_are_shared_by_their_owners_and_restricted_by_allowed_functions() {
    let mut stack = Stack::start().await;
    let alice = stack.token.clone();
    let bob = stack.create_user("bob");
    let carol = stack.create_user("carol");
    let bob_id = user_id(&stack, &bob).await;
    let endpoint = stack.endpoint_id.unwrap();
    let mine = register(&stack, &alice, "mine").await;
    let his = register(&stack, &bob, "his").await;

    // Unshared, alice's things are unknown to bob.
    let (status, _) = call(&stack, Method::GET, &format!("/v1/functions/{mine}"), &bob, None).await;
    assert_eq!(status, 404);
    let (status, answer) = submit(&stack, &bob, &his).await;
    assert_eq!(status, 404, "{answer}");
    let (status, _) = call(
        &stack,
        Method::GET,
        &format!("/v1/endpoints/{endpoint}"),
        &bob,
        None,
    )
    .await;
    assert_eq!(status, 404);
    // Sharing names users that exist.
    let nobody = uuid::Uuid::now_v7().to_string();
    let (status, answer) = call(
        &stack,
        Method::PUT,
        &format!("/v1/functions/{mine}/sharing"),
        &alice,
        Some(json!({"shared_with": [nobody]})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains(&nobody), "{answer}");
    // Only its owner shares a function.
    let (status, _) = call(
        &stack,
        Method::PUT,
        &format!("/v1/functions/{mine}/sharing"),
        &bob,
        Some(json!({"public": true})),
    )
    .await;
    assert_eq!(status, 404);

    // Alice shares her endpoint with bob: his own function runs there.
    restart_with(&mut stack, &format!("shared_with = [\"{bob_id}\"]")).await;
    let (status, answer) = submit(&stack, &bob, &his).await;
    assert_eq!(status, 200, "{answer}");
    let task = answer["task_ids"][0].as_str().unwrap();
    let doc = wait_done(&stack, &bob, task).await;
    assert_eq!(doc["status"], "success", "{doc}");
    // Alice does not see bob's task.
    let (status, _) = call(&stack, Method::GET, &format!("/v1/tasks/{task}"), &alice, None).await;
    assert_eq!(status, 404);
    // He sees the endpoint, not whom else it is shared with; she does.
    let (status, doc) = call(
        &stack,
        Method::GET,
        &format!("/v1/endpoints/{endpoint}"),
        &bob,
        None,
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    assert!(doc.get("shared_with").is_none(), "{doc}");
    let (_, doc) = call(
        &stack,
        Method::GET,
        &format!("/v1/endpoints/{endpoint}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(doc["shared_with"], json!([bob_id]), "{doc}");
    // Bob's endpoint list shows it; carol's does not.
    let (_, listed) = call(&stack, Method::GET, "/v1/endpoints", &bob, None).await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["endpoint_id"] == json!(endpoint)),
        "{listed}"
    );
    let (_, listed) = call(&stack, Method::GET, "/v1/endpoints", &carol, None).await;
    assert_eq!(listed, json!([]), "{listed}");
    // Carol is not among them; bob still cannot read alice's task.
    let (status, _) = submit(&stack, &carol, &register(&stack, &carol, "hers").await).await;
    assert_eq!(status, 404);

    // Alice makes her function public: bob runs it on her endpoint, carol may read it.
    let (status, doc) = call(
        &stack,
        Method::PUT,
        &format!("/v1/functions/{mine}/sharing"),
        &alice,
        Some(json!({"public": true})),
    )
    .await;
    assert_eq!((status, &doc["public"]), (200, &json!(true)), "{doc}");
    let (status, doc) = call(
        &stack,
        Method::GET,
        &format!("/v1/functions/{mine}"),
        &carol,
        None,
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    assert!(doc.get("shared_with").is_none(), "{doc}");
    let (status, answer) = submit(&stack, &bob, &mine).await;
    assert_eq!(status, 200, "{answer}");
    // Shared is not owned: bob may not change it, nor delete alice's endpoint.
    let (status, answer) = call(
        &stack,
        Method::PUT,
        &format!("/v1/functions/{mine}/sharing"),
        &bob,
        Some(json!({"shared_with": [bob_id]})),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = call(
        &stack,
        Method::DELETE,
        &format!("/v1/endpoints/{endpoint}"),
        &bob,
        None,
    )
    .await;
    assert_eq!(status, 403, "{answer}");

    // Before any restriction, one of bob's tasks waits in the queue while the endpoint
    // is away...
    stack.stop(Part::Endpoint);
    let (status, answer) = submit(&stack, &bob, &his).await;
    assert_eq!(status, 200, "{answer}");
    let queued = answer["task_ids"][0].as_str().unwrap().to_owned();
    // ...and it comes back running alice's function only.
    restart_with(
        &mut stack,
        &format!("shared_with = [\"{bob_id}\"]\nallowed_functions = [\"{mine}\"]"),
    )
    .await;
    let (status, answer) = submit(&stack, &bob, &his).await;
    assert_eq!(status, 403, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains(&his) && message.contains("allowed_functions"),
        "{message}"
    );
    let (status, answer) = submit(&stack, &bob, &mine).await;
    assert_eq!(status, 200, "{answer}");
    let allowed = answer["task_ids"][0].as_str().unwrap();
    assert_eq!(wait_done(&stack, &bob, allowed).await["status"], "success");
    // The task that was queued before is refused by the endpoint itself, saying why.
    let doc = wait_done(&stack, &bob, &queued).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert!(
        doc["exception"]
            .as_str()
            .unwrap_or_default()
            .contains("not allowed on endpoint"),
        "{doc}"
    );
    stack.shutdown().await;
}
