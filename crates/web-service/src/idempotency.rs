//! `Idempotency-Key` on submissions (`POST /v1/tasks`, `POST /v1/sessions`): a client
//! that sends a submission again with the key it used before (after a timeout, a dropped
//! connection, a 503) gets the first answer (the same task ids) instead of a second
//! session. The key is the caller's (another user's same key is another key), kept a day
//! with the answer; a request that failed frees its key, as nothing of it stands.

use axum::Json;
use axum::http::HeaderMap;
use ferry_proto::UserId;
use ferry_store::KeyClaim;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};

pub const HEADER: &str = "idempotency-key";
/// How long an answer is kept for its key.
const KEEP_SECS: u64 = 24 * 3600;
/// How long a key is held for a request still being answered (a web-service that dies
/// mid-request frees it then): past the longest a submission may take to write.
const PENDING_SECS: u64 = 120;
const MAX_KEY_BYTES: usize = 200;

/// Runs `run` once per idempotency key (when the request has one): a request seen
/// before gets its answer again; one still being answered, or a key used for another
/// request, gets 409 saying so.
pub async fn once<B, T, F, Fut>(
    state: &AppState,
    user: UserId,
    headers: &HeaderMap,
    route: &str,
    body: B,
    run: F,
) -> ApiResult<Json<T>>
where
    B: Serialize,
    T: Serialize + DeserializeOwned,
    F: FnOnce(B) -> Fut,
    Fut: std::future::Future<Output = ApiResult<T>>,
{
    once_with(state, user, headers, route, body, async {}, |body, ()| run(body)).await
}

/// [`once`], with `early` (a read `run` needs) made alongside the key's claim, in the
/// same Redis round trip, and given to `run`; it is wasted when the request is not run.
pub async fn once_with<B, T, E, F, Fut>(
    state: &AppState,
    user: UserId,
    headers: &HeaderMap,
    route: &str,
    body: B,
    early: impl std::future::Future<Output = E>,
    run: F,
) -> ApiResult<Json<T>>
where
    B: Serialize,
    T: Serialize + DeserializeOwned,
    F: FnOnce(B, E) -> Fut,
    Fut: std::future::Future<Output = ApiResult<T>>,
{
    let Some(key) = headers.get(HEADER) else {
        return run(body, early.await).await.map(Json);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_BYTES && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_BYTES} printable ASCII characters"
            ))
        })?;
    let mut hash = Sha256::new();
    hash.update(route.as_bytes());
    hash.update(serde_json::to_vec(&body).unwrap_or_default());
    let fingerprint = hex::encode(hash.finalize());
    let (claim, early) = tokio::join!(
        state.store.claim_key(user, key, &fingerprint, PENDING_SECS),
        early
    );
    match claim? {
        KeyClaim::Fresh => {}
        KeyClaim::InProgress => {
            return Err(ApiError {
                code: Code::Conflict,
                message: format!(
                    "a request with Idempotency-Key {key:?} is still being answered; send it again in a moment"
                ),
                retry_after: Some(1),
                errors: Vec::new(),
            });
        }
        KeyClaim::Answered(answer) => {
            tracing::info!(%user, key, "a request sent again with its idempotency key: the first answer");
            return serde_json::from_str(&answer)
                .map(Json)
                .map_err(|e| ApiError::unavailable("a kept answer cannot be read", e));
        }
        KeyClaim::Reused => {
            return Err(ApiError::new(
                Code::Conflict,
                format!(
                    "Idempotency-Key {key:?} was used for another request; use a new key for a new request"
                ),
            ));
        }
    }
    match run(body, early).await {
        Ok(answer) => {
            let doc =
                serde_json::to_string(&answer).map_err(|e| ApiError::unavailable("cannot encode", e))?;
            if let Err(e) = state
                .store
                .answer_key(user, key, &fingerprint, &doc, KEEP_SECS)
                .await
            {
                tracing::warn!(%user, key, error = %e, "cannot keep the answer of an idempotent request");
            }
            Ok(Json(answer))
        }
        Err(e) => {
            if let Err(release) = state.store.release_key(user, key).await {
                tracing::warn!(%user, key, error = %release, "cannot free the idempotency key of a failed request");
            }
            Err(e)
        }
    }
}
