//! The dashboard: HTML snapshots of every page from fixed view models, and
//! browser tests in headless Chromium against a real server.

use gov::domain::money::Micros;
use gov::server::dashboard::render;
use gov::server::dashboard::views::*;

fn layout(active: &str, title: &str) -> Layout {
    Layout {
        title: title.into(),
        active: active.into(),
        csrf: "CSRF-TOKEN".into(),
        operator: "alice".into(),
        flash: None,
        policy_warning: None,
        tampered: None,
        remote: None,
    }
}

fn proposal(id: &str, status: &str) -> ProposalView {
    ProposalView {
        id: id.into(),
        agent_id: "noop".into(),
        action_type: "publish_content".into(),
        status: status.into(),
        submitted_at: "2026-01-02T03:04:05Z".into(),
        expires_at: Some("2026-01-03T03:04:05Z".into()),
        payload_pretty: ProposalView::pretty(&serde_json::json!({
            "title": "Release notes <v1.0>",
            "channels": ["blog", "mail"],
        })),
        payload_hash: "sha256:9f86d081884c7d659a2feaa0c55ad015".into(),
        expected_outcome: Some("post goes live".into()),
        cost_tokens: Some(1200),
        cost_dollars: Some(ProposalView::dollars(Micros(18_000))),
        reversible: false,
        rationale: Some("the team asked for it".into()),
        links: vec!["https://example.invalid/draft".into()],
        policies: vec![
            Citation {
                id: "proposals-allowed".into(),
                reason: "an agent may propose any action type".into(),
                effect: Some("permit".into()),
            },
            Citation {
                id: "publish-needs-person".into(),
                reason: "publishing is public and needs a person".into(),
                effect: Some("forbid".into()),
            },
        ],
        branch: Some(format!("gov/proposal/{id}")),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        decision: None,
        review: None,
        shadow: None,
    }
}

/// A pending `policy_change` proposal with its review.
fn policy_change(id: &str) -> ProposalView {
    let mut p = proposal(id, "pending");
    p.agent_id = "alice".into();
    p.action_type = "policy_change".into();
    p.branch = Some(format!("gov/proposal/{id}"));
    p.review = Some(PolicyReviewView {
        branch: format!("gov/policy/{id}"),
        base: "1111111111aa".into(),
        commit: "2222222222bb".into(),
        changed: vec!["policies/proposals.cedar".into()],
        deleted: vec!["agents/old/agent.toml".into()],
        diff: vec![
            "policy set `1111111111aa` (1111111111aa) -> `gov/policy/x` (2222222222bb)".into(),
            "policies: 1 added, 0 removed, 0 changed".into(),
            "  + ban-noop-research (forbid) policies/proposals.cedar: noop does no <research>"
                .into(),
        ],
        impact: vec![
            "impact of `gov/policy/x` (policy version 2222222222bb) on 12 recorded decisions: 4 change, 8 unchanged".into(),
            "  auto → forbidden: 4".into(),
        ],
        valid: true,
        verdict: "4 recorded decisions would change".into(),
    });
    p
}

fn audit_rows() -> Vec<AuditRow> {
    vec![
        AuditRow {
            seq: 2,
            ts: "2026-01-02T03:05:00Z".into(),
            actor: "operator:alice".into(),
            agent_id: Some("noop".into()),
            event_type: "proposal_decided".into(),
            proposal_id: Some("p-1".into()),
            task_id: None,
            payload: r#"{"decision":"approve"}"#.into(),
            signature: SignatureView {
                status: "verified".into(),
                role: Some("server".into()),
                detail: None,
            },
            commit: Some("aaaa".into()),
            shadow: None,
        },
        AuditRow {
            seq: 1,
            ts: "2026-01-02T03:04:05Z".into(),
            actor: "agent:noop".into(),
            agent_id: Some("noop".into()),
            event_type: "proposal_submitted".into(),
            proposal_id: Some("p-1".into()),
            task_id: Some("t-1".into()),
            payload: "{}".into(),
            signature: SignatureView {
                status: "bad".into(),
                role: None,
                detail: Some("signed by a key not in allowed_signers".into()),
            },
            commit: Some("bbbb".into()),
            shadow: Some("would be forbidden by ban-noop-research (decided auto)".into()),
        },
    ]
}

mod snapshots {
    use super::*;

