//! The dashboard at `/ui`: one page and its script and style, built into the binary
//! (`src/ui/`). The page logs in with a token (kept in the browser tab) and draws
//! everything from the HTTP API's JSON, so it sees exactly what the token may see:
//! endpoints (online or not, heartbeat, managers, workers, blocks), sessions with their
//! progress, a session's tasks a page at a time, a task's timeline, exception and output
//! (docs/operations.md#the-dashboard).

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

use crate::AppState;

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// Only this origin's scripts, styles and requests: the page writes text, never HTML,
/// and this keeps it so.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { serve("text/html; charset=utf-8", PAGE) }))
        .route(
            "/ui/app.js",
            get(|| async { serve("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { serve("text/css; charset=utf-8", STYLE) }),
        )
}

fn serve(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
