//! The web dashboard: one page, its script and its style sheet, compiled
//! into the binary so that `veil aggregator serve` needs nothing else and
//! the page works offline (no CDN, no fonts, no external requests).
//!
//! The page is a client of the public query API only, with the same
//! `x-api-key` a script would send (asked for on the page, kept in the
//! tab's session storage): anything it shows, a script can fetch too. The
//! assets themselves are public, since they hold no data. Charts are SVG
//! drawn by the page's own ~300 lines of script rather than a charting
//! library: line and grouped bar charts over a category axis are all it
//! needs, and a missing cell must be drawn as *suppressed*, which no
//! library does for us.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const PAGE: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/app.css");

/// `GET /dashboard`, `/dashboard/app.js`, `/dashboard/app.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/dashboard", get(|| async { asset("text/html; charset=utf-8", PAGE) }))
        .route("/dashboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/dashboard/app.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

/// `GET /`: a browser that opens the server's address lands on the dashboard.
pub async fn to_dashboard() -> Redirect {
    Redirect::to("/dashboard")
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Only our own script and style run; the page talks only to this server
    // and may not be framed (the API key is typed into it).
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
