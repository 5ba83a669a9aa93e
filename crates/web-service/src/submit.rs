//! Accepting tasks, shared by Ferry's API and the Globus Compute compatible one:
//! validate everything, write the tasks as `received` (a part at a time, one Redis
//! round trip each), commit them, and only then publish them and hand out their ids.
//!
//! All or nothing: until the commit nothing is published, so a submission refused
//! part-way (Redis refusing writes, a writer that gives up or dies) runs none of its
//! tasks; the ones written end `failed`, saying why (or, if even that write is
//! refused, the forwarder's sweeper fails them once the batch counts as abandoned).
//! After the commit the submission stands whatever the broker does: a returned id is
//! a task that will reach a terminal state, its message in RabbitMQ or, if a publish
//! failed or was lost before the broker confirmed it, recovered from Redis by the
//! sweeper. The work runs in its own task, so a client that hangs up mid-request
//! cannot leave it half done (its retry with the same `Idempotency-Key` gets the ids).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_proto::api::FieldError;
use ferry_proto::messages::{FunctionCode, FunctionKind, TaskBatch, TaskSpec};
use ferry_proto::time::now_micros;
use ferry_proto::{Actor, BatchId, EndpointId, EventKind, FunctionId, TaskGroupId, TaskId, UserId};
use ferry_store::{BatchRecord, NewTask, Part, Report};

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};

/// Tasks per AMQP message on the submissions queue.
const TASKS_PER_MESSAGE: usize = 1000;

/// A large submission is written to Redis in parts: the first part is one message's
/// worth, each next one twice the last, up to this many (each part waits its turn
/// behind whatever else Redis is doing, so fewer is quicker; and the service holds one
/// part's Redis commands at a time, not the whole submission's).
const LARGEST_PART: usize = 8 * TASKS_PER_MESSAGE;

/// Where each part of a submission of `n` tasks ends.
fn part_ends(n: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let (mut end, mut size) = (0, TASKS_PER_MESSAGE);
    while end < n {
        end = (end + size).min(n);
        ends.push(end);
        size = (size * 2).min(LARGEST_PART);
    }
    ends
}

/// A submission written in parts gives up when writing has taken this long (100,000
/// tasks take about a second), well before the forwarder's sweeper takes a batch still
/// being written for abandoned (`FERRY_ABANDONED_BATCH_SECS`, a minute) and fails it.
const WRITING_LIMIT: Duration = Duration::from_secs(30);

/// One task to accept.
pub struct Submitted {
    pub function_id: FunctionId,
    pub payload: Bytes,
    pub max_retries: Option<u32>,
    pub walltime_ms: Option<u64>,
    /// Higher goes first at the endpoint.
    pub priority: i32,
    /// What its node must have.
    pub requires: Option<ferry_proto::messages::Requires>,
    /// Which failures run it again.
    pub retry: Option<ferry_proto::messages::RetryPolicy>,
    /// The endpoint's task environment that runs it.
    pub environment: Option<String>,
}

/// What a caller asks to run.
pub struct Submission {
    pub endpoint_id: EndpointId,
    pub tasks: Vec<Submitted>,
    /// The task group the tasks join (listed by `GET /v2/taskgroup/{id}`).
    pub task_group: Option<TaskGroupId>,
    /// Whether the group's result queue gets the tasks' results.
    pub result_queue: bool,
    /// How long the batch may take before its unfinished tasks fail (timeout).
    pub timeout_ms: Option<u64>,
    /// Keep the batch's event stream from the start.
    pub events: bool,
    /// The webhook, if any.
    pub callback_url: Option<String>,
}

/// Accepts a submission whole or not at all (a failure before its commit fails the
/// tasks written so far, runs none of them and hands out no id); returns the batch id
/// and the task ids in the submission's order.
#[tracing::instrument(skip_all, fields(user = %user, endpoint_id = %submission.endpoint_id, tasks = submission.tasks.len()))]
pub async fn accept(
    state: &AppState,
    user: UserId,
    submission: Submission,
    room: Option<RoomAhead>,
) -> ApiResult<Accepted> {
    let prepared = prepare(state, user, submission).await?;
    match room.filter(|r| r.endpoint == prepared.batch.endpoint_id) {
        Some(room) => room.check(state, user, prepared.specs.len() as u64)?,
        None => check_room(state, user, std::slice::from_ref(&prepared)).await?,
    }
    let mut accepted = commit(state, vec![prepared]).await?;
    Ok(accepted.pop().expect("one submission, one answer"))
}

