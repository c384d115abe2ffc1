//! Repository maintenance: loose objects into a pack, small packs merged
//! into bigger ones (by size tiers, each 4 times the one below: a full
//! tier of 4 packs is merged into one of the next, so an object is
//! rewritten O(log n) times), loose refs into
//! `packed-refs`, and the audit ref's reflog dropped (the chain is its own
//! log).
//!
//! Safe against concurrent writers (gov's own, in any process, and a `git`
//! command): nothing is deleted before what replaces it is durable (a
//! loose object once a flushed pack holds it; a pack once a flushed pack
//! holds every object of it; a loose ref only under its own lock, after
//! checking it still has the value a flushed `packed-refs` holds), and
//! nothing is dropped, reachable or not. Packing objects takes neither the
//! chain lock nor a writer's mutex; packing refs holds the chain lock only
//! while it moves a new `packed-refs`, written and flushed beforehand, into
//! place (the refs are listed and read before, and the loose files removed
//! after, each under its own lock), so a batch's ref transaction never
//! meets a held `packed-refs.lock`.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Display;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use git2::{Oid, Repository};

use crate::store::git::{
    pack_dir, sync_all_at_once, write_pack, write_pack_with_deltas, StoreError,
};
use crate::store::pack::MergeRaw;
use crate::store::pack_index::IndexFile;

/// At most this many loose objects go into one pack per pass, so a pass
/// over a repository with a large backlog stays short; the next pass takes
/// the rest.
pub const LOOSE_PER_PASS: usize = 100_000;

/// At most this many objects go into one pack a pass by hand writes, and a
/// pack of its that holds this many is full: later passes by hand leave it
/// as it is. The delta search holds every object of the pack it writes
/// (libgit2's object list, and the objects it reads to compare), so one
/// pack for the whole repository made the pass's memory and time grow with
/// history (342 MB resident at 105,000 entries, docs/BENCHMARKS.md, the
/// thirty-seventh round); in packs of this many its peak stays about 110
/// MB, and a pass rewrites only what came since the last full pack.
pub const OBJECTS_PER_HAND_PACK: usize = 100_000;

/// What one pass did, and what the repository holds afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub loose_before: usize,
    pub loose_packed: usize,
    pub packs_before: usize,
    pub packs_merged: usize,
    pub packs_after: usize,
    pub loose_refs_packed: usize,
    pub loose_after: usize,
    /// Bytes under `.git/objects` afterwards.
    pub object_bytes: u64,
    /// Packs handed to a merge on a thread of its own ([`LongLane`]):
    /// merged after the pass returns.
    #[serde(skip_serializing_if = "is_zero")]
    pub packs_to_long_merge: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Who runs a pass, which decides how packs are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The server's pass beside its writers: packs without deltas are
    /// merged by copying their entries ([`crate::store::pack::merge_raw`]),
    /// no object compressed again; small packs with deltas (such as a
    /// fetch writes) through libgit2 without a delta search. A larger pack
    /// with deltas (`gov maintain`'s, or `git gc`'s) is left to a pass by
    /// hand (see [`KEPT_FOR_HAND`]).
    Background,
    /// `gov maintain`: every pack but the full ones it wrote before
    /// merged, with a delta search (smaller, slower), into packs of at
    /// most [`OBJECTS_PER_HAND_PACK`] objects.
    ByHand,
}

/// The refs a pass of maintenance leaves loose.
#[derive(Clone)]
pub struct KeepLoose<'a> {
    /// The audit ref, moved by every batch.
    pub audit_ref: String,
    /// The folder of the proposals' branches (such as
    /// `refs/heads/gov/proposal/`).
    pub proposal_refs: String,
    /// The branches (full ref names) of the proposals waiting for a
    /// person, if known, read before the pass: they stay loose. Unknown
    /// (`None`), the whole of `proposal_refs` stays loose.
    pub pending: Option<&'a std::collections::HashSet<String>>,
    /// Asked under the chain lock (no batch is half-way then) of each loose
    /// branch under `proposal_refs` that `pending` does not name: whether
    /// its proposal is known to be decided. Only then is the branch (the
    /// one an approved proposal keeps) packed; a proposal filed after
    /// `pending` was read stays loose (packed, deciding it would rewrite
    /// all of `packed-refs`). So the work under the lock is one question
    /// per branch filed or decided since, not one per pending proposal.
    pub decided: &'a dyn Fn(&str) -> bool,
}

/// One pass of maintenance. Also cleans up after an earlier pass or batch
/// that died half-way (loose copies of packed objects are simply packed
/// again and removed).
///
/// Two kinds of refs stay loose ([`KeepLoose`]): the audit ref (moved by
/// every batch) and the pending proposals' branches: deciding a proposal
/// deletes or renames its branch, which for a packed ref means rewriting
/// all of `packed-refs`. They are as many as the proposals waiting for a
/// person, not as many as were ever filed.
///
/// Without `refs` the pass packs objects only (the server packs refs
/// apart, less often, with [`pack_refs`]: listing them walks the pending
/// proposals' branches).
pub fn run(
    repo: &Repository,
    refs: Option<&KeepLoose<'_>>,
    pass: Pass,
) -> Result<Report, StoreError> {
    run_with(repo, refs, pass, OBJECTS_PER_HAND_PACK, None)
}

/// The server's background pass ([`run`] with [`Pass::Background`], no
/// refs): a merge of more than the lane's threshold
/// ([`LONG_MERGE_BYTES`]) is handed to `lane`, and merged on a thread of
/// its own, unless the lane is busy; the packs it holds are left out of
/// the pass meanwhile.
pub fn run_background(repo: &Repository, lane: &Arc<LongLane>) -> Result<Report, StoreError> {
    run_with(
        repo,
        None,
        Pass::Background,
        OBJECTS_PER_HAND_PACK,
        Some(lane),
    )
}

/// [`run`], with packs by hand of at most `per_pack` objects, and long
/// background merges handed to `lane` if given ([`run_background`]).
fn run_with(
    repo: &Repository,
    refs: Option<&KeepLoose<'_>>,
    pass: Pass,
    per_pack: usize,
    lane: Option<&Arc<LongLane>>,
) -> Result<Report, StoreError> {
    let mut report = Report::default();
    remove_dead_temporaries(&pack_dir(repo));
    let loose = loose_objects(repo)?;
    report.loose_before = loose.len();
    if !loose.is_empty() {
        let take: Vec<Oid> = loose.into_iter().take(LOOSE_PER_PASS).collect();
        write_pack(repo, &take, &[])?;
        report.loose_packed = take.len();
    }
    let folder = PackFolder::list(&pack_dir(repo))?;
    let claimed = lane.map(|l| l.claimed()).unwrap_or_default();
    let packs = packs_in(folder.mergeable_besides(&claimed));
    let kept = packs_in(folder.kept_for_hand());
    // The packs a long merge holds count too.
    report.packs_before = folder.mergeable().len() + kept.len();
    // By hand, every pack but the full ones a pass by hand wrote is
    // merged, with a delta search, into packs of at most `per_pack`
    // objects: a small repository, and the pass costs what came since the
    // last full pack, not the whole history. In the background only full
    // size tiers are merged (each object is rewritten once per tier it
    // climbs, O(log n) times over its life).
    let merge = match pass {
        Pass::Background => tiered_roll_up(&packs),
        Pass::ByHand => {
            let mut all = packs.clone();
            for p in kept {
                if (IndexFile::open(&p.idx)?.count() as usize) < per_pack {
                    all.push(p);
                }
            }
            all.sort_by_key(|p| p.bytes);
            all
        }
    };
    // A lone pack is merged by hand if no pass by hand wrote it (it has no
    // `.keep`, so no deltas yet).
    let unsearched = pass == Pass::ByHand && !packs.is_empty();
    if merge.len() >= 2 || unsearched {
        match lane.map_or(Hand::Pass, |lane| lane.take(repo.path(), &merge)) {
            Hand::Lane => report.packs_to_long_merge = merge.len(),
            Hand::Pass => {
                report.packs_merged = merge_packs(repo, &merge, pass, per_pack, None)?;
            }
            Hand::Later => {
                tracing::debug!(
                    packs = merge.len(),
                    "long merge left for later: the lane is closed"
                );
            }
        }
    }
    let folder = PackFolder::list(&pack_dir(repo))?;
    report.packs_after = folder.mergeable().len() + folder.kept_for_hand().len();
    if let Some(keep) = refs {
        report.loose_refs_packed = pack_refs(repo, keep, pass)?;
    }
    report.loose_after = loose_objects(repo)?.len();
    report.object_bytes = dir_bytes(&repo.path().join("objects"));
    Ok(report)
}

/// The refs step of a pass ([`run`]): packs the loose refs but those
/// `keep` names into `packed-refs` and removes their loose files. Returns
/// how many it packed. Its cost grows with the loose refs it lists, the
/// pending proposals' branches among them; the server times it and runs
/// it less often as it grows (`app::governance`).
pub fn pack_refs(repo: &Repository, keep: &KeepLoose<'_>, pass: Pass) -> Result<usize, StoreError> {
    let at_least = match pass {
        Pass::Background => background_refs_threshold(repo.path()),
        Pass::ByHand => 1,
    };
    let skip =
        |name: &str| name == keep.audit_ref || keep.pending.is_some_and(|p| p.contains(name));
    let skip_prefixes = match keep.pending {
        Some(_) => vec![],
        None => vec![keep.proposal_refs.as_str()],
    };
    // Listed without a lock: a ref made after is packed next time.
    let mut names = packable_refs(repo.path(), &skip, &skip_prefixes, at_least);
    // Asked without a lock: a proposal the index knows as decided stays
    // decided, and a batch moves its branch before the index hears of it,
    // so an answer given now still holds when the file is put in place.
    // (Without a pending set, no proposal branch was listed.)
    names.retain(|name| !name.starts_with(&keep.proposal_refs) || (keep.decided)(name));
    remove_dead_temporaries(repo.path());
    let (pruned, _moves) = pack_in_moves(repo, names, REFS_PER_MOVE)?;
    // The chain is its own log: its reflog would grow by a line per
    // batch.
    let _ = repo.reflog_delete(&keep.audit_ref);
    Ok(pruned)
}

/// A temporary pack, index, `.keep` or `packed-refs` (`tmp_gov_pack_*`,
/// `tmp_gov_idx_*`, `tmp_gov_keep_*`, [`NEW_PACKED_REFS_PREFIX`]) whose
/// writer is gone, killed while it wrote: named `<pid>_<n>`, its process
/// no longer runs; named otherwise (by older versions), untouched for an
/// hour. Such a file is never renamed into place, so it is only garbage.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(3600);

fn remove_dead_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix("tmp_gov_pack_")
            .or_else(|| name.strip_prefix("tmp_gov_idx_"))
            .or_else(|| name.strip_prefix("tmp_gov_keep_"))
            .or_else(|| name.strip_prefix(NEW_PACKED_REFS_PREFIX))
        else {
            continue;
        };
        let pid = rest
            .split_once('_')
            .and_then(|(pid, n)| n.parse::<u64>().ok().and(pid.parse::<i32>().ok()));
        let dead = match pid {
            Some(pid) => !crate::store::spare::pid_alive(pid),
            None => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TEMPORARY),
        };
        if dead && fs::remove_file(e.path()).is_ok() {
            tracing::warn!(path = %e.path().display(), "removed a temporary pack a killed writer left");
        }
    }
}

/// Every loose object's id.
pub fn loose_objects(repo: &Repository) -> Result<Vec<Oid>, StoreError> {
    loose_objects_in(repo.path())
}

/// How many loose objects the Git directory `git_dir` holds (0 if it
/// cannot be read).
pub fn loose_object_count(git_dir: &Path) -> usize {
    loose_objects_in(git_dir).map_or(0, |l| l.len())
}

/// The files of a pack folder, one listing: the packs maintenance may
/// merge and those kept for a pass by hand are both read from it.
struct PackFolder {
    dir: PathBuf,
    names: BTreeSet<String>,
}

