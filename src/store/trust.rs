//! The root of trust for what is in force: which commit of `main` the policy
//! set, the agents and the enforcement settings are read from.
//!
//! The governed paths are `policies/` (with `allowed_signers`),
//! `agents/*/agent.toml` and the enforcement settings of `gov.toml`
//! (`[budget]`, `[watchdog]`, `[server] agent_auth`). Walking `main`'s
//! first-parent history from its first commit (trusted as it is: the one
//! `gov init` wrote), a commit that changes a governed path comes into force
//! only when it is authorized under the `allowed_signers` in force before
//! it:
//! - a commit signed by an approver (it vouches for every governed file as
//!   that commit has them, so an approver can also adopt an earlier refused
//!   change by signing a commit on top of it);
//! - a merge signed by an approver, or a merge that gov recorded as an
//!   approval made on the forge: it brings in the reviewed branch's changes,
//!   and only onto a `main` whose governed files are the ones in force.
//!
//! Anything else is refused: the last authorized state stays in force and
//! the refused commit is reported. A change to `allowed_signers` is checked
//! against the previous file, so a key cannot authorize its own addition:
//! trust chains back to the first commit.
//!
//! The walk is incremental: [`TrustState::advance`] continues from the state
//! of an earlier tip when the new tip descends from it, so it costs only
//! the commits added since.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use git2::{Oid, Repository};

use crate::store::keys::{AllowedSigners, Role, SignatureCheck};

/// The settings file at the root of the repository.
pub const SETTINGS_FILE: &str = "gov.toml";
/// The allowed-signers file, inside `policies/`.
pub const SIGNERS_PATH: &str = "policies/allowed_signers";
/// The tables of `gov.toml` that change enforcement (plus `[server]
/// agent_auth`); the others (`[repo]`, `[signers]`, `[remote]`, the port)
/// say where things are on this machine, not what is allowed.
pub const ENFORCEMENT_TABLES: &[&str] = &["budget", "watchdog"];

/// What the governed paths of one commit hold: equal values mean the same
/// rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Governed {
    /// The `policies/` tree.
    policies: Option<Oid>,
    /// Each agent's `agent.toml` blob.
    agents: BTreeMap<String, Oid>,
    /// The enforcement settings of `gov.toml`, canonicalised (comments and
    /// other tables do not count).
    settings: Option<String>,
}

impl Governed {
    /// The governed paths that differ between two states, for messages.
    pub fn changed_paths(&self, other: &Governed) -> Vec<String> {
        let mut out = Vec::new();
        if self.policies != other.policies {
            out.push("policies/".to_string());
        }
        let ids: std::collections::BTreeSet<&String> =
            self.agents.keys().chain(other.agents.keys()).collect();
        for id in ids {
            if self.agents.get(id) != other.agents.get(id) {
                out.push(format!("agents/{id}/agent.toml"));
            }
        }
        if self.settings != other.settings {
            out.push(format!("{SETTINGS_FILE} enforcement settings"));
        }
        out
    }
}

/// The enforcement settings of a `gov.toml` text in a canonical form:
/// `[budget]`, `[watchdog]` and `[server] agent_auth`, keys sorted. A file
/// that does not parse is its own text (any change to it counts).
pub fn enforcement_settings(text: &str) -> String {
    let Ok(value) = text.parse::<toml::Table>() else {
        return format!("unparsed:{text}");
    };
    let mut kept = toml::Table::new();
    for name in ENFORCEMENT_TABLES {
        if let Some(v) = value.get(*name) {
            kept.insert((*name).to_string(), v.clone());
        }
    }
    if let Some(auth) = value
        .get("server")
        .and_then(|s| s.as_table())
        .and_then(|s| s.get("agent_auth"))
    {
        kept.insert("agent_auth".into(), auth.clone());
    }
    kept.to_string()
}

/// Why a commit that changes governed paths is not in force.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    pub commit: String,
    /// What it changes and why that does not count, e.g. "it changes
    /// `policies/` but is not signed".
    pub reason: String,
    /// The summary line of its message.
    pub summary: String,
}

