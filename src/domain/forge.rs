//! What gov says to and hears from a forge (GitHub and the forges that copy
//! its API), as plain values:
//!
//! - [`redact_url`] and [`redact_text`]: credentials never leave in a URL
//!   that is printed, logged or recorded;
//! - [`PullRequestEvent`]: the parts of a signed `pull_request` webhook that
//!   name who merged a pull request and the commit the merge made, and
//!   [`MergeEvidence`], what gov records of it;
//! - [`pull_request_text`]: the title and body of a proposal's pull request.

use serde::{Deserialize, Serialize};

use super::proposal::Proposal;

/// `url` with any credentials replaced by `***`: for `http`/`https` the
/// whole user part (a token is often given as the user name), for other
/// schemes the password after `user:`. A URL without `://` (a path, or
/// scp-like `git@host:repo`) carries no password and is returned as is.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let scheme = &url[..scheme_end];
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let user = &authority[..at];
    let host_and_path = &rest[at..];
    let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    let user = if web {
        "***".to_string()
    } else {
        match user.split_once(':') {
            Some((name, _)) => format!("{name}:***"),
            None => user.to_string(),
        }
    };
    format!("{scheme}://{user}{host_and_path}")
}

/// `text` (for example what `git` wrote on stderr) with every URL in it
/// passed through [`redact_url`].
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let start = rest[..pos]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[pos..]
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '<' | '>'))
            .map_or(rest.len(), |i| pos + i);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A forge user, as GitHub's payloads name one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeUser {
    pub login: String,
}

/// One end of a pull request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestRef {
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub sha: String,
}

/// The parts of GitHub's pull request object gov reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub merged: bool,
    #[serde(default)]
    pub merge_commit_sha: Option<String>,
    #[serde(default)]
    pub merged_by: Option<ForgeUser>,
    pub head: PullRequestRef,
    pub base: PullRequestRef,
    #[serde(default)]
    pub html_url: Option<String>,
}

/// A `pull_request` webhook delivery (`X-GitHub-Event: pull_request`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestEvent {
    pub action: String,
    pub pull_request: PullRequest,
    #[serde(default)]
    pub sender: Option<ForgeUser>,
}

/// What a signed webhook says about a merged pull request: who merged it
/// and which commit on the base branch the merge made. Recorded in the
/// audit chain (`forge_merge_reported`) and copied into the approval it
/// supports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeEvidence {
    pub pull_request: u64,
    pub head_ref: String,
    pub head_sha: String,
    pub base_ref: String,
    pub merge_commit: String,
    /// The forge login of the person who merged (`merged_by`, else the
    /// event's `sender`).
    pub merged_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Why a pull request event is not evidence of a merge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// Not a merge (another action, or closed without merging): nothing to
    /// record, and not an error for the caller.
    #[error("not a merge: action `{0}`")]
    NotAMerge(String),
    #[error("`{field}` {problem}")]
    Field {
        field: &'static str,
        problem: &'static str,
    },
}

fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl PullRequestEvent {
    /// The evidence this event gives, when it reports a merge.
    pub fn merge_evidence(&self) -> Result<MergeEvidence, EvidenceError> {
        let pr = &self.pull_request;
        if self.action != "closed" || !pr.merged {
            return Err(EvidenceError::NotAMerge(self.action.clone()));
        }
        let merge_commit = pr
            .merge_commit_sha
            .clone()
            .filter(|s| is_commit_id(s))
            .ok_or(EvidenceError::Field {
                field: "pull_request.merge_commit_sha",
                problem: "must be a 40-digit commit id for a merged pull request",
            })?;
        if !is_commit_id(&pr.head.sha) {
            return Err(EvidenceError::Field {
                field: "pull_request.head.sha",
                problem: "must be a 40-digit commit id",
            });
        }
        let merged_by = pr
            .merged_by
            .as_ref()
            .or(self.sender.as_ref())
            .map(|u| u.login.clone())
            .filter(|l| !l.is_empty())
            .ok_or(EvidenceError::Field {
                field: "pull_request.merged_by.login",
                problem: "is missing (and so is `sender.login`)",
            })?;
        Ok(MergeEvidence {
            pull_request: pr.number,
            head_ref: pr.head.ref_name.clone(),
            head_sha: pr.head.sha.to_lowercase(),
            base_ref: pr.base.ref_name.clone(),
            merge_commit: merge_commit.to_lowercase(),
            merged_by,
            url: pr.html_url.clone(),
        })
    }
}

impl MergeEvidence {
    /// The approver gov records for this merge: `forge:@<login>`.
    pub fn approver(&self) -> String {
        format!("forge:@{}", self.merged_by)
    }
}