/// The unfinished tasks of a user and of an endpoint (what [`check_room`] compares with
/// the limits), read ahead: a submission reads them as it comes, alongside its
/// idempotency key's claim (in the same Redis round trip), rather than one round trip
/// after it, so that it reaches its endpoint sooner. Read a little earlier than they
/// would be, which changes nothing: submissions racing each other may pass a limit by
/// one request's tasks either way.
pub struct RoomAhead {
    endpoint: EndpointId,
    counts: ferry_store::Result<(u64, u64)>,
}

impl RoomAhead {
    /// Reads the counts for tasks of `user` on `endpoint`; `None` when no limit is set.
    pub async fn read(state: &AppState, user: UserId, endpoint: EndpointId) -> Option<Self> {
        let config = &state.config;
        if config.max_unfinished_per_user == 0 && config.max_unfinished_per_endpoint == 0 {
            return None;
        }
        let counts = state.store.unfinished(user, endpoint).await;
        Some(Self { endpoint, counts })
    }

    /// [`check_room`] for `n` tasks, with the counts read ahead.
    fn check(self, state: &AppState, user: UserId, n: u64) -> ApiResult<()> {
        let (mine, its) = self.counts?;
        room_for(state, user, self.endpoint, n, n, mine, its)
    }
}

/// Runs a request's work in its own task, so that a client hanging up (which drops
/// the handler) cannot stop a submission between its writes, its commit and its
/// publishes, nor its idempotency key's answer from being kept.
pub async fn to_completion<T: Send + 'static>(
    work: impl std::future::Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| ApiError::unavailable("the submission's work stopped", e))?
}

/// Whether `user` and each endpoint may take these tasks on top of their unfinished
/// ones (FERRY_MAX_UNFINISHED_PER_USER, FERRY_MAX_UNFINISHED_PER_ENDPOINT); a 429 naming
/// the limit when not. Submissions racing each other may pass a limit by one request's
/// tasks.
async fn check_room(state: &AppState, user: UserId, prepared: &[Prepared]) -> ApiResult<()> {
    let (max_user, max_endpoint) = (
        state.config.max_unfinished_per_user,
        state.config.max_unfinished_per_endpoint,
    );
    if max_user == 0 && max_endpoint == 0 {
        return Ok(());
    }
    let mut per_endpoint: Vec<(EndpointId, u64)> = Vec::new();
    for p in prepared {
        let n = p.specs.len() as u64;
        match per_endpoint.iter_mut().find(|(e, _)| *e == p.batch.endpoint_id) {
            Some((_, m)) => *m += n,
            None => per_endpoint.push((p.batch.endpoint_id, n)),
        }
    }
    let total: u64 = per_endpoint.iter().map(|(_, n)| n).sum();
    for (endpoint, n) in per_endpoint {
        let (mine, its) = state.store.unfinished(user, endpoint).await?;
        room_for(state, user, endpoint, total, n, mine, its)?;
    }
    Ok(())
}

/// Whether `total` more tasks of `user`, `n` of them on `endpoint`, fit beside the
/// `mine` and `its` unfinished ones; a 429 naming the limit when not.
fn room_for(
    state: &AppState,
    user: UserId,
    endpoint: EndpointId,
    total: u64,
    n: u64,
    mine: u64,
    its: u64,
) -> ApiResult<()> {
    let (max_user, max_endpoint) = (
        state.config.max_unfinished_per_user,
        state.config.max_unfinished_per_endpoint,
    );
    if max_user > 0 && mine + total > max_user {
        return Err(ApiError::too_many_requests(
            format!(
                "user {user} has {mine} unfinished tasks and the limit is {max_user} \
                     (FERRY_MAX_UNFINISHED_PER_USER): {total} more do not fit; submit again as tasks finish"
            ),
            5,
        ));
    }
    if max_endpoint > 0 && its + n > max_endpoint {
        return Err(ApiError::too_many_requests(
            format!(
                "endpoint {endpoint} has {its} unfinished tasks and the limit is {max_endpoint} \
                     (FERRY_MAX_UNFINISHED_PER_ENDPOINT): {n} more do not fit; submit again as tasks finish"
            ),
            5,
        ));
    }
    Ok(())
}

