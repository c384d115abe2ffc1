//! Audit entries and their canonical bytes.
//!
//! An entry is written once, as the message of one signed commit on the audit
//! ref. Its sequence number and timestamp are assigned by the chain writer
//! under its lock; callers build a [`NewEntry`].

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

pub use super::event::Event;
use super::request::DecisionRecord;

/// Who caused an entry. The signer (server, watchdog) is a separate matter:
/// it is the key that signed the commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor(pub String);

impl Actor {
    pub fn server() -> Self {
        Actor("server".into())
    }
    pub fn watchdog() -> Self {
        Actor("watchdog".into())
    }
    pub fn runner() -> Self {
        Actor("runner".into())
    }
    pub fn operator(name: &str) -> Self {
        Actor(format!("operator:{name}"))
    }
    pub fn agent(id: &str) -> Self {
        Actor(format!("agent:{id}"))
    }
}

/// An entry as the caller describes it, before it is given its place.
///
/// Its JSON is `actor, event_type, agent_id, proposal_id, task_id, payload,
/// decision` (absent ids and decision left out), as it has always been: the
/// event is split into its type and payload ([`Event::to_parts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub actor: Actor,
    pub event: Event,
    pub agent_id: Option<String>,
    pub proposal_id: Option<String>,
    pub task_id: Option<String>,
    pub decision: Option<DecisionRecord>,
}

/// [`NewEntry`] as written in JSON.
#[derive(Serialize)]
struct WireEntryRef<'a> {
    actor: &'a Actor,
    event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proposal_id: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_id: &'a Option<String>,
    payload: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: &'a Option<DecisionRecord>,
}

/// [`NewEntry`] as read from JSON.
#[derive(Deserialize)]
struct WireEntry {
    actor: Actor,
    event_type: String,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    proposal_id: Option<String>,
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    payload: serde_json::Value,
    #[serde(default)]
    decision: Option<DecisionRecord>,
}

impl Serialize for NewEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (event_type, payload) = self.event.to_parts();
        WireEntryRef {
            actor: &self.actor,
            event_type,
            agent_id: &self.agent_id,
            proposal_id: &self.proposal_id,
            task_id: &self.task_id,
            payload,
            decision: &self.decision,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for NewEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireEntry::deserialize(d)?;
        Ok(NewEntry {
            actor: w.actor,
            event: Event::from_parts(w.event_type, w.payload),
            agent_id: w.agent_id,
            proposal_id: w.proposal_id,
            task_id: w.task_id,
            decision: w.decision,
        })
    }
}

impl NewEntry {
    pub fn new(actor: Actor, event: Event) -> Self {
        Self {
            actor,
            event,
            agent_id: None,
            proposal_id: None,
            task_id: None,
            decision: None,
        }
    }
    /// The `event_type` string.
    pub fn event_type(&self) -> &str {
        self.event.name()
    }
    /// The payload object as written.
    pub fn payload(&self) -> serde_json::Value {
        self.event.to_parts().1
    }
    pub fn agent(mut self, id: impl Into<String>) -> Self {
        self.agent_id = Some(id.into());
        self
    }
    pub fn proposal(mut self, id: impl Into<String>) -> Self {
        self.proposal_id = Some(id.into());
        self
    }
    /// Sets the proposal id when there is one.
    pub fn maybe_proposal(mut self, id: Option<impl Into<String>>) -> Self {
        self.proposal_id = id.map(Into::into);
        self
    }
    pub fn task(mut self, id: impl Into<String>) -> Self {
        self.task_id = Some(id.into());
        self
    }
    /// Sets the task id when there is one.
    pub fn maybe_task(mut self, id: Option<impl Into<String>>) -> Self {
        self.task_id = id.map(Into::into);
        self
    }
    pub fn decision(mut self, record: DecisionRecord) -> Self {
        self.decision = Some(record);
        self
    }

    /// Gives the entry its place in the chain.
    pub fn place(self, seq: u64, ts: DateTime<Utc>) -> AuditEntry {
        AuditEntry {
            seq,
            ts: Timestamp(ts),
            entry: self,
        }
    }
}

