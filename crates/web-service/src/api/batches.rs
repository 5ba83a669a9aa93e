//! Batches are sessions: `GET /v1/batches/{id}` (the batch and its task ids), and
//! `POST /v1/sessions` (several at once), `GET /v1/sessions` (the caller's, newest
//! first), `GET /v1/sessions/{id}` (counts per state, in O(1)),
//! `GET /v1/sessions/{id}/tasks` (pages of tasks with their results).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use ferry_proto::api::{
    BatchDoc, SessionCreated, SessionDoc, SessionList, SessionTasksPage, SessionsRequest, SessionsResponse,
};
use ferry_proto::time::{Micros, to_secs};
use ferry_proto::{BatchId, TaskState, UserId};
use ferry_store::BatchStatus;

use crate::AppState;
use crate::answer::Answer;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, FerryJson, parse_id};

pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<BatchDoc>> {
    let id: BatchId = parse_id(&id)?;
    match state.store.get_batch(id).await? {
        Some((b, task_ids)) if b.owner == user => Ok(Json(BatchDoc {
            batch_id: b.batch_id,
            endpoint_id: b.endpoint_id,
            size: b.size,
            created_at: to_secs(b.created_at),
            task_ids,
        })),
        _ => Err(ApiError::not_found(format!("batch {id} not found"))),
    }
}

/// `POST /v1/sessions`: several sessions in one request (see
/// [`crate::submit::accept_all`]).
pub(crate) async fn create_sessions(
    State(state): State<AppState>,
    Caller(user): Caller,
    headers: axum::http::HeaderMap,
    FerryJson(body): FerryJson<SessionsRequest>,
) -> ApiResult<Json<SessionsResponse>> {
    if body.sessions.is_empty() {
        return Err(ApiError::bad_request(
            "sessions is empty: submit at least one session",
        ));
    }
    crate::submit::to_completion(async move {
        crate::idempotency::once(&state, user, &headers, "/v1/sessions", body, |body| async {
            let submissions = body
                .sessions
                .into_iter()
                .enumerate()
                .map(|(i, s)| super::tasks::submission(s, &format!("sessions[{i}].")))
                .collect::<ApiResult<Vec<_>>>()?;
            let created = crate::submit::accept_all(&state, user, submissions, "sessions").await?;
            Ok(SessionsResponse {
                sessions: created
                    .into_iter()
                    .map(|a| SessionCreated {
                        session_id: a.batch_id,
                        task_ids: a.task_ids,
                        callback_secret: a.callback_secret,
                    })
                    .collect(),
            })
        })
        .await
    })
    .await
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct ListQuery {
    /// Only sessions created before this (Unix seconds): the last page's `next_before`.
    before: Option<f64>,
    #[serde(default = "default_list_limit")]
    limit: usize,
}

fn default_list_limit() -> usize {
    50
}

/// Most sessions in one page.
const MAX_LIST: usize = 1000;

/// `GET /v1/sessions`: the caller's sessions (while their records are kept), newest
/// first, a page at a time.
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    Caller(user): Caller,
    crate::extract::FerryQuery(query): crate::extract::FerryQuery<ListQuery>,
) -> ApiResult<Json<SessionList>> {
    if query.limit == 0 || query.limit > MAX_LIST {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIST}, not {}",
            query.limit
        )));
    }
    let before = match query.before {
        Some(b) if !(b.is_finite() && b >= 0.0) => {
            return Err(ApiError::bad_request(format!(
                "before must be Unix seconds, not {b}"
            )));
        }
        Some(b) => Some((b * 1e6) as Micros),
        None => None,
    };
    let found = state.store.user_sessions(user, before, query.limit).await?;
    let next_before = (found.len() == query.limit)
        .then(|| found.last().map(|s| to_secs(s.record.created_at)))
        .flatten();
    Ok(Json(SessionList {
        sessions: found.iter().map(session_doc).collect(),
        next_before,
    }))
}

