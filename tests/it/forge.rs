//! Teams on a real forge: `gov sync` through the system `git` over a real
//! `sshd` on a loopback port and over `file://`, the remote unreachable and
//! back, a hanging remote and credentials in URLs; pull requests against a
//! local stand-in for GitHub's API; the signed webhook's evidence for
//! squash merges and for reviewed changes that are not proposals.

use std::process::Command;

use gov::domain::proposal::ProposalStatus;
use serde_json::json;

use crate::remote::{
    assert_synced_approval, entries, git, hook, hook_event, local_rev, secret, sign,
    submit_pending, team, text, Forge,
};
use crate::support::git_http::{GitHttp, PASSWORD, USER};
use crate::support::github::GitHub;
use crate::support::repo::{TestRepo, TestResult};
use crate::support::server::{add_policies_and_agents, TestServer};
use crate::support::sshd::Sshd;

/// Runs `gov --repo ROOT ARGS…` with `envs` set.
fn gov_env(t: &TestRepo, args: &[&str], envs: &[(&str, &str)]) -> TestResult<std::process::Output> {
    let mut cmd = Command::new(crate::support::gov_bin());
    cmd.arg("--repo").arg(t.root()).args(args);
    cmd.env_remove("GOV_URL").env_remove("GOV_FORGE_TOKEN");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Ok(cmd.output()?)
}

/// A governance repository with the default policies whose `gov.toml` is
/// `[remote] name = "origin"` and then `more`.
fn repo_with_remote(more: &str) -> TestResult<TestRepo> {
    let mut t = TestRepo::new()?;
    add_policies_and_agents(&t)?;
    std::fs::write(
        t.root().join("gov.toml"),
        format!("[remote]\nname = \"origin\"\n{more}"),
    )?;
    t.settings.remote = Some("origin".into());
    Ok(t)
}

/// Submits a proposal that needs a person through the server's API.
fn submit_over_api(s: &TestServer) -> TestResult<String> {
    let tok = s.agent_token("noop")?;
    let r = s.submit_pending(&tok)?;
    Ok(r.text("proposal_id"))
}

/// A governance repository whose `origin` is the bare repository behind
/// `sshd`, reached over `ssh://`.
fn team_over_ssh(sshd: &Sshd) -> TestResult<(TestRepo, Forge)> {
    let t = repo_with_remote("")?;
    let forge = Forge::with_url(t.root(), |bare| sshd.url(bare), Some(sshd.ssh_command()))?;
    Ok((t, forge))
}

fn proposal_status(t: &TestRepo, id: &str) -> TestResult<gov::domain::proposal::Proposal> {
    let svc = gov::app::service::Service::open(&t.settings)?;
    Ok(gov::app::proposals::get(&svc, id)?)
}

/// The audit chain's commits on the remote, oldest first.
fn remote_chain(forge: &Forge) -> TestResult<Vec<String>> {
    Ok(git(
        &forge.bare(),
        &["rev-list", "--reverse", "refs/heads/gov/audit"],
    )?
    .lines()
    .map(str::to_string)
    .collect())
}

fn local_chain(t: &TestRepo) -> TestResult<Vec<String>> {
    Ok(
        git(t.root(), &["rev-list", "--reverse", "refs/heads/gov/audit"])?
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn over_ssh_a_merge_made_in_another_clone_is_an_approval() -> TestResult {
    let sshd = Sshd::start()?;
    let (t, forge) = team_over_ssh(&sshd)?;
    let ssh = sshd.ssh_command();
    let env = [("GIT_SSH_COMMAND", ssh.as_str())];
    let id = submit_pending(&t)?;

    let out = gov_env(&t, &["sync"], &env)?;
    let said = text(&out);
    assert!(out.status.success(), "{said}\n{}", sshd.log());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some(format!("synced with `origin` ({})", forge.url).as_str()),
        "{said}"
    );
    let branch = format!("refs/heads/gov/proposal/{id}");
    assert_eq!(forge.rev(&branch), Some(local_rev(&t, &branch)?));
    assert_eq!(remote_chain(&forge)?, local_chain(&t)?);
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());

    // A person merges the pull request in their own clone, over SSH.
    let merge = forge.merge_pull_request(&id, &[])?;
    let out = gov_env(&t, &["sync"], &env)?;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert_synced_approval(&out, &id, &merge);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some(format!("synced with `origin` ({})", forge.url).as_str()),
        "{said}"
    );
    let p = proposal_status(&t, &id)?;
    assert_eq!(p.status, ProposalStatus::Approved);
    assert_eq!(p.merge_commit.as_deref(), Some(merge.as_str()));
    assert_eq!(local_rev(&t, "refs/heads/main")?, merge);
    assert_eq!(forge.rev(&branch), None, "the merged branch is deleted");
    assert_eq!(remote_chain(&forge)?, local_chain(&t)?);
    let out = t.gov(&["audit", "verify"])?;
    assert!(out.status.success(), "{}", text(&out));
    Ok(())
}

