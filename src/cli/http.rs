//! A small blocking HTTP client for the commands that talk to a running
//! `gov serve` on 127.0.0.1 with the operator's token.

use std::time::Duration;

use serde_json::Value;

use super::{ExitCode, Failure};
use crate::config::Settings;

/// A client for the server on the configured port.
#[derive(Debug)]
pub struct Client {
    base: String,
    /// Whether a server of this repository is known to run: `GOV_URL` is
    /// set, or `.gov/server.json` names a live process.
    known: bool,
    token: Option<String>,
    agent: ureq::Agent,
}

/// What came back: the status and the JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Client {
    pub fn new(settings: &Settings) -> Client {
        let token = crate::app::tokens::read(&settings.operator_token_path())
            .ok()
            .flatten()
            .map(|s| s.expose().to_string());
        let env_url = std::env::var("GOV_URL").ok().filter(|u| !u.is_empty());
        let recorded = super::server_record::live(settings).map(|r| r.url);
        let known = env_url.is_some() || recorded.is_some();
        let base = env_url
            .or(recorded)
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", settings.port));
        Client {
            base: base.trim_end_matches('/').to_string(),
            known,
            token,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_millis(500))
                .timeout(Duration::from_secs(30))
                .build(),
        }
    }

    /// A client for a server the user named by its port: it is taken to be
    /// running.
    pub fn at_port(settings: &Settings, port: u16) -> Client {
        let mut c = Client::new(settings);
        c.base = format!("http://127.0.0.1:{port}");
        c.known = true;
        c
    }

    /// Fails with a plain message when no server of this repository runs.
    pub fn require_server(&self) -> Result<(), Failure> {
        if self.known {
            Ok(())
        } else {
            Err(Failure::new(
                ExitCode::Failure,
                "no gov server of this repository is running (`.gov/server.json` names no live process); start one with `gov serve`",
            ))
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether the server of this repository runs and answers.
    pub fn is_up(&self) -> bool {
        self.known && matches!(self.get("/status"), Ok(r) if r.status == 200)
    }

    fn send(&self, req: ureq::Request, body: Option<&Value>) -> Result<Reply, Failure> {
        let req = match &self.token {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        };
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => {
                return Err(Failure::new(
                    ExitCode::Failure,
                    format!("no gov server answers at {}: {e}", self.base),
                ))
            }
        };
        let status = resp.status();
        let body = resp.into_json::<Value>().unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    pub fn get(&self, path: &str) -> Result<Reply, Failure> {
        self.send(self.agent.get(&format!("{}{path}", self.base)), None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Reply, Failure> {
        self.send(self.agent.post(&format!("{}{path}", self.base)), Some(body))
    }
}

/// The message of an error reply (`{"detail": ...}`).
pub fn detail(body: &Value) -> String {
    match body.get("detail") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| Value::Object(o.clone()).to_string()),
        Some(other) => other.to_string(),
        None => body.to_string(),
    }
}
