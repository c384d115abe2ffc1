//! Git's smart HTTP transport on 127.0.0.1:0: stock `git http-backend`
//! (a CGI program) behind a small server that asks for HTTP basic
//! authentication, so that `gov sync` over `http://` meets a credential
//! prompt exactly as a hosted forge's HTTPS would (TLS aside).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::repo::TestResult;

/// `Basic base64("gov:s3cret-token")`.
pub const AUTHORIZATION: &str = "Basic Z292OnMzY3JldC10b2tlbg==";
pub const USER: &str = "gov";
pub const PASSWORD: &str = "s3cret-token";

pub struct GitHttp {
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn cgi(
    root: &PathBuf,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let child = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", USER)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(body);
    }
    let Ok(out) = child.wait_with_output() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // CGI output: headers, a blank line, the body.
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            raw.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        });
    let Some((head_end, body_start)) = split else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut status = StatusCode::OK;
    let mut response = Response::new(axum::body::Body::from(raw[body_start..].to_vec()));
    for line in String::from_utf8_lossy(&raw[..head_end]).lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            if let Some(code) = v.split(' ').next().and_then(|c| c.parse().ok()) {
                status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            }
        } else if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            response.headers_mut().append(k, v);
        }
    }
    *response.status_mut() = status;
    response
}

async fn serve(State(root): State<PathBuf>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        != Some(AUTHORIZATION)
    {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"gov test\""),
        );
        return r;
    }
    let Ok(body): Result<Bytes, _> = axum::body::to_bytes(body, 64 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let method = parts.method.to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    tokio::task::spawn_blocking(move || cgi(&root, &method, &path, &query, &parts.headers, &body))
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

impl GitHttp {
    /// Serves the repositories below `root` (e.g. `remote.git` at
    /// `<url>/remote.git`).
    pub fn start(root: PathBuf) -> TestResult<GitHttp> {
        let app = Router::new().fallback(serve).with_state(root);
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the git server");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("the git server listens");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        Ok(GitHttp {
            url,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
