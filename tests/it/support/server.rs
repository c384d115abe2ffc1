//! `TestServer`: the real server, in-process on 127.0.0.1:0, over a
//! temporary governance repository with the default policies and two
//! agents (`noop`, and `capped` with small caps).

use std::time::Duration;

use gov::config::{AgentAuth, Settings};
use gov::server::{serve, AppState};
use serde_json::{json, Value};

use super::repo::{TestRepo, TestResult};

const AGENTS: &[(&str, &str)] = &[
    (
        "agents/noop/agent.toml",
        "kind = \"command\"\ngroup = \"smoke\"\n[command]\nprogram = \"true\"\n",
    ),
    (
        "agents/researcher/agent.toml",
        "kind = \"command\"\ngroup = \"research\"\n[command]\nprogram = \"true\"\n",
    ),
    (
        "agents/capped/agent.toml",
        "kind = \"command\"\n[command]\nprogram = \"true\"\n[budget]\ntokens_cap = 1000\ndollars_cap = 1\n",
    ),
];

pub struct TestServer {
    pub repo: TestRepo,
    pub base: String,
    pub port: u16,
    pub operator: String,
    pub runner: String,
    /// The server's clock: a test sets or advances it instead of sleeping.
    pub clock: gov::app::clock::Clock,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// An HTTP answer: status and JSON body (`Null` when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// A string field of the body (empty when absent), e.g. `proposal_id`.
    pub fn text(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_default().to_string()
    }
}

/// Writes `files` (paths relative to the repository root) into the working
/// tree and commits them onto main, signed by the operator's approver key,
/// as an operator legitimately changes policy: what is on main and
/// authorized is what is in force (policies, agents).
pub fn commit_to_main(repo: &TestRepo, files: &[(String, Vec<u8>)], message: &str) -> TestResult {
    let key = repo.key(gov::app::governance::Role::Approver)?;
    commit_to_main_as(repo, &key, files, message)?;
    Ok(())
}

/// [`commit_to_main`], signed by `key`; returns the commit.
pub fn commit_to_main_as(
    repo: &TestRepo,
    key: &gov::testkit::keys::SigningKey,
    files: &[(String, Vec<u8>)],
    message: &str,
) -> TestResult<git2::Oid> {
    for (path, data) in files {
        let p = repo.root().join(path);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(p, data)?;
    }
    let git = repo.repo()?;
    let tip = git.refname_to_id(&repo.settings.main_refname())?;
    let who = git2::Signature::now("gov test", "test@gov")?;
    Ok(gov::testkit::git::commit_files(
        &git,
        key,
        &who,
        &repo.settings.main_refname(),
        Some(tip),
        files,
        message,
    )?)
}

/// Commits an agent's `agent.toml` onto main (and into the working tree,
/// where the runner executes its files).
pub fn commit_agent(repo: &TestRepo, id: &str, agent_toml: &str) -> TestResult {
    commit_to_main(
        repo,
        &[(
            format!("agents/{id}/agent.toml"),
            agent_toml.as_bytes().to_vec(),
        )],
        &format!("agent {id}"),
    )
}

/// Commits the project's default policies and the test agents onto main
/// (and into the working tree).
pub fn add_policies_and_agents(repo: &TestRepo) -> TestResult {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in std::fs::read_dir(&src)? {
        let p = entry?.path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if name.ends_with(".cedar") || name.ends_with(".cedarschema") || name == "entities.json" {
            files.push((format!("policies/{name}"), std::fs::read(&p)?));
        }
    }
    for (path, text) in AGENTS {
        files.push((path.to_string(), text.as_bytes().to_vec()));
    }
    commit_to_main(repo, &files, "policies and agents")
}

/// A server thread and what it needs to be reached and stopped.
struct Live {
    clock: gov::app::clock::Clock,
    operator: String,
    runner: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Live {
    fn spawn(settings: &Settings) -> TestResult<(Live, String, u16)> {
        let state = AppState::open(settings)?;
        let clock = state.svc.clock().clone();
        let operator = state.operator_token.expose().to_string();
        let runner = state.runner_token.expose().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(_) => return,
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await else {
                    return;
                };
                let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
                let _ = port_tx.send(port);
                let _ = serve(listener, state, async {
                    let _ = rx.await;
                })
                .await;
            });
        });
        let port = port_rx.recv_timeout(Duration::from_secs(10))?;
        let live = Live {
            clock,
            operator,
            runner,
            shutdown: tx,
            thread,
        };
        Ok((live, format!("http://127.0.0.1:{port}"), port))
    }
}

impl TestServer {
    pub fn start() -> TestResult<TestServer> {
        Self::start_with(|_| {})
    }

    /// Starts a server after `tweak` adjusts the settings.
    pub fn start_with(tweak: impl FnOnce(&mut Settings)) -> TestResult<TestServer> {
        let mut repo = TestRepo::new()?;
        add_policies_and_agents(&repo)?;
        tweak(&mut repo.settings);
        Self::start_on(repo)
    }

    /// Starts a server on an existing repository.
    pub fn start_on(repo: TestRepo) -> TestResult<TestServer> {
        let (live, base, port) = Live::spawn(&repo.settings)?;
        Ok(TestServer {
            repo,
            base,
            port,
            operator: live.operator,
            runner: live.runner,
            clock: live.clock,
            shutdown: Some(live.shutdown),
            thread: Some(live.thread),
        })
    }

