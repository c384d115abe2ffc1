//! The dashboard: server-rendered pages for the operator, at `/`.
//!
//! - [`views`]: display-ready view models, one per page;
//! - [`render`]: the embedded minijinja templates and assets;
//! - [`session`]: one-time login codes, session cookies and CSRF tokens;
//! - `pages`: the routes, merged into the server's router by [`routes`];
//! - [`access`]: the login route, the signed-in extractor, the CSRF check
//!   and the security headers.
//!
//! Every page is a plain GET that renders a view model; every change is a
//! form POST carrying the session's CSRF token that calls the same app use
//! case as the JSON API and the CLI, then redirects back (post/redirect/get).
//! Live updates are a small script that re-fetches the page and swaps the
//! regions marked `data-live` (see `assets/dashboard.js`).

pub mod access;
mod pages;
pub mod render;
pub mod session;
pub mod views;

pub use pages::{login_url, routes};
