//! `gov demo [--keep DIR]`: the whole governance loop in a few seconds, with
//! no model, no key and no set-up.
//!
//! It creates a governance repository in a temporary folder, starts the real
//! server on an ephemeral loopback port, and plays an agent and an operator
//! against it over HTTP: a self-approval attempt that is blocked, a proposal
//! that waits on its branch, an approval that is a signed merge, the agent's
//! report, and the audit chain with every signature checked.

use std::io::Write;
use std::path::PathBuf;

use crate::domain::proposal::{Proposed, Verdict};
use crate::domain::request::PolicyCitation;
use crate::wire;

use super::{ExitCode, Failure};
use crate::app::audit::{AuditFilter, SignatureCheck};
use crate::app::init::{init, InitOptions};
use crate::client::{Client, ClientError, Timeouts, Token};
use crate::config::Settings;
use crate::server::{serve, AppState};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the demo's governance repository in DIR (which must not hold
    /// any of the files gov writes) instead of deleting it at the end.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

fn fail(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(ExitCode::Failure, format!("demo: {what}: {e}"))
}

/// The running server and how to stop it.
struct DemoServer {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl DemoServer {
    fn start(settings: &Settings) -> Result<DemoServer, Failure> {
        let state = AppState::open(settings).map_err(|e| fail("cannot open the server", e))?;
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| fail("cannot listen", e))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| fail("cannot listen", e))?;
        let addr = std_listener
            .local_addr()
            .map_err(|e| fail("cannot listen", e))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(std_listener).map_err(|e| e.to_string())?;
                serve(listener, state, async {
                    let _ = rx.await;
                })
                .await
                .map_err(|e| e.to_string())
            })
        });
        Ok(DemoServer {
            base: format!("http://{addr}"),
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prints to stdout; a closed pipe is not worth a failure.
macro_rules! say {
    ($out:expr) => { let _ = writeln!($out); };
    ($out:expr, $($arg:tt)*) => { let _ = writeln!($out, $($arg)*); };
}

/// The forbids among cited policies (the reasons a person is needed), as
/// `id (reason); ...`.
fn policies_line(ps: &[PolicyCitation]) -> String {
    ps.iter()
        .filter(|p| p.effect.as_deref() != Some("permit"))
        .map(|p| format!("{} ({})", p.id, p.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

pub fn run(args: Args) -> Result<ExitCode, Failure> {
    let (dir, _tmp) = match &args.keep {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("gov-demo-")
                .tempdir()
                .map_err(|e| fail("cannot create a temporary folder", e))?;
            (t.path().join("governance"), Some(t))
        }
    };
    let mut out = std::io::stdout().lock();
    story(&dir, &mut out)?;
    if args.keep.is_some() {
        say!(out);
        say!(
            out,
            "The repository is kept in {}. Explore it:",
            dir.display()
        );
        say!(out, "  cd {}", dir.display());
        say!(
            out,
            "  gov serve            # the dashboard and API on 127.0.0.1:8005"
        );
        say!(out, "  gov proposals --status all");
        say!(out, "  gov audit log");
    }
    Ok(ExitCode::Ok)
}

/// The demo itself, writing its narration to `out`.
pub fn story(dir: &std::path::Path, out: &mut dyn Write) -> Result<(), Failure> {
    say!(
        out,
        "gov demo: the governance loop, with no model and no key"
    );
    say!(out);

    say!(
        out,
        "1. A governance repository is created (gov init): Cedar policies, agents, signing keys."
    );
    let report = init(&InitOptions {
        dir: dir.to_path_buf(),
        operator_name: "operator".into(),
        operator_key: None,
    })
    .map_err(|e| match e {
        crate::app::init::InitError::Collisions(_) => Failure::from_error(ExitCode::Config, &e),
        _ => fail("gov init failed", e),
    })?;
    say!(
        out,
        "   main is at {}, signed by the operator.",
        short(&report.commit)
    );

    let settings = Settings::load(dir).map_err(|e| fail("cannot read gov.toml", e))?;
    let mut server = DemoServer::start(&settings)?;
    say!(
        out,
        "   The server listens on {} (loopback only).",
        server.base
    );
    say!(out);

    let timeouts = Timeouts::default();
    let read_token = |path: PathBuf| -> Result<Token, Failure> {
        std::fs::read_to_string(&path)
            .map(|s| Token::new(s.trim().to_string()))
            .map_err(|e| fail(&format!("cannot read `{}`", path.display()), e))
    };
    let operator = Client::new(
        &server.base,
        read_token(settings.operator_token_path())?,
        timeouts,
    );
    let minted: wire::TokenMinted = operator
        .post_json("/agents/noop/tokens", &serde_json::Map::new())
        .map_err(|e| fail("cannot mint the agent's token", e))?;
    let agent = Client::new(&server.base, Token::new(minted.agent_token), timeouts);

    let proposal = |requires_approval: bool| {
        let mut payload = serde_json::Map::new();
        payload.insert("channel".into(), "blog".into());
        payload.insert("title".into(), "Hello from a governed agent".into());
        wire::Submission {
            proposal_id: None,
            submitted_at: None,
            expires_at: None,
            proposed: Proposed {
                expected_outcome: "a blog post is published".into(),
                requires_approval,
                rationale: "the demo's one external action".into(),
                ..Proposed::new("noop".into(), "publish_content".into(), payload)
            },
        }
    };

    say!(
        out,
        "2. The agent `noop` tries to publish and approve itself (requires_approval: false)."
    );
    match agent.post_json::<_, wire::ProposalFiled>("/proposals", &proposal(false)) {
        Err(e @ ClientError::Status { .. }) => {
            let (code, refusal) = match e.reply_as::<wire::ErrorReply>() {
                Some((
                    code,
                    wire::ErrorReply {
                        detail: wire::ErrorDetail::Refusal(r),
                    },
                )) => (code, r),
                _ => return Err(fail("self-approval attempt", e)),
            };
            say!(out, "   Blocked: HTTP {code} {}.", refusal.error);
            say!(
                out,
                "   Policy: {}",
                policies_line(refusal.policies.as_deref().unwrap_or_default())
            );
            say!(
                out,
                "   The attempt is in the audit trail as audit_flag_self_approve_attempt."
            );
        }
        Err(e) => return Err(fail("self-approval attempt", e)),
        Ok(v) => {
            return Err(fail(
                "self-approval attempt",
                format!("the server accepted it: proposal `{}`", v.proposal_id),
            ))
        }
    }
    say!(out);

    say!(
        out,
        "3. The agent submits the proposal properly and waits for a person."
    );
    let submitted: wire::ProposalFiled = agent
        .post_json("/proposals", &proposal(true))
        .map_err(|e| fail("submitting the proposal", e))?;
    let id = submitted.proposal_id;
    say!(out, "   Proposal {id}: {}.", submitted.status);
    say!(
        out,
        "   It waits on branch {} (commit {}).",
        submitted.branch.as_deref().unwrap_or("?"),
        short(submitted.commit.as_deref().unwrap_or("?"))
    );
    say!(
        out,
        "   Why a person: {}",
        policies_line(&submitted.policies)
    );
    say!(out);

    say!(
        out,
        "4. The operator approves it (gov approve, the dashboard, or merging the branch)."
    );
    let decided: wire::ProposalDecided = operator
        .post_json(
            &format!("/proposals/{id}/decision"),
            &wire::DecisionRequest {
                decision: Verdict::Approve,
                final_: true,
                note: Some("looks good".into()),
                wait_for_checkout: true,
            },
        )
        .map_err(|e| fail("approving the proposal", e))?;
    let merge = decided.merge_commit.unwrap_or_default();
    say!(
        out,
        "   {}: merge commit {} on main, signed with the operator's key.",
        decided.status,
        short(&merge)
    );
    say!(out);

    say!(out, "5. The agent sees the decision, acts, and reports.");
    let seen: wire::ProposalView = agent
        .get_json(&format!("/proposals/{id}"))
        .map_err(|e| fail("reading the decision", e))?;
    say!(
        out,
        "   GET /proposals/{id} -> status {}.",
        seen.proposal.status
    );
    for (event, key, value) in [
        ("action_executed", "result", "published (pretend)"),
        ("agent_stop", "reason", "task done"),
    ] {
        let mut payload = serde_json::Map::new();
        payload.insert(key.into(), value.into());
        let post = wire::AuditPost {
            agent_id: Some("noop".into()),
            event_type: event.into(),
            proposal_id: Some(id.clone()),
            task_id: None,
            payload,
        };
        let _: wire::AuditPosted = agent
            .post_json("/audit", &post)
            .map_err(|e| fail(&format!("posting {event}"), e))?;
    }
    say!(out, "   Posted action_executed and agent_stop.");
    server.stop();
    say!(out);

    say!(
        out,
        "6. The audit chain: one signed commit per entry, each signature checked."
    );
    let mut lines = crate::app::audit::log(&settings, &AuditFilter::default())
        .map_err(|e| fail("reading the audit chain", e))?;
    lines.reverse();
    for l in &lines {
        let e = &l.indexed.entry;
        let sig = match &l.signature {
            SignatureCheck::Good { principal, .. } => format!("good signature by {principal}"),
            SignatureCheck::Missing => "NO SIGNATURE".to_string(),
            SignatureCheck::Bad(why) => format!("BAD SIGNATURE: {why}"),
        };
        say!(
            out,
            "   #{:<2} {:<34} {:<8} {} {}",
            e.seq,
            e.entry.event_type(),
            e.entry.agent_id.as_deref().unwrap_or("-"),
            short(&l.indexed.commit),
            sig
        );
    }
    let report = crate::app::audit::verify(&settings).map_err(|e| fail("verifying", e))?;
    if !report.is_ok() {
        let p = &report.problems[0];
        return Err(fail("the audit chain does not verify", &p.reason));
    }
    say!(
        out,
        "   gov audit verify: ok, {} entries, {} approval merge(s) checked.",
        report.entries,
        report.merges_checked
    );
    say!(out);
    say!(
        out,
        "Check it yourself with stock git (run `gov demo --keep DIR` to keep the repository):"
    );
    say!(out, "  git -C DIR -c gpg.ssh.allowedSignersFile=policies/allowed_signers log --show-signature gov/audit");
    say!(
        out,
        "  git -C DIR -c gpg.ssh.allowedSignersFile=policies/allowed_signers verify-commit {}",
        short(&merge)
    );
    Ok(())
}
