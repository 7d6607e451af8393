//! One error type for the HTTP boundary, mapped to the contract's shape in one place.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use chat_actors::ChatError;
use chat_store::{ContactError, StoreError};
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
        let mut resp =
            HttpResponse::build(self.status_code()).json(ErrorBody::new(self.code, &self.message));
        resp.extensions_mut().insert(crate::access::Refusal {
            code: self.code.as_str(),
            message: self.message.clone(),
        });
        resp
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
                ApiError::bad_request(format!("invalid JSON body: {}", plain(&e.to_string())))
            }
            other => ApiError::bad_request(format!("invalid request body: {other}")),
        };
        api.into()
    }

    pub fn query(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
        let detail = match &err {
            QueryPayloadError::Deserialize(e) => plain(&e.to_string()),
            other => plain(&other.to_string()),
        };
        ApiError::bad_request(format!("invalid query: {detail}")).into()
    }

    pub fn path(_err: PathError, _req: &HttpRequest) -> actix_web::Error {
        // Every path parameter is an id.
        ApiError::bad_request("invalid path: an id in the path is not an integer").into()
    }

    /// A deserializer's message in the words of the API: no Rust type or struct names.
    pub(crate) fn plain(message: &str) -> String {
        let mut out = Vec::new();
        let mut words = message.split(' ').peekable();
        while let Some(w) = words.next() {
            let (core, tail) = w
                .find(|c: char| !c.is_alphanumeric() && c != '_')
                .map_or((w, ""), |i| w.split_at(i));
            let replaced = match core {
                "i8" | "i16" | "i32" | "i64" | "isize" => Some("an integer"),
                "u8" | "u16" | "u32" | "u64" | "usize" => Some("a non-negative integer"),
                "f32" | "f64" => Some("a number"),
                "struct" | "enum" if words.peek().is_some() => {
                    // `struct SendBody`, `enum Tier`: the name is internal.
                    let next = words.next().unwrap_or_default();
                    let rest = next
                        .find(|c: char| !c.is_alphanumeric() && c != '_')
                        .map_or("", |i| &next[i..]);
                    let what = if core == "struct" {
                        "an object"
                    } else {
                        "one of the allowed values"
                    };
                    out.push(format!("{what}{rest}"));
                    continue;
                }
                _ => None,
            };
            match replaced {
                Some(r) => out.push(format!("{r}{tail}")),
                None => out.push(w.to_owned()),
            }
        }
        out.join(" ")
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

/// Through [`ChatError`], like store errors.
impl From<ContactError> for ApiError {
    fn from(e: ContactError) -> Self {
        ChatError::from(e).into()
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        ApiError::new(e.code, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::extract::plain;

    #[test]
    fn deserializer_messages_lose_their_rust_names() {
        assert_eq!(
            plain("invalid type: string \"x\", expected i64 at line 1 column 9"),
            "invalid type: string \"x\", expected an integer at line 1 column 9"
        );
        assert_eq!(
            plain("invalid type: integer `5`, expected struct SendBody at line 1 column 1"),
            "invalid type: integer `5`, expected an object at line 1 column 1"
        );
        assert_eq!(
            plain("unknown variant `x`, expected enum Tier"),
            "unknown variant `x`, expected one of the allowed values"
        );
        assert_eq!(
            plain("expected u32, found -1"),
            "expected a non-negative integer, found -1"
        );
        assert_eq!(plain("missing field `cid`"), "missing field `cid`");
    }
}
