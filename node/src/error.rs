//! One error type for the HTTP boundary, mapped to the contract's shape in one place.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use chat_actors::ChatError;
use chat_store::StoreError;
use chat_wire::{ErrorBody, ErrorCode};
use std::fmt;

/// An error answered to a client: a code of the contract and a message that never
/// carries internals.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Overrides the code's usual status (405 for a wrong method).
    pub status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            status: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn not_member() -> Self {
        ChatError::not_member().into()
    }
    pub fn conversation_not_found() -> Self {
        ChatError::conversation_not_found().into()
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RateLimited, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn draining() -> Self {
        ChatError::draining().into()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        })
    }

    fn error_response(&self) -> HttpResponse {
        metrics::counter!(chat_actors::metrics::ERRORS_TOTAL, "code" => self.code.as_str())
            .increment(1);
        HttpResponse::build(self.status_code()).json(ErrorBody::new(self.code, &self.message))
    }
}

/// Through [`ChatError`]: the one mapping of store errors to what clients see.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ChatError::from(e).into()
    }
}

/// Answers for extractor failures (bad JSON, query, path) in the contract's shape.
pub mod extract {
    use super::ApiError;
    use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
    use actix_web::{HttpRequest, HttpResponse};

    pub fn json(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
        let api = match &err {
            JsonPayloadError::Overflow { limit }
            | JsonPayloadError::OverflowKnownLength { limit, .. } => {
                ApiError::too_large(format!("request body is larger than {limit} bytes"))
            }
            JsonPayloadError::ContentType => {
                ApiError::bad_request("expected Content-Type: application/json")
            }
            JsonPayloadError::Deserialize(e) => {
                ApiError::bad_request(format!("invalid JSON body: {e}"))
            }
            other => ApiError::bad_request(format!("invalid request body: {other}")),
        };
        api.into()
    }

    pub fn query(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
        ApiError::bad_request(format!("invalid query: {err}")).into()
    }

    pub fn path(err: PathError, _req: &HttpRequest) -> actix_web::Error {
        ApiError::bad_request(format!("invalid path: {err}")).into()
    }

    /// Any route that does not exist.
    pub async fn not_found() -> HttpResponse {
        actix_web::ResponseError::error_response(&ApiError::not_found("no such endpoint"))
    }

    /// A route that exists, called with the wrong method.
    pub async fn method_not_allowed() -> HttpResponse {
        let mut e = ApiError::bad_request("method not allowed on this endpoint");
        e.status = Some(actix_web::http::StatusCode::METHOD_NOT_ALLOWED);
        actix_web::ResponseError::error_response(&e)
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        ApiError::new(e.code, e.message)
    }
}
