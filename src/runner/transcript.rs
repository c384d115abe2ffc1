//! Reading the token usage of an interactive Claude Code session from its
//! transcript, for a `gov guard` session (which gov does not start, so it
//! has no stream-json to read).
//!
//! Claude Code names the transcript in every hook input (`transcript_path`
//! of `BaseHookInput`, `@anthropic-ai/claude-agent-sdk` 0.3.332). It is a
//! JSONL file, one entry a line, each with a string `type` (the SDK's
//! `SessionStoreEntry`); an `assistant` entry carries the API message in
//! `message`, with its `id`, `model` and `usage`. An answer written in
//! several blocks is several lines with one `message.id`, each repeating the
//! usage so far, so a message is counted once, at its largest report (as
//! [`super::stream_json`] does for the stream). Subagents write their own
//! transcripts beside it (`<session>/subagents/agent-<id>.jsonl`, per the
//! SDK's `listSubagents`); they are read too.
//!
//! The file is written by the user's claude, so it is untrusted input: reads
//! are bounded per call and per line, a line that is not an entry is skipped
//! and counted, a line longer than [`MAX_LINE`] is skipped and counted, a
//! file that is not a regular file is refused, and nothing here panics.
//!
//! [`MeterState`] is what the hook keeps between calls (it is a new process
//! each time): how far each file was read, the recent messages, the running
//! totals seen and charged.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::pricing::{ModelCharge, TokenUsage, UsageByModel};

/// The longest line read; a longer one is skipped (and counted). An
/// assistant message is bounded by the model's output limit, far below it.
pub const MAX_LINE: usize = 8 * 1024 * 1024;
/// The most bytes one call reads from all the files together; the rest is
/// read by the next call.
pub const READ_BUDGET: u64 = 64 * 1024 * 1024;
/// How many recent message ids are remembered to count each message once.
const RECENT_MESSAGES: usize = 512;
/// How many transcript files (the session's and its subagents') are followed.
const MAX_FILES: usize = 256;
const CHUNK: usize = 1024 * 1024;

/// How far one file has been read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProgress {
    /// Bytes taken so far: always the end of a whole line.
    pub offset: u64,
    /// In the middle of a line longer than [`MAX_LINE`]: skip to its end.
    #[serde(default)]
    pub skipping: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SeenMessage {
    id: String,
    model: String,
    usage: TokenUsage,
}

/// What the meter of one session keeps between two hook calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterState {
    /// The session transcripts named by the hook inputs.
    #[serde(default)]
    pub transcripts: BTreeSet<String>,
    /// How far each file (transcripts and subagents' files) was read.
    #[serde(default)]
    pub files: BTreeMap<String, FileProgress>,
    #[serde(default)]
    recent: VecDeque<SeenMessage>,
    /// Running totals of the usage read, per model.
    #[serde(default)]
    pub seen: UsageByModel,
    /// What the server has recorded, per model.
    #[serde(default)]
    pub charged: UsageByModel,
    /// Lines that are not transcript entries, or assistant entries without
    /// a readable usage.
    #[serde(default)]
    pub bad_lines: u64,
    /// Lines longer than [`MAX_LINE`].
    #[serde(default)]
    pub oversize_lines: u64,
}

/// The first look at a line: its kind.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: String,
}

/// The parts of an assistant entry that carry usage.
#[derive(Deserialize)]
struct AssistantEntry {
    #[serde(default)]
    timestamp: Option<String>,
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    id: String,
    #[serde(default)]
    model: String,
    usage: TokenUsage,
}

