//! The admin page at `/admin`: every node, connections, users online, active and stalled runs
//! (click one to watch that user's stream, read-only), and publish, delivery and rejection rates,
//! polled live from the operator API.
//!
//! The page itself is static and holds no data: it asks for a publisher API key or the admin token
//! (`HERALD_ADMIN_TOKEN`) and sends it with every operator API call, so without one it shows
//! nothing but its sign-in form. Its sources are `console/admin/` and `console/src/admin.ts`,
//! bundled into `console/dist/admin.js` like the user console ([`crate::console`]).

use crate::AppState;
use crate::api::ApiFailure;
use crate::console::serve;
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

const INDEX_HTML: &str = include_str!("../../../console/admin/index.html");

/// Embedded assets: file name under `/admin/`, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", INDEX_HTML),
    ("admin.js", "text/javascript; charset=utf-8", include_str!("../../../console/dist/admin.js")),
    ("admin.css", "text/css; charset=utf-8", include_str!("../../../console/admin/admin.css")),
];

/// `/admin`, `/admin/` and `/admin/{file}`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/admin", get(index)).route("/admin/", get(index)).route("/admin/{file}", get(asset))
}

async fn index() -> Response {
    serve("text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => serve(content_type, body),
        None => ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the admin page has no file {file:?}"),
        )
        .into_response(),
    }
}
