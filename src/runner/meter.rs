//! Charging a run while it goes, and stopping it when its budget is spent.
//!
//! The [`Meter`] holds the running totals the runner has charged, per model.
//! Each time an agent's usage grows (an assistant message in a claude
//! stream, a line in a command agent's usage file), the growth is priced
//! (`[prices]`, exactly, on running totals) and sent to the server
//! (`POST /runs/{id}/usage`). The server records it, whatever the caps, and
//! answers `stop` once the run has spent its reservation or the agent is
//! paused: the meter then raises the flag the supervisor watches, which
//! terminates, then kills, the agent. A report the server cannot take also
//! stops the run (fail closed); what was not charged is charged at the end.
//!
//! Command agents report usage by appending JSON lines to the file named by
//! `GOV_USAGE_FILE`, one per spend:
//! `{"model": "claude-sonnet-4-5", "input_tokens": 1200, "output_tokens": 80,
//! "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}`
//! (every field optional; no model: the flat rate per 1,000 tokens). The
//! runner reads the file as it grows ([`UsageFile`]).

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Deserialize;

use crate::client::Client;
use crate::domain::pricing::{ModelCharge, Prices, TokenUsage, UsageByModel};
use crate::wire::{RunCharged, UsageReport};

/// Why the meter stopped a run: its reservation or a cap was spent.
pub const BUDGET_REASON: &str = "budget";
/// Why the meter stopped a run: the server could not record its usage.
pub const UNRECORDED_REASON: &str = "usage_unrecorded";

#[derive(Debug)]
pub struct Meter {
    client: Client,
    run_id: String,
    prices: Prices,
    /// What the server has recorded for this run, per model.
    charged: UsageByModel,
    /// Raised to stop the run.
    stop: Arc<AtomicBool>,
    /// Why it was stopped, for the run's end and the operator.
    pub stop_detail: Option<String>,
    /// The run's reason when it was stopped: [`BUDGET_REASON`] or
    /// [`UNRECORDED_REASON`].
    pub stop_reason: &'static str,
}

impl Meter {
    pub fn new(client: Client, run_id: &str, prices: Prices, stop: Arc<AtomicBool>) -> Meter {
        Meter {
            client,
            run_id: run_id.to_string(),
            prices,
            charged: UsageByModel::new(),
            stop,
            stop_detail: None,
            stop_reason: BUDGET_REASON,
        }
    }

    /// The run has been stopped for its budget.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn halt(&mut self, reason: &'static str, detail: String) {
        if !self.stopped() {
            eprintln!("gov run: stopping run `{}`: {detail}", self.run_id);
            self.stop_detail = Some(detail);
            self.stop_reason = reason;
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Charges what `seen` (running totals per model) has beyond what was
    /// charged, and stops the run when the server says so.
    pub fn report(&mut self, seen: &UsageByModel, estimate: bool) {
        let charges = self.prices.charges_between(&self.charged, seen);
        if charges.is_empty() {
            return;
        }
        let path = format!("/runs/{}/usage", self.run_id);
        let body = UsageReport { charges, estimate };
        match self.client.post_json::<_, RunCharged>(&path, &body) {
            Ok(answer) => {
                let charges = body.charges;
                for c in &charges {
                    let e = self.charged.entry(c.model.clone()).or_default();
                    *e = e.plus(c.usage);
                }
                if answer.stop {
                    let why = answer
                        .stop_reason
                        .map_or_else(|| "the budget is spent".into(), |r| r.to_string());
                    self.halt(BUDGET_REASON, format!("its budget is spent ({why})"));
                }
            }
            Err(e) => self.halt(
                UNRECORDED_REASON,
                format!(
                    "its usage could not be recorded ({}); it is charged at the end",
                    crate::domain::errors::error_chain(&e)
                ),
            ),
        }
    }

    /// What the run used beyond what was charged, priced: sent with its end.
    pub fn rest(&self, total: &UsageByModel) -> Vec<ModelCharge> {
        self.prices.charges_between(&self.charged, total)
    }
}

/// One line of a command agent's usage file.
#[derive(Debug, Deserialize)]
struct UsageLine {
    #[serde(default)]
    model: String,
    #[serde(flatten)]
    usage: TokenUsage,
    /// Tokens of no kind in particular, counted as input tokens.
    #[serde(default)]
    tokens: u64,
}

/// A command agent's usage file, read as it grows.
#[derive(Debug)]
pub struct UsageFile {
    pub path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// Running totals of what the agent reported, per model.
    pub totals: UsageByModel,
    pub bad_lines: u64,
}

impl UsageFile {
    /// Creates the (empty) file the agent appends to.
    pub fn create(path: PathBuf) -> std::io::Result<UsageFile> {
        std::fs::File::create(&path)?;
        Ok(UsageFile {
            path,
            offset: 0,
            partial: Vec::new(),
            totals: UsageByModel::new(),
            bad_lines: 0,
        })
    }

    /// Reads what was appended since the last call; true when the totals
    /// grew. A line is taken once it ends with a newline.
    pub fn poll(&mut self) -> bool {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return false;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return false;
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let mut grew = false;
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            if text.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<UsageLine>(text.trim()) {
                Ok(l) => {
                    let mut u = l.usage;
                    u.input_tokens = u.input_tokens.saturating_add(l.tokens);
                    let e = self.totals.entry(l.model).or_default();
                    *e = e.plus(u);
                    grew |= !u.is_zero();
                }
                Err(e) => {
                    self.bad_lines += 1;
                    eprintln!(
                        "gov run: ignoring a line of `{}` that is not a usage report: {e}",
                        self.path.display()
                    );
                }
            }
        }
        grew
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn usage_lines_add_up_as_they_are_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut u = UsageFile::create(dir.path().join("u.jsonl")).expect("create");
        assert!(!u.poll());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&u.path)
            .expect("open");
        write!(
            f,
            "{{\"tokens\": 100}}\n{{\"model\": \"m\", \"output_tokens\": 5}}\n{{\"input_tok"
        )
        .expect("write");
        assert!(u.poll());
        assert_eq!(u.totals[""].input_tokens, 100);
        assert_eq!(u.totals["m"].output_tokens, 5);
        // The half-written line is taken once it is whole.
        writeln!(f, "ens\": 7, \"model\": \"m\"}}\nnot json").expect("write");
        assert!(u.poll());
        assert_eq!(u.totals["m"].input_tokens, 7);
        assert_eq!(u.bad_lines, 1);
    }
}
