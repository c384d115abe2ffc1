//! Loading a policy set: each Cedar file parsed on its own, policies
//! re-keyed by `@id`, the whole validated strictly against the schema, and
//! every problem reported with its file, line and policy id
//! ([`PolicyLoadError`]). Deciding is in the parent module.

use super::*;

/// One source file: its path as shown in messages, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    pub path: String,
    pub text: String,
}

impl PolicySource {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        PolicySource {
            path: path.into(),
            text: text.into(),
        }
    }
}

/// Why a policy set could not be loaded. Each variant is one problem; a set
/// with several problems is [`PolicyLoadError::Several`], displayed one
/// problem per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("`{file}`{}: invalid schema: {message}", at_line(*line))]
    Schema {
        file: String,
        line: Option<usize>,
        message: String,
    },
    #[error("`{file}`{}: syntax error: {message}", at_line(*line))]
    Syntax {
        file: String,
        line: Option<usize>,
        message: String,
    },
    #[error("`{file}` line {line}: {}policy has no `@{annotation}(\"...\")` annotation", id.as_ref().map(|i| format!("`{i}`: ")).unwrap_or_default())]
    MissingAnnotation {
        file: String,
        line: usize,
        annotation: &'static str,
        id: Option<String>,
    },
    #[error("`{file}` line {line}: policy id `{id}` is already used at `{first_file}` line {first_line}")]
    DuplicateId {
        file: String,
        line: usize,
        id: String,
        first_file: String,
        first_line: usize,
    },
    #[error("`{file}` line {line}: templates are not supported (policy `{id}` has a slot)")]
    Template {
        file: String,
        line: usize,
        id: String,
    },
    #[error("`{file}` line {line}: policy `{id}`: {message}")]
    Invalid {
        file: String,
        line: usize,
        id: String,
        message: String,
    },
    #[error("`{file}`: invalid entities: {message}")]
    Entities { file: String, message: String },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<PolicyLoadError>),
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

impl PolicyLoadError {
    /// Every single problem, flattening [`PolicyLoadError::Several`].
    pub fn problems(&self) -> Vec<&PolicyLoadError> {
        match self {
            PolicyLoadError::Several(all) => all.iter().flat_map(|p| p.problems()).collect(),
            one => vec![one],
        }
    }

    fn from_problems(mut problems: Vec<PolicyLoadError>) -> Option<PolicyLoadError> {
        match problems.len() {
            0 => None,
            1 => problems.pop(),
            _ => Some(PolicyLoadError::Several(problems)),
        }
    }
}

