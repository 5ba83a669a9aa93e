//! `POST /v1/tasks` (submit one task or a batch), `GET /v1/tasks/{id}`,
//! `POST /v1/tasks/status`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferry_proto::api::{
    BriefDoc, HistoryEntry, PhaseStep, RequiresBody, RetryBody, StatusRequest, SubmitRequest, SubmitResponse,
    TaskDoc,
};
use ferry_proto::messages::{Requires, RetryPolicy};
use ferry_proto::state::{FailureCause, TaskState};
use ferry_proto::time::to_secs;
use ferry_proto::{TaskId, UserId};
use ferry_store::{Principal, TaskOutcome, TaskRecord};

use crate::AppState;
use crate::answer::{Answer, WriteEntry, write_keyed};
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Auth, Caller, FerryJson, FerryQuery, parse_id};
use crate::submit::{Submission, Submitted};
use crate::waiting::wait_for;

/// Most ids in one status request.
const MAX_STATUS_IDS: usize = 10_000;

/// `POST /v1/tasks`: see [`crate::submit::accept`].
pub(crate) async fn submit(
    State(state): State<AppState>,
    Caller(user): Caller,
    headers: axum::http::HeaderMap,
    FerryJson(body): FerryJson<SubmitRequest>,
) -> ApiResult<Json<SubmitResponse>> {
    crate::submit::to_completion(async move {
        // The limits' counts are read with the idempotency key's claim, not after it.
        let room = crate::submit::RoomAhead::read(&state, user, body.endpoint_id);
        crate::idempotency::once_with(
            &state,
            user,
            &headers,
            "/v1/tasks",
            body,
            room,
            |body, room| async {
                let submission = submission(body, "")?;
                let accepted = crate::submit::accept(&state, user, submission, room).await?;
                Ok(SubmitResponse {
                    batch_id: accepted.batch_id,
                    task_ids: accepted.task_ids,
                    callback_secret: accepted.callback_secret,
                })
            },
        )
        .await
    })
    .await
}

/// Checks a request's numbers and turns it into a [`Submission`]; `at` prefixes the
/// field names in errors (`sessions[2].`).
pub(crate) fn submission(body: SubmitRequest, at: &str) -> ApiResult<Submission> {
    let mut tasks = Vec::with_capacity(body.tasks.len());
    let session_priority = body.priority.unwrap_or(0);
    let session_requires = requires(body.requires, &format!("{at}requires"))?;
    let session_retry = retry(body.retry, &format!("{at}retry"))?;
    let session_environment = environment(body.environment, || format!("{at}environment"))?;
    for (i, t) in body.tasks.into_iter().enumerate() {
        let walltime_ms = positive_ms(t.walltime_secs, || format!("{at}tasks[{i}].walltime_secs"))?;
        let requires = match t.requires {
            Some(r) => requires(Some(r), &format!("{at}tasks[{i}].requires"))?,
            None => session_requires.clone(),
        };
        let retry = match t.retry {
            Some(r) => retry(Some(r), &format!("{at}tasks[{i}].retry"))?,
            None => session_retry.clone(),
        };
        let environment = match t.environment {
            Some(e) => environment(Some(e), || format!("{at}tasks[{i}].environment"))?,
            None => session_environment.clone(),
        };
        tasks.push(Submitted {
            function_id: t.function_id,
            payload: Bytes::from(t.payload),
            max_retries: t.max_retries,
            walltime_ms,
            priority: t.priority.unwrap_or(session_priority),
            requires,
            retry,
            environment,
        });
    }
    Ok(Submission {
        endpoint_id: body.endpoint_id,
        tasks,
        task_group: None,
        result_queue: false,
        timeout_ms: positive_ms(body.timeout_secs, || format!("{at}timeout_secs"))?,
        events: body.events,
        callback_url: body.callback_url,
    })
}

