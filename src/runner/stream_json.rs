//! Claude Code's `--output-format stream-json` output, one JSON event a line.
//! Field names follow the published types of `@anthropic-ai/claude-agent-sdk`
//! 0.3.332 (`SDKAssistantMessage`, `SDKResultMessage`, `ModelUsage`).
//!
//! - `assistant` messages carry `message.id`, `message.model` and
//!   `message.usage`. While a response streams, several assistant messages
//!   share one `message.id`, each repeating that message's usage so far; the
//!   usage of a message is therefore its latest (largest) report, and the
//!   stream's usage is the sum over message ids. Subagents' messages (with
//!   `parent_tool_use_id`) are counted the same way.
//! - the final `result` carries `modelUsage` (per model: `inputTokens`,
//!   `outputTokens`, `cacheReadInputTokens`, `cacheCreationInputTokens`,
//!   `costUSD`): the accounting field, subagents included. Its `usage`
//!   covers the main loop only and is used only when `modelUsage` is absent.
//!   `subtype` / `is_error` say whether the session succeeded.
//!
//! Everything else is teed to the run log.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use crate::domain::pricing::{TokenUsage, UsageByModel};

/// Token counts of a message or a session, as Claude Code reports them
/// (the API's `usage`): the same four counts gov prices.
pub type Usage = TokenUsage;

/// One model's totals in a result's `modelUsage` (SDK type `ModelUsage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default, rename = "costUSD")]
    pub cost_usd: f64,
}

impl From<ModelUsage> for TokenUsage {
    fn from(u: ModelUsage) -> TokenUsage {
        TokenUsage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_creation_input_tokens: u.cache_creation_input_tokens,
            cache_read_input_tokens: u.cache_read_input_tokens,
        }
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
    /// Per model, subagents included: what the budget is charged.
    #[serde(default, rename = "modelUsage")]
    pub model_usage: BTreeMap<String, ModelUsage>,
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

/// The parts of an assistant message that carry usage.
#[derive(Debug, Deserialize)]
struct AssistantUsage {
    message: MessageUsage,
}

#[derive(Debug, Deserialize)]
struct MessageUsage {
    id: String,
    #[serde(default)]
    model: String,
    usage: Usage,
}

/// The final usage of a run, per model, and whether it is only what the
/// stream showed (no result event: a run stopped or crashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalUsage {
    pub by_model: UsageByModel,
    pub estimate: bool,
}

/// What the runner has seen of a stream so far.
#[derive(Debug, Default, Clone)]
pub struct StreamSummary {
    pub lines: u64,
    pub unparsable_lines: u64,
    pub session_id: Option<String>,
    /// The model of the session (`system` `init`).
    pub model: Option<String>,
    /// The last result event seen (Claude Code prints exactly one).
    pub result: Option<ResultEvent>,
    /// Each assistant message's latest usage, by `message.id`.
    messages: HashMap<String, (String, TokenUsage)>,
    /// Every `tool_use` block of the assistant's messages (subagents'
    /// included): each must have a gov decision.
    pub tool_uses: Vec<crate::domain::run::ToolUse>,
}

impl StreamSummary {
    /// The usage the stream has shown so far, per model, each message
    /// counted once.
    pub fn stream_usage(&self) -> UsageByModel {
        let mut out = UsageByModel::new();
        for (model, u) in self.messages.values() {
            let e = out.entry(model.clone()).or_default();
            *e = e.plus(*u);
        }
        out
    }

    /// What the run is charged in all: the result's `modelUsage`; without
    /// it the result's `usage` (main loop only) or the stream's, whichever
    /// is more; without a result, the stream's, as an estimate.
    pub fn final_usage(&self) -> FinalUsage {
        let stream = self.stream_usage();
        let Some(r) = &self.result else {
            return FinalUsage {
                by_model: stream,
                estimate: true,
            };
        };
        if !r.model_usage.is_empty() {
            let by_model = r
                .model_usage
                .iter()
                .map(|(m, u)| (m.clone(), TokenUsage::from(*u)))
                .collect();
            return FinalUsage {
                by_model,
                estimate: false,
            };
        }
        let main = r.usage;
        let by_model = if main.total() > stream.values().map(TokenUsage::total).sum() {
            let mut m = UsageByModel::new();
            m.insert(self.model.clone().unwrap_or_default(), main);
            m
        } else {
            stream
        };
        FinalUsage {
            by_model,
            estimate: false,
        }
    }