#[test]
fn over_a_file_url_as_over_a_path() -> TestResult {
    let t = repo_with_remote("")?;
    let forge = Forge::with_url(
        t.root(),
        |bare| Ok(format!("file://{}", bare.display())),
        None,
    )?;
    let id = submit_pending(&t)?;
    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    let merge = forge.merge_pull_request(&id, &[])?;
    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(proposal_status(&t, &id)?.status, ProposalStatus::Approved);
    assert_eq!(local_rev(&t, "refs/heads/main")?, merge);
    assert_eq!(remote_chain(&forge)?, local_chain(&t)?);
    Ok(())
}

/// `gov status` against the running server, its remote lines only.
fn status_remote_lines(s: &TestServer) -> TestResult<Vec<String>> {
    let out = gov_env(&s.repo, &["status"], &[("GOV_URL", s.base.as_str())])?;
    assert!(out.status.success(), "{}", text(&out));
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.starts_with("remote ")
                || l.starts_with("last sync ")
                || l.starts_with("not yet pushed ")
        })
        .map(str::to_string)
        .collect())
}

#[test]
fn while_the_remote_is_unreachable_writes_go_on_and_wait_then_all_is_pushed() -> TestResult {
    let mut sshd = Sshd::start()?;
    let (t, forge) = team_over_ssh(&sshd)?;
    let s = TestServer::start_on(t)?;
    let ssh = sshd.ssh_command();
    let env = [("GIT_SSH_COMMAND", ssh.as_str())];
    let submit = || submit_over_api(&s);
    let first = submit()?;
    let out = gov_env(&s.repo, &["sync"], &env)?;
    assert!(out.status.success(), "{}", text(&out));
    let lines = status_remote_lines(&s)?;
    assert_eq!(lines[0], format!("remote          origin ({})", forge.url));
    assert!(lines[1].ends_with(": ok"), "{lines:?}");
    assert_eq!(lines[2], "not yet pushed  nothing");

    sshd.stop();
    // Writes go on locally.
    let second = submit()?;
    let third = submit()?;
    let out = gov_env(&s.repo, &["sync"], &env)?;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("fetching from `origin` ({})", forge.url)),
        "{said}"
    );
    assert!(said.contains("Connection refused"), "{said}");

    let local = local_chain(&s.repo)?;
    let remote = remote_chain(&forge)?;
    assert!(local.starts_with(&remote));
    let waiting = local.len() - remote.len();
    assert!(waiting >= 2, "two submissions wait: {waiting}");
    let lines = status_remote_lines(&s)?;
    assert!(
        lines[1].contains(": failed: fetching from `origin`")
            && lines[1].contains("Connection refused"),
        "{lines:?}"
    );
    let mut branches = [second.clone(), third.clone()].map(|id| format!("gov/proposal/{id}"));
    branches.sort();
    let listed = |l: &str| branches.iter().all(|b| l.contains(b.as_str()));
    assert!(
        lines[2].starts_with(&format!(
            "not yet pushed  {waiting} audit entries, 0 commit(s) on main, 2 proposal branch(es): "
        )) && listed(&lines[2]),
        "{lines:?}"
    );

    // Back: everything is pushed, in order, once.
    sshd.resume()?;
    let out = gov_env(&s.repo, &["sync"], &env)?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(remote_chain(&forge)?, local_chain(&s.repo)?);
    for id in [&first, &second, &third] {
        let b = format!("refs/heads/gov/proposal/{id}");
        assert_eq!(forge.rev(&b), Some(local_rev(&s.repo, &b)?));
    }
    let lines = status_remote_lines(&s)?;
    assert!(lines[1].ends_with(": ok"), "{lines:?}");
    assert_eq!(lines[2], "not yet pushed  nothing");
    // A second sync has nothing to add.
    let out = gov_env(&s.repo, &["sync"], &env)?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("pushed:"), "{}", text(&out));
    Ok(())
}

