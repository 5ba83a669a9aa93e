//! Extractors: the caller's identity from its bearer token ([`Caller`] for user-only
//! routes, [`Auth`] for those an endpoint credential may use too), and a JSON body whose
//! rejection is Ferry's error body.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use ferry_proto::UserId;
use ferry_store::Principal;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::{ApiError, Code};

/// An authenticated user (an endpoint credential is refused: 403).
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub UserId);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Auth::from_request_parts(parts, state).await?.0 {
            Principal::User(user) => Ok(Caller(user)),
            Principal::Endpoint { endpoint, .. } => Err(ApiError::new(
                Code::Forbidden,
                format!(
                    "this is the credential of endpoint {endpoint}: it may register, read and delete that endpoint \
                     and move its tasks' inputs and results, nothing else"
                ),
            )),
        }
    }
}

/// What a WebSocket client that cannot set headers (a browser) offers as a subprotocol
/// to carry its token: `ferry.bearer.<the token's bytes in hex>`, beside
/// [`WS_PROTOCOL`], which the server selects.
pub const WS_BEARER_PREFIX: &str = "ferry.bearer.";
/// The subprotocol the server answers a browser's WebSocket with.
pub const WS_PROTOCOL: &str = "ferry.v1";

/// The request's bearer token: from `Authorization: Bearer <token>`, or, on a WebSocket
/// upgrade without that header (a browser's `new WebSocket(url, protocols)` sets no
/// headers), from the `Sec-WebSocket-Protocol` entry [`WS_BEARER_PREFIX`]`<hex>`. Not
/// from the URL: tokens stay out of access logs.
fn bearer(parts: &Parts) -> Result<String, ApiError> {
    let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
        return socket_bearer(parts).unwrap_or_else(|| {
            Err(ApiError::new(
                Code::Unauthenticated,
                "missing Authorization: Bearer <token> header",
            ))
        });
    };
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                Code::Unauthenticated,
                "Authorization header must be `Bearer <token>`",
            )
        })
}

/// The token a WebSocket upgrade carries in its subprotocols, if it carries one.
fn socket_bearer(parts: &Parts) -> Option<Result<String, ApiError>> {
    let upgrade = parts.headers.get(axum::http::header::UPGRADE)?;
    if !upgrade.as_bytes().eq_ignore_ascii_case(b"websocket") {
        return None;
    }
    let offered = parts
        .headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(WS_BEARER_PREFIX))?;
    let refused = || {
        ApiError::new(
            Code::Unauthenticated,
            format!(
                "the WebSocket subprotocol {WS_BEARER_PREFIX}<token> must carry the token's bytes in hex"
            ),
        )
    };
    Some(
        hex::decode(offered)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(refused),
    )
}

/// Whoever the bearer token acts for: a user, or one endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        match state.principal_for_token(&token).await? {
            Some(principal) => {
                // An endpoint's calls are bounded by its tasks; a user's by the rate.
                if let Principal::User(user) = principal {
                    state.limits.request(user)?;
                }
                Ok(Auth(principal))
            }
            None => Err(ApiError::new(
                Code::Unauthenticated,
                "unknown, revoked or expired token",
            )),
        }
    }
}

/// `Json<T>` with Ferry's error body on rejection. The body must be a JSON object:
/// serde's derived structs would also take an array of their fields in order, which no
/// route means (a 400 says "expected a JSON object").
pub struct FerryJson<T>(pub T);

/// `T` from a JSON object only.
struct Object<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Visit(std::marker::PhantomData))
            .map(Object)
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for FerryJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::Json::<Object<T>>::from_request(req, state).await {
            Ok(axum::Json(Object(value))) => Ok(FerryJson(value)),
            Err(rejection) => Err(ApiError::from_json_rejection(
                rejection,
                state.config.max_request_bytes,
            )),
        }
    }
}

/// A raw body with Ferry's error body on rejection (too large, or cut off).
pub struct FerryBytes(pub bytes::Bytes);

impl FromRequest<AppState> for FerryBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match bytes::Bytes::from_request(req, state).await {
            Ok(body) => Ok(FerryBytes(body)),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(
                    Code::PayloadTooLarge,
                    format!(
                        "request body is larger than the limit of {} bytes",
                        state.config.max_request_bytes
                    ),
                ))
            }
            Err(rejection) => Err(ApiError::bad_request(format!(
                "the request body: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// `Query<T>` with Ferry's error body on rejection.
pub struct FerryQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for FerryQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(FerryQuery(value)),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "the query string: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// Parses a path segment as an id, naming the kind on failure.
pub fn parse_id<T>(raw: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr<Err = ferry_proto::ids::Error>,
{
    raw.parse()
        .map_err(|e: ferry_proto::ids::Error| ApiError::bad_request(e.to_string()))
}
