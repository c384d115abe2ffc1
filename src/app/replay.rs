//! Replaying recorded decisions: every audit entry that carries a decision
//! (proposal submissions, tool calls, watchdog `continue` checks,
//! approvals) holds the full Cedar request, so it can be asked again.
//!
//! - [`replay`] (`gov audit verify --replay`) asks each request again of the
//!   policy version the entry cites and checks the recorded outcome and
//!   policies: an altered outcome, or a version that does not exist, is a
//!   problem.
//! - [`impact`] (`gov policy impact`) asks each request of another policy
//!   set (shadow policies enforced) and reports what would change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use git2::{Oid, Repository};
use serde::Serialize;

use crate::app::audit::{Problem, VerifyError};
use crate::config::Settings;
use crate::domain::audit::AuditEntry;
use crate::domain::policy::PolicySet;
use crate::domain::request::{Decision, DecisionRecord, Outcome};
use crate::store::audit::entries_back;

/// One recorded decision: the entry and its commit.
pub struct Recorded {
    pub entry: AuditEntry,
    pub commit: Oid,
}

impl Recorded {
    fn record(&self) -> Option<&DecisionRecord> {
        self.entry.entry.decision.as_ref()
    }
}

/// Calls `f` with every entry of the chain that carries a decision, newest
/// first (one pass over the chain).
fn each_decision(
    repo: &Repository,
    settings: &Settings,
    mut f: impl FnMut(Recorded),
) -> Result<u64, VerifyError> {
    let mut entries = 0;
    for e in entries_back(repo, &settings.audit_refname())? {
        let e = e?;
        entries += 1;
        if e.entry.entry.decision.is_some() {
            f(Recorded {
                entry: e.entry,
                commit: e.commit,
            });
        }
    }
    Ok(entries)
}

/// What [`replay`] found.
#[derive(Debug, Default)]
pub struct ReplayReport {
    pub entries: u64,
    pub decisions: u64,
    /// Distinct policy versions the decisions cite.
    pub versions: usize,
    pub problems: Vec<Problem>,
}

fn sorted_ids(d: &Decision) -> Vec<&str> {
    let mut ids: Vec<&str> = d.policies.iter().map(|p| p.id.as_str()).collect();
    ids.sort_unstable();
    ids
}

fn describe(d: &Decision) -> String {
    let ids = sorted_ids(d);
    if ids.is_empty() {
        format!("`{}` (no policy)", d.outcome)
    } else {
        format!("`{}` ({})", d.outcome, ids.join(", "))
    }
}

/// Replays every recorded decision against the policy version it cites.
pub fn replay(settings: &Settings) -> Result<ReplayReport, VerifyError> {
    let repo = crate::app::governance::open_repo(settings)?;
    let mut sets: HashMap<String, Result<Arc<PolicySet>, String>> = HashMap::new();
    let mut report = ReplayReport::default();
    let entries = each_decision(&repo, settings, |r| {
        let Some(record) = r.record() else { return };
        report.decisions += 1;
        let version = &record.decision.policy_version;
        let set = sets
            .entry(version.clone())
            .or_insert_with(|| load_version(&repo, version))
            .clone();
        let bad = |reason: String| Problem {
            seq: Some(r.entry.seq),
            commit: Some(r.commit.to_string()),
            reason,
        };
        match set {
            Err(why) => report.problems.push(bad(why)),
            Ok(set) => {
                let again = set.decide(&record.request);
                if again.outcome != record.decision.outcome
                    || sorted_ids(&again) != sorted_ids(&record.decision)
                {
                    report.problems.push(bad(format!(
                        "the recorded decision {} is not what policy version {} decides: {}",
                        describe(&record.decision),
                        short(version),
                        describe(&again)
                    )));
                }
            }
        }
    })?;
    report.entries = entries;
    report.versions = sets.len();
    // Walked newest first; the first bad entry comes first.
    report.problems.sort_by_key(|p| p.seq);
    Ok(report)
}

/// The policy set of a version a decision cites.
fn load_version(repo: &Repository, version: &str) -> Result<Arc<PolicySet>, String> {
    let Ok(oid) = Oid::from_str(version) else {
        return Err(format!(
            "the decision cites policy version `{version}`, which is not a commit"
        ));
    };
    if repo.find_commit(oid).is_err() {
        return Err(format!(
            "the decision cites policy version {}, which does not exist",
            short(version)
        ));
    }
    crate::store::policies::load_commit(repo, oid)
        .map(Arc::new)
        .map_err(|e| {
            format!(
                "the decision cites policy version {}, whose set does not load: {}",
                short(version),
                crate::domain::errors::error_chain(&e)
            )
        })
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

/// Which recorded decisions [`impact`] replays.
#[derive(Debug, Clone, Default)]
pub struct ImpactFilter {
    /// Only decisions recorded at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub agent: Option<String>,
}

/// One replayed request, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub seq: u64,
    pub event_type: String,
    pub agent_id: Option<String>,
    /// `Agent::"noop" propose ActionType::"publish_content"`.
    pub request: String,
    pub before: Vec<String>,
    pub after: Vec<String>,
}

/// The decisions that change one way, for one set of responsible policies.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// `auto → needs_person`.
    pub from: Outcome,
    pub to: Outcome,
    /// The policies that make the difference: cited now but not before;
    /// else cited before but not now (`-id`).
    pub policies: Vec<String>,
    pub count: u64,
    pub examples: Vec<Example>,
}