/// A task's `requires` checked (`at` names it in errors); `None` when it asks nothing.
fn requires(body: Option<RequiresBody>, at: &str) -> ApiResult<Option<Requires>> {
    let Some(body) = body else { return Ok(None) };
    let memory_mb = match body.memory_gb {
        None => 0,
        Some(gb) if gb.is_finite() && (0.0..=1_048_576.0).contains(&gb) => (gb * 1024.0).ceil() as u64,
        Some(gb) => {
            return Err(ApiError::bad_request(format!(
                "{at}.memory_gb: {gb} is not a memory size in GiB (0 to 1048576)"
            )));
        }
    };
    if body.tags.len() > 16 {
        return Err(ApiError::bad_request(format!(
            "{at}.tags: {} tags; at most 16 are taken",
            body.tags.len()
        )));
    }
    if let Some((i, tag)) = body
        .tags
        .iter()
        .enumerate()
        .find(|(_, t)| !ferry_proto::messages::is_tag(t))
    {
        return Err(ApiError::bad_request(format!(
            "{at}.tags[{i}]: {:?} is not a tag (1 to 64 letters, digits, `_`, `-`, `.`)",
            tag.chars().take(70).collect::<String>()
        )));
    }
    let mut tags = body.tags;
    tags.sort();
    tags.dedup();
    let requires = Requires {
        cores: body.cores.unwrap_or(0),
        memory_mb,
        gpus: body.gpus.unwrap_or(0),
        tags,
    };
    Ok((requires != Requires::default()).then_some(requires))
}

/// A task environment's name checked (`at` names the field in errors): what an
/// endpoint's `[provider.environments.<name>]` may be called.
fn environment(name: Option<String>, at: impl Fn() -> String) -> ApiResult<Option<String>> {
    match name {
        Some(n) if !ferry_proto::messages::is_tag(&n) => Err(ApiError::bad_request(format!(
            "{}: {:?} is not an environment name (1 to 64 letters, digits, `_`, `-`, `.`)",
            at(),
            n.chars().take(80).collect::<String>()
        ))),
        name => Ok(name),
    }
}

/// A retry policy checked (`at` names it in errors).
fn retry(body: Option<RetryBody>, at: &str) -> ApiResult<Option<RetryPolicy>> {
    let Some(body) = body else { return Ok(None) };
    if body.on.is_empty() || body.on.len() > 16 {
        return Err(ApiError::bad_request(format!(
            "{at}.on: 1 to 16 kinds of failure (`exception`, `exit` or exception type names), not {}",
            body.on.len()
        )));
    }
    let is_name = ferry_proto::messages::is_exception_name;
    if let Some((i, o)) = body.on.iter().enumerate().find(|(_, o)| !is_name(o)) {
        return Err(ApiError::bad_request(format!(
            "{at}.on[{i}]: {:?} is not `exception`, `exit` or an exception type name",
            o.chars().take(60).collect::<String>()
        )));
    }
    let secs = |value: Option<f64>, default: f64, field: &str, most: f64| -> ApiResult<u64> {
        match value.unwrap_or(default) {
            s if s.is_finite() && (0.0..=most).contains(&s) => Ok((s * 1000.0).round() as u64),
            s => Err(ApiError::bad_request(format!(
                "{at}.{field}: {s} is not a number of seconds from 0 to {most}"
            ))),
        }
    };
    let backoff_ms = secs(body.backoff_secs, 1.0, "backoff_secs", 3600.0)?;
    let max_backoff_ms = secs(body.max_backoff_secs, 300.0, "max_backoff_secs", 86_400.0)?.max(backoff_ms);
    Ok(Some(RetryPolicy {
        on: body.on,
        backoff_ms,
        max_backoff_ms,
    }))
}

/// Seconds as milliseconds, if they are more than 0 and at most 30 days.
fn positive_ms(secs: Option<f64>, field: impl Fn() -> String) -> ApiResult<Option<u64>> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= 30.0 * 86_400.0 => Ok(Some((s * 1000.0).ceil() as u64)),
        Some(s) => Err(ApiError::bad_request(format!(
            "{} is {s}; it must be more than 0 and at most 30 days",
            field()
        ))),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitQuery {
    wait_secs: Option<f64>,
}

/// `GET /v1/tasks/{id}[?wait_secs=S]`: the task's document; with `wait_secs`, answered
/// when the task finishes or after S seconds (at most 60), whichever comes first.
pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    FerryQuery(query): FerryQuery<WaitQuery>,
) -> ApiResult<Json<TaskDoc>> {
    let id: TaskId = parse_id(&id)?;
    let wait = wait_for(query.wait_secs)?;
    let task = state
        .waiters
        .read_until(
            &[id],
            wait,
            || owned_task(&state, user, id),
            |t| t.state.is_terminal(),
        )
        .await?;
    let (task_state, endpoint_id) = (task.state, task.endpoint_id);
    let mut doc = task_doc(task);
    if matches!(
        task_state,
        TaskState::Received | TaskState::WaitingForEp | TaskState::WaitingForNodes
    ) && let Some(endpoint) = state.store.get_endpoint(endpoint_id).await?
    {
        let forwarder = state.store.forwarder_seen().await?;
        doc.waiting = super::endpoints::why_waiting(task_state, &endpoint, forwarder);
    }
    doc.phases = [&doc.result, &doc.exception_data]
        .into_iter()
        .find_map(|text| phases_of(text.as_deref()?));
    Ok(Json(doc))
}

