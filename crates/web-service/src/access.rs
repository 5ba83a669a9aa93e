//! Who may use what: every route and both APIs ask here, so the rules live in one place.
//!
//! - A function may be run by its owner, by the users it is shared with, and by anyone
//!   when it is public; an endpoint may be sent tasks likewise. An endpoint that lists
//!   `allowed_functions` runs those only, whoever sends them (403 naming the function).
//! - Tasks, sessions and task groups are their submitter's alone.
//! - Only an owner registers, renames, shares or deletes what is theirs.
//!
//! Anything a caller may not use answers 404, exactly as one that does not exist: an
//! answer must not confirm that an id is in use. Changing what is shared with the
//! caller answers 403 (they know it exists). Sharing changes take effect within
//! [`crate::SHARING_TTL`].

use std::sync::Arc;

use ferry_proto::{EndpointId, FunctionId, UserId};
use ferry_store::{EndpointRecord, FunctionRecord, Principal};

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};

/// A function the caller may run, or the error that says why not.
pub async fn visible_function(
    state: &AppState,
    user: UserId,
    id: FunctionId,
) -> ApiResult<Arc<FunctionRecord>> {
    match state.function(id).await? {
        Some(f) if f.usable_by(user) => Ok(f),
        _ => Err(ApiError::not_found(format!("function {id} not found"))),
    }
}

/// A function the caller owns; one they may only run is a 403 saying so.
pub async fn owned_function(
    state: &AppState,
    user: UserId,
    id: FunctionId,
) -> ApiResult<Arc<FunctionRecord>> {
    match state.function(id).await? {
        Some(f) if f.owner == user => Ok(f),
        Some(f) if f.usable_by(user) => Err(not_yours("function", id)),
        _ => Err(ApiError::not_found(format!("function {id} not found"))),
    }
}

/// Something shared with the caller that only its owner may change.
fn not_yours(what: &str, id: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        Code::Forbidden,
        format!("{what} {id} is shared with you; only its owner may change it"),
    )
}

/// An endpoint the caller may send tasks to (its record, for which functions it runs).
pub async fn usable_endpoint(
    state: &AppState,
    user: UserId,
    id: EndpointId,
) -> ApiResult<Arc<EndpointRecord>> {
    match state.endpoint(id).await? {
        Some(e) if e.usable_by(user) => Ok(e),
        _ => Err(ApiError::not_found(format!("endpoint {id} not found"))),
    }
}

/// Whether the endpoint runs the function; 403 naming both when it does not.
pub fn allowed_on(endpoint: &EndpointRecord, function: FunctionId) -> ApiResult<()> {
    if endpoint.allows(function) {
        return Ok(());
    }
    Err(ApiError::new(
        Code::Forbidden,
        format!(
            "function {function} is not allowed on endpoint {} ({}): it runs only its allowed_functions",
            endpoint.endpoint_id, endpoint.name
        ),
    ))
}

/// An endpoint the caller owns (fresh from Redis), or the error that says why not.
pub async fn owned_endpoint(state: &AppState, user: UserId, id: EndpointId) -> ApiResult<EndpointRecord> {
    match state.store.get_endpoint(id).await? {
        Some(e) if e.owner == user => Ok(e),
        Some(e) if e.usable_by(user) => Err(not_yours("endpoint", id)),
        _ => Err(ApiError::not_found(format!("endpoint {id} not found"))),
    }
}

/// An endpoint the caller may see (owns, or may send tasks to), fresh from Redis.
pub async fn visible_endpoint(state: &AppState, user: UserId, id: EndpointId) -> ApiResult<EndpointRecord> {
    match state.store.get_endpoint(id).await? {
        Some(e) if e.usable_by(user) => Ok(e),
        _ => Err(ApiError::not_found(format!("endpoint {id} not found"))),
    }
}

/// An endpoint credential acts for its own endpoint only; a user for any of theirs
/// (ownership is checked where the record is read).
pub fn acts_for_endpoint(principal: Principal, id: EndpointId) -> ApiResult<()> {
    match principal {
        Principal::Endpoint { endpoint, .. } if endpoint != id => {
            Err(ApiError::not_found(format!("endpoint {id} not found")))
        }
        _ => Ok(()),
    }
}

/// The most users a function or endpoint may be shared with by name.
pub const MAX_SHARED_WITH: usize = 1000;

/// Every user named exists (one that does not is a 400 naming it).
pub async fn existing_users(state: &AppState, field: &str, users: &[UserId]) -> ApiResult<()> {
    if users.len() > MAX_SHARED_WITH {
        return Err(ApiError::bad_request(format!(
            "{field} names {} users; the most is {MAX_SHARED_WITH} (make it public instead)",
            users.len()
        )));
    }
    for user in users {
        if !state.store.user_exists(*user).await? {
            return Err(ApiError::bad_request(format!("{field}: no user {user}")));
        }
    }
    Ok(())
}