/// What [`impact`] found.
#[derive(Debug, Clone, Serialize)]
pub struct ImpactReport {
    /// The commit whose policy set was replayed against.
    pub version: String,
    pub replayed: u64,
    pub unchanged: u64,
    pub changed: u64,
    /// Counts by transition, e.g. `auto → needs_person`.
    pub transitions: BTreeMap<String, u64>,
    pub groups: Vec<Group>,
    /// Requests whose evaluation fails against the new set (the first
    /// few, with their errors).
    pub failing: Vec<(Example, Vec<String>)>,
    /// How many requests' evaluation fails against the new set.
    pub failing_total: u64,
}

/// How many example requests a group keeps.
const EXAMPLES_PER_GROUP: usize = 3;
/// How many failing requests the report lists.
const FAILING_SHOWN: usize = 20;

/// Replays every recorded decision (within `filter`) against `set` with
/// its shadow policies enforced.
pub fn impact(
    settings: &Settings,
    set: &PolicySet,
    filter: &ImpactFilter,
) -> Result<ImpactReport, VerifyError> {
    let repo = crate::app::governance::open_repo(settings)?;
    let mut report = ImpactReport {
        version: set.version().to_string(),
        replayed: 0,
        unchanged: 0,
        changed: 0,
        transitions: BTreeMap::new(),
        groups: Vec::new(),
        failing: Vec::new(),
        failing_total: 0,
    };
    let mut groups: BTreeMap<(String, String, Vec<String>), Group> = BTreeMap::new();
    each_decision(&repo, settings, |r| {
        let Some(record) = r.record() else { return };
        let e = &r.entry;
        if filter.since.is_some_and(|s| e.ts.0 < s) {
            return;
        }
        if filter
            .agent
            .as_ref()
            .is_some_and(|a| e.entry.agent_id.as_deref() != Some(a.as_str()))
        {
            return;
        }
        report.replayed += 1;
        let before = &record.decision;
        let after = set.decide_enforcing_shadows(&record.request);
        let example = Example {
            seq: e.seq,
            event_type: e.entry.event_type().to_string(),
            agent_id: e.entry.agent_id.clone(),
            request: format!(
                "{} {} {}",
                record.request.principal, record.request.action, record.request.resource
            ),
            before: sorted_ids(before).into_iter().map(String::from).collect(),
            after: sorted_ids(&after).into_iter().map(String::from).collect(),
        };
        if !after.errors.is_empty() {
            report.failing_total += 1;
            if report.failing.len() < FAILING_SHOWN {
                report.failing.push((example.clone(), after.errors.clone()));
            }
        }
        if after.outcome == before.outcome {
            report.unchanged += 1;
            return;
        }
        report.changed += 1;
        let transition = format!("{} → {}", before.outcome, after.outcome);
        *report.transitions.entry(transition).or_default() += 1;
        // The policies cited now and not before; else those cited before
        // and not now (a rule that was removed or no longer matches).
        let mut responsible: Vec<String> = example
            .after
            .iter()
            .filter(|id| !example.before.contains(id))
            .cloned()
            .collect();
        if responsible.is_empty() {
            responsible = example
                .before
                .iter()
                .filter(|id| !example.after.contains(id))
                .map(|id| format!("-{id}"))
                .collect();
        }
        responsible.sort();
        let key = (
            before.outcome.to_string(),
            after.outcome.to_string(),
            responsible.clone(),
        );
        let group = groups.entry(key).or_insert_with(|| Group {
            from: before.outcome,
            to: after.outcome,
            policies: responsible,
            count: 0,
            examples: Vec::new(),
        });
        group.count += 1;
        if group.examples.len() < EXAMPLES_PER_GROUP {
            group.examples.push(example);
        }
    })?;
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    report.groups = groups;
    Ok(report)
}

/// Where `gov policy diff` and `gov policy impact` take a policy set from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetSource {
    /// A Git revision of the governance repository (`main`,
    /// `gov/policy/ID`, a commit).
    Revision(String),
    /// The `policies/` folder of the working tree, committed or not.
    WorkingTree,
}

impl SetSource {
    /// `at `REV`` or `in the working tree`, for messages.
    pub fn place(&self) -> String {
        match self {
            SetSource::Revision(_) => format!("at {self}"),
            SetSource::WorkingTree => format!("in {self}"),
        }
    }
}

impl std::fmt::Display for SetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetSource::Revision(rev) => write!(f, "`{rev}`"),
            SetSource::WorkingTree => f.write_str("the working tree"),
        }
    }
}

/// Why [`load_set`] found no policy set.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("no revision `{0}` in the repository")]
    NoRevision(String),
    #[error("the policy set {} is invalid", source_name.place())]
    Invalid {
        source_name: SetSource,
        /// Every problem, as `gov policy check` prints them.
        problems: Vec<String>,
    },
    #[error(transparent)]
    Gov(#[from] crate::app::governance::GovError),
}

/// The policy set at `source`, validated against the schema next to it.
/// The working tree's set has the version `working-tree`.
pub fn load_set(settings: &Settings, source: &SetSource) -> Result<PolicySet, SetError> {
    use crate::store::policies::{load_commit, load_worktree, PolicyStoreError};
    let loaded = match source {
        SetSource::WorkingTree => load_worktree(&settings.root, "working-tree"),
        SetSource::Revision(rev) => {
            let repo = crate::app::governance::open_repo(settings)?;
            let commit = repo
                .revparse_single(rev)
                .and_then(|o| o.peel_to_commit())
                .map_err(|_| SetError::NoRevision(rev.clone()))?;
            load_commit(&repo, commit.id())
        }
    };
    loaded.map_err(|e| SetError::Invalid {
        source_name: source.clone(),
        problems: match &e {
            PolicyStoreError::Load(load) => load.problems().iter().map(|p| p.to_string()).collect(),
            other => vec![crate::domain::errors::error_chain(other)],
        },
    })
}
