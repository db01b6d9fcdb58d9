//! The API's error enum, each variant's status and JSON answer, and JSON responses.

use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Response};
use serde::Serialize;
use serde_json::json;

use crate::message::ValidationError;
use crate::ports::Cause;

/// Every way an HTTP request can fail. Each variant names its status; 5xx details are logged
/// with context and never sent to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; the body names the field.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// 403: auth is on and another sender owns the message's channel.
    #[error("channel {channel} belongs to another sender")]
    NotYourChannel { channel: String },
    /// 403: the local server's answer to a request a web page elsewhere may have sent; the
    /// body names the header.
    #[error("{reason}")]
    Untrusted { field: &'static str, reason: String },
    /// 404: no such route, or no such rocket.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists with other methods.
    #[error("method {method} is not allowed; use {allowed}")]
    MethodNotAllowed {
        method: Method,
        allowed: &'static str,
    },
    /// 408: the request's body did not arrive in time.
    #[error("the request body did not arrive within {seconds} s")]
    BodyTimeout { seconds: u64 },
    /// 413: the body is larger than the API accepts.
    #[error("body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 400: the queue refused the message for a reason of its own (its code is given);
    /// resending the same message cannot succeed.
    #[error("the queue refused this message ({code})")]
    QueueRefused {
        code: String,
        #[source]
        cause: Cause,
    },
    /// 503 with `Retry-After`: a dependency is down; the same request may succeed later.
    #[error("temporarily unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// 500: a bug or unreadable data.
    #[error("internal error: {0}")]
    Internal(#[source] Cause),
}

/// Seconds a client is asked to wait before resending after a 503.
pub const RETRY_AFTER_SECS: u32 = 1;

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::NotYourChannel { .. } | ApiError::Untrusted { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::QueueRefused { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error.code` of its answer, which the request metrics count refusals by.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(e) => e.code(),
            ApiError::NotYourChannel { .. } => "not_your_channel",
            ApiError::Untrusted { .. } => "untrusted_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::BodyTimeout { .. } => "request_timeout",
            ApiError::QueueRefused { .. } => "refused_by_queue",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The request field at fault, for the errors one field causes.
    fn field(&self) -> Option<&'static str> {
        match self {
            ApiError::Invalid(e) => Some(e.field()).filter(|f| !f.is_empty()),
            ApiError::BodyTimeout { .. } | ApiError::PayloadTooLarge { .. } => Some("body"),
            ApiError::NotYourChannel { .. } => Some("metadata.channel"),
            ApiError::Untrusted { field, .. } => Some(field),
            _ => None,
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let message = match &self {
            ApiError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "dependency unavailable, asking the client to retry");
                "temporarily unavailable; retry shortly".to_string()
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_string()
            }
            ApiError::QueueRefused { cause, .. } => {
                tracing::warn!(error = %cause, "the queue refused a message");
                self.to_string()
            }
            other => other.to_string(),
        };
        let mut error = json!({"code": self.code(), "message": message});
        if let Some(field) = self.field() {
            error["field"] = json!(field);
        }
        let mut response = json_response(status, &json!({ "error": error }));
        let headers = response.headers_mut();
        match &self {
            ApiError::MethodNotAllowed { allowed, .. } => {
                headers.insert(header::ALLOW, header::HeaderValue::from_static(allowed));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
            }
            _ => {}
        }
        response
    }
}

impl From<crate::ports::StoreError> for ApiError {
    fn from(error: crate::ports::StoreError) -> Self {
        use crate::ports::StoreError;
        match error {
            StoreError::Unavailable(detail) => ApiError::Unavailable(detail),
            StoreError::Failed(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<crate::ports::QueueError> for ApiError {
    fn from(error: crate::ports::QueueError) -> Self {
        use crate::ports::QueueError;
        match error {
            QueueError::Unavailable(detail) => ApiError::Unavailable(detail),
            QueueError::Refused { code, cause } => ApiError::QueueRefused { code, cause },
            QueueError::Failed(detail) => ApiError::Internal(detail),
        }
    }
}

/// A response with `body`'s JSON.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let text = serde_json::to_string(body).expect("response bodies serialise");
    let mut response = Response::new(Body::Text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