/// The title and the Markdown body of proposal `p`'s pull request; `link`
/// points back at the proposal's page on the dashboard.
pub fn pull_request_text(p: &Proposal, link: &str) -> (String, String) {
    let title = format!(
        "gov: `{}` by `{}` ({})",
        p.proposed.action_type, p.proposed.agent_id, p.proposal_id
    );
    let mut body = String::new();
    body.push_str(&format!(
        "Proposal `{}` from agent `{}` asks to run `{}`. Merging this pull request approves it; gov checks that the merge adds exactly `{}` as submitted.\n\n",
        p.proposal_id,
        p.proposed.agent_id,
        p.proposed.action_type,
        p.file_path()
    ));
    body.push_str(&format!(
        "- expected cost: {} tokens, ${:.6}\n",
        p.proposed.expected_cost_tokens, p.proposed.expected_cost_dollars
    ));
    body.push_str(&format!("- expires at: {}\n", p.expires_at.0.to_rfc3339()));
    body.push_str(&format!("- reversible: {}\n", p.proposed.reversible));
    body.push_str(&format!("- payload hash: `{}`\n", p.payload_hash));
    if !p.proposed.expected_outcome.is_empty() {
        body.push_str(&format!(
            "- expected outcome: {}\n",
            p.proposed.expected_outcome
        ));
    }
    if !p.proposed.rationale.is_empty() {
        body.push_str(&format!("- rationale: {}\n", p.proposed.rationale));
    }
    body.push_str("\n### Why it needs a person\n\n");
    let needing: Vec<_> = p
        .policies
        .iter()
        .filter(|c| c.effect.as_deref() != Some("permit"))
        .collect();
    if needing.is_empty() {
        body.push_str("No policy lets it go ahead without a person.\n");
    }
    for c in needing {
        body.push_str(&format!("- `{}`: {}\n", c.id, c.reason));
    }
    let payload = serde_json::to_string_pretty(&p.proposed.payload).unwrap_or_else(|_| "{}".into());
    body.push_str(&format!("\n### Payload\n\n```json\n{payload}\n```\n"));
    body.push_str(&format!("\n[The proposal on the gov dashboard]({link})\n"));
    (title, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_out_of_urls() {
        assert_eq!(
            redact_url("https://alice:ghp_secret@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(
            redact_url("https://ghp_secret@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(
            redact_url("ssh://git:hunter2@example.com:2222/r.git"),
            "ssh://git:***@example.com:2222/r.git"
        );
        assert_eq!(
            redact_url("ssh://git@example.com/r.git"),
            "ssh://git@example.com/r.git"
        );
        assert_eq!(
            redact_url("https://github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(
            redact_url("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
        assert_eq!(redact_url("/srv/gov.git"), "/srv/gov.git");
        // An `@` in the path is not a user part.
        assert_eq!(
            redact_url("https://example.com/a@b"),
            "https://example.com/a@b"
        );
    }

    #[test]
    fn urls_inside_messages_are_redacted() {
        let said = "fatal: unable to access 'https://bob:tok3n@example.com/r.git/': Could not resolve host\nremote: see https://x:y@h/p";
        let clean = redact_text(said);
        assert!(!clean.contains("tok3n"), "{clean}");
        assert!(!clean.contains(":y@"), "{clean}");
        assert_eq!(
            clean,
            "fatal: unable to access 'https://***@example.com/r.git/': Could not resolve host\nremote: see https://***@h/p"
        );
        assert_eq!(redact_text("no url here"), "no url here");
    }

    fn event(action: &str, merged: bool) -> serde_json::Value {
        serde_json::json!({
            "action": action,
            "number": 7,
            "pull_request": {
                "number": 7,
                "state": "closed",
                "merged": merged,
                "merge_commit_sha": "a".repeat(40),
                "merged_by": {"login": "alice"},
                "head": {"ref": "gov/proposal/p-1", "sha": "B".repeat(40)},
                "base": {"ref": "main", "sha": "c".repeat(40)},
                "html_url": "https://github.com/o/r/pull/7"
            },
            "sender": {"login": "bob"}
        })
    }

    #[test]
    fn a_merged_pull_request_names_its_merger_and_merge_commit() -> Result<(), String> {
        let e: PullRequestEvent =
            serde_json::from_value(event("closed", true)).map_err(|e| e.to_string())?;
        let ev = e.merge_evidence().map_err(|e| e.to_string())?;
        assert_eq!(ev.merged_by, "alice");
        assert_eq!(ev.approver(), "forge:@alice");
        assert_eq!(ev.merge_commit, "a".repeat(40));
        assert_eq!(ev.head_sha, "b".repeat(40));
        assert_eq!(ev.head_ref, "gov/proposal/p-1");
        assert_eq!(ev.pull_request, 7);

        let e: PullRequestEvent =
            serde_json::from_value(event("closed", false)).map_err(|e| e.to_string())?;
        assert_eq!(
            e.merge_evidence(),
            Err(EvidenceError::NotAMerge("closed".into()))
        );
        let e: PullRequestEvent =
            serde_json::from_value(event("opened", true)).map_err(|e| e.to_string())?;
        assert!(matches!(
            e.merge_evidence(),
            Err(EvidenceError::NotAMerge(_))
        ));

        let mut v = event("closed", true);
        v["pull_request"]["merge_commit_sha"] = serde_json::json!("abc");
        let e: PullRequestEvent = serde_json::from_value(v).map_err(|e| e.to_string())?;
        assert_eq!(
            e.merge_evidence().map_err(|e| e.to_string()),
            Err("`pull_request.merge_commit_sha` must be a 40-digit commit id for a merged pull request".into())
        );

        // No merged_by: the sender merged.
        let mut v = event("closed", true);
        v["pull_request"]["merged_by"] = serde_json::Value::Null;
        let e: PullRequestEvent = serde_json::from_value(v).map_err(|e| e.to_string())?;
        assert_eq!(
            e.merge_evidence().map(|ev| ev.merged_by),
            Ok("bob".to_string())
        );
        Ok(())
    }
}
