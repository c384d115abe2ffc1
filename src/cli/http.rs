//! How the operator's commands talk to this repository's running
//! `gov serve`: the server is found through `.gov/server.json` (or
//! `GOV_URL`), the operator's token is sent, and every answer comes back
//! as a status and a JSON body. Transport is `crate::client`.

use std::time::Duration;

use serde_json::Value;

use super::{ExitCode, Failure};
use crate::client::{Timeouts, Token};
use crate::config::Settings;
use crate::wire::{ErrorReply, RunSkipped};

/// Where this repository's server is: `GOV_URL`, else the URL
/// `.gov/server.json` names (when its process lives), else `[server] port`
/// on 127.0.0.1; and whether it is known to run (one of the first two).
fn locate(settings: &Settings) -> (String, bool) {
    let env_url = std::env::var("GOV_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    let recorded = super::server_record::live(settings).map(|r| r.url);
    let known = env_url.is_some() || recorded.is_some();
    let base = crate::client::server_url(env_url.or(recorded), settings.port);
    tracing::debug!(url = %base, running = known, "this repository's server");
    (base, known)
}

/// The base URL of this repository's server (see [`locate`]).
pub fn server_base(settings: &Settings) -> String {
    locate(settings).0
}

/// A client for this repository's server, with the operator's token.
#[derive(Debug)]
pub struct Client {
    inner: crate::client::Client,
    /// Whether a server of this repository is known to run: `GOV_URL` is
    /// set, or `.gov/server.json` names a live process.
    known: bool,
}

/// What came back: the status and the JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Client {
    pub fn new(settings: &Settings) -> Client {
        let (base, known) = locate(settings);
        Client::with_base(settings, &base, known)
    }

    /// A client for a server the user named by its port: it is taken to be
    /// running.
    pub fn at_port(settings: &Settings, port: u16) -> Client {
        Client::with_base(settings, &format!("http://127.0.0.1:{port}"), true)
    }

    fn with_base(settings: &Settings, base: &str, known: bool) -> Client {
        let token = crate::app::tokens::read(&settings.operator_token_path())
            .ok()
            .flatten()
            .map(|s| Token::new(s.expose()))
            .unwrap_or_else(|| Token::new(""));
        let timeouts = Timeouts {
            connect: Duration::from_millis(500),
            total: Duration::from_secs(30),
        };
        Client {
            inner: crate::client::Client::new(base, token, timeouts),
            known,
        }
    }

    /// Fails with a plain message when no server of this repository runs.
    pub fn require_server(&self) -> Result<(), Failure> {
        if self.known {
            Ok(())
        } else {
            Err(Failure::new(
                ExitCode::Unreachable,
                "no gov server of this repository is running (`.gov/server.json` names no live process); start one with `gov serve`",
            ))
        }
    }

    pub fn base(&self) -> &str {
        self.inner.base_url()
    }

    /// Whether the server of this repository runs and answers (whatever it
    /// answers: a server that refuses the operator's token is up, and the
    /// command must fail, not go around it).
    pub fn is_up(&self) -> bool {
        self.known && self.get("/status").is_ok()
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply, Failure> {
        let (status, body) = self.inner.exchange(method, path, body).map_err(|e| {
            Failure::new(
                ExitCode::Unreachable,
                format!("no gov server answers at {}: {e}", self.base()),
            )
        })?;
        Ok(Reply { status, body })
    }

    pub fn get(&self, path: &str) -> Result<Reply, Failure> {
        self.send("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &impl serde::Serialize) -> Result<Reply, Failure> {
        let body = serde_json::to_value(body).map_err(|e| {
            Failure::new(ExitCode::Failure, format!("cannot write the request: {e}"))
        })?;
        self.send("POST", path, Some(&body))
    }
}

impl Reply {
    /// The body of a 200 answer; any other answer is a failure with the
    /// server's message and the exit code its status means.
    pub fn ok(self) -> Result<Value, Failure> {
        if self.status == 200 {
            return Ok(self.body);
        }
        let (error, text) = self.error();
        let code = ExitCode::of_reply(self.status, error.as_deref());
        let message = if self.status == 401 {
            format!("the server refused the operator token in `.gov/operator-token`: {text}")
        } else {
            text
        };
        Err(Failure::new(code, message))
    }

    /// The body of a 200 answer as its type from [`crate::wire`].
    pub fn ok_as<T: serde::de::DeserializeOwned>(self) -> Result<T, Failure> {
        let body = self.ok()?;
        serde_json::from_value(body).map_err(|e| {
            Failure::new(
                ExitCode::Failure,
                format!("the server sent an answer that is not what was expected: {e}"),
            )
        })
    }
}

impl Reply {
    /// An error reply's code (`forbidden_by_policy`, `continue_denied`, …)
    /// and its message, read as its type from [`crate::wire`]: a refused
    /// run (423) is a `RunSkipped`, any other an `ErrorReply`.
    fn error(&self) -> (Option<String>, String) {
        if self.status == 423 {
            if let Ok(s) = serde_json::from_value::<RunSkipped>(self.body.clone()) {
                return (Some(s.error), s.detail);
            }
        }
        match serde_json::from_value::<ErrorReply>(self.body.clone()) {
            Ok(r) => (r.error().map(str::to_string), r.text()),
            Err(_) => (None, self.body.to_string()),
        }
    }
}
