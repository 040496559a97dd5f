//! The error responses the API documents, each a named `components/responses` entry that
//! handlers cite by type (`responses((status = 400, response = BadRequest), …)`).
//!
//! They all carry the shared body `{"error":{"code","message"}}` ([`ApiError`]), which
//! [`super::ApiFailure`] sends; each names the codes it is sent with and shows one example. The
//! types only describe: [`super::ApiFailure`] is what handlers return.
//!
//! The sets of them that recur ([`StreamRefused`], [`AppendRefused`], [`RequestRefused`]) are
//! named once here, and a handler lists its set after its success answer:
//! `responses((status = 200, …), AppendRefused)`.

use herald_protocol::ApiError;
use utoipa::{IntoResponses, ToResponse};

/// The request is malformed. Codes: `invalid_json` (the body is not JSON), `invalid_event` (an
/// event breaks a field rule; the message names the field and, in a batch, the index),
/// `invalid_request` (a ticket, history, operator request breaks a rule), `invalid_cursor` (a resume
/// cursor is not a seq), `not_websocket` (`GET /ws` or `GET /v1/publish`
/// without an upgrade).
#[derive(ToResponse)]
#[response(examples(
    ("invalid_json" = (value = json!({"error": {"code": "invalid_json", "message": "body is not valid JSON: EOF while parsing an object at line 1 column 1"}}))),
    ("invalid_event" = (value = json!({"error": {"code": "invalid_event", "message": "events[1]: data.tool_name is required for tool_executing"}}))),
    ("invalid_request" = (value = json!({"error": {"code": "invalid_request", "message": "limit must be 1..=1000"}}))),
))]
pub struct BadRequest(pub ApiError);

/// No credential, or a wrong one. Code `unauthorized`.
#[derive(ToResponse)]
#[response(example = json!({"error": {"code": "unauthorized", "message": "no API key: send Authorization: Bearer <API key>"}}))]
pub struct Unauthorized(pub ApiError);

/// The browser `Origin` is not allowed (`HERALD_ALLOWED_ORIGINS`). Code `forbidden`.
#[derive(ToResponse)]
#[response(example = json!({"error": {"code": "forbidden", "message": "origin \"https://evil.example\" is not allowed"}}))]
pub struct Forbidden(pub ApiError);

/// The event breaks a run rule (docs/protocol.md): e.g. the run was never started, is already finished,
/// or a `tool_completed` matches no open call. Nothing was appended. Code `run_state`; the message
/// names the rule.
#[derive(ToResponse)]
#[response(example = json!({"error": {"code": "run_state", "message": "run \"run-1\" was never started: send agent_started first (rule not_started)"}}))]
pub struct RunState(pub ApiError);

/// The body is over `max_body_bytes`, or a batch has more than `max_batch` events. Code
/// `too_large`: split the request.
#[derive(ToResponse)]
#[response(example = json!({"error": {"code": "too_large", "message": "batch has 1001 events; the limit is 1000 per request, split it"}}))]
pub struct TooLarge(pub ApiError);

/// A rate or connection limit refused the request. Code `rate_limited` (or
/// `too_many_connections` for streams); wait `Retry-After` seconds when it is given.
#[derive(ToResponse)]
#[response(
    example = json!({"error": {"code": "rate_limited", "message": "publish rate over 5000/s for this API key"}}),
    headers(("Retry-After" = u64, description = "Whole seconds after which a retry can succeed (when known)."))
)]
pub struct RateLimited(pub ApiError);

/// The server drains or its engine is unreachable. Code `not_ready`: nothing was stored; retry
/// (with the same ids) on another node or later.
#[derive(ToResponse)]
#[response(example = json!({"error": {"code": "not_ready", "message": "server is draining: use another node"}}))]
pub struct NotReady(pub ApiError);

/// Why a stream (`GET /ws`, `/v1/agui/stream`) is refused before it opens.
#[derive(IntoResponses)]
pub enum StreamRefused {
    /// See [`BadRequest`].
    #[response(status = 400)]
    BadRequest(#[ref_response] BadRequest),
    /// See [`Unauthorized`].
    #[response(status = 401)]
    Unauthorized(#[ref_response] Unauthorized),
    /// See [`Forbidden`].
    #[response(status = 403)]
    Forbidden(#[ref_response] Forbidden),
    /// See [`RateLimited`].
    #[response(status = 429)]
    RateLimited(#[ref_response] RateLimited),
    /// See [`NotReady`].
    #[response(status = 503)]
    NotReady(#[ref_response] NotReady),
}

/// Why a publish (`POST /v1/events`, `POST /v1/agui/events`) appended nothing.
#[derive(IntoResponses)]
pub enum AppendRefused {
    /// See [`BadRequest`].
    #[response(status = 400)]
    BadRequest(#[ref_response] BadRequest),
    /// See [`Unauthorized`].
    #[response(status = 401)]
    Unauthorized(#[ref_response] Unauthorized),
    /// See [`RunState`].
    #[response(status = 409)]
    RunState(#[ref_response] RunState),
    /// See [`TooLarge`].
    #[response(status = 413)]
    TooLarge(#[ref_response] TooLarge),
    /// See [`RateLimited`].
    #[response(status = 429)]
    RateLimited(#[ref_response] RateLimited),
    /// See [`NotReady`].
    #[response(status = 503)]
    NotReady(#[ref_response] NotReady),
}

/// Why another API-key request (history, tickets, the publisher socket, the operator API) was
/// refused.
#[derive(IntoResponses)]
pub enum RequestRefused {
    /// See [`BadRequest`].
    #[response(status = 400)]
    BadRequest(#[ref_response] BadRequest),
    /// See [`Unauthorized`].
    #[response(status = 401)]
    Unauthorized(#[ref_response] Unauthorized),
    /// See [`RateLimited`].
    #[response(status = 429)]
    RateLimited(#[ref_response] RateLimited),
    /// See [`NotReady`].
    #[response(status = 503)]
    NotReady(#[ref_response] NotReady),
}