    #[test]
    fn pending_with_proposals() {
        let mut page = PendingPage {
            layout: layout("pending", "Pending"),
            proposals: vec![proposal("p-1", "pending"), proposal("p-2", "pending")],
        };
        page.proposals[1].reversible = true;
        page.proposals[1].cost_tokens = None;
        page.proposals[1].cost_dollars = None;
        page.proposals[1].expires_at = None;
        page.proposals[1].policies.clear();
        page.layout.flash = Some(Flash::ok("approved `p-0`"));
        insta::assert_snapshot!(render::pending(&page).expect("render"));
    }

    #[test]
    fn pending_policy_change_with_its_diff_and_impact() {
        let page = PendingPage {
            layout: layout("pending", "Pending"),
            proposals: vec![policy_change("pc-1")],
        };
        insta::assert_snapshot!(render::pending(&page).expect("render"));
    }

    #[test]
    fn policy_change_detail_with_an_invalid_set() {
        let mut p = policy_change("pc-2");
        if let Some(r) = p.review.as_mut() {
            r.valid = false;
            r.diff = vec!["error: the policy set at `2222222222bb` is invalid".into()];
            r.impact = r.diff.clone();
            r.verdict = "the proposed policy set is invalid: it cannot come into force".into();
        }
        let page = ProposalPage {
            layout: layout("proposals", "Proposal pc-2"),
            proposal: p,
            audit: audit_rows(),
        };
        insta::assert_snapshot!(render::proposal(&page).expect("render"));
    }

    #[test]
    fn pending_empty_with_policy_warning() {
        let mut page = PendingPage {
            layout: layout("pending", "Pending"),
            proposals: vec![],
        };
        page.layout.policy_warning = Some("policies/x.cedar: unknown entity type `Agnet`".into());
        insta::assert_snapshot!(render::pending(&page).expect("render"));
    }

    #[test]
    fn every_page_shows_the_remote_and_what_waits() {
        let mut page = PendingPage {
            layout: layout("pending", "Pending"),
            proposals: vec![],
        };
        page.layout.remote = Some(RemoteView {
            name: "origin".into(),
            url: "https://***@github.com/acme/gov.git".into(),
            state: "error".into(),
            last_sync: "last sync 2026-11-29T19:00:00+00:00: failed: fetching from `origin`: Connection refused".into(),
            waiting: "not yet pushed: 3 audit entries, 0 commit(s) on main, 1 proposal branch(es)".into(),
        });
        let html = render::pending(&page).expect("render");
        assert!(
            html.contains(
                "<p class=\"banner remote error\" data-remote=\"error\">Remote <code>origin</code> (https:&#x2f;&#x2f;***@github.com&#x2f;acme&#x2f;gov.git): last sync 2026-11-29T19:00:00+00:00: failed: fetching from `origin`: Connection refused; not yet pushed: 3 audit entries, 0 commit(s) on main, 1 proposal branch(es)</p>"
            ),
            "{html}"
        );
    }

    #[test]
    fn history_filtered() {
        let mut decided = proposal("p-1", "approved");
        decided.decision = Some(DecisionView {
            decision: "approve".into(),
            by: "operator:alice".into(),
            at: "2026-01-02T03:05:00Z".into(),
            note: Some("ok".into()),
            is_final: true,
        });
        decided.shadow = Some("would be forbidden by watch-drafts (decided auto)".into());
        let page = HistoryPage {
            layout: layout("proposals", "Proposals"),
            filters: vec![
                Filter {
                    name: "status".into(),
                    label: "Status".into(),
                    value: "approved".into(),
                    options: vec!["pending".into(), "approved".into(), "rejected".into()],
                },
                Filter {
                    name: "agent".into(),
                    label: "Agent".into(),
                    value: String::new(),
                    options: vec!["noop".into()],
                },
            ],
            proposals: vec![decided],
        };
        insta::assert_snapshot!(render::history(&page).expect("render"));
    }

    #[test]
    fn history_empty() {
        let page = HistoryPage {
            layout: layout("proposals", "Proposals"),
            filters: vec![],
            proposals: vec![],
        };
        insta::assert_snapshot!(render::history(&page).expect("render"));
    }

    #[test]
    fn proposal_detail() {
        let mut p = proposal("p-1", "rejected");
        p.decision = Some(DecisionView {
            decision: "reject".into(),
            by: "operator:alice".into(),
            at: "2026-01-02T03:05:00Z".into(),
            note: Some("not <now>".into()),
            is_final: false,
        });
        let page = ProposalPage {
            layout: layout("proposals", "Proposal p-1"),
            proposal: p,
            audit: audit_rows(),
        };
        insta::assert_snapshot!(render::proposal(&page).expect("render"));
    }