#[test]
fn a_remote_that_does_not_answer_is_stopped_after_the_time_limit() -> TestResult {
    let t = repo_with_remote("timeout_seconds = 1\n")?;
    let dir = tempfile::tempdir()?;
    let pidfile = dir.path().join("pid");
    let hang = dir.path().join("hang");
    std::fs::write(
        &hang,
        format!(
            "#!/bin/sh\necho \"$GIT_TERMINAL_PROMPT $*\" > {}.args\necho $$ > {}\nexec sleep 60\n",
            pidfile.display(),
            pidfile.display()
        ),
    )?;
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&hang)?.permissions(),
        0o755,
    );
    std::fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    git(
        t.root(),
        &["remote", "add", "origin", "ssh://git@127.0.0.1/gov.git"],
    )?;
    let out = gov_env(
        &t,
        &["sync"],
        &[("GIT_SSH_COMMAND", &hang.display().to_string())],
    )?;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("fetching from `origin` (ssh://git@127.0.0.1/gov.git): no answer within 1 s; git was stopped"),
        "{said}"
    );
    // The hanging ssh was killed with git's process group.
    let pid = std::fs::read_to_string(&pidfile)?.trim().to_string();
    let gone = (0..100).any(|_| {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        if alive {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        !alive
    });
    assert!(gone, "process {pid} still runs");
    // Nothing could have waited for a person: no terminal prompts, and ssh
    // (here the script standing for it) was asked for batch mode.
    let args = std::fs::read_to_string(dir.path().join("pid.args"))?;
    assert!(args.starts_with("0 -o BatchMode=yes "), "{args}");
    Ok(())
}

#[test]
fn credentials_in_the_remote_url_are_never_printed_or_kept() -> TestResult {
    let t = repo_with_remote("timeout_seconds = 10\n")?;
    // Nothing listens on port 9 of the loopback: the fetch fails at once.
    git(
        t.root(),
        &[
            "remote",
            "add",
            "origin",
            "https://gov-bot:s3cr3t-t0ken@127.0.0.1:9/gov.git",
        ],
    )?;
    let out = t.gov(&["sync"])?;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("fetching from `origin` (https://***@127.0.0.1:9/gov.git): "),
        "{said}"
    );
    assert!(!said.contains("s3cr3t"), "{said}");
    let kept = std::fs::read_to_string(t.root().join(".gov/sync-state.json"))?;
    assert!(kept.contains("https://***@127.0.0.1:9/gov.git"), "{kept}");
    assert!(!kept.contains("s3cr3t"), "{kept}");
    let chain = git(t.root(), &["log", "--all", "--format=%B"])?;
    assert!(!chain.contains("s3cr3t"));
    Ok(())
}

fn forge_toml(api: &str) -> String {
    format!(
        "[remote]\nname = \"origin\"\n\n[remote.forge]\nkind = \"github\"\napi_url = \"{api}\"\nrepo = \"acme/gov\"\nlabels = [\"gov\", \"needs-review\"]\ndashboard_url = \"https://gov.example\"\n"
    )
}

