//! What changed between two policy sets, by policy id (not a text diff):
//! policies added, removed, changed (their Cedar text) and annotations
//! changed (reason, mode, self-approval), plus the schema's entity types
//! and actions and the static entities.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::policy::{PolicyInfo, PolicySet};

/// One policy that is in both sets but differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub id: String,
    /// The Cedar text (scope, conditions or effect) differs.
    pub text: bool,
    /// Each annotation that differs: name, before, after.
    pub annotations: Vec<(String, String, String)>,
}

/// Names added to and removed from a list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Delta {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// In both, but different (static entities: attributes or parents).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    fn of<V: PartialEq>(from: &BTreeMap<String, V>, to: &BTreeMap<String, V>) -> Delta {
        Delta {
            added: to
                .keys()
                .filter(|k| !from.contains_key(*k))
                .cloned()
                .collect(),
            removed: from
                .keys()
                .filter(|k| !to.contains_key(*k))
                .cloned()
                .collect(),
            changed: to
                .iter()
                .filter(|(k, v)| from.get(*k).is_some_and(|old| old != *v))
                .map(|(k, _)| k.clone())
                .collect(),
        }
    }
}

/// The difference between two policy sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDiff {
    pub from: String,
    pub to: String,
    pub added: Vec<PolicyInfo>,
    pub removed: Vec<PolicyInfo>,
    pub changed: Vec<Changed>,
    pub entity_types: Delta,
    pub actions: Delta,
    pub entities: Delta,
}

impl PolicyDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.entity_types.is_empty()
            && self.actions.is_empty()
            && self.entities.is_empty()
    }
}

fn annotations(p: &PolicyInfo) -> [(&'static str, String); 3] {
    [
        ("reason", p.reason.clone()),
        (
            "mode",
            if p.shadow { "shadow" } else { "enforce" }.to_string(),
        ),
        (
            "self_approve",
            if p.self_approve_blocked {
                "blocked"
            } else {
                "-"
            }
            .to_string(),
        ),
    ]
}

/// Compares two loaded sets.
pub fn diff(from: &PolicySet, to: &PolicySet) -> PolicyDiff {
    let old: BTreeMap<String, PolicyInfo> = from
        .policies()
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
    let new: BTreeMap<String, PolicyInfo> = to
        .policies()
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
    let mut changed = Vec::new();
    for (id, after) in &new {
        let Some(before) = old.get(id) else { continue };
        let text = before.text != after.text;
        let annotations: Vec<(String, String, String)> = annotations(before)
            .into_iter()
            .zip(annotations(after))
            .filter(|((_, a), (_, b))| a != b)
            .map(|((name, a), (_, b))| (name.to_string(), a, b))
            .collect();
        if text || !annotations.is_empty() {
            changed.push(Changed {
                id: id.clone(),
                text,
                annotations,
            });
        }
    }
    let names =
        |v: Vec<String>| -> BTreeMap<String, ()> { v.into_iter().map(|n| (n, ())).collect() };
    let set = |v: BTreeSet<String>| v.into_iter().collect::<Vec<_>>();
    PolicyDiff {
        from: from.version().to_string(),
        to: to.version().to_string(),
        added: new
            .iter()
            .filter(|(id, _)| !old.contains_key(*id))
            .map(|(_, p)| p.clone())
            .collect(),
        removed: old
            .iter()
            .filter(|(id, _)| !new.contains_key(*id))
            .map(|(_, p)| p.clone())
            .collect(),
        changed,
        entity_types: Delta::of(
            &names(set(from.entity_types())),
            &names(set(to.entity_types())),
        ),
        actions: Delta::of(&names(set(from.actions())), &names(set(to.actions()))),
        entities: Delta::of(&from.static_entities(), &to.static_entities()),
    }
}
