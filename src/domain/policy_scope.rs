//! Which policies can apply to a request, read from each policy's scope
//! (`principal`, `action`, `resource` in its head), so that a decision
//! evaluates only those.
//!
//! A policy whose scope does not match the request is never satisfied and
//! never errors (Cedar checks the scope before the conditions), so leaving
//! it out changes no answer. The index over-approximates: `principal in X`
//! matches any entity (its ancestors are only known with the request's
//! entities), `resource in X` any entity but a static one whose ancestors
//! are all static (a tool, an action type: a request cannot add to them,
//! see [`StaticAncestors`]), and `action in [...]` naming an action group
//! matches every action.
//!
//! The sets are built once per distinct key (action, principal, resource,
//! where an id counts only when some policy names it) and kept, so the
//! number of sets is bounded by the policy set, not by traffic.
//!
//! Each set also knows what is worth asking a second time, with
//! `context.human_approved` true (see [`Asked`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cedar_policy as cedar;

/// What a policy's scope admits for the principal or the resource.
#[derive(Debug, Clone)]
enum Slot {
    Any,
    /// `== Type::"id"`: the type and id, as Cedar prints them.
    Uid(String, String),
    /// `is Type` (also `is Type in ...` for the principal).
    Type(String),
    /// The resource's `in Type::"id"` (with `is T` first: that type too).
    In(Option<String>, (String, String)),
}

impl Slot {
    fn admits(&self, kind: &str, id: &str, statics: &StaticAncestors) -> bool {
        match self {
            Slot::Any => true,
            Slot::Uid(k, i) => k == kind && i == id,
            Slot::Type(k) => k == kind,
            Slot::In(k, group) => {
                k.as_ref().is_none_or(|k| k == kind) && statics.may_be_in(kind, id, group)
            }
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
            cedar::ResourceConstraint::Any => Slot::Any,
            cedar::ResourceConstraint::In(group) => Slot::In(None, uid_pair(&group)),
            cedar::ResourceConstraint::Eq(uid) => uid_slot(&uid),
            cedar::ResourceConstraint::Is(t) => Slot::Type(t.to_string()),
            cedar::ResourceConstraint::IsIn(t, group) => {
                Slot::In(Some(t.to_string()), uid_pair(&group))
            }
        }
    }
}

fn uid_slot(uid: &cedar::EntityUid) -> Slot {
    let (kind, id) = uid_pair(uid);
    Slot::Uid(kind, id)
}

/// An entity's type and id, as Cedar prints them.
fn uid_pair(uid: &cedar::EntityUid) -> (String, String) {
    (
        uid.type_name().to_string(),
        uid.id().unescaped().to_string(),
    )
}

/// The static entities (`entities.json`) whose ancestors are all static
/// entities too, with those ancestors. A request cannot change them: a
/// static entity wins over one of the same name that a request brings
/// (`PolicySet::request_entities`), and a static entity's parents are its
/// own. An ancestor named only as a parent, not defined itself, could be
/// given parents of its own by a request, so an entity below one is left
/// out (anything may be its ancestor).
#[derive(Debug, Default)]
pub struct StaticAncestors {
    closed: HashMap<(String, String), HashSet<(String, String)>>,
}

impl StaticAncestors {
    pub fn of(entities: &cedar::Entities) -> StaticAncestors {
        let mut closed = HashMap::new();
        for entity in entities.iter() {
            let uid = entity.uid();
            let Some(ancestors) = entities.ancestors(&uid) else {
                continue;
            };
            let ancestors: Vec<&cedar::EntityUid> = ancestors.collect();
            if ancestors.iter().all(|a| entities.get(a).is_some()) {
                closed.insert(
                    uid_pair(&uid),
                    ancestors.into_iter().map(uid_pair).collect(),
                );
            }
        }
        StaticAncestors { closed }
    }

    /// Whether `kind::id` may be in `group` (or be it): `false` only when
    /// it is known not to be, whatever the request brings.
    fn may_be_in(&self, kind: &str, id: &str, group: &(String, String)) -> bool {
        if group.0 == kind && group.1 == id {
            return true;
        }
        match self.closed.get(&(kind.to_string(), id.to_string())) {
            Some(ancestors) => ancestors.contains(group),
            None => true,
        }
    }