impl PolicySet {
    /// Parses, re-keys and strictly validates a policy set. Reports every
    /// problem found, each naming its file (and line and policy id where they
    /// apply).
    pub fn load(
        schema: &PolicySource,
        policies: &[PolicySource],
        entities: Option<&PolicySource>,
        version: &str,
    ) -> Result<PolicySet, PolicyLoadError> {
        let cedar_schema = match cedar::Schema::from_cedarschema_str(&schema.text) {
            Ok((s, _warnings)) => s,
            Err(e) => {
                return Err(PolicyLoadError::Schema {
                    file: schema.path.clone(),
                    line: first_label_line(&e, &schema.text),
                    message: diagnostic_message(&e),
                })
            }
        };

        let mut problems = Vec::new();
        let mut set = cedar::PolicySet::new();
        let mut infos: Vec<PolicyInfo> = Vec::new();
        let mut by_id: HashMap<String, usize> = HashMap::new();
        // Which file each policy came from, to place validation errors.
        let mut source_of: HashMap<String, usize> = HashMap::new();
        for (file_idx, source) in policies.iter().enumerate() {
            for parsed in parse_file(source, &mut problems) {
                if let Some(&first) = by_id.get(&parsed.info.id) {
                    let first = &infos[first];
                    problems.push(PolicyLoadError::DuplicateId {
                        file: source.path.clone(),
                        line: parsed.info.line,
                        id: parsed.info.id.clone(),
                        first_file: first.file.clone(),
                        first_line: first.line,
                    });
                    continue;
                }
                let policy = parsed.policy.new_id(cedar::PolicyId::new(&parsed.info.id));
                if let Err(e) = set.add(policy) {
                    problems.push(PolicyLoadError::Invalid {
                        file: source.path.clone(),
                        line: parsed.info.line,
                        id: parsed.info.id.clone(),
                        message: diagnostic_message(&e),
                    });
                    continue;
                }
                by_id.insert(parsed.info.id.clone(), infos.len());
                source_of.insert(parsed.info.id.clone(), file_idx);
                infos.push(parsed.info);
            }
        }

        let validator = cedar::Validator::new(cedar_schema.clone());
        let result = validator.validate(&set, cedar::ValidationMode::Strict);
        for err in result.validation_errors() {
            let id = err.policy_id().to_string();
            let (file, text, policy_line) = match (by_id.get(&id), source_of.get(&id)) {
                (Some(&i), Some(&f)) => (
                    policies[f].path.clone(),
                    policies[f].text.as_str(),
                    infos[i].line,
                ),
                _ => (String::from("?"), "", 0),
            };
            let line = first_label_line(err, text).unwrap_or(policy_line);
            let message = diagnostic_message(err);
            // Cedar repeats the policy id that the message already names.
            let message = message
                .strip_prefix(&format!("for policy `{id}`, "))
                .map(str::to_string)
                .unwrap_or(message);
            problems.push(PolicyLoadError::Invalid {
                file,
                line,
                id,
                message,
            });
        }

        let static_entities =
            match entities {
                Some(src) => cedar::Entities::from_json_str(&src.text, Some(&cedar_schema))
                    .map_err(|e| PolicyLoadError::Entities {
                        file: src.path.clone(),
                        message: diagnostic_message(&e),
                    }),
                None => cedar::Entities::from_entities([], Some(&cedar_schema)).map_err(|e| {
                    PolicyLoadError::Entities {
                        file: schema.path.clone(),
                        message: diagnostic_message(&e),
                    }
                }),
            };
        let static_entities = match static_entities {
            Ok(e) => Some(e),
            Err(e) => {
                problems.push(e);
                None
            }
        };

        if let Some(err) = PolicyLoadError::from_problems(problems) {
            return Err(err);
        }
        let groups: HashSet<String> = cedar_schema
            .action_groups()
            .map(ToString::to_string)
            .collect();
        let scope = ScopeIndex::new(
            set.policies().map(|p| {
                let shadow = by_id
                    .get(p.id().to_string().as_str())
                    .is_some_and(|&i| infos[i].shadow);
                (p, shadow)
            }),
            &groups,
            static_entities
                .as_ref()
                .map(crate::domain::policy_scope::StaticAncestors::of)
                .unwrap_or_default(),
        );
        let mut type_names: HashMap<String, cedar::EntityTypeName> = cedar_schema
            .entity_types()
            .map(|t| (t.to_string(), t.clone()))
            .collect();
        if let Ok(action) = cedar::EntityTypeName::from_str("Action") {
            type_names.insert("Action".into(), action);
        }
        Ok(PolicySet {
            declarations: SchemaDeclarations::of(&schema.text),
            schema: cedar_schema,
            entities: static_entities.unwrap_or_else(cedar::Entities::empty),
            authorizer: cedar::Authorizer::new(),
            infos,
            by_id,
            version: version.to_string(),
            scope,
            type_names,
            entity_sets: Mutex::new(HashMap::new()),
        })
    }
}

/// A policy parsed from one file, with what we know about it.
struct Parsed {
    policy: cedar::Policy,
    info: PolicyInfo,
}