    /// Stops the server (if it runs) and starts a new one on the same
    /// repository, as `gov serve` would after a restart (new port).
    pub fn restart(&mut self) -> TestResult {
        self.stop();
        let (live, base, port) = Live::spawn(&self.repo.settings)?;
        self.base = base;
        self.port = port;
        self.operator = live.operator;
        self.runner = live.runner;
        self.clock = live.clock;
        self.shutdown = Some(live.shutdown);
        self.thread = Some(live.thread);
        Ok(())
    }

    pub fn settings(&self) -> &Settings {
        &self.repo.settings
    }

    pub fn set_agent_auth_optional(settings: &mut Settings) {
        settings.agent_auth = AgentAuth::Optional;
    }

    fn agent() -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build()
    }

    /// Sends a request with an optional bearer token and extra headers.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> TestResult<Reply> {
        let mut req = Self::agent().request(method, &format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.into()),
        };
        let status = resp.status();
        let text = resp.into_string()?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    /// Sends every `(path, token, body)` POST at once, one thread each, and
    /// returns their status codes in order (0 for a request that got no
    /// answer).
    pub fn post_at_once(&self, posts: Vec<(String, Option<String>, Value)>) -> Vec<u16> {
        let handles: Vec<_> = posts
            .into_iter()
            .map(|(path, token, body)| {
                let url = format!("{}{path}", self.base);
                std::thread::spawn(move || {
                    let mut req = ureq::post(&url);
                    if let Some(t) = token {
                        req = req.set("Authorization", &format!("Bearer {t}"));
                    }
                    match req.send_json(body) {
                        Ok(r) => r.status(),
                        Err(ureq::Error::Status(c, _)) => c,
                        Err(_) => 0,
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    }

    /// Sends raw bytes as the body.
    pub fn send_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        raw: &str,
    ) -> TestResult<Reply> {
        let mut req = Self::agent()
            .request(method, &format!("{}{path}", self.base))
            .set("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = match req.send_string(raw) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.into()),
        };
        let status = resp.status();
        let body = serde_json::from_str(&resp.into_string()?).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> TestResult<Reply> {
        self.send("GET", path, token, None, &[])
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> TestResult<Reply> {
        self.send("POST", path, token, Some(body), &[])
    }

    /// Approves proposal `id` with the operator's token; the reply must be
    /// 200.
    pub fn approve(&self, id: &str) -> TestResult<Reply> {
        let d = self.post(
            &format!("/proposals/{id}/decision"),
            Some(&self.operator),
            &json!({"decision": "approve"}),
        )?;
        assert_eq!(d.status, 200, "{:?}", d.body);
        Ok(d)
    }

    /// Submits a `publish_content` proposal of `noop` (one that waits for a
    /// person) with agent token `token`; the reply must be 200.
    pub fn submit_pending(&self, token: &str) -> TestResult<Reply> {
        let r = self.post(
            "/proposals",
            Some(token),
            &proposal("noop", "publish_content"),
        )?;
        assert_eq!(r.status, 200, "{:?}", r.body);
        Ok(r)
    }

    /// Mints an agent token with the operator's token.
    pub fn agent_token(&self, agent: &str) -> TestResult<String> {
        let r = self.post(
            &format!("/agents/{agent}/tokens"),
            Some(&self.operator),
            &json!({}),
        )?;
        assert_eq!(r.status, 201, "{:?}", r.body);
        Ok(r.body["agent_token"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Audit entries of one type (newest first).
    pub fn audit(&self, event_type: &str) -> TestResult<Vec<Value>> {
        let r = self.get(
            &format!("/audit?event_type={event_type}&limit=500"),
            Some(&self.operator),
        )?;
        assert_eq!(r.status, 200, "{:?}", r.body);
        Ok(r.body.as_array().cloned().unwrap_or_default())
    }

    /// Stops the server and waits for it.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A proposal body as an agent of the original sends it.
pub fn proposal(agent: &str, action_type: &str) -> Value {
    let now = chrono::Utc::now();
    json!({
        "agent_id": agent,
        "wave": 1,
        "submitted_at": now.to_rfc3339(),
        "action_type": action_type,
        "payload": {"title": "hello", "n": 1},
        "expected_outcome": "a thing happens",
        "expires_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
    })
}

/// A writer of `svc` holding its batch open: its turn waits until
/// [`HeldBatch::release`]. Writers that queue meanwhile join that batch,
/// in the order they queued, and their work ahead of the turn is done
/// against what is on disk now.
pub struct HeldBatch<'scope> {
    release: std::sync::mpsc::Sender<()>,
    holder: std::thread::ScopedJoinHandle<'scope, Result<(), gov::app::error::AppError>>,
}

/// Holds a batch of `svc` open, from a thread of `scope`; returns once it
/// is held.
pub fn hold_batch<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    svc: &'scope gov::app::service::Service,
) -> TestResult<HeldBatch<'scope>> {
    let (held, is_held) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = scope.spawn(move || {
        svc.transact(move |_| -> gov::app::service::Step<()> {
            let _ = held.send(());
            let _ = released.recv();
            Ok((Ok(()), vec![]))
        })
    });
    is_held.recv()?;
    Ok(HeldBatch { release, holder })
}

impl HeldBatch<'_> {
    /// Lets the batch go and waits for its holder's answer.
    pub fn release(self) -> TestResult {
        self.release.send(())?;
        self.holder.join().map_err(|_| "the holder panicked")??;
        Ok(())
    }
}