/// Accepts several submissions (sessions): every one is checked before any is
/// written, and they are committed together: all of them or none.
#[tracing::instrument(skip_all, fields(user = %user, sessions = submissions.len()))]
pub async fn accept_all(
    state: &AppState,
    user: UserId,
    submissions: Vec<Submission>,
    field: &str,
) -> ApiResult<Vec<Accepted>> {
    let total: usize = submissions.iter().map(|s| s.tasks.len()).sum();
    if total > state.config.max_batch {
        return Err(ApiError::bad_request(format!(
            "{total} tasks in one request; the limit is {}",
            state.config.max_batch
        )));
    }
    let mut prepared = Vec::with_capacity(submissions.len());
    for (i, submission) in submissions.into_iter().enumerate() {
        let p = prepare(state, user, submission)
            .await
            .map_err(|e| e.context(format!("{field}[{i}]")))?;
        prepared.push(p);
    }
    check_room(state, user, &prepared).await?;
    commit(state, prepared).await
}

/// What a caller gets back for an accepted submission.
pub struct Accepted {
    pub batch_id: BatchId,
    /// In the submission's order.
    pub task_ids: Vec<TaskId>,
    /// The webhook's signing key, when the batch has a webhook.
    pub callback_secret: Option<String>,
}

/// A submission that passed every check, ready to be written and published.
pub struct Prepared {
    batch: BatchRecord,
    specs: Vec<TaskSpec>,
    functions: HashMap<FunctionId, FunctionCode>,
}

async fn prepare(state: &AppState, user: UserId, submission: Submission) -> ApiResult<Prepared> {
    let Submission {
        endpoint_id,
        tasks,
        task_group,
        result_queue,
        timeout_ms,
        events,
        callback_url,
    } = submission;
    if let Some(url) = &callback_url {
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url.len() > 2048 || url.chars().any(char::is_whitespace) {
            return Err(ApiError::bad_request(format!(
                "callback_url {:?} is not an http(s) URL",
                url.chars().take(100).collect::<String>()
            )));
        }
    }
    if tasks.is_empty() {
        return Err(ApiError::bad_request("tasks is empty: submit at least one task"));
    }
    if tasks.len() > state.config.max_batch {
        return Err(ApiError::bad_request(format!(
            "{} tasks in one request; the limit is {}",
            tasks.len(),
            state.config.max_batch
        )));
    }
    for (i, task) in tasks.iter().enumerate() {
        if let Some(n) = task.max_retries
            && n > state.config.max_retries_limit
        {
            return Err(ApiError::bad_request(format!(
                "tasks[{i}].max_retries is {n}; the most is {} (FERRY_MAX_RETRIES_LIMIT)",
                state.config.max_retries_limit
            )));
        }
        if task.payload.len() > state.config.max_payload_bytes {
            return Err(ApiError::new(
                Code::PayloadTooLarge,
                format!(
                    "tasks[{i}].payload is {} bytes; the limit is {} bytes (FERRY_MAX_PAYLOAD_BYTES)",
                    task.payload.len(),
                    state.config.max_payload_bytes
                ),
            ));
        }
    }
    let endpoint = crate::access::usable_endpoint(state, user, endpoint_id).await?;
    if let Some(group) = task_group
        && let Some(owner) = state.store.task_group_owner(group).await?
        && owner != user
    {
        return Err(ApiError::not_found(format!("task group {group} not found")));
    }

    let mut functions: HashMap<FunctionId, FunctionCode> = HashMap::new();
    let mut applications: HashMap<FunctionId, ferry_app::AppSpec> = HashMap::new();
    let mut invalid: Vec<FieldError> = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        if !functions.contains_key(&task.function_id) {
            let f = crate::access::visible_function(state, user, task.function_id).await?;
            crate::access::allowed_on(&endpoint, f.function_id)?;
            if f.kind == FunctionKind::Application {
                let spec = ferry_app::AppSpec::parse(&f.code).map_err(|e| {
                    tracing::error!(function_id = %f.function_id, error = %e, "a registered application's spec does not parse");
                    ApiError::bad_request(format!("application {} cannot be run: its spec is not valid: {e}", f.function_id))
                })?;
                applications.insert(f.function_id, spec);
            }
            functions.insert(
                f.function_id,
                FunctionCode::for_message(f.function_id, f.kind, &f.code).bound_to(f.python.clone()),
            );
        }
        if let Some(spec) = applications.get(&task.function_id) {
            invalid.extend(application_inputs(i, spec, &task.payload));
            continue;
        }
        if functions[&task.function_id].kind == FunctionKind::Shell && !task.payload.is_empty() {
            let value: Result<serde_json::Value, _> = serde_json::from_slice(&task.payload);
            if !value.map(|v| v.is_object()).unwrap_or(false) {
                return Err(ApiError::bad_request(format!(
                    "tasks[{i}].payload: a shell task takes a JSON object of named values"
                )));
            }
        }
    }

    if !invalid.is_empty() {
        let all: Vec<String> = invalid
            .iter()
            .map(|e| format!("{}: {}", e.at, e.message))
            .collect();
        return Err(ApiError::invalid(
            format!("invalid application inputs: {}", all.join("; ")),
            invalid,
        ));
    }

    let inline_limit = state.config.inline_limit_bytes;
    let created_at = now_micros();
    let batch = BatchRecord {
        batch_id: BatchId::new(),
        owner: user,
        endpoint_id,
        size: tasks.len() as u64,
        created_at,
        task_group,
        deadline: timeout_ms.map(|ms| created_at + ms * 1000),
        events: events || callback_url.is_some(),
        callback_secret: callback_url
            .is_some()
            .then(|| format!("whsec_{}", uuid::Uuid::new_v4().simple())),
        callback_url,
    };
    let specs: Vec<TaskSpec> = tasks
        .into_iter()
        .map(|t| TaskSpec {
            task_id: TaskId::new(),
            function_id: t.function_id,
            attempt: 0,
            max_retries: t.max_retries.unwrap_or(state.config.default_max_retries),
            input_bytes: (t.payload.len() > inline_limit).then_some(t.payload.len() as u64),
            requeues: 0,
            payload: t.payload,
            group: task_group.filter(|_| result_queue),
            walltime_ms: t.walltime_ms,
            priority: t.priority,
            requires: t.requires,
            retry: t.retry,
            not_before: None,
            environment: t.environment,
            session: Some(batch.batch_id),
        })
        .collect();
    Ok(Prepared {
        batch,
        specs,
        functions,
    })
}

