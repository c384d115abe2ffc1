//! The forge's REST API (GitHub's, and any forge that serves the same
//! requests): opening, labelling, finding and closing a proposal's pull
//! request.
//!
//! The requests, as GitHub documents them:
//! - `GET  /repos/{owner}/{repo}/pulls?state=all&head={owner}:{branch}`
//! - `POST /repos/{owner}/{repo}/pulls` `{title, body, head, base}`
//! - `POST /repos/{owner}/{repo}/issues/{number}/labels` `{labels}`
//! - `POST /repos/{owner}/{repo}/issues/{number}/comments` `{body}`
//! - `PATCH /repos/{owner}/{repo}/pulls/{number}` `{state: "closed"}`
//!
//! The token comes from the environment variable `[remote.forge]
//! token_env` names, else from `git credential fill` for the API's host;
//! never from `gov.toml`. It is sent as `Authorization: Bearer` and never
//! printed: what the forge answers is passed through
//! [`redact_text`](crate::domain::forge::redact_text).

use std::time::Duration;

use git2::Repository;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::ForgeSettings;
use crate::domain::forge::redact_text;

use super::remote::run_git;

/// A token for the forge's API; its `Debug` does not show it.
pub struct ForgeToken(String);

impl std::fmt::Debug for ForgeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForgeToken(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("no forge token: set `{env}` or store one for `{host}` in a git credential helper")]
    NoToken { env: String, host: String },
    #[error("{what}: the forge answered {status}: {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what}: cannot reach the forge: {message}")]
    Transport { what: String, message: String },
    #[error("{what}: the forge's answer is not what its API documents: {message}")]
    Answer { what: String, message: String },
}

/// A pull request as the API returns it (the fields gov reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullSummary {
    pub number: u64,
    pub state: String,
    #[serde(default)]
    pub html_url: Option<String>,
}

/// The host part of an `http(s)://host[:port]/…` URL.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// The forge token: the environment variable first, then `git credential
/// fill` (which asks the user's credential helpers, and never prompts).
pub fn token(
    settings: &ForgeSettings,
    repo: &Repository,
    timeout: Duration,
) -> Result<ForgeToken, ForgeError> {
    if let Ok(t) = std::env::var(&settings.token_env) {
        if !t.trim().is_empty() {
            return Ok(ForgeToken(t.trim().to_string()));
        }
    }
    let host = host_of(&settings.api_url).to_string();
    let protocol = settings.api_url.split("://").next().unwrap_or("https");
    let input = format!("protocol={protocol}\nhost={host}\n\n");
    let no_token = || ForgeError::NoToken {
        env: settings.token_env.clone(),
        host: host.clone(),
    };
    let out = run_git(
        repo,
        &["credential".into(), "fill".into()],
        Some(&input),
        timeout,
    )
    .ok()
    .flatten()
    .filter(|o| o.success)
    .ok_or_else(no_token)?;
    // Read from the raw answer's lines; the password is never logged.
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .filter(|p| !p.is_empty())
        .map(|p| ForgeToken(p.to_string()))
        .ok_or_else(no_token)
}

/// One forge repository's API.
pub struct ForgeApi {
    agent: ureq::Agent,
    repo_url: String,
    owner: String,
    token: ForgeToken,
}

impl ForgeApi {
    pub fn new(settings: &ForgeSettings, token: ForgeToken, timeout: Duration) -> ForgeApi {
        let agent = ureq::AgentBuilder::new()
            .timeout(timeout)
            .user_agent(concat!("gov/", env!("CARGO_PKG_VERSION")))
            .build();
        ForgeApi {
            agent,
            repo_url: format!(
                "{}/repos/{}/{}",
                settings.api_url, settings.owner, settings.repo
            ),
            owner: settings.owner.clone(),
            token,
        }
    }

    fn call(
        &self,
        what: String,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ForgeError> {
        let req = self
            .agent
            .request(method, &format!("{}{path}", self.repo_url))
            .set("Accept", "application/vnd.github+json")
            .set("X-GitHub-Api-Version", "2022-11-28")
            .set("Authorization", &format!("Bearer {}", self.token.0));
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(status, r)) => {
                let text = r.into_string().unwrap_or_default();
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or(text);
                return Err(ForgeError::Status {
                    what,
                    status,
                    message: redact_text(&message),
                });
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(ForgeError::Transport {
                    what,
                    message: redact_text(&t.to_string()),
                })
            }
        };
        let text = resp.into_string().map_err(|e| ForgeError::Answer {
            what: what.clone(),
            message: e.to_string(),
        })?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ForgeError::Answer {
            what,
            message: e.to_string(),
        })
    }

    fn summary(what: String, v: Value) -> Result<PullSummary, ForgeError> {
        serde_json::from_value(v).map_err(|e| ForgeError::Answer {
            what,
            message: e.to_string(),
        })
    }

    /// The pull request (open or closed) from `branch`, if there is one:
    /// so a sync that died after opening one does not open a second.
    pub fn find_pull(&self, branch: &str) -> Result<Option<PullSummary>, ForgeError> {
        let what = format!("looking for the pull request of `{branch}`");
        let head = format!("{}:{branch}", self.owner);
        let v = self.call(
            what.clone(),
            "GET",
            &format!("/pulls?state=all&head={}", query_escape(&head)),
            None,
        )?;
        let list: Vec<PullSummary> = serde_json::from_value(v).map_err(|e| ForgeError::Answer {
            what,
            message: e.to_string(),
        })?;
        Ok(list.into_iter().next())
    }

    /// Opens a pull request from `head` into `base`.
    pub fn open_pull(
        &self,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullSummary, ForgeError> {
        let what = format!("opening a pull request for `{head}`");
        let v = self.call(
            what.clone(),
            "POST",
            "/pulls",
            Some(json!({"title": title, "body": body, "head": head, "base": base})),
        )?;
        Self::summary(what, v)
    }

    /// Adds `labels` to pull request `number`.
    pub fn label(&self, number: u64, labels: &[String]) -> Result<(), ForgeError> {
        if labels.is_empty() {
            return Ok(());
        }
        self.call(
            format!("labelling pull request #{number}"),
            "POST",
            &format!("/issues/{number}/labels"),
            Some(json!({ "labels": labels })),
        )?;
        Ok(())
    }

    /// Says why, then closes pull request `number`.
    pub fn close_pull(&self, number: u64, why: &str) -> Result<PullSummary, ForgeError> {
        self.call(
            format!("commenting on pull request #{number}"),
            "POST",
            &format!("/issues/{number}/comments"),
            Some(json!({ "body": why })),
        )?;
        let what = format!("closing pull request #{number}");
        let v = self.call(
            what.clone(),
            "PATCH",
            &format!("/pulls/{number}"),
            Some(json!({"state": "closed"})),
        )?;
        Self::summary(what, v)
    }
}

/// Percent-encodes what a query value may not hold as is.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_query_values() {
        assert_eq!(host_of("https://api.github.com"), "api.github.com");
        assert_eq!(host_of("http://127.0.0.1:4000/api/v3"), "127.0.0.1:4000");
        assert_eq!(query_escape("o:gov/proposal/p 1"), "o:gov/proposal/p%201");
        assert_eq!(
            format!("{:?}", ForgeToken("s3cret".into())),
            "ForgeToken(***)"
        );
    }
}