    #[test]
    fn agents() {
        let page = AgentsPage {
            layout: layout("agents", "Agents"),
            agents: vec![
                AgentView {
                    id: "noop".into(),
                    status: "ok".into(),
                    paused_reason: None,
                    tokens: Meter::tokens(12_345, 200_000),
                    dollars: Meter::dollars(Micros(185_000), Micros(50_000_000)),
                    period: "lifetime".into(),
                    last_seen: Some("2026-01-02T03:04:05Z".into()),
                    runs: 3,
                    proposals: 7,
                    chart: SpendChart::new(
                        &[(1_000, 20_000_000), (2_000, 15_000_000)],
                        Micros(50_000_000),
                        None,
                        3_000,
                    ),
                    reservations: vec![ReservationView {
                        kind: "run".into(),
                        id: "run-1".into(),
                        tokens: "37,655".into(),
                        dollars: "$4.80".into(),
                        until: Some("2026-01-02T03:16:05+00:00".into()),
                    }],
                },
                AgentView {
                    id: "researcher".into(),
                    status: "paused".into(),
                    paused_reason: Some("spend over cap".into()),
                    tokens: Meter::tokens(210_000, 200_000),
                    dollars: Meter::dollars(Micros(45_000_000), Micros(50_000_000)),
                    period: "daily".into(),
                    last_seen: None,
                    runs: 0,
                    proposals: 0,
                    chart: SpendChart::new(&[], Micros(50_000_000), Some(0), 86_400),
                    reservations: vec![],
                },
            ],
        };
        insta::assert_snapshot!(render::agents(&page).expect("render"));
    }

    #[test]
    fn agents_empty() {
        let page = AgentsPage {
            layout: layout("agents", "Agents"),
            agents: vec![],
        };
        insta::assert_snapshot!(render::agents(&page).expect("render"));
    }

    #[test]
    fn audit_with_failed_verification() {
        let page = AuditPage {
            layout: layout("audit", "Audit trail"),
            filters: vec![
                Filter {
                    name: "agent".into(),
                    label: "Agent".into(),
                    value: "noop".into(),
                    options: vec!["noop".into()],
                },
                Filter {
                    name: "proposal".into(),
                    label: "Proposal".into(),
                    value: String::new(),
                    options: vec![],
                },
            ],
            entries: audit_rows(),
            verify: Some(VerifyView {
                ok: false,
                entries: 2,
                summary: "entry 1 is not signed by an allowed key".into(),
                problems: vec!["entry 1: signed by a key not in allowed_signers".into()],
            }),
        };
        insta::assert_snapshot!(render::audit(&page).expect("render"));
    }

    #[test]
    fn audit_empty() {
        let page = AuditPage {
            layout: layout("audit", "Audit trail"),
            filters: vec![],
            entries: vec![],
            verify: None,
        };
        insta::assert_snapshot!(render::audit(&page).expect("render"));
    }

    #[test]
    fn policies_with_refused_set() {
        let page = PoliciesPage {
            layout: layout("policies", "Policies"),
            version: "0123456789abcdef0123456789abcdef01234567".into(),
            policies: vec![
                PolicyView {
                    id: "auto-research".into(),
                    reason: Some("research is reversible and cheap".into()),
                    effect: "permit".into(),
                    file: "policies/proposals.cedar".into(),
                    text: "permit (principal, action == Action::\"propose\", resource)\nwhen { context.reversible };".into(),
                },
                PolicyView {
                    id: "publish-needs-person".into(),
                    reason: None,
                    effect: "forbid".into(),
                    file: "policies/proposals.cedar".into(),
                    text: "forbid (principal, action, resource) unless { context.human_approved };".into(),
                },
            ],
            refused: Some("policies/bad.cedar:3: unexpected token `}`".into()),
            unauthorized: vec![gov::app::service::Refusal {
                commit: "fedcba9876543210fedcba9876543210fedcba98".into(),
                reason: "it changes `policies/` but it is not signed".into(),
                summary: "loosen the rules".into(),
            }],
        };
        insta::assert_snapshot!(render::policies(&page).expect("render"));
    }

    #[test]
    fn login() {
        let page = LoginPage {
            title: "Sign in".into(),
            problem: Some("this login link was already used or has expired".into()),
        };
        insta::assert_snapshot!(render::login(&page).expect("render"));
    }