impl PackFolder {
    /// Lists `dir` (a missing folder holds no pack).
    fn list(dir: &Path) -> Result<PackFolder, StoreError> {
        let names = match fs::read_dir(dir) {
            Ok(d) => d
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(StoreError::io("read", dir, e)),
        };
        Ok(PackFolder {
            dir: dir.to_path_buf(),
            names,
        })
    }

    /// The packs with an index, by path, and whether each has a `.keep`.
    fn indexed(&self) -> impl Iterator<Item = (PathBuf, bool)> + '_ {
        let has = |stem: &str, ext: &str| self.names.contains(&format!("{stem}.{ext}"));
        self.names
            .iter()
            .filter_map(|n| n.strip_suffix(".pack"))
            .filter(move |stem| has(stem, "idx"))
            .map(move |stem| (self.dir.join(format!("{stem}.pack")), has(stem, "keep")))
    }

    /// The packs maintenance may merge: with an index, and no `.keep` (a
    /// pack git or a pass by hand keeps).
    fn mergeable(&self) -> Vec<PathBuf> {
        self.indexed()
            .filter_map(|(pack, keep)| (!keep).then_some(pack))
            .collect()
    }

    /// [`PackFolder::mergeable`] but those a long merge holds
    /// ([`LongLane`]).
    fn mergeable_besides(&self, claimed: &HashSet<PathBuf>) -> Vec<PathBuf> {
        let mut paths = self.mergeable();
        paths.retain(|p| !claimed.contains(p));
        paths
    }

    /// The packs only a pass by hand merges: their `.keep` is gov's
    /// ([`KEPT_FOR_HAND`]).
    fn kept_for_hand(&self) -> Vec<PathBuf> {
        self.indexed()
            .filter_map(|(pack, keep)| (keep && is_kept(&pack)).then_some(pack))
            .collect()
    }
}