/// `GET /v1/sessions/{id}`: counts per state, from one hash.
pub(crate) async fn get_session(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionDoc>> {
    let id: BatchId = parse_id(&id)?;
    let status = owned_session(&state, user, id).await?;
    Ok(Json(session_doc(&status)))
}

/// The API view of a batch's status.
pub(crate) fn session_doc(s: &BatchStatus) -> SessionDoc {
    let counts: BTreeMap<String, u64> = TaskState::ALL
        .iter()
        .map(|st| (st.wire_name().to_owned(), s.counts[st.code() as usize]))
        .collect();
    let terminal = s.counts[TaskState::Success.code() as usize] + s.counts[TaskState::Failed.code() as usize];
    let pending = terminal < s.record.size;
    let reason = if s.timed_out_at.is_some() {
        Some("timeout")
    } else if s.cancelled_at.is_some() {
        Some("cancelled")
    } else {
        None
    };
    let status = match (reason, pending) {
        (Some(_), _) => "failed",
        (None, true) => "running",
        (None, false) => "completed",
    };
    SessionDoc {
        session_id: s.record.batch_id,
        endpoint_id: s.record.endpoint_id,
        size: s.record.size,
        status: status.to_owned(),
        pending,
        counts,
        created_at: to_secs(s.record.created_at),
        completed_at: s.done_at.map(to_secs),
        deadline: s.record.deadline.map(to_secs),
        reason: reason.map(str::to_owned),
        callback: s.callback.clone(),
    }
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct PageQuery {
    /// Sessions hold at most FERRY_MAX_BATCH (100,000) tasks: 32 bits are plenty.
    #[serde(default)]
    offset: u32,
    #[serde(default = "default_limit")]
    limit: u64,
}

fn default_limit() -> u64 {
    1000
}

/// Most tasks in one page.
const MAX_PAGE: u64 = 10_000;

/// `GET /v1/sessions/{id}/tasks?offset=&limit=`: a page of tasks with their results.
pub(crate) async fn session_tasks(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    crate::extract::FerryQuery(page): crate::extract::FerryQuery<PageQuery>,
) -> ApiResult<axum::response::Response> {
    let id: BatchId = parse_id(&id)?;
    if page.limit == 0 || page.limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit is {}; it must be from 1 to {MAX_PAGE}",
            page.limit
        )));
    }
    if page.offset > i32::MAX as u32 {
        return Err(ApiError::bad_request(format!(
            "offset is {}; it must be from 0 to {}",
            page.offset,
            i32::MAX
        )));
    }
    let status = owned_session(&state, user, id).await?;
    let size = status.record.size;
    let start = u64::from(page.offset).min(size);
    let stop = (start + page.limit).min(size);
    let ids = if start < stop {
        state
            .store
            .batch_task_ids(id, start as isize, stop as isize - 1)
            .await?
    } else {
        Vec::new()
    };
    // Written task by task, the large results read in bounded groups (crate::answer).
    let records = state.store.get_tasks_deferred(&ids, true).await?;
    let empty = SessionTasksPage {
        session_id: id,
        offset: start,
        size,
        next_offset: (stop < size).then_some(stop),
        tasks: Vec::new(),
    };
    let mut head = serde_json::to_vec(&empty).expect("a page serializes");
    // `...,"tasks":[]}`: the entries go between the brackets.
    head.truncate(head.len() - b"]}".len());
    Answer {
        head,
        records: records.into_iter().flatten().collect(),
        tail: b"]}".to_vec(),
        write: |t, out| serde_json::to_writer(out, &super::task_doc(t)).expect("a document serializes"),
    }
    .respond(&state.store)
    .await
}

async fn owned_session(state: &AppState, user: UserId, id: BatchId) -> ApiResult<BatchStatus> {
    match state.store.batch_status(id).await? {
        Some(s) if s.record.owner == user => Ok(s),
        _ => Err(ApiError::not_found(format!("session {id} not found"))),
    }
}