/// An application run's phases, from its record (`11\n` + a JSON document with
/// `phases`, as the worker writes it); `None` for anything else.
fn phases_of(serialized: &str) -> Option<Vec<PhaseStep>> {
    #[derive(serde::Deserialize)]
    struct Run {
        phases: Vec<PhaseStep>,
    }
    let json = serialized.strip_prefix("11\n")?;
    serde_json::from_str::<Run>(json).ok().map(|run| run.phases)
}

/// A task the principal may move data for: its endpoint's (an endpoint credential), or
/// its owner's (a user).
async fn endpoints_task(state: &AppState, principal: Principal, id: TaskId) -> ApiResult<TaskRecord> {
    let task = owned_task(state, principal.owner(), id).await?;
    match principal {
        Principal::Endpoint { endpoint, .. } if endpoint != task.endpoint_id => {
            Err(ApiError::not_found(format!("task {id} not found")))
        }
        _ => Ok(task),
    }
}

/// The caller's task, or an error that says whether it expired or never was theirs.
async fn owned_task(state: &AppState, user: UserId, id: TaskId) -> ApiResult<TaskRecord> {
    match state.store.get_task(id).await? {
        Some(t) if t.owner == user => Ok(t),
        Some(_) => Err(ApiError::not_found(format!("task {id} not found"))),
        None => Err(missing_task(state, id)),
    }
}

/// A task that is not in the store: expired, if its id is older than the retention
/// period (ids carry their creation time), else unknown.
fn missing_task(state: &AppState, id: TaskId) -> ApiError {
    let ttl = state.store.result_ttl_secs();
    let age_secs = id
        .created_micros()
        .map(|at| ferry_proto::time::now_micros().saturating_sub(at) / 1_000_000);
    match age_secs {
        Some(age) if ttl > 0 && age > ttl => ApiError::new(
            Code::Gone,
            format!(
                "task {id} expired: finished tasks and their results are kept for {ttl} s (FERRY_RESULT_TTL_SECS)"
            ),
        ),
        _ => ApiError::not_found(format!("task {id} not found")),
    }
}

/// `GET /v1/tasks/{id}/input`: the task's input, as bytes. Endpoints fetch large
/// inputs here (their messages carry only the size): the task's endpoint, with its
/// credential, or the task's owner.
pub(crate) async fn input(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id: TaskId = parse_id(&id)?;
    endpoints_task(&state, principal, id).await?;
    match state.store.get_input(id).await? {
        Some(data) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response()),
        None => Err(ApiError::new(
            Code::Gone,
            format!("the input of task {id} is gone: the task has finished"),
        )),
    }
}

/// `GET /v1/tasks/{id}/function`: the code of the task's function, as bytes. An endpoint
/// fetches a large function here once (its task messages carry only the size): the
/// task's endpoint, with its credential, or the task's owner.
pub(crate) async fn function(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id: TaskId = parse_id(&id)?;
    let task = endpoints_task(&state, principal, id).await?;
    match state.function(task.function_id).await? {
        Some(f) => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            f.code.clone(),
        )
            .into_response()),
        None => Err(ApiError::not_found(format!(
            "function {} of task {id} not found",
            task.function_id
        ))),
    }
}

