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
//! What `main`'s last tip reaches is kept too, so an approval walks only
//! the commits `main` gained since the last one: approving the k-th of
//! many waiting proposals no longer walks k merges.
//! Anything but the usual shape (a commit with several parents, one
//! already merged into `main`, a parent `main` does not hold) is left to
//! libgit2's own merge base.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use git2::{Oid, Repository};

use super::git::StoreError;

/// Commits kept at most; the store is emptied when it is full (the next
/// walks read what they need again). What `main` reaches ([`Reach`]) is
/// kept only while it holds no more commits than this either.
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

/// Locks one of this module's stores; a writer that panicked holding it
/// left commits' parents and times, which never go stale.
fn lock<T>(store: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

/// The commits `main`'s last tip reaches, as far back as a walk went: kept
/// so that the next approval walks only what `main` gained since (one
/// merge, usually) instead of everything back to the proposal's parent,
/// which was most of an approval's cost once many proposals waited.
struct Reach {
    /// The tip walked from.
    tip: Oid,
    /// Commits older than this were not walked past (their parents not
    /// visited).
    horizon: i64,
    /// Every commit the tip reaches through commits not older than
    /// `horizon`.
    seen: HashSet<Oid>,
}

fn reach() -> &'static Mutex<Option<Reach>> {
    static REACH: OnceLock<Mutex<Option<Reach>>> = OnceLock::new();
    REACH.get_or_init(Mutex::default)
}

/// Adds to `new` what `from` reaches through commits not older than
/// `horizon`, not walking past commits in `old` or `new` (what those reach
/// is there already). Whether the walk came upon `stop`; `None` once the
/// two sets hold more than [`MAX_WALK`] commits.
fn walk(
    kept: &mut HashMap<Oid, Node>,
    repo: &Repository,
    from: Oid,
    horizon: i64,
    old: &HashSet<Oid>,
    new: &mut HashSet<Oid>,
    stop: Option<Oid>,
) -> Result<Option<bool>, StoreError> {
    let mut came_upon = false;
    let mut todo = vec![from];
    while let Some(c) = todo.pop() {
        if Some(c) == stop {
            came_upon = true;
        }
        if old.contains(&c) || !new.insert(c) {
            continue;
        }
        if old.len() + new.len() > MAX_WALK {
            return Ok(None);
        }
        let n = node(kept, repo, c)?;
        if n.time >= horizon {
            todo.extend(n.parents.iter().copied());
        }
    }
    Ok(Some(came_upon))
}

/// `submitted`'s parent when `submitted` has exactly one, `main` holds that
/// parent and does not hold `submitted`: then the parent is the merge base
/// (every common ancestor is an ancestor of it). `None`: another shape,
/// or a walk too long.
///
/// What `main` reaches is kept ([`Reach`]) and extended from the new tip
/// when that tip reaches the last one; otherwise (`main` rewritten, or a
/// proposal older than the walk went) it is walked afresh. A walk stops at
/// commits older than both the proposal and its parent (give or take the
/// clocks): their descendants are younger, so nothing older leads to
/// either.
fn usual_fork(repo: &Repository, main: Oid, submitted: Oid) -> Result<Option<Oid>, StoreError> {
    let mut guard = lock(kept());
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
    let horizon = parent_time.min(submitted_time) - CLOCK_SLACK_SECONDS;
    let mut reach_guard = lock(reach());
    let mut known = reach_guard.take().filter(|r| r.horizon <= horizon);
    if let Some(r) = known.as_mut() {
        if r.tip != main {
            // Commits the last tip reaches end the walk; if it does not
            // come upon the tip itself, `main` does not descend from it.
            let mut gained = HashSet::new();
            match walk(
                kept,
                repo,
                main,
                r.horizon,
                &r.seen,
                &mut gained,
                Some(r.tip),
            )? {
                Some(true) => {
                    r.seen.extend(gained);
                    r.tip = main;
                }
                _ => known = None,
            }
        }
    }
    let r = match known {
        Some(r) => r,
        None => match Reach::walked(kept, repo, main, horizon)? {
            Some(r) => r,
            None => return Ok(None),
        },
    };
    let answer = (r.seen.contains(&parent) && !r.seen.contains(&submitted)).then_some(parent);
    *reach_guard = r.kept();
    Ok(answer)
}