    /// Takes one line of output; true when it reported new usage. Lines
    /// that are not JSON are counted and otherwise ignored: they never fail
    /// a run by themselves.
    pub fn observe(&mut self, line: &str) -> bool {
        let line = line.trim();
        if line.is_empty() {
            return false;
        }
        self.lines += 1;
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => {
                self.unparsable_lines += 1;
                return false;
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
        match kind {
            "result" => match serde_json::from_value::<ResultEvent>(value) {
                Ok(r) => self.result = Some(r),
                Err(_) => self.unparsable_lines += 1,
            },
            "system" => {
                if let Some(m) = value.get("model").and_then(|m| m.as_str()) {
                    self.model.get_or_insert_with(|| m.to_string());
                }
            }
            "assistant" => {
                let Ok(a) = serde_json::from_value::<AssistantUsage>(value) else {
                    return false;
                };
                let usage = a.message.usage;
                let model = a.message.model;
                let slot = self
                    .messages
                    .entry(a.message.id)
                    .or_insert_with(|| (model, TokenUsage::default()));
                let grown = usage.max(slot.1);
                if grown != slot.1 {
                    slot.1 = grown;
                    return true;
                }
            }
            _ => {}
        }
        false
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
        text.lines().for_each(|l| {
            s.observe(l);
        });
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
    fn usage_streams_once_per_message_and_model_usage_is_final() {
        let msg = |id: &str, model: &str, input: u64, output: u64| {
            format!(
                r#"{{"type":"assistant","message":{{"id":"{id}","model":"{model}","usage":{{"input_tokens":{input},"output_tokens":{output},"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}}},"parent_tool_use_id":null}}"#
            )
        };
        let mut s = StreamSummary::default();
        assert!(s.observe(&msg("m1", "claude-sonnet-4-5", 100, 1)));
        // The same message again, its usage not grown: nothing new.
        assert!(!s.observe(&msg("m1", "claude-sonnet-4-5", 100, 1)));
        assert!(s.observe(&msg("m1", "claude-sonnet-4-5", 100, 7)));
        assert!(s.observe(&msg("m2", "claude-haiku-4-5", 50, 5)));
        let streamed = s.stream_usage();
        assert_eq!(streamed["claude-sonnet-4-5"].total(), 107);
        assert_eq!(streamed["claude-haiku-4-5"].total(), 55);
        let f = s.final_usage();
        assert!(f.estimate, "no result: what the stream showed, an estimate");
        assert_eq!(f.by_model, streamed);
        s.observe(
            r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.01,"usage":{"input_tokens":100,"output_tokens":7},"modelUsage":{"claude-sonnet-4-5":{"inputTokens":100,"outputTokens":9,"cacheReadInputTokens":2,"cacheCreationInputTokens":3,"webSearchRequests":0,"costUSD":0.0004,"contextWindow":200000,"maxOutputTokens":64000},"claude-haiku-4-5":{"inputTokens":50,"outputTokens":5,"cacheReadInputTokens":0,"cacheCreationInputTokens":0,"webSearchRequests":0,"costUSD":0.0001,"contextWindow":200000,"maxOutputTokens":64000}}}"#,
        );
        let f = s.final_usage();
        assert!(!f.estimate);
        assert_eq!(f.by_model["claude-sonnet-4-5"].total(), 114);
        assert_eq!(
            f.by_model["claude-sonnet-4-5"].cache_creation_input_tokens,
            3
        );
        assert_eq!(f.by_model["claude-haiku-4-5"].total(), 55);
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