/// `PUT /v1/tasks/{id}/results/{attempt}`: an endpoint stores a large result here
/// before it reports the task finished. Only the task's endpoint, with its credential,
/// for the task's current attempt while it is unfinished: nobody can replace a result
/// already recorded, or fill the store with results of attempts that never ran.
pub(crate) async fn put_result(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((id, attempt)): Path<(String, String)>,
    crate::extract::FerryBytes(body): crate::extract::FerryBytes,
) -> ApiResult<StatusCode> {
    let id: TaskId = parse_id(&id)?;
    let attempt: u32 = attempt.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "attempt {attempt:?} is not a number from 0 to 4294967295"
        ))
    })?;
    let Principal::Endpoint { .. } = principal else {
        return Err(ApiError::new(
            Code::Forbidden,
            format!("only the endpoint of task {id}, with its credential, stores its result"),
        ));
    };
    let task = endpoints_task(&state, principal, id).await?;
    if task.state.is_terminal() {
        return Err(ApiError::new(
            Code::Conflict,
            format!("task {id} has finished: its result is recorded"),
        ));
    }
    if attempt != task.attempt {
        return Err(ApiError::new(
            Code::Conflict,
            format!("task {id} is on attempt {}, not {attempt}", task.attempt),
        ));
    }
    if body.len() > state.config.max_payload_bytes {
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!(
                "the result of task {id} is {} bytes; the limit is {} bytes (FERRY_MAX_PAYLOAD_BYTES)",
                body.len(),
                state.config.max_payload_bytes
            ),
        ));
    }
    state.store.put_result(id, attempt, &body).await?;
    tracing::debug!(task_id = %id, attempt, bytes = body.len(), "result stored in the data plane");
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn status(
    State(state): State<AppState>,
    Caller(user): Caller,
    FerryJson(body): FerryJson<StatusRequest>,
) -> ApiResult<Response> {
    if body.task_ids.len() > MAX_STATUS_IDS {
        return Err(ApiError::bad_request(format!(
            "{} task ids in one request; the limit is {MAX_STATUS_IDS}",
            body.task_ids.len()
        )));
    }
    let wait = wait_for(body.wait_secs)?;
    // An id asked for twice is read once (the answer is keyed by id anyway).
    let mut seen = std::collections::HashSet::with_capacity(body.task_ids.len());
    let unique: Vec<TaskId> = body
        .task_ids
        .iter()
        .copied()
        .filter(|id| seen.insert(*id))
        .collect();
    let ids = &unique;
    // The records are read without their large results: the answer reads those in
    // bounded groups as it is written (and a long poll does not read them again and again).
    if body.brief {
        let read = || async { Ok(state.store.get_task_briefs_deferred(ids).await?) };
        let (tasks, unknown) = read_mine(&state, ids, user, wait, read).await?;
        status_answer(tasks, &unknown, write_brief)
            .respond(&state.store)
            .await
    } else {
        let read = || async { Ok(state.store.get_tasks_deferred(ids, body.history).await?) };
        let (tasks, unknown) = read_mine(&state, ids, user, wait, read).await?;
        status_answer(tasks, &unknown, write_task)
            .respond(&state.store)
            .await
    }
}

/// The answer to a status request: a [`StatusResponse`] written task by task, its
/// tasks in the order of its map's keys.
fn status_answer<T>(mut tasks: Vec<(TaskId, T)>, unknown: &[TaskId], write: WriteEntry<T>) -> Answer<T> {
    tasks.sort_unstable_by_key(|(id, _)| *id);
    let mut tail = b"},\"unknown\":".to_vec();
    serde_json::to_writer(&mut tail, unknown).expect("ids serialize");
    tail.push(b'}');
    Answer {
        head: b"{\"tasks\":{".to_vec(),
        records: tasks.into_iter().map(|(_, t)| t).collect(),
        tail,
        write,
    }
}

/// A status answer's entry for a task: `"<id>":<TaskDoc>`.
fn write_task(t: TaskRecord, out: &mut Vec<u8>) {
    let id = t.task_id;
    write_keyed(&id, &task_doc(t), out);
}

/// A brief status answer's entry for a task: `"<id>":<BriefDoc>`.
fn write_brief(t: TaskOutcome, out: &mut Vec<u8>) {
    let id = t.task_id;
    write_keyed(&id, &brief_doc(t), out);
}

/// What the status answer needs of either kind of read.
trait Owned {
    fn owner(&self) -> UserId;
    fn state(&self) -> TaskState;
}

impl Owned for TaskRecord {
    fn owner(&self) -> UserId {
        self.owner
    }
    fn state(&self) -> TaskState {
        self.state
    }
}

impl Owned for TaskOutcome {
    fn owner(&self) -> UserId {
        self.owner
    }
    fn state(&self) -> TaskState {
        self.state
    }
}