/// The outcome of the walk: the commit in force and the refused commits.
#[derive(Debug, Clone)]
pub struct TrustState {
    /// The tip of `main` the state was computed for.
    pub tip: Oid,
    /// The commit whose governed files are in force.
    pub in_force: Oid,
    /// Refused commits whose changes are still on `main` (not reverted or
    /// adopted), oldest first.
    pub refused: Vec<Refusal>,
    /// Refused commits that were later reverted or adopted, oldest first.
    pub resolved: Vec<Refusal>,
    /// The governed files in force.
    state: Governed,
    /// The governed files of `tip`.
    at_tip: Governed,
    /// The ids of `tip`'s governed entries, which [`TrustState::at_tip`]
    /// was read from: the next walk starts from them, so a commit that
    /// leaves them as they are (an approval adds a proposal's file) is
    /// not read again.
    at_tip_ids: GovernedIds,
    /// The signers in force (those of `in_force`).
    signers: AllowedSigners,
    /// The merges on `tip`'s first-parent history.
    merges: MainMerges,
}

/// The merges on `main`'s first-parent history, newest first, each with
/// its second parent (for an approval, the proposal commit it merged).
/// Gathered by the walk that computes a [`TrustState`], so that whoever
/// looks for a merge of a given commit need not read `main`'s history
/// again; a list that shares its older part, so a state is cloned and
/// extended at a constant cost however long `main` is.
#[derive(Debug, Clone, Default)]
pub struct MainMerges {
    newest: Option<Arc<MergeLink>>,
}

#[derive(Debug)]
struct MergeLink {
    merge: Oid,
    second_parent: Oid,
    older: Option<Arc<MergeLink>>,
}

impl Drop for MergeLink {
    /// Unlinks the older links one by one: dropping them recursively would
    /// go as deep as `main` is long.
    fn drop(&mut self) {
        let mut next = self.older.take();
        while let Some(link) = next {
            next = match Arc::try_unwrap(link) {
                Ok(mut only) => only.older.take(),
                // Another list still holds the rest.
                Err(_) => None,
            };
        }
    }
}

impl MainMerges {
    fn push(&mut self, merge: Oid, second_parent: Oid) {
        self.newest = Some(Arc::new(MergeLink {
            merge,
            second_parent,
            older: self.newest.take(),
        }));
    }

    /// Each merge and its second parent, newest first.
    pub fn iter(&self) -> impl Iterator<Item = (Oid, Oid)> + '_ {
        std::iter::successors(self.newest.as_deref(), |l| l.older.as_deref())
            .map(|l| (l.merge, l.second_parent))
    }
}

/// A commit of `main`'s first-parent history as the walk reads it.
#[derive(Debug, Clone, Copy)]
struct FirstParent {
    commit: Oid,
    tree: Oid,
    /// Its second parent, when it is a merge.
    second_parent: Option<Oid>,
}

/// Whether a merge commit was recorded as an approval made on the forge.
pub type ForgeMerges<'a> = &'a dyn Fn(Oid) -> bool;

/// How many first-parent commits the walk follows at most from the tip.
const MAX_HISTORY: usize = 1_000_000;

impl TrustState {
    /// Computes the state for `tip`, continuing from `previous` when `tip`
    /// descends from its tip along the first parents.
    pub fn compute(
        repo: &Repository,
        tip: Oid,
        previous: Option<&TrustState>,
        forge: ForgeMerges<'_>,
    ) -> Result<TrustState, git2::Error> {
        if let Some(prev) = previous {
            if prev.tip == tip {
                return Ok(prev.clone());
            }
            if let Some(mut newer) = first_parents_until(repo, tip, Some(prev.tip))? {
                let mut state = prev.clone();
                newer.reverse();
                let mut cache = WalkCache {
                    last: Some((prev.at_tip_ids, prev.at_tip.clone())),
                    ..WalkCache::default()
                };
                for commit in newer {
                    state.step(repo, commit, &mut cache, forge)?;
                }
                return Ok(state);
            }
        }
        let mut all = first_parents_until(repo, tip, None)?.unwrap_or_default();
        all.reverse();
        let mut cache = WalkCache::default();
        let Some((&root, rest)) = all.split_first() else {
            return Err(git2::Error::from_str("main has no commits"));
        };
        let (ids, state) = governed_at(repo, root.tree, &mut cache)?;
        let mut merges = MainMerges::default();
        if let Some(second) = root.second_parent {
            merges.push(root.commit, second);
        }
        let mut trust = TrustState {
            tip: root.commit,
            in_force: root.commit,
            refused: Vec::new(),
            resolved: Vec::new(),
            signers: signers_at(repo, root.commit),
            at_tip: state.clone(),
            at_tip_ids: ids,
            state,
            merges,
        };
        for &commit in rest {
            trust.step(repo, commit, &mut cache, forge)?;
        }
        Ok(trust)
    }