#[test]
fn pull_requests_are_opened_once_labelled_and_closed_on_rejection() -> TestResult {
    let (t, forge) = team()?;
    let gh = GitHub::start("acme", "test-token", forge.bare())?;
    std::fs::write(t.root().join("gov.toml"), forge_toml(&gh.url))?;
    let token = [("GOV_FORGE_TOKEN", "test-token")];
    let a = submit_pending(&t)?;
    let b = submit_pending(&t)?;

    let out = gov_env(&t, &["sync"], &token)?;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let pulls = gh.pulls();
    assert_eq!(pulls.len(), 2);
    for id in [&a, &b] {
        let pr = pulls
            .iter()
            .find(|p| p.head == format!("gov/proposal/{id}"))
            .ok_or("no pull request")?;
        assert_eq!(pr.base, "main");
        assert_eq!(pr.state, "open");
        assert_eq!(pr.labels, ["gov", "needs-review"]);
        assert_eq!(pr.title, format!("gov: `publish_content` by `noop` ({id})"));
        for part in [
            "- expected cost: ",
            "- expires at: ",
            "### Why it needs a person",
            "### Payload",
            &format!("(https://gov.example/dashboard/proposals/{id})"),
        ] {
            assert!(pr.body.contains(part), "{part} missing from\n{}", pr.body);
        }
        let p = proposal_status(&t, id)?;
        assert!(
            p.policies
                .iter()
                .any(|c| c.effect.as_deref() == Some("forbid")),
            "{:?}",
            p.policies
        );
        for c in p
            .policies
            .iter()
            .filter(|c| c.effect.as_deref() == Some("forbid"))
        {
            assert!(
                pr.body.contains(&format!("- `{}`: {}", c.id, c.reason)),
                "{}",
                pr.body
            );
        }
        assert!(
            said.contains(&format!(
                "pull request #{} opened for `{id}`: https://github.example/acme/pull/{}",
                pr.number, pr.number
            )),
            "{said}"
        );
    }
    assert_eq!(entries(&t, "pull_request_opened")?.len(), 2);

    // Idempotent: nothing is opened twice.
    let out = gov_env(&t, &["sync"], &token)?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(gh.pulls().len(), 2);
    let posts = |gh: &GitHub| gh.requests().iter().filter(|r| *r == "POST /pulls").count();
    assert_eq!(posts(&gh), 2);

    // Rejected: its pull request is closed, with a word on why, once.
    let out = t.gov(&["reject", &b, "--note", "not now"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("proposal `{b}` rejected\n")
    );
    let out = gov_env(&t, &["sync"], &token)?;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let closed = gh
        .pulls()
        .into_iter()
        .find(|p| p.head == format!("gov/proposal/{b}"))
        .ok_or("no pull request")?;
    assert_eq!(closed.state, "closed");
    assert!(
        closed.comments[0].starts_with(&format!("gov: proposal `{b}` rejected by ")),
        "{:?}",
        closed.comments
    );
    assert!(
        said.contains(&format!("pull request #{} closed for `{b}`", closed.number)),
        "{said}"
    );
    let out = gov_env(&t, &["sync"], &token)?;
    assert!(out.status.success(), "{}", text(&out));
    let patches = gh
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH"))
        .count();
    assert_eq!(patches, 1);
    assert_eq!(entries(&t, "pull_request_closed")?.len(), 1);

    // A pull request someone already opened from the branch is adopted.
    let c = submit_pending(&t)?;
    let out = t.gov(&["sync"])?; // no token: the branch is pushed, the API call fails
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let host = gh.url.trim_start_matches("http://");
    assert!(
        said.contains(&format!(
            "forge: no forge token: set `GOV_FORGE_TOKEN` or store one for `{host}` in a git credential helper"
        )),
        "{said}"
    );
    let adopted = gh.add_pull(&format!("gov/proposal/{c}"), "main");
    // The token from a credential helper this time.
    git(
        t.root(),
        &[
            "config",
            "credential.helper",
            "!f() { test \"$1\" = get && echo username=gov && echo password=test-token; }; f",
        ],
    )?;
    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(posts(&gh), 2, "adopted, not opened again");
    let pr = gh
        .pulls()
        .into_iter()
        .find(|p| p.number == adopted)
        .ok_or("no pull request")?;
    assert_eq!(pr.labels, ["gov", "needs-review"]);
    let opened = entries(&t, "pull_request_opened")?;
    assert!(opened.iter().any(|e| e["number"] == adopted), "{opened:?}");
    Ok(())
}

/// A `pull_request` delivery: `head` merged into main by `login`.
fn merged_event(number: u64, head: &str, head_sha: &str, merge: &str, login: &str) -> String {
    json!({
        "action": "closed",
        "number": number,
        "pull_request": {
            "number": number,
            "state": "closed",
            "merged": true,
            "merge_commit_sha": merge,
            "merged_by": {"login": login},
            "head": {"ref": head, "sha": head_sha},
            "base": {"ref": "main", "sha": "0".repeat(40)},
            "html_url": format!("https://github.example/acme/pull/{number}")
        },
        "sender": {"login": login}
    })
    .to_string()
}

/// Squashes proposal `id`'s branch onto the forge's main as one commit,
/// with `extra` files in it; returns the commit.
fn squash_merge(forge: &Forge, id: &str, extra: &[(&str, &str)]) -> TestResult<String> {
    let work = forge.clone_to(&format!("squash-{id}"))?;
    git(
        &work,
        &[
            "merge",
            "-q",
            "--squash",
            &format!("origin/gov/proposal/{id}"),
        ],
    )?;
    for (path, body) in extra {
        let p = work.join(path);
        std::fs::write(&p, body)?;
        git(&work, &["add", path])?;
    }
    git(
        &work,
        &["commit", "-q", "-m", &format!("Proposal {id} (#1)")],
    )?;
    git(&work, &["push", "-q", "origin", "main"])?;
    Ok(git(&work, &["rev-parse", "HEAD"])?.trim().to_string())
}

fn server_with_forge() -> TestResult<(TestServer, Forge, String)> {
    let s = TestServer::start_with(|st| st.remote = Some("origin".into()))?;
    let forge = Forge::new(s.repo.root())?;
    let id = submit_over_api(&s)?;
    let secret = secret(&s)?;
    let (status, reply) = hook(&s, "{}", Some(&sign(&secret, "{}")?))?;
    assert_eq!(status, 200, "{reply}");
    Ok((s, forge, id))
}

#[test]
fn a_squash_merge_with_the_signed_webhook_is_an_approval_by_the_merger() -> TestResult {
    let (s, forge, id) = server_with_forge()?;
    let secret = secret(&s)?;
    let submitted = proposal_status(&s.repo, &id)?.commit.ok_or("no commit")?;
    let squash = squash_merge(&forge, &id, &[])?;
    let body = merged_event(
        1,
        &format!("gov/proposal/{id}"),
        &submitted,
        &squash,
        "carol",
    );

    // Unsigned or badly signed: nothing happens.
    for bad in [None, Some(sign("another secret", &body)?)] {
        let (status, _) = hook_event(&s, "pull_request", &body, bad.as_deref())?;
        assert_eq!(status, 401);
    }
    assert!(s.audit("forge_merge_reported")?.is_empty());
    // Signed, but without the evidence (a push event): a squash is not taken.
    let (status, reply) = hook(&s, "{}", Some(&sign(&secret, "{}")?))?;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["refused"][0]
            .as_str()
            .unwrap_or_default()
            .contains("is not the merge of a pending proposal"),
        "{reply}"
    );
    assert_eq!(
        proposal_status(&s.repo, &id)?.status,
        ProposalStatus::Pending
    );
    // A signed body that is not a pull request event: 422 naming the field.
    let junk = r#"{"action":"closed"}"#;
    let (status, reply) = hook_event(&s, "pull_request", junk, Some(&sign(&secret, junk)?))?;
    assert_eq!(status, 422, "{reply}");
    assert!(reply.to_string().contains("pull_request"), "{reply}");

    let (status, reply) = hook_event(&s, "pull_request", &body, Some(&sign(&secret, &body)?))?;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["approved"][0]["proposal_id"], id.as_str());
    assert_eq!(reply["approved"][0]["merged_by"], "@carol");
    assert_eq!(reply["approved"][0]["kind"], "squash");
    let p = proposal_status(&s.repo, &id)?;
    assert_eq!(p.status, ProposalStatus::Approved);
    assert_eq!(p.decided_by.as_deref(), Some("forge:@carol"));
    assert_eq!(p.merge_commit.as_deref(), Some(squash.as_str()));
    assert_eq!(local_rev(&s.repo, "refs/heads/main")?, squash);
    let decided = s.audit("proposal_decided")?;
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0]["payload"]["kind"], "squash");
    assert_eq!(decided[0]["payload"]["evidence"]["merged_by"], "carol");
    assert_eq!(
        decided[0]["payload"]["evidence"]["merge_commit"],
        squash.as_str()
    );
    let out = s.repo.gov(&["audit", "verify"])?;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("squash-merged on the forge"), "{said}");
    Ok(())
}

