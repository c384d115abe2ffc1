//! The shape of one Cedar question, kept as plain data so that it can be
//! written into the audit chain and replayed later against another policy set.

use serde::{Deserialize, Serialize};

/// A Cedar entity named by type and id, e.g. `Agent::"noop"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

impl EntityRef {
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
        }
    }
}

impl std::fmt::Display for EntityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{:?}", self.kind, self.id)
    }
}

/// An entity that takes part in a request, with its attributes and parents.
/// Entities the policy set already knows (action types and their categories,
/// tools) need not be repeated here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityData {
    pub uid: EntityRef,
    #[serde(default)]
    pub attrs: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub parents: Vec<EntityRef>,
    /// Cedar entity tags: an open map of string values that policies read
    /// with `hasTag`/`getTag` (the arguments of an MCP call).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub tags: serde_json::Map<String, serde_json::Value>,
}

/// One authorization question: may `principal` do `action` on `resource` given
/// `context`. `action` is the bare action id (`propose`, `use_tool`, `approve`,
/// `continue`). The context must not contain `human_approved`: the evaluator
/// adds it (first `false`, then `true`) to derive the three outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CedarRequest {
    pub principal: EntityRef,
    pub action: String,
    pub resource: EntityRef,
    #[serde(default)]
    pub context: serde_json::Map<String, serde_json::Value>,
    /// Entities sent along with the request (the principal with its
    /// attributes, a resource unknown to the policy set, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<EntityData>,
}

/// The three outcomes derived from Cedar's two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed without a person (`human_approved: false` is enough).
    Auto,
    /// Allowed only once a person approves (`human_approved: true` needed).
    NeedsPerson,
    /// Denied whatever a person says, or the question could not be evaluated.
    Forbidden,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Auto => "auto",
            Outcome::NeedsPerson => "needs_person",
            Outcome::Forbidden => "forbidden",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy that took part in a decision, named by its `@id` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyCitation {
    pub id: String,
    pub reason: String,
    /// `permit` or `forbid` (absent in entries written before gov recorded
    /// it): for a proposal that needs a person, the forbids are the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

/// The answer to a [`CedarRequest`], with the explanation that goes into the
/// audit chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// The policies that decided: for `Auto` and `NeedsPerson` the permits
    /// that allowed (and, for `NeedsPerson`, the forbids that held out for a
    /// person); for `Forbidden` the forbids that denied. Empty when nothing
    /// matched (default deny).
    pub policies: Vec<PolicyCitation>,
    /// Evaluation errors; any error makes the outcome `Forbidden`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The policy version: the commit of `main` the set was loaded from.
    pub policy_version: String,
    /// A forbid among `policies` carries `@self_approve("blocked")`: the
    /// action is reserved for a person, so an agent that asked to skip the
    /// person (`requires_approval: false`) is refused (`self_approve_blocked`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub self_approve_blocked: bool,
    /// What would have been decided were the shadow policies
    /// (`@mode("shadow")`) that can apply enforced. Absent when no shadow
    /// policy can apply; never changes `outcome`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowDecision>,
}

impl Decision {
    /// What the shadow policies would have done, for people:
    /// `would be forbidden by ban-x (decided auto)`; `None` when no shadow
    /// policy could apply.
    pub fn shadow_summary(&self) -> Option<String> {
        let shadow = self.shadow.as_ref()?;
        let ids: Vec<&str> = shadow.policies.iter().map(|p| p.id.as_str()).collect();
        Some(format!(
            "would be {}{} (decided {})",
            shadow.outcome,
            if ids.is_empty() {
                String::new()
            } else {
                format!(" by {}", ids.join(", "))
            },
            self.outcome
        ))
    }
}

/// The would-be effect of shadow policies on one decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowDecision {
    /// The outcome with the shadow policies enforced.
    pub outcome: Outcome,
    /// The shadow policies among those that would have decided.
    pub policies: Vec<PolicyCitation>,
}

/// What the audit chain records about a decision: the decision and the full
/// request, so that it can be replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    #[serde(flatten)]
    pub decision: Decision,
    pub request: CedarRequest,
}
