//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers' `#[utoipa::path]`
//! annotations and the wire types' `ToSchema` derives, so it cannot drift from the code.
//!
//! Served at `GET /openapi.json` (no auth) and committed as `docs/openapi.json`; the test
//! `tests/openapi.rs` fails when the two differ. Regenerate the committed file with
//! `HERALD_WRITE_OPENAPI=1 cargo test -p herald-server --test openapi`.
//!
//! The reusable error responses below all carry the shared body `{"error":{"code","message"}}`
//! ([`ApiError`]); each names the codes it is sent with.

use axum::http::header;
use axum::response::IntoResponse;
use herald_protocol::ApiError;
use std::sync::OnceLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse};

/// The request is malformed. Codes: `invalid_json` (the body is not JSON), `invalid_event` (an
/// event breaks a field rule; the message names the field and, in a batch, the index),
/// `invalid_request` (a ticket, history, operator request breaks a rule), `invalid_cursor` (a resume
/// cursor is not a seq), `not_websocket` (`GET /ws` without an upgrade).
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

/// One Server-Sent Events message of `/v1/agui/stream`, as an SSE parser yields it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SseMessage {
    /// One AG-UI event as compact JSON (`{"type":"RUN_STARTED",…}`, camelCase fields).
    #[schema(content_media_type = "application/json")]
    pub data: String,
    /// `<epoch>:<seq>` on the last message of each Herald event: send it back as `Last-Event-ID`.
    pub id: Option<String>,
    /// Always the default, `message`.
    pub event: Option<String>,
}

/// `GET /ws`: the WebSocket endpoint (protocol v1, docs/protocol.md).
///
/// Authenticate with `Authorization: Bearer <JWT>`, the subprotocols `herald.v1, bearer.<JWT>`,
/// or a single-use `?ticket=` from `POST /v1/tickets`. Resume with `?after=<seq>&epoch=<epoch>`.
/// A plain GET without the upgrade headers is answered 400 `not_websocket` once the credential
/// checks pass.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "stream",
    operation_id = "websocket",
    params(
        ("after" = Option<u64>, Query, description = "Resume after this seq (the last one the client applied)."),
        ("epoch" = Option<String>, Query, description = "The epoch `after` belongs to (from `welcome`); only with `after`."),
    ),
    security(("jwt" = []), ("ticket" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: frames follow (docs/protocol.md)."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = RateLimited),
        (status = 503, response = NotReady),
    )
)]
#[allow(dead_code)]
fn websocket() {}

/// The AG-UI stream for `@ag-ui/client`'s HttpAgent, which always POSTs.
///
/// Served exactly as `GET /v1/agui/stream`; the body (an AG-UI `RunAgentInput`) is ignored.
#[utoipa::path(
    post,
    path = "/v1/agui/stream",
    tag = "stream",
    operation_id = "agui_stream_post",
    params(
        ("Last-Event-ID" = Option<String>, Header, description = "Resume cursor `<epoch>:<seq>` (or `<seq>`)."),
        ("after" = Option<String>, Query, description = "Resume cursor when `Last-Event-ID` cannot be sent: `<epoch>:<seq>` or `<seq>`."),
        ("epoch" = Option<String>, Query, description = "The epoch of a bare `<seq>` cursor."),
        ("thread_id" = Option<String>, Query, description = "Follow this thread only."),
    ),
    security(("jwt" = []), ("ticket" = [])),
    responses(
        (status = 200, description = "The same stream as `GET /v1/agui/stream`; the schema describes one message.",
            body = SseMessage, content_type = "text/event-stream"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = RateLimited),
        (status = 503, response = NotReady),
    )
)]
#[allow(dead_code)]
fn agui_stream_post() {}

/// `GET /metrics`: Prometheus metrics (text exposition format, names prefixed `herald_`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format.", body = String, content_type = "text/plain"))
)]
#[allow(dead_code)]
fn metrics() {}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", body = Object))
)]
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json())
}

/// The document, as the pretty JSON text served and committed (with a final newline).
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes");
        text.push('\n');
        text
    })
}

/// The OpenAPI document of the HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Real-time gateway for AI-agent run events: the publisher HTTP API (backend → Herald), \
the AG-UI bridge and the client streams. Every error has the body `{\"error\":{\"code\",\"message\"}}`. \
See docs/protocol.md for the WebSocket protocol and docs/agui.md for the AG-UI bridge.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::events::publish,
        super::history::list,
        super::tickets::create,
        super::users::disconnect,
        super::users::presence,
        super::runs::list,
        super::info::show,
        crate::api::agui::publish,
        crate::api::agui::stream,
        agui_stream_post,
        crate::api::agui::preflight,
        websocket,
        super::health::live,
        super::health::ready,
        metrics,
        serve,
    ),
    components(
        schemas(ApiError, herald_protocol::publish::ApiErrorBody),
        responses(BadRequest, Unauthorized, Forbidden, RunState, TooLarge, RateLimited, NotReady)
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "publish", description = "Backends publish agent events (API key)."),
        (name = "stream", description = "Browsers and apps read a user's events (JWT or ticket)."),
        (name = "operator", description = "Operators act on users and see every node (API key or admin token)."),
        (name = "operations", description = "Health, metrics and this document (no auth)."),
    )
)]
pub struct ApiDoc;

/// Adds the security schemes the paths name.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A publisher API key (HERALD_API_KEY; comma-separated keys rotate): \
                         `Authorization: Bearer <API key>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator token (HERALD_ADMIN_TOKEN): operator routes and /admin only, \
                         no publishing. `Authorization: Bearer <admin token>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A user's JWT (`sub` is the user id), signed as docs/security.md says.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "ticket",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "ticket",
                "A single-use ticket from POST /v1/tickets, for browsers that cannot set headers.",
            ))),
        );
    }
}