    /// The entities whose answers are known, as uids.
    fn uids(&self) -> impl Iterator<Item = cedar::EntityUid> + '_ {
        self.closed.keys().filter_map(|(kind, id)| {
            let kind = <cedar::EntityTypeName as std::str::FromStr>::from_str(kind).ok()?;
            Some(cedar::EntityUid::from_type_name_and_id(
                kind,
                cedar::EntityId::new(id),
            ))
        })
    }
}

/// One policy and where it can apply.
struct Scoped {
    policy: cedar::Policy,
    /// The actions (as `Action::"id"`) it can apply to; `None`: any.
    actions: Option<HashSet<String>>,
    principal: Slot,
    resource: Slot,
    shadow: bool,
    /// Which of principal, action and resource the index checks exactly.
    exact: [bool; 3],
    /// What a decision asks of it, made when a kind of request first
    /// reaches it (Cedar parses names again to make it, which would double
    /// the time a large set takes to load).
    prepared: std::sync::OnceLock<Prepared>,
}

/// A policy as decisions ask it.
struct Prepared {
    /// Without the scope parts the index checks exactly.
    policy: cedar::Policy,
    context: ContextUse,
    /// Context attributes that must be there for it to be satisfied or to
    /// err (see [`guards`]).
    guards: Vec<String>,
}

impl Scoped {
    fn prepared(&self) -> &Prepared {
        self.prepared.get_or_init(|| {
            let est = self.policy.to_json().ok();
            Prepared {
                context: ContextUse::of(est.as_ref()),
                guards: est.as_ref().map(guards).unwrap_or_default(),
                policy: without_checked_scope(&self.policy, est, self.exact),
            }
        })
    }
}

/// The policies that can apply to one kind of request.
#[derive(Debug)]
pub struct Applicable {
    /// The enforced policies: they decide.
    pub enforced: Asked,
    /// The enforced and the shadow policies together, when a shadow policy
    /// can apply: what would be decided were the shadows enforced.
    pub with_shadow: Option<Asked>,
    /// The shapes of plain contexts (see `policy::PlainContext`) the
    /// schema accepted in requests that reach this set. Whether it accepts
    /// a request depends on its action, its principal's and resource's
    /// types and its context's shape, and all but the shape are the same
    /// for every request here.
    pub shapes: Mutex<HashSet<String>>,
}

/// A set of policies as a decision asks it: first with
/// `context.human_approved` false, then, if that did not allow, with it
/// true.
///
/// The second question need not include a forbid that a person's approval
/// lifts: one with an `unless { context.human_approved }` clause that reads
/// `human_approved` nowhere else. With the value true, Cedar evaluates its
/// clauses up to that one exactly as in the first question (they do not
/// read it), and stops there: the policy is not satisfied, and an error
/// before that clause was already an error of the first question, which
/// then decided. So leaving it out changes no answer, cited policy or
/// error.
#[derive(Debug)]
pub struct Asked {
    /// Every policy: the first question.
    pub all: cedar::PolicySet,
    /// The second question: `all` without the forbids a person's approval
    /// lifts.
    pub once_approved: cedar::PolicySet,
    /// Whether a policy of `once_approved` reads the context at all. When
    /// none does, the first question's request can be asked again as it
    /// is: its `human_approved` is never read.
    pub once_approved_reads_context: bool,
    /// The context's attributes some policy of `all` reads; `None`: the
    /// whole context may be read. An attribute no policy reads (say a
    /// payload hash) changes no answer and no error, so it need not be
    /// given to Cedar once the schema has accepted the request's shape.
    pub context_attrs: Option<HashSet<String>>,
    /// For each attribute of `context_attrs`, the fields of it (a record:
    /// `shell`, `line`) some policy of `all` reads; a field no policy reads
    /// need not be given to Cedar either.
    pub context_fields: FieldReads,
    /// The forbids of `once_approved` that never read `human_approved`.
    /// The two questions differ only in that value, so such a forbid
    /// satisfied in the first question (and without error: the first
    /// question had none, or it would have decided) is satisfied in the
    /// second too, which then denies whatever else it finds.
    pub fixed_forbids: HashSet<cedar::PolicyId>,
    /// The policies of `once_approved` that may read `human_approved` (by
    /// name, or the context as a whole): the only ones whose answer or
    /// error the second question can change. `None` when there is none.
    /// When a fixed forbid was satisfied, the second question is asked of
    /// these alone, for the forbids they add and their errors.
    pub approval_readers: Option<cedar::PolicySet>,
}

