//! What a run reports about the tool calls its agent made, and the check
//! that each of them went through gov: Claude Code names every call with a
//! `tool_use` id in its stream, and gov's hook sends the same id with the
//! call it asks about, so a call whose id the policy set never saw ran
//! without a decision (the hook was switched off, or did not fire).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// One tool call a claude agent's stream reported (`tool_use` block).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ToolUse {
    pub id: String,
    pub name: String,
}

/// The reported calls that have no decision among `decided` (tool_use ids),
/// in the order they were reported, each once.
pub fn undecided<'a>(reported: &'a [ToolUse], decided: &BTreeSet<String>) -> Vec<&'a ToolUse> {
    let mut seen = BTreeSet::new();
    reported
        .iter()
        .filter(|t| !decided.contains(&t.id) && seen.insert(&t.id))
        .collect()
}

/// The run's failure reason for undecided calls: at most a few are named.
pub fn undecided_reason(calls: &[&ToolUse]) -> String {
    const SHOWN: usize = 5;
    let mut named: Vec<String> = calls
        .iter()
        .take(SHOWN)
        .map(|t| format!("{} ({})", t.id, t.name))
        .collect();
    if calls.len() > SHOWN {
        named.push(format!("and {} more", calls.len() - SHOWN));
    }
    format!(
        "tool_without_gov_decision: {} tool call(s) ran without a decision from gov: {}",
        calls.len(),
        named.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, name: &str) -> ToolUse {
        ToolUse {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn calls_without_a_decision_are_named_once() {
        let reported = [
            t("a", "Read"),
            t("b", "Bash"),
            t("b", "Bash"),
            t("c", "Write"),
        ];
        let decided: BTreeSet<String> = ["a".to_string()].into();
        let missing = undecided(&reported, &decided);
        assert_eq!(missing, [&reported[1], &reported[3]]);
        assert_eq!(
            undecided_reason(&missing),
            "tool_without_gov_decision: 2 tool call(s) ran without a decision from gov: b (Bash), c (Write)"
        );
        let all: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        assert!(undecided(&reported, &all).is_empty());
    }

    #[test]
    fn long_lists_are_cut() {
        let reported: Vec<ToolUse> = (0..8).map(|i| t(&format!("t{i}"), "Read")).collect();
        let missing = undecided(&reported, &BTreeSet::new());
        assert!(undecided_reason(&missing).ends_with("t4 (Read), and 3 more"));
    }
}
