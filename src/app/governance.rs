//! The one write path: every state change (server, watchdog, CLI) is an
//! audit entry appended through [`Governance`], and the index is updated
//! before the chain lock is released.
//!
//! **Group commit.** Concurrent writers form batches. A writer queues its
//! closure; one writer at a time combines: it takes every queued closure
//! and runs each, on its own thread, against the batch's state (the index
//! with every earlier entry of the batch applied, the refs as the batch
//! staged them), staging its entries (one signed commit each, appended to
//! the batch's chain tip, their rows in the batch's SQLite transaction).
//! Once the queue is empty (or the batch full) it flushes the batch: its
//! objects as one pack, its refs in one transaction (compare-and-swap), its
//! rows in one SQLite commit; then every writer of the batch is answered,
//! and a writer queued meanwhile combines the next batch (an
//! approval once its file is in the checkout too, which it puts there
//! itself outside the writer mutex: see [`Governance::sync_handed_through`];
//! the batch's other writers do not wait for that). A writer
//! whose closure fails is undone alone (its staged refs and objects; its
//! rows, if it wrote any, by applying the batch's other entries again); a batch
//! whose flush fails answers each of its writers with the error.
//!
//! Each time a combining writer finds the queue empty, it yields its core
//! once and looks again before it flushes, so that a writer on its way can
//! join the batch (when writers come together: this batch or the last held
//! more than one).
//!
//! A closure runs on the combining writer's thread, not its own: that
//! saves a hand-over of the writer mutex (a thread woken and scheduled) per
//! writer, about a seventh of a busy batch's time (docs/BENCHMARKS.md, the
//! thirtieth round). Its writer waits until it has run and its batch is
//! flushed; should the combining writer panic, every closure it took is
//! answered with `GovError::Poisoned`.
//!
//! Two locks serialise batches: the writer mutex inside the process and the
//! chain's file lock across processes (held from a batch's first writer to
//! its flush). When a batch opens, the index is caught up to the chain's
//! tip, so a closure reads current state, decides, and returns the entries
//! that record its decision.

use std::collections::{BTreeMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use git2::{Oid, Repository};

use crate::config::Settings;
use crate::domain::audit::{AuditEntry, NewEntry};
use crate::store::audit::{self as chain, ChainEntry, ChainTip};
use crate::store::entry_check::{EntryCheck, SignersSource};
use crate::store::git::{ForCheckout, Staged, StoreError};
use crate::store::index::Index;
/// The role a writer signs as (server, watchdog, approver).
pub use crate::store::keys::Role;
use crate::store::keys::{KeyError, SigningKey};
use crate::store::lock::{ChainLock, OpenLock};
use crate::store::maintain::{KeepLoose, Pass};
use crate::store::memory_odb::MemoryObjects;

#[derive(Debug, thiserror::Error)]
pub enum GovError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot open the governance repository `{path}`: {source}")]
    OpenRepo {
        path: std::path::PathBuf,
        source: git2::Error,
    },
    #[error("cannot load the {role} key: {source}")]
    Key { role: Role, source: KeyError },
    #[error("a writer panicked while holding the audit chain; restart gov")]
    Poisoned,
    #[error("a writer panicked; nothing it staged was written")]
    Panicked,
    #[error("the write was not made durable: {0}")]
    BatchFailed(String),
    /// The batch could not be flushed because the disk is full.
    #[error("the write was not made durable: the disk is full: {0}")]
    BatchStorageFull(String),
}

impl GovError {
    /// Whether the audit chain was found tampered with (writes refused).
    pub fn is_tampered(&self) -> bool {
        matches!(self, GovError::Store(StoreError::Tampered(_)))
    }
}

/// See [`Governance::keep_spare_files`]; dropping it stops making files.
pub struct SpareFiles(
    #[allow(dead_code, reason = "held for its drop")] crate::store::spare::Filler,
);

/// At most this many writers share one flush.
const MAX_BATCH: usize = 256;

/// Background maintenance runs once a size tier of packs is full (each
/// batch writes a pack; `store::maintain::tiered_roll_up`), or there are
/// more loose objects than this (written by `git` or left by a
/// crash)...
const MAINTAIN_LOOSE: usize = 1_000;
/// ...counted at most this often.
const LOOSE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The server's maintenance passes pack refs at most this often: listing
/// them walks the pending proposals' branches and reads the pending set.
/// Loose ref files stay bounded by what the writers make in this time.
const PACK_REFS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// ...and, since that listing grows with the proposals waiting for a
/// person, at most once in this many times as long as it last took: its
/// share of the machine stays about 2% however many wait. At 36,000
/// pending proposals it took 50-90 ms, and once a second it was the
/// part of the server's CPU that grew with the history in a run of
/// submissions alone (docs/BENCHMARKS.md, the thirty-eighth round).
const PACK_REFS_SHARE: u32 = 50;

/// A server puts approvals' files into the working tree
/// ([`Governance::sync_checkout_if_due`]) at most once in this many times
/// as long as its last sync took: the Git index is written whole, so a
/// sync costs more with every file on `main` (2 ms with 7,000 approvals
/// behind it, and done for every batch with an approval it was the part
/// of a decision's CPU that grew with history: docs/BENCHMARKS.md, the
/// forty-first round); so its share of a core stays about a tenth.
const CHECKOUT_SHARE: u32 = 10;

/// The page cache of the connection reads go through, in KiB (SQLite's
/// default is 2,000). Reads look rows up by key and find the file's pages
/// in the kernel's cache; on a history of 105,000 entries the default let
/// this connection hold about 4 MiB at the server's peak, and 512 KiB
/// lowered that peak by 3 MiB with no loss of speed (docs/BENCHMARKS.md,
/// the twenty-fifth round). The background pass's connection keeps as
/// little: its refs step reads every pending proposal.
const READER_CACHE_KIB: u32 = 512;

/// A batch being formed: it holds the chain lock until it is flushed.
struct Batch {
    id: u64,
    _lock: ChainLock,
    /// The repository the batch writes through (see [`BatchRepo`]).
    repo: BatchRepo,
    staged: Staged,
    /// The chain's tip as the batch sees it (its last staged entry).
    tip: Option<ChainTip>,
    /// The chain's tip when the batch opened (the commit), where its own
    /// entries start.
    base: Option<Oid>,
    /// Writers whose entries are staged and who wait for the flush.
    members: usize,
    /// When the batch was opened.
    opened: std::time::Instant,
}

/// The repository batches write through: new objects go to memory (a
/// mempack backend, ahead of the loose and pack backends), so writing one
/// costs no file, and the flush packs them from there.
///
/// Opening one (configuration files, the pack folder, each pack's index)
/// cost about as much as a whole one-writer batch, so a flushed batch
/// hands it to the next. It is opened afresh after [`BATCH_REPO_USES`]
/// batches or [`BATCH_REPO_AGE`], whichever comes first, and after a
/// failed flush: that bounds what it holds on to, the objects of earlier
/// batches still in its memory backend and the packs maintenance has
/// deleted since (libgit2 keeps every pack it opened mapped), and how many
/// packs each new object is looked for in (every batch adds one).
struct BatchRepo {
    repo: Repository,
    /// The handle's memory backend, which the batch's objects are written
    /// into directly.
    memory: Arc<MemoryObjects>,
    opened: Opened,
    batches: u32,
}

/// When a kept repository handle was opened, and the packs it may hold:
/// a handle is used again only while it is young and no maintenance pass
/// has deleted packs since it opened (see [`Governance::packs_epoch`]).
#[derive(Clone, Copy)]
pub(crate) struct Opened {
    at: std::time::Instant,
    epoch: u64,
}

impl Opened {
    pub(crate) fn now(epoch: u64) -> Self {
        Opened {
            at: std::time::Instant::now(),
            epoch,
        }
    }

    /// Whether the handle may still be used: younger than `age`, and
    /// opened since the last pass that deleted packs.
    pub(crate) fn usable(&self, age: std::time::Duration, epoch: u64) -> bool {
        self.at.elapsed() < age && self.epoch == epoch
    }
}

/// See [`BatchRepo`].
const BATCH_REPO_USES: u32 = 8;
/// See [`BatchRepo`].
pub(crate) const BATCH_REPO_AGE: std::time::Duration = std::time::Duration::from_secs(1);

impl BatchRepo {
    fn open(settings: &Settings, epoch: u64) -> Result<Self, GovError> {
        let (repo, memory) = open_batch_repo(settings)?;
        Ok(BatchRepo {
            repo,
            memory: Arc::new(memory),
            opened: Opened::now(epoch),
            batches: 0,
        })
    }

    /// The kept repository while it is young enough and holds no deleted
    /// pack, else a fresh one (the kept one closed first).
    fn reuse_or_open(
        kept: Option<BatchRepo>,
        settings: &Settings,
        epoch: u64,
    ) -> Result<Self, GovError> {
        match kept {
            Some(r) if r.batches < BATCH_REPO_USES && r.opened.usable(BATCH_REPO_AGE, epoch) => {
                Ok(r)
            }
            stale => {
                drop(stale);
                Self::open(settings, epoch)
            }
        }
    }
}

/// Undoes the rows of a writer of `batch` that failed after changing
/// some: the batch's transaction is rolled back and the entries of its
/// other writers, read back from its memory, applied again
/// ([`Index::redo_batch`]). Whether the index still holds the batch's
/// rows; if not, its transaction is left rolled back.
fn undo_rows(index: &mut Index, repo: &Repository, batch: &Batch) -> bool {
    let tip = batch.tip.map(|t| t.commit);
    let redone = chain::entries_since(repo, tip, batch.base)
        .and_then(|kept| index.redo_batch(&kept).map(|()| kept.len()));
    match redone {
        Ok(kept) => {
            tracing::debug!(kept, "a failed writer's rows undone");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "a failed writer's rows could not be undone; the batch is flushed without its index rows");
            index.rollback_batch();
            false
        }
    }
}

struct Writer {
    index: Index,
    /// The repository the last flushed batch wrote through, for the next.
    kept_repo: Option<BatchRepo>,
    check: EntryCheck,
    batch: Option<Batch>,
    next_batch: u64,
    /// The index file as this process last knew it: SQLite's
    /// `data_version` and the last entry projected. A different version
    /// with the same last entry means someone changed rows outside gov.
    seen: (i64, Option<u64>),
    /// The chain's tip as the last batch of this process flushed it.
    last_tip: Option<ChainTip>,
    /// How many writers the last batch held: more than one, and writers
    /// are likely on their way (see [`Governance::combine`]).
    last_members: usize,
}