/// For each attribute of the context, the fields of it that are read
/// (`context.a.f`, `context.a has f`); `None`: the attribute is read as a
/// whole (compared, passed on, or read deeper than one field by some other
/// path).
pub type FieldReads = HashMap<String, Option<HashSet<String>>>;

/// How a policy reads the request's context, from its conditions.
struct ContextUse {
    /// The context's attributes it reads (`context.a`, `context has a`);
    /// `None`: it reads the context as a whole (or could not be read).
    attrs: Option<HashSet<String>>,
    /// The fields of those attributes it reads.
    fields: FieldReads,
    /// It is a forbid that a person's approval lifts (see [`Asked`]).
    lifted_by_approval: bool,
}

impl ContextUse {
    /// Reads a policy's conditions in Cedar's JSON form. Anything it cannot
    /// read counts as reading the whole context, and lifts nothing.
    fn of(est: Option<&serde_json::Value>) -> ContextUse {
        let unknown = ContextUse {
            attrs: None,
            fields: FieldReads::new(),
            lifted_by_approval: false,
        };
        let Some(est) = est else {
            return unknown;
        };
        let Some(conditions) = est.get("conditions").and_then(|c| c.as_array()) else {
            return unknown;
        };
        let mut reads = Reads::default();
        let mut lifting_clauses = 0;
        for clause in conditions {
            let body = clause.get("body").unwrap_or(&serde_json::Value::Null);
            if clause.get("kind").and_then(|k| k.as_str()) == Some("unless")
                && context_attr(body, ".") == Some(HUMAN_APPROVED)
            {
                lifting_clauses += 1;
            }
            reads.walk(body);
        }
        ContextUse {
            lifted_by_approval: est.get("effect").and_then(|e| e.as_str()) == Some("forbid")
                && lifting_clauses == 1
                && reads.human_approved == 1
                && !reads.whole,
            attrs: (!reads.whole).then_some(reads.attrs),
            fields: reads.fields,
        }
    }

    fn reads(&self) -> bool {
        self.attrs.as_ref().is_none_or(|a| !a.is_empty())
    }

    /// Whether it may read `human_approved`.
    fn reads_approval(&self) -> bool {
        self.attrs
            .as_ref()
            .is_none_or(|a| a.contains(HUMAN_APPROVED))
    }
}

/// The policy with each part of its scope that the index checks exactly
/// (`principal == ...`, `principal is ...`, the action, and the same for
/// the resource; not `in`, which depends on the request's entities)
/// written as unconstrained, so that Cedar does not build and evaluate it
/// again for every request. The index offers a policy only to requests its
/// scope matches, so the answers are the same. The id and the conditions
/// are kept; if anything fails, the policy is kept as it is.
fn without_checked_scope(
    policy: &cedar::Policy,
    est: Option<serde_json::Value>,
    exact: [bool; 3],
) -> cedar::Policy {
    let all = serde_json::json!({"op": "All"});
    let Some(mut est) = est else {
        return policy.clone();
    };
    let mut changed = false;
    for (part, exact) in ["principal", "action", "resource"].into_iter().zip(exact) {
        if let (true, Some(slot)) = (exact, est.get_mut(part)) {
            changed |= *slot != all;
            *slot = all.clone();
        }
    }
    match changed {
        true => cedar::Policy::from_json(Some(policy.id().clone()), est)
            .unwrap_or_else(|_| policy.clone()),
        false => policy.clone(),
    }
}