    #[test]
    fn user_input_is_escaped() {
        let mut p = proposal("p-1", "pending");
        p.agent_id = "<script>alert(1)</script>".into();
        let page = PendingPage {
            layout: layout("pending", "Pending"),
            proposals: vec![p],
        };
        let html = render::pending(&page).expect("render");
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"));
    }
}

/// The dashboard's own client side (login cookie, live regions) in headless
/// Chromium, against a small server that renders fixed view models. The
/// tests against the real `gov serve` are in `browser` below.
mod client {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use axum::extract::{FromRef, State};
    use axum::response::Response;
    use axum::routing::get;
    use axum::Router;
    use gov::server::dashboard::access::{self, SignedIn};
    use gov::server::dashboard::session::Sessions;

    use super::*;
    use crate::support::browser::Browser;

    #[derive(Clone)]
    struct Fixture {
        sessions: Arc<Sessions>,
        pending: Arc<Mutex<Vec<ProposalView>>>,
    }

    impl FromRef<Fixture> for Arc<Sessions> {
        fn from_ref(f: &Fixture) -> Self {
            f.sessions.clone()
        }
    }

    async fn pending_page(user: SignedIn, State(f): State<Fixture>) -> Response {
        let mut page = PendingPage {
            layout: layout("pending", "Pending"),
            proposals: f.pending.lock().expect("lock").clone(),
        };
        page.layout.csrf = user.session.csrf.expose().to_string();
        access::html(axum::http::StatusCode::OK, render::pending(&page))
    }

    fn router(fixture: Fixture) -> Router {
        Router::new()
            .route("/", get(pending_page))
            .route("/login", get(access::login::<Fixture>))
            .route("/dashboard/logout", axum::routing::post(access::logout))
            .route("/dashboard/assets/{name}", get(access::asset))
            .layer(axum::middleware::map_response(access::security_headers))
            .with_state(fixture)
    }

    fn fixture() -> Fixture {
        Fixture {
            sessions: Arc::new(Sessions::new()),
            pending: Arc::new(Mutex::new(vec![])),
        }
    }

    async fn call(
        app: &Router,
        req: axum::http::Request<axum::body::Body>,
    ) -> (u16, axum::http::HeaderMap, String) {
        use tower::ServiceExt;
        let resp = app.clone().oneshot(req).await.expect("a response");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("the body");
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn request(
        method: &str,
        uri: &str,
        cookie: Option<&str>,
        body: &str,
    ) -> axum::http::Request<axum::body::Body> {
        let mut b = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        b.body(axum::body::Body::from(body.to_string()))
            .expect("a request")
    }

    #[tokio::test]
    async fn login_link_sets_a_strict_http_only_cookie_once() {
        let f = fixture();
        let app = router(f.clone());

        let (status, headers, body) = call(&app, request("GET", "/", None, "")).await;
        assert_eq!(status, 401);
        assert!(body.contains("gov dashboard-link"), "{body}");
        assert!(!body.contains("Pending proposals"));
        let csp = headers["content-security-policy"].to_str().expect("ascii");
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(headers["referrer-policy"], "same-origin");

        let code = f.sessions.mint_code(Instant::now());
        let uri = format!("/login?code={}", code.expose());
        let (status, headers, _) = call(&app, request("GET", &uri, None, "")).await;
        assert_eq!(status, 303);
        assert_eq!(headers["location"], "/");
        let set = headers["set-cookie"].to_str().expect("ascii").to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"),
            "{set}"
        );
        let cookie = set.split(';').next().expect("name=value").to_string();

        let (status, _, body) = call(&app, request("GET", "/", Some(&cookie), "")).await;
        assert_eq!(status, 200);
        assert!(body.contains("No proposals waiting"));

        // The code is spent; a made-up one does not work either.
        let (status, headers, body) = call(&app, request("GET", &uri, None, "")).await;
        assert_eq!(status, 401);
        assert!(headers.get("set-cookie").is_none());
        assert!(body.contains("already used"));
        let (status, _, _) = call(&app, request("GET", "/login?code=nope", None, "")).await;
        assert_eq!(status, 401);

        // Signing out needs the CSRF token; with it, the session ends.
        let (status, _, _) = call(
            &app,
            request("POST", "/dashboard/logout", Some(&cookie), "csrf=wrong"),
        )
        .await;
        assert_eq!(status, 403);
        let (status, _, _) = call(&app, request("GET", "/", Some(&cookie), "")).await;
        assert_eq!(status, 200, "a refused sign-out leaves the session open");
        let csrf = {
            let (_, _, body) = call(&app, request("GET", "/", Some(&cookie), "")).await;
            let needle = "name=\"csrf\" value=\"";
            let at = body.find(needle).expect("a csrf field") + needle.len();
            body[at..at + 64].to_string()
        };
        let (status, _, _) = call(
            &app,
            request(
                "POST",
                "/dashboard/logout",
                Some(&cookie),
                &format!("csrf={csrf}"),
            ),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _, _) = call(&app, request("GET", "/", Some(&cookie), "")).await;
        assert_eq!(status, 401);
    }