/// How flushed batches ended, for the writers waiting on them.
#[derive(Default)]
struct Outcomes {
    /// Why recent batches failed, and whether the disk was full: read into
    /// their writers' turns when the turns are reported.
    failed: BTreeMap<u64, (String, bool)>,
    /// Flushed batches that handed files over for the working tree, with
    /// the number of their hand-over (see [`Checkouts`]), until those
    /// files are there: a writer that staged one of them puts them there
    /// itself ([`Governance::sync_handed_through`]) before its answer.
    handed: BTreeMap<u64, u64>,
    /// Writers' turns waiting for the combining writer (see
    /// [`Governance::transact`]).
    queue: Vec<Job>,
    /// Whether a writer is combining: taking the queued turns, running them
    /// and flushing their batch.
    combining: bool,
    /// The next job's ticket.
    next_ticket: u64,
    /// How the turns the combining writer ran ended, by ticket, until
    /// their writers take them.
    turns: std::collections::HashMap<u64, Turn>,
}

/// A writer's turn, queued for the combining writer: it runs the writer's
/// closure in the open batch (`Governance::run_in_batch`) and puts the
/// closure's answer where the writer waits for it.
struct Job {
    ticket: u64,
    run: TurnFn<'static>,
    /// The waiting writer's thread, unparked when its turn is reported or
    /// when it is to combine.
    writer: std::thread::Thread,
}

/// A queued writer's closure, wrapped: runs it in the open batch, puts its
/// answer where its writer waits, and says whether the writer's entries
/// were staged (it is a member of the batch).
type TurnFn<'a> = Box<dyn FnOnce(&Governance, &mut Writer) -> bool + Send + 'a>;

/// The turns a combining writer took, reported to their writers when it
/// is done, or as poisoned when it panics (a turn taken and not run
/// included: its closure was dropped with the panic).
struct Reports<'g> {
    gov: &'g Governance,
    turns: Vec<(u64, std::thread::Thread, Option<Turn>)>,
}

impl Reports<'_> {
    /// Hands the turns to their writers and wakes each, and lets the next
    /// writer in the queue combine (waking it alone: the others sleep on).
    /// `poisoned`: every turn fails, the queued ones too (their closures
    /// are dropped before their writers are told).
    fn publish(&mut self, poisoned: bool) {
        const FAILED: Turn = Turn {
            batch: None,
            failed: None,
            wants_checkout: false,
            poisoned: true,
        };
        let mut wake = Vec::with_capacity(self.turns.len() + 1);
        let mut o = self.gov.outcomes_even_poisoned();
        for (ticket, writer, turn) in self.turns.drain(..) {
            let mut turn = turn.filter(|_| !poisoned).unwrap_or(FAILED);
            // Every batch a reported turn is in has been flushed.
            turn.failed = turn.batch.and_then(|id| o.failed.get(&id).cloned());
            o.turns.insert(ticket, turn);
            wake.push(writer);
        }
        if poisoned {
            for job in std::mem::take(&mut o.queue) {
                let Job {
                    ticket,
                    run,
                    writer,
                } = job;
                drop(run);
                o.turns.insert(ticket, FAILED);
                wake.push(writer);
            }
        } else if let Some(next) = o.queue.first() {
            wake.push(next.writer.clone());
        }
        o.combining = false;
        drop(o);
        for writer in wake {
            writer.unpark();
        }
    }
}

impl Drop for Reports<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.publish(true);
        }
    }
}

/// How a queued turn ended, for its writer.
struct Turn {
    /// The batch that holds the writer's entries, if its closure succeeded
    /// (answered once that batch is flushed).
    batch: Option<u64>,
    /// Why that batch's flush failed, and whether the disk was full.
    failed: Option<(String, bool)>,
    /// Whether the writer asked for files in the working tree (an
    /// approval): it puts them there before its answer.
    wants_checkout: bool,
    /// The combining writer panicked before the turn's batch was flushed.
    poisoned: bool,
}

/// What [`Governance::sync_handed_through`] keeps between calls.
#[derive(Default)]
struct CheckedOut {
    /// How many batches' files are in the working tree.
    done: u64,
    /// The handle the last call used, and when it was opened: its Git
    /// index stays loaded (read again only if the file changed), and
    /// reading it whole cost as much as writing it. Opened afresh after
    /// [`BATCH_REPO_AGE`] or a pass that deleted packs, as a batch's is
    /// (see [`BatchRepo`]).
    repo: Option<(Opened, Repository)>,
    /// When the last call that put files there started, and how long it
    /// took (see [`CHECKOUT_SHARE`]).
    last: Option<(std::time::Instant, std::time::Duration)>,
    /// The last call could not put its files there (they wait for the
    /// next).
    failing: bool,
}

/// Files flushed batches put into the working tree, waiting for a
/// [`Governance::sync_handed_through`] (one at a time, each taking all).
#[derive(Default)]
struct Checkouts {
    /// How many batches have handed files over.
    handed: u64,
    files: ForCheckout,
}

impl Checkouts {
    /// Takes `files` for the next sync; the number of this hand-over.
    fn hand_over(&mut self, files: ForCheckout) -> u64 {
        self.files.then(files);
        self.handed += 1;
        self.handed
    }
}

/// What [`Governance::catch_up_checkout`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CaughtUp {
    /// Files brought up to `main`'s approved changes in the checkout
    /// (written, deleted, or only indexed).
    pub put_back: Vec<String>,
    /// Files whose change the Git index lacked, where the working tree
    /// has something else (the operator's): kept as they are, and indexed
    /// as `main` has them, so `git status` shows them changed.
    pub left: Vec<String>,
    /// A `git` command held the Git index: `put_back` waits for the
    /// server's next looks.
    pub waiting: bool,
}

/// The governance repository opened for writing, signing as one role.
///
/// `Send + Sync`: the server shares one behind an `Arc` and calls it from
/// `spawn_blocking`.
pub struct Governance {
    settings: Settings,
    /// Signs audit entries: the server's or the watchdog's key.
    audit_key: SigningKey,
    audit_role: Role,
    /// The key of the role asked for (the operator's for `Approver`), for
    /// commits other than audit entries, such as approval merges.
    signer_key: Option<SigningKey>,
    signer: Role,
    writer: Mutex<Writer>,
    outcomes: Mutex<Outcomes>,
    reader: Mutex<Index>,
    /// The connection the background pass goes through, opened at its
    /// first use: a checkpoint copies the log and flushes the database
    /// (10 ms and more under load), and the refs step reads the pending
    /// proposals' branches (57-81 ms with 36,000 waiting); through the
    /// reader, either held every read up for as long.
    background: Mutex<Option<Index>>,
    /// Why writes are refused, once tampering was found (see
    /// `store::trust`); kept until the process restarts after
    /// `gov audit recover`.
    tampered: Mutex<Option<String>>,
    /// Batches flushed and writers they carried, since opening.
    stats: (AtomicU64, AtomicU64),
    /// Held while open: `gov audit recover` refuses to run meanwhile.
    _open: OpenLock,
    /// Index rebuilds not recorded in the chain yet.
    index_rebuilds: Mutex<Vec<crate::domain::event::IndexRebuilt>>,
    /// A flush failed: Git refs may have moved without the entries that
    /// record them (`app::orphans` repairs before the next write).
    repair_due: AtomicBool,
    /// A flushed batch's rows did not reach the index (its commit failed):
    /// the next read catches the index up from Git, unless a batch does
    /// first (see [`Governance::index`]).
    index_behind: AtomicBool,
    /// The time entries are written at (see `app::clock`).
    clock: super::clock::Clock,
    /// The Git directory, for the maintenance check and the spare files
    /// (no handle opened).
    git_dir: std::path::PathBuf,
    /// When the maintenance check last counted loose objects.
    loose_checked: Mutex<Option<std::time::Instant>>,
    /// When the last background pass packed refs, and how long that took.
    refs_packed: Mutex<Option<(std::time::Instant, std::time::Duration)>>,
    /// Maintenance passes of this process that deleted packs (see
    /// [`Governance::packs_epoch`]).
    packs_epoch: AtomicU64,
    /// Long background merges, on a thread of their own.
    long_lane: Arc<crate::store::maintain::LongLane>,
    /// Files for the working tree, handed over by flushed batches.
    checkouts: Mutex<Checkouts>,
    /// Held while files are put into the working tree.
    checked_out: Mutex<CheckedOut>,
    /// Set by a server: approvals' files reach the working tree on the
    /// server's own schedule ([`Governance::sync_checkout_if_due`]), and
    /// a writer waits for them only if it asks
    /// ([`Governance::sync_checkout`]). Unset (a command on its own), each
    /// approval puts them there before its answer.
    checkout_follows: AtomicBool,
}

impl std::fmt::Debug for Governance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governance")
            .field("root", &self.settings.root)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

/// What a [`Governance::transact`] closure can see and use.
pub struct Tx<'a> {
    repo: &'a Repository,
    index: &'a Index,
    settings: &'a Settings,
    signer_key: &'a SigningKey,
    signer: Role,
    tip: Option<ChainTip>,
    staged: &'a mut Staged,
}

impl<'a> Tx<'a> {
    /// The repository, to read objects and write new ones. Refs are read
    /// and moved through [`Tx::staged`], never directly.
    pub fn repo(&self) -> &'a Repository {
        self.repo
    }
    /// The index, caught up to the chain's tip (earlier entries of the
    /// batch included).
    pub fn index(&self) -> &'a Index {
        self.index
    }
    pub fn settings(&self) -> &'a Settings {
        self.settings
    }
    /// The key of the role `Governance` was opened as, and that role.
    pub fn signer(&self) -> (&'a SigningKey, Role) {
        (self.signer_key, self.signer)
    }
    /// The sequence number of the chain's current last entry.
    pub fn tip_seq(&self) -> Option<u64> {
        self.tip.map(|t| t.seq)
    }
    /// What the batch has staged: objects to flush and ref moves.
    pub fn staged(&mut self) -> &mut Staged {
        self.staged
    }
    /// A ref's value as the batch sees it.
    pub fn ref_target(&self, refname: &str) -> Result<Option<Oid>, StoreError> {
        self.staged.target(self.repo, refname)
    }
    /// `main`'s tip on disk (what is in force is decided from it), as the
    /// batch first read it: an approval staged in the batch is not in
    /// force before it is durable.
    pub fn main_on_disk(&self) -> Result<Option<Oid>, StoreError> {
        self.staged
            .on_disk(self.repo, &self.settings.main_refname())
    }
}

fn key_path(settings: &Settings, role: Role) -> &std::path::Path {
    match role {
        Role::Server => &settings.server_key,
        Role::Watchdog => &settings.watchdog_key,
        Role::Approver => &settings.operator_key,
    }
}

fn load_key(settings: &Settings, role: Role) -> Result<SigningKey, GovError> {
    SigningKey::load(key_path(settings, role)).map_err(|source| GovError::Key { role, source })
}

