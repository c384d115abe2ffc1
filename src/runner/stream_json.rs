//! Claude Code's `--output-format stream-json` output, one JSON event a line.
//! The runner only needs the final `{"type":"result", ...}` event: its usage
//! and cost are what the budget is charged, its `subtype` / `is_error` say
//! whether the session succeeded. Everything else is teed to the run log.

use serde::Deserialize;

/// Token counts of a session, as Claude Code reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// Every token the session used, cached or not: what the budget counts.
    pub fn total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }
}

/// The final event of a session.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResultEvent {
    #[serde(default)]
    pub subtype: String,
    #[serde(default)]
    pub is_error: bool,
    #[serde(default)]
    pub total_cost_usd: Option<f64>,
    #[serde(default)]
    pub usage: Usage,
    /// The final text, or for an error result what went wrong.
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub num_turns: Option<u64>,
}

impl ResultEvent {
    pub fn succeeded(&self) -> bool {
        !self.is_error && self.subtype == "success"
    }

    /// Why the session failed, for the run's `reason`: `error_result: …`.
    pub fn error_reason(&self) -> String {
        let mut what = if self.subtype.is_empty() {
            "error".to_string()
        } else {
            self.subtype.clone()
        };
        if let Some(text) = self
            .result
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let text: String = text.chars().take(200).collect();
            what = format!("{what}: {text}");
        }
        format!("error_result: {what}")
    }
}

/// What the runner has seen of a stream so far.
#[derive(Debug, Default, Clone)]
pub struct StreamSummary {
    pub lines: u64,
    pub unparsable_lines: u64,
    pub session_id: Option<String>,
    /// The last result event seen (Claude Code prints exactly one).
    pub result: Option<ResultEvent>,
    /// Every `tool_use` block of the assistant's messages (subagents'
    /// included): each must have a gov decision.
    pub tool_uses: Vec<crate::domain::run::ToolUse>,
}

impl StreamSummary {
    /// Takes one line of output. Lines that are not JSON are counted and
    /// otherwise ignored: they never fail a run by themselves.
    pub fn observe(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        self.lines += 1;
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => {
                self.unparsable_lines += 1;
                return;
            }
        };
        let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if let Some(s) = value.get("session_id").and_then(|s| s.as_str()) {
            if self.session_id.is_none() {
                self.session_id = Some(s.to_string());
            }
        }
        if kind == "assistant" {
            self.note_tool_uses(&value);
        }
        if kind == "result" {
            match serde_json::from_value::<ResultEvent>(value) {
                Ok(r) => self.result = Some(r),
                Err(_) => self.unparsable_lines += 1,
            }
        }
    }

    fn note_tool_uses(&mut self, message: &serde_json::Value) {
        let blocks = message
            .pointer("/message/content")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten();
        for block in blocks {
            if block.get("type").and_then(|t| t.as_str()) != Some("tool_use") {
                continue;
            }
            let text = |k: &str| block.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            self.tool_uses.push(crate::domain::run::ToolUse {
                id: text("id").to_string(),
                name: text("name").to_string(),
            });
        }
    }

    pub fn from_text(text: &str) -> StreamSummary {
        let mut s = StreamSummary::default();
        text.lines().for_each(|l| s.observe(l));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_all_four_token_counts() {
        let s = StreamSummary::from_text(
            r#"{"type":"system","subtype":"init","session_id":"abc"}
not json
{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.5,"usage":{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":3,"cache_read_input_tokens":4}}"#,
        );
        let r = s.result.expect("result");
        assert_eq!(r.usage.total(), 10);
        assert_eq!(r.total_cost_usd, Some(0.5));
        assert!(r.succeeded());
        assert_eq!(s.session_id.as_deref(), Some("abc"));
        assert_eq!(s.unparsable_lines, 1);
    }

    #[test]
    fn tool_uses_are_collected_from_assistant_messages() {
        let s = StreamSummary::from_text(
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"toolu_1","name":"Bash","input":{}}]},"parent_tool_use_id":null}
{"type":"assistant","message":{"content":[{"type":"tool_use","id":"toolu_2","name":"Read","input":{}}]},"parent_tool_use_id":"toolu_9"}
{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"toolu_1"}]}}"#,
        );
        let ids: Vec<(&str, &str)> = s
            .tool_uses
            .iter()
            .map(|t| (t.id.as_str(), t.name.as_str()))
            .collect();
        assert_eq!(ids, [("toolu_1", "Bash"), ("toolu_2", "Read")]);
    }

    #[test]
    fn error_results_say_why() {
        let s = StreamSummary::from_text(
            r#"{"type":"result","subtype":"error_max_turns","is_error":true,"usage":{}}"#,
        );
        let r = s.result.expect("result");
        assert!(!r.succeeded());
        assert_eq!(r.error_reason(), "error_result: error_max_turns");
        assert_eq!(r.usage.total(), 0);
        let s = StreamSummary::from_text(
            r#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: 500"}"#,
        );
        assert_eq!(
            s.result.expect("result").error_reason(),
            "error_result: success: API Error: 500"
        );
    }
}