    /// Serves the fixture on 127.0.0.1:0 from a thread of its own; returns
    /// its base URL.
    fn serve(fixture: Fixture) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let app = router(fixture);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                tx.send(format!("http://{addr}")).expect("send");
                axum::serve(listener, app).await.expect("serve");
            });
        });
        rx.recv().expect("the fixture server's address")
    }

    #[test]
    fn live_updates_keep_what_is_being_typed() {
        let fixture = fixture();
        let base = serve(fixture.clone());
        let browser = Browser::start();

        // Without a session: only how to get one.
        browser.goto(&format!("{base}/"));
        browser.wait_for_text("gov dashboard-link");
        assert!(browser.try_find("[data-live]").is_none());

        // A used code does not work twice.
        let code = fixture.sessions.mint_code(Instant::now());
        browser.goto(&format!("{base}/login?code={}", code.expose()));
        browser.wait_for_text("No proposals waiting");
        assert_eq!(browser.current_url(), format!("{base}/"));
        let cookie = browser.execute("return document.cookie;", serde_json::json!([]));
        assert_eq!(
            cookie,
            serde_json::json!(""),
            "the session cookie is HttpOnly"
        );

        // Keyboard: the first Tab reaches the skip link, the next the
        // navigation, and the focus is visibly outlined.
        let focused = |b: &Browser| {
            b.execute(
                "const e = document.activeElement; \
                 return [e.textContent.trim(), getComputedStyle(e).outlineStyle];",
                serde_json::json!([]),
            )
        };
        browser.press_tab();
        assert_eq!(focused(&browser)[0], "Skip to content");
        browser.press_tab();
        let nav = focused(&browser);
        assert_eq!(nav[0], "Pending");
        assert_ne!(nav[1], "none", "the focus is visible");

        // A proposal appears without a reload; a note being typed survives
        // the arrival of another.
        let marker = browser.execute("window.__marker = 42; return 1;", serde_json::json!([]));
        assert_eq!(marker, serde_json::json!(1));
        fixture
            .pending
            .lock()
            .expect("lock")
            .push(proposal("p-1", "pending"));
        browser.wait_for_text("p-1");
        let note = browser.find("#note-p-1");
        note.click();
        note.type_text("looks fine");
        fixture
            .pending
            .lock()
            .expect("lock")
            .push(proposal("p-2", "pending"));
        browser.wait_for_text("p-2");
        assert_eq!(
            browser.find("#note-p-1").property("value"),
            serde_json::json!("looks fine")
        );
        let still = browser.execute("return window.__marker;", serde_json::json!([]));
        assert_eq!(still, serde_json::json!(42), "the page was not reloaded");

        // One leaves: it is removed from the list.
        fixture.pending.lock().expect("lock").remove(0);
        browser.wait_until("p-1 to leave", crate::support::browser::WAIT, || {
            browser.try_find("#proposal-p-1").is_none()
        });
        browser.screenshot("client-live-update");

        let reused = fixture.sessions.redeem(code.expose(), Instant::now());
        assert!(reused.is_none());
    }
}

/// The dashboard in headless Chromium against a real server on
/// 127.0.0.1:0, logged in through the link `gov dashboard-link` prints.
pub(crate) mod served {
    use std::time::Duration;

    use serde_json::{json, Value};

    use crate::support::browser::{Browser, WAIT};
    use crate::support::server::TestServer;

    /// A real server (in process, on 127.0.0.1:0) with the default
    /// policies and the test agents, and a login link printed by
    /// `gov dashboard-link`.
    pub(crate) struct Served {
        pub(crate) server: TestServer,
        base: String,
        pub(crate) login: String,
        token: String,
        http: ureq::Agent,
    }

