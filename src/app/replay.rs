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
use std::sync::{Arc, Mutex, PoisonError};

use git2::{Oid, Repository};
use serde::Serialize;

use crate::app::audit::{Problem, VerifyError};
use crate::config::Settings;
use crate::domain::audit::AuditEntry;
use crate::domain::policy::PolicySet;
use crate::domain::request::{Decision, DecisionRecord, Outcome};
use crate::store::audit::messages_back;
use crate::store::git::StoreError;

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

/// How many chain entries the reader hands to a deciding thread at once.
const CHUNK: usize = 1024;

/// What [`each_decision`] read and what `work` returned.
struct Walk<R> {
    /// Entries read from the chain.
    entries: u64,
    /// The walk stopped at `max_entries` with older entries left unread.
    cut: bool,
    /// `work`'s results, newest entry first.
    results: Vec<R>,
}

/// Reads the chain once, newest first (this thread reads the commits), and
/// calls `work` on every entry that carries a decision on all cores: the
/// messages are parsed and the decisions asked again on worker threads, a
/// chunk of entries at a time. At most `max_entries` entries are read.
fn each_decision<R: Send>(
    repo: &Repository,
    settings: &Settings,
    max_entries: Option<u64>,
    work: impl Fn(&Recorded) -> Option<R> + Sync,
) -> Result<Walk<R>, VerifyError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Vec<(Oid, String)>)>(threads * 2);
    let rx = Mutex::new(rx);
    let work = &work;
    let worker = || {
        let mut done = Vec::new();
        loop {
            let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
            let Ok((index, chunk)) = next else { break };
            done.push((index, decide_chunk(chunk, work)));
        }
        done
    };
    let (read, mut chunks) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads).map(|_| scope.spawn(worker)).collect();
        let read = read_chunks(repo, settings, max_entries, tx);
        let chunks: Vec<_> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        (read, chunks)
    });
    let (entries, cut) = read?;
    chunks.sort_unstable_by_key(|(index, _)| *index);
    let mut results = Vec::new();
    for (_, chunk) in chunks {
        results.extend(chunk?);
    }
    Ok(Walk {
        entries,
        cut,
        results,
    })
}

/// Sends the chain's messages, newest first, in chunks; returns how many
/// were read and whether older ones were left unread. Dropping `tx` at the
/// end (or on an error) lets the workers finish.
fn read_chunks(
    repo: &Repository,
    settings: &Settings,
    max_entries: Option<u64>,
    tx: std::sync::mpsc::SyncSender<(usize, Vec<(Oid, String)>)>,
) -> Result<(u64, bool), StoreError> {
    let mut entries = 0u64;
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut index = 0;
    for m in messages_back(repo, &settings.audit_refname())? {
        if max_entries.is_some_and(|max| entries >= max) {
            let _ = tx.send((index, chunk));
            return Ok((entries, true));
        }
        chunk.push(m?);
        entries += 1;
        if chunk.len() == CHUNK {
            if tx.send((index, std::mem::take(&mut chunk))).is_err() {
                break;
            }
            index += 1;
        }
    }
    let _ = tx.send((index, chunk));
    Ok((entries, false))
}