#[test]
fn a_tampered_squash_is_flagged_even_with_the_evidence() -> TestResult {
    let (s, forge, id) = server_with_forge()?;
    let secret = secret(&s)?;
    let submitted = proposal_status(&s.repo, &id)?.commit.ok_or("no commit")?;
    let main_before = local_rev(&s.repo, "refs/heads/main")?;
    let evil = "@id(\"evil\")\npermit (principal, action, resource);\n";
    let squash = squash_merge(&forge, &id, &[("policies/evil.cedar", evil)])?;
    let body = merged_event(
        1,
        &format!("gov/proposal/{id}"),
        &submitted,
        &squash,
        "mallory",
    );
    for _ in 0..2 {
        let (status, reply) = hook_event(&s, "pull_request", &body, Some(&sign(&secret, &body)?))?;
        assert_eq!(status, 200, "{reply}");
        assert!(
            reply["refused"][0]
                .as_str()
                .unwrap_or_default()
                .contains("besides `proposals/"),
            "{reply}"
        );
    }
    assert_eq!(
        proposal_status(&s.repo, &id)?.status,
        ProposalStatus::Pending
    );
    assert_eq!(local_rev(&s.repo, "refs/heads/main")?, main_before);
    let flags = s.audit("audit_flag_proposal_tampered")?;
    assert_eq!(flags.len(), 1, "flagged once");
    assert_eq!(flags[0]["payload"]["merge_commit"], squash.as_str());
    assert_eq!(flags[0]["payload"]["merged_by"], "@mallory");
    assert_eq!(s.audit("forge_merge_reported")?.len(), 1, "recorded once");

    // Someone brings the squash onto main by hand: verify says what is wrong.
    s.repo.git(&["update-ref", "refs/heads/main", &squash])?;
    let out = s.repo.gov(&["audit", "verify"])?;
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("was refused as a forge merge and flagged: besides `proposals/"),
        "{said}"
    );
    Ok(())
}

