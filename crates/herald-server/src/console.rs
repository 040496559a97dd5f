//! The web console at `/console`: a small page for operators and developers, embedded in the
//! binary so it needs no files at run time.
//!
//! Its sources live in `console/` at the repository root and are built (by
//! `clients/typescript`'s `npm run build:console`) into `console/dist/`, which is committed, so
//! `cargo build` embeds the assets without network access. In `--dev`, `GET /console/dev.json`
//! hands the page a token for `dev-user` and the dev API key, so the page can connect and publish
//! sample runs with one click; outside `--dev` that route is a 404.

use crate::AppState;
use crate::api::ApiFailure;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use std::sync::Arc;
use std::time::Duration;

/// The user the dev token is for (the same one `herald serve --dev` prints a token for).
pub const DEV_USER: &str = "dev-user";

/// Lifetime of the dev token handed out by `/console/dev.json`.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

const INDEX_HTML: &str = include_str!("../../../console/index.html");

/// Embedded assets: file name under `/console/`, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", INDEX_HTML),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../../console/dist/app.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../../console/src/style.css")),
    ("favicon.svg", "image/svg+xml", FAVICON_SVG),
];

const FAVICON_SVG: &str = include_str!("../../../console/src/favicon.svg");

/// The console's routes: `/console`, `/console/`, `/console/{file}` and `/console/dev.json`; also
/// `/favicon.ico` (browsers ask for it on every page) and `/`, which leads to the console in `--dev`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(root))
        .route("/favicon.ico", get(|| async { serve("image/svg+xml", FAVICON_SVG) }))
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/dev.json", get(dev_info))
        .route("/console/{file}", get(asset))
}

/// `GET /`: in `--dev`, the console (a newcomer opening the printed address lands somewhere useful);
/// otherwise the API's 404, as for any unknown route.
async fn root(State(state): State<Arc<AppState>>) -> Response {
    if state.config.dev {
        Redirect::temporary("/console").into_response()
    } else {
        crate::api::not_found().await.into_response()
    }
}

async fn index() -> Response {
    serve("text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => serve(content_type, body),
        None => {
            ApiFailure::new(StatusCode::NOT_FOUND, "not_found", format!("the console has no file {file:?}"))
                .into_response()
        }
    }
}

/// An embedded asset, revalidated on every load (assets change with the binary).
pub(crate) fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Assets change with the binary; revalidate so an upgraded server is picked up.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /console/dev.json`: a token for `dev-user` and the API key, only in `--dev`.
async fn dev_info(State(state): State<Arc<AppState>>) -> Result<Response, ApiFailure> {
    if !state.config.dev {
        return Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "/console/dev.json exists only in --dev mode; paste a token instead",
        ));
    }
    let Some(secret) = state.config.jwt.secret() else {
        return Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no dev token: this server verifies tokens with a public key, it cannot sign one",
        ));
    };
    let token = crate::auth::jwt::sign_token(secret.expose(), DEV_USER, DEV_TOKEN_TTL);
    let api_key = state.config.api_keys.first().map(|k| k.expose().to_owned()).unwrap_or_default();
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "token": token, "api_key": api_key, "user_id": DEV_USER })),
    )
        .into_response())
}