/// The context attribute a decision sets: false, then true.
const HUMAN_APPROVED: &str = "human_approved";

/// What an expression reads of the context: attributes by name, how often
/// `human_approved`, and whether the context as a whole (compared, or
/// passed on).
#[derive(Default)]
struct Reads {
    attrs: HashSet<String>,
    fields: FieldReads,
    human_approved: usize,
    whole: bool,
}

impl Reads {
    fn walk(&mut self, expr: &serde_json::Value) {
        match expr {
            serde_json::Value::Object(map) => {
                // `context.a.f` or `context.a has f`: one field of `a`.
                for op in [".", "has"] {
                    if let Some((attr, field)) = context_field(expr, op) {
                        self.read(attr, Read::Field(field));
                        return;
                    }
                }
                for op in [".", "has"] {
                    if let Some(attr) = context_attr(expr, op) {
                        // `context has a` does not read the value.
                        let read = if op == "." {
                            Read::Whole
                        } else {
                            Read::Presence
                        };
                        self.read(attr, read);
                        return;
                    }
                }
                if map.get("Var").and_then(|v| v.as_str()) == Some("context") {
                    self.whole = true;
                    return;
                }
                map.values().for_each(|v| self.walk(v));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| self.walk(v)),
            _ => {}
        }
    }

    fn read(&mut self, attr: &str, read: Read) {
        if attr == HUMAN_APPROVED {
            self.human_approved += 1;
        }
        self.attrs.insert(attr.to_string());
        let fields = self
            .fields
            .entry(attr.to_string())
            .or_insert_with(|| Some(HashSet::new()));
        match read {
            Read::Whole => *fields = None,
            Read::Field(field) => {
                if let Some(fields) = fields {
                    fields.insert(field.to_string());
                }
            }
            Read::Presence => {}
        }
    }
}

/// How an expression reads an attribute of the context.
enum Read<'a> {
    /// Its value, as a whole.
    Whole,
    /// One field of its value (a record).
    Field(&'a str),
    /// Whether it is there (`context has a`).
    Presence,
}

/// The attribute and field in `context.attr.field` (`op` "."), or
/// `context.attr has field` (`op` "has"), when `expr` is exactly that.
fn context_field<'a>(expr: &'a serde_json::Value, op: &str) -> Option<(&'a str, &'a str)> {
    let inner = expr.as_object().filter(|m| m.len() == 1)?.get(op)?;
    let attr = context_attr(inner.get("left")?, ".")?;
    Some((attr, inner.get("attr")?.as_str()?))
}

/// The context attributes a policy tests with `context has a` before
/// anything else its conditions do: the first conjuncts of its first
/// clause, a `when`. Cedar checks the scope, then the clauses in order,
/// and stops at the first false conjunct; a `has` cannot fail. So without
/// one of these attributes the policy is neither satisfied nor in error,
/// and a decision need not ask it (`ScopeIndex::applicable`).
fn guards(est: &serde_json::Value) -> Vec<String> {
    fn conjuncts<'a>(expr: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        match expr
            .get("&&")
            .filter(|_| expr.as_object().is_some_and(|m| m.len() == 1))
        {
            Some(and) => {
                if let (Some(left), Some(right)) = (and.get("left"), and.get("right")) {
                    conjuncts(left, out);
                    conjuncts(right, out);
                } else {
                    out.push(expr);
                }
            }
            None => out.push(expr),
        }
    }
    let Some(first) = est
        .get("conditions")
        .and_then(|c| c.as_array())
        .and_then(|c| c.first())
    else {
        return Vec::new();
    };
    if first.get("kind").and_then(|k| k.as_str()) != Some("when") {
        return Vec::new();
    }
    let Some(body) = first.get("body") else {
        return Vec::new();
    };
    let mut all = Vec::new();
    conjuncts(body, &mut all);
    all.into_iter()
        .map_while(|c| context_attr(c, "has"))
        .filter(|a| *a != HUMAN_APPROVED)
        .map(str::to_string)
        .collect()
}

