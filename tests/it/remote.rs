//! Teams through a Git remote: a bare repository stands for the forge, the
//! `git` command line for the person with merge rights who merges a
//! proposal's pull request; `gov sync` (or the webhook) takes the merge as
//! the approval, once its content is checked.

use std::path::{Path, PathBuf};
use std::process::Command;

use gov::app::audit::AuditFilter;
use gov::app::proposals::{submit, Submission};
use gov::app::service::Service;
use gov::domain::proposal::ProposalStatus;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::support::repo::{TestRepo, TestResult};
use crate::support::server::{add_policies_and_agents, proposal, TestServer};

/// Runs stock `git` in `dir`, failing the test when it fails.
pub fn git(dir: &Path, args: &[&str]) -> TestResult<String> {
    git_with(dir, args, None)
}

/// [`git`], with `GIT_SSH_COMMAND` set to `ssh` when given.
pub fn git_with(dir: &Path, args: &[&str], ssh: Option<&str>) -> TestResult<String> {
    let mut cmd = Command::new("git");
    if let Some(ssh) = ssh {
        cmd.env("GIT_SSH_COMMAND", ssh);
    }
    let out = cmd
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Alice Merger")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice Merger")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The forge: a bare repository, registered as `origin` in `root`.
pub struct Forge {
    pub dir: tempfile::TempDir,
    /// The URL `origin` has (the bare repository's path unless given).
    pub url: String,
    /// `GIT_SSH_COMMAND` for the people's clones, when the URL is `ssh://`.
    pub ssh: Option<String>,
}

impl Forge {
    pub fn new(root: &Path) -> TestResult<Forge> {
        Self::with_url(root, |bare| Ok(bare.display().to_string()), None)
    }

    /// A forge reached at the URL `url` makes of the bare repository's path.
    pub fn with_url(
        root: &Path,
        url: impl FnOnce(&Path) -> TestResult<String>,
        ssh: Option<String>,
    ) -> TestResult<Forge> {
        let dir = tempfile::tempdir()?;
        git(dir.path(), &["init", "--bare", "-q", "remote.git"])?;
        let url = url(&dir.path().join("remote.git"))?;
        git(root, &["remote", "add", "origin", &url])?;
        Ok(Forge { dir, url, ssh })
    }

    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    /// A person's clone of the forge, in a new folder.
    pub fn clone_to(&self, name: &str) -> TestResult<PathBuf> {
        let work = self.dir.path().join(name);
        git_with(
            self.dir.path(),
            &["clone", "-q", &self.url(), &work.display().to_string()],
            self.ssh.as_deref(),
        )?;
        Ok(work)
    }

    /// The remote's value of `refname`, if it has it.
    pub fn rev(&self, refname: &str) -> Option<String> {
        let repo = git2::Repository::open_bare(self.bare()).ok()?;
        repo.refname_to_id(refname).ok().map(|o| o.to_string())
    }

    /// A person clones the forge and merges proposal `id`'s pull request
    /// with an ordinary unsigned merge commit; `extra` files ride along in
    /// the merge. Returns the merge commit.
    pub fn merge_pull_request(&self, id: &str, extra: &[(&str, &str)]) -> TestResult<String> {
        let work = self.clone_to(&format!("clone-{id}"))?;
        let branch = format!("origin/gov/proposal/{id}");
        let message = format!("Merge pull request #1 from gov/proposal/{id}");
        if extra.is_empty() {
            git(&work, &["merge", "-q", "--no-ff", "-m", &message, &branch])?;
        } else {
            git(&work, &["merge", "-q", "--no-ff", "--no-commit", &branch])?;
            for (path, text) in extra {
                let p = work.join(path);
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d)?;
                }
                std::fs::write(&p, text)?;
                git(&work, &["add", path])?;
            }
            git(&work, &["commit", "-q", "-m", &message])?;
        }
        git_with(
            &work,
            &["push", "-q", "origin", "main"],
            self.ssh.as_deref(),
        )?;
        Ok(git(&work, &["rev-parse", "HEAD"])?.trim().to_string())
    }
}