/// Writes, commits and publishes submissions: all of them or none (see the module's
/// documentation).
async fn commit(state: &AppState, prepared: Vec<Prepared>) -> ApiResult<Vec<Accepted>> {
    // Nothing is written while the broker refuses messages: 503 before any work.
    state
        .with_broker(|_| async { Ok(()) })
        .await
        .map_err(ApiError::broker)?;
    let whole = prepared.len() == 1 && part_ends(prepared[0].specs.len()).len() == 1;
    let started = Instant::now();
    // Tasks whose records exist, per submission.
    let mut written = vec![0; prepared.len()];
    for (b, p) in prepared.iter().enumerate() {
        for (i, &end) in part_ends(p.specs.len()).iter().enumerate() {
            let part = match (whole, i) {
                (true, _) => Part::Whole,
                (false, 0) => Part::First,
                (false, _) => Part::Middle,
            };
            let step = async {
                if started.elapsed() > WRITING_LIMIT {
                    let total: usize = prepared.iter().map(|p| p.specs.len()).sum();
                    return Err(ApiError::new(
                        Code::Unavailable,
                        format!(
                            "writing {total} tasks took longer than {} s; try again",
                            WRITING_LIMIT.as_secs()
                        ),
                    ));
                }
                write_part(state, &p.batch, &p.specs[written[b]..end], part).await
            };
            if let Err(e) = step.await {
                abandon(state, &prepared, &written, &e.message).await;
                return Err(e);
            }
            written[b] = end;
        }
    }
    if !whole {
        committed(state, &prepared).await?;
    }
    // Committed: from here the submission stands. A publish that fails leaves its
    // tasks `received`, which the sweeper submits again from Redis.
    for p in &prepared {
        let mut sent = 0;
        for end in part_ends(p.specs.len()) {
            if let Err(e) = publish_part(state, &p.batch, &p.specs[sent..end], &p.functions).await {
                tracing::warn!(
                    batch_id = %p.batch.batch_id,
                    unpublished = p.specs.len() - sent,
                    error = %e.message,
                    "tasks accepted but not published yet; the sweeper submits them from Redis"
                );
                break;
            }
            sent = end;
        }
        tracing::debug!(batch_id = %p.batch.batch_id, tasks = p.specs.len(), "tasks submitted");
        traced(p, sent);
        state.metrics.tasks_accepted.inc_by(p.specs.len() as u64);
        state.metrics.sessions_accepted.inc();
    }
    Ok(prepared
        .into_iter()
        .map(|p| Accepted {
            batch_id: p.batch.batch_id,
            task_ids: p.specs.iter().map(|s| s.task_id).collect(),
            callback_secret: p.batch.callback_secret,
        })
        .collect())
}