impl MeterState {
    /// Takes one line of a transcript. Entries written before `since` (a
    /// resumed session's earlier turns) are not counted.
    pub fn observe(&mut self, line: &[u8], since: Option<DateTime<Utc>>) {
        let text = match std::str::from_utf8(line) {
            Ok(t) => t.trim(),
            Err(_) => {
                self.bad_lines += 1;
                return;
            }
        };
        if text.is_empty() {
            return;
        }
        let head: Head = match serde_json::from_str(text) {
            Ok(h) => h,
            Err(_) => {
                self.bad_lines += 1;
                return;
            }
        };
        if head.kind != "assistant" {
            return;
        }
        let entry: AssistantEntry = match serde_json::from_str(text) {
            Ok(e) => e,
            Err(_) => {
                self.bad_lines += 1;
                return;
            }
        };
        let written = entry
            .timestamp
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        if let (Some(since), Some(at)) = (since, written) {
            if at < since {
                return;
            }
        }
        let m = entry.message;
        let before = match self.recent.iter_mut().find(|s| s.id == m.id) {
            Some(slot) => {
                let before = slot.usage;
                slot.usage = before.max(m.usage);
                before
            }
            None => {
                if self.recent.len() >= RECENT_MESSAGES {
                    self.recent.pop_front();
                }
                self.recent.push_back(SeenMessage {
                    id: m.id,
                    model: m.model.clone(),
                    usage: m.usage,
                });
                TokenUsage::default()
            }
        };
        let grown = before.max(m.usage).beyond(before);
        if !grown.is_zero() {
            let e = self.seen.entry(m.model).or_default();
            *e = e.plus(grown);
        }
    }

    /// Usage read but not recorded by the server yet, per model. The
    /// server prices it (`micros` is 0 here).
    pub fn unreported(&self) -> Vec<ModelCharge> {
        self.seen
            .iter()
            .filter_map(|(model, now)| {
                let before = self.charged.get(model).copied().unwrap_or_default();
                let usage = now.beyond(before);
                (!usage.is_zero()).then(|| ModelCharge {
                    model: model.clone(),
                    usage,
                    micros: 0,
                })
            })
            .collect()
    }

    /// The server recorded `charges`.
    pub fn mark_charged(&mut self, charges: &[ModelCharge]) {
        for c in charges {
            let e = self.charged.entry(c.model.clone()).or_default();
            *e = e.plus(c.usage);
        }
    }

    /// Reads what was appended to the session's transcript (and its
    /// subagents' files) since the last call, up to [`READ_BUDGET`] bytes.
    pub fn read_session(
        &mut self,
        transcript: &Path,
        since: Option<DateTime<Utc>>,
    ) -> Result<(), TranscriptError> {
        let mut budget = READ_BUDGET;
        self.read_session_within(transcript, since, &mut budget)
    }

    /// [`Self::read_session`], reading at most `budget` bytes (and taking
    /// what it read from it).
    pub fn read_session_within(
        &mut self,
        transcript: &Path,
        since: Option<DateTime<Utc>>,
        budget: &mut u64,
    ) -> Result<(), TranscriptError> {
        let shown = transcript.to_string_lossy().into_owned();
        if !self.transcripts.contains(&shown) && self.transcripts.len() >= MAX_FILES {
            return Err(TranscriptError::TooMany);
        }
        self.read_file(transcript, since, budget)?;
        self.transcripts.insert(shown);
        for sub in subagent_files(transcript) {
            if *budget == 0 {
                break;
            }
            let key = sub.to_string_lossy().into_owned();
            if !self.files.contains_key(&key) && self.files.len() >= MAX_FILES {
                continue;
            }
            // A subagent's file that vanished or cannot be read is skipped:
            // the session's own transcript is what must be readable.
            let _ = self.read_file(&sub, since, budget);
        }
        Ok(())
    }

