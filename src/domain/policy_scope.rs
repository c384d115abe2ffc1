//! Which policies can apply to a request, read from each policy's scope
//! (`principal`, `action`, `resource` in its head), so that a decision
//! evaluates only those.
//!
//! A policy whose scope does not match the request is never satisfied and
//! never errors (Cedar checks the scope before the conditions), so leaving
//! it out changes no answer. The index over-approximates: `principal in X`
//! and `resource in X` match any entity (its ancestors are only known with
//! the request's entities), and `action in [...]` naming an action group
//! matches every action.
//!
//! The sets are built once per distinct key (action, principal, resource,
//! where an id counts only when some policy names it) and kept, so the
//! number of sets is bounded by the policy set, not by traffic.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cedar_policy as cedar;

/// What a policy's scope admits for the principal or the resource.
#[derive(Debug, Clone)]
enum Slot {
    Any,
    /// `== Type::"id"`: the type and id, as Cedar prints them.
    Uid(String, String),
    /// `is Type` (also `is Type in ...`).
    Type(String),
}

impl Slot {
    fn admits(&self, kind: &str, id: &str) -> bool {
        match self {
            Slot::Any => true,
            Slot::Uid(k, i) => k == kind && i == id,
            Slot::Type(k) => k == kind,
        }
    }

    fn principal(c: cedar::PrincipalConstraint) -> Slot {
        match c {
            cedar::PrincipalConstraint::Any | cedar::PrincipalConstraint::In(_) => Slot::Any,
            cedar::PrincipalConstraint::Eq(uid) => uid_slot(&uid),
            cedar::PrincipalConstraint::Is(t) | cedar::PrincipalConstraint::IsIn(t, _) => {
                Slot::Type(t.to_string())
            }
        }
    }

    fn resource(c: cedar::ResourceConstraint) -> Slot {
        match c {
            cedar::ResourceConstraint::Any | cedar::ResourceConstraint::In(_) => Slot::Any,
            cedar::ResourceConstraint::Eq(uid) => uid_slot(&uid),
            cedar::ResourceConstraint::Is(t) | cedar::ResourceConstraint::IsIn(t, _) => {
                Slot::Type(t.to_string())
            }
        }
    }
}

fn uid_slot(uid: &cedar::EntityUid) -> Slot {
    Slot::Uid(
        uid.type_name().to_string(),
        uid.id().unescaped().to_string(),
    )
}

/// One policy and where it can apply.
struct Scoped {
    policy: cedar::Policy,
    /// The actions (as `Action::"id"`) it can apply to; `None`: any.
    actions: Option<HashSet<String>>,
    principal: Slot,
    resource: Slot,
    shadow: bool,
}

/// The policies that can apply to one kind of request.
#[derive(Debug)]
pub struct Applicable {
    /// The enforced policies: they decide.
    pub enforced: cedar::PolicySet,
    /// The enforced and the shadow policies together, when a shadow policy
    /// can apply: what would be decided were the shadows enforced.
    pub with_shadow: Option<cedar::PolicySet>,
}

/// Bound on the cached sets (keys come from requests; a flood of odd
/// types must not grow memory).
const MAX_CACHED: usize = 4096;

/// What the policies that apply to a request depend on: its action, and
/// its principal's and resource's types, with their ids when a policy
/// names them.
type CacheKey = (
    cedar::EntityUid,
    cedar::EntityTypeName,
    Option<cedar::EntityId>,
    cedar::EntityTypeName,
    Option<cedar::EntityId>,
);

/// The index: every policy with its scope, and the sets built so far.
pub struct ScopeIndex {
    scoped: Vec<Scoped>,
    /// Uids that some policy names with `==`: only these make a key apart.
    named: HashSet<cedar::EntityUid>,
    cache: Mutex<HashMap<CacheKey, Arc<Applicable>>>,
}

impl std::fmt::Debug for ScopeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeIndex")
            .field("policies", &self.scoped.len())
            .finish_non_exhaustive()
    }
}

impl ScopeIndex {
    /// Indexes `policies` (each with whether it is a shadow policy);
    /// `action_groups` are the schema's action groups.
    pub fn new<'a>(
        policies: impl IntoIterator<Item = (&'a cedar::Policy, bool)>,
        action_groups: &HashSet<String>,
    ) -> ScopeIndex {
        let mut named = HashSet::new();
        let scoped: Vec<Scoped> = policies
            .into_iter()
            .map(|(policy, shadow)| {
                let actions = match policy.action_constraint() {
                    cedar::ActionConstraint::Any => None,
                    cedar::ActionConstraint::Eq(a) => Some(HashSet::from([a.to_string()])),
                    cedar::ActionConstraint::In(list) => {
                        let list: HashSet<String> = list.iter().map(|a| a.to_string()).collect();
                        if list.iter().any(|a| action_groups.contains(a)) {
                            None
                        } else {
                            Some(list)
                        }
                    }
                };
                let principal = Slot::principal(policy.principal_constraint());
                let resource = Slot::resource(policy.resource_constraint());
                if let cedar::PrincipalConstraint::Eq(uid) = policy.principal_constraint() {
                    named.insert(uid);
                }
                if let cedar::ResourceConstraint::Eq(uid) = policy.resource_constraint() {
                    named.insert(uid);
                }
                Scoped {
                    policy: policy.clone(),
                    actions,
                    principal,
                    resource,
                    shadow,
                }
            })
            .collect();
        ScopeIndex {
            scoped,
            named,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The policies that can apply to a request with these (parsed) uids.
    pub fn applicable(
        &self,
        action: &cedar::EntityUid,
        principal: &cedar::EntityUid,
        resource: &cedar::EntityUid,
    ) -> Result<Arc<Applicable>, String> {
        // A principal or resource no policy names is known by its type
        // alone: every agent without a rule of its own shares one entry.
        let named = |uid: &cedar::EntityUid| self.named.contains(uid).then(|| uid.id().clone());
        let key: CacheKey = (
            action.clone(),
            principal.type_name().clone(),
            named(principal),
            resource.type_name().clone(),
            named(resource),
        );
        if let Some(hit) = self
            .cache
            .lock()
            .map_err(|_| "policy cache poisoned".to_string())?
            .get(&key)
        {
            return Ok(hit.clone());
        }
        let action = action.to_string();
        let (pk, pi) = (
            principal.type_name().to_string(),
            principal.id().unescaped().to_string(),
        );
        let (rk, ri) = (
            resource.type_name().to_string(),
            resource.id().unescaped().to_string(),
        );
        let mut enforced = Vec::new();
        let mut shadows = Vec::new();
        for s in &self.scoped {
            let applies = s.actions.as_ref().is_none_or(|a| a.contains(&action))
                && s.principal.admits(&pk, &pi)
                && s.resource.admits(&rk, &ri);
            if applies {
                if s.shadow {
                    shadows.push(s.policy.clone());
                } else {
                    enforced.push(s.policy.clone());
                }
            }
        }
        let build = |ps: Vec<cedar::Policy>| {
            cedar::PolicySet::from_policies(ps).map_err(|e| format!("cannot index policies: {e}"))
        };
        let with_shadow = if shadows.is_empty() {
            None
        } else {
            Some(build(enforced.iter().cloned().chain(shadows).collect())?)
        };
        let applicable = Arc::new(Applicable {
            enforced: build(enforced)?,
            with_shadow,
        });
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| "policy cache poisoned".to_string())?;
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, applicable.clone());
        Ok(applicable)
    }
}
