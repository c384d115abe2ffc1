//! Dashboard access: one-time login codes, server-side sessions, CSRF tokens.
//!
//! `gov serve` (or `gov dashboard-link`) mints a login code; opening
//! `/login?code=…` redeems it (once, within [`CODE_TTL`]) for a session
//! whose random id goes into an `HttpOnly; SameSite=Strict` cookie. Each
//! session has its own CSRF token that every state-changing form carries.
//! Codes and session ids are stored hashed, in memory only: restarting the
//! server ends every session. The clock is passed in, so tests control it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssh_key::rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;

use super::views::{Flash, VerifyView};

/// How long a login code may wait to be used.
pub const CODE_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a session lives without being used.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 60 * 60);
/// At most this many unused codes are kept; minting more drops the oldest.
const MAX_CODES: usize = 32;
/// At most this many sessions are kept; a new one drops the least recently used.
const MAX_SESSIONS: usize = 64;

/// The name of the session cookie.
pub const COOKIE: &str = "gov_session";

/// A secret string (login code, session id, CSRF token) that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    fn random() -> Secret {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Secret(hex::encode(bytes))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

type Digest32 = [u8; 32];

fn digest(s: &str) -> Digest32 {
    Sha256::digest(s.as_bytes()).into()
}

struct Session {
    csrf: Secret,
    last_used: Instant,
    flash: Option<Flash>,
    verify: Option<VerifyView>,
}

#[derive(Default)]
struct Inner {
    /// Code digest → when it stops working.
    codes: HashMap<Digest32, Instant>,
    sessions: HashMap<Digest32, Session>,
}

/// A session that was just opened: the cookie value to set.
#[derive(Debug)]
pub struct Opened {
    pub cookie: Secret,
}

/// What a request with a valid session may read of it.
#[derive(Debug, Clone)]
pub struct Current {
    key: Digest32,
    pub csrf: Secret,
}

impl Current {
    /// Whether a form's token is this session's (in constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        bool::from(self.csrf.0.as_bytes().ct_eq(token.as_bytes()))
    }
}

/// Every login code and session of one server.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions(…)")
    }
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the maps consistent (every
        // update is a single insert or remove), so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh one-time login code, valid for [`CODE_TTL`].
    pub fn mint_code(&self, now: Instant) -> Secret {
        let code = Secret::random();
        let mut inner = self.lock();
        inner.codes.retain(|_, until| *until > now);
        while inner.codes.len() >= MAX_CODES {
            let oldest = inner
                .codes
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => inner.codes.remove(&k),
                None => break,
            };
        }
        inner.codes.insert(digest(&code.0), now + CODE_TTL);
        code
    }

    /// Redeems a login code for a new session. A code works once, and only
    /// before it expires.
    pub fn redeem(&self, code: &str, now: Instant) -> Option<Opened> {
        let mut inner = self.lock();
        let until = inner.codes.remove(&digest(code))?;
        if until <= now {
            return None;
        }
        inner
            .sessions
            .retain(|_, s| now.duration_since(s.last_used) < SESSION_IDLE);
        while inner.sessions.len() >= MAX_SESSIONS {
            let oldest = inner
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => inner.sessions.remove(&k),
                None => break,
            };
        }
        let cookie = Secret::random();
        inner.sessions.insert(
            digest(&cookie.0),
            Session {
                csrf: Secret::random(),
                last_used: now,
                flash: None,
                verify: None,
            },
        );
        Some(Opened { cookie })
    }

    /// The session a cookie names, if it is open; using it keeps it open.
    pub fn current(&self, cookie: &str, now: Instant) -> Option<Current> {
        let key = digest(cookie);
        let mut inner = self.lock();
        let session = inner.sessions.get_mut(&key)?;
        if now.duration_since(session.last_used) >= SESSION_IDLE {
            inner.sessions.remove(&key);
            return None;
        }
        session.last_used = now;
        Some(Current {
            key,
            csrf: session.csrf.clone(),
        })
    }

    /// Ends a session.
    pub fn close(&self, current: &Current) {
        self.lock().sessions.remove(&current.key);
    }

    /// Leaves a message for the session's next page.
    pub fn set_flash(&self, current: &Current, flash: Flash) {
        if let Some(s) = self.lock().sessions.get_mut(&current.key) {
            s.flash = Some(flash);
        }
    }

    /// The message left for this page, once.
    pub fn take_flash(&self, current: &Current) -> Option<Flash> {
        self.lock()
            .sessions
            .get_mut(&current.key)
            .and_then(|s| s.flash.take())
    }

    /// Keeps the result of a chain verification for the audit page.
    pub fn set_verify(&self, current: &Current, verify: VerifyView) {
        if let Some(s) = self.lock().sessions.get_mut(&current.key) {
            s.verify = Some(verify);
        }
    }

    /// The last verification result, once.
    pub fn take_verify(&self, current: &Current) -> Option<VerifyView> {
        self.lock()
            .sessions
            .get_mut(&current.key)
            .and_then(|s| s.verify.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once() {
        let s = Sessions::new();
        let t = Instant::now();
        let code = s.mint_code(t);
        let opened = s
            .redeem(code.expose(), t)
            .expect("first use opens a session");
        assert!(s.redeem(code.expose(), t).is_none());
        let cur = s.current(opened.cookie.expose(), t).expect("session");
        assert!(cur.csrf_matches(cur.csrf.expose()));
        assert!(!cur.csrf_matches("nope"));
        assert!(!cur.csrf_matches(""));
    }

    #[test]
    fn a_code_expires() {
        let s = Sessions::new();
        let t = Instant::now();
        let code = s.mint_code(t);
        assert!(s.redeem(code.expose(), t + CODE_TTL).is_none());
        assert!(s.redeem("made-up", t).is_none());
    }

    #[test]
    fn sessions_expire_when_idle_and_close() {
        let s = Sessions::new();
        let t = Instant::now();
        let cookie = s
            .redeem(s.mint_code(t).expose(), t)
            .expect("session")
            .cookie;
        assert!(s.current(cookie.expose(), t + SESSION_IDLE / 2).is_some());
        assert!(s
            .current(cookie.expose(), t + SESSION_IDLE / 2 + SESSION_IDLE)
            .is_none());
        let cookie = s
            .redeem(s.mint_code(t).expose(), t)
            .expect("session")
            .cookie;
        let cur = s.current(cookie.expose(), t).expect("open");
        s.close(&cur);
        assert!(s.current(cookie.expose(), t).is_none());
    }

    #[test]
    fn each_session_has_its_own_csrf_token_and_flash() {
        let s = Sessions::new();
        let t = Instant::now();
        let a = s.redeem(s.mint_code(t).expose(), t).expect("a").cookie;
        let b = s.redeem(s.mint_code(t).expose(), t).expect("b").cookie;
        let a = s.current(a.expose(), t).expect("a");
        let b = s.current(b.expose(), t).expect("b");
        assert!(!a.csrf_matches(b.csrf.expose()));
        s.set_flash(&a, Flash::ok("done"));
        assert!(s.take_flash(&b).is_none());
        assert_eq!(s.take_flash(&a).map(|f| f.message), Some("done".into()));
        assert!(s.take_flash(&a).is_none());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Sessions::new();
        let code = s.mint_code(Instant::now());
        assert!(!format!("{code:?}").contains(code.expose()));
    }
}