/// Parses one file; problems are pushed, good policies returned in file order.
fn parse_file(source: &PolicySource, problems: &mut Vec<PolicyLoadError>) -> Vec<Parsed> {
    let set = match cedar::PolicySet::from_str(&source.text) {
        Ok(set) => set,
        Err(errs) => {
            for e in errs.iter() {
                problems.push(PolicyLoadError::Syntax {
                    file: source.path.clone(),
                    line: first_label_line(e, &source.text),
                    message: diagnostic_message(e),
                });
            }
            return Vec::new();
        }
    };
    // Cedar numbers policies `policy0`, `policy1`, ... in file order.
    let mut templates: Vec<&cedar::Template> = set.templates().collect();
    templates.sort_by_key(|t| default_index(t.id()));
    for t in templates {
        let line = t
            .to_string()
            .lines()
            .next()
            .and_then(|first| source.text.find(first))
            .map(|off| line_of(&source.text, off))
            .unwrap_or(1);
        problems.push(PolicyLoadError::Template {
            file: source.path.clone(),
            line,
            id: t.annotation("id").unwrap_or("?").to_string(),
        });
    }
    let mut policies: Vec<&cedar::Policy> = set.policies().filter(|p| p.is_static()).collect();
    policies.sort_by_key(|p| default_index(p.id()));

    let mut out = Vec::new();
    let mut cursor = 0;
    for policy in policies {
        let text = policy.to_cedar().unwrap_or_else(|| policy.to_string());
        let line = match source.text[cursor..].find(&text) {
            Some(off) => {
                cursor += off + text.len();
                line_of(&source.text, cursor - text.len())
            }
            None => line_of(&source.text, cursor),
        };
        let id = policy.annotation("id").map(str::to_string);
        let reason = policy.annotation("reason").map(str::to_string);
        let (id, reason) = match (id, reason) {
            (Some(id), Some(reason)) if !id.trim().is_empty() && !reason.trim().is_empty() => {
                (id, reason)
            }
            (id, _) => {
                let missing_id = id.as_deref().is_none_or(|i| i.trim().is_empty());
                problems.push(PolicyLoadError::MissingAnnotation {
                    file: source.path.clone(),
                    line,
                    annotation: if missing_id { "id" } else { "reason" },
                    id: if missing_id { None } else { id },
                });
                continue;
            }
        };
        let effect = match policy.effect() {
            cedar::Effect::Permit => "permit",
            cedar::Effect::Forbid => "forbid",
        };
        let self_approve_blocked =
            policy.annotation(SELF_APPROVE_ANNOTATION) == Some(SELF_APPROVE_BLOCKED);
        let shadow = match policy.annotation(MODE_ANNOTATION) {
            None | Some(MODE_ENFORCE) => false,
            Some(MODE_SHADOW) => true,
            Some(other) => {
                problems.push(PolicyLoadError::Invalid {
                    file: source.path.clone(),
                    line,
                    id,
                    message: format!(
                        "`@{MODE_ANNOTATION}(\"{other}\")` is not a mode: use \"{MODE_SHADOW}\" or \"{MODE_ENFORCE}\""
                    ),
                });
                continue;
            }
        };
        out.push(Parsed {
            policy: policy.clone(),
            info: PolicyInfo {
                id,
                reason,
                effect: effect.to_string(),
                file: source.path.clone(),
                line,
                text,
                self_approve_blocked,
                shadow,
                annotations: policy
                    .annotations()
                    .filter(|(name, _)| *name != "id")
                    .map(|(name, value)| (name.to_string(), value.to_string()))
                    .collect(),
                body: policy_body(policy),
            },
        });
    }
    out
}

fn default_index(id: &cedar::PolicyId) -> usize {
    id.to_string()
        .strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of the first labelled span of a diagnostic, looking into its
/// related diagnostics when it has none of its own.
fn first_label_line(d: &dyn Diagnostic, text: &str) -> Option<usize> {
    if let Some(label) = d.labels().and_then(|mut l| l.next()) {
        return Some(line_of(text, label.offset()));
    }
    if let Some(mut related) = d.related() {
        if let Some(r) = related.find_map(|r| first_label_line(r, text)) {
            return Some(r);
        }
    }
    d.diagnostic_source()
        .and_then(|s| first_label_line(s, text))
}

/// A diagnostic's message, its help, and its causes on one line.
pub(super) fn diagnostic_message(d: &dyn Diagnostic) -> String {
    let mut msg = crate::domain::errors::error_chain(d);
    if let Some(help) = d.help() {
        msg.push_str(&format!(" (help: {help})"));
    }
    msg.replace('\n', " ")
}