#[test]
fn a_reviewed_policy_change_merged_on_the_forge_is_recorded_and_taken() -> TestResult {
    let (s, forge, _id) = server_with_forge()?;
    let secret = secret(&s)?;
    let work = forge.clone_to("policy-change")?;
    git(&work, &["checkout", "-q", "-b", "policy/note"])?;
    let file = work.join("policies/approvers.cedar");
    let mut cedar = std::fs::read_to_string(&file)?;
    cedar.push_str("// reviewed on the forge\n");
    std::fs::write(&file, cedar)?;
    git(
        &work,
        &["commit", "-q", "-am", "A note in the approvers' policy"],
    )?;
    git(&work, &["push", "-q", "origin", "policy/note"])?;
    let head = git(&work, &["rev-parse", "HEAD"])?.trim().to_string();
    git(&work, &["checkout", "-q", "main"])?;
    git(
        &work,
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "Merge pull request #2",
            "policy/note",
        ],
    )?;
    git(&work, &["push", "-q", "origin", "main"])?;
    let merge = git(&work, &["rev-parse", "HEAD"])?.trim().to_string();
    let main_before = local_rev(&s.repo, "refs/heads/main")?;

    // Without the forge's word it is a commit nobody reviewed.
    let (status, reply) = hook(&s, "{}", Some(&sign(&secret, "{}")?))?;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["refused"].as_array().map(Vec::len),
        Some(1),
        "{reply}"
    );
    assert_eq!(local_rev(&s.repo, "refs/heads/main")?, main_before);

    let body = merged_event(2, "policy/note", &head, &merge, "dana");
    let (status, reply) = hook_event(&s, "pull_request", &body, Some(&sign(&secret, &body)?))?;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["changes"][0]["merge_commit"], merge.as_str());
    assert_eq!(reply["changes"][0]["merged_by"], "@dana");
    assert_eq!(
        reply["changes"][0]["paths"],
        json!(["policies/approvers.cedar"])
    );
    assert_eq!(local_rev(&s.repo, "refs/heads/main")?, merge);
    let recorded = s.audit("forge_merge_recorded")?;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["payload"]["merge_commit"], merge.as_str());
    assert_eq!(recorded[0]["payload"]["via"], "forge");
    // The recorded forge merge authorizes the change: it is in force.
    let st = s.get("/status", Some(&s.operator))?.body;
    assert_eq!(st["policy_version"], merge.as_str(), "{st}");
    assert_eq!(st["policy_refused"], json!([]), "{st}");
    // `gov audit verify` takes it as the server does (it once called the
    // merge tampered: it looked for a proposal the merge approved).
    let out = s.repo.gov(&["audit", "verify"])?;
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
        ),
        (
            Some(0),
            format!(
                "note: merge {} on `main` was made on the forge: a reviewed change \
                 (`policies/approvers.cedar`) that gov recorded\n\
                 ok: 5 entries, signatures good, chain linear\n\
                 ok: 1 merges on `main` made on the forge, each recorded by gov\n",
                &merge[..12]
            )
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn the_webhook_names_the_merger_of_a_merge_commit() -> TestResult {
    let (s, forge, id) = server_with_forge()?;
    let secret = secret(&s)?;
    let submitted = proposal_status(&s.repo, &id)?.commit.ok_or("no commit")?;
    // The merge commit is authored by the forge's bot, not the person.
    let merge = forge.merge_pull_request(&id, &[])?;
    let body = merged_event(1, &format!("gov/proposal/{id}"), &submitted, &merge, "erin");
    let (status, reply) = hook_event(&s, "pull_request", &body, Some(&sign(&secret, &body)?))?;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["approved"][0]["merged_by"], "@erin");
    assert_eq!(reply["approved"][0]["kind"], "merge");
    let p = proposal_status(&s.repo, &id)?;
    assert_eq!(p.decided_by.as_deref(), Some("forge:@erin"));
    assert_eq!(s.audit("forge_merge_reported")?.len(), 1);
    Ok(())
}