/// The repository opened for one batch: new objects go to memory (a
/// mempack backend, ahead of the loose and pack backends, written to
/// directly: see `store::memory_odb`), so writing one costs no file; the
/// flush packs them from there.
fn open_batch_repo(settings: &Settings) -> Result<(Repository, MemoryObjects), GovError> {
    let repo = open_repo(settings)?;
    let memory = MemoryObjects::attach(&repo)?;
    crate::store::git::configure_for_batches(&repo)?;
    Ok((repo, memory))
}

pub(crate) fn open_repo(settings: &Settings) -> Result<Repository, GovError> {
    Repository::open(&settings.root).map_err(|source| GovError::OpenRepo {
        path: settings.root.clone(),
        source,
    })
}

impl Governance {
    /// Opens the repository signing as `signer`, and catches the index up.
    /// Audit entries are signed by the watchdog's key when `signer` is the
    /// watchdog, else by the server's key (an approver's key never signs
    /// audit entries; it is kept for approval merges).
    pub fn open(settings: &Settings, signer: Role) -> Result<Self, GovError> {
        Self::open_with_clock(settings, signer, super::clock::Clock::system())
    }

    /// The key this handle's writers sign Git commits with, as
    /// [`Tx::signer`] hands it out.
    pub fn signing_key(&self) -> &SigningKey {
        self.signer_key.as_ref().unwrap_or(&self.audit_key)
    }

    /// [`Governance::open`], with entries written at `clock`'s time.
    pub fn open_with_clock(
        settings: &Settings,
        signer: Role,
        clock: super::clock::Clock,
    ) -> Result<Self, GovError> {
        let audit_role = match signer {
            Role::Watchdog => Role::Watchdog,
            Role::Server | Role::Approver => Role::Server,
        };
        let audit_key = load_key(settings, audit_role)?;
        let signer_key = match signer {
            Role::Approver => Some(load_key(settings, Role::Approver)?),
            _ => None,
        };
        let repo = open_repo(settings)?;
        let open = OpenLock::shared(repo.path())?;
        {
            // A writer killed mid-update (SIGKILL, power loss) can leave a
            // ref's lock file behind; it would fail every later write.
            let before = clock.now();
            let lock = ChainLock::acquire(repo.path())?;
            for path in lock.remove_stale_ref_locks(repo.path()) {
                tracing::warn!(path = %path.display(), "removed a ref lock left by a writer that died");
            }
            remove_stale_git_locks(&lock, &repo, settings, before);
        }
        let mut index = Index::open(&settings.index_path())?;
        let mut check = entry_check(settings);
        // Tampering does not stop the process from starting: it serves what
        // it had verified, says why it refuses writes, and keeps the index
        // and `.gov/verified-tip` as they are.
        let tampered = match start_up_check(settings, &repo, &mut index, &mut check) {
            Ok(()) => None,
            Err(StoreError::Tampered(why)) => {
                tracing::error!(reason = %why, "the audit chain was tampered with; refusing writes");
                Some(why)
            }
            Err(e) => return Err(e.into()),
        };
        let reader = Index::open(&settings.index_path())?;
        reader.limit_cache(READER_CACHE_KIB)?;
        let seen = (index.data_version()?, index.position()?.map(|p| p.0));
        Ok(Governance {
            settings: settings.clone(),
            audit_key,
            audit_role,
            signer_key,
            signer,
            writer: Mutex::new(Writer {
                index,
                check,
                kept_repo: None,
                batch: None,
                next_batch: 1,
                seen,
                last_tip: None,
                last_members: 0,
            }),
            outcomes: Mutex::new(Outcomes::default()),
            reader: Mutex::new(reader),
            background: Mutex::new(None),
            tampered: Mutex::new(tampered),
            stats: (AtomicU64::new(0), AtomicU64::new(0)),
            repair_due: AtomicBool::new(false),
            index_behind: AtomicBool::new(false),
            _open: open,
            index_rebuilds: Mutex::new(Vec::new()),
            clock,
            git_dir: repo.path().to_path_buf(),
            loose_checked: Mutex::new(None),
            refs_packed: Mutex::new(None),
            packs_epoch: AtomicU64::new(0),
            long_lane: Arc::default(),
            checkouts: Mutex::new(Checkouts::default()),
            checked_out: Mutex::new(CheckedOut::default()),
            checkout_follows: AtomicBool::new(false),
        })
    }

    /// Whether a flush failed since the last call: Git changes may be
    /// left without their entries, to repair before the next write.
    pub fn take_repair_due(&self) -> bool {
        self.repair_due.swap(false, Ordering::SeqCst)
    }

    /// Asks for a repair before the next write.
    pub fn set_repair_due(&self) {
        self.repair_due.store(true, Ordering::SeqCst);
    }

    /// Why writes are refused, if tampering was found.
    pub fn tampered(&self) -> Option<String> {
        self.tampered.lock().ok().and_then(|t| t.clone())
    }

    fn refuse_if_tampered(&self) -> Result<(), GovError> {
        match self.tampered() {
            Some(why) => Err(StoreError::Tampered(why).into()),
            None => Ok(()),
        }
    }

