//! The HTTP API (docs/protocol.md, "Publishing"). Handlers are thin: parse the request, call the library, map the
//! result. Every error leaves through [`ApiFailure`], the one place that turns library errors into
//! a status and the shared body `{"error":{"code","message"}}`.

pub mod agui;
pub mod events;
pub mod health;
pub mod history;
pub mod info;
pub mod openapi;
pub mod responses;
pub mod routes;
pub mod runs;
pub mod tickets;
pub mod users;

use crate::AppState;
use crate::auth::AuthError;
use crate::engine::{AppendError, EngineError};
use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use herald_protocol::{ApiError, BatchError};
use std::sync::Arc;

/// An error response: status plus the shared JSON error body.
#[derive(Debug)]
pub struct ApiFailure {
    status: StatusCode,
    body: ApiError,
    /// Seconds for a `Retry-After` header (429).
    retry_after: Option<u64>,
}

impl ApiFailure {
    /// A failure with any status and code.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, body: ApiError::new(code, message), retry_after: None }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error body (`code`, `message`), e.g. for the publisher socket's error answers.
    pub fn error(&self) -> &herald_protocol::publish::ApiErrorBody {
        &self.body.error
    }

    /// 503 `not_ready`.
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<crate::limits::Limited> for ApiFailure {
    fn from(e: crate::limits::Limited) -> Self {
        // Retry-After is whole seconds: round up, so a client that waits it out succeeds.
        let retry_after = e.retry_after.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        Self { retry_after, ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.message) }
    }
}

impl From<AuthError> for ApiFailure {
    fn from(e: AuthError) -> Self {
        let status = match e {
            AuthError::Origin(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<BatchError> for ApiFailure {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::InvalidJson(_) => Self::bad_request("invalid_json", e.to_string()),
            BatchError::Invalid { .. } => Self::bad_request("invalid_event", e.to_string()),
            BatchError::TooMany { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
        }
    }
}

impl From<AppendError> for ApiFailure {
    fn from(e: AppendError) -> Self {
        match &e {
            AppendError::RunRule { source, .. } => {
                crate::metrics::run_rejected(source.rule());
                Self::new(StatusCode::CONFLICT, "run_state", e.to_string())
            }
            AppendError::Engine(inner) => inner.clone().into(),
        }
    }
}

impl From<EngineError> for ApiFailure {
    fn from(e: EngineError) -> Self {
        crate::metrics::engine_error();
        Self::not_ready(format!("{e}; nothing was stored, retry with the same id"))
    }
}

/// Proof that the request carried a valid publisher API key; `key` is its position in the
/// configured list (its own publish rate bucket).
#[derive(Debug)]
pub struct Publisher {
    /// Which configured API key.
    pub key: usize,
}

impl FromRequestParts<Arc<AppState>> for Publisher {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let key = state.auth.api_key(&parts.headers)?;
        state.limits.publish(key)?;
        Ok(Publisher { key })
    }
}

/// Proof that the request carried an operator credential: a publisher API key (rate-limited as
/// its publishes are) or the admin token.
#[derive(Debug)]
pub struct Operator;

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        if let crate::auth::OperatorKey::ApiKey(key) = state.auth.operator(&parts.headers)? {
            state.limits.publish(key)?;
        }
        Ok(Operator)
    }
}

/// Proof that the server takes new work: a draining node refuses streams, publishes and
/// readiness probes with 503 `not_ready`, so clients and load balancers move to another node.
#[derive(Debug)]
pub struct Accepting;

impl FromRequestParts<Arc<AppState>> for Accepting {
    type Rejection = ApiFailure;

    async fn from_request_parts(_: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        if state.is_draining() {
            return Err(ApiFailure::not_ready("server is draining: use another node"));
        }
        Ok(Accepting)
    }
}

/// The raw request body, with an over-limit body refused as 413 `too_large` in the shared error
/// shape (axum's own rejection is plain text).
#[derive(Debug)]
pub struct Body(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = ApiFailure;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(request, state).await.map(Body).map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiFailure::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "request body is over max_body_bytes; split the batch",
                )
            } else {
                ApiFailure::bad_request("invalid_request", e.body_text())
            }
        })
    }
}

/// 404 for unknown routes, with the shared body.
pub async fn not_found() -> ApiFailure {
    ApiFailure::new(StatusCode::NOT_FOUND, "not_found", "no such route; see docs/protocol.md")
}

/// 405 for a known route with another method, with the shared body.
pub async fn method_not_allowed() -> ApiFailure {
    ApiFailure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see docs/openapi.json",
    )
}