    /// The merges on the first-parent history of [`TrustState::tip`].
    pub fn merges(&self) -> &MainMerges {
        &self.merges
    }

    /// Whether `main`'s tip carries governed files that are not in force.
    pub fn is_tainted(&self) -> bool {
        self.at_tip != self.state
    }

    /// Takes one commit (its id and its tree's) on top of the current tip.
    /// The commit itself is read only when it changes a governed path.
    fn step(
        &mut self,
        repo: &Repository,
        first_parent: FirstParent,
        cache: &mut WalkCache,
        forge: ForgeMerges<'_>,
    ) -> Result<(), git2::Error> {
        let oid = first_parent.commit;
        if let Some(second) = first_parent.second_parent {
            self.merges.push(oid, second);
        }
        let (ids, governed) = governed_at(repo, first_parent.tree, cache)?;
        let parent = std::mem::replace(&mut self.at_tip, governed.clone());
        self.at_tip_ids = ids;
        self.tip = oid;
        if governed == self.state {
            self.come_into_force(repo, oid, governed);
            return Ok(());
        }
        let commit = repo.find_commit(oid)?;
        let changed = governed != parent;
        let approver = approver_signature(repo, &self.signers, oid);
        let is_merge = commit.parent_count() >= 2;
        let refuse = |why: String| Refusal {
            commit: oid.to_string(),
            reason: format!(
                "it changes {} but {why}",
                crate::domain::paths::quoted_list(&governed.changed_paths(&parent))
            ),
            summary: commit.summary().unwrap_or_default().to_string(),
        };
        if !is_merge {
            match approver {
                // An approver's signature vouches for the whole tree, so it
                // also adopts a change refused earlier.
                Ok(()) => self.come_into_force(repo, oid, governed),
                // A squash or rebase merge of a reviewed pull request, taken
                // on the forge's signed evidence: reviewed, as a merge is.
                Err(_) if changed && parent == self.state && forge(oid) => {
                    self.come_into_force(repo, oid, governed)
                }
                Err(why) if changed => self.refused.push(refuse(why)),
                Err(_) => {}
            }
            return Ok(());
        }
        if !changed {
            return Ok(());
        }
        let authorized = match approver {
            Ok(()) => Ok(()),
            Err(_) if forge(oid) => Ok(()),
            Err(why) => Err(format!(
                "{why}, and it is not a merge recorded as approved on the forge"
            )),
        };
        match authorized {
            Ok(()) if parent == self.state => self.come_into_force(repo, oid, governed),
            Ok(()) => {
                let earlier = self
                    .refused
                    .last()
                    .map(|r| format!(" (commit {})", short(&r.commit)))
                    .unwrap_or_default();
                self.refused.push(refuse(format!(
                    "it is merged onto a `main` that carries a refused change{earlier}; revert that change or sign a commit that adopts it"
                )));
            }
            Err(why) => self.refused.push(refuse(why)),
        }
        Ok(())
    }

    fn come_into_force(&mut self, repo: &Repository, oid: Oid, governed: Governed) {
        let signers_changed = governed.policies != self.state.policies;
        self.in_force = oid;
        self.state = governed;
        if signers_changed {
            self.signers = signers_at(repo, oid);
        }
        self.resolved.append(&mut self.refused);
    }
}

/// Whether `oid` carries a good signature by an approver of `signers`;
/// otherwise why not, phrased to follow "but".
fn approver_signature(repo: &Repository, signers: &AllowedSigners, oid: Oid) -> Result<(), String> {
    match crate::store::entry_check::signature_status(repo, signers, oid) {
        SignatureCheck::Good {
            principal, roles, ..
        } => {
            if roles.contains(&Role::Approver) {
                Ok(())
            } else {
                Err(format!(
                    "it is signed by `{principal}`, which is not an approver"
                ))
            }
        }
        SignatureCheck::Missing => Err("it is not signed".into()),
        SignatureCheck::Bad(why) => Err(format!(
            "its signature does not count under the `allowed_signers` in force: {why}"
        )),
    }
}

/// The allowed signers of a commit; none (nobody is an approver) when the
/// file is missing or does not parse: fail closed.
fn signers_at(repo: &Repository, commit: Oid) -> AllowedSigners {
    blob_at(repo, commit, SIGNERS_PATH)
        .and_then(|b| {
            let text = String::from_utf8(b).ok()?;
            AllowedSigners::parse(Path::new(SIGNERS_PATH), &text).ok()
        })
        .unwrap_or_default()
}

