//! A local stand-in for GitHub's REST API: the few requests `gov sync`
//! makes for pull requests, answered as GitHub documents them, on
//! 127.0.0.1:0. The forge itself cannot be reached from the tests.
//!
//! - `GET  /repos/{o}/{r}/pulls?state=all&head={o}:{branch}`
//! - `POST /repos/{o}/{r}/pulls` (422 "Validation Failed" when the head
//!   branch is not in the bare repository behind it, as GitHub answers)
//! - `PATCH /repos/{o}/{r}/pulls/{n}`
//! - `POST /repos/{o}/{r}/issues/{n}/labels`, `.../comments`
//!
//! Every request must carry `Authorization: Bearer <token>` (401 "Bad
//! credentials" otherwise). Everything asked is kept for the test to read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::repo::TestResult;

#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    pub state: String,
    pub labels: Vec<String>,
    pub comments: Vec<String>,
}

#[derive(Default)]
struct Inner {
    pulls: Vec<Pull>,
    /// `METHOD path` of every request, in order.
    requests: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    token: String,
    owner: String,
    bare: PathBuf,
}

pub struct GitHub {
    pub url: String,
    shared: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Reply = (StatusCode, Json<Value>);

fn err(status: StatusCode, message: &str) -> Reply {
    (status, Json(json!({"message": message})))
}

fn check(s: &Shared, headers: &HeaderMap, owner: &str) -> Result<(), Reply> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {}", s.token) {
        return Err(err(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    if owner != s.owner {
        return Err(err(StatusCode::NOT_FOUND, "Not Found"));
    }
    Ok(())
}

fn pull_json(s: &Shared, p: &Pull) -> Value {
    json!({
        "number": p.number,
        "state": p.state,
        "title": p.title,
        "body": p.body,
        "html_url": format!("https://github.example/{}/pull/{}", s.owner, p.number),
        "head": {"ref": p.head, "sha": "0".repeat(40)},
        "base": {"ref": p.base, "sha": "0".repeat(40)},
        "labels": p.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
    })
}

async fn list(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((owner, _repo)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let mut inner = s.inner.lock().expect("stand-in state");
    inner
        .requests
        .push(format!("GET /pulls {:?}", q.get("head")));
    if let Err(e) = check(&s, &headers, &owner) {
        return e;
    }
    let head = q.get("head").cloned().unwrap_or_default();
    let all = q.get("state").map(String::as_str) == Some("all");
    let found: Vec<Value> = inner
        .pulls
        .iter()
        .filter(|p| format!("{}:{}", s.owner, p.head) == head)
        .filter(|p| all || p.state == "open")
        .map(|p| pull_json(&s, p))
        .collect();
    (StatusCode::OK, Json(Value::Array(found)))
}

async fn create(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((owner, _repo)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Reply {
    let mut inner = s.inner.lock().expect("stand-in state");
    inner.requests.push("POST /pulls".into());
    if let Err(e) = check(&s, &headers, &owner) {
        return e;
    }
    let field = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    let head = field("head");
    let exists = git2::Repository::open_bare(&s.bare)
        .ok()
        .is_some_and(|r| r.refname_to_id(&format!("refs/heads/{head}")).is_ok());
    if !exists || field("title").is_empty() || field("base").is_empty() {
        return err(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    }
    let pull = Pull {
        number: inner.pulls.len() as u64 + 1,
        title: field("title"),
        body: field("body"),
        head,
        base: field("base"),
        state: "open".into(),
        labels: vec![],
        comments: vec![],
    };
    let reply = pull_json(&s, &pull);
    inner.pulls.push(pull);
    (StatusCode::CREATED, Json(reply))
}

fn pull_mut(inner: &mut Inner, n: u64) -> Result<&mut Pull, Reply> {
    inner
        .pulls
        .iter_mut()
        .find(|p| p.number == n)
        .ok_or_else(|| err(StatusCode::NOT_FOUND, "Not Found"))
}

async fn update(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((owner, _repo, n)): Path<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Reply {
    let shared = s.clone();
    on_pull(&s, &headers, &owner, n, format!("PATCH /pulls/{n}"), |p| {
        if let Some(state) = body["state"].as_str() {
            if state != "open" && state != "closed" {
                return err(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
            }
            p.state = state.into();
        }
        (StatusCode::OK, Json(pull_json(&shared, p)))
    })
}

/// Runs `f` on pull request `n` after the checks every call gets; `what`
/// is kept in the request log.
fn on_pull(
    s: &Shared,
    headers: &HeaderMap,
    owner: &str,
    n: u64,
    what: String,
    f: impl FnOnce(&mut Pull) -> Reply,
) -> Reply {
    let mut inner = s.inner.lock().expect("stand-in state");
    inner.requests.push(what);
    if let Err(e) = check(s, headers, owner) {
        return e;
    }
    match pull_mut(&mut inner, n) {
        Ok(p) => f(p),
        Err(e) => e,
    }
}

async fn labels(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((owner, _repo, n)): Path<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Reply {
    on_pull(
        &s,
        &headers,
        &owner,
        n,
        format!("POST /issues/{n}/labels"),
        |p| {
            for l in body["labels"].as_array().cloned().unwrap_or_default() {
                if let Some(l) = l.as_str() {
                    if !p.labels.iter().any(|x| x == l) {
                        p.labels.push(l.to_string());
                    }
                }
            }
            let all: Vec<Value> = p.labels.iter().map(|l| json!({"name": l})).collect();
            (StatusCode::OK, Json(Value::Array(all)))
        },
    )
}

async fn comment(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((owner, _repo, n)): Path<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Reply {
    on_pull(
        &s,
        &headers,
        &owner,
        n,
        format!("POST /issues/{n}/comments"),
        |p| {
            let text = body["body"].as_str().unwrap_or_default().to_string();
            p.comments.push(text.clone());
            (StatusCode::CREATED, Json(json!({"id": 1, "body": text})))
        },
    )
}

impl GitHub {
    /// Serves the API for repository `owner/*`, whose branches are those of
    /// the bare repository `bare`, to callers with `token`.
    pub fn start(owner: &str, token: &str, bare: PathBuf) -> TestResult<GitHub> {
        let shared = Shared {
            inner: Arc::default(),
            token: token.into(),
            owner: owner.into(),
            bare,
        };
        let app = Router::new()
            .route("/repos/{owner}/{repo}/pulls", get(list).post(create))
            .route("/repos/{owner}/{repo}/pulls/{n}", patch(update))
            .route("/repos/{owner}/{repo}/issues/{n}/labels", post(labels))
            .route("/repos/{owner}/{repo}/issues/{n}/comments", post(comment))
            .with_state(shared.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the stand-in");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("the stand-in listens");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        Ok(GitHub {
            url,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn pulls(&self) -> Vec<Pull> {
        self.shared
            .inner
            .lock()
            .expect("stand-in state")
            .pulls
            .clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.shared
            .inner
            .lock()
            .expect("stand-in state")
            .requests
            .clone()
    }

    /// A pull request opened by someone else (or by a sync that died
    /// before recording it).
    pub fn add_pull(&self, head: &str, base: &str) -> u64 {
        let mut inner = self.shared.inner.lock().expect("stand-in state");
        let number = inner.pulls.len() as u64 + 1;
        inner.pulls.push(Pull {
            number,
            title: "opened by hand".into(),
            body: String::new(),
            head: head.into(),
            base: base.into(),
            state: "open".into(),
            labels: vec![],
            comments: vec![],
        });
        number
    }
}

impl Drop for GitHub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
