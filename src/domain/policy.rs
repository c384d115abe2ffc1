//! The policy set: Cedar policies, their schema and static entities, loaded
//! once and asked many times.
//!
//! Three outcomes come from Cedar's two answers. [`PolicySet::decide`] asks
//! first with `human_approved: false` (Allow means auto-approved), then with
//! `true` (Allow means a person must approve); Deny both times is forbidden.
//! Any error on the way (a request that does not match the schema, an
//! evaluation error) is forbidden too: the set fails closed.
//!
//! Policies are re-keyed by their `@id` annotation so that decisions cite
//! stable names, and every policy is validated strictly against the schema
//! at load time: an unvalidated `forbid` that errors at run time would be
//! skipped by Cedar, which fails open.
//!
//! Pure: the sources come in as strings, nothing here reads files or Git.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use cedar_policy as cedar;
use miette::Diagnostic;
use serde::Serialize;

use super::policy_scope::{Asked, ScopeIndex};
use super::request::{
    CedarRequest, Decision, EntityData, EntityRef, Outcome, PolicyCitation, ShadowDecision,
};

mod load;
use load::diagnostic_message;
pub use load::{PolicyLoadError, PolicySource};

/// The annotation that marks a forbid reserving an action for a person: an
/// agent that asks to skip the person on such an action is refused.
pub const SELF_APPROVE_ANNOTATION: &str = "self_approve";
/// The value of [`SELF_APPROVE_ANNOTATION`] that blocks self-approval.
pub const SELF_APPROVE_BLOCKED: &str = "blocked";

/// What the dashboard and `gov policy` show about one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyInfo {
    pub id: String,
    pub reason: String,
    /// `permit` or `forbid`.
    pub effect: String,
    /// The file the policy comes from.
    pub file: String,
    /// The line its text starts on (1-based).
    pub line: usize,
    pub text: String,
    /// Carries `@self_approve("blocked")`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub self_approve_blocked: bool,
    /// Carries `@mode("shadow")`: evaluated and recorded, never deciding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// Every annotation but `@id`, by name (what `gov policy diff` compares).
    #[serde(skip)]
    pub annotations: BTreeMap<String, String>,
    /// The scope and conditions as Cedar's JSON form, without annotations
    /// and effect: equal for two texts that differ only in layout.
    #[serde(skip)]
    pub body: String,
}

/// A loaded, validated policy set: everything `decide` needs is built here
/// once, so that a decision costs two Cedar evaluations and little else.
pub struct PolicySet {
    schema: cedar::Schema,
    entities: cedar::Entities,
    authorizer: cedar::Authorizer,
    infos: Vec<PolicyInfo>,
    by_id: HashMap<String, usize>,
    version: String,
    declarations: SchemaDeclarations,
    /// Which policies can apply to which requests.
    scope: ScopeIndex,
    /// The schema's entity type names, parsed once.
    type_names: HashMap<String, cedar::EntityTypeName>,
    /// The static entities plus those a request brings, by the request's
    /// entities: agents repeat, so their hierarchy is computed once.
    entity_sets: Mutex<HashMap<String, Arc<cedar::Entities>>>,
}

/// Bound on [`PolicySet::entity_sets`] and on the accepted shapes of one
/// set of applicable policies (`Applicable::shapes`).
const MAX_ENTITY_SETS: usize = 4096;

