//! The Git remote: fetching it and pushing to it through the system `git`,
//! and the checks that make a merge made on a forge an approval.
//!
//! - [`fetch`] copies the remote's `main` and gov's branches into
//!   `refs/remotes/<remote>/…` (the usual remote-tracking refs; local
//!   branches are never touched by a fetch).
//! - [`push`] sends ref updates, none of them forced (no `+` refspec, no
//!   `--force`): the remote refuses a non-fast-forward, and every refusal is
//!   named.
//! - Both run `git` itself, so every transport git has (`ssh://`, scp-like
//!   `host:path`, `https://`, `file://`, paths) works with the user's SSH
//!   agent, `~/.ssh/config` and credential helpers. Nothing may wait for a
//!   person: `GIT_TERMINAL_PROMPT=0`, ssh in `BatchMode`, stdin closed, and
//!   a time limit after which the whole process group is killed. What git
//!   says is passed through [`redact_text`], so a token in a URL never
//!   reaches a message, a log or the audit chain.
//! - [`forge_merge_problem`] says why a merge commit is not exactly the
//!   merge of a submitted proposal commit, and [`squash_merge_problem`] why
//!   a one-parent commit (a squash or rebase merge) is not exactly the
//!   proposal's file added to `main`; `None` when it is. `gov sync` asks
//!   them before approving; `gov audit verify` asks them of every merge on
//!   `main` that no approver signed.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use git2::{Oid, Repository};

use crate::domain::forge::{redact_text, redact_url};
use crate::process::{own_process_group, supervise, Ending, Supervision};

/// A ref update to push: `src` is the local ref (`None` deletes `dst` on
/// the remote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub src: Option<String>,
    pub dst: String,
}

impl RefUpdate {
    /// The refspec: never with a leading `+`.
    fn refspec(&self) -> String {
        format!("{}:{}", self.src.as_deref().unwrap_or(""), self.dst)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "no remote `{0}` in the repository's git config; add it with `git remote add {0} URL`"
    )]
    NotConfigured(String),
    #[error("cannot run `git` (gov sync needs it installed): {0}")]
    NoGit(std::io::Error),
    #[error("{action} `{remote}` ({url}): {message}")]
    Git {
        action: &'static str,
        remote: String,
        url: String,
        message: String,
    },
    #[error("{action} `{remote}` ({url}): no answer within {seconds} s; git was stopped")]
    Timeout {
        action: &'static str,
        remote: String,
        url: String,
        seconds: u64,
    },
    #[error("pushing to `{remote}`: the remote refused {}", .refused.join("; "))]
    Refused {
        remote: String,
        refused: Vec<String>,
    },
    #[error(transparent)]
    Repo(#[from] git2::Error),
}

/// The remote-tracking name of `branch` fetched from `remote`.
pub fn tracking_ref(remote: &str, branch: &str) -> String {
    format!("refs/remotes/{remote}/{branch}")
}

/// The URL of `remote` as the repository's git config gives it, with
/// credentials taken out: fit to print and record.
pub fn remote_url(repo: &Repository, remote: &str) -> Result<String, RemoteError> {
    let r = repo
        .find_remote(remote)
        .map_err(|_| RemoteError::NotConfigured(remote.to_string()))?;
    Ok(redact_url(r.url().unwrap_or("")))
}

/// The ssh command git should use: the user's own (`GIT_SSH_COMMAND`, else
/// `core.sshCommand`, else `ssh`) with `BatchMode=yes`, so ssh fails instead
/// of asking for a password, a passphrase or a host key confirmation.
/// `None` when the user named a program through `GIT_SSH` (left alone).
fn batch_ssh_command(repo: &Repository) -> Option<String> {
    let base = match std::env::var("GIT_SSH_COMMAND") {
        Ok(c) if !c.trim().is_empty() => c,
        _ => {
            if std::env::var_os("GIT_SSH").is_some() {
                return None;
            }
            repo.config()
                .ok()
                .and_then(|c| c.get_string("core.sshCommand").ok())
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| "ssh".into())
        }
    };
    Some(format!("{base} -o BatchMode=yes"))
}