    /// Records tampering found by `result`, so later writes are refused
    /// without looking again.
    fn note_tampering<T>(&self, result: Result<T, StoreError>) -> Result<T, GovError> {
        if let Err(StoreError::Tampered(why)) = &result {
            tracing::error!(reason = %why, "the audit chain was tampered with; refusing writes");
            if let Ok(mut t) = self.tampered.lock() {
                *t = Some(why.clone());
            }
        }
        Ok(result?)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The role audit entries are signed in (server or watchdog).
    pub fn role(&self) -> Role {
        self.audit_role
    }

    /// Appends entries (one signed commit each, one ref update, one flush).
    pub fn append(&self, entries: Vec<NewEntry>) -> Result<Vec<AuditEntry>, GovError> {
        let ((), written) = self.transact(|_| Ok::<_, GovError>(((), entries)))?;
        Ok(written)
    }

    /// Runs `f` in a batch: holding the chain's lock, with the index caught
    /// up to the tip and every earlier entry of the batch applied; stages
    /// the entries it returns and answers once the batch is durable. If `f`
    /// fails, nothing of it is written.
    ///
    /// Writers combine: each queues its turn, and one of them (the
    /// combining writer) takes every queued turn, runs them one after the
    /// other on its own thread, and flushes their batch once nobody is left
    /// in the queue; then it answers them all at once and lets the next
    /// writer in the queue combine. So a batch of many writers costs one
    /// hand-over of the writer mutex instead of one per writer.
    pub fn transact<T: Send, E: From<GovError> + Send>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<(T, Vec<NewEntry>), E> + Send,
    ) -> Result<(T, Vec<AuditEntry>), E> {
        self.refuse_if_tampered()?;
        #[allow(
            clippy::type_complexity,
            reason = "the batch's error outside, the writer's own answer inside"
        )]
        let mut answer: Option<Result<Result<(T, Vec<ChainEntry>), E>, GovError>> = None;
        let slot = &mut answer;
        let run: TurnFn<'_> = Box::new(move |gov: &Governance, w: &mut Writer| {
            let staged = gov.run_in_batch(w, f);
            let member = matches!(staged, Ok(Ok(_)));
            *slot = Some(staged);
            member
        });
        // SAFETY: the closure borrows this frame (`f`'s captures and
        // `answer`). It is run or dropped by the combining writer before
        // this writer's turn is reported (`Turn`), and this function does
        // not return until then: it only parks, and ignores a poisoned
        // mutex. It unwinds only if this writer is the
        // combining one and panics, and then every closure it took has been
        // run or dropped first (`combine`'s locals go before `Reports`).
        // `Send` bounds on `f`, `T` and `E` make running the closure on
        // another thread sound, as a scoped thread would.
        #[allow(
            unsafe_code,
            reason = "a turn run on the combining writer's thread borrows the waiting writer's frame"
        )]
        let run: TurnFn<'static> = unsafe { std::mem::transmute(run) };
        let turn = self.queue_and_wait(run);
        let staged = match answer.take() {
            Some(staged) if !turn.poisoned => staged,
            _ => return Err(GovError::Poisoned.into()),
        };
        let (value, written) = match staged {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(e.into()),
        };
        match turn.failed {
            Some((why, true)) => return Err(GovError::BatchStorageFull(why).into()),
            Some((why, false)) => return Err(GovError::BatchFailed(why).into()),
            None => {}
        }
        if let Some(id) = turn.batch {
            if turn.wants_checkout && !self.checkout_follows.load(Ordering::Relaxed) {
                // Outside the writer lock: the next batch is staged
                // meanwhile.
                self.sync_batch_checkouts(id);
            }
        }
        Ok((value, written.into_iter().map(|w| w.entry).collect()))
    }

    /// Queues a writer's turn and waits until it is reported: run by this
    /// writer itself when nobody is combining, else by the combining
    /// writer.
    fn queue_and_wait(&self, run: TurnFn<'static>) -> Turn {
        let mut o = self.outcomes_even_poisoned();
        let ticket = o.next_ticket;
        o.next_ticket += 1;
        let writer = std::thread::current();
        o.queue.push(Job {
            ticket,
            run,
            writer,
        });
        loop {
            if let Some(turn) = o.turns.remove(&ticket) {
                return turn;
            }
            if !o.combining {
                o.combining = true;
                drop(o);
                self.combine();
            } else {
                drop(o);
                // Unparked when the turn is reported or this writer is next
                // to combine (or spuriously: it looks again).
                std::thread::park();
            }
            o = self.outcomes_even_poisoned();
        }
    }

    /// The combining writer's work: takes the queued turns and runs them in
    /// the open batch, again while more are queued meanwhile; flushes the
    /// batch when the queue is empty or the batch full; reports every turn
    /// it ran and lets the next writer combine. A poisoned writer mutex (a
    /// writer panicked holding it) fails every queued turn.
    fn combine(&self) {
        let mut reports = Reports {
            gov: self,
            turns: Vec::new(),
        };
        let Ok(mut w) = self.writer.lock() else {
            reports.publish(true);
            return;
        };
        let checkouts = |w: &Writer| w.batch.as_ref().map_or(0, |b| b.staged.checkouts());
        loop {
            let mut jobs = std::mem::take(&mut self.outcomes_even_poisoned().queue);
            let busy = |b: &Batch| b.members > 1 || w.last_members > 1;
            if jobs.is_empty() && w.batch.as_ref().is_some_and(busy) {
                // Before flushing, the core is offered once to whoever is
                // ready to run: a writer on its way (its request read, its
                // decision made ahead) queues and joins this batch instead
                // of waiting for its flush and paying for one of its own.
                // Without it, a combining writer, faster than the writers'
                // hand-overs were, flushed batches of a few writers a fifth
                // more often (docs/BENCHMARKS.md, the thirtieth round).
                // Only when writers come together: a lone writer (the
                // hook, a command) has nobody to wait for.
                std::thread::yield_now();
                jobs = std::mem::take(&mut self.outcomes_even_poisoned().queue);
            }
            if jobs.is_empty() {
                break;
            }
            // Taken: from here on, should this thread panic, their writers
            // are told (`Reports`' drop).
            let first = reports.turns.len();
            reports
                .turns
                .extend(jobs.iter().map(|j| (j.ticket, j.writer.clone(), None)));
            for (i, job) in jobs.into_iter().enumerate() {
                let before = checkouts(&w);
                let member = (job.run)(self, &mut w);
                // A writer whose own (kept) changes asked for files in the
                // working tree: an approval. It waits for them; the others
                // do not.
                reports.turns[first + i].2 = Some(Turn {
                    batch: w.batch.as_ref().map(|b| b.id).filter(|_| member),
                    failed: None,
                    wants_checkout: checkouts(&w) > before,
                    poisoned: false,
                });
                if w.batch.as_ref().is_some_and(|b| b.members >= MAX_BATCH) {
                    self.finish_batch(&mut w);
                }
            }
            // The objects of the turns just run go to the encoding thread
            // together (the flush encodes whatever it has not done by
            // then): one wake-up of that thread per pass, not per turn
            // (docs/BENCHMARKS.md, the forty-fourth round).
            if let Some(b) = w.batch.as_mut() {
                b.staged.take_to_encode().hand_over();
            }
        }
        self.finish_batch(&mut w);
        drop(w);
        reports.publish(false);
    }

    /// Runs one writer's closure in the open batch (opening one if needed)
    /// and stages its entries. The outer error is the batch's (it could not
    /// be opened), the inner one the writer's own; either way nothing of
    /// this writer stays staged.
    #[allow(
        clippy::type_complexity,
        reason = "the batch's error outside, the writer's own answer inside"
    )]
    fn run_in_batch<T, E: From<GovError>>(
        &self,
        w: &mut Writer,
        f: impl FnOnce(&mut Tx<'_>) -> Result<(T, Vec<NewEntry>), E>,
    ) -> Result<Result<(T, Vec<ChainEntry>), E>, GovError> {
        let refname = self.settings.audit_refname();
        if w.batch.is_none() {
            // Tampering found by an earlier batch (or at start-up) refuses
            // every later one without looking again.
            self.refuse_if_tampered()?;
            let opened = std::time::Instant::now();
            let mut batch_repo =
                BatchRepo::reuse_or_open(w.kept_repo.take(), &self.settings, self.packs_epoch())?;
            batch_repo.batches += 1;
            let repo = &batch_repo.repo;
            let before = self.clock.now();
            let lock = ChainLock::acquire(repo.path())?;
            remove_stale_git_locks(&lock, repo, &self.settings, before);
            let index_untouched = self.rebuild_if_edited(w, repo)?;
            // The chain's tip as this process's last batch left it, if the
            // audit ref still names it and nobody wrote the index since:
            // then there is nothing to catch up (one ref read instead of
            // reading and parsing the tip entry twice).
            let tip = match w.last_tip.take() {
                Some(last)
                    if index_untouched
                        && repo.refname_to_id(&refname).ok() == Some(last.commit) =>
                {
                    Some(last)
                }
                _ => {
                    self.catch_up_index(w, repo)?;
                    chain::tip(repo, &refname)?.map(|t| t.as_tip())
                }
            };
            w.seen.1 = tip.map(|t| t.seq);
            w.index.begin_batch()?;
            w.batch = Some(Batch {
                id: w.next_batch,
                _lock: lock,
                staged: Staged::in_memory(batch_repo.memory.clone()),
                repo: batch_repo,
                base: tip.map(|t| t.commit),
                tip,
                members: 0,
                opened,
            });
            w.next_batch += 1;
        }
        let Writer { index, batch, .. } = w;
        let Some(batch) = batch.as_mut() else {
            return Err(GovError::Poisoned);
        };
        let repo = &batch.repo.repo;
        let changes = index.changes();
        let before = batch.staged.clone();
        let signer_key = self.signing_key();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut tx = Tx {
                repo,
                index,
                settings: &self.settings,
                signer_key,
                signer: self.signer,
                tip: batch.tip,
                staged: &mut batch.staged,
            };
            f(&mut tx)
        }));
        let staged = match outcome {
            Ok(Ok((value, entries))) => chain::stage(
                repo,
                &mut batch.staged,
                &refname,
                &self.audit_key,
                self.audit_role,
                batch.tip,
                entries,
                self.clock.now(),
            )
            .and_then(|written| index.apply_staged(&written).map(|()| written))
            .map(|written| (value, written))
            .map_err(|e| E::from(GovError::from(e))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(E::from(GovError::Panicked)),
        };
        let mut index_lost = false;
        match &staged {
            Ok((_, written)) => {
                for e in written {
                    tracing::debug!(
                        seq = e.entry.seq,
                        event = e.entry.entry.event_type(),
                        "staged"
                    );
                }
                if let Some(last) = written.last() {
                    batch.tip = Some(last.as_tip());
                }
                batch.members += 1;
            }
            Err(_) => {
                batch.staged = before;
                // Rows this writer changed (its entries' rows, applied
                // before one of them failed) are undone too.
                index_lost = index.changes() != changes && !undo_rows(index, repo, batch);
            }
        }
        if index_lost {
            // The batch's earlier writers are in Git and answered once it
            // is flushed; the index catches up from Git at the next batch
            // (its rows were rolled back, so the flush's commit fails).
            self.finish_batch(w);
        }
        Ok(staged)
    }

    /// Flushes the open batch (objects, refs, index rows) and tells its
    /// writers how it ended; releases the chain lock. Hands the batch's
    /// files for the working tree over (see [`Checkouts`]): the writers
    /// that asked for them put them there before their answer.
    fn finish_batch(&self, w: &mut Writer) {
        let Some(batch) = w.batch.take() else {
            return;
        };
        tracing::debug!(
            batch = batch.id,
            writers = batch.members,
            open_for_us = batch.opened.elapsed().as_micros() as u64,
            "batch closing"
        );
        w.last_members = batch.members;
        let result = if batch.members == 0 {
            w.index.rollback_batch();
            Ok((true, ForCheckout::default()))
        } else {
            self.stats.0.fetch_add(1, Ordering::Relaxed);
            self.stats
                .1
                .fetch_add(batch.members as u64, Ordering::Relaxed);
            self.flush(w, &batch.repo.repo, batch.staged, batch.tip.as_ref())
        };
        let (result, checkouts) = match result {
            Ok((indexed, files)) => {
                if !indexed {
                    self.index_behind.store(true, Ordering::SeqCst);
                }
                w.kept_repo = Some(batch.repo);
                // Known only if the index holds every entry up to it.
                w.last_tip = batch.tip.filter(|_| indexed);
                (Ok(()), files)
            }
            Err(e) => (Err(e), ForCheckout::default()),
        };
        if let Some(tip) = &batch.tip {
            w.seen.1 = Some(tip.seq);
        }
        drop(batch._lock);
        let mut outcomes = self.outcomes_even_poisoned();
        if !checkouts.is_empty() {
            if let Ok(mut c) = self.checkouts.lock() {
                outcomes.handed.insert(batch.id, c.hand_over(checkouts));
            }
        }
        if let Err(e) = result {
            tracing::error!(error = %e.0, batch = batch.id, "a batch of writes failed");
            outcomes.failed.insert(batch.id, e);
            while outcomes.failed.len() > 64 {
                outcomes.failed.pop_first();
            }
        }
        drop(outcomes);
    }

    /// Puts flushed batch `batch`'s files into the working tree
    /// (`store::proposals::sync_worktree`), unless they are there already.
    fn sync_batch_checkouts(&self, batch: u64) {
        let mine = self.outcomes_even_poisoned().handed.get(&batch).copied();
        // None: a writer of this batch or a later one has put them there.
        if let Some(mine) = mine {
            let _ = self.sync_handed_through(mine);
        }
    }

    /// From now on, approvals' files reach the working tree on the
    /// caller's schedule ([`Governance::sync_checkout_if_due`], the
    /// server's), not before each approval's answer: under a stream of
    /// approvals, one sync for many instead of one per batch. A writer
    /// that must see its file asks with [`Governance::sync_checkout`].
    pub fn follow_checkout_in_background(&self) {
        self.checkout_follows.store(true, Ordering::Relaxed);
    }

    /// Puts every file that flushed batches handed over into the working
    /// tree; returns once they are there (best effort, as the sync):
    /// whether they are (not while a `git` command holds the Git index).
    pub fn sync_checkout(&self) -> bool {
        self.sync_handed_through(self.handed_over())
    }

    /// How many batches have handed files for the working tree over.
    fn handed_over(&self) -> u64 {
        self.checkouts.lock().map_or(0, |c| c.handed)
    }

    /// [`Governance::sync_checkout`] if files wait and the last sync's
    /// share of the time allows (see [`CHECKOUT_SHARE`]); never waits for
    /// a sync under way. Whether it synced.
    pub fn sync_checkout_if_due(&self) -> bool {
        let Ok(mut state) = self.checked_out.try_lock() else {
            return false;
        };
        let handed = self.handed_over();
        let now = std::time::Instant::now();
        if state.done >= handed
            || !due_in_proportion(state.last, now, std::time::Duration::ZERO, CHECKOUT_SHARE)
        {
            return false;
        }
        self.sync_locked(&mut state, handed);
        true
    }

    /// Puts every file handed over so far into the working tree, unless
    /// an earlier call already took the files of hand-over `mine`. One
    /// caller at a time does the work, for every batch that handed files
    /// over by then: rewriting the Git index costs as much for one file as
    /// for many, and grows with the files on `main`. Best effort, as the
    /// sync itself: the commits are durable, and the files are on `main`.
    fn sync_handed_through(&self, mine: u64) -> bool {
        let Ok(mut state) = self.checked_out.lock() else {
            return false;
        };
        self.sync_locked(&mut state, mine);
        state.done >= mine
    }

    /// [`Governance::sync_handed_through`] with its lock held.
    fn sync_locked(&self, state: &mut CheckedOut, mine: u64) {
        if state.done >= mine {
            return;
        }
        let started = std::time::Instant::now();
        let Some((handed, files)) = self
            .checkouts
            .lock()
            .ok()
            .map(|mut c| (c.handed, std::mem::take(&mut c.files)))
        else {
            return;
        };
        let synced = self.with_checkout(state, |repo| {
            // A panic here must not leave the batch's writers waiting (nor
            // be tried again).
            catch_unwind(AssertUnwindSafe(|| {
                crate::store::proposals::sync_worktree(repo, &files)
            }))
            .unwrap_or(Ok(()))
            .map_err(GovError::from)
        });
        state.last = Some((started, started.elapsed()));
        if let Err(e) = synced {
            // The Git index could not be read or written (a `git` command
            // holds it, say): the files wait for the next try, the
            // server's next look or the next writer that waits for them.
            // Said once until a try succeeds: `git commit` keeps the lock
            // while its editor is open.
            if !std::mem::replace(&mut state.failing, true) {
                let then = match self.checkout_follows.load(Ordering::Relaxed) {
                    true => "trying again",
                    false => "the next `gov serve` brings it up to date",
                };
                tracing::warn!(error = %e, "the working tree was not updated; {then}");
            }
            if let Ok(mut c) = self.checkouts.lock() {
                let later = std::mem::replace(&mut c.files, files);
                c.files.then(later);
            }
            return;
        }
        if std::mem::take(&mut state.failing) {
            tracing::info!("the working tree is up to date again");
        }
        state.done = handed;
        self.outcomes_even_poisoned()
            .handed
            .retain(|_, n| *n > handed);
    }

    /// Runs `f` on the checkout's repository handle (kept in `state`, or
    /// opened afresh as a batch's is, see [`BatchRepo`]) holding the lock
    /// on the working tree and its Git index.
    fn with_checkout<T>(
        &self,
        state: &mut CheckedOut,
        f: impl FnOnce(&Repository) -> Result<T, GovError>,
    ) -> Result<T, GovError> {
        let epoch = self.packs_epoch();
        let (opened, repo) = match state.repo.take() {
            Some((opened, repo)) if opened.usable(BATCH_REPO_AGE, epoch) => (opened, repo),
            stale => {
                drop(stale);
                (Opened::now(epoch), open_repo(&self.settings)?)
            }
        };
        let lock = ChainLock::acquire_named(repo.path(), crate::store::lock::WORKTREE_LOCK_FILE)?;
        let done = f(&repo);
        drop(lock);
        state.repo = Some((opened, repo));
        done
    }

    /// Brings a checked-out `main` up to the approved changes gov could
    /// not put there (a server or command stopped, or a `git` command held
    /// the Git index: `store::proposals::missing_from_checkout`), the way
    /// approvals' files go there: should a `git` command hold the Git
    /// index, they wait for a server's next looks. A server does this as
    /// it starts, before any approval of its own.
    pub fn catch_up_checkout(&self) -> Result<CaughtUp, GovError> {
        let mut state = self.checked_out.lock().map_err(|_| GovError::Poisoned)?;
        let main = self.settings.main_refname();
        let found = self.with_checkout(&mut state, |repo| {
            Ok(crate::store::proposals::missing_from_checkout(repo, &main)?)
        })?;
        let mut done = CaughtUp {
            put_back: (found.files.files.iter())
                .filter(|c| !found.left.contains(&c.path))
                .map(|c| c.path.clone())
                .collect(),
            left: found.left,
            waiting: false,
        };
        if !found.files.is_empty() {
            let mine = (self.checkouts.lock())
                .map_err(|_| GovError::Poisoned)?
                .hand_over(found.files);
            self.sync_locked(&mut state, mine);
            done.waiting = state.done < mine;
        }
        Ok(done)
    }

    /// The outcomes of flushed batches, also after a writer panicked while
    /// holding them: what they record stays true, and the batches' writers
    /// must still be told.
    fn outcomes_even_poisoned(&self) -> MutexGuard<'_, Outcomes> {
        self.outcomes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Flushes a batch: whether the index took its rows too, and the
    /// batch's files for the working tree; on failure, why and whether the
    /// disk was full.
    fn flush(
        &self,
        w: &mut Writer,
        repo: &Repository,
        mut staged: Staged,
        tip: Option<&ChainTip>,
    ) -> Result<(bool, ForCheckout), (String, bool)> {
        let why = |e: &dyn std::error::Error| crate::domain::errors::error_chain(e);
        let started = std::time::Instant::now();
        let checkouts = staged.take_checkouts();
        if let Err(e) = staged.flush(repo) {
            self.repair_due.store(true, Ordering::SeqCst);
            w.index.rollback_batch();
            return Err((why(&e), e.is_storage_full()));
        }
        let git_done = started.elapsed();
        // The entries are durable in Git now; the index is a projection of
        // them, so a failed commit here is caught up from Git by the next
        // read or batch (`index_behind`).
        use crate::store::fault::{fire, Fault};
        let committed = match fire(repo.path(), Fault::IndexCommit) {
            true => Err(StoreError::from(git2::Error::from_str(
                "injected fault: the index commit failed",
            ))),
            false => w.index.commit_batch(tip),
        };
        let indexed = match committed {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %why(&e), "index not updated; it catches up from git on the next read or write");
                w.index.rollback_batch();
                false
            }
        };
        tracing::debug!(
            git_us = git_done.as_micros() as u64,
            index_us = (started.elapsed() - git_done).as_micros() as u64,
            "batch flushed"
        );
        Ok((indexed, checkouts))
    }

    /// Checks that the index file was not changed outside gov since this
    /// process last looked (cheap: one `PRAGMA data_version` when nothing
    /// changed). Another gov process's write moves the last projected entry
    /// on; a change that does not is compared with a fresh projection of the
    /// chain, and if it differs the index is copied aside (evidence) and
    /// rebuilt from the verified chain; [`Governance::take_index_rebuilds`]
    /// hands the record over. Caller holds the chain lock. Whether nobody
    /// wrote the index since this process last looked.
    fn rebuild_if_edited(&self, w: &mut Writer, repo: &Repository) -> Result<bool, GovError> {
        let version = w.index.data_version()?;
        if version == w.seen.0 {
            return Ok(true);
        }
        let position = w.index.position()?.map(|p| p.0);
        if position != w.seen.1 {
            w.seen = (version, position);
            return Ok(false);
        }
        let refname = self.settings.audit_refname();
        let why = self.note_tampering(difference_from_chain(w, repo, &refname))?;
        if let Some(why) = why {
            let path = self.settings.index_path();
            let kept = w.index.copy_aside(&path, "edited", self.clock.now())?;
            w.index.rebuild(repo, &refname, &mut w.check)?;
            tracing::error!(reason = %why, kept = %kept.display(), "the index was changed outside gov; rebuilt it from the chain");
            if let Ok(mut r) = self.index_rebuilds.lock() {
                r.push(crate::domain::event::IndexRebuilt {
                    reason: why,
                    kept_as: kept.display().to_string(),
                });
            }
        }
        w.seen = (w.index.data_version()?, w.index.position()?.map(|p| p.0));
        Ok(false)
    }

    /// Checks the index between writes (see `rebuild_if_edited`); a no-op
    /// while a batch is open (its opening checked).
    pub fn check_index(&self) -> Result<(), GovError> {
        let mut w = self.writer.lock().map_err(|_| GovError::Poisoned)?;
        if w.batch.is_some() || w.index.data_version()? == w.seen.0 {
            return Ok(());
        }
        let repo = open_repo(&self.settings)?;
        let _lock = ChainLock::acquire(repo.path())?;
        self.rebuild_if_edited(&mut w, &repo).map(|_| ())
    }

    /// Hands back index rebuilds taken by [`Governance::take_index_rebuilds`]
    /// whose record could not be appended, for the next writer to record.
    pub fn put_back_index_rebuilds(&self, rebuilt: Vec<crate::domain::event::IndexRebuilt>) {
        if let Ok(mut r) = self.index_rebuilds.lock() {
            r.splice(0..0, rebuilt);
        }
    }

    /// The index rebuilds not yet recorded in the chain.
    pub fn take_index_rebuilds(&self) -> Vec<crate::domain::event::IndexRebuilt> {
        self.index_rebuilds
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// One pass of the server's repository maintenance
    /// (`store::maintain`): loose objects packed and packs merged, refs
    /// left to [`Governance::pack_refs_if_due`]; writers go on meanwhile,
    /// never held up. It runs beside the writers
    /// (the server's background pass), so its packs are written without
    /// a delta search, as a batch's are: that search cost more CPU than
    /// the writes it shared the machine with. `gov maintain` (by hand)
    /// searches for deltas.
    ///
    /// A long merge (the carry into a grown repository's largest packs,
    /// `store::maintain::LongLane`) is handed to a thread of its own, and
    /// later passes merge the packs that keep coming meanwhile.
    pub fn maintain(&self) -> Result<crate::store::maintain::Report, GovError> {
        let report = self.maintain_pass();
        if report.as_ref().is_ok_and(|r| r.packs_merged > 0) {
            self.packs_epoch.fetch_add(1, Ordering::Relaxed);
        }
        report
    }

    /// How many maintenance passes of this process have deleted packs (by
    /// merging them). libgit2 keeps a pack mapped (its index and windows
    /// on it) while any handle that found it is open, and shares packs
    /// between handles; so a handle kept from before such a pass is not
    /// used again, and is let go of as soon as it is idle: the deleted
    /// packs are unmapped before the merged pack's index is mapped in
    /// their place (twice the indexes' memory for as long as both are).
    pub(crate) fn packs_epoch(&self) -> u64 {
        self.packs_epoch.load(Ordering::Relaxed) + self.long_lane.merges_done()
    }

    /// Starts no more long merges and waits for the one under way, if any
    /// (a server stopping): see `store::maintain::LongLane::close`.
    pub fn stop_long_merges(&self) {
        self.long_lane.close();
    }

    fn maintain_pass(&self) -> Result<crate::store::maintain::Report, GovError> {
        let repo = open_repo(&self.settings)?;
        crate::store::git::configure_for_batches(&repo)?;
        Ok(crate::store::maintain::run_background(
            &repo,
            &self.long_lane,
        )?)
    }

    /// The server's refs step (`store::maintain::pack_refs`), on a
    /// schedule of its own ([`refs_due`]), apart from the passes that merge
    /// packs: with tens of thousands of loose refs it took seconds (21,306
    /// refs in 3.2 s under the benchmark's rejections), and in the same
    /// pass it held every merge up meanwhile (docs/BENCHMARKS.md, the
    /// forty-seventh round). How many refs it packed, `None` if not due.
    pub fn pack_refs_if_due(&self) -> Result<Option<usize>, GovError> {
        let started = std::time::Instant::now();
        if !self
            .refs_packed
            .lock()
            .is_ok_and(|last| refs_due(*last, started))
        {
            return Ok(None);
        }
        let repo = open_repo(&self.settings)?;
        // Through the step's own connection, never the reader's (see
        // `background`). It sees what every batch committed: asked under
        // the chain lock (see `KeepLoose::decided`).
        let mut own = self.background.lock().unwrap_or_else(|p| p.into_inner());
        let index = self.background_index(&mut own).ok();
        let (pending, decided) = asked_of_index(index, &self.settings);
        let keep = keep_loose(&self.settings, pending.as_ref(), &decided);
        let packed = crate::store::maintain::pack_refs(&repo, &keep, Pass::Background);
        if let Ok(mut last) = self.refs_packed.lock() {
            *last = Some((started, started.elapsed()));
        }
        Ok(Some(packed?))
    }

    /// Batches flushed since opening, and the writers they carried.
    pub fn batch_stats(&self) -> (u64, u64) {
        (
            self.stats.0.load(Ordering::Relaxed),
            self.stats.1.load(Ordering::Relaxed),
        )
    }

    /// Leaves the index's checkpoints to [`Governance::checkpoint_index`]
    /// (see `Index::defer_checkpoints`): the server calls it once, then
    /// checkpoints in its background pass, outside the writers' path.
    pub fn defer_index_checkpoints(&self) -> Result<(), GovError> {
        let w = self.writer.lock().map_err(|_| GovError::Poisoned)?;
        Ok(w.index.defer_checkpoints()?)
    }

    /// Copies the index's write-ahead log into the database without
    /// holding writers or readers up (a passive checkpoint, through a
    /// connection of its own). The log's frames and those checkpointed;
    /// `None` when another checkpoint is running.
    pub fn checkpoint_index(&self) -> Result<Option<(i64, i64)>, GovError> {
        let Ok(mut own) = self.background.try_lock() else {
            return Ok(None);
        };
        Ok(Some(self.background_index(&mut own)?.checkpoint()?))
    }

    /// The background pass's connection to the index (see `background`),
    /// opened if `own` holds none yet.
    fn background_index<'s>(&self, own: &'s mut Option<Index>) -> Result<&'s Index, GovError> {
        Ok(match own {
            Some(index) => index,
            slot @ None => {
                let index = Index::open(&self.settings.index_path())?;
                index.limit_cache(READER_CACHE_KIB)?;
                slot.insert(index)
            }
        })
    }

    /// Keeps empty files ready for this repository's writers in this
    /// process while the returned guard lives, so that a batch's flush
    /// renames files into place instead of creating them (see
    /// `store::spare`). Without it writers create their files themselves.
    pub fn keep_spare_files(&self) -> Result<SpareFiles, GovError> {
        crate::store::spare::Filler::start(&self.git_dir)
            .map(SpareFiles)
            .map_err(|e| StoreError::io("make spare files in", &self.git_dir, e).into())
    }

    /// Has the audit key's signature nonces made ahead, on a thread of its
    /// own from the first entry on, so that signing an entry in a writer's
    /// turn skips the base-point multiplication (see `store::keys`). For a
    /// process that signs many entries: the server.
    pub fn make_nonces_ahead(&self) {
        self.audit_key.make_nonces_ahead();
    }

    /// Drops the repository handles kept between batches (a batch's, the
    /// working tree's) that are at least `min_age` old, or hold packs a
    /// pass deleted, and are not in use.
    /// libgit2 adds the packs it finds to a handle's list and drops none,
    /// so a handle kept while no batch came held the packs maintenance had
    /// merged and deleted since it opened: their descriptors, mapped
    /// indexes and disk space. Never waits for a lock, and closes the
    /// handles after letting go of it (closing unmaps their packs).
    pub fn let_go_of_handles(&self, min_age: std::time::Duration) {
        let epoch = self.packs_epoch();
        let batch = self.writer.try_lock().ok().and_then(|mut w| {
            w.kept_repo
                .take_if(|r| !r.opened.usable(min_age, epoch))
                .map(|r| r.repo)
        });
        let checkout = self.checked_out.try_lock().ok().and_then(|mut state| {
            state
                .repo
                .take_if(|(opened, _)| !opened.usable(min_age, epoch))
                .map(|(_, repo)| repo)
        });
        drop((batch, checkout));
    }

    /// Whether a maintenance pass is due: packs to merge (one folder
    /// listed, each pack's size read), or loose objects (written by
    /// `git`, or left by a crash; counted at most every
    /// [`LOOSE_CHECK_EVERY`]). Opens no repository handle: the server
    /// asks several times a second.
    pub fn maintenance_due(&self) -> bool {
        if crate::store::maintain::merge_due(&self.git_dir, &self.long_lane) {
            return true;
        }
        let Ok(mut checked) = self.loose_checked.lock() else {
            return false;
        };
        if checked.is_some_and(|t| t.elapsed() < LOOSE_CHECK_EVERY) {
            return false;
        }
        *checked = Some(std::time::Instant::now());
        crate::store::maintain::loose_object_count(&self.git_dir) > MAINTAIN_LOOSE
    }

    /// A read connection to the index (WAL: readers never wait for
    /// writers), caught up to the last batch this process flushed: if that
    /// batch's rows did not reach the index, they are projected from Git
    /// first (see [`Governance::catch_up_behind_index`]).
    pub fn index(&self) -> Result<MutexGuard<'_, Index>, GovError> {
        if self.index_behind.load(Ordering::SeqCst) {
            self.catch_up_behind_index();
        }
        self.reader.lock().map_err(|_| GovError::Poisoned)
    }

    /// Projects the chain's entries past the index's position into it
    /// (appended by other processes, or by a batch of this one whose rows
    /// did not commit), each once its checks pass: a failed check is
    /// tampering. The index then holds the whole chain, so it is no longer
    /// behind. Caller holds the chain lock.
    fn catch_up_index(&self, w: &mut Writer, repo: &Repository) -> Result<usize, GovError> {
        let refname = self.settings.audit_refname();
        let projected = self.note_tampering(w.index.catch_up(repo, &refname, &mut w.check))?;
        self.index_behind.store(false, Ordering::SeqCst);
        Ok(projected)
    }

    /// Projects from Git the entries a flushed batch could not put into
    /// the index (its commit failed: a full disk, say), so that a read
    /// after a write sees it. Best effort: a writer busy with a batch
    /// catches the index up itself when the batch opens, and should this
    /// fail too, the read is served from the index as it is and the next
    /// read tries again. Takes the writer mutex only if free, so a caller
    /// that holds it (a writer's own reads) never waits on itself.
    fn catch_up_behind_index(&self) {
        let Ok(mut w) = self.writer.try_lock() else {
            return;
        };
        if w.batch.is_some() || !self.index_behind.load(Ordering::SeqCst) {
            return;
        }
        let caught = open_repo(&self.settings).and_then(|repo| {
            let _lock = ChainLock::acquire(repo.path())?;
            self.catch_up_index(&mut w, &repo)
        });
        match caught {
            Ok(n) => {
                tracing::info!(
                    entries = n,
                    "the index caught up from git after a failed commit"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "the index is still behind the chain; reads may miss the last writes")
            }
        }
    }
}

