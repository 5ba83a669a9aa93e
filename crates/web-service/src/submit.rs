//! Accepting tasks, shared by Ferry's API and the Globus Compute compatible one:
//! validate everything, then write the tasks as `received` and publish them, a part at
//! a time (one Redis round trip each; a large submission's first tasks run while the
//! rest are written), and only then hand out their ids. A returned id is a task that
//! will reach a terminal state: its record is in Redis, and its message in RabbitMQ or,
//! if that was lost before the broker confirmed it, recovered from Redis by the
//! forwarder's sweeper. A submission that fails part-way hands out no ids and fails
//! the tasks it had written.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_proto::messages::{FunctionCode, FunctionKind, TaskBatch, TaskSpec};
use ferry_proto::time::now_micros;
use ferry_proto::{Actor, BatchId, EndpointId, Event, EventKind, FunctionId, TaskGroupId, TaskId, UserId};
use ferry_store::{BatchRecord, Finish, NewTask, Part, Report};

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};

/// Tasks per AMQP message on the submissions queue.
const TASKS_PER_MESSAGE: usize = 1000;

/// A large submission is written to Redis in parts, each published as soon as it is
/// written, so that its first tasks run while the rest are written: the first part
/// is one message's worth, each next one twice the last, up to this many (each part
/// waits its turn behind whatever else Redis is doing, so fewer is quicker; and the
/// service holds one part's Redis commands at a time, not the whole submission's).
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
/// being written for abandoned (`FERRY_ABANDONED_BATCH_SECS`, a minute) and closes it.
const WRITING_LIMIT: Duration = Duration::from_secs(30);

/// One task to accept.
pub struct Submitted {
    pub function_id: FunctionId,
    pub payload: Bytes,
    pub max_retries: Option<u32>,
    pub walltime_ms: Option<u64>,
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

/// Accepts a submission whole or not at all (a failure part-way fails the tasks written
/// so far and hands out no id); returns the batch id and the task ids in
/// the submission's order.
#[tracing::instrument(skip_all, fields(user = %user, endpoint_id = %submission.endpoint_id, tasks = submission.tasks.len()))]
pub async fn accept(state: &AppState, user: UserId, submission: Submission) -> ApiResult<Accepted> {
    let prepared = prepare(state, user, submission).await?;
    check_room(state, user, std::slice::from_ref(&prepared)).await?;
    commit(state, prepared).await
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
    }
    Ok(())
}

/// Accepts several submissions (sessions): every one is checked before any is
/// written, then each is written whole or not at all.
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
    let mut out = Vec::with_capacity(prepared.len());
    for p in prepared {
        out.push(commit(state, p).await?);
    }
    Ok(out)
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
    for (i, task) in tasks.iter().enumerate() {
        if !functions.contains_key(&task.function_id) {
            let f = crate::access::visible_function(state, user, task.function_id).await?;
            crate::access::allowed_on(&endpoint, f.function_id)?;
            functions.insert(
                f.function_id,
                FunctionCode::for_message(f.function_id, f.kind, &f.code),
            );
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
        })
        .collect();
    Ok(Prepared {
        batch,
        specs,
        functions,
    })
}

async fn commit(state: &AppState, prepared: Prepared) -> ApiResult<Accepted> {
    let Prepared {
        batch,
        specs,
        functions,
    } = prepared;
    let ends = part_ends(specs.len());
    let started = Instant::now();
    // Tasks whose records exist, in order.
    let mut written = 0;
    for (i, &end) in ends.iter().enumerate() {
        let chunk = &specs[written..end];
        let part = Part::of(i, ends.len());
        let step = async {
            if i > 0 && started.elapsed() > WRITING_LIMIT {
                return Err(ApiError::new(
                    Code::Unavailable,
                    format!(
                        "writing {} tasks took longer than {} s; try again",
                        specs.len(),
                        WRITING_LIMIT.as_secs()
                    ),
                ));
            }
            write_part(state, &batch, chunk, part).await?;
            written += chunk.len();
            publish_part(state, &batch, chunk, &functions).await
        };
        if let Err(e) = step.await {
            // Nothing is handed out: the tasks written so far end `failed` (those
            // already published are stopped where they are), and a batch left half
            // written is closed at the tasks it has (a no-op if its last part was
            // written).
            fail_unqueued(state, &specs[..written]).await;
            if part != Part::Whole
                && written > 0
                && let Err(e) = state
                    .store
                    .close_unfinished_batch(batch.batch_id, now_micros())
                    .await
            {
                tracing::warn!(batch_id = %batch.batch_id, error = %e, "could not close a half-written batch; the sweeper will");
            }
            return Err(e);
        }
    }
    tracing::debug!(batch_id = %batch.batch_id, parts = ends.len(), "tasks submitted");
    Ok(Accepted {
        batch_id: batch.batch_id,
        task_ids: specs.iter().map(|s| s.task_id).collect(),
        callback_secret: batch.callback_secret,
    })
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

async fn fail_unqueued(state: &AppState, specs: &[TaskSpec]) {
    if specs.is_empty() {
        return;
    }
    let at = now_micros();
    let reports: Vec<Report> = specs
        .iter()
        .map(|s| Report {
            task_id: s.task_id,
            event: Event {
                kind: EventKind::Failed,
                attempt: 0,
            },
            at,
            by: Actor::WebService,
            from: None,
            finish: Some(Finish {
                success: false,
                by_reference: false,
                data: Bytes::from_static(b"the task could not be queued: the broker was unavailable"),
                exception: Bytes::new(),
                stdout: String::new(),
                stderr: String::new(),
            }),
        })
        .collect();
    if let Err(e) = state.store.apply(&reports).await {
        tracing::error!(error = %e, "could not fail tasks that were never queued");
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