    /// Reads one file from where the last call stopped.
    fn read_file(
        &mut self,
        path: &Path,
        since: Option<DateTime<Utc>>,
        budget: &mut u64,
    ) -> Result<(), TranscriptError> {
        let key = path.to_string_lossy().into_owned();
        let mut file = open_regular(path)?;
        let len = file
            .metadata()
            .map_err(|e| TranscriptError::io(path, &e))?
            .len();
        let mut progress = self.files.get(&key).cloned().unwrap_or_default();
        if len < progress.offset {
            // Cut short or replaced: start again (messages already counted
            // are recognised by their ids).
            progress = FileProgress::default();
        }
        file.seek(SeekFrom::Start(progress.offset))
            .map_err(|e| TranscriptError::io(path, &e))?;
        let mut pending: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; CHUNK];
        while *budget > 0 {
            let want = usize::try_from((*budget).min(CHUNK as u64)).unwrap_or(CHUNK);
            let n = file
                .read(&mut chunk[..want])
                .map_err(|e| TranscriptError::io(path, &e))?;
            if n == 0 {
                break;
            }
            *budget -= n as u64;
            pending.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some(at) = pending[start..].iter().position(|b| *b == b'\n') {
                let end = start + at;
                if progress.skipping {
                    progress.skipping = false;
                } else if end - start > MAX_LINE {
                    self.oversize_lines += 1;
                } else {
                    self.observe(&pending[start..end], since);
                }
                start = end + 1;
            }
            progress.offset += start as u64;
            pending.drain(..start);
            if pending.len() > MAX_LINE || (progress.skipping && !pending.is_empty()) {
                if !progress.skipping {
                    self.oversize_lines += 1;
                }
                progress.skipping = true;
                progress.offset += pending.len() as u64;
                pending.clear();
            }
        }
        // What is left is a line still being written: read again next time.
        self.files.insert(key, progress);
        Ok(())
    }
}

/// The transcripts of a session's subagents: `<session>/subagents/*.jsonl`
/// beside `<session>.jsonl`.
fn subagent_files(transcript: &Path) -> Vec<PathBuf> {
    let dir = transcript.with_extension("").join("subagents");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    out.sort();
    out.truncate(MAX_FILES);
    out
}

/// Opens a regular file for reading without blocking on a FIFO or a device
/// someone put in its place.
fn open_regular(path: &Path) -> Result<std::fs::File, TranscriptError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| TranscriptError::io(path, &e))?;
    let meta = file.metadata().map_err(|e| TranscriptError::io(path, &e))?;
    if !meta.is_file() {
        return Err(TranscriptError::NotAFile(path.display().to_string()));
    }
    Ok(file)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranscriptError {
    #[error("cannot read the session's transcript `{path}`: {message}")]
    Io { path: String, message: String },
    #[error("the session's transcript `{0}` is not a regular file")]
    NotAFile(String),
    #[error("the session names more transcripts than gov follows")]
    TooMany,
}

