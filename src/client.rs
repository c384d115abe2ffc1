//! A small blocking HTTP client for gov's own JSON API: a base URL, a bearer
//! token, JSON in and out, short timeouts, and typed errors that let callers
//! tell "the server is not there" from "the server said no".
//!
//! Used by `gov run` (runner token) and `gov hook pre-tool-use` (agent token).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A bearer token. Its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Self {
        Token(secret.into().trim().to_string())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the gov server at `{url}`: {message}")]
    Unreachable { url: String, message: String },
    #[error("the gov server at `{url}` did not answer in time")]
    Timeout { url: String },
    #[error("the gov server answered {code}: {body}")]
    Status { code: u16, body: String },
    #[error("the gov server sent an answer that is not what was expected: {message}")]
    Malformed { message: String },
}

impl ClientError {
    /// The status and body of a non-2xx answer, read as its type from
    /// [`crate::wire`] (`ErrorReply`, or `RunSkipped` for a refused run),
    /// when it is one.
    pub fn reply_as<T: DeserializeOwned>(&self) -> Option<(u16, T)> {
        match self {
            ClientError::Status { code, body } => {
                serde_json::from_str(body).ok().map(|v| (*code, v))
            }
            _ => None,
        }
    }
}

/// Timeouts for one client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            total: Duration::from_secs(10),
        }
    }
}

/// A client bound to one server and one token.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Token,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base_url: &str, token: Token, timeouts: Timeouts) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeouts.connect)
            .timeout(timeouts.total)
            .redirects(0)
            .build();
        Client {
            base: base_url.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn post_json<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        let url = self.url(path);
        let result = self
            .agent
            .post(&url)
            .set("Authorization", &format!("Bearer {}", self.token.expose()))
            .set("Accept", "application/json")
            .send_json(body);
        read_answer(&url, result)
    }

    /// Sends a request and returns the status and JSON body (`Null` when
    /// the body is not JSON) of any HTTP answer, 2xx or not; only a server
    /// that cannot be reached or does not answer in time is an error.
    pub fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let url = self.url(path);
        let mut req = self
            .agent
            .request(method, &url)
            .set("Accept", "application/json");
        if !self.token.is_empty() {
            req = req.set("Authorization", &format!("Bearer {}", self.token.expose()));
        }
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(transport_error(&url, &t)),
        };
        let status = resp.status();
        let text = resp.into_string().map_err(|e| io_error(&url, &e))?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        ))
    }

    pub fn get_json<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        let url = self.url(path);
        let result = self
            .agent
            .get(&url)
            .set("Authorization", &format!("Bearer {}", self.token.expose()))
            .set("Accept", "application/json")
            .call();
        read_answer(&url, result)
    }
}

fn read_answer<R: DeserializeOwned>(
    url: &str,
    result: Result<ureq::Response, ureq::Error>,
) -> Result<R, ClientError> {
    match result {
        Ok(resp) => {
            let text = resp.into_string().map_err(|e| io_error(url, &e))?;
            serde_json::from_str(&text).map_err(|e| ClientError::Malformed {
                message: e.to_string(),
            })
        }
        Err(ureq::Error::Status(code, resp)) => {
            let body = resp.into_string().unwrap_or_default();
            Err(ClientError::Status { code, body })
        }
        Err(ureq::Error::Transport(t)) => Err(transport_error(url, &t)),
    }
}

fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

fn io_error(url: &str, e: &std::io::Error) -> ClientError {
    if is_timeout(e) {
        ClientError::Timeout {
            url: url.to_string(),
        }
    } else {
        ClientError::Unreachable {
            url: url.to_string(),
            message: e.to_string(),
        }
    }
}

fn transport_error(url: &str, t: &ureq::Transport) -> ClientError {
    if is_timeout(t) {
        return ClientError::Timeout {
            url: url.to_string(),
        };
    }
    let message = match (t.message(), std::error::Error::source(t)) {
        (Some(m), Some(s)) => format!("{m}: {s}"),
        (Some(m), None) => m.to_string(),
        (None, Some(s)) => s.to_string(),
        (None, None) => t.kind().to_string(),
    };
    ClientError::Unreachable {
        url: url.to_string(),
        message,
    }
}

/// The base URL of the gov server: `GOV_URL` when set, else
/// `http://127.0.0.1:<port>`.
pub fn server_url(env_url: Option<String>, port: u16) -> String {
    match env_url.filter(|u| !u.trim().is_empty()) {
        Some(u) => u.trim().trim_end_matches('/').to_string(),
        None => format!("http://127.0.0.1:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_is_redacted() {
        let t = Token::new("s3cret\n");
        assert_eq!(t.expose(), "s3cret");
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn url_from_env_or_port() {
        assert_eq!(server_url(None, 8005), "http://127.0.0.1:8005");
        assert_eq!(server_url(Some("".into()), 1), "http://127.0.0.1:1");
        assert_eq!(server_url(Some("http://h:9/".into()), 1), "http://h:9");
    }

    #[test]
    fn nothing_listening_is_unreachable() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let c = Client::new(
            &server_url(None, port),
            Token::new("t"),
            Timeouts::default(),
        );
        let err = c
            .get_json::<serde_json::Value>("/status")
            .expect_err("nothing listens");
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    }
}
