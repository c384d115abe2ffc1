//! Where a proposal's commit left `main` (its merge base with `main`'s
//! tip), found without walking `main`'s history through libgit2 every
//! time.
//!
//! A proposal's commit is usually one commit whose parent was `main`'s tip
//! when it was filed. Approving it needs the merge base of that commit and
//! `main`'s current tip; libgit2 finds it by reading (inflating, hashing,
//! parsing) every commit `main` gained since, so approvals cost more the
//! longer proposals wait and the more others are approved meanwhile. Here
//! what `main`'s last tip reaches is kept in memory (the ids of the
//! commits, and the edge where the walk stopped), so an approval reads
//! only the commits `main` gained since the last one: approving the k-th
//! of many waiting proposals no longer walks k merges, and a proposal
//! older than the last walk went is answered by walking on from its edge,
//! not from the tip again.
//! Anything but the usual shape (a commit with several parents, one
//! already merged into `main`, a parent `main` does not hold) is left to
//! libgit2's own merge base.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use git2::{Oid, Repository};

use super::git::StoreError;

/// Commits kept at most: what `main` reaches ([`Reach`]) is kept only
/// while it holds no more than this.
const MAX_KEPT: usize = 65_536;
/// Commits one walk visits at most before it leaves the answer to libgit2.
const MAX_WALK: usize = 200_000;
/// Clocks disagree: commits up to this much older than the proposal's
/// parent are still walked.
const CLOCK_SLACK_SECONDS: i64 = 86_400;

/// A commit's time and parents, read from the repository. Nothing of it
/// is kept: a walk reads each commit it visits once, and the commits
/// behind the kept [`Reach`] are never read again.
struct Node {
    time: i64,
    parents: Vec<Oid>,
}

fn node(repo: &Repository, oid: Oid) -> Result<Node, StoreError> {
    let commit = repo.find_commit(oid)?;
    Ok(Node {
        time: commit.time().seconds(),
        parents: commit.parent_ids().collect(),
    })
}

/// Locks what `main` reaches; a writer that panicked holding it left ids
/// of commits, which never go stale (a `main` rewritten since is noticed
/// by the walk).
fn lock<T>(store: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    /// The commits of `seen` older than `horizon`, whose parents were not
    /// visited: where a walk to an older horizon goes on from.
    edge: Vec<Oid>,
}

fn reach() -> &'static Mutex<Option<Reach>> {
    static REACH: OnceLock<Mutex<Option<Reach>>> = OnceLock::new();
    REACH.get_or_init(Mutex::default)
}

/// One walk: adds to `new` what `todo` reaches through commits not older
/// than `horizon`, not walking past commits in `old` or `new` (what those
/// reach is there already), and to `edge` the commits it added but did
/// not walk past (older than `horizon`).
struct Walk<'a> {
    horizon: i64,
    old: &'a HashSet<Oid>,
    new: &'a mut HashSet<Oid>,
    edge: &'a mut Vec<Oid>,
}

impl Walk<'_> {
    /// Walks from `todo`. Whether it came upon `stop`; `None` once the two
    /// sets hold more than [`MAX_WALK`] commits.
    fn from(
        &mut self,
        repo: &Repository,
        mut todo: Vec<Oid>,
        stop: Option<Oid>,
    ) -> Result<Option<bool>, StoreError> {
        let mut came_upon = false;
        while let Some(c) = todo.pop() {
            if Some(c) == stop {
                came_upon = true;
            }
            if self.old.contains(&c) || !self.new.insert(c) {
                continue;
            }
            if self.old.len() + self.new.len() > MAX_WALK {
                return Ok(None);
            }
            let n = node(repo, c)?;
            if n.time >= self.horizon {
                todo.extend(n.parents);
            } else {
                self.edge.push(c);
            }
        }
        Ok(Some(came_upon))
    }
}