/// How the index differs from a fresh projection of the chain, each entry
/// checked (`None`: it does not).
fn difference_from_chain(
    w: &mut Writer,
    repo: &Repository,
    refname: &str,
) -> Result<Option<String>, StoreError> {
    let oids = chain::commits_after(repo, refname, 0, None)?.unwrap_or_default();
    let Writer { index, check, .. } = w;
    let mut after = None;
    let entries = oids.iter().map(|oid| {
        let e = check.check(repo, *oid, after)?;
        after = Some((e.entry.seq, e.commit));
        Ok(e)
    });
    index.difference_from_entries(entries)
}

/// Removes the lock files of `main`, `packed-refs` and the Git index that a
/// gov writer killed mid-write left (see
/// [`ChainLock::remove_stale_git_locks`]); a live `git`'s are left alone.
fn remove_stale_git_locks(
    lock: &ChainLock,
    repo: &Repository,
    settings: &Settings,
    before: chrono::DateTime<chrono::Utc>,
) {
    let main = settings.main_refname();
    for path in lock.remove_stale_git_locks(repo.path(), repo.workdir(), &main, before.into()) {
        tracing::warn!(path = %path.display(), "removed a git lock left by a writer that died");
    }
}

/// How entries are checked before they are projected: signatures against
/// `policies/allowed_signers` as `main` has it.
pub fn entry_check(settings: &Settings) -> EntryCheck {
    EntryCheck::new(SignersSource {
        main_ref: settings.main_refname(),
        file: settings.allowed_signers_path(),
    })
}