/// Each task's `submit` span in its trace (see `ferry_telemetry::trace`): from its
/// record's creation to its publish (the first `published` were; the rest wait for the
/// sweeper). It starts no sooner than its task's id was made: the trace's root starts
/// at that time (to the millisecond, from the id), and a child must not start before
/// its root.
fn traced(p: &Prepared, published: usize) {
    if !ferry_telemetry::trace::on() {
        return;
    }
    let end = now_micros();
    let (session, endpoint) = (p.batch.batch_id.to_string(), p.batch.endpoint_id.to_string());
    for (i, spec) in p.specs.iter().enumerate() {
        let mut hop = ferry_telemetry::trace::Hop::of_task(
            "submit",
            spec.task_id.0.as_u128(),
            spec.task_id.to_string(),
            spec.task_id
                .created_micros()
                .map_or(p.batch.created_at, |made| made.max(p.batch.created_at)),
            end,
        )
        .with("ferry.session_id", session.clone())
        .with("ferry.endpoint_id", endpoint.clone())
        .with("ferry.function_id", spec.function_id.to_string());
        if i >= published {
            hop.error = Some("accepted, not published yet: the sweeper submits it again".to_owned());
        }
        ferry_telemetry::trace::emit(hop);
    }
}

/// Commits submissions written in parts. When Redis's answer is lost, whether the
/// commit happened is read back: a submission is refused only if it was not.
async fn committed(state: &AppState, prepared: &[Prepared]) -> ApiResult<()> {
    let batches: Vec<&BatchRecord> = prepared.iter().map(|p| &p.batch).collect();
    let written: Vec<usize> = prepared.iter().map(|p| p.specs.len()).collect();
    match state.store.commit_batches(&batches, now_micros()).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            // The sweeper failed one of them; the others (sessions of the same request)
            // fail now too rather than wait for it.
            let e = ApiError::new(
                Code::Unavailable,
                "the submission took too long to write and was abandoned; none of its tasks ran; try again",
            );
            abandon(state, prepared, &written, &e.message).await;
            Err(e)
        }
        Err(e) => match state.store.being_written(prepared[0].batch.batch_id).await {
            Ok(false) => Ok(()),
            Ok(true) => {
                let e = ApiError::from(e);
                abandon(state, prepared, &written, &e.message).await;
                Err(e)
            }
            Err(_) => Err(e.into()),
        },
    }
}

/// A submission refused before its commit: nothing of it was published; the tasks
/// written end `failed` saying why, and its batches are closed. When Redis refuses
/// even that, the batches stay "being written" and the sweeper fails them later.
async fn abandon(state: &AppState, prepared: &[Prepared], written: &[usize], why: &str) {
    let reason = format!("the submission was refused before it was accepted ({why}); the task never ran");
    for (p, &n) in prepared.iter().zip(written) {
        if n == 0 {
            continue;
        }
        tracing::warn!(batch_id = %p.batch.batch_id, tasks = n, why, "submission refused part-way; its written tasks fail unrun");
        if !fail_unqueued(state, &p.specs[..n], &reason).await {
            continue;
        }
        // A no-op for a batch that is not being written (a `Whole` one).
        if let Err(e) = state
            .store
            .close_unfinished_batch(p.batch.batch_id, now_micros())
            .await
        {
            tracing::warn!(batch_id = %p.batch.batch_id, error = %e, "could not close a half-written batch; the sweeper will");
        }
    }
}

/// Writes one part of a submission's tasks as `received`.
async fn write_part(state: &AppState, batch: &BatchRecord, specs: &[TaskSpec], part: Part) -> ApiResult<()> {
    let new_tasks: Vec<NewTask> = specs
        .iter()
        .map(|s| NewTask {
            task_id: s.task_id,
            function_id: s.function_id,
            max_retries: s.max_retries,
            payload: s.payload.clone(),
            walltime_ms: s.walltime_ms,
            priority: s.priority,
            requires: s.requires.clone(),
            retry: s.retry.clone(),
            environment: s.environment.clone(),
            result_group: s.group,
            by_reference: s.input_bytes.is_some(),
        })
        .collect();
    state
        .store
        .create_part(batch, &new_tasks, Actor::WebService, part, now_micros())
        .await?;
    Ok(())
}