impl Reach {
    /// What `main` reaches back to `horizon`, walked afresh; `None` when
    /// the walk is too long.
    fn walked(
        kept: &mut HashMap<Oid, Node>,
        repo: &Repository,
        main: Oid,
        horizon: i64,
    ) -> Result<Option<Reach>, StoreError> {
        let mut seen = HashSet::new();
        let walked = walk(kept, repo, main, horizon, &HashSet::new(), &mut seen, None)?;
        Ok(walked.map(|_| Reach {
            tip: main,
            horizon,
            seen,
        }))
    }

    /// Itself while small: a long-running server must not grow with
    /// `main`.
    fn kept(self) -> Option<Reach> {
        (self.seen.len() <= MAX_KEPT).then_some(self)
    }
}

/// Walks what `main` reaches back to a day before its tip (give or take
/// the clocks) and keeps it, as the first approval would: a server does
/// this once it listens, so that the first approval after a start does not
/// wait for a walk over a day of history. A proposal filed on `main`'s
/// tip, or later, finds its fork there.
pub fn warm(repo: &Repository, main: Oid) -> Result<(), StoreError> {
    let mut guard = lock(kept());
    let kept = &mut *guard;
    let horizon = node(kept, repo, main)?.time - CLOCK_SLACK_SECONDS;
    let mut reach_guard = lock(reach());
    if reach_guard
        .as_ref()
        .is_some_and(|r| r.tip == main && r.horizon <= horizon)
    {
        return Ok(());
    }
    if let Some(r) = Reach::walked(kept, repo, main, horizon)?.and_then(Reach::kept) {
        *reach_guard = Some(r);
    }
    Ok(())
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

    /// Checks that the quick walk answers `quick` and that the answer is
    /// libgit2's merge base either way (none for histories without a
    /// common commit).
    fn answers(repo: &Repository, main: Oid, submitted: Oid, quick: Option<Oid>) -> TestResult {
        assert_eq!(usual_fork(repo, main, submitted)?, quick, "{submitted}");
        assert_eq!(
            fork_point(repo, main, submitted).ok(),
            repo.merge_base(main, submitted).ok(),
            "{submitted}"
        );
        Ok(())
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
            answers(&repo, main, submitted, quick)?;
        }
        // The same after a warm-up walk from `main` (a server's at start),
        // from an older tip, and from one main does not descend from.
        for tip in [main, filed[0], lost, main] {
            warm(&repo, tip)?;
            for (submitted, quick) in cases {
                answers(&repo, main, submitted, quick)?;
            }
        }
        Ok(())
    }

    /// What `main` reaches is kept from one approval to the next; a `main`
    /// that does not descend from the last tip (rewritten), a proposal
    /// merged since, and a proposal older than the last walk went are each
    /// answered as libgit2 would.
    #[test]
    fn what_main_reaches_is_kept_only_while_main_descends_from_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init(dir.path())?;
        let t = 1_800_000_000;
        let root = commit(&repo, &[], t, "root")?;
        let filed: Vec<Oid> = (0..4)
            .map(|i| commit(&repo, &[root], t + 10 + i, "proposal"))
            .collect::<Result<_, _>>()?;
        let check = |main, submitted, quick| answers(&repo, main, submitted, quick);
        // Approvals one after another: each walk starts from the last.
        let mut main = root;
        for p in &filed[..2] {
            check(main, *p, Some(root))?;
            main = commit(&repo, &[main, *p], t + 100, "merge")?;
        }
        check(main, filed[2], Some(root))?;
        // Merged since the last walk: not the usual shape any more.
        let merged = commit(&repo, &[main, filed[2]], t + 110, "merge")?;
        check(merged, filed[2], None)?;
        check(merged, filed[3], Some(root))?;
        // A rewritten main that no longer holds `root`.
        let other_root = commit(&repo, &[], t + 120, "another root")?;
        let rewritten = commit(&repo, &[other_root], t + 130, "rewritten")?;
        check(rewritten, filed[3], None)?;
        // Back on the first history, with a proposal filed on a commit far
        // older than the last walk went.
        let old_root = commit(&repo, &[], t - 10 * 86_400, "old root")?;
        let old_tip = commit(&repo, &[old_root], t - 10 * 86_400 + 1, "old main")?;
        let joined = commit(&repo, &[merged, old_tip], t + 140, "joined")?;
        let old = commit(&repo, &[old_root], t - 10 * 86_400 + 5, "old proposal")?;
        check(joined, filed[3], Some(root))?;
        check(joined, old, Some(old_root))?;
        Ok(())
    }
}