/// A governance repository with the default policies, `origin` configured
/// in gov.toml and in git, and a forge behind it.
pub fn team() -> TestResult<(TestRepo, Forge)> {
    let mut t = TestRepo::new()?;
    add_policies_and_agents(&t)?;
    std::fs::write(t.root().join("gov.toml"), "[remote]\nname = \"origin\"\n")?;
    t.settings.remote = Some("origin".into());
    let forge = Forge::new(t.root())?;
    Ok((t, forge))
}

/// Files a proposal that needs a person; returns its id.
pub fn submit_pending(t: &TestRepo) -> TestResult<String> {
    let svc = Service::open(&t.settings)?;
    let sub: Submission = serde_json::from_value(proposal("noop", "publish_content"))?;
    let p = submit(&svc, sub)?.proposal;
    assert_eq!(p.status, ProposalStatus::Pending);
    Ok(p.proposal_id)
}

pub fn entries(t: &TestRepo, event_type: &str) -> TestResult<Vec<Value>> {
    let svc = Service::open(&t.settings)?;
    let rows = svc.governance().index()?.query(&AuditFilter {
        event_type: Some(event_type.into()),
        ..AuditFilter::default()
    })?;
    Ok(rows.into_iter().map(|r| r.entry.entry.payload()).collect())
}

pub fn local_rev(t: &TestRepo, refname: &str) -> TestResult<String> {
    Ok(t.repo()?.refname_to_id(refname)?.to_string())
}

/// Checks that `gov sync` (its output `out`) says first that it took the
/// merge `merge` of proposal `id` as an approval by the test's merger.
pub fn assert_synced_approval(out: &std::process::Output, id: &str, merge: &str) {
    let expected = format!(
        "approved `{id}`: merged by Alice Merger <alice@example.com> in {}",
        &merge[..12]
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some(expected.as_str()),
        "{}",
        text(out)
    );
}

pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_pull_request_merged_on_the_forge_is_an_approval() -> TestResult {
    let (t, forge) = team()?;
    let id = submit_pending(&t)?;

    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    let branch = format!("refs/heads/gov/proposal/{id}");
    assert_eq!(forge.rev(&branch), Some(local_rev(&t, &branch)?));
    assert_eq!(
        forge.rev("refs/heads/gov/audit"),
        Some(local_rev(&t, "refs/heads/gov/audit")?),
        "the audit chain is on the remote"
    );
    assert_eq!(
        forge.rev("refs/heads/main"),
        Some(local_rev(&t, "refs/heads/main")?)
    );

    let merge = forge.merge_pull_request(&id, &[])?;
    let out = t.gov(&["sync"])?;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert_synced_approval(&out, &id, &merge);

    let svc = Service::open(&t.settings)?;
    let p = gov::app::proposals::get(&svc, &id)?;
    assert_eq!(p.status, ProposalStatus::Approved);
    assert_eq!(
        p.decided_by.as_deref(),
        Some("forge:Alice Merger <alice@example.com>")
    );
    assert_eq!(p.merge_commit.as_deref(), Some(merge.as_str()));
    let decided = entries(&t, "proposal_decided")?;
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["via"], "forge");
    assert_eq!(decided[0]["merge_commit"], merge.as_str());
    assert_eq!(decided[0]["merged_by"], "Alice Merger <alice@example.com>");

    assert_eq!(local_rev(&t, "refs/heads/main")?, merge, "fast-forwarded");
    assert!(t.root().join(p.file_path()).is_file(), "{}", p.file_path());
    assert_eq!(
        forge.rev("refs/heads/gov/audit"),
        Some(local_rev(&t, "refs/heads/gov/audit")?),
        "the approval is on the remote's chain"
    );
    assert_eq!(forge.rev(&branch), None, "the merged branch is deleted");

    let out = t.gov(&["audit", "verify"])?;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("made on the forge"), "{said}");
    let log = t.git(&["log", "--oneline", "main"])?;
    assert!(String::from_utf8_lossy(&log.stdout).contains("Merge pull request #1"));

    // Nothing new: a second sync changes nothing and is clean.
    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(entries(&t, "proposal_decided")?.len(), 1);
    Ok(())
}