/// A UTC timestamp that always serialises with its offset
/// (`2026-11-25T08:40:00.123456+00:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    pub fn to_rfc3339(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, false)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| Timestamp(t.with_timezone(&Utc)))
            .map_err(serde::de::Error::custom)
    }
}

/// An entry in its place: sequence number (1-based, no gaps) and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub ts: Timestamp,
    #[serde(flatten)]
    pub entry: NewEntry,
}

/// The first line of every audit commit message; the JSON follows a blank line.
pub const MESSAGE_PREFIX: &str = "gov audit";

impl AuditEntry {
    /// The canonical JSON of the entry: compact, fields in declaration order.
    pub fn canonical_json(&self) -> String {
        // Serialising plain data to a string cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The commit message that carries the entry.
    pub fn commit_message(&self) -> String {
        let agent = self.entry.agent_id.as_deref().unwrap_or("-");
        format!(
            "{MESSAGE_PREFIX} #{} {} {agent}\n\n{}\n",
            self.seq,
            self.entry.event_type(),
            self.canonical_json()
        )
    }

    /// Parses an entry back out of a commit message written by
    /// [`AuditEntry::commit_message`].
    pub fn from_commit_message(message: &str) -> Result<Self, EntryParseError> {
        let (head, body) = message.split_once("\n\n").ok_or(EntryParseError::NoBody)?;
        if !head.starts_with(MESSAGE_PREFIX) {
            return Err(EntryParseError::NotAnEntry);
        }
        let entry: AuditEntry = serde_json::from_str(body.trim_end())
            .map_err(|e| EntryParseError::Json(e.to_string()))?;
        let expected_head = format!("{MESSAGE_PREFIX} #{} ", entry.seq);
        if !head.starts_with(&expected_head) {
            return Err(EntryParseError::HeadMismatch);
        }
        Ok(entry)
    }

    /// The entry in the original's field names (`audit_id, ts, agent_id,
    /// event_type, proposal_id, task_id, payload`), plus gov's additions.
    pub fn to_compat_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "audit_id": self.seq,
            "ts": self.ts.to_rfc3339(),
            "agent_id": self.entry.agent_id,
            "event_type": self.entry.event_type(),
            "proposal_id": self.entry.proposal_id,
            "task_id": self.entry.task_id,
            "payload": self.entry.payload(),
            "actor": self.entry.actor.0,
        });
        if let (Some(d), Some(obj)) = (&self.entry.decision, v.as_object_mut()) {
            obj.insert(
                "decision".into(),
                serde_json::to_value(d).unwrap_or_default(),
            );
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryParseError {
    #[error("commit message has no body")]
    NoBody,
    #[error("commit message is not an audit entry")]
    NotAnEntry,
    #[error("entry JSON is malformed: {0}")]
    Json(String),
    #[error("message heading does not match the entry's sequence number")]
    HeadMismatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trips() {
        let ts = DateTime::parse_from_rfc3339("2026-11-25T08:40:00.5+00:00")
            .map(|t| t.with_timezone(&Utc))
            .expect("valid time");
        let event = Event::other("tool_call", serde_json::json!({"b": 1, "a": [true]}))
            .expect("valid name");
        let e = NewEntry::new(Actor::server(), event)
            .agent("noop")
            .proposal("p-1")
            .place(7, ts);
        let msg = e.commit_message();
        assert!(msg.starts_with("gov audit #7 tool_call noop\n\n"));
        assert!(msg.contains("\"payload\":{\"b\":1,\"a\":[true]}"));
        assert!(msg.contains("\"ts\":\"2026-11-25T08:40:00.500000+00:00\""));
        assert_eq!(AuditEntry::from_commit_message(&msg), Ok(e));
    }

    #[test]
    fn heading_must_match_sequence() {
        let event = Event::other("x", serde_json::json!({})).expect("valid name");
        let e = NewEntry::new(Actor::server(), event).place(3, Utc::now());
        let forged = e.commit_message().replacen("#3", "#4", 1);
        assert_eq!(
            AuditEntry::from_commit_message(&forged),
            Err(EntryParseError::HeadMismatch)
        );
    }
}
