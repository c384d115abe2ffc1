//! Audit entries and their canonical bytes.
//!
//! An entry is written once, as the message of one signed commit on the audit
//! ref. Its sequence number and timestamp are assigned by the chain writer
//! under its lock; callers build a [`NewEntry`].

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

pub use super::event::Event;
use super::event::PayloadRef;
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
    /// Whether an agent's token (or an anonymous caller, named as an agent)
    /// acted.
    pub fn is_agent(&self) -> bool {
        self.0.starts_with("agent:")
    }
    /// Whether gov itself wrote the entry (the server or the watchdog): the
    /// only actor whose records gov reads back as facts (see
    /// `Event::agent_may_post`).
    pub fn is_gov(&self) -> bool {
        self.0 == "server" || self.0 == "watchdog"
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
    payload: PayloadRef<'a>,
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
        WireEntryRef {
            actor: &self.actor,
            event_type: self.event.name(),
            agent_id: &self.agent_id,
            proposal_id: &self.proposal_id,
            task_id: &self.task_id,
            payload: self.event.payload(),
            decision: &self.decision,
        }
        .serialize(s)
    }
}

/// [`AuditEntry`] as a commit message holds it: [`WireEntry`] with the
/// entry's place, its payload kept as text until its type is known.
#[derive(Deserialize)]
struct WireAuditEntry<'a> {
    seq: u64,
    ts: Timestamp,
    actor: Actor,
    event_type: String,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default)]
    proposal_id: Option<String>,
    #[serde(default)]
    task_id: Option<String>,
    #[serde(borrow, default)]
    payload: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    decision: Option<DecisionRecord>,
}

impl From<WireEntry> for NewEntry {
    fn from(w: WireEntry) -> Self {
        NewEntry {
            actor: w.actor,
            event: Event::from_parts(w.event_type, w.payload),
            agent_id: w.agent_id,
            proposal_id: w.proposal_id,
            task_id: w.task_id,
            decision: w.decision,
        }
    }
}

impl<'de> Deserialize<'de> for NewEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        WireEntry::deserialize(d).map(NewEntry::from)
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
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Timestamp {
    /// Parses an RFC 3339 time, refusing one outside the years 1970 to
    /// 9999 in UTC: such a time could not be written back as RFC 3339
    /// (`9999-12-31T23:59:59-23:59` is in the year 10000 in UTC).
    pub fn parse(s: &str) -> Result<Timestamp, String> {
        let t = DateTime::parse_from_rfc3339(s).map_err(|e| e.to_string())?;
        let t = t.with_timezone(&Utc);
        let year = chrono::Datelike::year(&t);
        if !(1970..=9999).contains(&year) {
            return Err("timestamp out of range (years 1970 to 9999 in UTC)".into());
        }
        Ok(Timestamp(t))
    }
}

/// An entry in its place: sequence number (1-based, no gaps) and time.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
        let json = |e: serde_json::Error| EntryParseError::Json(e.to_string());
        let w: WireAuditEntry<'_> = serde_json::from_str(body.trim_end()).map_err(json)?;
        // A missing payload reads as `null`, as it always has.
        let payload = w.payload.map_or("null", serde_json::value::RawValue::get);
        let entry = AuditEntry {
            seq: w.seq,
            ts: w.ts,
            entry: NewEntry {
                actor: w.actor,
                event: Event::from_parts_in_text(w.event_type, payload).map_err(json)?,
                agent_id: w.agent_id,
                proposal_id: w.proposal_id,
                task_id: w.task_id,
                decision: w.decision,
            },
        };
        let expected_head = format!("{MESSAGE_PREFIX} #{} ", entry.seq);
        if !head.starts_with(&expected_head) {
            return Err(EntryParseError::HeadMismatch);
        }
        Ok(entry)
    }
}

/// The deepest JSON an entry may hold, counted from the entry's own object
/// (the payload is one level down, a proposal's payload three). serde_json
/// refuses to read more than 128 levels, so every entry written stays well
/// inside what can be read back.
pub const MAX_ENTRY_DEPTH: usize = 64;

/// The deepest JSON a caller may hand in (a proposal's payload, a tool
/// call's input, an audit payload): what is left of [`MAX_ENTRY_DEPTH`]
/// once gov wraps it.
pub const MAX_INPUT_DEPTH: usize = 48;