/// The annotation that makes a policy a shadow policy: `@mode("shadow")`.
pub const MODE_ANNOTATION: &str = "mode";
/// The value of [`MODE_ANNOTATION`] for a shadow policy.
pub const MODE_SHADOW: &str = "shadow";
/// The value of [`MODE_ANNOTATION`] for an enforced policy (the default).
pub const MODE_ENFORCE: &str = "enforce";

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("version", &self.version)
            .field(
                "policies",
                &self.infos.iter().map(|i| &i.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl PolicySet {
    /// The policy version: the commit the set was loaded from.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Every policy, in file order.
    pub fn policies(&self) -> Vec<PolicyInfo> {
        self.infos.clone()
    }

    /// The schema's declarations (entity types, actions, common types), each
    /// by name with its definition as canonical JSON.
    pub fn schema_declarations(&self) -> &SchemaDeclarations {
        &self.declarations
    }

    /// The static entities (`entities.json`), each uid with its JSON.
    /// The schema's actions are entities too; they are left out here (the
    /// schema's declarations have them).
    pub fn static_entities(&self) -> std::collections::BTreeMap<String, String> {
        self.entities
            .iter()
            .filter(|e| e.uid().type_name().basename() != "Action")
            .map(|e| {
                let json = e
                    .to_json_value()
                    .map(|v| canonical_json(v).to_string())
                    .unwrap_or_default();
                (e.uid().to_string(), json)
            })
            .collect()
    }

    /// The policy with this `@id`.
    pub fn policy(&self, id: &str) -> Option<&PolicyInfo> {
        self.by_id.get(id).map(|&i| &self.infos[i])
    }

    /// Whether the static entities (`entities.json`) name this entity.
    pub fn knows(&self, entity: &EntityRef) -> bool {
        self.entity_uid(entity)
            .map(|uid| self.entities.get(&uid).is_some())
            .unwrap_or(false)
    }

    /// Decides a request. Never panics; any error is `Forbidden` with the
    /// error in `errors`. Shadow policies do not decide; their would-be
    /// effect is in `shadow`.
    pub fn decide(&self, req: &CedarRequest) -> Decision {
        self.decide_with(req, false)
    }

    /// Decides a request as if every shadow policy were enforced (what
    /// `gov policy impact` replays against).
    pub fn decide_enforcing_shadows(&self, req: &CedarRequest) -> Decision {
        self.decide_with(req, true)
    }

    fn decide_with(&self, req: &CedarRequest, enforce_shadows: bool) -> Decision {
        match self.try_decide_with(req, enforce_shadows) {
            Ok(d) => d,
            Err(e) => self.decision(Outcome::Forbidden, Vec::new(), vec![e]),
        }
    }

    /// [`PolicySet::decide`], with a request the schema refuses (an
    /// unknown action, a malformed entity or context) as an error rather
    /// than a `Forbidden` decision.
    pub fn try_decide(&self, req: &CedarRequest) -> Result<Decision, String> {
        self.try_decide_with(req, false)
    }

    fn try_decide_with(
        &self,
        req: &CedarRequest,
        enforce_shadows: bool,
    ) -> Result<Decision, String> {
        let principal = self.entity_uid(&req.principal)?;
        let resource = self.entity_uid(&req.resource)?;
        let action = self.entity_uid(&EntityRef::new("Action", req.action.clone()))?;
        let applicable = self
            .scope
            .applicable(&action, &principal, &resource, |attr| {
                req.context.contains_key(attr)
            })?;
        let entities = self.request_entities(req, &principal, &resource)?;
        // The widest question asked: with the shadows, when there are any.
        let widest = applicable
            .with_shadow
            .as_ref()
            .unwrap_or(&applicable.enforced);
        let accepted =
            |shape: &str| (applicable.shapes.lock()).is_ok_and(|shapes| shapes.contains(shape));
        let plain = PlainContext::of(&req.context, accepted, widest);
        let contexts = RequestParts {
            set: self,
            req,
            principal: &principal,
            action: &action,
            resource: &resource,
            entities: &entities,
            shapes: &applicable.shapes,
            plain_accepted: std::cell::Cell::new(plain.as_ref().is_some_and(|p| p.known)),
            plain,
        };
        match (&applicable.with_shadow, enforce_shadows) {
            (Some(all), true) => contexts.three_outcomes(all),
            (Some(all), false) => {
                let mut decision = contexts.three_outcomes(&applicable.enforced)?;
                let would = contexts.three_outcomes(all)?;
                let policies: Vec<PolicyCitation> = would
                    .policies
                    .into_iter()
                    .filter(|p| self.policy(&p.id).is_some_and(|i| i.shadow))
                    .collect();
                decision.shadow = Some(ShadowDecision {
                    outcome: would.outcome,
                    policies,
                });
                Ok(decision)
            }
            (None, _) => contexts.three_outcomes(&applicable.enforced),
        }
    }

    /// Parses an entity reference, with the schema's type names parsed
    /// once.
    fn entity_uid(&self, r: &EntityRef) -> Result<cedar::EntityUid, String> {
        let kind = match self.type_names.get(&r.kind) {
            Some(k) => k.clone(),
            None => cedar::EntityTypeName::from_str(&r.kind)
                .map_err(|_| format!("invalid entity type `{}`", r.kind))?,
        };
        Ok(cedar::EntityUid::from_type_name_and_id(
            kind,
            cedar::EntityId::new(&r.id),
        ))
    }

    /// The static entities plus those the request brings. A static entity
    /// always wins over one of the same name in the request, so a request
    /// cannot re-categorise an action type or a tool. A principal or resource
    /// known to neither is added with defaults. The result depends only on
    /// the request's entities, principal and resource, and is kept by them.
    fn request_entities(
        &self,
        req: &CedarRequest,
        principal: &cedar::EntityUid,
        resource: &cedar::EntityUid,
    ) -> Result<Arc<cedar::Entities>, String> {
        let key = serde_json::to_string(&(&req.entities, &req.principal, &req.resource))
            .map_err(|e| format!("invalid entities: {e}"))?;
        let poisoned = |_| "entity cache poisoned".to_string();
        if let Some(hit) = self.entity_sets.lock().map_err(poisoned)?.get(&key) {
            return Ok(hit.clone());
        }
        let mut extra: Vec<cedar::Entity> = Vec::new();
        let mut seen: Vec<cedar::EntityUid> = Vec::new();
        for data in &req.entities {
            let uid = self.entity_uid(&data.uid)?;
            if self.entities.get(&uid).is_some() || seen.contains(&uid) {
                continue;
            }
            extra.push(entity_from_data(data, &self.schema)?);
            seen.push(uid);
        }
        for (uid, name) in [(principal, &req.principal), (resource, &req.resource)] {
            if self.entities.get(uid).is_some() || seen.contains(uid) {
                continue;
            }
            extra.push(entity_from_data(&default_entity(name), &self.schema)?);
            seen.push(uid.clone());
        }
        let entities = Arc::new(
            self.entities
                .clone()
                .add_entities(extra, Some(&self.schema))
                .map_err(|e| format!("invalid entities: {}", diagnostic_message(&e)))?,
        );
        let mut cache = self.entity_sets.lock().map_err(poisoned)?;
        if cache.len() >= MAX_ENTITY_SETS {
            cache.clear();
        }
        cache.insert(key, entities.clone());
        Ok(entities)
    }

    fn decision(
        &self,
        outcome: Outcome,
        ids: Vec<cedar::PolicyId>,
        errors: Vec<String>,
    ) -> Decision {
        let mut cited: Vec<usize> = ids
            .iter()
            .filter_map(|id| self.by_id.get(AsRef::<str>::as_ref(id)).copied())
            .collect();
        cited.sort_unstable();
        cited.dedup();
        let self_approve_blocked = cited
            .iter()
            .any(|&i| self.infos[i].effect == "forbid" && self.infos[i].self_approve_blocked);
        Decision {
            outcome,
            policies: cited
                .iter()
                .map(|&i| PolicyCitation {
                    id: self.infos[i].id.clone(),
                    reason: self.infos[i].reason.clone(),
                    effect: Some(self.infos[i].effect.clone()),
                })
                .collect(),
            errors,
            policy_version: self.version.clone(),
            self_approve_blocked,
            shadow: None,
        }
    }
}

/// One request, its uids and entities resolved, asked of a policy set.
struct RequestParts<'a> {
    set: &'a PolicySet,
    req: &'a CedarRequest,
    principal: &'a cedar::EntityUid,
    action: &'a cedar::EntityUid,
    resource: &'a cedar::EntityUid,
    entities: &'a cedar::Entities,
    /// The request's context as Cedar values, built once for both
    /// evaluations, when it holds only plain JSON.
    plain: Option<PlainContext>,
    /// The shapes of plain contexts the schema accepted for such requests.
    shapes: &'a Mutex<HashSet<String>>,
    /// Whether the schema accepted a request built from `plain`: the next
    /// one differs only in `human_approved`'s value, and is not checked
    /// again.
    plain_accepted: std::cell::Cell<bool>,
}

impl RequestParts<'_> {
    /// The request, with `context.human_approved` set as given.
    fn request(&self, asked: &Asked, human_approved: bool) -> Result<cedar::Request, String> {
        let set = self.set;
        if let Some(request) = self.plain_request(asked, human_approved) {
            return Ok(request);
        }
        let mut context = self.req.context.clone();
        context.insert(
            "human_approved".into(),
            serde_json::Value::Bool(human_approved),
        );
        let context = cedar::Context::from_json_value(
            serde_json::Value::Object(context),
            Some((&set.schema, self.action)),
        )
        .map_err(|e| format!("invalid context: {}", diagnostic_message(&e)))?;
        cedar::Request::new(
            self.principal.clone(),
            self.action.clone(),
            self.resource.clone(),
            context,
            Some(&set.schema),
        )
        .map_err(|e| format!("invalid request: {}", diagnostic_message(&e)))
    }

    /// The request built from the plain context, if there is one and the
    /// schema accepts it as it is. Anything else (a string the schema
    /// types as a decimal or an entity, a wrong type) is left to Cedar's
    /// schema-directed JSON parser, whose values and errors are then the
    /// answer: a plain value the schema accepts is the value that parser
    /// would have made.
    ///
    /// The schema's check of a plain context depends only on its shape, so
    /// a request like one the set already accepted is not checked again.
    ///
    /// Once the shape is accepted, the context given to Cedar holds only
    /// the attributes the asked policies read.
    fn plain_request(&self, asked: &Asked, human_approved: bool) -> Option<cedar::Request> {
        let plain = self.plain.as_ref()?;
        let known = self.plain_accepted.get()
            || (self.shapes.lock()).is_ok_and(|shapes| shapes.contains(&plain.shape));
        let read = |name: &String| match (&asked.context_attrs, known) {
            (Some(attrs), true) => attrs.contains(name),
            _ => true,
        };
        let pairs = plain
            .pairs
            .iter()
            .filter(|(k, _)| read(k))
            .cloned()
            .chain([(
                "human_approved".to_string(),
                cedar::RestrictedExpression::new_bool(human_approved),
            )]);
        let context = cedar::Context::from_pairs(pairs).ok()?;
        let request = cedar::Request::new(
            self.principal.clone(),
            self.action.clone(),
            self.resource.clone(),
            context,
            (!known).then_some(&self.set.schema),
        )
        .ok()?;
        if !known {
            self.plain_accepted.set(true);
            if let Ok(mut shapes) = self.shapes.lock() {
                if shapes.len() >= MAX_ENTITY_SETS {
                    shapes.clear();
                }
                shapes.insert(plain.shape.clone());
            }
        }
        Some(request)
    }

    /// Asks Cedar twice (`human_approved` false, then true) for three
    /// outcomes. The second time only what can still change is asked (see
    /// [`Asked`]).
    fn three_outcomes(&self, asked: &Asked) -> Result<Decision, String> {
        let set = self.set;
        let first = self.request(asked, false)?;
        let without = set
            .authorizer
            .is_authorized(&first, &asked.all, self.entities);
        let errors = response_errors(&without);
        if !errors.is_empty() {
            return Ok(set.decision(Outcome::Forbidden, Vec::new(), errors));
        }
        if without.decision() == cedar::Decision::Allow {
            return Ok(set.decision(Outcome::Auto, reasons(&without), Vec::new()));
        }
        // A forbid that approval cannot change held: the second question
        // denies. Only the policies that read `human_approved` can add a
        // forbid or an error to its answer; the others answer as in the
        // first (see `Asked::fixed_forbids`). A denied tool call (a path
        // outside the agent's folder, say) is decided in one question.
        let mut held: Vec<cedar::PolicyId> = reasons(&without);
        held.retain(|id| asked.fixed_forbids.contains(id));
        if !held.is_empty() {
            if let Some(readers) = &asked.approval_readers {
                let second = self.request(asked, true)?;
                let read = set
                    .authorizer
                    .is_authorized(&second, readers, self.entities);
                let errors = response_errors(&read);
                if !errors.is_empty() {
                    return Ok(set.decision(Outcome::Forbidden, Vec::new(), errors));
                }
                if read.decision() == cedar::Decision::Deny {
                    held.extend(reasons(&read));
                }
            }
            return Ok(set.decision(Outcome::Forbidden, held, Vec::new()));
        }
        let second = match asked.once_approved_reads_context {
            true => Some(self.request(asked, true)?),
            false => None,
        };
        let with = set.authorizer.is_authorized(
            second.as_ref().unwrap_or(&first),
            &asked.once_approved,
            self.entities,
        );
        let errors = response_errors(&with);
        if !errors.is_empty() {
            return Ok(set.decision(Outcome::Forbidden, Vec::new(), errors));
        }
        if with.decision() == cedar::Decision::Allow {
            // The permits that allow, and the forbids that held out for a person.
            let mut ids = reasons(&with);
            ids.extend(reasons(&without));
            Ok(set.decision(Outcome::NeedsPerson, ids, Vec::new()))
        } else {
            Ok(set.decision(Outcome::Forbidden, reasons(&with), Vec::new()))
        }
    }
}

