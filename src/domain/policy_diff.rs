//! What changed between two policy sets, by policy id (not a text diff):
//! policies added, removed and changed (effect, scope and conditions as
//! Cedar parses them, so layout and comments do not count, and every
//! annotation), plus the schema's declarations (entity types, actions,
//! common types) and the static entities.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::policy::{PolicyInfo, PolicySet};

/// One policy that is in both sets but differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub id: String,
    /// The effect before and after, when it changed (`permit`, `forbid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<(String, String)>,
    /// The scope or the conditions differ (not only the layout).
    pub condition: bool,
    /// Each annotation that differs: name, before, after (`-` for absent).
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
    /// The schema's entity types; `changed`: their attributes or parents.
    pub entity_types: Delta,
    /// The schema's actions; `changed`: what they apply to, their context.
    pub actions: Delta,
    /// The schema's common types (`type Name = ...`).
    #[serde(skip_serializing_if = "Delta::is_empty")]
    pub common_types: Delta,
    pub entities: Delta,
}

impl PolicyDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.entity_types.is_empty()
            && self.actions.is_empty()
            && self.common_types.is_empty()
            && self.entities.is_empty()
    }
}

/// Each annotation (but `@id`) in either policy that differs between them.
fn annotation_changes(before: &PolicyInfo, after: &PolicyInfo) -> Vec<(String, String, String)> {
    let names: BTreeSet<&String> = before
        .annotations
        .keys()
        .chain(after.annotations.keys())
        .collect();
    let value = |p: &PolicyInfo, name: &str| {
        p.annotations
            .get(name)
            .cloned()
            .unwrap_or_else(|| "-".to_string())
    };
    names
        .into_iter()
        .filter(|n| before.annotations.get(*n) != after.annotations.get(*n))
        .map(|n| (n.clone(), value(before, n), value(after, n)))
        .collect()
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
        let effect =
            (before.effect != after.effect).then(|| (before.effect.clone(), after.effect.clone()));
        let condition = before.body != after.body;
        let annotations = annotation_changes(before, after);
        if effect.is_some() || condition || !annotations.is_empty() {
            changed.push(Changed {
                id: id.clone(),
                effect,
                condition,
                annotations,
            });
        }
    }
    let (a, b) = (from.schema_declarations(), to.schema_declarations());
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
        entity_types: Delta::of(&a.entity_types, &b.entity_types),
        actions: Delta::of(&a.actions, &b.actions),
        common_types: Delta::of(&a.common_types, &b.common_types),
        entities: Delta::of(&from.static_entities(), &to.static_entities()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::policy::PolicySource;

    pub(crate) const SCHEMA: &str = "entity Agent = { group: String };\nentity ActionType;\n\
        action propose appliesTo { principal: [Agent], resource: [ActionType], \
        context: { human_approved: Bool } };\n";

    pub(crate) fn set(
        schema: &str,
        policies: &str,
        entities: Option<&str>,
        version: &str,
    ) -> PolicySet {
        let entities = entities.map(|e| PolicySource::new("policies/entities.json", e));
        PolicySet::load(
            &PolicySource::new("policies/schema.cedarschema", schema),
            &[PolicySource::new("policies/p.cedar", policies)],
            entities.as_ref(),
            version,
        )
        .expect("the test set loads")
    }

    pub(crate) const BEFORE: &str = r#"
@id("same") @reason("r")
permit (principal, action == Action::"propose", resource);

@id("flips") @reason("r")
forbid (principal, action, resource) when { principal.group == "a" };

@id("narrowed") @reason("r")
permit (principal, action, resource);

@id("renamed") @reason("old reason")
forbid (principal, action, resource) when { principal.group == "x" };

@id("gone") @reason("r")
forbid (principal, action, resource) when { principal.group == "y" };
"#;

    pub(crate) const AFTER: &str = r#"
// Only the layout and a comment differ: not a change.
@reason("r")
@id("same")
permit (
    principal,
    action == Action::"propose",
    resource
);

@id("flips") @reason("r")
permit (principal, action, resource) when { principal.group == "a" };

@id("narrowed") @reason("r")
permit (principal, action, resource) when { principal.group == "b" };

@id("renamed") @reason("new reason") @mode("shadow")
forbid (principal, action, resource) when { principal.group == "x" };

@id("new") @reason("added")
forbid (principal, action, resource) when { principal.group == "z" };
"#;

    #[test]
    fn policies_are_compared_by_id_effect_conditions_and_annotations() {
        let d = diff(
            &set(SCHEMA, BEFORE, None, "v1"),
            &set(SCHEMA, AFTER, None, "v2"),
        );
        let ids = |v: &[PolicyInfo]| v.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&d.added), ["new"]);
        assert_eq!(ids(&d.removed), ["gone"]);
        let pair = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        let ann = |n: &str, a: &str, b: &str| (n.to_string(), a.to_string(), b.to_string());
        assert_eq!(
            d.changed,
            vec![
                Changed {
                    id: "flips".into(),
                    effect: pair("forbid", "permit"),
                    condition: false,
                    annotations: vec![],
                },
                Changed {
                    id: "narrowed".into(),
                    effect: None,
                    condition: true,
                    annotations: vec![],
                },
                Changed {
                    id: "renamed".into(),
                    effect: None,
                    condition: false,
                    annotations: vec![
                        ann("mode", "-", "shadow"),
                        ann("reason", "old reason", "new reason"),
                    ],
                },
            ]
        );
        assert!(d.entity_types.is_empty() && d.actions.is_empty() && d.entities.is_empty());
        assert!(diff(
            &set(SCHEMA, BEFORE, None, "a"),
            &set(SCHEMA, BEFORE, None, "b")
        )
        .is_empty());
    }

    #[test]
    fn schema_declarations_and_static_entities_are_compared_by_name() {
        let schema2 = "entity Agent = { group: String, team?: String };\nentity ActionType;\n\
            entity Tool;\n\
            action propose appliesTo { principal: [Agent], resource: [ActionType], \
            context: { human_approved: Bool, cost?: Long } };\n\
            action approve appliesTo { principal: [Agent], resource: [ActionType] };\n";
        let before = set(
            SCHEMA,
            "",
            Some(
                r#"[{"uid": {"type": "ActionType", "id": "a"}, "attrs": {}, "parents": []},
                    {"uid": {"type": "ActionType", "id": "b"}, "attrs": {}, "parents": []}]"#,
            ),
            "v1",
        );
        let after = set(
            schema2,
            "",
            Some(
                r#"[{"uid": {"type": "ActionType", "id": "b"}, "attrs": {}, "parents": []},
                    {"uid": {"type": "ActionType", "id": "c"}, "attrs": {}, "parents": []}]"#,
            ),
            "v2",
        );
        let d = diff(&before, &after);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            d.entity_types,
            Delta {
                added: names(&["Tool"]),
                removed: vec![],
                changed: names(&["Agent"]),
            }
        );
        assert_eq!(
            d.actions,
            Delta {
                added: names(&["Action::\"approve\""]),
                removed: vec![],
                changed: names(&["Action::\"propose\""]),
            }
        );
        assert_eq!(
            d.entities,
            Delta {
                added: names(&["ActionType::\"c\""]),
                removed: names(&["ActionType::\"a\""]),
                changed: vec![],
            }
        );
        assert!(d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty());
    }
}