/// Merges what another policy reads of the attributes' fields into `into`.
fn merge_fields(into: &mut FieldReads, more: &FieldReads) {
    for (attr, fields) in more {
        let slot = into
            .entry(attr.clone())
            .or_insert_with(|| Some(HashSet::new()));
        match (slot.as_mut(), fields) {
            (Some(into), Some(more)) => into.extend(more.iter().cloned()),
            (Some(_), None) => *slot = None,
            (None, _) => {}
        }
    }
}

/// The attribute in `context.attr` (`op` "."), or `context has attr`
/// (`op` "has"), when `expr` is exactly that.
fn context_attr<'a>(expr: &'a serde_json::Value, op: &str) -> Option<&'a str> {
    let inner = expr.as_object().filter(|m| m.len() == 1)?.get(op)?;
    let left = inner.get("left")?;
    (left.get("Var")?.as_str()? == "context").then_some(())?;
    inner.get("attr")?.as_str()
}

impl Asked {
    fn of<'a>(policies: impl IntoIterator<Item = &'a Scoped>) -> Result<Asked, String> {
        let build = |ps: &[&Prepared]| {
            cedar::PolicySet::from_policies(ps.iter().map(|p| p.policy.clone()))
                .map_err(|e| format!("cannot index policies: {e}"))
        };
        let all: Vec<&Prepared> = policies.into_iter().map(Scoped::prepared).collect();
        let kept: Vec<&Prepared> = all
            .iter()
            .copied()
            .filter(|p| !p.context.lifted_by_approval)
            .collect();
        // `None` as soon as one policy may read the whole context.
        let context_attrs = all.iter().try_fold(HashSet::new(), |mut union, p| {
            union.extend(p.context.attrs.as_ref()?.iter().cloned());
            Some(union)
        });
        let mut context_fields = FieldReads::new();
        for p in &all {
            merge_fields(&mut context_fields, &p.context.fields);
        }
        let readers: Vec<&Prepared> = (kept.iter().copied())
            .filter(|p| p.context.reads_approval())
            .collect();
        let fixed_forbids = (kept.iter())
            .filter(|p| p.policy.effect() == cedar::Effect::Forbid && !p.context.reads_approval())
            .map(|p| p.policy.id().clone())
            .collect();
        Ok(Asked {
            all: build(&all)?,
            once_approved: build(&kept)?,
            once_approved_reads_context: kept.iter().any(|p| p.context.reads()),
            context_attrs,
            context_fields,
            fixed_forbids,
            approval_readers: match readers.is_empty() {
                true => None,
                false => Some(build(&readers)?),
            },
        })
    }
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
    /// Uids that some policy names with `==`, and when some resource is
    /// `in` a group, the static entities whose ancestors are known: only
    /// these make a key apart.
    named: HashSet<cedar::EntityUid>,
    statics: StaticAncestors,
    cache: Mutex<HashMap<CacheKey, Arc<Family>>>,
}

/// The policies whose scope matches one kind of request, and the sets
/// asked of them, by the guard attributes ([`guards`]) the context lacks.
struct Family {
    /// Indexes into `ScopeIndex::scoped`, enforced and shadow.
    enforced: Vec<usize>,
    shadows: Vec<usize>,
    /// Their guard attributes (at most [`MAX_GUARDS`]; a policy guarded by
    /// another one is asked whatever the context holds).
    guards: Vec<String>,
    /// The sets, by the guards absent (bit `i`: `guards[i]`).
    by_absent: Mutex<HashMap<u64, Arc<Applicable>>>,
}

/// How many guard attributes a family tells apart (bits of a `u64`).
const MAX_GUARDS: usize = 64;

impl std::fmt::Debug for ScopeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeIndex")
            .field("policies", &self.scoped.len())
            .finish_non_exhaustive()
    }
}