impl TranscriptError {
    fn io(path: &Path, e: &std::io::Error) -> TranscriptError {
        TranscriptError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn assistant(id: &str, model: &str, input: u64, output: u64, ts: &str) -> String {
        format!(
            r#"{{"parentUuid":null,"isSidechain":false,"type":"assistant","uuid":"u-{id}-{output}","timestamp":"{ts}","sessionId":"s","message":{{"id":"{id}","type":"message","role":"assistant","model":"{model}","content":[{{"type":"text","text":"hi"}}],"stop_reason":null,"usage":{{"input_tokens":{input},"output_tokens":{output},"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"service_tier":"standard"}}}}}}"#
        )
    }

    const TS: &str = "2026-11-29T12:00:00.000Z";

    #[test]
    fn each_message_counts_once_at_its_largest_report() {
        let mut s = MeterState::default();
        s.observe(
            assistant("m1", "claude-sonnet-4-5", 100, 1, TS).as_bytes(),
            None,
        );
        s.observe(
            assistant("m1", "claude-sonnet-4-5", 100, 9, TS).as_bytes(),
            None,
        );
        s.observe(
            assistant("m1", "claude-sonnet-4-5", 100, 9, TS).as_bytes(),
            None,
        );
        s.observe(
            assistant("m2", "claude-haiku-4-5", 10, 2, TS).as_bytes(),
            None,
        );
        s.observe(
            br#"{"type":"user","message":{"role":"user","content":"x"}}"#,
            None,
        );
        assert_eq!(s.seen["claude-sonnet-4-5"].total(), 109);
        assert_eq!(s.seen["claude-haiku-4-5"].total(), 12);
        let charges = s.unreported();
        assert_eq!(charges.len(), 2);
        s.mark_charged(&charges);
        assert!(s.unreported().is_empty());
        s.observe(
            assistant("m2", "claude-haiku-4-5", 10, 5, TS).as_bytes(),
            None,
        );
        let more = s.unreported();
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].usage.output_tokens, 3);
        assert_eq!(s.bad_lines, 0);
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let mut s = MeterState::default();
        for bad in [
            &b"not json"[..],
            b"{\"no\":\"type\"}",
            b"{\"type\":\"assistant\",\"message\":{\"id\":\"x\"}}",
            b"{\"type\":\"assistant\",\"message\":{\"id\":\"x\",\"usage\":{\"input_tokens\":-5}}}",
            b"\xff\xfe",
            b"[1,2,3]",
        ] {
            s.observe(bad, None);
        }
        assert_eq!(s.bad_lines, 6);
        assert!(s.seen.is_empty());
    }

    #[test]
    fn earlier_turns_of_a_resumed_session_are_not_counted() {
        let mut s = MeterState::default();
        let since = DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .ok();
        s.observe(
            assistant("old", "m", 500, 5, "2026-11-29T11:59:59Z").as_bytes(),
            since,
        );
        s.observe(assistant("new", "m", 7, 1, TS).as_bytes(), since);
        assert_eq!(s.seen["m"].total(), 8);
    }

    #[test]
    fn files_are_read_from_where_they_stopped_in_bounded_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s1.jsonl");
        let mut f = std::fs::File::create(&path).expect("create");
        writeln!(f, "{}", assistant("m1", "m", 10, 1, TS)).expect("write");
        // A line still being written is not taken yet.
        write!(f, "{}", &assistant("m2", "m", 20, 2, TS)[..40]).expect("write");
        f.flush().expect("flush");
        let mut s = MeterState::default();
        s.read_session(&path, None).expect("read");
        assert_eq!(s.seen["m"].total(), 11);
        writeln!(f, "{}", &assistant("m2", "m", 20, 2, TS)[40..]).expect("write");
        // A line longer than the bound is skipped, the next one is read.
        f.write_all(&vec![b'x'; MAX_LINE + 10]).expect("write");
        writeln!(f).expect("write");
        writeln!(f, "{}", assistant("m3", "m", 30, 3, TS)).expect("write");
        f.flush().expect("flush");
        s.read_session(&path, None).expect("read");
        assert_eq!(s.seen["m"].total(), 11 + 22 + 33);
        assert_eq!(s.oversize_lines, 1);
        assert_eq!(s.bad_lines, 0);
        // A subagent's transcript beside it is read too.
        let subs = dir.path().join("s1/subagents");
        std::fs::create_dir_all(&subs).expect("mkdir");
        std::fs::write(
            subs.join("agent-a1.jsonl"),
            assistant("m4", "h", 4, 0, TS) + "\n",
        )
        .expect("write");
        s.read_session(&path, None).expect("read");
        assert_eq!(s.seen["h"].total(), 4);
        // Read again: nothing new.
        let before = s.seen.clone();
        s.read_session(&path, None).expect("read");
        assert_eq!(s.seen, before);
    }

    #[test]
    fn a_missing_transcript_or_a_fifo_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = MeterState::default();
        assert!(matches!(
            s.read_session(&dir.path().join("none.jsonl"), None),
            Err(TranscriptError::Io { .. })
        ));
        let fifo = dir.path().join("fifo.jsonl");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        assert!(matches!(
            s.read_session(&fifo, None),
            Err(TranscriptError::NotAFile(_))
        ));
        assert!(matches!(
            s.read_session(dir.path(), None),
            Err(TranscriptError::NotAFile(_))
        ));
    }
}
