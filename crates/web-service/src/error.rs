//! The one closed set of error codes, mapped once to HTTP statuses and to the JSON body
//! `{"code", "message"}`. 5xx bodies stay generic; the cause goes to the log.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_proto::api::ErrorBody;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    Gone,
    PayloadTooLarge,
    TooManyRequests,
    Unavailable,
    Internal,
}

impl Code {
    fn status(self) -> StatusCode {
        match self {
            Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Conflict => StatusCode::CONFLICT,
            Code::Gone => StatusCode::GONE,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::Unauthenticated => "unauthenticated",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Conflict => "conflict",
            Code::Gone => "gone",
            Code::PayloadTooLarge => "payload_too_large",
            Code::TooManyRequests => "too_many_requests",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// Seconds to wait before trying again (`Retry-After`), for a 429.
    pub retry_after: Option<u64>,
    /// Each problem on its own, where there were several.
    pub errors: Vec<ferry_proto::api::FieldError>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            errors: Vec::new(),
        }
    }

    /// A 400 listing several problems at once: `message` says them all in one line,
    /// `errors` one by one.
    pub fn invalid(message: impl Into<String>, errors: Vec<ferry_proto::api::FieldError>) -> Self {
        Self {
            errors,
            ..Self::bad_request(message)
        }
    }

    /// A limit was reached (429): `message` names it, `retry_after` says when to try again.
    pub fn too_many_requests(message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            code: Code::TooManyRequests,
            message: message.into(),
            retry_after: Some(retry_after),
            errors: Vec::new(),
        }
    }

    /// The same error, its message prefixed by where it happened (`sessions[2]: ...`).
    pub fn context(self, at: impl std::fmt::Display) -> Self {
        Self {
            code: self.code,
            message: format!("{at}: {}", self.message),
            retry_after: self.retry_after,
            errors: self.errors,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// A failure of a backend: logged here with its cause, answered generically.
    pub fn unavailable(what: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{what}");
        Self::new(Code::Unavailable, format!("{what}; try again"))
    }

    /// The broker failed a request's operation: 503; when it is only not taking
    /// messages for now (an alarm), with the reason and `Retry-After`.
    pub fn broker(e: ferry_broker::Error) -> Self {
        if e.is_backpressure() {
            return Self {
                code: Code::Unavailable,
                message: format!("{e}; try again later"),
                retry_after: Some(5),
                errors: Vec::new(),
            };
        }
        Self::unavailable("the broker is unavailable", e)
    }
}

impl From<ferry_store::Error> for ApiError {
    fn from(e: ferry_store::Error) -> Self {
        match e {
            ferry_store::Error::TooLarge { bytes, limit } => ApiError::new(
                Code::PayloadTooLarge,
                format!(
                    "the results of these tasks are {bytes} bytes together; one answer carries at most \
                     {limit} (FERRY_MAX_RESPONSE_BYTES): ask for fewer tasks at once"
                ),
            ),
            e => ApiError::unavailable("the store is unavailable", e),
        }
    }
}

impl ApiError {
    /// Turns a JSON extractor's rejection into Ferry's error, naming the body limit when
    /// that was the problem.
    pub fn from_json_rejection(rejection: JsonRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                Code::PayloadTooLarge,
                format!("request body is larger than the limit of {limit} bytes"),
            )
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.name().to_owned(),
            message: self.message,
            errors: self.errors,
        };
        let mut response = (self.code.status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