/// How one `git` command against a remote is run.
struct GitCall<'a> {
    repo: &'a Repository,
    remote: &'a str,
    url: String,
    timeout: Duration,
    action: &'static str,
}

/// What a `git` command said, with URLs in it redacted.
pub(crate) struct GitOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `git ARGS` on `repo` with nothing that could wait for a person
/// (no terminal prompt, ssh in batch mode, `input` or nothing on stdin) and
/// at most `timeout`: `None` when it ran out and the process group was
/// killed.
pub(crate) fn run_git(
    repo: &Repository,
    args: &[String],
    input: Option<&str>,
    timeout: Duration,
) -> std::io::Result<Option<GitOutput>> {
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir")
        .arg(repo.path())
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .env("LANGUAGE", "C")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ssh) = batch_ssh_command(repo) {
        cmd.env("GIT_SSH_COMMAND", ssh);
    }
    own_process_group(&mut cmd);
    let mut child = cmd.spawn()?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        // A child that exits without reading is not an error here: its
        // status says what happened.
        let _ = stdin.write_all(text.as_bytes());
    }
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let sup = Supervision::new(timeout, Duration::from_secs(2));
    let outcome = supervise(&mut child, &sup, &AtomicBool::new(false))?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if outcome.ending != Ending::Exited {
        return Ok(None);
    }
    Ok(Some(GitOutput {
        success: outcome.status.success(),
        stdout: redact_text(&stdout),
        stderr: redact_text(&stderr),
    }))
}

impl GitCall<'_> {
    fn new<'a>(
        repo: &'a Repository,
        remote: &'a str,
        timeout: Duration,
        action: &'static str,
    ) -> Result<GitCall<'a>, RemoteError> {
        let url = remote_url(repo, remote)?;
        Ok(GitCall {
            repo,
            remote,
            url,
            timeout,
            action,
        })
    }

    fn run(&self, args: &[String]) -> Result<GitOutput, RemoteError> {
        run_git(self.repo, args, None, self.timeout)
            .map_err(RemoteError::NoGit)?
            .ok_or_else(|| RemoteError::Timeout {
                action: self.action,
                remote: self.remote.to_string(),
                url: self.url.clone(),
                seconds: self.timeout.as_secs(),
            })
    }

    fn failed(&self, stderr: &str) -> RemoteError {
        let message = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        RemoteError::Git {
            action: self.action,
            remote: self.remote.to_string(),
            url: self.url.clone(),
            message: if message.is_empty() {
                "git failed without saying why".into()
            } else {
                message
            },
        }
    }
}

/// Fetches `branches` (exact names, those the remote has) and every branch
/// under `prefixes` (e.g. `gov/proposal/`) into remote-tracking refs,
/// pruning those the remote no longer has. The `+` on these refspecs only
/// lets the local remote-tracking refs follow the remote; nothing is ever
/// pushed with one.
pub fn fetch(
    repo: &Repository,
    remote: &str,
    branches: &[&str],
    prefixes: &[&str],
    timeout: Duration,
) -> Result<(), RemoteError> {
    // An exact refspec the remote lacks fails the whole fetch (a new,
    // empty remote has no `main`): ask which it has first.
    let call = GitCall::new(repo, remote, timeout, "fetching from")?;
    let listed = call.run(&["ls-remote".into(), "--heads".into(), remote.into()])?;
    if !listed.success {
        return Err(call.failed(&listed.stderr));
    }
    let heads: Vec<&str> = listed
        .stdout
        .lines()
        .filter_map(|l| l.split('\t').nth(1))
        .collect();
    let mut args: Vec<String> = [
        "fetch",
        "--quiet",
        "--no-tags",
        "--prune",
        "--no-write-fetch-head",
    ]
    .map(String::from)
    .to_vec();
    args.push(remote.to_string());
    for b in branches {
        let head = format!("refs/heads/{b}");
        if heads.contains(&head.as_str()) {
            args.push(format!("+{head}:{}", tracking_ref(remote, b)));
        } else if let Ok(mut stale) = repo.find_reference(&tracking_ref(remote, b)) {
            // Gone from the remote: so is its tracking ref.
            stale.delete()?;
        }
    }
    args.extend(
        prefixes
            .iter()
            .map(|p| format!("+refs/heads/{p}*:{}*", tracking_ref(remote, p))),
    );
    let out = call.run(&args)?;
    if !out.success {
        return Err(call.failed(&out.stderr));
    }
    Ok(())
}