#[test]
fn a_merge_that_smuggles_a_policy_in_is_refused_and_fails_verify() -> TestResult {
    let (t, forge) = team()?;
    let id = submit_pending(&t)?;
    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    let main_before = local_rev(&t, "refs/heads/main")?;
    let evil = "@id(\"evil\")\npermit (principal, action, resource);\n";
    let merge = forge.merge_pull_request(&id, &[("policies/evil.cedar", evil)])?;

    let out = t.gov(&["sync"])?;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("policies/evil.cedar"), "{said}");
    assert_eq!(local_rev(&t, "refs/heads/main")?, main_before, "main kept");
    assert!(!t.root().join("policies/evil.cedar").exists());
    let svc = Service::open(&t.settings)?;
    let p = gov::app::proposals::get(&svc, &id)?;
    assert_eq!(p.status, ProposalStatus::Pending, "not approved");
    drop(svc);
    let flags = entries(&t, "audit_flag_proposal_tampered")?;
    assert_eq!(flags.len(), 1);
    assert_eq!(flags[0]["merge_commit"], merge.as_str());
    assert!(flags[0]["problem"]
        .as_str()
        .unwrap_or_default()
        .contains("policies/evil.cedar"));

    // Flagged once, not on every pass.
    let out = t.gov(&["sync"])?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(entries(&t, "audit_flag_proposal_tampered")?.len(), 1);

    // Someone brings the merge onto main by hand: verify explains.
    t.git(&["update-ref", "refs/heads/main", &merge])?;
    let out = t.gov(&["audit", "verify"])?;
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("not a faithful forge merge"), "{said}");
    assert!(said.contains("policies/evil.cedar"), "{said}");
    Ok(())
}

#[test]
fn a_merge_of_a_moved_branch_is_refused() -> TestResult {
    let (t, forge) = team()?;
    let id = submit_pending(&t)?;
    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    // Someone adds a commit to the pull request's branch, then merges it.
    let work = forge.dir.path().join("pusher");
    git(
        forge.dir.path(),
        &["clone", "-q", &forge.url(), &work.display().to_string()],
    )?;
    git(&work, &["checkout", "-q", &format!("gov/proposal/{id}")])?;
    std::fs::write(work.join("agents/noop/agent.toml"), "kind = \"command\"\n")?;
    git(&work, &["commit", "-q", "-am", "tweak"])?;
    git(&work, &["push", "-q", "origin", "HEAD"])?;
    let merge = forge.merge_pull_request(&id, &[])?;

    let out = t.gov(&["sync"])?;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("not the submitted proposal commit"), "{said}");
    assert_ne!(local_rev(&t, "refs/heads/main")?, merge);
    assert_eq!(entries(&t, "audit_flag_proposal_tampered")?.len(), 1);
    assert!(entries(&t, "proposal_decided")?.is_empty());
    Ok(())
}

#[test]
fn local_main_apart_from_the_remote_is_never_moved() -> TestResult {
    let (t, forge) = team()?;
    submit_pending(&t)?;
    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    // A commit straight onto the remote's main, not a proposal merge.
    let work = forge.dir.path().join("direct");
    git(
        forge.dir.path(),
        &["clone", "-q", &forge.url(), &work.display().to_string()],
    )?;
    std::fs::write(work.join("README"), "hello\n")?;
    git(&work, &["add", "README"])?;
    git(&work, &["commit", "-q", "-m", "direct push"])?;
    git(&work, &["push", "-q", "origin", "main"])?;
    let before = local_rev(&t, "refs/heads/main")?;

    let out = t.gov(&["sync"])?;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("is not the merge of a pending proposal"),
        "{said}"
    );
    assert_eq!(local_rev(&t, "refs/heads/main")?, before);
    assert_eq!(entries(&t, "audit_flag_main_diverged")?.len(), 1);
    Ok(())
}