    impl Served {
        pub(crate) fn start() -> Served {
            let server = TestServer::start().expect("a test server");
            let out = server
                .repo
                .gov(&["dashboard-link", "--port", &server.port.to_string()])
                .expect("run `gov dashboard-link`");
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "gov dashboard-link failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let login = stdout.trim().to_string();
            assert!(
                login.starts_with(&format!("{}/login?code=", server.base)),
                "{login}"
            );
            Served {
                base: server.base.clone(),
                token: server.operator.clone(),
                server,
                login,
                // No pooled connections: a refused form may be answered
                // before its body is read, and the server then closes the
                // connection, which a pooled POST would trip on.
                http: ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(30))
                    .redirects(0)
                    .max_idle_connections(0)
                    .build(),
            }
        }

        pub(crate) fn url(&self, path: &str) -> String {
            format!("{}{path}", self.base)
        }

        /// A JSON API call with the operator's token.
        pub(crate) fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
            let req = self
                .http
                .request(method, &self.url(path))
                .set("Authorization", &format!("Bearer {}", self.token));
            let result = match body {
                Some(b) => req.send_json(b),
                None => req.call(),
            };
            let resp = match result {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(e) => panic!("{method} {path}: {e}"),
            };
            let status = resp.status();
            (status, resp.into_json().unwrap_or(Value::Null))
        }

        /// A form POST as a browser would send it (no bearer token).
        fn form(&self, path: &str, cookie: Option<&str>, body: &str) -> u16 {
            self.form_with(path, cookie, body, &[("Origin", &self.base)])
        }

        /// A form POST with the given headers (`Origin`, `Host`, ...).
        fn form_with(
            &self,
            path: &str,
            cookie: Option<&str>,
            body: &str,
            headers: &[(&str, &str)],
        ) -> u16 {
            let mut req = self
                .http
                .post(&self.url(path))
                .set("Content-Type", "application/x-www-form-urlencoded");
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(c) = cookie {
                req = req.set("Cookie", c);
            }
            match req.send_string(body) {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(code, _)) => code,
                Err(e) => panic!("POST {path}: {e}"),
            }
        }

        /// Submits a proposal that needs a person, for agent `noop`.
        fn submit(&self, title: &str) -> String {
            let now = chrono::Utc::now();
            let (status, body) = self.api(
                "POST",
                "/proposals",
                Some(json!({
                    "agent_id": "noop",
                    "wave": 0,
                    "submitted_at": now.to_rfc3339(),
                    "action_type": "publish_content",
                    "payload": {"title": title, "body": "hello <world>"},
                    "expected_outcome": "a post goes live",
                    "expected_cost_tokens": 1500,
                    "expected_cost_dollars": 0.02,
                    "reversible": false,
                    "requires_approval": true,
                    "expires_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
                    "rationale": "the release is out",
                })),
            );
            assert!(status == 200 || status == 201, "submit: {status} {body}");
            assert_eq!(body["status"], "pending", "{body}");
            body["proposal_id"]
                .as_str()
                .expect("a proposal id")
                .to_string()
        }

        fn status_of(&self, id: &str) -> String {
            let (_, body) = self.api("GET", &format!("/proposals/{id}"), None);
            body["status"].as_str().unwrap_or_default().to_string()
        }

        fn audit(&self, query: &str) -> Vec<Value> {
            let (status, body) = self.api("GET", &format!("/audit?{query}"), None);
            assert_eq!(status, 200, "{body}");
            body.as_array()
                .cloned()
                .or_else(|| body["entries"].as_array().cloned())
                .unwrap_or_default()
        }
    }

    fn mark_page(browser: &Browser) {
        browser.execute("window.__notReloaded = true; return 1;", json!([]));
    }

    fn assert_not_reloaded(browser: &Browser) {
        assert_eq!(
            browser.execute("return window.__notReloaded === true;", json!([])),
            json!(true),
            "the page was reloaded"
        );
    }

    #[test]
    fn operator_decides_pauses_and_verifies_in_the_browser() {
        let server = Served::start();
        let browser = Browser::start();

        // Without a session: only how to get one.
        browser.goto(&server.url("/"));
        browser.wait_for_text("gov dashboard-link");
        assert!(browser.try_find("form.decide").is_none());
        browser.screenshot("01-sign-in-required");

        // The printed link signs in once.
        browser.goto(&server.login);
        browser.wait_for_text("No proposals waiting");
        browser.screenshot("02-pending-empty");

        // A proposal submitted by an agent appears without a reload.
        mark_page(&browser);
        let first = server.submit("Release notes");
        browser.wait_for_text(&first);
        assert_not_reloaded(&browser);
        let card = format!("#proposal-{first}");
        browser.find(&card);
        assert!(browser.body_text().contains("publish_content"));
        browser.full_page_screenshot("03-pending", 1280);

        // Approve it with a note: it leaves the list, main gets the merge.
        let note = browser.find(&format!("#note-{first}"));
        note.click();
        note.type_text("ship it");
        browser.find(&format!("{card} button.approve")).click();
        browser.wait_for_text(&format!("approved `{first}`"));
        assert!(browser.try_find(&card).is_none());
        assert_eq!(server.status_of(&first), "approved");
        let repo = server.server.repo.repo().expect("the repository");
        let main = repo
            .find_reference("refs/heads/main")
            .and_then(|r| r.peel_to_commit())
            .expect("main");
        assert_eq!(main.parent_count(), 2, "approval is a merge commit");
        let tree = main.tree().expect("tree");
        let name = format!("{first}.toml");
        let mut found = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
            if e.name() == Some(name.as_str()) {
                found = Some(format!("{dir}{name}"));
            }
            git2::TreeWalkResult::Ok
        })
        .expect("walk");
        assert!(
            found
                .as_deref()
                .is_some_and(|p| p.starts_with("proposals/")),
            "the approved proposal is on main: {found:?}"
        );
        let decided = server.audit("event_type=proposal_decided&limit=50");
        let entry = decided
            .iter()
            .find(|e| e["proposal_id"] == json!(first))
            .unwrap_or_else(|| panic!("no proposal_decided entry for {first}: {decided:?}"));
        assert!(entry.to_string().contains("ship it"), "{entry}");

        // Reject another, final.
        let second = server.submit("Second post");
        browser.wait_for_text(&second);
        let card2 = format!("#proposal-{second}");
        browser.find(&format!("{card2} input[name=final]")).click();
        browser.find(&format!("{card2} button.reject")).click();
        browser.wait_for_text(&format!("rejected `{second}`"));
        assert_eq!(server.status_of(&second), "rejected");

        // A decision made elsewhere (the API) leaves the list live.
        let third = server.submit("Third post");
        browser.wait_for_text(&third);
        mark_page(&browser);
        let (status, body) = server.api(
            "POST",
            &format!("/proposals/{third}/decision"),
            Some(json!({"decision": "reject", "final": false, "note": "from the CLI"})),
        );
        assert_eq!(status, 200, "{body}");
        browser.wait_until("the third proposal to leave", WAIT, || {
            browser.try_find(&format!("#proposal-{third}")).is_none()
        });
        assert_not_reloaded(&browser);

        // History and detail pages.
        browser.goto(&server.url("/dashboard/proposals"));
        browser.wait_for_text(&first);
        browser.full_page_screenshot("04-history", 1280);
        browser.goto(&server.url("/dashboard/proposals?status=rejected"));
        browser.wait_for_text(&second);
        assert!(!browser.body_text().contains(&first));
        browser.goto(&server.url(&format!("/dashboard/proposals/{first}")));
        browser.wait_for_text("ship it");
        browser.full_page_screenshot("05-proposal-detail", 1280);

        // Spend against the cap over the period, and an open reservation.
        let (code, _) = server.api(
            "POST",
            "/budget/noop/charge",
            Some(serde_json::json!({"tokens": 0, "tool": "x", "dollars": 20})),
        );
        assert_eq!(code, 200);
        let (code, run) = server.api(
            "POST",
            "/runs",
            Some(serde_json::json!({"agent_id": "noop", "task_id": null})),
        );
        assert_eq!(code, 201, "{run}");
        browser.goto(&server.url("/dashboard/agents"));
        browser.wait_for_text("$20.00 of $50.00 over 1 charge");
        let points = browser.execute(
            "return document.querySelector('#agent-noop .spend-chart polyline').getAttribute('points')",
            serde_json::json!([]),
        );
        assert!(
            points.as_str().is_some_and(|p| p.ends_with(",36")),
            "the line ends at 20/50 of the height: {points}"
        );
        let card = browser.find("#agent-noop").text();
        let run_id = run["run_id"].as_str().unwrap_or("?");
        assert!(
            card.contains(run_id) && card.contains("$5.00") && card.contains("50,000"),
            "{card}"
        );
        browser.full_page_screenshot("06-agents-spend", 1280);

        // Pause and resume the agent.
        browser.goto(&server.url("/dashboard/agents"));
        browser.find("#agent-noop button.pause").click();
        browser.wait_for_text("paused `noop`");
        browser.find("#agent-noop button.resume");
        let (_, me) = server.api("GET", "/status/me?agent_id=noop", None);
        assert_eq!(me["status"], "paused", "{me}");
        browser.full_page_screenshot("07-agents-paused", 1280);
        browser.find("#agent-noop button.resume").click();
        browser.wait_for_text("resumed `noop`");
        let (_, me) = server.api("GET", "/status/me?agent_id=noop", None);
        assert_ne!(me["status"], "paused", "{me}");

        // The audit trail: verified signatures, and the whole chain verifies.
        browser.goto(&server.url("/dashboard/audit"));
        browser.wait_for_text("proposal_decided");
        let text = browser.body_text();
        assert!(text.contains("verified (server)"), "{text}");
        assert!(
            !text.contains("unsigned") && !text.contains(" bad"),
            "{text}"
        );
        browser.find("form.verify button").click();
        browser.wait_for_text("Chain verified");
        browser.full_page_screenshot("07-audit", 1280);

        // Policies in force.
        browser.goto(&server.url("/dashboard/policies"));
        browser.wait_for_text("Loaded from commit");
        browser.full_page_screenshot("08-policies", 1280);

        // Narrow screens.
        browser.goto(&server.url("/"));
        let fourth = server.submit("Narrow");
        browser.wait_for_text(&fourth);
        browser.full_page_screenshot("09-pending-narrow", 390);

        // No session, or a bad CSRF token: nothing changes.
        let cookie = browser
            .cookie(&format!("gov_session_{}", server.server.port))
            .expect("the browser holds a session cookie");
        let cookie = format!("gov_session_{}={cookie}", server.server.port);
        let path = format!("/dashboard/proposals/{fourth}/decision");
        assert_eq!(server.form(&path, None, "decision=approve&csrf=x"), 401);
        assert_eq!(
            server.form(&path, Some(&cookie), "decision=approve&csrf=wrong"),
            403
        );
        assert_eq!(server.form(&path, Some(&cookie), "decision=approve"), 403);
        assert_eq!(
            server.form("/dashboard/agents/noop/pause", Some(&cookie), "csrf=wrong"),
            403
        );
        // With the session's real token, but from another site or through
        // a rebound DNS name: refused all the same.
        let csrf = browser.find("input[name=csrf]").property("value");
        let csrf = csrf.as_str().expect("the page's CSRF token");
        let good = format!("decision=approve&csrf={csrf}");
        assert_eq!(
            server.form_with(
                &path,
                Some(&cookie),
                &good,
                &[("Origin", "http://evil.example")]
            ),
            403
        );
        let host = format!("evil.example:{}", server.server.port);
        assert_eq!(
            server.form_with(&path, Some(&cookie), &good, &[("Host", &host)]),
            421
        );
        assert_eq!(server.status_of(&fourth), "pending");
        let (_, me) = server.api("GET", "/status/me?agent_id=noop", None);
        assert_ne!(me["status"], "paused", "{me}");
        // The real token works from the page, which proves the requests
        // above were refused for their token only.
        browser
            .find(&format!("#proposal-{fourth} button.approve"))
            .click();
        browser.wait_for_text(&format!("approved `{fourth}`"));
    }
}