/// The content of a file at a commit.
pub fn blob_at(repo: &Repository, commit: Oid, path: &str) -> Option<Vec<u8>> {
    let tree = repo.find_commit(commit).ok()?.tree().ok()?;
    let entry = tree.get_path(Path::new(path)).ok()?;
    let blob = repo.find_blob(entry.id()).ok()?;
    Some(blob.content().to_vec())
}

/// What one walk has read already: the canonical enforcement settings of
/// `gov.toml` blobs, by blob id, and the governed files of the last tree
/// read, by the ids of its governed entries (most commits of `main` are
/// approvals, which change none of them).
#[derive(Default)]
struct WalkCache {
    by_blob: std::collections::HashMap<Oid, String>,
    last: Option<(GovernedIds, Governed)>,
}

/// The ids of a root tree's `policies/`, `agents/` and `gov.toml` entries.
type GovernedIds = [Option<Oid>; 3];

/// The governed files of one commit, from its tree, and the ids of its
/// governed entries.
fn governed_at(
    repo: &Repository,
    tree: Oid,
    cache: &mut WalkCache,
) -> Result<(GovernedIds, Governed), git2::Error> {
    let tree = repo.find_tree(tree)?;
    let id_of = |name: &str| tree.get_name(name).map(|e| e.id());
    let ids: GovernedIds = [
        id_of(crate::store::policies::POLICIES_DIR),
        id_of(crate::store::agents::AGENTS_DIR),
        id_of(SETTINGS_FILE),
    ];
    if let Some((last, governed)) = &cache.last {
        if *last == ids {
            return Ok((ids, governed.clone()));
        }
    }
    let governed = governed_in(repo, ids, cache)?;
    cache.last = Some((ids, governed.clone()));
    Ok((ids, governed))
}

/// The governed files a root tree's governed entries hold.
fn governed_in(
    repo: &Repository,
    [policies, agents_dir, settings_blob]: GovernedIds,
    cache: &mut WalkCache,
) -> Result<Governed, git2::Error> {
    let mut agents = BTreeMap::new();
    if let Some(dir) = agents_dir {
        if let Ok(dir) = repo.find_tree(dir) {
            for entry in dir.iter() {
                let (Some(id), Some(git2::ObjectType::Tree)) = (entry.name(), entry.kind()) else {
                    continue;
                };
                let folder = repo.find_tree(entry.id())?;
                let file = folder
                    .get_name(crate::store::agents::AGENT_FILE)
                    .map(|f| f.id());
                if let Some(file) = file {
                    agents.insert(id.to_string(), file);
                }
            }
        }
    }
    let settings = match settings_blob {
        Some(id) => {
            if let Some(s) = cache.by_blob.get(&id) {
                Some(s.clone())
            } else {
                let blob = repo.find_blob(id)?;
                let s = enforcement_settings(&String::from_utf8_lossy(blob.content()));
                cache.by_blob.insert(id, s.clone());
                Some(s)
            }
        }
        None => None,
    };
    Ok(Governed {
        policies,
        agents,
        settings,
    })
}

