//! Every API route, in one list. Each handler is registered with `routes!`, which reads its
//! method and path from the handler's own `#[utoipa::path]` annotation, so the router and the
//! OpenAPI document are two views of the same list: a route cannot be served undocumented, or
//! documented but not served.
//!
//! The document ([`document`]) is the frame of [`super::openapi`] plus these routes. It is served
//! at `GET /openapi.json` (no auth) and committed as `docs/openapi.json`; the test
//! `tests/openapi.rs` fails when the two differ. Regenerate the committed file with
//! `HERALD_WRITE_OPENAPI=1 cargo test -p herald-server --test openapi`.

use super::openapi::ApiDoc;
use super::{agui, events, health, history, info, runs, tickets, users};
use crate::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, on};
use std::sync::{Arc, OnceLock};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The documented routes, over the server's state. A route registered here with `routes!` is in
/// the OpenAPI document; pages that are not part of the API (the console, `/admin`) are added to the
/// plain router by [`crate::router`].
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(events::publish))
        .routes(routes!(history::list))
        .routes(routes!(tickets::create))
        .routes(routes!(users::disconnect))
        .routes(routes!(users::presence))
        .routes(routes!(runs::list))
        .routes(routes!(info::show))
        .routes(routes!(agui::publish))
        .routes(routes!(agui::stream, agui::stream_post, agui::preflight))
        // RFC 8441: over HTTP/2 a WebSocket opens with an extended CONNECT, not a GET; both
        // sockets answer it.
        .routes(routes!(crate::ws::upgrade))
        .route("/ws", on(MethodFilter::CONNECT, crate::ws::upgrade))
        .routes(routes!(crate::ws::publish::upgrade))
        .route("/v1/publish", on(MethodFilter::CONNECT, crate::ws::publish::upgrade))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .routes(routes!(serve))
}

/// The OpenAPI document of the routes above.
pub fn document() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The document as the pretty JSON text served and committed (with a final newline).
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = document().to_pretty_json().expect("the OpenAPI document serializes");
        text.push('\n');
        text
    })
}

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
