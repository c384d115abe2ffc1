//! Where a proposal's commit left `main` (its merge base with `main`'s
//! tip), found without walking `main`'s history through libgit2 every
//! time.
//!
//! A proposal's commit is usually one commit whose parent was `main`'s tip
//! when it was filed. Approving it needs the merge base of that commit and
//! `main`'s current tip; libgit2 finds it by reading (inflating, hashing,
//! parsing) every commit `main` gained since, so approvals cost more the
//! longer proposals wait and the more others are approved meanwhile. Here
//! the parents and times of the commits walked are kept in memory: a
//! commit never changes, so what is kept is keyed by its id and never goes
//! stale, and the walk through them is a few hash lookups per commit.
//! Anything but the usual shape (a commit with several parents, one
//! already merged into `main`, a parent `main` does not hold) is left to
//! libgit2's own merge base.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use git2::{Oid, Repository};

use super::git::StoreError;

/// Commits kept at most; the store is emptied when it is full (the next
/// walks read what they need again).
const MAX_KEPT: usize = 65_536;
/// Commits one walk visits at most before it leaves the answer to libgit2.
const MAX_WALK: usize = 200_000;
/// Clocks disagree: commits up to this much older than the proposal's
/// parent are still walked.
const CLOCK_SLACK_SECONDS: i64 = 86_400;

struct Node {
    time: i64,
    parents: Box<[Oid]>,
}

fn kept() -> &'static Mutex<HashMap<Oid, Node>> {
    static KEPT: OnceLock<Mutex<HashMap<Oid, Node>>> = OnceLock::new();
    KEPT.get_or_init(Mutex::default)
}

/// A commit's time and parents, from `kept` or read once into it.
fn node<'k>(
    kept: &'k mut HashMap<Oid, Node>,
    repo: &Repository,
    oid: Oid,
) -> Result<&'k Node, StoreError> {
    if !kept.contains_key(&oid) {
        let commit = repo.find_commit(oid)?;
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.insert(
            oid,
            Node {
                time: commit.time().seconds(),
                parents: commit.parent_ids().collect(),
            },
        );
    }
    kept.get(&oid)
        .ok_or_else(|| git2::Error::from_str("a commit kept in memory is gone").into())
}

/// The merge base of `main` and `submitted`, as `git merge-base` gives it.
pub fn fork_point(repo: &Repository, main: Oid, submitted: Oid) -> Result<Oid, StoreError> {
    match usual_fork(repo, main, submitted)? {
        Some(fork) => Ok(fork),
        None => Ok(repo.merge_base(main, submitted)?),
    }
}

/// `submitted`'s parent when `submitted` has exactly one, `main` holds that
/// parent and does not hold `submitted`: then the parent is the merge base
/// (every common ancestor is an ancestor of it). `None`: another shape,
/// or a walk too long.
fn usual_fork(repo: &Repository, main: Oid, submitted: Oid) -> Result<Option<Oid>, StoreError> {
    let mut guard = match kept().lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let kept = &mut *guard;
    let submitted_node = node(kept, repo, submitted)?;
    let (submitted_time, parent) = match *submitted_node.parents {
        [parent] => (submitted_node.time, parent),
        _ => return Ok(None),
    };
    if parent == main {
        return Ok(Some(parent));
    }
    let parent_time = node(kept, repo, parent)?.time;
    // Neither commit looked for is older than this (give or take the
    // clocks): older commits' parents need no walking.
    let horizon = parent_time.min(submitted_time) - CLOCK_SLACK_SECONDS;
    let mut seen = HashSet::new();
    let mut todo = vec![main];
    let mut holds_parent = false;
    while let Some(c) = todo.pop() {
        if !seen.insert(c) {
            continue;
        }
        if c == submitted {
            return Ok(None);
        }
        if c == parent {
            // `submitted` is younger than its parent: not below it.
            holds_parent = true;
            continue;
        }
        if seen.len() > MAX_WALK {
            return Ok(None);
        }
        let n = node(kept, repo, c)?;
        if n.time >= horizon {
            todo.extend(n.parents.iter().copied());
        }
    }
    Ok(holds_parent.then_some(parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A commit of the empty tree with `parents`, at `time`.
    fn commit(
        repo: &Repository,
        parents: &[Oid],
        time: i64,
        what: &str,
    ) -> Result<Oid, git2::Error> {
        let tree = repo.find_tree(repo.treebuilder(None)?.write()?)?;
        let sig = git2::Signature::new("t", "t@example.org", &git2::Time::new(time, 0))?;
        let parents = parents
            .iter()
            .map(|p| repo.find_commit(*p))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        repo.commit(None, &sig, &sig, what, &tree, &refs)
    }

    /// The answer is libgit2's merge base in each shape, whether the quick
    /// walk answered or not.
    #[test]
    fn the_fork_point_is_the_merge_base_in_every_shape() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init(dir.path())?;
        let t = 1_800_000_000;
        let root = commit(&repo, &[], t, "root")?;
        // Proposals filed on `root`, then approved one after another.
        let filed: Vec<Oid> = (0..5)
            .map(|i| commit(&repo, &[root], t + 10 + i, "proposal"))
            .collect::<Result<_, _>>()?;
        let mut main = root;
        for (i, p) in filed.iter().take(3).enumerate() {
            main = commit(&repo, &[main, *p], t + 100 + i as i64, "merge")?;
        }
        // A proposal filed on today's main, and a branch of two commits.
        let on_tip = commit(&repo, &[main], t + 200, "proposal")?;
        let person = commit(&repo, &[root], t + 20, "a person's change")?;
        let two = commit(&repo, &[person], t + 30, "proposal")?;
        // A parent main does not hold (main was rewritten after filing).
        let lost = commit(&repo, &[root], t + 40, "a commit main lost")?;
        let orphaned = commit(&repo, &[lost], t + 50, "proposal")?;
        let cases = [
            (filed[4], Some(root)),
            (filed[3], Some(root)),
            (on_tip, Some(main)),
            // Already merged: the merge base is the commit itself.
            (filed[1], None),
            (two, None),
            (orphaned, None),
        ];
        for (submitted, quick) in cases {
            assert_eq!(usual_fork(&repo, main, submitted)?, quick, "{submitted}");
            assert_eq!(
                fork_point(&repo, main, submitted)?,
                repo.merge_base(main, submitted)?,
                "{submitted}"
            );
        }
        Ok(())
    }
}