#[test]
fn a_squash_of_a_pull_request_whose_head_moved_is_flagged() -> TestResult {
    let (s, forge, id) = server_with_forge()?;
    let secret = secret(&s)?;
    let squash = squash_merge(&forge, &id, &[])?;
    // The forge says the pull request's head was another commit than the
    // one gov submitted (someone pushed to the branch, then undid it).
    let other = "f".repeat(40);
    let body = merged_event(1, &format!("gov/proposal/{id}"), &other, &squash, "frank");
    let (status, reply) = hook_event(&s, "pull_request", &body, Some(&sign(&secret, &body)?))?;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["refused"][0].as_str().unwrap_or_default().contains(
            "the pull request's head was commit ffffffffffff, not the submitted proposal commit"
        ),
        "{reply}"
    );
    assert_eq!(
        proposal_status(&s.repo, &id)?.status,
        ProposalStatus::Pending
    );
    assert_eq!(s.audit("audit_flag_proposal_tampered")?.len(), 1);
    Ok(())
}

#[test]
fn what_the_remote_refuses_is_named_and_waits() -> TestResult {
    let (t, forge) = team()?;
    submit_pending(&t)?;
    let hook = forge.bare().join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'main is protected' >&2\nexit 1\n")?;
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = t.gov(&["sync"])?;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("error: pushing to `origin`: the remote refused `refs/heads/main` (remote rejected: pre-receive hook declined); "), "{said}");
    assert!(
        said.contains("`refs/heads/gov/audit` (remote rejected: pre-receive hook declined)"),
        "{said}"
    );
    assert_eq!(forge.rev("refs/heads/gov/audit"), None, "nothing forced in");
    let kept = std::fs::read_to_string(t.root().join(".gov/sync-state.json"))?;
    let kept: serde_json::Value = serde_json::from_str(&kept)?;
    assert_eq!(kept["ok"], false);
    assert!(
        kept["error"]
            .as_str()
            .unwrap_or_default()
            .contains("pre-receive hook declined"),
        "{kept}"
    );
    // Once the remote takes it, it is pushed.
    std::fs::remove_file(&hook)?;
    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(remote_chain(&forge)?, local_chain(&t)?);
    Ok(())
}