/// The largest commit message an entry may take.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// The longest id or name an entry may carry (actor, agent, proposal, task).
pub const MAX_NAME_LEN: usize = 256;

/// The longest event type.
pub const MAX_EVENT_TYPE_LEN: usize = 64;

/// Why an entry cannot be written: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct EntryError {
    pub field: &'static str,
    pub reason: String,
}

impl EntryError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        EntryError {
            field,
            reason: reason.into(),
        }
    }
}

/// Whether `s` is an event type: an identifier of letters, digits, `_`,
/// `.` and `-`, starting with a letter.
pub fn valid_event_type(s: &str) -> bool {
    s.len() <= MAX_EVENT_TYPE_LEN
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Checks an id or name: non-empty, bounded, no control characters.
pub fn check_name(field: &'static str, s: &str) -> Result<(), EntryError> {
    if s.is_empty() {
        return Err(EntryError::new(field, "must not be empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(EntryError::new(
            field,
            format!("is longer than {MAX_NAME_LEN} bytes"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(EntryError::new(
            field,
            "must not contain control characters (NUL, newline, ...)",
        ));
    }
    Ok(())
}

/// The nesting depth of a JSON value: 0 for a scalar, 1 for `{}` or
/// `[1]`, and so on. Iterative, so any depth is measured without
/// recursion.
pub fn json_depth(v: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            serde_json::Value::Array(a) => {
                deepest = deepest.max(d + 1);
                stack.extend(a.iter().map(|x| (x, d + 1)));
            }
            serde_json::Value::Object(o) => {
                deepest = deepest.max(d + 1);
                stack.extend(o.values().map(|x| (x, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// The nesting depth of JSON text as [`json_depth`] counts it for the
/// value it holds (an object or array one more than its deepest member),
/// read off the text: brackets inside strings do not count.
pub fn json_text_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Checks JSON a caller hands in against [`MAX_INPUT_DEPTH`].
pub fn check_input_depth(field: &'static str, v: &serde_json::Value) -> Result<(), EntryError> {
    let depth = json_depth(v);
    if depth > MAX_INPUT_DEPTH {
        return Err(EntryError::new(
            field,
            format!("is nested {depth} levels deep; at most {MAX_INPUT_DEPTH} are accepted"),
        ));
    }
    Ok(())
}

impl NewEntry {
    /// Checks every field that goes into the entry. The payload's depth is
    /// counted as the entry holds it (one level below the entry's object).
    pub fn validate(&self) -> Result<(), EntryError> {
        self.validate_names()?;
        // One level for the entry's own object.
        let payload_depth = 1 + json_depth(&self.payload());
        if payload_depth > MAX_ENTRY_DEPTH {
            return Err(EntryError::new(
                "payload",
                format!("is nested too deeply for an entry ({payload_depth} levels with the entry; at most {MAX_ENTRY_DEPTH})"),
            ));
        }
        if let Some(d) = &self.decision {
            let v =
                serde_json::to_value(d).map_err(|e| EntryError::new("decision", e.to_string()))?;
            if 1 + json_depth(&v) > MAX_ENTRY_DEPTH {
                return Err(EntryError::new(
                    "decision",
                    "is nested too deeply for an entry",
                ));
            }
        }
        Ok(())
    }

    /// [`NewEntry::validate`] without the depth of the payload and the
    /// decision (which needs them as JSON values).
    fn validate_names(&self) -> Result<(), EntryError> {
        check_name("actor", &self.actor.0)?;
        if !valid_event_type(self.event_type()) {
            return Err(EntryError::new(
                "event_type",
                format!(
                    "must be an identifier (a letter, then letters, digits, `_`, `.` or `-`; at most {MAX_EVENT_TYPE_LEN})"
                ),
            ));
        }
        for (field, v) in [
            ("agent_id", &self.agent_id),
            ("proposal_id", &self.proposal_id),
            ("task_id", &self.task_id),
        ] {
            if let Some(v) = v {
                check_name(field, v)?;
            }
        }
        Ok(())
    }
}

impl AuditEntry {
    /// The commit message for the entry, only if it can be read back as
    /// exactly this entry: every field is checked, the message is bounded
    /// in size, and it is parsed back and compared before anyone writes it.
    ///
    /// Returns the message and the entry as it reads back, which is what
    /// every later reader sees (times keep microseconds, for instance): the
    /// writer hands that one on, never the one it was given.
    pub fn checked_commit_message(&self) -> Result<(String, AuditEntry), EntryError> {
        self.entry.validate_names()?;
        let message = self.commit_message();
        if message.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::new(
                "payload",
                format!(
                    "the entry would take {} bytes; at most {MAX_ENTRY_BYTES} are accepted",
                    message.len()
                ),
            ));
        }
        // The depth of the entry as written, read off its JSON (the entry's
        // object, then its payload and decision, the only fields that
        // nest): the same limit as `NewEntry::validate`'s, without making
        // a JSON value of the payload again. Past it, that check says
        // which field is too deep.
        let body = message.split_once("\n\n").map_or("", |(_, b)| b);
        if json_text_depth(body) > MAX_ENTRY_DEPTH {
            self.entry.validate()?;
            return Err(EntryError::new(
                "entry",
                format!("is nested too deeply (at most {MAX_ENTRY_DEPTH} levels)"),
            ));
        }
        match AuditEntry::from_commit_message(&message) {
            // Reading back must be stable: the entry read back writes the
            // very same message. An entry that reads back equal to this one
            // does (the message is a function of the entry, and the read
            // kept its order), so only one that differs is written again.
            Ok(back) if back == *self || back.commit_message() == message => Ok((message, back)),
            Ok(_) => Err(EntryError::new(
                "entry",
                "does not read back as written (a value does not survive JSON)",
            )),
            Err(e) => Err(EntryError::new("entry", format!("does not read back: {e}"))),
        }
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
    use chrono::SubsecRound;

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

    /// An entry read from its commit message is the entry its parts give
    /// when read as a JSON value ([`NewEntry`]'s reading), whatever fields
    /// it holds.
    #[test]
    fn an_entry_reads_from_its_message_as_its_parts_do() -> Result<(), Box<dyn std::error::Error>> {
        let ts = "2026-12-01T10:00:00.000000+00:00";
        let objects = [
            // A known type, with every field.
            serde_json::json!({"seq": 4, "ts": ts, "actor": "operator:ann",
                "event_type": "agent_resumed", "agent_id": "noop", "proposal_id": "p-1",
                "task_id": "t-1", "payload": {"was_paused_for": "budget"}}),
            // A known type whose payload does not read as it: kept as it is.
            serde_json::json!({"seq": 5, "ts": ts, "actor": "server",
                "event_type": "agent_resumed", "payload": {"was_paused_for": 3}}),
            // Another type, a field gov does not know, no payload.
            serde_json::json!({"seq": 6, "ts": ts, "actor": "agent:noop",
                "event_type": "note", "extra": [1, 2]}),
            // A payload of null.
            serde_json::json!({"seq": 7, "ts": ts, "actor": "server",
                "event_type": "agent_resumed", "payload": null}),
        ];
        for object in objects {
            let message = format!("{MESSAGE_PREFIX} #{} x -\n\n{object}\n", object["seq"]);
            let placed = AuditEntry::from_commit_message(&message)?;
            let parts: NewEntry = serde_json::from_value(object.clone())?;
            assert_eq!(placed.entry, parts, "{object}");
            assert_eq!(Some(placed.seq), object["seq"].as_u64());
            assert_eq!(placed.ts.to_rfc3339(), ts);
        }
        for missing in ["seq", "ts", "actor", "event_type"] {
            let mut object = serde_json::json!({"seq": 1, "ts": ts, "actor": "server",
                "event_type": "note"});
            object.as_object_mut().map(|o| o.remove(missing));
            let message = format!("{MESSAGE_PREFIX} #1 note -\n\n{object}\n");
            let err = AuditEntry::from_commit_message(&message).err();
            let expected = format!("missing field `{missing}` at line 1 column ");
            assert!(
                matches!(&err, Some(EntryParseError::Json(why)) if why.starts_with(&expected)),
                "{err:?}"
            );
        }
        Ok(())
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

    fn deep(n: usize) -> serde_json::Value {
        let mut v = serde_json::json!(1);
        for _ in 0..n {
            v = serde_json::json!({ "a": v });
        }
        v
    }

    fn ev(name: &str) -> Event {
        Event::from_parts(name.into(), serde_json::json!({}))
    }

    fn evp(name: &str, payload: serde_json::Value) -> Event {
        Event::from_parts(name.into(), payload)
    }

    #[test]
    fn the_depth_of_json_text_is_the_depth_of_its_value() {
        let cases = [
            serde_json::json!(1),
            serde_json::json!("{[\"{"),
            serde_json::json!({}),
            serde_json::json!([]),
            serde_json::json!([[], {"a": [1, {"b": "]]}}"}]}]),
            serde_json::json!({"s": "\\\"[", "t": [[[["x\\"]]]]}),
            deep(MAX_ENTRY_DEPTH),
        ];
        for v in cases {
            let text = serde_json::to_string(&v).expect("serialises");
            assert_eq!(json_text_depth(&text), json_depth(&v), "{text}");
        }
    }

    #[test]
    fn a_decision_nested_too_deeply_is_refused_by_name() {
        // The entry, the decision, its request and the request's context
        // are four levels; `n` more in the context.
        let with_context = |n: usize| {
            let d: DecisionRecord = serde_json::from_value(serde_json::json!({
                "outcome": "needs_person", "policies": [], "policy_version": "v",
                "request": {"principal": {"type": "Agent", "id": "a"}, "action": "propose",
                            "resource": {"type": "Action", "id": "x"},
                            "context": {"c": deep(n)}}
            }))
            .expect("a decision");
            NewEntry::new(Actor::server(), ev("x"))
                .decision(d)
                .place(1, Utc::now().trunc_subsecs(6))
                .checked_commit_message()
                .map(|_| ())
                .map_err(|e| e.field)
        };
        assert_eq!(with_context(MAX_ENTRY_DEPTH - 4), Ok(()));
        assert_eq!(with_context(MAX_ENTRY_DEPTH - 3), Err("decision"));
    }

    #[test]
    fn hostile_entries_are_refused_before_writing() {
        let ok = |e: NewEntry| {
            e.place(1, Utc::now().trunc_subsecs(6))
                .checked_commit_message()
        };
        let field = |e: NewEntry| ok(e).map_err(|e| e.field);
        assert_eq!(
            field(NewEntry::new(Actor::server(), ev("note\n\n{\"x\":1}"))),
            Err("event_type")
        );
        assert_eq!(
            field(NewEntry::new(Actor::server(), ev("note\u{0}"))),
            Err("event_type")
        );
        assert_eq!(
            field(NewEntry::new(Actor::server(), ev(""))),
            Err("event_type")
        );
        assert_eq!(
            field(NewEntry::new(Actor::server(), ev("x")).agent("a\nb")),
            Err("agent_id")
        );
        assert_eq!(
            field(NewEntry::new(Actor::server(), ev("x")).proposal("p\u{0}")),
            Err("proposal_id")
        );
        assert_eq!(
            field(NewEntry::new(Actor::server(), ev("x")).task("")),
            Err("task_id")
        );
        assert_eq!(
            field(NewEntry::new(Actor("a\u{1b}[2J".into()), ev("x"))),
            Err("actor")
        );
        // 63 levels in the payload make 64 with the entry: the limit.
        assert!(ok(NewEntry::new(
            Actor::server(),
            evp("x", deep(MAX_ENTRY_DEPTH - 1))
        ))
        .is_ok());
        assert_eq!(
            field(NewEntry::new(
                Actor::server(),
                evp("x", deep(MAX_ENTRY_DEPTH))
            )),
            Err("payload")
        );
        let big = serde_json::json!({"s": "x".repeat(MAX_ENTRY_BYTES)});
        assert_eq!(
            field(NewEntry::new(Actor::server(), evp("x", big))),
            Err("payload")
        );
        // Strings inside the payload may hold anything: JSON escapes them.
        let e = NewEntry::new(
            Actor::server(),
            evp(
                "agent.note-1",
                serde_json::json!({"s": "a\u{0}b\n\n{\"x\":1}", "f": 0.1}),
            ),
        );
        let placed = e.place(1, Utc::now().trunc_subsecs(6));
        let (msg, back) = placed.checked_commit_message().expect("readable");
        assert_eq!(back, placed);
        assert_eq!(AuditEntry::from_commit_message(&msg), Ok(placed));
    }

    #[test]
    fn timestamps_outside_the_years_1970_to_9999_are_refused() {
        assert!(Timestamp::parse("9999-12-31T23:59:59-23:59").is_err());
        assert!(Timestamp::parse("1969-12-31T23:59:59+00:00").is_err());
        assert!(Timestamp::parse("9999-12-31T23:59:59+00:00").is_ok());
        assert!(Timestamp::parse("2026-11-25T08:40:00.5+01:00").is_ok());
    }
}