/// Publishes one part of a submission's tasks (written already), a message per
/// [`TASKS_PER_MESSAGE`] tasks.
async fn publish_part(
    state: &AppState,
    batch: &BatchRecord,
    specs: &[TaskSpec],
    functions: &HashMap<FunctionId, FunctionCode>,
) -> ApiResult<()> {
    let mut messages = Vec::with_capacity(specs.len().div_ceil(TASKS_PER_MESSAGE));
    for chunk in specs.chunks(TASKS_PER_MESSAGE) {
        let mut used: Vec<FunctionCode> = Vec::new();
        for spec in chunk {
            if !used.iter().any(|f| f.function_id == spec.function_id) {
                used.push(functions[&spec.function_id].clone());
            }
        }
        let message = TaskBatch {
            endpoint_id: batch.endpoint_id,
            functions: used,
            // Large inputs stay in the store (the endpoint fetches them); messages
            // carry none.
            tasks: chunk
                .iter()
                .map(|s| {
                    let mut s = s.clone();
                    if s.input_bytes.is_some() {
                        s.payload = Bytes::new();
                    }
                    s
                })
                .collect(),
        };
        messages.push(
            ferry_proto::codec::encode(&message).map_err(|e| ApiError::unavailable("cannot encode", e))?,
        );
    }
    // Not waiting for the broker's confirm takes a fsync off every submission's answer.
    // The records are in Redis already: should a message be lost with a broker crash,
    // the forwarder's sweeper submits the tasks again from there (tasks still
    // `received` 10 s on).
    let messages = &messages;
    state
        .with_broker(|b| async move {
            let queue = b.submissions_queue();
            b.publish_many_unconfirmed(&queue, messages.iter().map(Vec::as_slice))
                .await
        })
        .await
        .map_err(ApiError::broker)
}

/// Fails tasks that were never published; false if Redis refused.
async fn fail_unqueued(state: &AppState, specs: &[TaskSpec], reason: &str) -> bool {
    let at = now_micros();
    let why = Bytes::from(reason.to_owned());
    let reports: Vec<Report> = specs
        .iter()
        .map(|s| {
            Report::ended_by(
                s.task_id,
                0,
                EventKind::Failed,
                Actor::WebService,
                at,
                why.clone(),
            )
        })
        .collect();
    match state.store.apply(&reports).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, tasks = specs.len(), first_task_id = %specs[0].task_id, "could not fail tasks that were never published; the sweeper will");
            false
        }
    }
}

/// Checks task `i`'s inputs (its payload: a JSON object, or nothing for none) against
/// application `spec`: every problem, each with the input's name.
fn application_inputs(i: usize, spec: &ferry_app::AppSpec, payload: &[u8]) -> Vec<FieldError> {
    let values = if payload.is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        match serde_json::from_slice::<serde_json::Value>(payload) {
            Ok(v) => v,
            Err(e) => {
                return vec![FieldError {
                    at: format!("tasks[{i}].payload"),
                    input: None,
                    message: format!("an application's inputs are a JSON object: {e}"),
                }];
            }
        }
    };
    match spec.validate(&values) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .map(|e| FieldError {
                at: if e.input.is_empty() {
                    format!("tasks[{i}].payload")
                } else {
                    format!("tasks[{i}].{}", e.input)
                },
                input: (!e.input.is_empty()).then_some(e.input),
                message: e.message,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_double_from_one_message_up_to_the_largest() {
        assert_eq!(part_ends(1), vec![1]);
        assert_eq!(part_ends(1000), vec![1000]);
        assert_eq!(part_ends(1001), vec![1000, 1001]);
        assert_eq!(part_ends(10_000), vec![1000, 3000, 7000, 10_000]);
        let ends = part_ends(100_000);
        assert_eq!(&ends[..5], &[1000, 3000, 7000, 15_000, 23_000]);
        assert_eq!(*ends.last().unwrap(), 100_000);
        assert!(ends.windows(2).all(|w| w[1] - w[0] <= LARGEST_PART));
    }
}