/// Parses a chunk of messages and calls `work` on those with a decision.
fn decide_chunk<R>(
    chunk: Vec<(Oid, String)>,
    work: &(impl Fn(&Recorded) -> Option<R> + Sync),
) -> Result<Vec<R>, StoreError> {
    let mut out = Vec::new();
    for (commit, message) in chunk {
        let entry =
            AuditEntry::from_commit_message(&message).map_err(|e| StoreError::BadEntry {
                commit: commit.to_string(),
                reason: e.to_string(),
            })?;
        if entry.entry.decision.is_none() {
            continue;
        }
        out.extend(work(&Recorded { entry, commit }));
    }
    Ok(out)
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

/// The policy sets of the versions decisions cite, each loaded once (by
/// the first thread that needs it, from a repository of its own).
struct VersionSets {
    git_dir: std::path::PathBuf,
    sets: Mutex<HashMap<String, Result<Arc<PolicySet>, String>>>,
}

impl VersionSets {
    fn get(&self, version: &str) -> Result<Arc<PolicySet>, String> {
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(set) = sets.get(version) {
            return set.clone();
        }
        let loaded = Repository::open(&self.git_dir)
            .map_err(|e| format!("cannot open the repository: {e}"))
            .and_then(|repo| load_version(&repo, version));
        sets.insert(version.to_string(), loaded.clone());
        loaded
    }
}

/// Replays every recorded decision against the policy version it cites.
pub fn replay(settings: &Settings) -> Result<ReplayReport, VerifyError> {
    let repo = crate::app::governance::open_repo(settings)?;
    let sets = VersionSets {
        git_dir: repo.path().to_path_buf(),
        sets: Mutex::new(HashMap::new()),
    };
    let walk = each_decision(&repo, settings, None, |r| {
        let record = r.record()?;
        let version = &record.decision.policy_version;
        let bad = |reason: String| Problem {
            seq: Some(r.entry.seq),
            commit: Some(r.commit.to_string()),
            reason,
        };
        Some(match sets.get(version) {
            Err(why) => Some(bad(why)),
            Ok(set) => {
                let again = set.decide(&record.request);
                (again.outcome != record.decision.outcome
                    || sorted_ids(&again) != sorted_ids(&record.decision))
                .then(|| {
                    bad(format!(
                        "the recorded decision {} is not what policy version {} decides: {}",
                        describe(&record.decision),
                        short(version),
                        describe(&again)
                    ))
                })
            }
        })
    })?;
    let mut report = ReplayReport {
        entries: walk.entries,
        decisions: walk.results.len() as u64,
        versions: sets
            .sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len(),
        problems: walk.results.into_iter().flatten().collect(),
    };
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
    /// Only the decisions among the newest this many audit entries (the
    /// dashboard bounds its replay so).
    pub max_entries: Option<u64>,
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
    /// Set when the replay stopped at [`ImpactFilter::max_entries`] with
    /// older entries left out: how many entries it read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_at: Option<u64>,
}

/// How many example requests a group keeps.
const EXAMPLES_PER_GROUP: usize = 3;
/// How many failing requests the report lists.
const FAILING_SHOWN: usize = 20;

/// One request asked again, as a worker thread of [`impact`] found it.
enum Replayed {
    Same,
    /// Another outcome, or an evaluation that fails.
    Differs {
        example: Example,
        from: Outcome,
        to: Outcome,
        errors: Vec<String>,
    },
}

/// Replays every recorded decision (within `filter`) against `set` with
/// its shadow policies enforced.
pub fn impact(
    settings: &Settings,
    set: &PolicySet,
    filter: &ImpactFilter,
) -> Result<ImpactReport, VerifyError> {
    let repo = crate::app::governance::open_repo(settings)?;
    let walk = each_decision(&repo, settings, filter.max_entries, |r| {
        let record = r.record()?;
        let e = &r.entry;
        if filter.since.is_some_and(|s| e.ts.0 < s) {
            return None;
        }
        if filter
            .agent
            .as_ref()
            .is_some_and(|a| e.entry.agent_id.as_deref() != Some(a.as_str()))
        {
            return None;
        }
        let before = &record.decision;
        let after = set.decide_enforcing_shadows(&record.request);
        if after.outcome == before.outcome && after.errors.is_empty() {
            return Some(Replayed::Same);
        }
        Some(Replayed::Differs {
            example: Example {
                seq: e.seq,
                event_type: e.entry.event_type().to_string(),
                agent_id: e.entry.agent_id.clone(),
                request: format!(
                    "{} {} {}",
                    record.request.principal, record.request.action, record.request.resource
                ),
                before: sorted_ids(before).into_iter().map(String::from).collect(),
                after: sorted_ids(&after).into_iter().map(String::from).collect(),
            },
            from: before.outcome,
            to: after.outcome,
            errors: after.errors,
        })
    })?;
    let mut report = ImpactReport {
        version: set.version().to_string(),
        replayed: walk.results.len() as u64,
        unchanged: 0,
        changed: 0,
        transitions: BTreeMap::new(),
        groups: Vec::new(),
        failing: Vec::new(),
        failing_total: 0,
        cut_at: walk.cut.then_some(walk.entries),
    };
    let mut groups: BTreeMap<(String, String, Vec<String>), Group> = BTreeMap::new();
    for replayed in walk.results {
        let Replayed::Differs {
            example,
            from,
            to,
            errors,
        } = replayed
        else {
            report.unchanged += 1;
            continue;
        };
        if !errors.is_empty() {
            report.failing_total += 1;
            if report.failing.len() < FAILING_SHOWN {
                report.failing.push((example.clone(), errors));
            }
        }
        if from == to {
            report.unchanged += 1;
            continue;
        }
        report.changed += 1;
        *report
            .transitions
            .entry(format!("{from} → {to}"))
            .or_default() += 1;
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
        let key = (from.to_string(), to.to_string(), responsible.clone());
        let group = groups.entry(key).or_insert_with(|| Group {
            from,
            to,
            policies: responsible,
            count: 0,
            examples: Vec::new(),
        });
        group.count += 1;
        if group.examples.len() < EXAMPLES_PER_GROUP {
            group.examples.push(example);
        }
    }
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