/// At start-up: the chain still holds the tip `gov audit verify` last
/// accepted (`.gov/verified-tip`) when the index does not already vouch for
/// it, then the index catches up, each entry checked.
fn start_up_check(
    settings: &Settings,
    repo: &Repository,
    index: &mut Index,
    check: &mut EntryCheck,
) -> Result<(), StoreError> {
    let refname = settings.audit_refname();
    if let Some((seq, commit)) = crate::app::audit::read_verified_tip(settings) {
        // The index's own tip is checked by the catch-up; the verified tip
        // matters when the index is missing or older than it.
        let indexed = index.position()?.map_or(0, |(s, _)| s);
        if indexed < seq && chain::commits_after(repo, &refname, seq, Some(commit))?.is_none() {
            return Err(StoreError::Tampered(format!(
                "the last verified entry #{seq} (commit {}) is no longer on the audit chain: the chain was moved back or rewritten",
                &commit.to_string()[..12]
            )));
        }
    }
    index.catch_up(repo, &refname, check)?;
    Ok(())
}

/// What `gov reindex` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reindexed {
    pub entries: usize,
    /// Where an unreadable index was moved, if it was.
    pub moved_aside: Option<std::path::PathBuf>,
}

/// Rebuilds the index from the chain, holding the chain lock so no writer
/// appends meanwhile. Needs no key. Every entry is checked; a chain that
/// no longer holds the index's last entry or the last verified tip is
/// tampering and the index is left as it is (run `gov audit recover`). An
/// index that is not a database at all is moved aside, never deleted.
pub fn reindex(settings: &Settings) -> Result<Reindexed, GovError> {
    let repo = open_repo(settings)?;
    let _lock = ChainLock::acquire(repo.path())?;
    let path = settings.index_path();
    let mut moved_aside = None;
    let mut index = match Index::open(&path) {
        Ok(index) => index,
        Err(StoreError::Index(e)) if path.exists() && crate::store::index::is_unreadable(&e) => {
            let now = super::clock::Clock::system().now();
            let aside = crate::store::index::move_aside(&path, "unreadable", now)?;
            tracing::warn!(error = %e, aside = %aside.display(), "the index is unreadable; moved it aside");
            moved_aside = Some(aside);
            Index::open(&path)?
        }
        Err(e) => return Err(e.into()),
    };
    let mut check = entry_check(settings);
    // The old index and the verified tip are evidence: they must still be
    // on the chain before anything is rebuilt.
    start_up_check(settings, &repo, &mut index, &mut check)?;
    let entries = index.rebuild(&repo, &settings.audit_refname(), &mut check)?;
    Ok(Reindexed {
        entries,
        moved_aside,
    })
}

