//! The meter of a `gov guard` session: gov did not start the session, so
//! its hooks read the usage from the session's transcript
//! ([`super::transcript`]) and report it as the run's usage
//! (`POST /runs/{id}/usage`, with the session's own token; the server
//! prices it with `[prices]` and records it as it records a `gov run`'s).
//!
//! The PreToolUse hook meters before it asks about the call, so a cap
//! crossed by the session's last answer bites on its next call; the Stop
//! and SessionEnd hooks gov installs meter the answers that end a turn;
//! `gov guard --remove` meters what is left before it ends the run.
//!
//! Hooks of parallel tool calls run at once: the state file
//! (`<run>.meter.json` beside the session file) is read and written under
//! an exclusive lock (`<run>.meter.lock`), taken within [`LOCK_WAIT`], and
//! replaced in one step. A report the server does not take leaves the usage
//! unreported (it is sent again next time) and fails the call closed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::transcript::{MeterState, TranscriptError};
use crate::client::{Client, ClientError, Timeouts, Token};
use crate::wire::{RunCharged, UsageReport};
use chrono::{DateTime, Utc};

/// The longest a hook waits for another hook of the session to finish
/// metering.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);
/// The most one usage report may take.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// What metering adds to a hook's deadline: the lock, the bounded read
/// and the report.
pub const METER_ALLOWANCE: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum MeterError {
    #[error("the hook input names no `transcript_path`")]
    NoTranscript,
    #[error(transparent)]
    Transcript(#[from] TranscriptError),
    #[error("another hook of this session is still metering it (waited {0} s)")]
    Busy(u64),
    #[error("the meter state `{path}` is unusable: {message}")]
    State { path: String, message: String },
    #[error("the usage could not be recorded: {0}")]
    Report(#[from] ClientError),
}

/// What one metering found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metered {
    /// Tokens reported now.
    pub tokens: u64,
    /// The session must stop: `reservation_exhausted` or `agent_paused`.
    pub stop: Option<String>,
}

/// The session a meter reports for.
#[derive(Debug, Clone)]
pub struct MeterSession {
    pub url: String,
    pub run_id: String,
    pub token: Token,
    /// The session file; the state and lock files go beside it.
    pub session_file: PathBuf,
    /// When the run started: transcript entries before it are not counted.
    pub since: Option<DateTime<Utc>>,
}

impl MeterSession {
    /// `<dir>/<run>.session.json` → `<dir>/<run>.meter.json`.
    pub fn state_path(&self) -> PathBuf {
        sibling(&self.session_file, "meter.json")
    }

    fn lock_path(&self) -> PathBuf {
        sibling(&self.session_file, "meter.lock")
    }

    /// Reads what the session's transcript (named by a hook input) gained
    /// and reports it.
    pub fn meter(&self, transcript: Option<&str>) -> Result<Metered, MeterError> {
        let transcript = transcript
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(MeterError::NoTranscript)?;
        self.locked(|state| {
            let mut budget = super::transcript::READ_BUDGET;
            state.read_session_within(Path::new(transcript), self.since, &mut budget)?;
            // The session's other transcripts (a subagent's hook may name
            // its own file; a resumed session starts a new one) gain too.
            let others: Vec<String> = state
                .transcripts
                .iter()
                .filter(|t| t.as_str() != transcript)
                .cloned()
                .collect();
            for t in others {
                let _ = state.read_session_within(Path::new(&t), self.since, &mut budget);
            }
            Ok(())
        })
    }

    /// Reads what every transcript this session named gained, and reports
    /// it: the last metering, before the run ends. `None` when the session
    /// was never metered (no state file).
    pub fn meter_rest(&self) -> Result<Option<Metered>, MeterError> {
        if !self.state_path().exists() {
            return Ok(None);
        }
        self.locked(|state| {
            let named: Vec<String> = state.transcripts.iter().cloned().collect();
            for t in named {
                // Read until nothing is left (each read is bounded). A
                // transcript deleted since (Claude Code's cleanup) has
                // nothing more to give.
                loop {
                    let before = state.files.clone();
                    if state.read_session(Path::new(&t), self.since).is_err()
                        || state.files == before
                    {
                        break;
                    }
                }
            }
            Ok(())
        })
        .map(Some)
    }

    /// Runs `read` on the state under the lock, reports what it found, and
    /// saves the state.
    fn locked(
        &self,
        read: impl FnOnce(&mut MeterState) -> Result<(), MeterError>,
    ) -> Result<Metered, MeterError> {
        let _lock = self.lock()?;
        let path = self.state_path();
        let mut state = load(&path)?;
        let before = state.clone();
        let read = read(&mut state);
        let charges = state.unreported();
        let mut out = Metered::default();
        let reported = if charges.is_empty() {
            Ok(())
        } else {
            let client = Client::new(
                &self.url,
                self.token.clone(),
                Timeouts {
                    connect: Duration::from_secs(2),
                    total: REPORT_TIMEOUT,
                },
            );
            let body = UsageReport {
                charges: charges.clone(),
                estimate: true,
            };
            client
                .post_json::<_, RunCharged>(&format!("/runs/{}/usage", self.run_id), &body)
                .map(|answer| {
                    state.mark_charged(&charges);
                    out.tokens = charges.iter().map(|c| c.usage.total()).sum();
                    if answer.stop {
                        out.stop = Some(
                            answer
                                .stop_reason
                                .map_or_else(|| "budget_spent".into(), |r| r.to_string()),
                        );
                    }
                })
        };
        // What was read is kept even when the report failed: the usage
        // stays unreported and goes with the next report. Nothing new:
        // nothing to write (most calls of a turn).
        if state != before || !path.exists() {
            save(&path, &state)?;
        }
        read?;
        reported?;
        Ok(out)
    }

    fn lock(&self) -> Result<std::fs::File, MeterError> {
        let path = self.lock_path();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| state_error(&path, &e))?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(MeterError::Busy(LOCK_WAIT.as_secs()))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(state_error(&path, &e)),
            }
        }
    }
}

