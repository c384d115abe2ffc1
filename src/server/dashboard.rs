//! The dashboard at `/`. A placeholder until the dashboard lands: it names
//! the API and the commands that do the same from a terminal.

use axum::response::Html;
use axum::routing::get;
use axum::Router;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(index))
}

async fn index() -> Html<&'static str> {
    Html(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>gov</title></head>\
         <body><h1>gov</h1><p>The dashboard is not built yet. Use <code>gov proposals</code>, \
         <code>gov approve ID</code>, <code>gov status</code> and <code>gov scoreboard</code>, \
         or the JSON API (docs/API.md).</p></body></html>",
    )
}