#[test]
fn sync_without_a_remote_says_so() -> TestResult {
    let t = TestRepo::new()?;
    let out = t.gov(&["sync"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("no remote is configured"),
        "{}",
        text(&out)
    );
    Ok(())
}

pub fn sign(secret: &str, body: &str) -> TestResult<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(body.as_bytes());
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// POSTs `body` to the webhook with `signature`; returns status and JSON.
pub fn hook(s: &TestServer, body: &str, signature: Option<&str>) -> TestResult<(u16, Value)> {
    hook_event(s, "push", body, signature)
}

/// POSTs `body` as a `event` delivery (`X-GitHub-Event`).
pub fn hook_event(
    s: &TestServer,
    event: &str,
    body: &str,
    signature: Option<&str>,
) -> TestResult<(u16, Value)> {
    let mut req = ureq::post(&format!("{}/hooks/forge", s.base))
        .set("Content-Type", "application/json")
        .set("X-GitHub-Event", event);
    if let Some(sig) = signature {
        req = req.set("X-Hub-Signature-256", sig);
    }
    let resp = match req.send_string(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.into()),
    };
    let status = resp.status();
    let body = serde_json::from_str(&resp.into_string()?).unwrap_or(Value::Null);
    Ok((status, body))
}

pub fn secret(s: &TestServer) -> TestResult<String> {
    let path = &s.settings().webhook_secret_file;
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path)?.permissions());
    assert_eq!(mode & 0o777, 0o600, "the secret is private");
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

#[test]
fn the_webhook_syncs_only_when_signed() -> TestResult {
    let s = TestServer::start_with(|st| st.remote = Some("origin".into()))?;
    let forge = Forge::new(s.repo.root())?;
    let tok = s.agent_token("noop")?;
    let r = s.submit_pending(&tok)?;
    let id = r.text("proposal_id");
    let secret = secret(&s)?;
    let body = r#"{"ref":"refs/heads/main"}"#;

    let chain_before = s.audit("proposal_submitted")?.len();
    for bad in [
        None,
        Some("sha256=00"),
        Some(sign("wrong secret", body)?.as_str()),
    ]
    .iter()
    .map(|o| o.map(str::to_string))
    {
        let (status, reply) = hook(&s, body, bad.as_deref())?;
        assert_eq!(status, 401, "{reply}");
    }
    assert_eq!(forge.rev("refs/heads/gov/audit"), None, "nothing pushed");
    assert_eq!(s.audit("proposal_submitted")?.len(), chain_before);

    let (status, reply) = hook(&s, body, Some(&sign(&secret, body)?))?;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        forge.rev("refs/heads/gov/audit"),
        Some(local_rev(&s.repo, "refs/heads/gov/audit")?)
    );

    let merge = forge.merge_pull_request(&id, &[])?;
    let (status, reply) = hook(&s, body, Some(&sign(&secret, body)?))?;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["approved"][0]["proposal_id"], id.as_str());
    let got = s.get(&format!("/proposals/{id}"), Some(&tok))?;
    assert_eq!(got.body["status"], "approved", "{:?}", got.body);
    assert_eq!(
        got.body["decided_by"],
        "forge:Alice Merger <alice@example.com>"
    );
    assert_eq!(local_rev(&s.repo, "refs/heads/main")?, merge);
    let out = s.repo.gov(&["audit", "verify"])?;
    assert!(out.status.success(), "{}", text(&out));
    Ok(())
}

#[test]
fn the_webhook_without_a_remote_is_a_conflict() -> TestResult {
    let s = TestServer::start()?;
    let secret = secret(&s)?;
    let body = "{}";
    let (status, reply) = hook(&s, body, Some(&sign(&secret, body)?))?;
    assert_eq!(status, 409, "{reply}");
    assert!(reply["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("no remote is configured"));
    let (status, _) = hook(&s, body, None)?;
    assert_eq!(status, 401);
    Ok(())
}

#[test]
fn the_watchdog_syncs_on_its_pass() -> TestResult {
    let (t, forge) = team()?;
    let id = submit_pending(&t)?;
    let out = t.gov(&["watchdog", "--once"])?;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("synced with `origin`"), "{said}");
    assert!(forge
        .rev(&format!("refs/heads/gov/proposal/{id}"))
        .is_some());
    forge.merge_pull_request(&id, &[])?;
    let out = t.gov(&["watchdog", "--once"])?;
    assert!(
        text(&out).contains(&format!("approved `{id}`")),
        "{}",
        text(&out)
    );
    // The approval was written by the watchdog; the chain still verifies.
    let out = t.gov(&["audit", "verify"])?;
    assert!(out.status.success(), "{}", text(&out));
    Ok(())
}
