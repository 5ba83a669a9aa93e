//! Who may use what: every route and both APIs ask here, so the rules live in one place.
//! Users see and use only their own functions, endpoints, tasks and batches. Another
//! user's thing answers 404, exactly as one that does not exist: an answer must not
//! confirm that an id is in use.

use std::sync::Arc;

use ferry_proto::{EndpointId, FunctionId, UserId};
use ferry_store::{EndpointRecord, FunctionRecord, Principal};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// A function the caller may use, or the error that says why not.
pub async fn visible_function(
    state: &AppState,
    user: UserId,
    id: FunctionId,
) -> ApiResult<Arc<FunctionRecord>> {
    match state.function(id).await? {
        Some(f) if f.owner == user => Ok(f),
        _ => Err(ApiError::not_found(format!("function {id} not found"))),
    }
}

/// Whether the caller may send tasks to the endpoint (it is theirs), from the owners
/// kept in memory: checks ownership only, not the endpoint's current state.
pub async fn usable_endpoint(state: &AppState, user: UserId, id: EndpointId) -> ApiResult<()> {
    match state.endpoint_owner(id).await? {
        Some(owner) if owner == user => Ok(()),
        _ => Err(ApiError::not_found(format!("endpoint {id} not found"))),
    }
}

/// An endpoint the caller owns, or the error that says why not.
pub async fn owned_endpoint(state: &AppState, user: UserId, id: EndpointId) -> ApiResult<EndpointRecord> {
    match state.store.get_endpoint(id).await? {
        Some(e) if e.owner == user => Ok(e),
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