impl ScopeIndex {
    /// Indexes `policies` (each with whether it is a shadow policy);
    /// `action_groups` are the schema's action groups, `statics` the
    /// static entities' known ancestors.
    pub fn new<'a>(
        policies: impl IntoIterator<Item = (&'a cedar::Policy, bool)>,
        action_groups: &HashSet<String>,
        statics: StaticAncestors,
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
                let exact_action = match policy.action_constraint() {
                    cedar::ActionConstraint::In(_) => actions.is_some(),
                    _ => true,
                };
                let principal = Slot::principal(policy.principal_constraint());
                let resource = Slot::resource(policy.resource_constraint());
                // `in` (and `is ... in`) depends on the request's entities,
                // which the index does not see.
                let exact = [
                    !matches!(
                        policy.principal_constraint(),
                        cedar::PrincipalConstraint::In(_) | cedar::PrincipalConstraint::IsIn(..)
                    ),
                    exact_action,
                    !matches!(
                        policy.resource_constraint(),
                        cedar::ResourceConstraint::In(_) | cedar::ResourceConstraint::IsIn(..)
                    ),
                ];
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
                    exact,
                    prepared: std::sync::OnceLock::new(),
                }
            })
            .collect();
        if scoped.iter().any(|s| matches!(s.resource, Slot::In(..))) {
            named.extend(statics.uids());
        }
        ScopeIndex {
            scoped,
            named,
            statics,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The policies that can apply to a request with these (parsed) uids,
    /// whose context has the attributes `has` says.
    pub fn applicable(
        &self,
        action: &cedar::EntityUid,
        principal: &cedar::EntityUid,
        resource: &cedar::EntityUid,
        has: impl Fn(&str) -> bool,
    ) -> Result<Arc<Applicable>, String> {
        let family = self.family(action, principal, resource)?;
        let absent = (family.guards.iter().enumerate())
            .filter(|(_, g)| !has(g))
            .fold(0u64, |bits, (i, _)| bits | 1 << i);
        let poisoned = |_| "policy cache poisoned".to_string();
        if let Some(hit) = family.by_absent.lock().map_err(poisoned)?.get(&absent) {
            return Ok(hit.clone());
        }
        // A policy is left out when one of its guards is absent.
        let asked = |i: &&usize| {
            let guards = &self.scoped[**i].prepared().guards;
            !(family.guards.iter().enumerate())
                .any(|(bit, g)| absent & (1 << bit) != 0 && guards.contains(g))
        };
        let enforced: Vec<&Scoped> = (family.enforced.iter().filter(asked))
            .map(|&i| &self.scoped[i])
            .collect();
        let shadows: Vec<&Scoped> = (family.shadows.iter().filter(asked))
            .map(|&i| &self.scoped[i])
            .collect();
        let with_shadow = if shadows.is_empty() {
            None
        } else {
            Some(Asked::of(enforced.iter().chain(&shadows).copied())?)
        };
        let applicable = Arc::new(Applicable {
            enforced: Asked::of(enforced)?,
            with_shadow,
            shapes: Mutex::new(HashSet::new()),
        });
        let mut sets = family.by_absent.lock().map_err(poisoned)?;
        if sets.len() >= MAX_CACHED {
            sets.clear();
        }
        sets.insert(absent, applicable.clone());
        Ok(applicable)
    }

    /// The policies whose scope matches a request with these uids.
    fn family(
        &self,
        action: &cedar::EntityUid,
        principal: &cedar::EntityUid,
        resource: &cedar::EntityUid,
    ) -> Result<Arc<Family>, String> {
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
        let mut guards = std::collections::BTreeSet::new();
        for (i, s) in self.scoped.iter().enumerate() {
            let applies = s.actions.as_ref().is_none_or(|a| a.contains(&action))
                && s.principal.admits(&pk, &pi, &self.statics)
                && s.resource.admits(&rk, &ri, &self.statics);
            if applies {
                guards.extend(s.prepared().guards.iter().cloned());
                if s.shadow {
                    shadows.push(i);
                } else {
                    enforced.push(i);
                }
            }
        }
        let family = Arc::new(Family {
            enforced,
            shadows,
            guards: guards.into_iter().take(MAX_GUARDS).collect(),
            by_absent: Mutex::new(HashMap::new()),
        });
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| "policy cache poisoned".to_string())?;
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, family.clone());
        Ok(family)
    }
}