fn sibling(session_file: &Path, suffix: &str) -> PathBuf {
    let name = session_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".session.json").unwrap_or(&name);
    session_file.with_file_name(format!("{stem}.{suffix}"))
}

fn state_error(path: &Path, e: &dyn std::fmt::Display) -> MeterError {
    MeterError::State {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The state, or a fresh one when there is none yet. A state that does not
/// parse is an error: starting again from nothing would charge the whole
/// transcript a second time.
fn load(path: &Path) -> Result<MeterState, MeterError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| state_error(path, &e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MeterState::default()),
        Err(e) => Err(state_error(path, &e)),
    }
}

/// Replaces the state in one step, readable by its owner only.
fn save(path: &Path, state: &MeterState) -> Result<(), MeterError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let text = serde_json::to_string(state).map_err(|e| state_error(path, &e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| state_error(path, &e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| state_error(path, &e))?;
    tmp.write_all(text.as_bytes())
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| state_error(path, &e))?;
    tmp.persist(path).map_err(|e| state_error(path, &e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_sit_beside_the_session_file() {
        let s = MeterSession {
            url: "http://127.0.0.1:1".into(),
            run_id: "r".into(),
            token: Token::new("t"),
            session_file: PathBuf::from("/g/.gov/guard/r1.session.json"),
            since: None,
        };
        assert_eq!(s.state_path(), PathBuf::from("/g/.gov/guard/r1.meter.json"));
        assert_eq!(s.lock_path(), PathBuf::from("/g/.gov/guard/r1.meter.lock"));
    }

    #[test]
    fn unreachable_server_keeps_the_usage_unreported_and_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path().join("t.jsonl");
        std::fs::write(
            &t,
            r#"{"type":"assistant","message":{"id":"m","model":"x","usage":{"input_tokens":5,"output_tokens":1}}}
"#,
        )
        .expect("write");
        let s = MeterSession {
            url: "http://127.0.0.1:1".into(),
            run_id: "r".into(),
            token: Token::new("t"),
            session_file: dir.path().join("r.session.json"),
            since: None,
        };
        let err = s.meter(t.to_str()).expect_err("no server");
        assert!(matches!(err, MeterError::Report(_)), "{err}");
        let state = load(&s.state_path()).expect("state");
        assert_eq!(state.seen["x"].total(), 6);
        assert_eq!(state.unreported().len(), 1, "still to report");
        assert!(matches!(s.meter(None), Err(MeterError::NoTranscript)));
        std::fs::write(s.state_path(), "{broken").expect("write");
        assert!(matches!(s.meter(t.to_str()), Err(MeterError::State { .. })));
    }
}