/// A request's context (without `human_approved`, which the decision sets)
/// as Cedar values, when every value is plain JSON: booleans, whole
/// numbers that fit in a Cedar long, strings, arrays and objects none of
/// whose keys starts with `__` (Cedar's JSON escapes `__entity` and
/// `__extn`). Other contexts go through Cedar's JSON parser, which spends
/// most of a decision trying, and failing, to read each string as an
/// escape.
struct PlainContext {
    pairs: Vec<(String, cedar::RestrictedExpression)>,
    /// The context's keys and kinds of values, nested, without the values:
    /// a plain value meets a schema type or not by its kind alone (a string
    /// is never an entity or an extension value here).
    shape: String,
    /// The schema accepted a request of this shape before: `pairs` then
    /// holds only the attributes, and the fields of them, that the asked
    /// policies read (see `Asked::context_fields`).
    known: bool,
}

impl PlainContext {
    /// The context as Cedar values, if it is plain. `accepted` says
    /// whether the schema accepted its shape before; if so, only what
    /// `asked` reads is made (a value no policy reads changes no answer
    /// and no error), else all of it, for the schema's check.
    fn of(
        context: &serde_json::Map<String, serde_json::Value>,
        accepted: impl FnOnce(&str) -> bool,
        asked: &Asked,
    ) -> Option<PlainContext> {
        let fields = || context.iter().filter(|(k, _)| *k != "human_approved");
        let mut shape = Shape(Some(String::new()));
        record(fields(), &mut shape, |_| Keep::Nothing)?;
        let shape = shape.0.unwrap_or_default();
        let known = accepted(&shape);
        // The values, once the shape is written: the walk that makes them
        // writes none, and skips what it does not make.
        let pairs = match (&asked.context_attrs, known) {
            (Some(attrs), true) => {
                let keep = |k: &str| match (attrs.contains(k), asked.context_fields.get(k)) {
                    (false, _) => Keep::Nothing,
                    (true, Some(Some(read))) => Keep::Fields(read),
                    (true, _) => Keep::All,
                };
                record(fields(), &mut Shape(None), keep)?
            }
            _ => record(fields(), &mut Shape(None), |_| Keep::All)?,
        };
        Some(PlainContext {
            pairs,
            shape,
            known,
        })
    }
}

/// What of a plain value is made into a Cedar value.
#[derive(Clone, Copy)]
enum Keep<'a> {
    All,
    /// Nothing: its shape only.
    Nothing,
    /// Of a record, the fields named (each whole); anything else whole.
    Fields(&'a HashSet<String>),
}

/// Where a walk of a plain context writes its shape: a string, or
/// nowhere (the walk that makes the values, after the shape was written).
struct Shape(Option<String>);

impl Shape {
    fn push(&mut self, c: char) {
        if let Some(shape) = &mut self.0 {
            shape.push(c);
        }
    }

    /// A record's key: its length in decimal, `:`, the key.
    fn key(&mut self, k: &str) {
        if let Some(shape) = &mut self.0 {
            push_decimal(shape, k.len());
            shape.push(':');
            shape.push_str(k);
        }
    }
}

/// A record's shape (written to `shape`) and, as `keep` says for each
/// field, its values.
fn record<'a, 'k>(
    fields: impl Iterator<Item = (&'a String, &'a serde_json::Value)>,
    shape: &mut Shape,
    keep: impl Fn(&str) -> Keep<'k>,
) -> Option<Vec<(String, cedar::RestrictedExpression)>> {
    shape.push('{');
    let mut pairs = Vec::new();
    for (k, v) in fields {
        if k.starts_with("__") {
            return None;
        }
        shape.key(k);
        if let Some(value) = plain_value(v, shape, keep(k))? {
            pairs.push((k.clone(), value));
        }
    }
    shape.push('}');
    Some(pairs)
}

/// Writes `n` in decimal (as `write!` would, without its formatting
/// machinery: a shape is written for every decision).
fn push_decimal(out: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// A plain value's shape (written to `shape`) and, unless `keep` is
/// [`Keep::Nothing`], its Cedar value; `None` if it is not plain.
fn plain_value(
    v: &serde_json::Value,
    shape: &mut Shape,
    keep: Keep,
) -> Option<Option<cedar::RestrictedExpression>> {
    use serde_json::Value as J;
    let made = !matches!(keep, Keep::Nothing);
    if !made && shape.0.is_none() {
        // Neither shape nor value: the shape's walk already found it plain.
        return Some(None);
    }
    let value = match v {
        J::Bool(b) => {
            shape.push('b');
            made.then(|| cedar::RestrictedExpression::new_bool(*b))
        }
        J::Number(n) => {
            shape.push('l');
            let n = n.as_i64()?;
            made.then(|| cedar::RestrictedExpression::new_long(n))
        }
        J::String(s) => {
            shape.push('s');
            made.then(|| cedar::RestrictedExpression::new_string(s.clone()))
        }
        J::Array(items) => {
            shape.push('[');
            let inner = if made { Keep::All } else { Keep::Nothing };
            let mut made_items = Vec::new();
            for item in items {
                made_items.extend(plain_value(item, shape, inner)?);
            }
            shape.push(']');
            made.then(|| cedar::RestrictedExpression::new_set(made_items))
        }
        J::Object(fields) => {
            let pairs = record(fields.iter(), shape, |k| match keep {
                Keep::All => Keep::All,
                Keep::Nothing => Keep::Nothing,
                Keep::Fields(read) if read.contains(k) => Keep::All,
                Keep::Fields(_) => Keep::Nothing,
            })?;
            match made {
                true => Some(cedar::RestrictedExpression::new_record(pairs).ok()?),
                false => None,
            }
        }
        J::Null => return None,
    };
    Some(value)
}

/// A policy's scope and conditions in Cedar's JSON form, without its
/// annotations and effect.
fn policy_body(policy: &cedar::Policy) -> String {
    match policy.to_json() {
        Ok(serde_json::Value::Object(mut est)) => {
            est.remove("annotations");
            est.remove("effect");
            serde_json::Value::Object(est).to_string()
        }
        _ => policy.to_string(),
    }
}

/// The declarations of a schema, each by its Cedar name (`Agent`,
/// `Action::"propose"`, with the namespace first when there is one) with
/// its definition as canonical JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaDeclarations {
    pub entity_types: BTreeMap<String, String>,
    pub actions: BTreeMap<String, String>,
    pub common_types: BTreeMap<String, String>,
}

impl SchemaDeclarations {
    /// Reads the declarations of a schema that Cedar already accepted.
    fn of(text: &str) -> SchemaDeclarations {
        let mut out = SchemaDeclarations::default();
        let json = cedar::SchemaFragment::from_cedarschema_str(text)
            .ok()
            .and_then(|(fragment, _)| fragment.to_json_value().ok());
        let Some(serde_json::Value::Object(namespaces)) = json else {
            return out;
        };
        for (ns, body) in namespaces {
            let prefix = if ns.is_empty() {
                String::new()
            } else {
                format!("{ns}::")
            };
            let take = |key: &str, into: &mut BTreeMap<String, String>, action: bool| {
                if let Some(serde_json::Value::Object(decls)) = body.get(key) {
                    for (name, decl) in decls {
                        let name = if action {
                            format!("{prefix}Action::{name:?}")
                        } else {
                            format!("{prefix}{name}")
                        };
                        into.insert(name, canonical_json(decl.clone()).to_string());
                    }
                }
            };
            take("entityTypes", &mut out.entity_types, false);
            take("actions", &mut out.actions, true);
            take("commonTypes", &mut out.common_types, false);
        }
        out
    }
}