/// One pass of repository maintenance by hand (`gov maintain`); safe while
/// a server or watchdog writes. Needs no key.
pub fn maintain(settings: &Settings) -> Result<crate::store::maintain::Report, GovError> {
    let repo = open_repo(settings)?;
    let index = open_index(settings).ok().map(|(_, index)| index);
    // `decided` is asked under the chain lock, when every batch of every
    // process has committed its rows (see `KeepLoose::decided`).
    let (pending, decided) = asked_of_index(index.as_ref(), settings);
    let keep = keep_loose(settings, pending.as_ref(), &decided);
    Ok(crate::store::maintain::run(
        &repo,
        Some(&keep),
        Pass::ByHand,
    )?)
}

/// Whether a background pass packs refs at `now`, given when the last
/// one that did started and how long its refs step took (see
/// [`PACK_REFS_SHARE`]).
fn refs_due(
    last: Option<(std::time::Instant, std::time::Duration)>,
    now: std::time::Instant,
) -> bool {
    due_in_proportion(last, now, PACK_REFS_EVERY, PACK_REFS_SHARE)
}

/// Whether a task that last started at `at` and took `took` (`last`) is
/// due again at `now`: once `every` has passed, and `share` times as long
/// as it took, so that it takes at most about one `share`th of a core
/// however its cost grows. Due if it never ran.
fn due_in_proportion(
    last: Option<(std::time::Instant, std::time::Duration)>,
    now: std::time::Instant,
    every: std::time::Duration,
    share: u32,
) -> bool {
    last.is_none_or(|(at, took)| now.saturating_duration_since(at) >= every.max(took * share))
}

/// The refs maintenance leaves loose: the audit ref and the branches of
/// the proposals waiting for a person, all of `<proposal_prefix>` when
/// `pending` is unknown.
fn keep_loose<'a>(
    settings: &Settings,
    pending: Option<&'a HashSet<String>>,
    decided: &'a dyn Fn(&str) -> bool,
) -> KeepLoose<'a> {
    KeepLoose {
        audit_ref: settings.audit_refname(),
        proposal_refs: format!("refs/heads/{}", settings.proposal_prefix),
        pending,
        decided,
    }
}

/// What maintenance asks the index (`None`: it could not be opened):
/// the pending proposals' branches, read now, and whether a loose
/// proposal branch's proposal is decided, asked later (see
/// [`KeepLoose`]).
fn asked_of_index<'a>(
    index: Option<&'a Index>,
    settings: &'a Settings,
) -> (Option<HashSet<String>>, impl Fn(&str) -> bool + 'a) {
    let pending = index.and_then(|i| pending_branch_refs(i.conn()));
    let decided =
        move |refname: &str| index.is_some_and(|i| proposal_decided(i.conn(), settings, refname));
    (pending, decided)
}

/// Whether the index knows the proposal whose branch is `refname` as
/// decided (not waiting for a person); `false` when it cannot say.
fn proposal_decided(conn: &rusqlite::Connection, settings: &Settings, refname: &str) -> bool {
    let Some(branch) = refname.strip_prefix("refs/heads/") else {
        return false;
    };
    let Some(id) = branch.strip_prefix(settings.proposal_prefix.as_str()) else {
        return false;
    };
    crate::store::projection::proposal_decided(conn, id, branch).unwrap_or(false)
}

/// The branches (full ref names) of the proposals the index says wait for
/// a person; `None` if it cannot say.
fn pending_branch_refs(conn: &rusqlite::Connection) -> Option<HashSet<String>> {
    let rows = crate::store::projection::pending_branches(conn).ok()?;
    Some(
        rows.into_iter()
            .filter_map(|r| r.branch)
            .map(|b| format!("refs/heads/{b}"))
            .collect(),
    )
}