/// Reads with `read` (with a wait: until one of the caller's tasks has finished) and
/// splits what it read into the caller's tasks and the ids that are unknown to them.
async fn read_mine<T: Owned, F, Fut>(
    state: &AppState,
    ids: &[TaskId],
    user: UserId,
    wait: std::time::Duration,
    read: F,
) -> ApiResult<(Vec<(TaskId, T)>, Vec<TaskId>)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ApiResult<Vec<Option<T>>>>,
{
    let any_done = |records: &Vec<Option<T>>| {
        ids.is_empty()
            || records.iter().any(|r| {
                r.as_ref()
                    .is_some_and(|t| t.owner() == user && t.state().is_terminal())
            })
    };
    let records = state.waiters.read_until(ids, wait, read, any_done).await?;
    let mut unknown = Vec::new();
    let mine = ids
        .iter()
        .zip(records)
        .filter_map(|(id, record)| match record {
            Some(t) if t.owner() == user => Some((*id, t)),
            _ => {
                unknown.push(*id);
                None
            }
        })
        .collect();
    Ok((mine, unknown))
}

/// The outcome part of [`task_doc`], taking the record's strings rather than copying.
fn brief_doc(t: TaskOutcome) -> BriefDoc {
    let exception = exception_text(t.task_id, t.state, t.cause, &t.traceback, t.result_expired);
    BriefDoc {
        pending: !t.state.is_terminal(),
        status: t.state.wire_name().to_owned(),
        result: t.result,
        result_expired: t.result_expired,
        exception,
        exception_data: t.exception,
        completion_t: t.completed_at.map(|at| format!("{:.6}", to_secs(at))),
    }
}

/// The traceback, or why a task without one failed or has no result.
fn exception_text(
    task_id: TaskId,
    state: TaskState,
    cause: Option<FailureCause>,
    traceback: &Option<String>,
    result_expired: bool,
) -> Option<String> {
    match (traceback, cause) {
        (Some(tb), _) => Some(tb.clone()),
        _ if result_expired => Some(format!(
            "the result of task {task_id} has expired (results are kept for a limited time)"
        )),
        (None, Some(cause)) if state.is_terminal() => Some(format!("task failed: {}", cause.wire_name())),
        _ => None,
    }
}

/// The API view of a task record, taking its strings rather than copying them.
pub fn task_doc(t: TaskRecord) -> TaskDoc {
    let terminal = t.state.is_terminal();
    TaskDoc {
        task_id: t.task_id,
        pending: !terminal,
        status: t.state.wire_name().to_owned(),
        attempt: t.attempt,
        function_id: t.function_id,
        endpoint_id: t.endpoint_id,
        batch_id: t.batch_id,
        created_at: to_secs(t.created_at),
        result: t.result,
        result_expired: t.result_expired,
        exception: exception_text(t.task_id, t.state, t.cause, &t.traceback, t.result_expired),
        exception_data: t.exception,
        completion_t: t.completed_at.map(|at| format!("{:.6}", to_secs(at))),
        last_seen: t.last_seen.map(to_secs),
        stdout: t.stdout,
        stderr: t.stderr,
        waiting: None,
        phases: None,
        history: t
            .history
            .iter()
            .map(|h| HistoryEntry {
                state: h.state.wire_name().to_owned(),
                attempt: h.attempt,
                at: to_secs(h.at),
                by: h.by.wire_name().to_owned(),
                reason: h.cause.map(|c| c.wire_name().to_owned()),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferry_proto::TaskId;
    use ferry_proto::api::StatusResponse;

    use super::status_answer;
    use crate::answer::write_keyed;

    #[test]
    fn a_status_answer_written_task_by_task_is_the_documents_bytes() {
        let ids: Vec<TaskId> = (0..5).map(|_| TaskId::new()).collect();
        for (mine, unknown) in [
            (&ids[..0], &ids[..0]),
            (&ids[..3], &ids[3..]),
            (&ids[..], &ids[..0]),
        ] {
            // Read in any order; answered in the order of the ids.
            let tasks: Vec<(TaskId, (TaskId, String))> = mine
                .iter()
                .rev()
                .map(|id| (*id, (*id, format!("r\"{id}\n"))))
                .collect();
            let whole = StatusResponse {
                tasks: tasks
                    .iter()
                    .cloned()
                    .map(|(id, (_, r))| (id, r))
                    .collect::<BTreeMap<_, _>>(),
                unknown: unknown.to_vec(),
            };
            let answer = status_answer(tasks, unknown, |(id, r), out| write_keyed(&id, &r, out));
            assert_eq!(
                String::from_utf8(answer.into_bytes()).unwrap(),
                serde_json::to_string(&whole).unwrap()
            );
        }
    }
}
