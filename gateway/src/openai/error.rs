//! Errors as OpenAI error JSON with their HTTP status.

use std::time::Duration;

use serde_json::{Value, json};

use moe_model::{ModelError, RoutedError};

use crate::chat_template::TemplateError;

/// The class of an API error: its HTTP status and its OpenAI `"type"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400 `BadRequestError`.
    BadRequest,
    /// 401 `AuthenticationError`.
    Authentication,
    /// 404 `NotFoundError`.
    NotFound,
    /// 408 `RequestTimeoutError`: the request did not arrive in time.
    RequestTimeout,
    /// 413 `PayloadTooLargeError`.
    PayloadTooLarge,
    /// 500 `InternalServerError`.
    Internal,
    /// 503 `ServiceUnavailableError`: the server is at capacity; retry later.
    ServiceUnavailable,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::NotFound => 404,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Internal => 500,
            ErrorKind::ServiceUnavailable => 503,
        }
    }

    /// The OpenAI error `"type"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "BadRequestError",
            ErrorKind::Authentication => "AuthenticationError",
            ErrorKind::NotFound => "NotFoundError",
            ErrorKind::RequestTimeout => "RequestTimeoutError",
            ErrorKind::PayloadTooLarge => "PayloadTooLargeError",
            ErrorKind::Internal => "InternalServerError",
            ErrorKind::ServiceUnavailable => "ServiceUnavailableError",
        }
    }
}

/// An error answered to an API client: an HTTP status and an OpenAI error document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// A machine-readable code, where OpenAI defines one (`model_not_found`, `invalid_api_key`).
    pub code: Option<String>,
    /// Seconds the HTTP layer sends as `Retry-After` (overload only).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after_secs: None,
        }
    }

    /// 400: a field's value is refused.
    pub fn bad_request(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            ..Self::new(ErrorKind::BadRequest, message)
        }
    }

    /// 400: the body as a whole is unusable (not JSON, not an object).
    pub fn malformed_body(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// 404: no model of that name is served.
    pub fn not_found_model(name: &str) -> Self {
        Self {
            param: Some("model".to_owned()),
            code: Some("model_not_found".to_owned()),
            ..Self::new(
                ErrorKind::NotFound,
                format!("The model `{name}` does not exist."),
            )
        }
    }

    /// 503 with `Retry-After`: the queues are full.
    pub fn overloaded(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                ErrorKind::ServiceUnavailable,
                format!(
                    "The server is at capacity. Please retry after {retry_after_secs} seconds."
                ),
            )
        }
    }

    /// 413: the body is larger than the server accepts.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            ErrorKind::PayloadTooLarge,
            format!("The request body is larger than the limit of {limit_bytes} bytes."),
        )
    }

    /// 408: the request body had not fully arrived when `timeout` ran out.
    pub fn request_timeout(timeout: Duration) -> Self {
        Self::new(
            ErrorKind::RequestTimeout,
            format!(
                "The request body did not arrive within the body timeout of {} seconds.",
                timeout.as_secs_f64()
            ),
        )
    }

    /// 401: a missing or wrong API key (never echoed back).
    pub fn unauthorized() -> Self {
        Self {
            code: Some("invalid_api_key".to_owned()),
            ..Self::new(ErrorKind::Authentication, "Incorrect API key provided.")
        }
    }

    /// 503: the service cannot serve now; `message` says why.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ServiceUnavailable, message)
    }

    /// 500: the server failed; `message` is shown to the client.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The error a request gets when a model step over it failed with `e`: 503 with a retry
    /// after a second while the expert nodes cannot serve or the KV cache is full, 400 when the
    /// sequence outgrew the context, 500 for a bug.
    pub fn from_step(e: &ModelError) -> Self {
        let retry = |message: String| Self {
            retry_after_secs: Some(1),
            ..Self::new(ErrorKind::ServiceUnavailable, message)
        };
        match e {
            ModelError::RoutedExperts(RoutedError::Unavailable(why)) => {
                retry(format!("The expert nodes could not run this step: {why}"))
            }
            ModelError::KvCacheFull { .. } => retry(format!("{e}; retry later.")),
            ModelError::ContextOverflow { .. } => Self::bad_request("max_tokens", e.to_string()),
            _ => Self::internal(format!("The model step failed: {e}")),
        }
    }

    /// The response body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn to_json(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind.as_str(),
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl From<TemplateError> for ApiError {
    /// 400 on `messages`: the chat template refused the conversation (its own
    /// `raise_exception`), failed on it, or used up the budget of work or prompt bytes the
    /// conversation allows.
    fn from(err: TemplateError) -> Self {
        ApiError::bad_request("messages", err.to_string())
    }
}