/// A JSON value with object keys and array items in one order (Cedar
/// gives an entity's parents in no particular order).
fn canonical_json(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Array(items) => {
            let mut items: Vec<serde_json::Value> = items.into_iter().map(canonical_json).collect();
            items.sort_by_key(|i| i.to_string());
            serde_json::Value::Array(items)
        }
        serde_json::Value::Object(map) => {
            let sorted: std::collections::BTreeMap<String, serde_json::Value> = map
                .into_iter()
                .map(|(k, v)| (k, canonical_json(v)))
                .collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        other => other,
    }
}

/// Parses `Type::"id"` (as Cedar writes an entity) into an [`EntityRef`].
pub fn parse_entity_ref(s: &str) -> Option<EntityRef> {
    let s = s.trim();
    let (kind, rest) = s.split_once("::\"")?;
    let id = rest.strip_suffix('"')?;
    if kind.is_empty() {
        return None;
    }
    Some(EntityRef::new(kind, id.replace("\\\"", "\"")))
}

/// The entity assumed for a principal or resource the request does not
/// describe: an agent in the `default` group, an approver named by its id,
/// anything else with no attributes and no parents.
fn default_entity(uid: &EntityRef) -> EntityData {
    let mut attrs = serde_json::Map::new();
    match uid.kind.as_str() {
        "Agent" => {
            attrs.insert("group".into(), "default".into());
        }
        "Approver" => {
            attrs.insert("name".into(), uid.id.clone().into());
        }
        _ => {}
    }
    EntityData {
        uid: uid.clone(),
        attrs,
        parents: Vec::new(),
        tags: Default::default(),
    }
}

fn entity_from_data(data: &EntityData, schema: &cedar::Schema) -> Result<cedar::Entity, String> {
    let json =
        serde_json::to_value(data).map_err(|e| format!("invalid entity `{}`: {e}", data.uid))?;
    cedar::Entity::from_json_value(json, Some(schema))
        .map_err(|e| format!("invalid entity `{}`: {}", data.uid, diagnostic_message(&e)))
}

fn reasons(r: &cedar::Response) -> Vec<cedar::PolicyId> {
    r.diagnostics().reason().cloned().collect()
}