#[test]
fn over_http_the_password_comes_from_a_credential_helper_and_never_shows() -> TestResult {
    let t = repo_with_remote("timeout_seconds = 30\n")?;
    let mut http = None;
    let forge = Forge::with_url(
        t.root(),
        |bare| {
            let server = GitHttp::start(bare.parent().ok_or("no parent")?.to_path_buf())?;
            let url = format!(
                "{}/remote.git",
                server.url.replace("http://", "http://gov@")
            );
            http = Some(server);
            Ok(url)
        },
        None,
    )?;
    let host = forge.url.trim_start_matches("http://gov@").to_string();
    submit_pending(&t)?;

    // No credential: git may not ask on a terminal, so the sync fails.
    let out = t.gov(&["sync"])?;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    // For http(s) the whole user part is taken out (a token is often given
    // as the user name).
    assert!(
        said.contains(&format!("fetching from `origin` (http://***@{host}): ")),
        "{said}"
    );
    assert!(said.contains("terminal prompts disabled"), "{said}");

    // The user's credential helper answers, as for any git command.
    git(
        t.root(),
        &[
            "config",
            "credential.helper",
            &format!("!f() {{ test \"$1\" = get && echo username={USER} && echo password={PASSWORD}; }}; f"),
        ],
    )?;
    let out = t.gov(&["sync"])?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(remote_chain(&forge)?, local_chain(&t)?);

    // A password written into the URL works and is never shown.
    git(t.root(), &["config", "--unset", "credential.helper"])?;
    let with_password = format!("http://{USER}:{PASSWORD}@{host}");
    git(t.root(), &["remote", "set-url", "origin", &with_password])?;
    submit_pending(&t)?;
    let out = t.gov(&["sync"])?;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("synced with `origin` (http://***@{host})")),
        "{said}"
    );
    assert!(!said.contains(PASSWORD), "{said}");
    assert_eq!(remote_chain(&forge)?, local_chain(&t)?);
    drop(http);
    Ok(())
}

#[test]
fn an_expired_proposal_has_its_pull_request_closed() -> TestResult {
    let (t, forge) = team()?;
    let gh = GitHub::start("acme", "test-token", forge.bare())?;
    std::fs::write(t.root().join("gov.toml"), forge_toml(&gh.url))?;
    let token = [("GOV_FORGE_TOKEN", "test-token")];
    let id = submit_pending(&t)?;
    let out = gov_env(&t, &["sync"], &token)?;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(gh.pulls()[0].state, "open");

    // A month later the proposal has expired.
    let svc = gov::app::service::Service::open(&t.settings)?;
    let later = gov::domain::audit::Timestamp(chrono::Utc::now() + chrono::Duration::days(31));
    let expired =
        gov::app::proposals::expire_stale_as(&svc, gov::domain::audit::Actor::server(), later)?;
    assert_eq!(expired, std::slice::from_ref(&id));
    drop(svc);
    let out = gov_env(&t, &["sync"], &token)?;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("pull request #1 closed for `{id}`")),
        "{said}"
    );
    let pr = &gh.pulls()[0];
    assert_eq!(pr.state, "closed");
    assert!(
        pr.comments[0].starts_with(&format!("gov: proposal `{id}` expired at ")),
        "{:?}",
        pr.comments
    );
    assert_eq!(
        forge.rev(&format!("refs/heads/gov/expired/{id}")),
        Some(local_rev(&t, &format!("refs/heads/gov/expired/{id}"))?),
        "the expired branch is kept on the remote"
    );
    Ok(())
}