fn loose_objects_in(git_dir: &Path) -> Result<Vec<Oid>, StoreError> {
    let objects = git_dir.join("objects");
    let mut out = Vec::new();
    let top = match fs::read_dir(&objects) {
        Ok(t) => t,
        Err(e) => return Err(StoreError::io("read", &objects, e)),
    };
    for dir in top.flatten() {
        let name = dir.file_name();
        let Some(prefix) = name.to_str().filter(|n| is_hex(n, 2)) else {
            continue;
        };
        let Ok(files) = fs::read_dir(dir.path()) else {
            continue;
        };
        for f in files.flatten() {
            let rest = f.file_name();
            if let Some(rest) = rest.to_str().filter(|n| is_hex(n, 38)) {
                if let Ok(oid) = Oid::from_str(&format!("{prefix}{rest}")) {
                    out.push(oid);
                }
            }
        }
    }
    Ok(out)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pack with its index, and its size.
#[derive(Debug, Clone)]
pub struct Pack {
    pub pack: PathBuf,
    pub idx: PathBuf,
    pub bytes: u64,
}

/// The packs at `paths` with their sizes, smallest first.
fn packs_in(paths: Vec<PathBuf>) -> Vec<Pack> {
    let mut out: Vec<Pack> = paths
        .into_iter()
        .map(|pack| Pack {
            idx: pack.with_extension("idx"),
            bytes: fs::metadata(&pack).map_or(0, |m| m.len()),
            pack,
        })
        .collect();
    out.sort_by_key(|p| p.bytes);
    out
}

/// How many packs of one size tier a background pass lets pile up before
/// it merges them: each object is rewritten about once per tier it climbs
/// (log base 4 of the repository's size over [`FIRST_TIER_BYTES`]), and
/// at most 3 packs sit in each tier.
const MERGE_FANOUT: usize = 4;

/// The largest pack of the first size tier; tier `t` above it holds the
/// packs larger than [`MERGE_FANOUT`]`^(t - 1)` times this and at most
/// `MERGE_FANOUT^t` times this. A batch writes a pack of a few dozen KB.
const FIRST_TIER_BYTES: u64 = 64 << 10;

/// The size tier of a pack of `bytes` (see [`FIRST_TIER_BYTES`]).
fn size_tier(bytes: u64) -> u32 {
    let mut tier = 0;
    let mut top = FIRST_TIER_BYTES;
    while bytes > top {
        tier += 1;
        top = top.saturating_mul(MERGE_FANOUT as u64);
    }
    tier
}

/// The packs a background pass merges (`packs` sorted smallest first):
/// none until some size tier holds [`MERGE_FANOUT`] packs; then the
/// highest such tier with every smaller pack, and each tier above it that
/// the merged pack lands in while it would make [`MERGE_FANOUT`] packs
/// there, so one pass writes the merge a chain of full tiers would give
/// (as a carry ripples through a number's digits). So every pack is
/// rewritten about once per tier it climbs, not once per doubling of
/// what is merged under it, as a geometric roll-up (each pack at least
/// twice all smaller ones) does: simulated with this server's rates (a
/// pass every 100 ms, 8 batch packs of 16 KB each), a byte was rewritten
/// 3.9 times instead of 7.0 over a minute, 6.1 instead of 12.4 over an
/// hour, with at most 30 packs instead of 17 (docs/BENCHMARKS.md, the
/// thirty-sixth round). A batch's pack may be larger than the first
/// tier (a batch of approvals on a grown `main` writes 90-190 KB): such
/// packs fill the second tier directly, and waiting for the first to
/// fill left 188 of them unmerged in two seconds of decisions (the
/// forty-fifth round).
fn tiered_roll_up(packs: &[Pack]) -> Vec<Pack> {
    let tiers: Vec<u32> = packs.iter().map(|p| size_tier(p.bytes)).collect();
    // How many packs tiers `low` to `high` hold, and their bytes.
    let within = |low: u32, high: u32| {
        packs
            .iter()
            .zip(&tiers)
            .filter(|(_, t)| (low..=high).contains(*t))
            .fold((0, 0u64), |(n, bytes), (p, _)| {
                (n + 1, bytes.saturating_add(p.bytes))
            })
    };
    let mut counts = std::collections::BTreeMap::<u32, usize>::new();
    for &t in &tiers {
        *counts.entry(t).or_default() += 1;
    }
    let Some(mut upto) = counts
        .iter()
        .rev()
        .find(|(_, &n)| n >= MERGE_FANOUT)
        .map(|(&t, _)| t)
    else {
        return Vec::new();
    };
    let mut merged = within(0, upto).1;
    loop {
        let lands = size_tier(merged);
        if lands <= upto {
            break;
        }
        let (joining, bytes) = within(upto + 1, lands);
        if joining + 1 < MERGE_FANOUT {
            break;
        }
        merged = merged.saturating_add(bytes);
        upto = lands;
    }
    packs
        .iter()
        .zip(&tiers)
        .filter(|(_, t)| **t <= upto)
        .map(|(p, _)| p.clone())
        .collect()
}

/// Whether a background pass would merge packs in the Git directory
/// `git_dir` (`tiered_roll_up`) besides those `lane` is merging: one
/// folder listing and a `stat` of each pack, no repository handle.
pub fn merge_due(git_dir: &Path, lane: &LongLane) -> bool {
    PackFolder::list(&git_dir.join("objects").join("pack")).is_ok_and(|folder| {
        !tiered_roll_up(&packs_in(folder.mergeable_besides(&lane.claimed()))).is_empty()
    })
}

/// A background merge that rewrites more than this many bytes is a long
/// one: it runs on a thread of its own ([`LongLane`]). The carry into a
/// grown repository's largest tiers rewrites hundreds of MB (470 MB in
/// 2.1-2.6 s at 100,000 entries, paced by the disk); done in the pass,
/// it held every other merge up meanwhile, and 150-1,000 batches' packs
/// piled up behind it (docs/BENCHMARKS.md, the forty-sixth round).
pub const LONG_MERGE_BYTES: u64 = 16 << 20;

/// How fast a long merge writes its pack, in bytes a second: written as
/// fast as the disk took it (150-190 MB/s here), the batches flushing
/// meanwhile waited behind its writes (two flushes of a few KB took 80-84
/// ms during a merge of 152 MB in 948 ms). On its own lane it may take
/// its time: the passes merge what comes meanwhile.
pub const LONG_MERGE_PACE: u64 = 64 << 20;

/// The lane of long background merges: at most one at a time, on a thread
/// of its own, while the server's passes go on merging the packs that
/// keep coming (the packs it merges are claimed: the passes leave them
/// out). Its packs are a whole roll-up (`tiered_roll_up`: a full tier
/// with every smaller pack, and the tiers the carry reaches), so the
/// passes' roll-ups of the packs written since never reach them: they
/// stay in the tiers below until the long merge is done.
pub struct LongLane {
    /// A merge of more bytes than this is long.
    threshold: u64,
    /// Bytes a second a long merge writes (see [`LONG_MERGE_PACE`]).
    pace: u64,
    state: Mutex<LaneState>,
    /// Long merges done (see [`LongLane::merges_done`]).
    done: AtomicU64,
}

#[derive(Default)]
struct LaneState {
    /// The packs of the merge under way (none when idle).
    claimed: HashSet<PathBuf>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Closed ([`LongLane::close`]): no long merge starts any more.
    closed: bool,
}

/// Where a pass's merge runs ([`LongLane::take`]).
#[derive(Debug, PartialEq, Eq)]
enum Hand {
    /// On the lane's thread.
    Lane,
    /// In the pass: it is not long, or the lane is busy or cannot start.
    Pass,
    /// Nowhere yet: it is long and the lane is closed (a server stopping
    /// would not wait for it); a later pass merges it.
    Later,
}

impl Default for LongLane {
    fn default() -> Self {
        LongLane::new(LONG_MERGE_BYTES, LONG_MERGE_PACE)
    }
}

impl LongLane {
    /// A lane for merges of more than `threshold` bytes, each written at
    /// most `pace` bytes a second.
    pub fn new(threshold: u64, pace: u64) -> LongLane {
        LongLane {
            threshold,
            pace,
            state: Mutex::new(LaneState::default()),
            done: AtomicU64::new(0),
        }
    }

    /// The packs of the long merge under way.
    fn claimed(&self) -> HashSet<PathBuf> {
        self.state_even_poisoned().claimed.clone()
    }

    fn state_even_poisoned(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many long merges have ended (merged or failed): a repository
    /// handle opened before one may map packs it deleted.
    pub fn merges_done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Starts merging `merge` (packs of the repository at `git_dir`) on a
    /// thread of its own if it is long and the lane is idle and open; says
    /// where the merge runs.
    fn take(self: &Arc<Self>, git_dir: &Path, merge: &[Pack]) -> Hand {
        if total_bytes(merge) <= self.threshold {
            return Hand::Pass;
        }
        let mut state = self.state_even_poisoned();
        if state.closed {
            return Hand::Later;
        }
        if !state.claimed.is_empty() {
            return Hand::Pass;
        }
        // The last one has let go of its claims, so it is done or about
        // to be.
        if let Some(last) = state.thread.take() {
            let _ = last.join();
        }
        let lane = Arc::clone(self);
        let (git_dir, merge) = (git_dir.to_path_buf(), merge.to_vec());
        let claims = merge.iter().map(|p| p.pack.clone()).collect();
        let spawned = std::thread::Builder::new()
            .name("gov-long-merge".into())
            .spawn(move || lane.merge(&git_dir, &merge));
        match spawned {
            Ok(thread) => {
                state.claimed = claims;
                state.thread = Some(thread);
                Hand::Lane
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a thread for a long merge; merging in the pass");
                Hand::Pass
            }
        }
    }

    /// The long merge's thread: merges, then lets go of the claims.
    fn merge(&self, git_dir: &Path, merge: &[Pack]) {
        let started = std::time::Instant::now();
        let merged = Repository::open(git_dir)
            .map_err(StoreError::from)
            .and_then(|repo| {
                crate::store::git::configure_for_batches(&repo)?;
                merge_packs(
                    &repo,
                    merge,
                    Pass::Background,
                    OBJECTS_PER_HAND_PACK,
                    Some(self.pace),
                )
            });
        self.done.fetch_add(1, Ordering::Relaxed);
        self.state_even_poisoned().claimed.clear();
        let bytes = total_bytes(merge);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        match merged {
            Ok(packs) => tracing::debug!(packs, bytes, ms, "long merge"),
            Err(e) => {
                tracing::warn!(error = %e, bytes, "long merge failed; a later pass merges again")
            }
        }
    }

    /// Closes the lane and waits for the long merge under way, if any, to
    /// end. From then on a pass leaves a long merge for later instead of
    /// starting it (see [`Hand::Later`]): a stopping server waits for
    /// the lane once, and a merge handed to it after that would be cut
    /// off when the process exits.
    pub fn close(&self) {
        self.state_even_poisoned().closed = true;
        self.wait();
    }

    /// Waits for the long merge under way, if any, to end.
    pub fn wait(&self) {
        let thread = self.state_even_poisoned().thread.take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// The bytes of the packs of `merge`.
fn total_bytes(merge: &[Pack]) -> u64 {
    merge
        .iter()
        .map(|p| p.bytes)
        .fold(0u64, u64::saturating_add)
}

/// Writes every object of `merge` into new flushed packs, then removes
/// the old packs; returns how many it merged. By hand, through libgit2
/// with a delta search, in packs of at most `per_pack` objects in the
/// order they were written, each marked for the next pass by hand
/// ([`KEPT_FOR_HAND`]); in the background into one pack by copying
/// entries, with the packs that hold deltas dealt with first
/// ([`merge_around_deltas`]).
///
/// With `pace`, a background merge's pack is written at most that many
/// bytes a second (see `pack::merge_raw`).
fn merge_packs(
    repo: &Repository,
    merge: &[Pack],
    pass: Pass,
    per_pack: usize,
    pace: Option<u64>,
) -> Result<usize, StoreError> {
    let new = match pass {
        Pass::Background => {
            let paths: Vec<PathBuf> = merge.iter().map(|p| p.pack.clone()).collect();
            match crate::store::pack::merge_raw(&pack_dir(repo), &paths, pace) {
                Ok(new) => vec![new],
                Err(MergeRaw::HasDeltas) => return merge_around_deltas(repo, merge, pace),
                Err(MergeRaw::Failed(e)) => return Err(e),
            }
        }
        Pass::ByHand => {
            let mut new = Vec::new();
            for part in objects_as_written(merge)?.chunks(per_pack.max(1)) {
                new.push(write_pack_with_deltas(repo, part)?);
            }
            // Marked once all are written: a pass killed before leaves
            // unmarked packs, which the next pass merges again with the
            // old ones (each object once), instead of full packs that
            // would keep copies of what the old ones hold for good.
            for pack in &new {
                keep_for_hand(pack)?;
            }
            new
        }
    };
    remove_packs(repo, merge, &new);
    Ok(merge.len())
}

/// [`merge_packs`] in the background when some of `merge` hold deltas,
/// which copying entries cannot keep. Written through libgit2 on the
/// batch handle (no delta search), every object of the merge would be
/// written whole and read through its deltas: a repository `gov
/// maintain` had taken from 104 to 42 MB grew back to 93 MB in 12 s, the
/// process at 96 MB (docs/BENCHMARKS.md, the fortieth round). So a pack
/// with deltas over [`BACKGROUND_DELTA_PACK_BYTES`] is kept out, marked
/// for a pass by hand; the smaller ones (a fetch's) are written whole
/// into one pack of their own; then everything else merges by copying.
fn merge_around_deltas(
    repo: &Repository,
    merge: &[Pack],
    pace: Option<u64>,
) -> Result<usize, StoreError> {
    let mut rest = Vec::with_capacity(merge.len());
    let mut small = Vec::new();
    let mut kept = 0;
    for p in merge {
        match crate::store::pack::holds_deltas(&p.pack)? {
            true if p.bytes > BACKGROUND_DELTA_PACK_BYTES => {
                keep_for_hand(&p.pack)?;
                kept += 1;
            }
            true => small.push(p.clone()),
            false => rest.push(p.clone()),
        }
    }
    if small.is_empty() && rest.len() < 2 {
        return Ok(0);
    }
    if !small.is_empty() {
        let whole = write_pack_with_deltas(repo, &objects_as_written(&small)?)?;
        remove_packs(repo, &small, std::slice::from_ref(&whole));
        rest.extend(packs_in(vec![whole]));
    }
    if rest.len() < 2 {
        return Ok(small.len());
    }
    let paths: Vec<PathBuf> = rest.iter().map(|p| p.pack.clone()).collect();
    let new = match crate::store::pack::merge_raw(&pack_dir(repo), &paths, pace) {
        Ok(new) => new,
        // Only if libgit2 made a delta after all: the old way, small.
        Err(MergeRaw::HasDeltas) => write_pack_with_deltas(repo, &objects_as_written(&rest)?)?,
        Err(MergeRaw::Failed(e)) => return Err(e),
    };
    remove_packs(repo, &rest, &[new]);
    Ok(merge.len() - kept)
}

/// Removes the packs of `merged` but those of `new` (the packs that now
/// hold their objects, flushed: one may have the name of an old one, if
/// it holds the same objects) from `repo`.
fn remove_packs(repo: &Repository, merged: &[Pack], new: &[PathBuf]) {
    let git_dir = repo.path();
    for p in merged {
        if new.contains(&p.pack) {
            continue;
        }
        // The index first: a pack without one is ignored by readers. Both
        // go to the spare files, which use them again once nobody maps
        // them (`spare::retire`).
        let _ = crate::store::spare::retire(git_dir, &p.idx);
        let _ = crate::store::spare::retire(git_dir, &p.pack);
        // A `.keep` here is gov's own: a pass by hand merges no other.
        for ext in ["rev", "bitmap", "mtimes", "keep"] {
            let _ = fs::remove_file(p.pack.with_extension(ext));
        }
    }
    // Readers that had the old packs open keep reading them until they
    // look again; the objects are in the new pack either way.
}

/// A pack with deltas up to this size is merged in the background, its
/// objects first written whole (cheap at this size), such as the pack a
/// `gov sync` fetch wrote; a larger one is kept for a pass by hand (see
/// [`merge_around_deltas`]).
const BACKGROUND_DELTA_PACK_BYTES: u64 = 1 << 20;

/// What the `.keep` file of a pack that only a pass by hand merges holds
/// (the pack `gov maintain` wrote, or a large pack with deltas the
/// background met, such as `git gc`'s). git keeps such a pack out of its
/// own repacks too; a `.keep` with other contents is git's or the
/// operator's, and gov merges that pack never.
pub const KEPT_FOR_HAND: &str =
    "gov: a pack with deltas, merged only by `gov maintain` (by hand)\n";

/// Whether the `.keep` of the pack at `pack` is gov's ([`KEPT_FOR_HAND`]).
fn is_kept(pack: &Path) -> bool {
    fs::read(pack.with_extension("keep")).is_ok_and(|k| k == KEPT_FOR_HAND.as_bytes())
}

/// Marks `p` as a pack only a pass by hand merges: its `.keep`, written
/// whole under a temporary name first (a partial one would read as
/// git's; a killed process's is removed as its temporary packs are).
/// Not flushed: lost in a crash, it is written again when the background
/// next meets the pack.
fn keep_for_hand(pack: &Path) -> Result<(), StoreError> {
    let keep = pack.with_extension("keep");
    let folder = pack.parent().unwrap_or(Path::new("."));
    let mut tmp = crate::store::pack::temporary_file(folder, "tmp_gov_keep_")
        .map_err(|e| StoreError::io("write", &keep, e))?;
    tmp.write_all(KEPT_FOR_HAND.as_bytes())
        .map_err(|e| StoreError::io("write", tmp.path(), e))?;
    tmp.persist(&keep)
        .map_err(|e| StoreError::io("write", &keep, e.error))?;
    Ok(())
}

/// The objects of `packs` (smallest first, as [`packs`] lists them) in the
/// order they were written: each pack's as they sit in it, the largest
/// pack first (the background roll-up keeps older objects in bigger packs;
/// a pack's time is no guide, git and libgit2 touch a pack to keep it
/// fresh). libgit2 writes objects in the order it is given them (a delta's
/// base just before the first object that needs it), so a walk down
/// history (`main`'s merges at start-up, the chain) reads the new pack
/// from one end to the other; given in the order of their ids, it touched
/// every part of the pack.
fn objects_as_written(packs: &[Pack]) -> Result<Vec<Oid>, StoreError> {
    let mut seen = HashSet::new();
    let mut objects = Vec::new();
    for p in packs.iter().rev() {
        for oid in crate::store::pack::objects_in_pack_order(&p.idx)? {
            if seen.insert(oid) {
                objects.push(oid);
            }
        }
    }
    Ok(objects)
}

/// How many loose refs the background pass waits for before it packs
/// them: an eighth of what `packed-refs` already holds (about 64 bytes a
/// ref), at least 64 and at most 4,096. Packing rewrites the whole file,
/// and the rejected and expired proposals' branches make it grow with
/// history: waiting for a share of its size keeps the cost per ref
/// constant, and the cap keeps the count of loose ref files bounded.
fn background_refs_threshold(git_dir: &std::path::Path) -> usize {
    let packed = fs::metadata(git_dir.join("packed-refs")).map_or(0, |m| m.len() as usize);
    (packed / 64 / 8).clamp(64, 4_096)
}

/// The loose refs a pass would pack: all under `refs/` but those `skip` names
/// or under `skip_prefixes` (whose folders are not even walked: the
/// pending proposals' branches are many); none if fewer than `at_least`.
fn packable_refs(
    git_dir: &Path,
    skip: &dyn Fn(&str) -> bool,
    skip_prefixes: &[&str],
    at_least: usize,
) -> Vec<String> {
    let mut names = loose_ref_names(git_dir, skip_prefixes);
    names.retain(|name| !skip(name));
    if names.len() < at_least {
        names.clear();
    }
    names
}

/// At most this many loose refs go into `packed-refs` per new file moved
/// into place (a pass makes as many as it needs, see [`pack_in_moves`]):
/// each is moved under the chain lock only once each of its refs is seen
/// to be there still, one `stat` a ref (8 ms for 4,096 on a grown history).
const REFS_PER_MOVE: usize = 4_096;

/// Packs the loose refs `names`, `per_move` at a time: each share is
/// written into a new `packed-refs` beside the current one, without a lock
/// ([`NewPackedRefs::write`]), moved into place under the chain lock
/// ([`NewPackedRefs::put_in_place`]) and its loose files pruned, so that
/// the lock is held for a bounded time however many refs wait. Written
/// under the chain lock, the step held every writer up for as long as it
/// took to read the loose refs and stream the whole file, one line for
/// every proposal ever decided (132 ms for 15,000 refs into a file of 2
/// MB, docs/BENCHMARKS.md, the forty-sixth round). Stops at the first
/// share that finds something changed meanwhile (the rest wait for the
/// next pass). Returns how many loose refs it pruned and how many files
/// it moved into place.
fn pack_in_moves(
    repo: &Repository,
    names: Vec<String>,
    per_move: usize,
) -> Result<(usize, usize), StoreError> {
    let (mut pruned, mut moves) = (0, 0);
    for share in names.chunks(per_move.max(1)) {
        // None of the share is there any more: nothing to move.
        let Some(new) = NewPackedRefs::write(repo, share.to_vec())? else {
            continue;
        };
        let Some(packed) = new.put_in_place(repo.path())? else {
            break;
        };
        moves += 1;
        pruned += prune_packed(repo.path(), packed);
    }
    Ok((pruned, moves))
}

/// What identifies one version of a file: git, libgit2 and gov all replace
/// `packed-refs` by a rename, so a new version is another inode, or the
/// same one (spare files are used again) with another change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    dev: u64,
    ino: u64,
    len: u64,
    changed: (i64, i64),
    modified: (i64, i64),
}

impl FileVersion {
    fn of(meta: &fs::Metadata) -> FileVersion {
        use std::os::unix::fs::MetadataExt;
        FileVersion {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            changed: (meta.ctime(), meta.ctime_nsec()),
            modified: (meta.mtime(), meta.mtime_nsec()),
        }
    }

    /// The version of the file at `path`, `None` if there is none.
    fn at(path: &Path) -> Result<Option<FileVersion>, StoreError> {
        match fs::symlink_metadata(path) {
            Ok(meta) => Ok(Some(FileVersion::of(&meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", path, e)),
        }
    }
}

/// The prefix of the file a new `packed-refs` is written to before it is
/// moved into place, followed by `<pid>_<n>` (a killed writer's is removed
/// by the next pass, as its temporary packs are).
const NEW_PACKED_REFS_PREFIX: &str = "tmp_gov_packed_refs_";

/// A new `packed-refs`, written and flushed beside the current one, not
/// yet in place (its file is removed when it is dropped, unless it was
/// moved into place).
struct NewPackedRefs {
    path: tempfile::TempPath,
    /// The version of `packed-refs` it was written from.
    from: Option<FileVersion>,
    /// The loose refs it packs, with the values it holds for them.
    loose: Vec<(String, Oid)>,
}

impl NewPackedRefs {
    /// Reads the loose refs `names` and the current `packed-refs`, and
    /// writes their merge to a file of its own, flushed. Takes no lock.
    /// `None` when no named ref is there any more.
    fn write(repo: &Repository, names: Vec<String>) -> Result<Option<NewPackedRefs>, StoreError> {
        let git_dir = repo.path();
        let mut loose: Vec<(String, Oid)> = names
            .into_iter()
            .filter_map(|name| {
                let text = fs::read_to_string(git_dir.join(&name)).ok()?;
                let oid = Oid::from_str(text.trim()).ok()?;
                Some((name, oid))
            })
            .collect();
        if loose.is_empty() {
            return Ok(None);
        }
        loose.sort_by(|a, b| a.0.cmp(&b.0));
        let (file, path) =
            crate::store::pack::temporary_file_in(git_dir, git_dir, NEW_PACKED_REFS_PREFIX)
                .map_err(|e| StoreError::io("create a new packed-refs in", git_dir, e))?
                .into_parts();
        let mut new = NewPackedRefs {
            path,
            from: None,
            loose,
        };
        new.from = new.fill(repo, &file)?;
        Ok(Some(new))
    }

    /// Writes the merge of `packed-refs` and the loose refs into `file`
    /// and flushes it; returns the version of `packed-refs` it read. The
    /// file (one line a ref, about 64 bytes, one ref for every proposal
    /// ever rejected or expired) is read and written as a stream, merged
    /// with the loose refs sorted by name: holding it as a map of names
    /// and its new text at once cost about 4 times its size, the server's
    /// largest allocation at the peak of its memory.
    fn fill(&self, repo: &Repository, file: &fs::File) -> Result<Option<FileVersion>, StoreError> {
        let packed_path = repo.path().join("packed-refs");
        let write = |e| StoreError::io("write", &self.path, e);
        let open = || match fs::File::open(&packed_path) {
            Ok(f) => {
                let version = f
                    .metadata()
                    .map_err(|e| StoreError::io("read", &packed_path, e))?;
                let refs = PackedRefs::new(&packed_path, std::io::BufReader::new(f))?;
                Ok((Some(FileVersion::of(&version)), Some(refs)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, None)),
            Err(e) => Err(StoreError::io("read", &packed_path, e)),
        };
        // Writes the new file from `old`: streamed, or read whole and
        // sorted first (the last line of a name kept) when `sort` or when
        // its header does not say `sorted` (not written by git, libgit2
        // or gov). Returns whether `old` was in order.
        let write_from = |old: Option<PackedRefs<_>>, sort: bool| {
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
            let merge = |old, fully_peeled, out: &mut dyn Write| {
                merge_packed_refs(repo, old, fully_peeled, &self.loose, out, &self.path)
            };
            let in_order = match old {
                None => merge(Box::new(std::iter::empty()), true, &mut out)?,
                Some(old) if sort || !old.sorted => {
                    let fully_peeled = old.fully_peeled;
                    let mut by_name = std::collections::BTreeMap::new();
                    for r in old {
                        let r: PackedRef = r?;
                        by_name.insert(r.name.clone(), r);
                    }
                    merge(
                        Box::new(by_name.into_values().map(Ok)),
                        fully_peeled,
                        &mut out,
                    )?
                }
                Some(old) => {
                    let fully_peeled = old.fully_peeled;
                    merge(Box::new(old), fully_peeled, &mut out)?
                }
            };
            out.flush().map_err(write)?;
            Ok::<_, StoreError>(in_order)
        };
        let (mut from, old) = open()?;
        if !write_from(old, false)? {
            // Said to be sorted and not: read again, sorted, and written
            // anew over what was written (if it was replaced meanwhile,
            // the new version is the one written from).
            file.set_len(0).map_err(write)?;
            std::io::Seek::rewind(&mut &*file).map_err(write)?;
            let (again, old) = open()?;
            let old = old.ok_or_else(|| {
                StoreError::io(
                    "read",
                    &packed_path,
                    std::io::Error::other("packed-refs was removed while it was read"),
                )
            })?;
            from = again;
            write_from(Some(old), true)?;
        }
        file.sync_all()
            .map_err(|e| StoreError::io("sync", &self.path, e))?;
        Ok(from)
    }

    /// Under the chain lock (no gov batch moves or deletes a ref
    /// meanwhile) and `packed-refs.lock` (nor does git: it takes that
    /// lock to delete a ref or rewrite the file), moves the new file into
    /// place if `packed-refs` is still the version it was written from and
    /// each loose ref it packs is still there; flushes the folder. Returns
    /// the refs it packed, `None` if it did not move it (its file removed).
    fn put_in_place(self, git_dir: &Path) -> Result<Option<Vec<(String, Oid)>>, StoreError> {
        let packed_path = git_dir.join("packed-refs");
        let lock_path = git_dir.join("packed-refs.lock");
        let moved = (|| {
            let _chain = crate::store::lock::ChainLock::acquire(git_dir)?;
            let locked = std::time::Instant::now();
            // The lock taken by putting the new file there: if someone
            // else holds it (git rewriting the file), next pass.
            match crate::store::spare::rename_no_replace(&self.path, &lock_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
                Err(e) => return Err(StoreError::io("rename", &self.path, e)),
            }
            let current = FileVersion::at(&packed_path).map(|version| {
                version == self.from
                    && self
                        .loose
                        .iter()
                        .all(|(name, _)| fs::symlink_metadata(git_dir.join(name)).is_ok())
            });
            match current {
                Ok(true) => {}
                other => {
                    let _ = fs::remove_file(&lock_path);
                    return other.map(|_| false);
                }
            }
            if let Err(e) = fs::rename(&lock_path, &packed_path) {
                let _ = fs::remove_file(&lock_path);
                return Err(StoreError::io("rename", &lock_path, e));
            }
            tracing::debug!(
                held_us = locked.elapsed().as_micros() as u64,
                refs = self.loose.len(),
                "packed-refs moved into place under the chain lock"
            );
            Ok(true)
        })();
        match moved {
            Ok(true) => {
                // Flushed before any loose ref it packs is removed.
                sync_all_at_once(&[], &BTreeSet::from([git_dir.to_path_buf()]))?;
                Ok(Some(self.loose))
            }
            // The new file goes with `self`.
            Ok(false) => {
                tracing::debug!(
                    "packed-refs or a ref changed while it was written: left for the next pass"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// One ref of `packed-refs`: its value and name, and the value of its `^`
/// line (what an annotated tag peels to), as written.
#[derive(Debug)]
struct PackedRef {
    oid: String,
    name: String,
    peeled: Option<String>,
}

/// The refs of a `packed-refs` file as its lines give them, and what its
/// header says of them.
struct PackedRefs<'p, R> {
    path: &'p Path,
    lines: std::io::Lines<R>,
    /// The line read and not yet taken.
    ahead: Option<String>,
    /// Every ref that peels has its `^` line: a ref without one is known
    /// not to point at a tag.
    fully_peeled: bool,
    /// The refs are in the order of their names.
    sorted: bool,
}

impl<'p, R: std::io::BufRead> PackedRefs<'p, R> {
    /// The refs of the file at `path` (named in errors), read from
    /// `reader`.
    fn new(path: &'p Path, reader: R) -> Result<PackedRefs<'p, R>, StoreError> {
        let mut refs = PackedRefs {
            path,
            lines: reader.lines(),
            ahead: None,
            fully_peeled: false,
            sorted: false,
        };
        refs.ahead = refs.line()?;
        if let Some(traits) = refs
            .ahead
            .as_deref()
            .and_then(|l| l.strip_prefix("# pack-refs with:"))
        {
            let has = |t: &str| traits.split_whitespace().any(|x| x == t);
            refs.fully_peeled = has("fully-peeled");
            refs.sorted = has("sorted");
        }
        Ok(refs)
    }

    /// The next line, `None` after the last.
    fn line(&mut self) -> Result<Option<String>, StoreError> {
        let path = self.path;
        self.lines
            .next()
            .transpose()
            .map_err(|e| StoreError::io("read", path, e))
    }
}

impl<R: std::io::BufRead> Iterator for PackedRefs<'_, R> {
    type Item = Result<PackedRef, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = self.ahead.take()?;
            self.ahead = match self.line() {
                Ok(next) => next,
                Err(e) => return Some(Err(e)),
            };
            // Comments, and a `^` line without its ref, are passed over.
            if line.starts_with(['#', '^']) {
                continue;
            }
            let Some((oid, name)) = line.split_once(' ') else {
                continue;
            };
            let mut r = PackedRef {
                oid: oid.to_string(),
                name: name.to_string(),
                peeled: None,
            };
            if let Some(peeled) = self.ahead.as_deref().and_then(|l| l.strip_prefix('^')) {
                r.peeled = Some(peeled.to_string());
                self.ahead = match self.line() {
                    Ok(next) => next,
                    Err(e) => return Some(Err(e)),
                };
            }
            return Some(Ok(r));
        }
    }
}

/// Writes `packed-refs` to `out` (at `out_path`, named in errors): the
/// refs of `old` (in the order of their names) merged with `loose`
/// (sorted by name; a loose ref overrides a packed one, and a `^` line of
/// its older value goes), the file `fully-peeled`. Returns `false`,
/// having written part of it, if `old` turns out not to be in order.
///
/// Written `fully-peeled`, as git and libgit2 write it: a ref without a
/// `^` line is then known not to point at a tag. Without that trait,
/// libgit2 reads the object of every packed ref each time it rewrites the
/// file (a packed ref deleted), a cost that grows with every branch ever
/// packed. So every ref gets its `^` line if it peels: those of `old`
/// when it was written without the trait (once), and those packed now.
fn merge_packed_refs(
    repo: &Repository,
    old: Box<dyn Iterator<Item = Result<PackedRef, StoreError>> + '_>,
    fully_peeled: bool,
    loose: &[(String, Oid)],
    out: &mut dyn Write,
    out_path: &Path,
) -> Result<bool, StoreError> {
    let io = |e| StoreError::io("write", out_path, e);
    let put_loose = |out: &mut dyn Write, (name, oid): &(String, Oid)| {
        let peeled = peel_tag(repo, *oid);
        put_ref(out, oid, name, peeled.as_ref().map(|p| p as &dyn Display))
    };
    out.write_all(b"# pack-refs with: peeled fully-peeled sorted \n")
        .map_err(io)?;
    let mut loose = loose.iter().peekable();
    let mut last: Option<String> = None;
    for r in old {
        let r = r?;
        if last.as_deref().is_some_and(|l| l >= r.name.as_str()) {
            return Ok(false);
        }
        while let Some(l) = loose.next_if(|(name, _)| name.as_str() < r.name.as_str()) {
            put_loose(out, l).map_err(io)?;
        }
        if let Some(l) = loose.next_if(|(name, _)| *name == r.name) {
            put_loose(out, l).map_err(io)?;
        } else {
            let peeled = match r.peeled {
                Some(p) => Some(p),
                None if !fully_peeled => Oid::from_str(&r.oid)
                    .ok()
                    .and_then(|o| peel_tag(repo, o))
                    .map(|p| p.to_string()),
                None => None,
            };
            put_ref(
                out,
                &r.oid,
                &r.name,
                peeled.as_ref().map(|p| p as &dyn Display),
            )
            .map_err(io)?;
        }
        last = Some(r.name);
    }
    for l in loose {
        put_loose(out, l).map_err(io)?;
    }
    Ok(true)
}

/// A ref's line in `packed-refs`, and its `^` line if it peels.
fn put_ref(
    out: &mut dyn Write,
    oid: &dyn Display,
    name: &str,
    peeled: Option<&dyn Display>,
) -> std::io::Result<()> {
    writeln!(out, "{oid} {name}")?;
    match peeled {
        Some(p) => writeln!(out, "^{p}"),
        None => Ok(()),
    }
}

/// Removes each loose ref `packed` names, under its own lock, if it still
/// holds the value `packed-refs` now holds for it (a writer may have moved
/// it since). Needs no other lock, as in git. Returns how many it removed.
fn prune_packed(git_dir: &Path, packed_now: Vec<(String, Oid)>) -> usize {
    let mut removed = 0;
    for (name, oid) in packed_now {
        // Lock files and pruned refs come from and go to the spare pool
        // (`store::spare`): creating and freeing a file per packed ref was
        // most of a pass's cost on this machine's file system.
        let path = git_dir.join(&name);
        let ref_lock = git_dir.join(format!("{name}.lock"));
        // The lock is never written: claimed, not opened.
        if crate::store::spare::claim(git_dir, &ref_lock).is_err() {
            continue;
        }
        let still = fs::read_to_string(&path)
            .ok()
            .is_some_and(|t| t.trim() == oid.to_string());
        if still && crate::store::spare::recycle(git_dir, &path).is_ok() {
            removed += 1;
        }
        let _ = crate::store::spare::release_lock(git_dir, &ref_lock);
    }
    removed
}

/// What `oid` peels to when it is an annotated tag (through tags of tags);
/// `None` for any other object, or one that cannot be read (its ref gets
/// no `^` line, as git writes it).
fn peel_tag(repo: &Repository, oid: Oid) -> Option<Oid> {
    let (_, kind) = repo.odb().ok()?.read_header(oid).ok()?;
    if kind != git2::ObjectType::Tag {
        return None;
    }
    let object = repo.find_object(oid, None).ok()?;
    object.peel(git2::ObjectType::Any).ok().map(|o| o.id())
}

/// The names of the loose refs under `refs/` (lock files aside), not
/// looking into the folders `skip_prefixes` name (such as
/// `refs/heads/gov/proposal/`).
fn loose_ref_names(git_dir: &Path, skip_prefixes: &[&str]) -> Vec<String> {
    // Unreadable folders are left out: their refs stay as they are.
    crate::store::git::loose_ref_names_under(git_dir, "refs", skip_prefixes).unwrap_or_default()
}

/// The bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    usage(dir).1
}

/// Files under `dir`.
#[cfg_attr(
    not(feature = "testkit"),
    allow(dead_code, reason = "measured by tests and bench_server")
)]
pub fn file_count(dir: &Path) -> usize {
    usage(dir).0
}

/// How many files are under `dir`, and their bytes.
fn usage(dir: &Path) -> (usize, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => {
                    files += 1;
                    bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                }
                Err(_) => {}
            }
        }
    }
    (files, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// The repository's packs that a background pass may merge, smallest
    /// first.
    fn packs(repo: &Repository) -> Result<Vec<Pack>, StoreError> {
        Ok(packs_in(PackFolder::list(&pack_dir(repo))?.mergeable()))
    }

    /// The packs only a pass by hand merges, smallest first.
    fn kept_for_hand(repo: &Repository) -> Result<Vec<Pack>, StoreError> {
        Ok(packs_in(PackFolder::list(&pack_dir(repo))?.kept_for_hand()))
    }

    /// A text of `len` letters from a xorshift generator seeded with
    /// `seed`: about 4.7 bits a byte, so 2 KB of it does not shrink much
    /// and is no good base for a delta of another.
    fn letters(mut seed: u64) -> impl FnMut(usize) -> String {
        move |len| {
            (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    char::from(b'a' + (seed % 26) as u8)
                })
                .collect()
        }
    }

    /// `n` blobs of `len` letters each from `random` (see [`letters`]).
    fn random_blobs(
        repo: &Repository,
        random: &mut impl FnMut(usize) -> String,
        n: usize,
        len: usize,
    ) -> Result<Vec<Oid>, git2::Error> {
        (0..n).map(|_| repo.blob(random(len).as_bytes())).collect()
    }

    /// `n` blobs that are `base` with a number after it: each a good
    /// delta of the others.
    fn near_copies(repo: &Repository, base: &str, n: usize) -> Result<Vec<Oid>, git2::Error> {
        (0..n)
            .map(|i| repo.blob(format!("{base}{i}\n").as_bytes()))
            .collect()
    }

    /// `n` small blobs, each written into a pack of its own (as a batch
    /// writes one), their text beginning with `tag`.
    fn one_blob_packs(repo: &Repository, tag: &str, n: usize) -> Result<Vec<Oid>, StoreError> {
        let mut out = Vec::new();
        for i in 0..n {
            let blob = repo.blob(format!("{tag} {i}\n").as_bytes())?;
            write_pack(repo, &[blob], &[])?;
            out.push(blob);
        }
        Ok(out)
    }

    /// A new, empty repository (branch `main`) in a folder of its own.
    fn new_repo() -> Result<(tempfile::TempDir, Repository), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let repo = crate::store::git::init_repo(dir.path(), "main")?;
        Ok((dir, repo))
    }

    /// A new repository holding one commit (on no branch).
    fn repo_with_a_commit(
    ) -> Result<(tempfile::TempDir, Repository, Oid), Box<dyn std::error::Error>> {
        let (dir, repo) = new_repo()?;
        let tree = repo.treebuilder(None)?.write()?;
        let sig = git2::Signature::now("t", "t@example.org")?;
        let commit = repo.commit(None, &sig, &sig, "one", &repo.find_tree(tree)?, &[])?;
        Ok((dir, repo, commit))
    }

    /// Moves every loose ref under `refs/` into `packed-refs` (as `git
    /// pack-refs --all` does) once there are at least `at_least` of them: the
    /// new `packed-refs` is written under its lock and flushed, then each loose
    /// ref is removed under its own lock if it still holds the packed value.
    /// Refs in `skip`, or whose names start with one of `skip_prefixes` (moved
    /// by every write, such as the audit ref), or for which `keep_loose` says
    /// so, stay loose. Returns how many were removed. (A maintenance pass runs
    /// the three steps itself, only the second under the chain lock.)
    fn pack_refs(
        repo: &Repository,
        skip: &[&str],
        skip_prefixes: &[&str],
        keep_loose: &dyn Fn(&str) -> bool,
        at_least: usize,
    ) -> Result<usize, StoreError> {
        let mut names = packable_refs(repo.path(), &|n| skip.contains(&n), skip_prefixes, at_least);
        names.retain(|name| !keep_loose(name));
        Ok(pack_in_moves(repo, names, REFS_PER_MOVE)?.0)
    }

    /// A temporary pack a killed writer left is removed; one of a live
    /// process (this one) is not.
    #[test]
    fn temporary_packs_of_dead_writers_are_removed() -> TestResult {
        let (_dir, repo) = new_repo()?;
        let packdir = pack_dir(&repo);
        fs::create_dir_all(&packdir)?;
        // No process has a pid this high (the kernel's limit is 2^22).
        let dead = [
            packdir.join("tmp_gov_pack_99999999_3"),
            packdir.join("tmp_gov_idx_99999999_4"),
        ];
        let live = packdir.join(format!("tmp_gov_pack_{}_5", std::process::id()));
        // An older version's random name, written just now.
        let recent = packdir.join("tmp_gov_pack_Xy12ab");
        for f in dead.iter().chain([&live, &recent]) {
            fs::write(f, b"PACK")?;
        }
        let keep = KeepLoose {
            audit_ref: "refs/heads/gov/audit".into(),
            proposal_refs: "refs/heads/gov/proposal/".into(),
            pending: None,
            decided: &|_| false,
        };
        run(&repo, Some(&keep), Pass::Background)?;
        assert!(dead.iter().all(|f| !f.exists()));
        assert!(live.exists() && recent.exists());
        Ok(())
    }

    /// A repack by hand hands libgit2 the objects in the order they were
    /// written (the largest, oldest pack first, as the background roll-up
    /// leaves them), so that a walk down history reads the new pack from
    /// one end to the other.
    #[test]
    fn a_repack_by_hand_takes_objects_in_the_order_they_were_written() -> TestResult {
        let (_dir, repo, first) = repo_with_a_commit()?;
        let tree = repo.find_commit(first)?.tree_id();
        let sig = git2::Signature::now("t", "t@example.org")?;
        let mut written = vec![first, tree];
        let mut part = vec![first, tree];
        // Three parts, each packed as a batch packs it, each smaller than
        // the one before.
        let mut tip = first;
        for (n, commits) in [12, 6, 3].into_iter().enumerate() {
            for i in 0..commits {
                let parent = repo.find_commit(tip)?;
                let tree = repo.find_tree(tree)?;
                tip = repo.commit(None, &sig, &sig, &format!("{n}.{i}"), &tree, &[&parent])?;
                written.push(tip);
                part.push(tip);
            }
            write_pack(&repo, &std::mem::take(&mut part), &[])?;
        }
        let packs = packs(&repo)?;
        assert_eq!(packs.len(), 3);
        assert_eq!(objects_as_written(&packs)?, written);
        // And by hand they end in one pack, all of them, kept for the
        // next pass by hand.
        run(&repo, None, Pass::ByHand)?;
        assert!(self::packs(&repo)?.is_empty());
        let merged = kept_for_hand(&repo)?;
        assert_eq!(merged.len(), 1);
        let mut held = crate::store::pack::objects_in_pack_order(&merged[0].idx)?;
        held.sort();
        written.sort();
        assert_eq!(held, written);
        Ok(())
    }

    /// A large pack with deltas (`gov maintain`'s, or `git gc`'s) stays out
    /// of the background's merges, marked for a pass by hand: merged
    /// there, every object in it would be written whole. The small packs
    /// beside it are merged as ever; by hand, all of them become one pack
    /// with deltas, marked in turn.
    #[test]
    fn a_large_pack_with_deltas_is_left_to_a_pass_by_hand() -> TestResult {
        use crate::store::pack::holds_deltas;
        let (dir, repo) = new_repo()?;
        let mut random = letters(0x9e37_79b9_7f4a_7c15);
        // 2 MB that compresses to about 1.2 MB, and 300 near-copies of
        // one blob (deltas).
        let mut objects = random_blobs(&repo, &mut random, 1000, 2048)?;
        objects.extend(near_copies(&repo, &random(2048), 300)?);
        let deltas = write_pack_with_deltas(&repo, &objects)?;
        let size = fs::metadata(&deltas)?.len();
        assert!(holds_deltas(&deltas)?);
        assert!(size > BACKGROUND_DELTA_PACK_BYTES, "{size}");
        objects.extend(one_blob_packs(&repo, "small", 3)?);
        let readable = |r: &Repository| -> Result<(), git2::Error> {
            objects.iter().try_for_each(|o| r.find_blob(*o).map(|_| ()))
        };

        // In the background (the server's handle, no delta search).
        let bg = Repository::open(dir.path())?;
        crate::store::git::configure_for_batches(&bg)?;
        let all = packs(&bg)?;
        assert_eq!(all.len(), 4);
        assert_eq!(
            merge_packs(&bg, &all, Pass::Background, OBJECTS_PER_HAND_PACK, None)?,
            3
        );
        assert_eq!(fs::metadata(&deltas)?.len(), size, "left as it was");
        assert_eq!(
            fs::read(deltas.with_extension("keep"))?,
            KEPT_FOR_HAND.as_bytes()
        );
        let merged = packs(&bg)?;
        assert_eq!(merged.len(), 1);
        assert!(!holds_deltas(&merged[0].pack)?);
        assert_eq!(kept_for_hand(&bg)?.len(), 1);
        assert!(!merge_due(bg.path(), &LongLane::default()));
        readable(&Repository::open(dir.path())?)?;

        // By hand: one pack with deltas, marked; the old pack and its mark
        // gone.
        let hand = Repository::open(dir.path())?;
        let report = run(&hand, None, Pass::ByHand)?;
        assert_eq!(
            (report.packs_before, report.packs_merged, report.packs_after),
            (2, 2, 1)
        );
        assert!(!deltas.exists() && !deltas.with_extension("keep").exists());
        assert!(packs(&hand)?.is_empty());
        let kept = kept_for_hand(&hand)?;
        assert_eq!(kept.len(), 1);
        assert!(
            kept[0].bytes < size + 1_000,
            "{} against {size}",
            kept[0].bytes
        );
        readable(&Repository::open(dir.path())?)?;
        // A `.keep` of git's (other contents) is not gov's to merge.
        fs::write(kept[0].pack.with_extension("keep"), b"git gc\n")?;
        assert!(kept_for_hand(&hand)?.is_empty() && packs(&hand)?.is_empty());
        Ok(())
    }

    /// A small pack with deltas (a fetch's) is written whole on its own,
    /// then merged by copying with the rest: a large pack merged beside it
    /// keeps its entries byte for byte (the same CRC-32s), not read and
    /// compressed again by libgit2.
    #[test]
    fn a_small_pack_with_deltas_is_written_whole_and_the_rest_copied() -> TestResult {
        use crate::store::pack::holds_deltas;
        use crate::store::pack_index::{column_buffer, IndexFile};
        let (dir, repo) = new_repo()?;
        let mut random = letters(0x2545_f491_4f6c_dd1d);
        let mut objects = random_blobs(&repo, &mut random, 1000, 2048)?;
        let large_pack = write_pack(&repo, &objects, &[])?;
        assert!(fs::metadata(&large_pack)?.len() > BACKGROUND_DELTA_PACK_BYTES);
        let copies = near_copies(&repo, &random(2048), 40)?;
        let fetched = write_pack_with_deltas(&repo, &copies)?;
        assert!(holds_deltas(&fetched)?);
        objects.extend(copies);
        objects.extend(one_blob_packs(&repo, "small", 2)?);
        let crcs = |idx: &Path| -> Result<Vec<u32>, StoreError> {
            let index = IndexFile::open(idx)?;
            let mut column = index.crcs(column_buffer(1));
            let mut out = (0..index.count())
                .map(|_| column.next_u32())
                .collect::<Result<Vec<_>, _>>()?;
            out.sort_unstable();
            Ok(out)
        };
        let large_crcs = crcs(&large_pack.with_extension("idx"))?;

        let bg = Repository::open(dir.path())?;
        crate::store::git::configure_for_batches(&bg)?;
        let all = packs(&bg)?;
        assert_eq!(all.len(), 4);
        assert_eq!(
            merge_packs(&bg, &all, Pass::Background, OBJECTS_PER_HAND_PACK, None)?,
            4
        );
        let merged = packs(&bg)?;
        assert_eq!(merged.len(), 1);
        assert!(kept_for_hand(&bg)?.is_empty());
        assert!(!holds_deltas(&merged[0].pack)?);
        let now = crcs(&merged[0].idx)?;
        assert!(
            large_crcs.iter().all(|c| now.binary_search(c).is_ok()),
            "the large pack's entries were copied as they were"
        );
        let fresh = Repository::open(dir.path())?;
        for o in &objects {
            fresh.find_blob(*o)?;
        }
        Ok(())
    }

    /// A pass by hand writes packs of at most `per_pack` objects, and
    /// leaves a full one as it is from then on: each pass merges only
    /// the newer objects with the last pack that is not full, so its cost
    /// does not grow with history. A lone pack no pass by hand wrote is
    /// merged too (it has no deltas yet); a lone one it wrote is not.
    #[test]
    fn a_pass_by_hand_writes_bounded_packs_and_leaves_full_ones() -> TestResult {
        let (_dir, repo) = new_repo()?;
        let mut random = letters(0x2545_f491_4f6c_dd1d);
        let mut objects = Vec::new();
        let mut add = |n: usize| -> Result<(), git2::Error> {
            objects.extend(random_blobs(&repo, &mut random, n, 64)?);
            Ok(())
        };
        let counts = |r: &Repository| -> Result<Vec<(PathBuf, u64)>, StoreError> {
            let mut c = Vec::new();
            for p in kept_for_hand(r)? {
                c.push((p.pack.clone(), IndexFile::open(&p.idx)?.count()));
            }
            c.sort_by_key(|(_, n)| *n);
            Ok(c)
        };
        let sizes = |c: &[(PathBuf, u64)]| c.iter().map(|(_, n)| *n).collect::<Vec<_>>();

        add(250)?;
        let report = run_with(&repo, None, Pass::ByHand, 100, None)?;
        assert_eq!((report.loose_packed, report.packs_merged), (250, 1));
        assert!(packs(&repo)?.is_empty());
        let first = counts(&repo)?;
        assert_eq!(sizes(&first), [50, 100, 100]);
        let full: Vec<PathBuf> = first[1..].iter().map(|(p, _)| p.clone()).collect();

        // The last pack, not full, is merged with what came since; the
        // full ones are not touched.
        add(30)?;
        run_with(&repo, None, Pass::ByHand, 100, None)?;
        assert_eq!(sizes(&counts(&repo)?), [80, 100, 100]);
        add(40)?;
        let report = run_with(&repo, None, Pass::ByHand, 100, None)?;
        assert_eq!((report.packs_before, report.packs_merged), (4, 2));
        let last = counts(&repo)?;
        assert_eq!(sizes(&last), [20, 100, 100, 100]);
        assert!(full.iter().all(|p| last.iter().any(|(q, _)| q == p)));

        // Alone and written by hand: nothing to do.
        let report = run_with(&repo, None, Pass::ByHand, 100, None)?;
        assert_eq!((report.packs_merged, report.packs_after), (0, 4));

        // Every object is there, each once, and stock git reads them all.
        let mut held = Vec::new();
        for (pack, _) in &last {
            held.extend(crate::store::pack::objects_in_pack_order(
                &pack.with_extension("idx"),
            )?);
        }
        held.sort();
        objects.sort();
        assert_eq!(held, objects);
        fsck(&repo)
    }

    /// `n` packs of one blob of 40 KiB of noise each (packs that take
    /// more than one of a merge's stretches to write); their blobs.
    fn noise_packs(repo: &Repository, seed: u64, n: usize) -> Result<Vec<Oid>, StoreError> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut blobs = Vec::new();
        for _ in 0..n {
            let blob = repo.blob(&crate::store::pack::tests::noise(&mut state, 40 << 10))?;
            write_pack(repo, &[blob], &[])?;
            blobs.push(blob);
        }
        Ok(blobs)
    }

    /// The objects `pack` holds, sorted.
    fn objects_sorted(pack: &Pack) -> Result<Vec<Oid>, StoreError> {
        Ok(sorted(crate::store::pack::objects_in_pack_order(
            &pack.idx,
        )?))
    }

    fn sorted(mut oids: Vec<Oid>) -> Vec<Oid> {
        oids.sort();
        oids
    }

    fn fsck(repo: &Repository) -> TestResult {
        let fsck = std::process::Command::new("git")
            .args(["fsck", "--full", "--no-dangling"])
            .env("GIT_DIR", repo.path())
            .output()?;
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stderr)
        );
        Ok(())
    }

    /// A merge over the lane's threshold is handed to its thread: the pass
    /// returns without merging, the thread merges, and the lane counts it
    /// done (so handles opened before are not used again).
    #[test]
    fn a_long_merge_is_merged_on_a_thread_of_its_own() -> TestResult {
        let (_dir, repo) = new_repo()?;
        let blobs = one_blob_packs(&repo, "long", MERGE_FANOUT)?;
        let lane = Arc::new(LongLane::new(0, LONG_MERGE_PACE));
        let report = run_background(&repo, &lane)?;
        assert_eq!(
            (report.packs_merged, report.packs_to_long_merge),
            (0, MERGE_FANOUT)
        );
        lane.wait();
        assert_eq!(lane.merges_done(), 1);
        assert!(lane.claimed().is_empty());
        let left = packs(&repo)?;
        assert_eq!(left.len(), 1);
        assert_eq!(objects_sorted(&left[0])?, sorted(blobs));
        fsck(&repo)?;
        // Nothing left to merge: the next pass hands nothing on.
        let report = run_background(&repo, &lane)?;
        assert_eq!((report.packs_merged, report.packs_to_long_merge), (0, 0));
        Ok(())
    }

    /// A closed lane (a server stopping) starts no long merge, and the pass
    /// does not merge it in its place either: the packs wait, whole, for a
    /// later pass. Merges that are not long still run in the pass.
    #[test]
    fn a_closed_lane_leaves_long_merges_for_later() -> TestResult {
        let (_dir, repo) = new_repo()?;
        let blobs = one_blob_packs(&repo, "late", MERGE_FANOUT)?;
        let names = |repo: &Repository| -> Result<Vec<PathBuf>, StoreError> {
            Ok(packs(repo)?.into_iter().map(|p| p.pack).collect())
        };
        let before = names(&repo)?;
        let lane = Arc::new(LongLane::new(0, LONG_MERGE_PACE));
        lane.close();
        let report = run_background(&repo, &lane)?;
        assert_eq!((report.packs_merged, report.packs_to_long_merge), (0, 0));
        assert_eq!(lane.merges_done(), 0);
        assert_eq!(names(&repo)?, before);
        fsck(&repo)?;

        // The next server's lane merges them.
        let lane = Arc::new(LongLane::new(0, LONG_MERGE_PACE));
        let report = run_background(&repo, &lane)?;
        assert_eq!(report.packs_to_long_merge, MERGE_FANOUT);
        lane.close();
        let left = packs(&repo)?;
        assert_eq!(left.len(), 1);
        assert_eq!(objects_sorted(&left[0])?, sorted(blobs));

        // Closed, a lane still lets a merge that is not long run in the pass.
        let small = Arc::new(LongLane::new(u64::MAX, LONG_MERGE_PACE));
        small.close();
        one_blob_packs(&repo, "small", MERGE_FANOUT)?;
        let report = run_background(&repo, &small)?;
        assert_eq!(report.packs_to_long_merge, 0);
        assert!(report.packs_merged >= MERGE_FANOUT, "{report:?}");
        fsck(&repo)
    }

    /// Long merges on their thread and passes merging around them, with
    /// packs written all along: nothing is lost, no temporary file is
    /// left, and stock git reads every object.
    #[test]
    fn long_merges_beside_passes_and_writers_lose_nothing() -> TestResult {
        let (_dir, repo) = new_repo()?;
        // Every merge is long for this lane: it takes one whenever it is
        // idle, and the passes merge in place while it is busy; slowly
        // (a merge of 160 KiB takes at least 125 ms), so that it is busy
        // while the next rounds come.
        let lane = Arc::new(LongLane::new(0, 512 << 10));
        let mut blobs = Vec::new();
        let (mut handed, mut inline) = (0, 0);
        for round in 0..12 {
            blobs.extend(noise_packs(&repo, round, 2)?);
            let report = run_background(&repo, &lane)?;
            handed += report.packs_to_long_merge;
            inline += report.packs_merged;
        }
        lane.wait();
        while run_background(&repo, &lane)?.packs_to_long_merge > 0 {
            lane.wait();
        }
        assert!(handed > 0 && lane.merges_done() > 0, "{handed}");
        assert!(inline > 0, "no pass merged while the lane was busy");
        let fresh = Repository::open(repo.path())?;
        let odb = fresh.odb()?;
        for blob in &blobs {
            assert!(odb.exists(*blob), "{blob} is lost");
        }
        let left: Vec<String> = fs::read_dir(pack_dir(&repo))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("tmp_"))
            .collect();
        assert_eq!(left, Vec::<String>::new());
        fsck(&repo)
    }

    /// While a long merge holds its packs, passes merge the packs written
    /// since among themselves and leave the claimed ones alone (nor do they
    /// count them as due); a second long merge waits for the first, so a
    /// pass then merges in place.
    #[test]
    fn passes_merge_around_the_packs_a_long_merge_holds() -> TestResult {
        let (_dir, repo) = new_repo()?;
        let first = one_blob_packs(&repo, "first", MERGE_FANOUT)?;
        let held = packs(&repo)?;
        let lane = Arc::new(LongLane::default());
        lane.state_even_poisoned().claimed = held.iter().map(|p| p.pack.clone()).collect();
        assert!(!merge_due(repo.path(), &lane));
        assert!(merge_due(repo.path(), &LongLane::default()));

        let second = one_blob_packs(&repo, "second", MERGE_FANOUT)?;
        assert!(merge_due(repo.path(), &lane));
        let report = run_background(&repo, &lane)?;
        assert_eq!(
            (report.packs_before, report.packs_merged, report.packs_after),
            (2 * MERGE_FANOUT, MERGE_FANOUT, MERGE_FANOUT + 1)
        );
        let after = packs(&repo)?;
        assert!(held.iter().all(|h| after.iter().any(|p| p.pack == h.pack)));
        let merged: Vec<&Pack> = (after.iter())
            .filter(|p| !held.iter().any(|h| h.pack == p.pack))
            .collect();
        assert_eq!(merged.len(), 1);
        assert_eq!(objects_sorted(merged[0])?, sorted(second));

        // Busy, the lane takes no second merge, however long.
        let busy = Arc::new(LongLane::new(0, LONG_MERGE_PACE));
        busy.state_even_poisoned().claimed = held.iter().map(|p| p.pack.clone()).collect();
        one_blob_packs(&repo, "third", MERGE_FANOUT - 1)?;
        let report = run_background(&repo, &busy)?;
        assert_eq!(
            (report.packs_merged, report.packs_to_long_merge),
            (MERGE_FANOUT, 0)
        );
        assert_eq!(busy.merges_done(), 0);

        // Let go of, the claimed packs merge with the rest.
        let report = run_background(&repo, &Arc::new(LongLane::default()))?;
        assert_eq!(
            (report.packs_merged, report.packs_after),
            (MERGE_FANOUT + 1, 1)
        );
        let mut all = crate::store::pack::objects_in_pack_order(&packs(&repo)?[0].idx)?;
        assert_eq!(all.len(), 3 * MERGE_FANOUT - 1);
        all.retain(|o| first.contains(o));
        assert_eq!(all.len(), MERGE_FANOUT);
        fsck(&repo)?;
        Ok(())
    }

    /// The server's maintenance check sees what `packs` lists, without a
    /// repository handle: packs with an index and no `.keep`.
    #[test]
    fn merge_due_looks_at_the_packs_a_pass_would_merge() -> TestResult {
        let (_dir, repo) = new_repo()?;
        assert!(!merge_due(repo.path(), &LongLane::default()));
        let packdir = pack_dir(&repo);
        for n in 0..MERGE_FANOUT - 1 {
            let blob = repo.blob(format!("{n}\n").as_bytes())?;
            write_pack(&repo, &[blob], &[])?;
        }
        assert!(!merge_due(repo.path(), &LongLane::default()));
        let blob = repo.blob(b"one more\n")?;
        write_pack(&repo, &[blob], &[])?;
        assert!(merge_due(repo.path(), &LongLane::default()));
        assert_eq!(tiered_roll_up(&packs(&repo)?).len(), MERGE_FANOUT);
        // A pack git keeps (`.keep`) is not maintenance's to merge.
        let kept = packs(&repo)?.remove(0).pack.with_extension("keep");
        fs::write(&kept, b"")?;
        assert_eq!(packs(&repo)?.len(), MERGE_FANOUT - 1);
        assert!(!merge_due(repo.path(), &LongLane::default()));
        // Nor is a pack being written.
        fs::write(packdir.join("tmp_gov_pack_1_1"), b"")?;
        assert!(!merge_due(repo.path(), &LongLane::default()));
        Ok(())
    }

    fn sized(bytes: &[u64]) -> Vec<Pack> {
        let mut out: Vec<Pack> = bytes
            .iter()
            .enumerate()
            .map(|(i, &bytes)| Pack {
                pack: PathBuf::from(format!("pack-{i}.pack")),
                idx: PathBuf::from(format!("pack-{i}.idx")),
                bytes,
            })
            .collect();
        out.sort_by_key(|p| p.bytes);
        out
    }

    fn sizes(packs: &[Pack]) -> Vec<u64> {
        packs.iter().map(|p| p.bytes).collect()
    }

    #[test]
    fn size_tiers_grow_by_the_fanout() {
        let k = FIRST_TIER_BYTES;
        assert_eq!(size_tier(0), 0);
        assert_eq!(size_tier(k), 0);
        assert_eq!(size_tier(k + 1), 1);
        assert_eq!(size_tier(4 * k), 1);
        assert_eq!(size_tier(4 * k + 1), 2);
        assert_eq!(size_tier(16 * k + 1), 3);
        assert!(size_tier(u64::MAX) < 64);
    }

    #[test]
    fn a_full_first_tier_is_merged_and_carries_into_full_tiers_above() {
        let k = FIRST_TIER_BYTES;
        // Three small packs: nothing to do.
        assert!(tiered_roll_up(&sized(&[10, 20, 30])).is_empty());
        // Four: they are merged, and the larger packs are left alone.
        let packs = sized(&[10, 20, 30, 40, 2 * k, 3 * k, 50 * k]);
        assert_eq!(sizes(&tiered_roll_up(&packs)), [10, 20, 30, 40]);
        // The merge lands in the second tier, where three packs wait: the
        // four make a full tier, merged in the same pass.
        let packs = sized(&[k / 2, k / 2, k / 2, k / 2, 2 * k, 2 * k, 3 * k, 50 * k]);
        assert_eq!(
            sizes(&tiered_roll_up(&packs)),
            [k / 2, k / 2, k / 2, k / 2, 2 * k, 2 * k, 3 * k]
        );
        // ... and that merge (9k) lands in the third tier, full with it
        // too (three packs there); the fourth tier has room.
        let packs = sized(&[
            k / 2,
            k / 2,
            k / 2,
            k / 2,
            2 * k,
            2 * k,
            3 * k,
            5 * k,
            6 * k,
            7 * k,
            20 * k,
        ]);
        assert_eq!(tiered_roll_up(&packs).len(), 10);
        // With two packs in the second tier, the merge joins it and stops.
        let packs = sized(&[k / 2, k / 2, k / 2, k / 2, 2 * k, 3 * k]);
        assert_eq!(tiered_roll_up(&packs).len(), 4);
        // Batch packs larger than the first tier fill the second: merged
        // once four are there, with the smaller pack, though the first
        // tier is not full.
        let packs = sized(&[k / 2, 2 * k, 2 * k, 3 * k, 3 * k, 50 * k]);
        assert_eq!(
            sizes(&tiered_roll_up(&packs)),
            [k / 2, 2 * k, 2 * k, 3 * k, 3 * k]
        );
        // Two full tiers: one pass merges up to the higher.
        let packs = sized(&[1, 2, 3, 4, 2 * k, 2 * k, 2 * k, 2 * k, 50 * k]);
        assert_eq!(tiered_roll_up(&packs).len(), 8);
    }

    /// Batch packs arriving between passes, as the server makes them: after
    /// every pass no tier holds [`MERGE_FANOUT`] packs, and each byte is
    /// rewritten far fewer times than a geometric roll-up would.
    #[test]
    fn tiers_stay_short_and_bytes_are_rewritten_once_per_tier() {
        // 24,000 packs of 8-32 KB (480 MB) fill tiers up to the seventh:
        // about one rewrite per tier climbed (4.5 a byte). A geometric
        // roll-up (each pack at least twice all smaller ones, once there
        // are more than 8) rewrote each byte 9.6 times in the same
        // simulation.
        let (per_byte, left) = simulate_passes(8_000, 24_000);
        assert!((3.0..6.5).contains(&per_byte), "{per_byte}");
        assert!(left <= 3 * 8, "{left} packs");
    }

    /// Batch packs larger than the first tier (approvals on a grown
    /// `main`) are merged too: the second tier fills with them directly.
    #[test]
    fn batch_packs_above_the_first_tier_are_merged_as_they_fill_their_own() {
        assert!(size_tier(90_000) >= 1);
        let (per_byte, left) = simulate_passes(90_000, 100_000);
        assert!((2.0..6.5).contains(&per_byte), "{per_byte}");
        assert!(left <= 3 * 10, "{left} packs");
    }

    /// 3,000 background passes, each after 8 new batch packs of `least` to
    /// `least + spread` bytes; checks after each pass that no tier holds
    /// [`MERGE_FANOUT`] packs and that no byte is lost. Returns how many
    /// times a byte was rewritten on average, and the packs left.
    fn simulate_passes(least: u64, spread: u64) -> (f64, usize) {
        let mut packs: Vec<u64> = Vec::new();
        let (mut written, mut rewritten) = (0u64, 0u64);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..3_000 {
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let bytes = least + seed % spread;
                packs.push(bytes);
                written += bytes;
            }
            let merge = sizes(&tiered_roll_up(&sized(&packs)));
            if merge.len() >= 2 {
                for m in &merge {
                    let at = packs.iter().position(|p| p == m).expect("merged a pack");
                    packs.swap_remove(at);
                }
                let sum = merge.iter().sum::<u64>();
                rewritten += sum;
                packs.push(sum);
            }
            let tiers = packs.iter().map(|&p| size_tier(p)).max().unwrap_or(0);
            for t in 0..=tiers {
                let n = packs.iter().filter(|&&p| size_tier(p) == t).count();
                assert!(n < MERGE_FANOUT, "{n} packs in tier {t}: {packs:?}");
            }
        }
        assert_eq!(packs.iter().sum::<u64>(), written);
        (rewritten as f64 / written as f64, packs.len())
    }

    /// The background pass packs refs only once enough have piled up loose;
    /// by hand, any.
    #[test]
    fn loose_refs_are_packed_once_there_are_enough() -> TestResult {
        let (_dir, repo, commit) = repo_with_a_commit()?;
        for i in 0..3 {
            repo.reference(&format!("refs/heads/gov/rejected/p-{i}"), commit, false, "")?;
        }
        repo.reference("refs/heads/gov/proposal/waiting", commit, false, "")?;
        let loose = |repo: &Repository| -> Result<usize, StoreError> {
            Ok(loose_ref_names(repo.path(), &[]).len())
        };
        assert_eq!(
            pack_refs(&repo, &[], &["refs/heads/gov/proposal/"], &|_| false, 4)?,
            0
        );
        assert_eq!(loose(&repo)?, 4, "fewer than asked for: left loose");
        assert_eq!(
            pack_refs(&repo, &[], &["refs/heads/gov/proposal/"], &|_| false, 3)?,
            3
        );
        assert_eq!(
            loose(&repo)?,
            1,
            "the pending proposal's branch stays loose"
        );
        for i in 0..3 {
            assert_eq!(
                repo.refname_to_id(&format!("refs/heads/gov/rejected/p-{i}"))?,
                commit
            );
        }
        // A ref is locked by its whole name, dots included: while someone
        // else holds `p.x.lock`, `p.x` is packed but its loose file stays.
        repo.reference("refs/heads/gov/rejected/p.x", commit, false, "")?;
        fs::write(repo.path().join("refs/heads/gov/rejected/p.x.lock"), b"")?;
        assert_eq!(
            pack_refs(&repo, &[], &["refs/heads/gov/proposal/"], &|_| false, 1)?,
            0
        );
        assert!(repo.path().join("refs/heads/gov/rejected/p.x").is_file());
        assert!(repo
            .path()
            .join("refs/heads/gov/rejected/p.x.lock")
            .is_file());
        assert_eq!(repo.refname_to_id("refs/heads/gov/rejected/p.x")?, commit);
        // An eighth of what packed-refs holds (about 64 bytes a ref), at
        // least 64, at most 4,096.
        assert_eq!(background_refs_threshold(repo.path()), 64);
        fs::write(repo.path().join("packed-refs"), vec![b'#'; 64 * 8 * 100])?;
        assert_eq!(background_refs_threshold(repo.path()), 100);
        fs::write(repo.path().join("packed-refs"), vec![b'#'; 64 * 8 * 10_000])?;
        assert_eq!(background_refs_threshold(repo.path()), 4_096);
        Ok(())
    }

    /// A loose proposal branch the pending set (read before the pass) does
    /// not name is packed only if its proposal is known decided, asked
    /// before the chain lock is taken (writers do not wait on the
    /// questions): one filed after the set was read stays loose, and the
    /// pending ones are not asked about.
    #[test]
    fn a_branch_filed_during_the_pass_stays_loose() -> TestResult {
        let (_dir, repo, commit) = repo_with_a_commit()?;
        let approved = "refs/heads/gov/proposal/approved";
        let waiting = "refs/heads/gov/proposal/waiting";
        let late = "refs/heads/gov/proposal/filed-during-the-pass";
        for name in [approved, waiting, late] {
            repo.reference(name, commit, false, "")?;
        }
        let pending = std::collections::HashSet::from([waiting.to_string()]);
        let asked = std::cell::RefCell::new(Vec::new());
        let decided = |name: &str| {
            let held = crate::store::lock::ChainLock::try_acquire_named(
                repo.path(),
                crate::store::lock::LOCK_FILE,
            )
            .is_none();
            assert!(!held, "asked under the chain lock");
            asked.borrow_mut().push(name.to_string());
            name == approved
        };
        let keep = KeepLoose {
            audit_ref: "refs/heads/gov/audit".into(),
            proposal_refs: "refs/heads/gov/proposal/".into(),
            pending: Some(&pending),
            decided: &decided,
        };
        run(&repo, Some(&keep), Pass::ByHand)?;
        let mut asked = asked.take();
        asked.sort();
        assert_eq!(asked, vec![approved.to_string(), late.to_string()]);
        assert_eq!(
            loose_ref_names(repo.path(), &[])
                .into_iter()
                .collect::<BTreeSet<_>>(),
            BTreeSet::from([late.to_string(), waiting.to_string()]),
            "the waiting and the late proposals' branches stay loose"
        );
        let packed = fs::read_to_string(repo.path().join("packed-refs"))?;
        assert!(packed.contains(&format!("{commit} {approved}\n")));
        Ok(())
    }

    /// The new `packed-refs` is written without a lock and moved into
    /// place only if nothing changed meanwhile: git rewrote the file, a
    /// ref it packs was deleted, or someone holds `packed-refs.lock`. Then
    /// nothing is packed or pruned, nothing is left behind, and the other
    /// writer's work stands (a deleted ref stays deleted).
    #[test]
    fn packed_refs_written_aside_are_put_in_place_only_if_nothing_changed() -> TestResult {
        let (_dir, repo, commit) = repo_with_a_commit()?;
        let git = |args: &[&str]| -> TestResult {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(repo.path())
                .args(args)
                .output()?;
            assert!(out.status.success(), "git {args:?}: {out:?}");
            Ok(())
        };
        let names = |n: std::ops::Range<usize>| -> Result<Vec<String>, git2::Error> {
            n.map(|i| {
                let name = format!("refs/heads/gov/rejected/p-{i}");
                repo.reference(&name, commit, true, "")?;
                Ok(name)
            })
            .collect()
        };
        let left_over = |repo: &Repository| -> Vec<String> {
            fs::read_dir(repo.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(NEW_PACKED_REFS_PREFIX) || n == "packed-refs.lock")
                .collect()
        };
        // git packs another ref meanwhile: packed-refs is a new version.
        let listed = names(0..2)?;
        let new = NewPackedRefs::write(&repo, listed.clone())?.ok_or("nothing to pack")?;
        git(&["branch", "git-made", &commit.to_string()])?;
        git(&["pack-refs", "--all"])?;
        let by_git = fs::read_to_string(repo.path().join("packed-refs"))?;
        assert_eq!(new.put_in_place(repo.path())?, None);
        assert_eq!(fs::read_to_string(repo.path().join("packed-refs"))?, by_git);
        assert_eq!(left_over(&repo), Vec::<String>::new());
        // A ref it packs is deleted meanwhile (its loose file gone): it is
        // not brought back.
        let listed = names(2..4)?;
        let new = NewPackedRefs::write(&repo, listed.clone())?.ok_or("nothing to pack")?;
        git(&["update-ref", "-d", &listed[0]])?;
        assert_eq!(new.put_in_place(repo.path())?, None);
        assert!(
            repo.find_reference(&listed[0]).is_err(),
            "a deleted ref came back"
        );
        assert_eq!(fs::read_to_string(repo.path().join("packed-refs"))?, by_git);
        assert_eq!(left_over(&repo), Vec::<String>::new());
        // Someone holds packed-refs.lock: theirs is left as it is.
        let new = NewPackedRefs::write(&repo, vec![listed[1].clone()])?.ok_or("nothing to pack")?;
        fs::write(repo.path().join("packed-refs.lock"), b"someone else's")?;
        assert_eq!(new.put_in_place(repo.path())?, None);
        assert_eq!(
            fs::read(repo.path().join("packed-refs.lock"))?,
            b"someone else's"
        );
        fs::remove_file(repo.path().join("packed-refs.lock"))?;
        assert_eq!(left_over(&repo), Vec::<String>::new());
        // Nothing changed: moved into place, stock git reads every ref.
        let new = NewPackedRefs::write(&repo, vec![listed[1].clone()])?.ok_or("nothing to pack")?;
        assert_eq!(
            new.put_in_place(repo.path())?,
            Some(vec![(listed[1].clone(), commit)])
        );
        let packed = fs::read_to_string(repo.path().join("packed-refs"))?;
        assert!(packed.contains(&format!("{commit} {}\n", listed[1])));
        assert!(packed.contains(&format!("{commit} refs/heads/git-made\n")));
        git(&["show-ref", "--verify", &listed[1]])?;
        assert_eq!(left_over(&repo), Vec::<String>::new());
        Ok(())
    }

    /// However many loose refs wait, each new `packed-refs` moved into
    /// place under the chain lock packs a bounded share of them, and a
    /// pass packs them all; stock git reads every one.
    #[test]
    fn refs_are_packed_in_bounded_moves() -> TestResult {
        let (_dir, repo, commit) = repo_with_a_commit()?;
        let names: Vec<String> = (0..5)
            .map(|i| format!("refs/heads/gov/rejected/p-{i}"))
            .collect();
        for name in &names {
            repo.reference(name, commit, false, "")?;
        }
        assert_eq!(pack_in_moves(&repo, names.clone(), 2)?, (5, 3));
        assert_eq!(loose_ref_names(repo.path(), &[]).len(), 0);
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(repo.path())
            .args(["show-ref", "--verify"])
            .args(&names)
            .output()?;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
        // Refs gone before they are read are no move at all.
        assert_eq!(
            pack_in_moves(&repo, vec!["refs/heads/gone".into()], 2)?,
            (0, 0)
        );
        // A background pass takes more than one move's share in one go.
        for i in 0..REFS_PER_MOVE + 3 {
            repo.reference(&format!("refs/heads/gov/expired/p-{i}"), commit, false, "")?;
        }
        let keep = KeepLoose {
            audit_ref: "refs/heads/gov/audit".into(),
            proposal_refs: "refs/heads/gov/proposal/".into(),
            pending: None,
            decided: &|_| false,
        };
        assert_eq!(
            super::pack_refs(&repo, &keep, Pass::Background)?,
            REFS_PER_MOVE + 3
        );
        assert_eq!(loose_ref_names(repo.path(), &[]).len(), 0);
        Ok(())
    }

    #[test]
    fn packed_refs_out_of_order_are_written_sorted() -> TestResult {
        let (_dir, repo, commit) = repo_with_a_commit()?;
        let other = repo.commit(
            None,
            &git2::Signature::now("t", "t@example.org")?,
            &git2::Signature::now("t", "t@example.org")?,
            "two",
            &repo.find_commit(commit)?.tree()?,
            &[],
        )?;
        for header in [
            "# pack-refs with: peeled fully-peeled \n",
            "# pack-refs with: peeled fully-peeled sorted \n",
        ] {
            let _ = fs::remove_file(repo.path().join("refs/heads/m"));
            fs::write(
                repo.path().join("packed-refs"),
                format!(
                    "{header}{commit} refs/heads/z\n{commit} refs/heads/a\n\
                     {commit} refs/heads/q\n{other} refs/heads/a\n"
                ),
            )?;
            repo.reference("refs/heads/m", other, true, "")?;
            assert_eq!(pack_refs(&repo, &[], &[], &|_| false, 1)?, 1, "{header}");
            assert_eq!(
                fs::read_to_string(repo.path().join("packed-refs"))?,
                format!(
                    "# pack-refs with: peeled fully-peeled sorted \n\
                     {other} refs/heads/a\n{other} refs/heads/m\n\
                     {commit} refs/heads/q\n{commit} refs/heads/z\n"
                ),
                "{header}"
            );
            assert!(!repo.path().join("packed-refs.lock").exists());
        }
        Ok(())
    }

    /// `packed-refs` is written `fully-peeled`: an annotated tag gets its
    /// `^` line (packed now, or carried from a file written without the
    /// trait), and stock git reads the peeled value from it.
    #[test]
    fn packed_refs_are_written_fully_peeled() -> TestResult {
        let (_dir, repo, commit) = repo_with_a_commit()?;
        let sig = git2::Signature::now("t", "t@example.org")?;
        let target = repo.find_object(commit, None)?;
        let tag = repo.tag("v1", &target, &sig, "a release", false)?;
        let tag_of_tag = repo.tag(
            "v1-again",
            &repo.find_object(tag, None)?,
            &sig,
            "again",
            false,
        )?;
        repo.reference("refs/heads/topic", commit, false, "")?;
        // An older gov's file: `peeled` only, a tag without its `^` line.
        fs::write(
            repo.path().join("packed-refs"),
            format!("# pack-refs with: peeled sorted \n{tag} refs/tags/old\n"),
        )?;
        assert_eq!(pack_refs(&repo, &[], &[], &|_| false, 1)?, 3);
        let packed = fs::read_to_string(repo.path().join("packed-refs"))?;
        assert_eq!(
            packed,
            format!(
                "# pack-refs with: peeled fully-peeled sorted \n\
                 {commit} refs/heads/topic\n\
                 {tag} refs/tags/old\n^{commit}\n\
                 {tag} refs/tags/v1\n^{commit}\n\
                 {tag_of_tag} refs/tags/v1-again\n^{commit}\n"
            )
        );
        // What stock git reads for a tag: the tag, then what it peels to.
        let show = |name: &str| -> Result<String, Box<dyn std::error::Error>> {
            let out = std::process::Command::new("git")
                .arg("--git-dir")
                .arg(repo.path())
                .args(["show-ref", "--dereference", name])
                .output()?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into());
            }
            Ok(String::from_utf8(out.stdout)?)
        };
        assert_eq!(
            show("refs/tags/v1")?,
            format!("{tag} refs/tags/v1\n{commit} refs/tags/v1^{{}}\n")
        );
        // libgit2 deleting a packed ref keeps the file valid for git.
        repo.find_reference("refs/heads/topic")?.delete()?;
        assert_eq!(
            show("refs/tags/old")?,
            format!("{tag} refs/tags/old\n{commit} refs/tags/old^{{}}\n")
        );
        Ok(())
    }
}