/// Pushes `updates` (never forced), then moves the remote-tracking refs
/// of the updates the remote took. Every update the remote refuses is
/// named in the error.
pub fn push(
    repo: &Repository,
    remote: &str,
    updates: &[RefUpdate],
    timeout: Duration,
) -> Result<(), RemoteError> {
    if updates.is_empty() {
        return Ok(());
    }
    let call = GitCall::new(repo, remote, timeout, "pushing to")?;
    let mut args: Vec<String> = ["push", "--porcelain"].map(String::from).to_vec();
    args.push(remote.to_string());
    args.extend(updates.iter().map(RefUpdate::refspec));
    let out = call.run(&args)?;
    // `--porcelain`: one line per ref, `<flag>\t<from>:<to>\t<summary>`;
    // `!` is a refusal.
    let mut refused = Vec::new();
    let mut taken = Vec::new();
    for line in out.stdout.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(flag), Some(spec)) = (parts.next(), parts.next()) else {
            continue;
        };
        let summary = parts.next().unwrap_or("").trim();
        let dst = spec.rsplit(':').next().unwrap_or(spec);
        match flag {
            "!" => refused.push(format!("`{dst}` ({})", plain_summary(summary))),
            " " | "+" | "-" | "*" | "=" => taken.push(dst.to_string()),
            _ => {}
        }
    }
    for u in updates.iter().filter(|u| taken.contains(&u.dst)) {
        let Some(branch) = u.dst.strip_prefix("refs/heads/") else {
            continue;
        };
        let tracking = tracking_ref(remote, branch);
        match &u.src {
            Some(src) => {
                let oid = repo.refname_to_id(src)?;
                repo.reference(&tracking, oid, true, "gov sync: pushed")?;
            }
            None => {
                if let Ok(mut r) = repo.find_reference(&tracking) {
                    r.delete()?;
                }
            }
        }
    }
    if !refused.is_empty() {
        return Err(RemoteError::Refused {
            remote: remote.to_string(),
            refused,
        });
    }
    if !out.success {
        return Err(call.failed(&out.stderr));
    }
    Ok(())
}

/// git's `[rejected] (non-fast-forward)` as `rejected: non-fast-forward`.
fn plain_summary(summary: &str) -> String {
    let words: Vec<&str> = summary
        .split(['[', ']', '(', ')'])
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    words.join(": ")
}

/// How many commits `local` has that the remote-tracking `theirs` lacks
/// (all of `local`'s history when the remote has no such branch).
pub fn commits_ahead(
    repo: &Repository,
    local: Oid,
    theirs: Option<Oid>,
) -> Result<usize, git2::Error> {
    match theirs {
        Some(t) => Ok(repo.graph_ahead_behind(local, t)?.0),
        None => {
            let mut walk = repo.revwalk()?;
            walk.push(local)?;
            Ok(walk.count())
        }
    }
}

/// Whether moving a ref from `from` to `to` is a fast-forward (or no move).
pub fn is_fast_forward(repo: &Repository, from: Oid, to: Oid) -> Result<bool, git2::Error> {
    Ok(from == to || repo.graph_descendant_of(to, from)?)
}