/// The first-parent history from `tip` back to (not including) `stop`,
/// newest first; `None` when `stop` is given and not reached.
fn first_parents_until(
    repo: &Repository,
    tip: Oid,
    stop: Option<Oid>,
) -> Result<Option<Vec<FirstParent>>, git2::Error> {
    let mut out = Vec::new();
    let mut cur = Some(tip);
    while let Some(oid) = cur {
        if Some(oid) == stop {
            return Ok(Some(out));
        }
        if out.len() >= MAX_HISTORY {
            return Err(git2::Error::from_str("main's history is too long to walk"));
        }
        let commit = repo.find_commit(oid)?;
        out.push(FirstParent {
            commit: oid,
            tree: commit.tree_id(),
            second_parent: commit.parent_id(1).ok(),
        });
        cur = commit.parent_ids().next();
    }
    Ok(if stop.is_some() { None } else { Some(out) })
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A walk continued from the state of an earlier tip (as the server
    /// keeps it) ends where a walk of the whole history does, through
    /// commits that leave the governed files as they are (approved
    /// proposals' files: the continued walk reuses what it read) and
    /// commits that change them (signed by no approver here, so refused).
    #[test]
    fn a_walk_continued_from_a_state_ends_where_a_whole_walk_does(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use crate::store::git::{commit_files, init_repo};
        let dir = tempfile::tempdir()?;
        let repo = init_repo(dir.path(), "main")?;
        let key = crate::store::keys::SigningKey::generate("t")?;
        let who = git2::Signature::now("t", "t@gov")?;
        let main = "refs/heads/main";
        let file =
            |path: &str, content: &str| vec![(path.to_string(), content.as_bytes().to_vec())];
        let base = [
            (
                "policies/default.cedar",
                "permit(principal, action, resource);",
            ),
            ("agents/noop/agent.toml", "name = \"noop\""),
            ("gov.toml", "[budget]\ntokens_cap = 10\n"),
        ]
        .map(|(path, content)| (path.to_string(), content.as_bytes().to_vec()));
        let mut tips = vec![commit_files(&repo, &key, &who, main, None, &base, "base")?];
        let changes: [(&str, &str); 5] = [
            ("proposals/2026-12/aa/p-1.toml", "one"),
            ("proposals/2026-12/aa/p-2.toml", "two"),
            (
                "policies/default.cedar",
                "forbid(principal, action, resource);",
            ),
            ("proposals/2026-12/bb/p-3.toml", "three"),
            ("agents/noop/agent.toml", "name = \"other\""),
        ];
        for (path, content) in changes {
            let parent = tips.last().copied();
            tips.push(commit_files(
                &repo,
                &key,
                &who,
                main,
                parent,
                &file(path, content),
                path,
            )?);
        }
        let forge = |_: Oid| false;
        let seen = |t: &TrustState| {
            (
                t.tip,
                t.in_force,
                t.refused.clone(),
                t.resolved.clone(),
                t.state.clone(),
                t.at_tip.clone(),
                t.at_tip_ids,
            )
        };
        for pair in tips.windows(2) {
            let before = TrustState::compute(&repo, pair[0], None, &forge)?;
            let continued = TrustState::compute(&repo, pair[1], Some(&before), &forge)?;
            let whole = TrustState::compute(&repo, pair[1], None, &forge)?;
            assert_eq!(seen(&continued), seen(&whole));
        }
        let last = TrustState::compute(&repo, tips[tips.len() - 1], None, &forge)?;
        assert_eq!(last.refused.len(), 2, "{:?}", last.refused);
        Ok(())
    }

    fn oid(n: u32) -> Oid {
        let mut bytes = [0u8; 20];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        Oid::from_bytes(&bytes).expect("twenty bytes make an id")
    }

    #[test]
    fn main_merges_are_listed_newest_first_and_share_their_older_part() {
        let mut older = MainMerges::default();
        assert_eq!(older.iter().count(), 0);
        older.push(oid(1), oid(101));
        older.push(oid(2), oid(102));
        let mut a = older.clone();
        a.push(oid(3), oid(103));
        let mut b = older.clone();
        b.push(oid(4), oid(104));
        drop(older);
        let listed = |m: &MainMerges| m.iter().collect::<Vec<_>>();
        assert_eq!(
            listed(&a),
            [(oid(3), oid(103)), (oid(2), oid(102)), (oid(1), oid(101))]
        );
        drop(a);
        assert_eq!(
            listed(&b),
            [(oid(4), oid(104)), (oid(2), oid(102)), (oid(1), oid(101))]
        );
    }

    #[test]
    fn a_long_list_of_main_merges_is_dropped_without_recursion() {
        // A recursive drop would need about a million frames here, more
        // than a thread's stack holds.
        let mut merges = MainMerges::default();
        for n in 0..1_000_000 {
            merges.push(oid(n), oid(n));
        }
        let shared = merges.clone();
        drop(merges);
        assert_eq!(shared.iter().count(), 1_000_000);
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || drop(shared))
            .expect("a thread starts")
            .join()
            .expect("the list is dropped within a small stack");
    }

    #[test]
    fn enforcement_settings_ignore_comments_and_local_tables() {
        let a = enforcement_settings("# c\n[budget]\ntokens_cap = 5\n[server]\nport = 1\n");
        let b = enforcement_settings("[server]\nport = 2\n[budget]\n# other\ntokens_cap = 5\n");
        assert_eq!(a, b);
        let c = enforcement_settings("[budget]\ntokens_cap = 6\n");
        assert_ne!(a, c);
        let d =
            enforcement_settings("[server]\nagent_auth = \"optional\"\n[budget]\ntokens_cap = 5\n");
        assert_ne!(a, d);
    }
}