/// `submitted`'s parent when `submitted` has exactly one, `main` holds that
/// parent and does not hold `submitted`: then the parent is the merge base
/// (every common ancestor is an ancestor of it). `None`: another shape,
/// or a walk too long.
///
/// What `main` reaches is kept ([`Reach`]), extended from the new tip
/// when that tip reaches the last one, and walked on from its edge when
/// the proposal is older than the last walk went; otherwise (`main`
/// rewritten) it is walked afresh. A walk stops at commits older than both
/// the proposal and its parent (give or take the clocks): their
/// descendants are younger, so nothing older leads to either.
fn usual_fork(repo: &Repository, main: Oid, submitted: Oid) -> Result<Option<Oid>, StoreError> {
    let submitted_node = node(repo, submitted)?;
    let (submitted_time, parent) = match *submitted_node.parents {
        [parent] => (submitted_node.time, parent),
        _ => return Ok(None),
    };
    if parent == main {
        return Ok(Some(parent));
    }
    let parent_time = node(repo, parent)?.time;
    let horizon = parent_time.min(submitted_time) - CLOCK_SLACK_SECONDS;
    let mut reach_guard = lock(reach());
    let mut known = match reach_guard.take() {
        Some(r) if r.tip != main => r.moved_to(repo, main)?,
        r => r,
    };
    if let Some(r) = known.take_if(|r| r.horizon > horizon) {
        known = r.deepened(repo, horizon)?;
    }
    let r = match known {
        Some(r) => r,
        None => match Reach::walked(repo, main, horizon)? {
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
    fn walked(repo: &Repository, main: Oid, horizon: i64) -> Result<Option<Reach>, StoreError> {
        let (mut seen, mut edge) = (HashSet::new(), Vec::new());
        let walked = Walk {
            horizon,
            old: &HashSet::new(),
            new: &mut seen,
            edge: &mut edge,
        }
        .from(repo, vec![main], None)?;
        Ok(walked.map(|_| Reach {
            tip: main,
            horizon,
            seen,
            edge,
        }))
    }

    /// Itself for `main`, walked from `main` down to what the last tip
    /// reaches; `None` when `main` does not descend from the last tip
    /// (rewritten) or the walk is too long. Commits the last tip reaches
    /// end the walk; if it does not come upon the tip itself, `main` does
    /// not descend from it.
    fn moved_to(mut self, repo: &Repository, main: Oid) -> Result<Option<Reach>, StoreError> {
        let (mut gained, mut edge) = (HashSet::new(), Vec::new());
        let walked = Walk {
            horizon: self.horizon,
            old: &self.seen,
            new: &mut gained,
            edge: &mut edge,
        }
        .from(repo, vec![main], Some(self.tip))?;
        if walked != Some(true) {
            return Ok(None);
        }
        self.seen.extend(gained);
        self.edge.extend(edge);
        self.tip = main;
        Ok(Some(self))
    }

    /// Itself back to the older `horizon`: the walk goes on from the edge
    /// (the commits it did not walk past), as a walk from the tip to
    /// `horizon` would have; `None` when it is too long.
    fn deepened(mut self, repo: &Repository, horizon: i64) -> Result<Option<Reach>, StoreError> {
        let mut todo = Vec::new();
        for c in std::mem::take(&mut self.edge) {
            let n = node(repo, c)?;
            if n.time >= horizon {
                todo.extend(n.parents);
            } else {
                self.edge.push(c);
            }
        }
        self.horizon = horizon;
        let walked = Walk {
            horizon,
            old: &HashSet::new(),
            new: &mut self.seen,
            edge: &mut self.edge,
        }
        .from(repo, todo, None)?;
        Ok(walked.map(|_| self))
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
    let horizon = node(repo, main)?.time - CLOCK_SLACK_SECONDS;
    let mut reach_guard = lock(reach());
    if reach_guard
        .as_ref()
        .is_some_and(|r| r.tip == main && r.horizon <= horizon)
    {
        return Ok(());
    }
    if let Some(r) = Reach::walked(repo, main, horizon)?.and_then(Reach::kept) {
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

    /// Walking on from the edge to an older horizon, and from a new tip
    /// down to the old one, keep exactly what a walk afresh from the tip
    /// to that horizon finds, edge included.
    #[test]
    fn a_walk_on_from_the_edge_finds_what_a_walk_afresh_finds() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init(dir.path())?;
        let t = 1_800_000_000;
        let day = 86_400;
        // A history of ten days: each day a proposal filed on main and
        // merged the next day.
        let mut main = commit(&repo, &[], t, "root")?;
        for d in 1..10 {
            let filed = commit(&repo, &[main], t + d * day, "proposal")?;
            main = commit(&repo, &[main, filed], t + d * day + day / 2, "merge")?;
        }
        let sorted = |r: &Reach| {
            let mut seen: Vec<Oid> = r.seen.iter().copied().collect();
            let mut edge = r.edge.clone();
            seen.sort();
            edge.sort();
            (seen, edge)
        };
        let near = Reach::walked(&repo, main, t + 8 * day)?.ok_or("walk too long")?;
        assert!(near.seen.len() < 19, "{}", near.seen.len());
        for h in [t + 5 * day + 1, t + 3 * day, t - day] {
            let deepened = Reach::walked(&repo, main, t + 8 * day)?
                .ok_or("walk too long")?
                .deepened(&repo, h)?
                .ok_or("walk too long")?;
            let afresh = Reach::walked(&repo, main, h)?.ok_or("walk too long")?;
            assert_eq!(sorted(&deepened), sorted(&afresh), "horizon {h}");
        }
        // A new tip on top of the one walked.
        let filed = commit(&repo, &[main], t + 10 * day, "proposal")?;
        let tip = commit(&repo, &[main, filed], t + 10 * day + 1, "merge")?;
        let moved = near
            .moved_to(&repo, tip)?
            .ok_or("main descends from the last tip")?;
        let afresh = Reach::walked(&repo, tip, t + 8 * day)?.ok_or("walk too long")?;
        assert_eq!(sorted(&moved), sorted(&afresh));
        // The new merge and its proposal, the merges and proposals of days
        // 9 and 8, and day 7's merge at the edge.
        assert_eq!(moved.seen.len(), 7);
        assert_eq!(moved.edge.len(), 1);
        Ok(())
    }
}