fn response_errors(r: &cedar::Response) -> Vec<String> {
    r.diagnostics()
        .errors()
        .map(|e| format!("evaluation error: {}", diagnostic_message(e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shipped(file: &str) -> PolicySource {
        let path = format!("{}/policies/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("shipped policy file");
        PolicySource::new(format!("policies/{file}"), text)
    }

    fn shipped_set() -> PolicySet {
        let policies: Vec<PolicySource> = [
            "approvers.cedar",
            "proposals.cedar",
            "tools.cedar",
            "watchdog.cedar",
        ]
        .into_iter()
        .map(shipped)
        .collect();
        PolicySet::load(
            &shipped("schema.cedarschema"),
            &policies,
            Some(&shipped("entities.json")),
            "v1",
        )
        .expect("the shipped set loads")
    }

    fn propose(action_type: &str, reversible: bool, requires_approval: bool) -> CedarRequest {
        let context = json!({
            "reversible": reversible,
            "requires_approval": requires_approval,
            "expected_cost_tokens": 10,
            "expected_cost_micros": 0,
            "payload_hash": "abc",
        });
        CedarRequest {
            principal: EntityRef::new("Agent", "noop"),
            action: "propose".into(),
            resource: EntityRef::new("ActionType", action_type),
            context: context.as_object().cloned().unwrap_or_default(),
            entities: Vec::new(),
        }
    }

    fn ids(d: &Decision) -> Vec<&str> {
        d.policies.iter().map(|p| p.id.as_str()).collect()
    }

    #[test]
    fn policy_set_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PolicySet>();
    }

    #[test]
    fn three_outcomes() {
        let set = shipped_set();
        let auto = set.decide(&propose("research_only", true, false));
        assert_eq!(auto.outcome, Outcome::Auto);
        assert_eq!(ids(&auto), ["proposals-allowed"]);
        assert_eq!(auto.policy_version, "v1");

        let person = set.decide(&propose("research_only", false, false));
        assert_eq!(person.outcome, Outcome::NeedsPerson);
        assert_eq!(
            ids(&person),
            ["proposals-allowed", "irreversible-needs-person"]
        );
        assert!(!person.self_approve_blocked);

        let mut bash = propose("x", true, false);
        bash.action = "use_tool".into();
        bash.resource = EntityRef::new("Tool", "Bash");
        bash.context = json!({"command": "bash smoke.sh; rm -rf /"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let denied = set.decide(&bash);
        assert_eq!(denied.outcome, Outcome::Forbidden);
        assert!(denied.policies.is_empty(), "default deny cites nothing");
        assert!(denied.errors.is_empty());
    }

    #[test]
    fn reserved_actions_block_self_approval() {
        let set = shipped_set();
        let d = set.decide(&propose("purchase", true, false));
        assert_eq!(d.outcome, Outcome::NeedsPerson);
        assert!(d.self_approve_blocked);
        assert!(ids(&d).contains(&"reserved-for-person"));
        let unknown = set.decide(&propose("launch_rocket", true, false));
        assert_eq!(unknown.outcome, Outcome::NeedsPerson);
        assert!(!unknown.self_approve_blocked);
        let json = serde_json::to_value(&unknown).expect("json");
        assert!(json.get("self_approve_blocked").is_none());
    }

    #[test]
    fn a_request_cannot_recategorise_a_static_entity_or_approve_itself() {
        let set = shipped_set();
        let mut req = propose("purchase", true, false);
        req.entities.push(EntityData {
            uid: EntityRef::new("ActionType", "purchase"),
            attrs: serde_json::Map::new(),
            parents: vec![EntityRef::new("Category", "auto_approvable")],
            tags: Default::default(),
        });
        req.context.insert("human_approved".into(), json!(true));
        assert_eq!(set.decide(&req).outcome, Outcome::NeedsPerson);
    }

    #[test]
    fn a_request_that_does_not_match_the_schema_is_forbidden() {
        let set = shipped_set();
        let mut missing = propose("research_only", true, false);
        missing.context.remove("reversible");
        let d = set.decide(&missing);
        assert_eq!(d.outcome, Outcome::Forbidden);
        assert!(d.errors[0].contains("reversible"), "{:?}", d.errors);

        let mut wrong_type = propose("research_only", true, false);
        wrong_type.entities.push(EntityData {
            uid: EntityRef::new("Agent", "noop"),
            attrs: json!({"group": 3}).as_object().cloned().unwrap_or_default(),
            parents: Vec::new(),
            tags: Default::default(),
        });
        assert_eq!(set.decide(&wrong_type).outcome, Outcome::Forbidden);

        let mut bad_action = propose("research_only", true, false);
        bad_action.action = "launch".into();
        assert_eq!(set.decide(&bad_action).outcome, Outcome::Forbidden);

        let mut bad_type = propose("research_only", true, false);
        bad_type.principal = EntityRef::new("not a type!", "x");
        let d = set.decide(&bad_type);
        assert_eq!(d.outcome, Outcome::Forbidden);
        assert!(!d.errors.is_empty());
    }

    const SCHEMA: &str = "entity Agent = { group: String };\nentity ActionType;\n\
        action propose appliesTo { principal: [Agent], resource: [ActionType], \
        context: { human_approved: Bool, n: Long } };\n";

    fn small(policies: &str) -> Result<PolicySet, PolicyLoadError> {
        PolicySet::load(
            &PolicySource::new("schema.cedarschema", SCHEMA),
            &[PolicySource::new("p.cedar", policies)],
            None,
            "v",
        )
    }

    /// A set whose context has values plain JSON cannot say: a decimal,
    /// an entity, a nested record and a set.
    fn rich() -> PolicySet {
        let schema = "entity Agent = { group: String };\nentity ActionType;\n\
            action propose appliesTo { principal: [Agent], resource: [ActionType], \
            context: { human_approved: Bool, price: decimal, owner: Agent, \
            meta: { n: Long }, tags: Set<String> } };\n";
        PolicySet::load(
            &PolicySource::new("schema.cedarschema", schema),
            &[PolicySource::new(
                "p.cedar",
                "@id(\"cheap\") @reason(\"r\") permit (principal, action, resource)\n\
                 when { context.price.lessThan(decimal(\"2.0\")) && context.owner == principal \
                 && context.meta.n < 10 && context.tags.contains(\"ok\") };",
            )],
            None,
            "v",
        )
        .expect("loads")
    }

    /// `Agent::"a"` proposes `ActionType::"t"` with `context`.
    fn ask_with(set: &PolicySet, context: serde_json::Value) -> Decision {
        set.decide(&CedarRequest {
            principal: EntityRef::new("Agent", "a"),
            action: "propose".into(),
            resource: EntityRef::new("ActionType", "t"),
            context: context.as_object().cloned().unwrap_or_default(),
            entities: Vec::new(),
        })
    }

    #[test]
    fn a_context_with_typed_values_is_read_by_the_schema() {
        let set = rich();
        let context = |price: &str, n: i64| {
            json!({"price": {"__extn": {"fn": "decimal", "arg": price}},
                   "owner": {"__entity": {"type": "Agent", "id": "a"}},
                   "meta": {"n": n}, "tags": ["ok", "x"]})
        };
        assert_eq!(ask_with(&set, context("1.5", 3)).outcome, Outcome::Auto);
        assert_eq!(
            ask_with(&set, context("2.5", 3)).outcome,
            Outcome::Forbidden
        );
        assert_eq!(
            ask_with(&set, context("1.5", 30)).outcome,
            Outcome::Forbidden
        );
        // The schema reads the entity without its escape too.
        let implicit = json!({"price": {"__extn": {"fn": "decimal", "arg": "1.0"}},
            "owner": {"type": "Agent", "id": "a"}, "meta": {"n": 1}, "tags": ["ok"]});
        assert_eq!(ask_with(&set, implicit).outcome, Outcome::Auto);
        // A plain string where the schema wants a decimal is refused with
        // the schema's own words.
        let d = ask_with(
            &set,
            json!({"price": "cheap", "owner": {"type": "Agent", "id": "a"},
                   "meta": {"n": 1}, "tags": ["ok"]}),
        );
        assert_eq!(d.outcome, Outcome::Forbidden);
        assert!(
            d.errors[0].starts_with("invalid context: "),
            "{:?}",
            d.errors
        );
    }

    #[test]
    fn a_plain_context_is_checked_by_its_shape_once_and_decided_by_its_values() {
        let set = small(
            "@id(\"small\") @reason(\"r\") permit (principal, action, resource) when { context.n < 10 };",
        )
        .expect("loads");
        // The first request of its shape is checked, later ones are not
        // checked again, and each is decided by its own value.
        assert_eq!(ask(&set, "a", 5).outcome, Outcome::Auto);
        assert_eq!(ask(&set, "a", 50).outcome, Outcome::Forbidden);
        assert!(ask(&set, "a", 50).errors.is_empty());
        assert_eq!(ask(&set, "a", 7).outcome, Outcome::Auto);
        // Another shape (a string for a long, a key too many, a key
        // missing) is refused, however many requests were accepted before.
        let refused = |context: serde_json::Value| {
            let d = ask_with(&set, context.clone());
            assert_eq!(d.outcome, Outcome::Forbidden, "{context}");
            assert!(d.errors[0].starts_with("invalid "), "{:?}", d.errors);
        };
        refused(json!({"n": "5"}));
        refused(json!({"n": 5, "extra": true}));
        refused(json!({}));
        refused(json!({"n": 5.5}));
        refused(json!({"n": null}));
        // An agent that sets `human_approved` itself changes nothing.
        let own = ask_with(&set, json!({"n": 50, "human_approved": true}));
        assert_eq!(own.outcome, Outcome::Forbidden);
        assert!(own.errors.is_empty());
    }

    #[test]
    fn an_evaluation_error_is_a_deny() {
        // Cedar skips a forbid that errors (here: overflow) and would allow.
        let set = small(
            "@id(\"all\") @reason(\"r\") permit (principal, action, resource);\n\
             @id(\"big\") @reason(\"r\") forbid (principal, action, resource) when { context.n + 1 > 0 };",
        )
        .expect("loads");
        let req = CedarRequest {
            principal: EntityRef::new("Agent", "a"),
            action: "propose".into(),
            resource: EntityRef::new("ActionType", "t"),
            context: json!({"n": i64::MAX})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            entities: Vec::new(),
        };
        let d = set.decide(&req);
        assert_eq!(d.outcome, Outcome::Forbidden);
        assert!(d.errors[0].contains("overflow"), "{:?}", d.errors);
        let mut ok = req.clone();
        ok.context.insert("n".into(), json!(1));
        assert_eq!(
            set.decide(&ok).outcome,
            Outcome::Forbidden,
            "the forbid holds"
        );
        ok.context.insert("n".into(), json!(-5));
        assert_eq!(set.decide(&ok).outcome, Outcome::Auto);
    }

    #[test]
    fn load_errors_name_file_line_and_policy() {
        let err = small("permit (principal, action, resource);").expect_err("no id");
        assert_eq!(
            err.to_string(),
            "`p.cedar` line 1: policy has no `@id(\"...\")` annotation"
        );

        let err =
            small("\n@id(\"a\")\npermit (principal, action, resource);").expect_err("no reason");
        assert_eq!(
            err.to_string(),
            "`p.cedar` line 2: `a`: policy has no `@reason(\"...\")` annotation"
        );

        let err = small(
            "@id(\"a\") @reason(\"r\") permit (principal, action, resource);\n\
             @id(\"a\") @reason(\"r\") forbid (principal, action, resource);",
        )
        .expect_err("duplicate");
        assert_eq!(
            err.to_string(),
            "`p.cedar` line 2: policy id `a` is already used at `p.cedar` line 1"
        );

        let err =
            small("@id(\"a\") @reason(\"r\")\npermit (principal, action, resource)\nwhen { 1 + };")
                .expect_err("syntax");
        assert!(
            err.to_string()
                .starts_with("`p.cedar` line 3: syntax error"),
            "{err}"
        );

        let err = small("@id(\"a\") @reason(\"r\")\npermit (principal, action, resource)\nwhen { context.nope };")
            .expect_err("type");
        assert!(
            err.to_string()
                .starts_with("`p.cedar` line 3: policy `a`: "),
            "{err}"
        );
        assert!(err.to_string().contains("nope"), "{err}");

        let err = PolicySet::load(
            &PolicySource::new("s.cedarschema", "entity ;"),
            &[],
            None,
            "v",
        )
        .expect_err("schema");
        assert!(
            err.to_string()
                .starts_with("`s.cedarschema` line 1: invalid schema"),
            "{err}"
        );
    }

    #[test]
    fn several_problems_are_reported_one_per_line() {
        let err = small(
            "permit (principal, action, resource);\n\
             @id(\"b\") @reason(\"r\") permit (principal, action, resource) when { context.x };",
        )
        .expect_err("two problems");
        assert_eq!(err.problems().len(), 2, "{err}");
        assert_eq!(err.to_string().lines().count(), 2);
    }

    fn ask(set: &PolicySet, agent: &str, n: i64) -> Decision {
        set.decide(&CedarRequest {
            principal: EntityRef::new("Agent", agent),
            action: "propose".into(),
            resource: EntityRef::new("ActionType", "t"),
            context: json!({"n": n}).as_object().cloned().unwrap_or_default(),
            entities: Vec::new(),
        })
    }

    #[test]
    fn a_shadow_policy_is_recorded_and_changes_no_outcome() {
        let set = small(
            "@id(\"all\") @reason(\"r\") permit (principal, action, resource);\n\
             @id(\"watch\") @reason(\"big ones\") @mode(\"shadow\")\n\
             forbid (principal, action, resource) when { context.n > 10 };",
        )
        .expect("loads");
        assert!(set.policy("watch").is_some_and(|p| p.shadow));
        let d = ask(&set, "a", 50);
        assert_eq!(d.outcome, Outcome::Auto);
        assert_eq!(ids(&d), ["all"]);
        let shadow = d.shadow.expect("the shadow policy was evaluated");
        assert_eq!(shadow.outcome, Outcome::Forbidden);
        assert_eq!(
            shadow
                .policies
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>(),
            ["watch"]
        );
        let quiet = ask(&set, "a", 1);
        assert_eq!(quiet.outcome, Outcome::Auto);
        assert_eq!(
            quiet.shadow.map(|s| s.outcome),
            Some(Outcome::Auto),
            "evaluated, and it would not change anything"
        );
        // Enforced (as `gov policy impact` replays), it decides.
        let req = CedarRequest {
            principal: EntityRef::new("Agent", "a"),
            action: "propose".into(),
            resource: EntityRef::new("ActionType", "t"),
            context: json!({"n": 50}).as_object().cloned().unwrap_or_default(),
            entities: Vec::new(),
        };
        let enforced = set.decide_enforcing_shadows(&req);
        assert_eq!(enforced.outcome, Outcome::Forbidden);
        assert_eq!(ids(&enforced), ["watch"]);
        assert!(enforced.shadow.is_none());

        let err =
            small("@id(\"a\") @reason(\"r\") @mode(\"dry\") permit (principal, action, resource);")
                .expect_err("unknown mode");
        assert_eq!(
            err.to_string(),
            "`p.cedar` line 1: policy `a`: `@mode(\"dry\")` is not a mode: use \"shadow\" or \"enforce\""
        );
    }

    #[test]
    fn only_policies_whose_scope_matches_are_evaluated_with_the_same_answers() {
        let set = small(
            "@id(\"all\") @reason(\"r\") permit (principal, action, resource);\n\
             @id(\"ban-x\") @reason(\"r\") forbid (principal == Agent::\"x\", action, resource);\n\
             @id(\"ban-t\") @reason(\"r\") forbid (principal, action == Action::\"propose\", resource == ActionType::\"t\") when { context.n > 5 };\n\
             @id(\"ban-is\") @reason(\"r\") forbid (principal is Agent, action in [Action::\"propose\"], resource is ActionType) when { context.n == 3 };",
        )
        .expect("loads");
        assert_eq!(ask(&set, "y", 1).outcome, Outcome::Auto);
        let x = ask(&set, "x", 1);
        assert_eq!((x.outcome, ids(&x)), (Outcome::Forbidden, vec!["ban-x"]));
        // Asked again (the kept set), the same answer.
        assert_eq!(ids(&ask(&set, "x", 1)), ["ban-x"]);
        assert_eq!(ids(&ask(&set, "y", 9)), ["ban-t"]);
        assert_eq!(ids(&ask(&set, "y", 3)), ["ban-is"]);
        // An id with a quote is not confused with another.
        assert_eq!(ask(&set, "x\"", 1).outcome, Outcome::Auto);
    }

    const GROUPS_SCHEMA: &str = "entity Group in [Group];\nentity Tool in [Group];\n\
        entity Agent = { group: String };\n\
        action use_tool appliesTo { principal: [Agent], resource: [Tool], \
        context: { human_approved: Bool } };\n";

    /// Static tools and groups: `in-a` under `a` under `top`, all defined;
    /// `in-loose` under `loose`, whose parent `undefined` is named but not
    /// defined (a request may define it, with parents); `bare` in nothing.
    const GROUPS_ENTITIES: &str = r#"[
        {"uid": {"type": "Group", "id": "top"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Group", "id": "a"}, "attrs": {}, "parents": [{"type": "Group", "id": "top"}]},
        {"uid": {"type": "Group", "id": "loose"}, "attrs": {}, "parents": [{"type": "Group", "id": "undefined"}]},
        {"uid": {"type": "Tool", "id": "in-a"}, "attrs": {}, "parents": [{"type": "Group", "id": "a"}]},
        {"uid": {"type": "Tool", "id": "in-loose"}, "attrs": {}, "parents": [{"type": "Group", "id": "loose"}]},
        {"uid": {"type": "Tool", "id": "bare"}, "attrs": {}, "parents": []}
    ]"#;

    const GROUPS_POLICIES: &str = r#"
        @id("in-a") @reason("r") permit (principal, action, resource in Group::"a");
        @id("in-top") @reason("r") permit (principal, action, resource is Tool in Group::"top") when { principal.group == "t" };
        @id("in-elsewhere") @reason("r") forbid (principal, action, resource in Group::"elsewhere");
        @id("is-group") @reason("r") forbid (principal, action, resource is Group in Group::"a");
        @id("bare") @reason("r") permit (principal, action, resource == Tool::"bare");
    "#;

    /// A policy whose resource is `in` a group is left out for a static
    /// tool whose ancestors are all static and do not hold the group, and
    /// kept for every other resource: the answers are Cedar's own, asked
    /// of every policy with the same entities, whatever the request brings
    /// (a tool of its own in a group, a definition of the undefined group).
    #[test]
    fn a_shape_writes_lengths_as_decimal() {
        for n in [0, 7, 10, 123, 4096, usize::MAX] {
            let mut out = String::from("x");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }

    /// An agent's entity with its `group` and parents.
    fn agent_data(id: &str, group: &str, parents: Vec<EntityRef>) -> EntityData {
        EntityData {
            uid: EntityRef::new("Agent", id),
            attrs: json!({"group": group})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            parents,
            tags: Default::default(),
        }
    }

    /// A set loaded as gov loads it, and the same schema and policies as
    /// plain Cedar (policies keyed by their `@id`), for a reference.
    fn with_reference(
        schema: &str,
        policies: &str,
        entities: Option<&str>,
    ) -> (PolicySet, cedar::Schema, cedar::PolicySet) {
        let set = PolicySet::load(
            &PolicySource::new("schema.cedarschema", schema),
            &[PolicySource::new("p.cedar", policies)],
            entities
                .map(|e| PolicySource::new("entities.json", e))
                .as_ref(),
            "v",
        )
        .expect("loads");
        let parsed = cedar::PolicySet::from_str(policies).expect("policies");
        let keyed = cedar::PolicySet::from_policies(
            parsed
                .policies()
                .map(|p| p.new_id(cedar::PolicyId::new(p.annotation("id").expect("id")))),
        )
        .expect("set");
        (set, cedar::Schema::from_str(schema).expect("schema"), keyed)
    }

    #[test]
    fn a_static_resource_outside_a_group_is_not_asked_about_its_policies() {
        let (set, schema, policies) =
            with_reference(GROUPS_SCHEMA, GROUPS_POLICIES, Some(GROUPS_ENTITIES));
        let statics: Vec<serde_json::Value> =
            serde_json::from_str(GROUPS_ENTITIES).expect("entities");
        let reference = |tool: &str, group: &str, brought: &[serde_json::Value]| {
            let mut all = statics.clone();
            for e in brought {
                if !all.iter().any(|s| s["uid"] == e["uid"]) {
                    all.push(e.clone());
                }
            }
            let tool_uid = json!({"type": "Tool", "id": tool});
            if !all.iter().any(|s| s["uid"] == tool_uid) {
                all.push(json!({"uid": tool_uid, "attrs": {}, "parents": []}));
            }
            let entities =
                cedar::Entities::from_json_value(serde_json::Value::Array(all), Some(&schema))
                    .expect("entities");
            let action = cedar::EntityUid::from_str("Action::\"use_tool\"").expect("action");
            let request = cedar::Request::new(
                cedar::EntityUid::from_str(&format!("Agent::\"x{group}\"")).expect("agent"),
                action.clone(),
                cedar::EntityUid::from_str(&format!("Tool::\"{tool}\"")).expect("tool"),
                cedar::Context::from_json_value(
                    json!({"human_approved": false}),
                    Some((&schema, &action)),
                )
                .expect("context"),
                Some(&schema),
            )
            .expect("request");
            let r = cedar::Authorizer::new().is_authorized(&request, &policies, &entities);
            let mut ids: Vec<String> = r.diagnostics().reason().map(|id| id.to_string()).collect();
            ids.sort();
            let outcome = match r.decision() {
                cedar::Decision::Allow => Outcome::Auto,
                cedar::Decision::Deny => Outcome::Forbidden,
            };
            (outcome, ids)
        };
        let group_of = |id: &str, parents: &[&str]| {
            json!({"uid": {"type": "Group", "id": id}, "attrs": {},
                "parents": parents.iter().map(|p| json!({"type": "Group", "id": p})).collect::<Vec<_>>()})
        };
        let broughts: Vec<Vec<serde_json::Value>> = vec![
            Vec::new(),
            // The undefined group, defined with a parent: `in-loose` is
            // then in `elsewhere`.
            vec![group_of("undefined", &["elsewhere"])],
            // A static group redefined: the static one wins.
            vec![group_of("a", &["elsewhere"])],
            // A tool of the request's own, in `a`.
            vec![json!({"uid": {"type": "Tool", "id": "new"}, "attrs": {},
                "parents": [{"type": "Group", "id": "a"}]})],
        ];
        let mut outcomes = std::collections::BTreeSet::new();
        for tool in ["in-a", "in-loose", "bare", "new", "unknown"] {
            for group in ["t", "u"] {
                for brought in &broughts {
                    let mut entities: Vec<EntityData> = brought
                        .iter()
                        .map(|e| serde_json::from_value(e.clone()).expect("entity data"))
                        .collect();
                    entities.push(agent_data(&format!("x{group}"), group, Vec::new()));
                    let d = set.decide(&CedarRequest {
                        principal: EntityRef::new("Agent", format!("x{group}")),
                        action: "use_tool".into(),
                        resource: EntityRef::new("Tool", tool),
                        context: serde_json::Map::new(),
                        entities,
                    });
                    let mut got: Vec<String> = ids(&d).iter().map(|s| s.to_string()).collect();
                    got.sort();
                    let agent = json!({"uid": {"type": "Agent", "id": format!("x{group}")},
                        "attrs": {"group": group}, "parents": []});
                    let mut with_agent = brought.clone();
                    with_agent.push(agent);
                    let want = reference(tool, group, &with_agent);
                    assert_eq!((d.outcome, got), want.clone(), "{tool} {group} {brought:?}");
                    outcomes.insert((format!("{:?}", want.0), want.1));
                }
            }
        }
        assert!(outcomes.len() >= 5, "{outcomes:?}");
        // Left out where the static hierarchy says so, kept elsewhere.
        let asked = |tool: &str| -> Vec<String> {
            let uid = |kind: &str, id: &str| {
                cedar::EntityUid::from_type_name_and_id(
                    cedar::EntityTypeName::from_str(kind).expect("type"),
                    cedar::EntityId::new(id),
                )
            };
            let applicable = set
                .scope
                .applicable(
                    &uid("Action", "use_tool"),
                    &uid("Agent", "xt"),
                    &uid("Tool", tool),
                    |_| true,
                )
                .expect("applicable");
            let mut ids: Vec<String> = applicable
                .enforced
                .all
                .policies()
                .map(|p| p.id().to_string())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(asked("bare"), ["bare"]);
        assert_eq!(asked("in-a"), ["in-a", "in-top"]);
        assert_eq!(asked("in-loose"), ["in-a", "in-elsewhere", "in-top"]);
        assert_eq!(asked("unknown"), ["in-a", "in-elsewhere", "in-top"]);
    }

    const FIELDS_SCHEMA: &str = "entity Agent = { group: String };\nentity Tool;\n\
        type Cmd = { program: String, arg1: String, extra?: String, n: Long, tags: Set<String> };\n\
        action use_tool appliesTo { principal: [Agent], resource: [Tool], \
        context: { human_approved: Bool, shell?: Cmd, other: { n: Long, s: String }, unread: String } };\n";

    const FIELDS_POLICIES: &str = r#"
        @id("git") @reason("r") permit (principal, action, resource) when { context has shell && context.shell.program == "git" };
        @id("extra") @reason("r") forbid (principal, action, resource) when { context has shell && context.shell has extra && context.shell.extra == "x" };
        @id("whole") @reason("r") forbid (principal == Agent::"w", action, resource) when { context has shell && context.shell.program == "ls" && {c: context.shell}.c.arg1 == "a" };
        @id("tagged") @reason("r") permit (principal, action, resource) when { context has shell && context.shell.tags.contains("ok") } unless { context.human_approved };
        @id("other") @reason("r") permit (principal == Agent::"o", action, resource) when { context.other.n > 3 };
        @id("overflow") @reason("r") forbid (principal == Agent::"o", action, resource) when { context.other.n * 3000000000000000000 > 0 && context has shell };
    "#;

    /// Only the fields of a record that some policy reads are given to
    /// Cedar once the schema accepted the context's shape; the answers,
    /// cited policies and errors are Cedar's own, asked with the whole
    /// context, for agents whose policies read one field, another, the
    /// whole record, or none.
    #[test]
    fn unread_fields_of_a_record_are_left_out_with_the_same_answers() {
        let (set, schema, policies) = with_reference(FIELDS_SCHEMA, FIELDS_POLICIES, None);
        let action = cedar::EntityUid::from_str("Action::\"use_tool\"").expect("action");
        let reference = |agent: &str, context: &serde_json::Map<String, serde_json::Value>| {
            let entities = cedar::Entities::from_json_value(
                json!([{"uid": {"type": "Agent", "id": agent}, "attrs": {"group": "g"}, "parents": []},
                    {"uid": {"type": "Tool", "id": "Bash"}, "attrs": {}, "parents": []}]),
                Some(&schema),
            )
            .expect("entities");
            let ask = |human_approved: bool| {
                let mut context = context.clone();
                context.insert("human_approved".into(), json!(human_approved));
                let request = cedar::Request::new(
                    cedar::EntityUid::from_str(&format!("Agent::\"{agent}\"")).expect("agent"),
                    action.clone(),
                    cedar::EntityUid::from_str("Tool::\"Bash\"").expect("tool"),
                    cedar::Context::from_json_value(
                        serde_json::Value::Object(context),
                        Some((&schema, &action)),
                    )
                    .expect("context"),
                    Some(&schema),
                )
                .expect("request");
                cedar::Authorizer::new().is_authorized(&request, &policies, &entities)
            };
            let (outcome, mut ids, errors) = two_questions(ask);
            ids.sort();
            ids.dedup();
            (outcome, ids, errors)
        };
        let mut seen = std::collections::BTreeSet::new();
        for agent in ["a", "w", "o"] {
            for program in ["git", "ls", "rm"] {
                for extra in [None, Some("x"), Some("y")] {
                    for tag in ["ok", "t"] {
                        for (with_shell, n) in [(true, 5), (false, 5), (true, 0), (false, 0)] {
                            let mut shell =
                                json!({"program": program, "arg1": "a", "n": 1, "tags": [tag]});
                            if let Some(extra) = extra {
                                shell["extra"] = json!(extra);
                            }
                            let mut context =
                                json!({"other": {"n": n, "s": program}, "unread": "u"})
                                    .as_object()
                                    .cloned()
                                    .unwrap_or_default();
                            if with_shell {
                                context.insert("shell".into(), shell);
                            }
                            let req = CedarRequest {
                                principal: EntityRef::new("Agent", agent),
                                action: "use_tool".into(),
                                resource: EntityRef::new("Tool", "Bash"),
                                context: context.clone(),
                                entities: vec![agent_data(agent, "g", Vec::new())],
                            };
                            let want = reference(agent, &context);
                            // Twice: the second time the shape is known and
                            // the context pruned.
                            for _ in 0..2 {
                                let d = set.decide(&req);
                                let mut got: Vec<String> =
                                    ids(&d).iter().map(|s| s.to_string()).collect();
                                got.sort();
                                assert_eq!(
                                    (d.outcome, got, d.errors.len()),
                                    want.clone(),
                                    "{agent} {program} {extra:?} {tag} shell: {with_shell} n: {n}"
                                );
                            }
                            seen.insert((format!("{:?}", want.0), want.1, want.2));
                        }
                    }
                }
            }
        }
        assert!(seen.len() >= 6, "{seen:?}");
    }

    /// The policies of the tests below: forbids a person's approval lifts
    /// (with the `unless` clause first, last, or with an error after it),
    /// and policies that read `human_approved` in other ways, an optional
    /// attribute by `has`, or the context as a whole.
    const APPROVAL_SCHEMA: &str =
        "entity Team;\nentity Agent in [Team] = { group: String };\nentity ActionType;\n\
        action propose appliesTo { principal: [Agent], resource: [ActionType], \
        context: { human_approved: Bool, n: Long, note?: String, unread: String } };\n";

    const APPROVAL_POLICIES: &str = r#"
        @id("all") @reason("r") permit (principal is Agent, action == Action::"propose", resource);
        @id("lifted") @reason("r") forbid (principal, action, resource) when { context.n > 5 } unless { context.human_approved };
        @id("lifted-first") @reason("r") forbid (principal, action, resource == ActionType::"t") unless { context.human_approved } when { context.n + 1 > 3 };
        @id("not-lifted") @reason("r") forbid (principal, action, resource) when { context.n == 7 } unless { context.human_approved && context.n != 7 };
        @id("twice") @reason("r") forbid (principal, action, resource) when { context.n == 8 || context.human_approved } unless { context.human_approved };
        @id("only-approved") @reason("r") permit (principal == Agent::"x", action, resource) when { context.human_approved && context.n == 9 };
        @id("noted") @reason("r") forbid (principal, action, resource) when { context has note && context.n == 10 } unless { context.human_approved };
        @id("note-needed") @reason("r") forbid (principal == Agent::"x", action, resource) unless { context has note };
        @id("whole") @reason("r") forbid (principal, action, resource) when { {c: context}.c.unread == "w" };
        @id("team") @reason("r") forbid (principal in Team::"red", action, resource) when { context.n == 3 };
        @id("agent-in-team") @reason("r") forbid (principal is Agent in Team::"red", action, resource is ActionType) when { context.n == 2 };
        @id("watch") @reason("r") @mode("shadow") forbid (principal, action, resource) when { context.n == 4 } unless { context.human_approved };
    "#;

    /// The three outcomes as the design states them: every policy asked
    /// with the whole context, twice.
    fn reference(
        enforce_shadows: bool,
        agent: &str,
        context: &serde_json::Map<String, serde_json::Value>,
    ) -> (Outcome, Vec<String>, usize) {
        let schema = cedar::Schema::from_str(APPROVAL_SCHEMA).expect("schema");
        let parsed = cedar::PolicySet::from_str(APPROVAL_POLICIES).expect("policies");
        let policies = cedar::PolicySet::from_policies(
            parsed
                .policies()
                .filter(|p| enforce_shadows || p.annotation("mode").is_none())
                .map(|p| p.new_id(cedar::PolicyId::new(p.annotation("id").expect("id")))),
        )
        .expect("set");
        let action = cedar::EntityUid::from_str("Action::\"propose\"").expect("action");
        let ask = |human_approved: bool| {
            let mut context = context.clone();
            context.insert("human_approved".into(), json!(human_approved));
            let context = cedar::Context::from_json_value(
                serde_json::Value::Object(context),
                Some((&schema, &action)),
            )
            .expect("context");
            let request = cedar::Request::new(
                cedar::EntityUid::from_str(&format!("Agent::\"{agent}\"")).expect("agent"),
                action.clone(),
                cedar::EntityUid::from_str("ActionType::\"t\"").expect("type"),
                context,
                Some(&schema),
            )
            .expect("request");
            let entities = json!([{"uid": {"type": "Agent", "id": agent}, "attrs": {"group": "g"},
                "parents": if agent == "x" { json!([{"type": "Team", "id": "red"}]) } else { json!([]) }}]);
            let entities =
                cedar::Entities::from_json_value(entities, Some(&schema)).expect("entities");
            cedar::Authorizer::new().is_authorized(&request, &policies, &entities)
        };
        two_questions(ask)
    }

    /// The design's outcome, cited policies and error count from Cedar's
    /// answers with `human_approved` false and then, unless that allowed,
    /// true.
    fn two_questions(ask: impl Fn(bool) -> cedar::Response) -> (Outcome, Vec<String>, usize) {
        let reasons = |r: &cedar::Response| -> Vec<String> {
            r.diagnostics().reason().map(|id| id.to_string()).collect()
        };
        let errors = |r: &cedar::Response| r.diagnostics().errors().count();
        let without = ask(false);
        if errors(&without) > 0 {
            return (Outcome::Forbidden, Vec::new(), errors(&without));
        }
        if without.decision() == cedar::Decision::Allow {
            return (Outcome::Auto, reasons(&without), 0);
        }
        let with = ask(true);
        if errors(&with) > 0 {
            return (Outcome::Forbidden, Vec::new(), errors(&with));
        }
        if with.decision() == cedar::Decision::Allow {
            let mut ids = reasons(&with);
            ids.extend(reasons(&without));
            (Outcome::NeedsPerson, ids, 0)
        } else {
            (Outcome::Forbidden, reasons(&with), 0)
        }
    }

    #[test]
    fn asking_again_only_what_approval_can_change_gives_the_design_s_answers() {
        let set = PolicySet::load(
            &PolicySource::new("schema.cedarschema", APPROVAL_SCHEMA),
            &[PolicySource::new("p.cedar", APPROVAL_POLICIES)],
            None,
            "v",
        )
        .expect("loads");
        let mut checked = std::collections::BTreeSet::new();
        for agent in ["a", "x"] {
            for n in (-2..=12).chain([i64::MAX]) {
                for note in [None, Some("hello")] {
                    let unread = if n == 11 { "w" } else { "u" };
                    let mut context = json!({"n": n, "unread": unread})
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    if let Some(note) = note {
                        context.insert("note".into(), json!(note));
                    }
                    let req = CedarRequest {
                        principal: EntityRef::new("Agent", agent),
                        action: "propose".into(),
                        resource: EntityRef::new("ActionType", "t"),
                        context: context.clone(),
                        entities: vec![agent_data(
                            agent,
                            "g",
                            match agent {
                                "x" => vec![EntityRef::new("Team", "red")],
                                _ => Vec::new(),
                            },
                        )],
                    };
                    // Twice: the second request's shape is already accepted.
                    for _ in 0..2 {
                        for enforce_shadows in [false, true] {
                            let d = match enforce_shadows {
                                false => set.decide(&req),
                                true => set.decide_enforcing_shadows(&req),
                            };
                            let (outcome, mut want, errors) =
                                reference(enforce_shadows, agent, &context);
                            want.sort();
                            want.dedup();
                            let mut got: Vec<String> =
                                ids(&d).iter().map(|s| s.to_string()).collect();
                            got.sort();
                            assert_eq!(
                                (d.outcome, got, d.errors.len()),
                                (outcome, want.clone(), errors),
                                "{agent} n={n} note={note:?} shadows enforced: {enforce_shadows}"
                            );
                            checked.insert((format!("{outcome:?}"), want));
                        }
                    }
                }
            }
        }
        // The cases reach every outcome and each policy's reason to be.
        let cited: std::collections::BTreeSet<&str> = checked
            .iter()
            .flat_map(|(_, ids)| ids.iter().map(String::as_str))
            .collect();
        assert_eq!(
            cited.into_iter().collect::<Vec<_>>(),
            [
                "agent-in-team",
                "all",
                "lifted",
                "lifted-first",
                "not-lifted",
                "note-needed",
                "noted",
                "only-approved",
                "team",
                "twice",
                "watch",
                "whole"
            ]
        );
        let outcomes: std::collections::BTreeSet<String> =
            checked.iter().map(|(o, _)| o.clone()).collect();
        assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    }

    #[test]
    fn parses_entity_refs() {
        assert_eq!(
            parse_entity_ref(r#"Agent::"noop""#),
            Some(EntityRef::new("Agent", "noop"))
        );
        assert_eq!(parse_entity_ref("Agent::noop"), None);
        assert_eq!(parse_entity_ref(r#"::"x""#), None);
    }
}