/// Opens the index caught up to the chain, for reading. Needs no key. On a
/// tampered chain the index is returned as it is (what was verified).
pub fn open_index(settings: &Settings) -> Result<(Repository, Index), GovError> {
    let repo = open_repo(settings)?;
    let mut index = Index::open(&settings.index_path())?;
    match index.catch_up(&repo, &settings.audit_refname(), &mut entry_check(settings)) {
        Ok(_) => {}
        Err(StoreError::Tampered(why)) => {
            tracing::warn!(reason = %why, "the audit chain was tampered with; reading the index as it is");
        }
        Err(e) => return Err(e.into()),
    }
    Ok((repo, index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::git::Checkout;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn governance_is_send_and_sync() {
        assert_send_sync::<Governance>();
    }

    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    /// A repository made by `gov init`, and the server's handle on it.
    fn new_repository() -> Result<(tempfile::TempDir, Governance), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        crate::app::init::init(&crate::app::init::InitOptions {
            dir: dir.path().to_path_buf(),
            operator_name: "operator".into(),
            operator_key: None,
        })?;
        let settings = Settings::load(dir.path())?;
        let gov = Governance::open(&settings, Role::Server)?;
        Ok((dir, gov))
    }

    /// An entry recording a tool call named `what`.
    fn tool_call(what: &str) -> Result<NewEntry, crate::domain::event::EventNameError> {
        use crate::domain::audit::{Actor, Event};
        let event = Event::other("tool_call", serde_json::json!({ "what": what }))?;
        Ok(NewEntry::new(Actor::server(), event))
    }

    /// A pass that merges packs retires the repository handles kept from
    /// before it: the batch's handle is not used again, and is let go of
    /// as soon as it is idle, however young (libgit2 keeps the packs a
    /// handle found mapped while it is open, so the deleted packs' indexes
    /// stayed mapped beside the merged pack's for up to a second). A pass
    /// that deletes no pack leaves the handle kept.
    #[test]
    fn a_pass_that_merges_packs_retires_the_handles_kept_from_before() -> TestResult {
        let (dir, gov) = new_repository()?;
        let hour = std::time::Duration::from_secs(3600);
        for i in 0..4 {
            gov.append(vec![tool_call(&format!("write {i}"))?])?;
        }
        let kept = |gov: &Governance| -> TestResult<bool> {
            Ok(gov
                .writer
                .lock()
                .map_err(|_| "poisoned")?
                .kept_repo
                .is_some())
        };
        gov.let_go_of_handles(hour);
        assert!(kept(&gov)?, "a young handle is kept");
        let epoch = gov.packs_epoch();
        let report = gov.maintain()?;
        assert!(report.packs_merged > 1, "{report:?}");
        assert_eq!(gov.packs_epoch(), epoch + 1);
        gov.let_go_of_handles(hour);
        assert!(!kept(&gov)?, "the handle from before the merge is kept");
        let packs = dir.path().join(".git/objects/pack");
        let deleted: Vec<String> = std::fs::read_dir("/proc/self/fd")?
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|t| t.starts_with(&packs))
            .map(|t| t.to_string_lossy().into_owned())
            .filter(|t| t.ends_with(" (deleted)"))
            .collect();
        assert_eq!(deleted, Vec::<String>::new());
        // The next batch opens a handle of the new epoch, which a pass
        // that merges nothing leaves usable.
        gov.append(vec![tool_call("after the merge")?])?;
        let report = gov.maintain()?;
        assert_eq!(report.packs_merged, 0, "{report:?}");
        assert_eq!(gov.packs_epoch(), epoch + 1);
        gov.let_go_of_handles(hour);
        assert!(kept(&gov)?, "a handle of the current epoch is let go of");
        Ok(())
    }

    /// The background pass reads the index through a connection of its
    /// own: with the reader's connection held (a dashboard read, say), it
    /// still finishes, and its refs step still packs what it may.
    #[test]
    fn the_background_pass_does_not_wait_for_the_reader() -> TestResult {
        let (dir, gov) = new_repository()?;
        gov.append(vec![tool_call("a commit for the refs to name")?])?;
        let repo = Repository::open(dir.path())?;
        let head = repo.refname_to_id("refs/heads/main")?;
        for i in 0..64 {
            repo.reference(&format!("refs/heads/topic-{i}"), head, false, "")?;
        }
        let reader = gov.index()?;
        let (done, report) = std::sync::mpsc::channel();
        std::thread::scope(|scope| -> TestResult {
            scope.spawn(|| done.send(gov.pack_refs_if_due().map_err(|e| e.to_string())));
            // Bounded: the pass used to wait for as long as the reader
            // was held.
            let report = report.recv_timeout(std::time::Duration::from_secs(60));
            drop(reader);
            let packed = report.map_err(|_| "the pass waited for the reader")??;
            assert!(packed.is_some_and(|n| n >= 64), "{packed:?}");
            Ok(())
        })?;
        for i in 0..64 {
            let loose = dir.path().join(format!(".git/refs/heads/topic-{i}"));
            assert!(!loose.exists(), "{} is still loose", loose.display());
            assert_eq!(repo.refname_to_id(&format!("refs/heads/topic-{i}"))?, head);
        }
        Ok(())
    }

    /// The refs step comes once a second, or once in 50 times as long
    /// as it last took, whichever is later.
    #[test]
    fn the_refs_step_waits_in_proportion_to_its_cost() {
        let at = std::time::Instant::now();
        let ms = std::time::Duration::from_millis;
        assert!(refs_due(None, at), "the first pass packs refs");
        // A quick step: once a second.
        assert!(!refs_due(Some((at, ms(2))), at + ms(999)));
        assert!(refs_due(Some((at, ms(2))), at + ms(1000)));
        // A step of 80 ms (tens of thousands of pending proposals):
        // once in 50 times that, 4 seconds.
        assert!(!refs_due(Some((at, ms(80))), at + ms(3999)));
        assert!(refs_due(Some((at, ms(80))), at + ms(4000)));
        // A clock that reads earlier than the last step waits.
        assert!(!refs_due(Some((at + ms(10), ms(2))), at));
    }

    /// A server's sync of the working tree comes at most once in ten
    /// times as long as it last took: at every look while it is quick.
    #[test]
    fn the_checkout_sync_waits_in_proportion_to_its_cost() {
        let at = std::time::Instant::now();
        let ms = std::time::Duration::from_millis;
        let due = |last, now| due_in_proportion(last, now, ms(0), CHECKOUT_SHARE);
        assert!(due(None, at));
        assert!(due(Some((at, ms(2))), at + ms(20)));
        assert!(!due(Some((at, ms(30))), at + ms(299)));
        assert!(due(Some((at, ms(30))), at + ms(300)));
    }

    /// A writer mutex poisoned by a panic fails every later writer at once
    /// (not a hang), without running its closure.
    #[test]
    fn a_poisoned_writer_mutex_fails_the_queued_writers() -> TestResult {
        let (_dir, gov) = new_repository()?;
        let entry = tool_call("after the panic")?;
        std::thread::scope(|scope| {
            let panicked = scope.spawn(|| {
                let _w = gov.writer.lock();
                panic!("a writer panics holding the writer mutex");
            });
            assert!(panicked.join().is_err());
        });
        let mut ran = false;
        let answer = gov.transact(|_| -> Result<_, GovError> {
            ran = true;
            Ok(((), vec![entry]))
        });
        assert!(matches!(answer, Err(GovError::Poisoned)), "{answer:?}");
        assert!(!ran, "the closure ran under a poisoned mutex");
        let o = gov.outcomes_even_poisoned();
        assert!(o.queue.is_empty() && o.turns.is_empty() && !o.combining);
        Ok(())
    }

    /// A combining writer that panics tells every writer whose turn it
    /// took, run or not, and every writer still queued, that its turn
    /// failed; the closures not run are dropped first.
    #[test]
    fn a_combining_writer_that_panics_fails_every_turn_it_holds() -> TestResult {
        let (_dir, gov) = new_repository()?;
        let dropped = Arc::new(AtomicBool::new(false));
        struct DropFlag(Arc<AtomicBool>);
        impl Drop for DropFlag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = DropFlag(dropped.clone());
        {
            let mut o = gov.outcomes_even_poisoned();
            o.combining = true;
            o.queue.push(Job {
                ticket: 3,
                run: Box::new(move |_, _| {
                    let _flag = &flag;
                    true
                }),
                writer: std::thread::current(),
            });
        }
        let ran = Turn {
            batch: Some(1),
            failed: None,
            wants_checkout: false,
            poisoned: false,
        };
        let unwound = catch_unwind(AssertUnwindSafe(|| {
            let me = std::thread::current();
            let mut reports = Reports {
                gov: &gov,
                turns: vec![(1, me.clone(), None), (2, me, None)],
            };
            reports.turns[0].2 = Some(ran);
            panic!("the combining writer panics");
        }));
        assert!(unwound.is_err());
        assert!(dropped.load(Ordering::SeqCst), "a queued closure was kept");
        let mut o = gov.outcomes_even_poisoned();
        assert!(o.queue.is_empty() && !o.combining);
        for ticket in 1..=3 {
            let turn = o.turns.remove(&ticket).ok_or("a writer was not told")?;
            assert!(turn.poisoned && turn.batch.is_none(), "turn {ticket}");
        }
        Ok(())
    }

    /// An approval and another write in one batch: the other writer is
    /// answered once the batch is durable, while the approval still waits
    /// to put its file into the working tree (held up here by the working
    /// tree's lock, as another gov process syncing would hold it).
    #[test]
    fn only_the_writer_that_asked_for_a_checkout_waits_for_it() -> TestResult {
        use crate::store::lock::WORKTREE_LOCK_FILE;
        let (dir, gov) = new_repository()?;
        let (approval_entry, other_entry) = (tool_call("approval")?, tool_call("other")?);
        let file = dir.path().join("approved.toml");
        let held = ChainLock::acquire_named(&dir.path().join(".git"), WORKTREE_LOCK_FILE)?;
        std::thread::scope(|scope| -> TestResult {
            // Both writers in line before either gets in (the first to
            // queue combines, held up here by the writer mutex): one batch.
            let writer = gov.writer.lock().map_err(|_| "poisoned")?;
            let approval = scope.spawn(|| {
                gov.transact(|tx| -> Result<_, GovError> {
                    tx.staged().checkout_after(Checkout::added(
                        "refs/heads/main",
                        "approved.toml",
                        b"ok\n",
                    ));
                    Ok(((), vec![approval_entry]))
                })
            });
            let other = scope
                .spawn(|| gov.transact(|_| -> Result<_, GovError> { Ok(((), vec![other_entry])) }));
            while gov.outcomes_even_poisoned().queue.len() < 2 {
                std::thread::yield_now();
            }
            drop(writer);
            // It must be answered while the lock is held; a minute bounds
            // the test should it wait (then it fails, not hangs).
            let since = std::time::Instant::now();
            while !other.is_finished() && since.elapsed() < std::time::Duration::from_secs(60) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let answered = other.is_finished();
            let approval_done = approval.is_finished();
            drop(held);
            assert!(
                answered,
                "the other writer waited for the approval's checkout"
            );
            let written = other.join().map_err(|_| "the other writer panicked")??;
            assert_eq!(written.1.len(), 1);
            assert_eq!(gov.batch_stats(), (1, 2), "not one batch of both");
            assert!(!approval_done, "the approval did not wait for its checkout");
            approval.join().map_err(|_| "the approval panicked")??;
            Ok(())
        })?;
        assert_eq!(std::fs::read_to_string(&file)?, "ok\n");
        Ok(())
    }

    /// Under a server (`follow_checkout_in_background`) an approval is
    /// answered once its batch is durable, its file not yet in the working
    /// tree; the server's sync puts every file handed over there at once,
    /// and finds nothing to do right after.
    #[test]
    fn under_a_server_approvals_files_follow_in_the_background() -> TestResult {
        let (dir, gov) = new_repository()?;
        gov.follow_checkout_in_background();
        let file = |n: usize| dir.path().join(format!("approved-{n}.toml"));
        for n in 0..2 {
            let entry = tool_call(&format!("approval {n}"))?;
            let name = format!("approved-{n}.toml");
            gov.transact(|tx| -> Result<_, GovError> {
                tx.staged()
                    .checkout_after(Checkout::added("refs/heads/main", &name, b"ok\n"));
                Ok(((), vec![entry]))
            })?;
            assert!(!file(n).exists(), "approval {n} waited for its file");
        }
        assert!(gov.sync_checkout_if_due(), "files waited");
        for n in 0..2 {
            assert_eq!(std::fs::read_to_string(file(n))?, "ok\n");
        }
        assert!(!gov.sync_checkout_if_due(), "nothing waits");
        Ok(())
    }

    /// A writer that changed rows and then failed is undone alone: the
    /// rows of the batch's writers before it stay, the writer after it
    /// reads them and none of the failed one's, and the flushed index
    /// matches the chain.
    #[test]
    fn a_failed_writer_s_rows_are_undone_and_the_others_kept() -> TestResult {
        let batches = a_writer_fails_between_two(false)?;
        assert_eq!(batches, (1, 2), "one batch of the two kept writers");
        Ok(())
    }

    /// The same, when the batch's entries cannot be read back to apply them
    /// again: the batch is flushed at once without its rows, and the next
    /// batch projects them from the chain. The writer after the failed one
    /// reads the same rows, and the index matches the chain.
    #[test]
    fn a_batch_whose_rows_cannot_be_redone_is_flushed_and_caught_up_from_git() -> TestResult {
        let batches = a_writer_fails_between_two(true)?;
        assert_eq!(batches, (2, 2), "the failure closed the first batch");
        Ok(())
    }

    /// A batch whose index commit failed is durable in Git all the same;
    /// the next read catches the index up from the chain, so a read after
    /// the write sees it although no other write follows.
    #[test]
    fn a_read_after_a_failed_index_commit_sees_the_write() -> TestResult {
        use crate::store::fault::{arm, is_armed, Fault};
        let (_dir, gov) = new_repository()?;
        let git_dir = gov.settings.root.join(".git");
        let entry = tool_call("behind")?;
        arm(&git_dir, Fault::IndexCommit);
        let (_, written) = gov.transact(|_| -> Result<_, GovError> { Ok(((), vec![entry])) })?;
        assert!(!is_armed(&git_dir, Fault::IndexCommit), "the fault fired");
        let index = gov.index()?;
        let rows: i64 = index.conn().query_row(
            "SELECT count(*) FROM audit WHERE payload_json LIKE '%behind%'",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(rows, 1);
        assert_eq!(index.position()?.map(|p| p.0), Some(written[0].seq));
        Ok(())
    }

    /// Three writers: the middle one writes a row and fails (and, with
    /// `read_back_fails`, its batch's entries cannot be read back). Checks
    /// what the third one reads and the index after the flush; returns the
    /// batches flushed and their writers.
    fn a_writer_fails_between_two(read_back_fails: bool) -> TestResult<(u64, u64)> {
        let (_dir, gov) = new_repository()?;
        let (first, last) = (tool_call("first")?, tool_call("last")?);
        let rows = |tx: &Tx<'_>, sql: &str| -> Result<i64, GovError> {
            Ok(tx
                .index()
                .conn()
                .query_row(sql, [], |r| r.get(0))
                .map_err(StoreError::from)?)
        };
        let mut w = gov.writer.lock().map_err(|_| "poisoned")?;
        let kept =
            gov.run_in_batch(&mut w, |_| -> Result<_, GovError> { Ok(((), vec![first])) })??;
        if read_back_fails {
            let git_dir = gov.settings.root.join(".git");
            crate::store::fault::arm(&git_dir, crate::store::fault::Fault::ReadBatchBack);
        }
        let failed = gov.run_in_batch(&mut w, |tx| -> Result<((), Vec<NewEntry>), GovError> {
            tx.index()
                .conn()
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('failed', 'writer')",
                    [],
                )
                .map_err(StoreError::from)?;
            Err(GovError::BatchFailed("refused on purpose".into()))
        })?;
        assert!(failed.is_err());
        // Flushed by the failure, or still open.
        assert_eq!(w.batch.is_none(), read_back_fails);
        let seen = gov.run_in_batch(&mut w, |tx| -> Result<_, GovError> {
            let failed_rows = rows(tx, "SELECT count(*) FROM meta WHERE key = 'failed'")?;
            let first_rows = rows(
                tx,
                "SELECT count(*) FROM audit WHERE payload_json LIKE '%first%'",
            )?;
            Ok(((failed_rows, first_rows), vec![last]))
        })??;
        assert_eq!(
            seen.0,
            (0, 1),
            "the failed writer's row, the first writer's"
        );
        gov.finish_batch(&mut w);
        let tip = w.index.position()?.map(|(seq, _)| seq);
        drop(w);
        assert_eq!(tip, Some(seen.1[0].entry.seq));
        assert_eq!(seen.1[0].entry.seq, kept.1[0].entry.seq + 1);
        let index = gov.index()?;
        let audit_rows: i64 = index
            .conn()
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))?;
        assert_eq!(audit_rows as u64, seen.1[0].entry.seq);
        Ok(gov.batch_stats())
    }
}
