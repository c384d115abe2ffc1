//! Who may see the dashboard: the login link, the session cookie, the CSRF
//! check on every form, and the security headers on every page.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRef, FromRequestParts, Query};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::render;
use super::session::{Current, Sessions, COOKIE};
use super::views::LoginPage;

/// A request from a signed-in operator. Without a valid session the
/// extractor answers with the page that explains how to get one (401).
#[derive(Debug)]
pub struct SignedIn {
    pub session: Current,
    pub sessions: Arc<Sessions>,
}

impl<S> FromRequestParts<S> for SignedIn
where
    Arc<Sessions>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let sessions = Arc::<Sessions>::from_ref(state);
        let session = cookie(&parts.headers, &cookie_name(&parts.headers))
            .and_then(|value| sessions.current(value, Instant::now()));
        match session {
            Some(session) => Ok(SignedIn { session, sessions }),
            None => Err(login_page(StatusCode::UNAUTHORIZED, None)),
        }
    }
}

impl SignedIn {
    /// Refuses a form whose CSRF token is not this session's; the caller
    /// then changes nothing.
    pub fn check_csrf(&self, token: &str) -> Result<(), CsrfRejected> {
        if !token.is_empty() && self.session.csrf_matches(token) {
            Ok(())
        } else {
            Err(CsrfRejected)
        }
    }
}

/// A form without this session's CSRF token: 403.
#[derive(Debug)]
pub struct CsrfRejected;

impl IntoResponse for CsrfRejected {
    fn into_response(self) -> Response {
        plain(
            StatusCode::FORBIDDEN,
            "forbidden: the form's CSRF token is missing or does not belong to this session; reload the page and try again",
        )
    }
}

/// The session cookie's name: `gov_session_<port>`, from the (already
/// checked) `Host` header. Browsers do not keep cookies apart by port, so
/// two gov servers on one machine would otherwise overwrite each other's
/// session.
pub fn cookie_name(headers: &HeaderMap) -> String {
    let port = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<u16>().ok());
    match port {
        Some(p) => format!("{COOKIE}_{p}"),
        None => COOKIE.to_string(),
    }
}

/// The value of one cookie in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The page shown to anyone without a session.
pub fn login_page(status: StatusCode, problem: Option<&str>) -> Response {
    let page = LoginPage {
        title: "Sign in".into(),
        problem: problem.map(str::to_string),
    };
    html(status, render::login(&page))
}

/// An HTML answer; a template that fails to render is logged and becomes a
/// bare 500 that says nothing internal.
pub fn html(status: StatusCode, body: Result<String, render::RenderError>) -> Response {
    match body {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "dashboard page failed to render");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// A short plain-text answer.
pub fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.to_string(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    code: String,
}

/// `GET /login?code=…`: redeems a one-time code for a session cookie and
/// goes to `/`.
pub async fn login<S>(
    axum::extract::State(state): axum::extract::State<S>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response
where
    Arc<Sessions>: FromRef<S>,
{
    let sessions = Arc::<Sessions>::from_ref(&state);
    match sessions.redeem(&q.code, Instant::now()) {
        Some(opened) => {
            let cookie = format!(
                "{}={}; HttpOnly; SameSite=Strict; Path=/",
                cookie_name(&headers),
                opened.cookie.expose()
            );
            let mut resp = Redirect::to("/").into_response();
            match HeaderValue::from_str(&cookie) {
                Ok(v) => {
                    resp.headers_mut().insert(header::SET_COOKIE, v);
                    resp
                }
                Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            }
        }
        None => login_page(
            StatusCode::UNAUTHORIZED,
            Some("This login link was already used, has expired, or is not valid."),
        ),
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

/// `POST /logout`: ends the session and clears the cookie.
pub async fn logout(
    user: SignedIn,
    headers: HeaderMap,
    axum::Form(form): axum::Form<CsrfOnly>,
) -> Response {
    if let Err(r) = user.check_csrf(&form.csrf) {
        return r.into_response();
    }
    user.sessions.close(&user.session);
    let mut resp = login_page(StatusCode::OK, None);
    let clear = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        cookie_name(&headers)
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /assets/{name}`: the embedded stylesheet and script.
pub async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match render::asset(&name) {
        Some(a) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            a.body,
        )
            .into_response(),
        None => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

/// HeaderMap on every dashboard answer: no inline script or style, no
/// framing, no referrer to other sites (the login link carries a code),
/// nothing cached. (Not `no-referrer`: with it Chromium sends `Origin: null`
/// on same-origin form posts, which the server's Origin check refuses.)
pub async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_named_after_the_port() {
        let mut h = HeaderMap::new();
        assert_eq!(cookie_name(&h), "gov_session");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8005"));
        assert_eq!(cookie_name(&h), "gov_session_8005");
    }

    #[test]
    fn finds_a_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; gov_session=abc"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "gov_session"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
