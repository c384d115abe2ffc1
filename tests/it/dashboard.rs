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
        policies: vec![Citation {
            id: "publish-needs-person".into(),
            reason: "publishing is public and needs a person".into(),
        }],
        branch: Some(format!("gov/proposal/{id}")),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        decision: None,
    }
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
    fn pending_empty_with_policy_warning() {
        let mut page = PendingPage {
            layout: layout("pending", "Pending"),
            proposals: vec![],
        };
        page.layout.policy_warning = Some("policies/x.cedar: unknown entity type `Agnet`".into());
        insta::assert_snapshot!(render::pending(&page).expect("render"));
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
        assert_eq!(headers["referrer-policy"], "no-referrer");

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