/// Why `merge` is not exactly the merge of the submitted proposal commit
/// `submitted`, which adds `path` holding `content`; `None` when it is.
///
/// A forge merge of a proposal has two parents, `main` as it was and the
/// submitted commit itself (not a commit on top of it), and its tree is
/// the first parent's plus the proposal file, byte for byte as submitted,
/// plus what the submitted commit's own history changed since it left
/// `main` (for a `policy_change` proposal, the reviewed change gov
/// committed under it; for any other, nothing): nothing else changes, so
/// nothing (a policy, an agent, another file) can ride along with an
/// approval.
pub fn forge_merge_problem(
    repo: &Repository,
    merge: Oid,
    submitted: Oid,
    path: &str,
    content: &[u8],
) -> Result<Option<String>, git2::Error> {
    let commit = repo.find_commit(merge)?;
    if commit.parent_count() != 2 {
        return Ok(Some(format!(
            "it has {} parents; a forge merge has two (main and the proposal commit)",
            commit.parent_count()
        )));
    }
    let merged = commit.parent_id(1)?;
    if merged != submitted {
        return Ok(Some(format!(
            "it merges commit {}, not the submitted proposal commit {}",
            short(&merged),
            short(&submitted)
        )));
    }
    let fork = repo.merge_base(commit.parent_id(0)?, submitted)?;
    let reviewed = tree_changes(repo, fork, submitted)?;
    change_problem(repo, &commit, path, content, &reviewed)
}

/// What commit `to`'s tree changes against commit `from`'s: path → blob
/// (`None`: deleted).
fn tree_changes(
    repo: &Repository,
    from: Oid,
    to: Oid,
) -> Result<std::collections::BTreeMap<String, Option<Oid>>, git2::Error> {
    let (a, b) = (
        repo.find_commit(from)?.tree()?,
        repo.find_commit(to)?.tree()?,
    );
    Ok(super::tree::changed_files(repo, Some(&a), Some(&b))?
        .into_iter()
        .map(|c| {
            let id = c.new_id();
            (c.path, id)
        })
        .collect())
}

/// Why one-parent commit `commit` (a squash or a rebase merge of a
/// proposal's pull request, made by the forge) is not exactly `path`
/// holding `content` added to its parent; `None` when it is. A merge
/// commit, or anything else touched, is a problem.
pub fn squash_merge_problem(
    repo: &Repository,
    commit: Oid,
    path: &str,
    content: &[u8],
) -> Result<Option<String>, git2::Error> {
    let commit = repo.find_commit(commit)?;
    if commit.parent_count() != 1 {
        return Ok(Some(format!(
            "it has {} parents; a squash or rebase merge has one",
            commit.parent_count()
        )));
    }
    change_problem(repo, &commit, path, content, &Default::default())
}

/// Why `commit`'s tree is not its first parent's plus `path` holding
/// `content` (byte for byte) and the `reviewed` changes (each exactly),
/// and nothing else.
fn change_problem(
    repo: &Repository,
    commit: &git2::Commit<'_>,
    path: &str,
    content: &[u8],
    reviewed: &std::collections::BTreeMap<String, Option<Oid>>,
) -> Result<Option<String>, git2::Error> {
    let base = commit.parent(0)?.tree()?;
    let changes = super::tree::changed_files(repo, Some(&base), Some(&commit.tree()?))?;
    let want = Oid::hash_object(git2::ObjectType::Blob, content)?;
    let mut file_ok = false;
    let mut others: Vec<String> = Vec::new();
    for change in changes {
        let now = change.new_id();
        let name = change.path;
        if name == path && now == Some(want) {
            file_ok = true;
        } else if name != path && reviewed.get(&name) != Some(&now) {
            others.push(format!("`{name}`"));
        }
    }
    if !others.is_empty() {
        return Ok(Some(format!(
            "besides `{path}` it also changes {}",
            others.join(", ")
        )));
    }
    if !file_ok {
        return Ok(Some(format!(
            "`{path}` in the merge is not the proposal as submitted"
        )));
    }
    Ok(None)
}

fn short(oid: &Oid) -> String {
    let s = oid.to_string();
    s.get(..12).unwrap_or(&s).to_string()
}

/// Replaces the file at `path` with `bytes` (a new file renamed over the
/// old one, so a reader never sees half of it).
pub fn write_state(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The file at `path`, if it can be read.
pub fn read_state(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}