/// `gov serve` prints a one-time login link that opens a session.
#[test]
fn gov_serve_prints_a_login_link_that_works_once() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let repo = crate::support::repo::TestRepo::new().expect("a governance repository");
    let mut child = Command::new(crate::support::gov_bin())
        .arg("--repo")
        .arg(repo.root())
        .args(["serve", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start `gov serve`");
    let stdout = child.stdout.take().expect("its stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut link = None;
    while link.is_none() {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("`gov serve` printed no login link in 30 s");
        };
        if line.contains("/login?code=") {
            link = line.find("http://").map(|at| line[at..].trim().to_string());
        }
    }
    let link = link.expect("a link");
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .redirects(0)
        .build();
    let status = |r: Result<ureq::Response, ureq::Error>| match r {
        Ok(r) => (r.status(), r.header("set-cookie").map(str::to_string)),
        Err(ureq::Error::Status(code, r)) => (code, r.header("set-cookie").map(str::to_string)),
        Err(e) => panic!("{e}"),
    };
    let (first, cookie) = status(http.get(&link).call());
    let (second, _) = status(http.get(&link).call());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(first, 303);
    let cookie = cookie.expect("a session cookie");
    assert!(
        cookie.starts_with("gov_session_") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert_eq!(second, 401, "the link works once");
}
