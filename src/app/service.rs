//! The governance service: settings, the write path ([`Governance`]), the
//! policy set in force, and the keys and tokens the use cases need. The
//! server holds one behind an `Arc`; the CLI opens one when no server runs.
//! Every state change goes through [`Governance::transact`], so the
//! invariants (decided once, redeemed once, cap checked and charged
//! atomically, a pause holds) hold across threads and processes.

use std::sync::{Arc, RwLock};

use git2::{Oid, Repository};

use super::clock::Clock;
use super::error::AppError;
use super::governance::{GovError, Governance, Opened, Tx};
use crate::config::{AgentSettings, BudgetSettings, Settings};
use crate::domain::audit::{NewEntry, Timestamp};
use crate::domain::event::{Event, PolicyChangeRefused};
use crate::domain::policy::PolicySet;
use crate::store::keys::{Role, SigningKey};
pub use crate::store::trust::Refusal;
use crate::store::trust::TrustState;

impl From<GovError> for AppError {
    fn from(e: GovError) -> Self {
        use crate::store::git::StoreError;
        match e {
            // Nothing was written: the caller's input cannot be recorded.
            GovError::Store(StoreError::InvalidEntry(e)) => AppError::Invalid {
                field: e.field.to_string(),
                message: e.reason,
            },
            GovError::Store(StoreError::Tampered(why)) => AppError::ChainTampered(why),
            GovError::Store(e) if e.is_storage_full() => AppError::StorageFull(e.to_string()),
            GovError::BatchStorageFull(why) => AppError::StorageFull(why),
            e => AppError::internal(crate::domain::errors::error_chain(&e)),
        }
    }
}

impl From<crate::store::git::StoreError> for AppError {
    fn from(e: crate::store::git::StoreError) -> Self {
        GovError::from(e).into()
    }
}

/// The policy set in force and, when the newest `main` could not be loaded,
/// why.
#[derive(Default)]
struct PolicyState {
    set: Option<Arc<PolicySet>>,
    /// The commit of main the state was last computed for.
    seen: Option<Oid>,
    /// The `policies/` tree the set was loaded from: when main moves without
    /// touching it (a proposal lands), the set is kept, not re-parsed.
    tree: Option<Oid>,
    error: Option<String>,
}

/// The agents in force: those of `main`'s tip, by id, each with its
/// settings or why its `agent.toml` does not parse.
pub type AgentsInForce = std::collections::BTreeMap<String, Result<AgentSettings, String>>;

#[derive(Default)]
struct AgentsState {
    agents: Arc<AgentsInForce>,
    /// The commit of main the agents were last read for.
    seen: Option<Oid>,
    /// The `agents/` tree they were read from: when main moves without
    /// touching it, they are kept, not re-parsed.
    tree: Option<Oid>,
    loaded: bool,
}

/// What `/status` reports about the policy set.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyStatus {
    pub version: Option<String>,
    pub error: Option<String>,
    /// Commits on `main` that change governed paths without authorization
    /// and are still there (not reverted or adopted): not in force.
    pub refused: Vec<Refusal>,
}

/// The event that records a refused change to governed paths.
pub const POLICY_CHANGE_REFUSED: &str = "policy_change_refused";

pub struct Service {
    settings: Settings,
    gov: Governance,
    approver_key: Option<SigningKey>,
    policy: RwLock<PolicyState>,
    agents: RwLock<AgentsState>,
    /// The root-of-trust walk of `main`, recomputed (incrementally) when
    /// main moves.
    trust: RwLock<Option<TrustState>>,
    /// Refused commits known to have their `policy_change_refused` entry.
    refusals_recorded: std::sync::Mutex<std::collections::HashSet<String>>,
    failed_redemptions: std::sync::Mutex<super::credentials::FailedRedemptions>,
    /// Held while index rebuilds are recorded (see
    /// [`Service::record_index_rebuilds`]).
    recording: std::sync::Mutex<()>,
    /// A handle kept open to read `main`'s tip on the hot path.
    main_reader: Reader,
    /// A handle kept open for [`Service::policy_now`] (its own, so that no
    /// lock is taken while `main_reader` is held).
    policy_reader: Reader,
    /// A handle kept open for work done ahead of a batch
    /// ([`Service::read_ahead`]), its own so that neither of the others
    /// waits for it.
    ahead_reader: Reader,
    /// The one clock of this service (see [`super::clock`]).
    clock: Clock,
    /// Reviews of proposed policy changes, by proposal head.
    reviews: super::policy_change::Reviews,
    pub started_at: Timestamp,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("root", &self.settings.root)
            .finish_non_exhaustive()
    }
}

/// The outcome of a transaction closure: the use case's own answer (which
/// may be a refusal that still writes entries, such as an audit flag) and
/// the entries to append.
pub type Step<T> = Result<(Result<T, AppError>, Vec<NewEntry>), AppError>;

impl Service {
    /// Opens the repository as the server (audit entries signed with the
    /// server key; approvals with the operator key when it is present).
    pub fn open(settings: &Settings) -> Result<Service, AppError> {
        Self::open_as(settings, Role::Server)
    }

    /// Opens the repository signing audit entries as `role`: the watchdog
    /// opens it as [`Role::Watchdog`], so its entries verify as the
    /// watchdog's.
    pub fn open_as(settings: &Settings, role: Role) -> Result<Service, AppError> {
        Self::open_with_clock(settings, role, Clock::system())
    }

    /// Opens the repository signing as `role`, reading the time from
    /// `clock` (tests set it instead of sleeping).
    pub fn open_with_clock(
        settings: &Settings,
        role: Role,
        clock: Clock,
    ) -> Result<Service, AppError> {
        let gov = Governance::open_with_clock(settings, role, clock.clone())?;
        let approver_key = SigningKey::load(&settings.operator_key).ok();
        let svc = Service {
            settings: settings.clone(),
            gov,
            approver_key,
            policy: RwLock::new(PolicyState::default()),
            agents: RwLock::new(AgentsState::default()),
            trust: RwLock::new(None),
            refusals_recorded: Default::default(),
            failed_redemptions: Default::default(),
            recording: Default::default(),
            main_reader: Default::default(),
            policy_reader: Default::default(),
            ahead_reader: Default::default(),
            reviews: Default::default(),
            started_at: Timestamp(clock.now()),
            clock,
        };
        let mut svc = svc;
        let repo = svc.open_repo()?;
        if let Some(in_force) = svc.in_force(&repo) {
            svc.settings = enforcement_in_force(&svc.settings, &repo, in_force)?;
        }
        let _ = svc.policy_at(&repo);
        svc.record_refusals()?;
        // Git changes left by a writer that died before its entries.
        if svc.gov.tampered().is_none() {
            if let Err(e) = super::orphans::repair(&svc) {
                tracing::warn!(error = %e, "cannot repair git changes no entry records");
            }
        }
        Ok(svc)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The time now, by this service's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// This service's clock (shared by its writer: entries get its time).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The failed redemptions counted and not yet recorded.
    pub fn failed_redemptions(
        &self,
    ) -> std::sync::MutexGuard<'_, super::credentials::FailedRedemptions> {
        // A poisoned counter is still a counter.
        self.failed_redemptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reviews of proposed policy changes computed so far.
    pub fn reviews(&self) -> &super::policy_change::Reviews {
        &self.reviews
    }

    pub fn governance(&self) -> &Governance {
        &self.gov
    }

    pub fn approver_key(&self) -> Result<&SigningKey, AppError> {
        self.approver_key.as_ref().ok_or_else(|| {
            AppError::internal(format!(
                "the operator key `{}` cannot be loaded",
                self.settings.operator_key.display()
            ))
        })
    }

    pub fn open_repo(&self) -> Result<Repository, AppError> {
        Ok(Repository::open(&self.settings.root)?)
    }

    /// Runs a use case under the chain lock: `f` returns its answer and the
    /// entries that record it; the entries are durable before this returns.
    ///
    /// A refused change to governed paths on `main` that has no
    /// `policy_change_refused` entry yet gets one in the same append, so
    /// each refused commit is recorded once, by whichever process writes
    /// first.
    pub fn transact<T: Send>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Step<T> + Send,
    ) -> Result<T, AppError> {
        self.repair_if_due();
        let result = self.gov.transact(|tx| {
            let (answer, entries) = f(tx)?;
            let mut all = self.unrecorded_refusals(tx)?;
            all.extend(entries);
            Ok::<_, AppError>((answer, all))
        });
        if result.is_err() {
            // The writer whose flush failed repairs at once when it can.
            self.repair_if_due();
        }
        self.record_index_rebuilds();
        result?.0
    }

    /// Checks that nobody changed the index outside gov (the server does it
    /// every few seconds, writers when a batch opens); a changed index is
    /// rebuilt from the chain and the rebuild recorded.
    pub fn check_index(&self) -> Result<(), AppError> {
        self.gov.check_index()?;
        self.record_index_rebuilds();
        Ok(())
    }

    /// Appends an `index_rebuilt` entry for each rebuild not recorded yet.
    ///
    /// One caller at a time records (`recording`), and the others wait for
    /// it: so a writer whose batch read the rebuilt index is answered only
    /// once the rebuild's entry is durable, also when the server's
    /// background check rebuilt the index and is still appending its
    /// entry.
    fn record_index_rebuilds(&self) {
        let _recording = self.recording.lock();
        let rebuilt = self.gov.take_index_rebuilds();
        if rebuilt.is_empty() {
            return;
        }
        let entries = rebuilt
            .iter()
            .map(|r| {
                NewEntry::new(
                    crate::domain::audit::Actor::server(),
                    Event::IndexRebuilt(r.clone()),
                )
            })
            .collect();
        if let Err(e) = self.gov.append(entries) {
            // Not lost: the next writer records them.
            tracing::error!(error = %e, "cannot record the index rebuild yet");
            self.gov.put_back_index_rebuilds(rebuilt);
        }
    }

    /// After a failed flush, Git refs may have moved without the entries
    /// that record them: repaired before anything else is written (and
    /// tried again by the next writer if the repair fails too).
    fn repair_if_due(&self) {
        // Not from inside a repair: its own failed flush is left to the
        // next writer.
        if !super::orphans::repairing() && self.gov.take_repair_due() {
            if let Err(e) = super::orphans::repair(self) {
                tracing::warn!(error = %e, "cannot repair git changes no entry records");
                self.gov.set_repair_due();
            }
        }
    }

    /// Appends the `policy_change_refused` entries that are missing.
    pub fn record_refusals(&self) -> Result<(), AppError> {
        let repo = self.open_repo()?;
        match self.trust(&repo) {
            Ok(t) if !t.refused.is_empty() || !t.resolved.is_empty() => {
                self.transact(|_| Ok((Ok(()), Vec::new())))
            }
            _ => Ok(()),
        }
    }

    /// The `policy_change_refused` entries for refused commits on `main`
    /// that the chain does not record yet.
    fn unrecorded_refusals(&self, tx: &Tx<'_>) -> Result<Vec<NewEntry>, AppError> {
        let tip = tx.main_on_disk()?;
        let Ok(trust) = self.trust_at(tx.repo(), tip) else {
            return Ok(Vec::new());
        };
        let all: Vec<&Refusal> = trust.resolved.iter().chain(&trust.refused).collect();
        let mut known = self
            .refusals_recorded
            .lock()
            .map_err(|_| AppError::internal("refusals lock poisoned"))?;
        if all.iter().all(|r| known.contains(&r.commit)) {
            return Ok(Vec::new());
        }
        let filter = crate::store::index::AuditFilter {
            event_type: Some(POLICY_CHANGE_REFUSED.into()),
            recorded_by_gov: true,
            ..Default::default()
        };
        for e in tx.index().query(&filter).map_err(GovError::from)? {
            if let Event::PolicyChangeRefused(r) = &e.entry.entry.event {
                known.insert(r.commit.clone());
            }
        }
        let mut out = Vec::new();
        for r in all {
            if known.insert(r.commit.clone()) {
                out.push(NewEntry::new(
                    self.gov_actor(),
                    Event::PolicyChangeRefused(PolicyChangeRefused {
                        commit: r.commit.clone(),
                        reason: r.reason.clone(),
                        summary: r.summary.clone(),
                        in_force: trust.in_force.to_string(),
                        branch: self.settings.main_branch.clone(),
                    }),
                ));
            }
        }
        Ok(out)
    }

    fn gov_actor(&self) -> crate::domain::audit::Actor {
        match self.gov.role() {
            Role::Watchdog => crate::domain::audit::Actor::watchdog(),
            _ => crate::domain::audit::Actor::server(),
        }
    }

    /// Reads ahead, once a server listens, what the first approval after a
    /// start would otherwise wait for: what `main` reaches over the last
    /// day (see [`crate::store::fork::warm`]). Best effort: an approval
    /// walks for itself whatever is not there.
    pub fn warm_up(&self) {
        let Ok(repo) = self.open_repo() else {
            return;
        };
        let Ok(main) = repo.refname_to_id(&self.settings.main_refname()) else {
            return;
        };
        if let Err(e) = crate::store::fork::warm(&repo, main) {
            tracing::debug!(error = %e, "no warm-up walk of main");
        }
    }

    /// Drops the repository handles this service keeps between requests
    /// once they are as old as they are ever reused (a second; see
    /// [`Reader`] and [`Governance::let_go_of_handles`]) and idle, so that
    /// none holds on to a pack maintenance deleted. The server calls it
    /// between its maintenance passes. Never waits for a lock.
    pub fn let_go_of_old_handles(&self) {
        self.let_go_of_handles(READER_AGE.min(super::governance::BATCH_REPO_AGE));
    }

    /// Drops every idle handle this service keeps, however young: for a
    /// process that sleeps between its uses (the watchdog between passes).
    pub fn let_go_of_idle_handles(&self) {
        self.let_go_of_handles(std::time::Duration::ZERO);
    }

    fn let_go_of_handles(&self, min_age: std::time::Duration) {
        let epoch = self.gov.packs_epoch();
        self.main_reader.let_go(min_age, epoch);
        self.policy_reader.let_go(min_age, epoch);
        self.ahead_reader.let_go(min_age, epoch);
        self.gov.let_go_of_handles(min_age);
    }

    /// The root-of-trust walk for `main`'s current tip (see
    /// [`crate::store::trust`]): which commit is in force and which were
    /// refused. Recomputed only when main moved, from where it was.
    pub fn trust(&self, repo: &Repository) -> Result<TrustState, AppError> {
        let tip = repo.refname_to_id(&self.settings.main_refname()).ok();
        self.trust_at(repo, tip)
    }

    /// [`Service::trust`] for `tip`, `main`'s tip as the caller read it.
    pub fn trust_at(&self, repo: &Repository, tip: Option<Oid>) -> Result<TrustState, AppError> {
        let tip = tip.ok_or_else(|| {
            AppError::NoPolicy(format!("no `{}` branch", self.settings.main_branch))
        })?;
        if let Ok(cached) = self.trust.read() {
            if let Some(t) = cached.as_ref().filter(|t| t.tip == tip) {
                return Ok(t.clone());
            }
        }
        let mut cached = self
            .trust
            .write()
            .map_err(|_| AppError::internal("trust lock poisoned"))?;
        let forge = |merge: Oid| {
            self.gov
                .index()
                .ok()
                .and_then(|i| i.forge_merge_recorded(&merge.to_string()).ok())
                .unwrap_or(false)
        };
        let state = TrustState::compute(repo, tip, cached.as_ref(), &forge)?;
        for r in &state.refused {
            if !cached.as_ref().is_some_and(|c| c.refused.contains(r)) {
                tracing::warn!(commit = %r.commit, reason = %r.reason, "change on main not in force");
            }
        }
        *cached = Some(state.clone());
        Ok(state)
    }

    /// Forgets what is in force, so that the next question walks `main`
    /// again: after a forge merge was recorded, a commit refused a moment
    /// before (main moved before its entry was written) is authorized.
    pub fn forget_in_force(&self) {
        if let Ok(mut t) = self.trust.write() {
            *t = None;
        }
        if let Ok(mut p) = self.policy.write() {
            p.seen = None;
        }
        if let Ok(mut a) = self.agents.write() {
            a.seen = None;
        }
    }

    /// The commit of `main` whose governed files are in force.
    fn in_force(&self, repo: &Repository) -> Option<Oid> {
        self.trust(repo).ok().map(|t| t.in_force)
    }

    /// Reads the index (caught up to the last write of this process).
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, AppError> {
        let index = self.gov.index()?;
        Ok(f(index.conn())?)
    }

    /// The policy set in force and the tip of `main` it is in force at,
    /// read outside any batch through a handle of its own (see
    /// `proposals::submit`, which decides ahead of its batch with them).
    pub fn policy_now(&self) -> Result<(Option<Oid>, Arc<PolicySet>), AppError> {
        self.policy_reader.with(self, |repo| {
            // One read of the tip, which the set is then loaded for.
            let tip = repo.refname_to_id(&self.settings.main_refname()).ok();
            let set = self.policy_at_tip(repo, tip)?;
            Ok((tip, set))
        })
    }

    /// Runs `f` with a repository handle kept open for work done before a
    /// writer's turn (such as a pending proposal's commit): it reads what
    /// is on disk, never a batch's staged objects.
    pub fn read_ahead<T>(
        &self,
        f: impl FnOnce(&Repository) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        self.ahead_reader.with(self, f)
    }

    /// The policy set in force for `main`'s current tip, reloading it when
    /// main moved. A set that fails to load is not loaded: the last good set
    /// stays and the reason is kept for `/status`.
    pub fn policy_at(&self, repo: &Repository) -> Result<Arc<PolicySet>, AppError> {
        let tip = repo.refname_to_id(&self.settings.main_refname()).ok();
        self.policy_at_tip(repo, tip)
    }

    /// [`Service::policy_at`] inside a batch: for `main`'s tip as the
    /// batch read it.
    pub fn policy_in(&self, tx: &Tx<'_>) -> Result<Arc<PolicySet>, AppError> {
        let tip = tx.main_on_disk()?;
        self.policy_at_tip(tx.repo(), tip)
    }

    /// [`Service::policy_at`] for `tip`, `main`'s tip as the caller read it.
    fn policy_at_tip(
        &self,
        repo: &Repository,
        tip: Option<Oid>,
    ) -> Result<Arc<PolicySet>, AppError> {
        {
            let state = self
                .policy
                .read()
                .map_err(|_| AppError::internal("policy lock poisoned"))?;
            if state.seen == tip && tip.is_some() {
                if let Some(set) = &state.set {
                    return Ok(set.clone());
                }
            }
        }
        let mut state = self
            .policy
            .write()
            .map_err(|_| AppError::internal("policy lock poisoned"))?;
        if state.seen != tip || state.set.is_none() {
            let in_force = tip.and_then(|_| self.trust_at(repo, tip).ok().map(|t| t.in_force));
            let tree = in_force.and_then(|t| policies_tree(repo, t));
            match in_force {
                None if tip.is_some() => {
                    state.error = Some(format!("`{}` cannot be read", self.settings.main_branch))
                }
                None => state.error = Some(format!("no `{}` branch", self.settings.main_branch)),
                Some(_) if state.set.is_some() && tree.is_some() && tree == state.tree => {
                    state.error = None;
                }
                Some(oid) => match crate::store::policies::load_commit(repo, oid) {
                    Ok(set) => {
                        state.set = Some(Arc::new(set));
                        state.tree = tree;
                        state.error = None;
                    }
                    Err(e) => {
                        let why = crate::domain::errors::error_chain(&e);
                        tracing::warn!(commit = %oid, error = %why, "policy set not loaded");
                        state.error = Some(format!("commit {oid}: {why}"));
                        // A process that starts on a broken `main` has no
                        // set in memory: the last good set is the newest
                        // one in main's history that loads.
                        if state.set.is_none() {
                            if let Some((set, tree)) = last_good_policy(repo, oid) {
                                state.set = Some(Arc::new(set));
                                state.tree = tree;
                            }
                        }
                    }
                },
            }
            state.seen = tip;
        }
        state
            .set
            .clone()
            .ok_or_else(|| AppError::NoPolicy(state.error.clone().unwrap_or_default()))
    }

    /// How many records of types gov writes itself agents posted to
    /// `/audit` while it still accepted them (until 2026-12-04): each
    /// counts for nothing, and `gov audit verify` names them. For the
    /// server's start-up warning.
    pub fn records_posted_by_agents(&self) -> Result<u64, AppError> {
        let types: Vec<&str> = Event::once_postable_records().collect();
        let index = self.gov.index()?;
        Ok(index.count_by_agents(&types)?)
    }

    /// Brings a checked-out `main` up to the approved changes gov could
    /// not put there before (see `Governance::catch_up_checkout`). For the
    /// server's start.
    pub fn catch_up_checkout(&self) -> Result<super::governance::CaughtUp, AppError> {
        Ok(self.gov.catch_up_checkout()?)
    }

    pub fn policy_status(&self) -> PolicyStatus {
        let mut refused = Vec::new();
        if let Ok(repo) = self.open_repo() {
            let _ = self.policy_at(&repo);
            if let Ok(t) = self.trust(&repo) {
                refused = t.refused;
            }
            if !refused.is_empty() {
                if let Err(e) = self.record_refusals() {
                    tracing::warn!(error = %e, "policy_change_refused not recorded");
                }
            }
        }
        match self.policy.read() {
            Ok(s) => PolicyStatus {
                version: s.set.as_ref().map(|p| p.version().to_string()),
                error: s.error.clone(),
                refused,
            },
            Err(_) => PolicyStatus {
                version: None,
                error: Some("policy lock poisoned".into()),
                refused,
            },
        }
    }

    /// The current policy set without checking main (for listings).
    pub fn current_policy(&self) -> Option<Arc<PolicySet>> {
        self.policy.read().ok().and_then(|s| s.set.clone())
    }

    /// The agents in force: the `agents/*/agent.toml` of `main`'s current
    /// tip, re-read when main moved (and its `agents/` tree changed). The
    /// working tree is never read: an edit there changes nothing until it
    /// reaches main through review. Without a readable `main`, no agent is
    /// in force.
    pub fn agents(&self) -> Arc<AgentsInForce> {
        // Asked on every request: main's tip is read through a handle kept
        // open (opening the repository costs more than the question).
        let tip = self
            .main_reader
            .with(self, |r| {
                Ok(r.refname_to_id(&self.settings.main_refname()).ok())
            })
            .ok()
            .flatten();
        self.agents_at_tip(tip)
    }

    /// The agents in force at `tip`, `main`'s tip as the caller read it
    /// (with the policy set, so that both are of the same commit).
    pub fn agents_at_tip(&self, tip: Option<Oid>) -> Arc<AgentsInForce> {
        if let Ok(state) = self.agents.read() {
            if state.loaded && state.seen == tip && tip.is_some() {
                return state.agents.clone();
            }
        }
        let Ok(repo) = self.open_repo() else {
            return Arc::default();
        };
        let Ok(mut state) = self.agents.write() else {
            return Arc::default();
        };
        if !state.loaded || state.seen != tip {
            let in_force = tip.and_then(|_| self.trust_at(&repo, tip).ok().map(|t| t.in_force));
            let mut tree = in_force.and_then(|t| crate::store::agents::agents_tree(&repo, t));
            match in_force {
                None => state.agents = Arc::default(),
                Some(_) if state.loaded && tree == state.tree => {}
                Some(oid) => match crate::store::agents::agents_at(&repo, oid, &self.settings) {
                    Ok(agents) => {
                        for (id, why) in agents
                            .iter()
                            .filter_map(|(i, a)| Some((i, a.as_ref().err()?)))
                        {
                            tracing::warn!(agent = %id, error = %why, "agent settings on main not valid");
                        }
                        state.agents = Arc::new(agents);
                    }
                    Err(e) => {
                        // Reading the commit failed (not an invalid file):
                        // no agent is in force until main can be read.
                        tracing::warn!(commit = %oid, error = %e, "agents of main not read");
                        state.agents = Arc::default();
                        tree = None;
                    }
                },
            }
            state.tree = tree;
            state.seen = tip;
            state.loaded = true;
        }
        state.agents.clone()
    }

    /// The ids of the agents on main (also those whose `agent.toml` does not
    /// parse), sorted.
    pub fn agent_ids(&self) -> Vec<String> {
        self.agents().keys().cloned().collect()
    }

    /// The agents on main whose `agent.toml` does not parse, with why.
    pub fn agent_errors(&self) -> std::collections::BTreeMap<String, String> {
        self.agents()
            .iter()
            .filter_map(|(id, a)| Some((id.clone(), a.as_ref().err()?.clone())))
            .collect()
    }

    /// An agent's settings in force, if it is on main and its `agent.toml`
    /// there parses.
    pub fn agent_settings(&self, agent_id: &str) -> Option<AgentSettings> {
        match self.agents().get(agent_id) {
            Some(Ok(a)) => Some(a.clone()),
            _ => None,
        }
    }

    /// Why an agent on main is not in force: its `agent.toml` there does not
    /// parse.
    pub fn agent_error(&self, agent_id: &str) -> Option<String> {
        match self.agents().get(agent_id) {
            Some(Err(why)) => Some(why.clone()),
            _ => None,
        }
    }

    /// An agent's caps: its `agent.toml` on main, else `gov.toml`'s
    /// defaults. An agent whose `agent.toml` on main does not parse gets
    /// caps of zero (fail closed: any charge is over the cap).
    pub fn caps(&self, agent_id: &str) -> BudgetSettings {
        match self.agents().get(agent_id) {
            Some(Ok(a)) => a.budget.clone(),
            Some(Err(_)) => BudgetSettings {
                tokens_cap: 0,
                dollars_cap: crate::domain::money::Micros(0),
                ..self.settings.budget.clone()
            },
            None => self.settings.budget.clone(),
        }
    }

    /// The agent's group for Cedar, from main (`default` for agents not in
    /// force).
    pub fn group(&self, agent_id: &str) -> String {
        group_in(&self.agents(), agent_id)
    }
}

/// An agent's group among `agents` (`default` for an agent not in force).
pub fn group_in(agents: &AgentsInForce, agent_id: &str) -> String {
    match agents.get(agent_id) {
        Some(Ok(a)) => a.group.clone(),
        _ => "default".into(),
    }
}

/// `settings` with the enforcement settings of the `gov.toml` in force
/// when the working tree's differ from them (an edit that has not come
/// into force through review changes nothing). Without a `gov.toml` on
/// main, the working tree's stand.
pub fn enforcement_in_force(
    settings: &Settings,
    repo: &Repository,
    in_force: Oid,
) -> Result<Settings, AppError> {
    use crate::store::trust::{blob_at, enforcement_settings, SETTINGS_FILE};
    let Some(blob) = blob_at(repo, in_force, SETTINGS_FILE) else {
        return Ok(settings.clone());
    };
    let main_text = String::from_utf8_lossy(&blob).into_owned();
    let path = settings.root.join(SETTINGS_FILE);
    let here = std::fs::read_to_string(&path).unwrap_or_default();
    if enforcement_settings(&here) == enforcement_settings(&main_text) {
        return Ok(settings.clone());
    }
    tracing::warn!(
        commit = %in_force,
        "the enforcement settings of gov.toml differ from those in force; using those in force"
    );
    let shown = std::path::PathBuf::from(format!("{SETTINGS_FILE} at {in_force}"));
    settings
        .with_enforcement_of(&shown, &main_text)
        .map_err(|e| AppError::internal(crate::domain::errors::error_chain(&e)))
}

/// How far back in main's first-parent history to look for a policy set
/// that loads, when the tip's does not.
const POLICY_HISTORY_LIMIT: usize = 500;

/// The newest policy set on main's first-parent history, below `broken`,
/// that loads (and the id of its `policies/` tree).
fn last_good_policy(repo: &Repository, broken: Oid) -> Option<(PolicySet, Option<Oid>)> {
    let broken_tree = policies_tree(repo, broken);
    let mut tried = vec![broken_tree];
    let mut commit = repo.find_commit(broken).ok()?;
    for _ in 0..POLICY_HISTORY_LIMIT {
        commit = commit.parent(0).ok()?;
        let tree = policies_tree(repo, commit.id());
        if tried.contains(&tree) {
            continue;
        }
        tried.push(tree);
        if let Ok(set) = crate::store::policies::load_commit(repo, commit.id()) {
            return Some((set, tree));
        }
    }
    None
}

/// The id of the `policies/` tree at a commit.
fn policies_tree(repo: &Repository, commit: Oid) -> Option<Oid> {
    crate::store::git::subtree_id(repo, commit, "policies")
}

/// 32 random bytes from the operating system.
pub fn random_bytes() -> [u8; 32] {
    use ssh_key::rand_core::{OsRng, RngCore};
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    b
}

/// A random UUID v4.
pub fn new_uuid() -> String {
    let b = random_bytes();
    let mut first = [0u8; 16];
    first.copy_from_slice(&b[..16]);
    crate::domain::ids::uuid_v4(first)
}

/// A UUID v7 made at `now`: time-ordered, so that the index's rows keyed
/// by it (a proposal's, its audit entries') are appended, not written on
/// a page at random.
pub fn new_time_ordered_uuid(now: chrono::DateTime<chrono::Utc>) -> String {
    let b = random_bytes();
    let mut random = [0u8; 10];
    random.copy_from_slice(&b[..10]);
    let ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    crate::domain::ids::uuid_v7(ms, random)
}

/// A repository handle kept open between requests (opening one costs more
/// than the question it answers), opened afresh once it is [`READER_AGE`]
/// old. libgit2 adds the packs it finds to a handle's list and drops none,
/// so a handle kept for good held every pack that maintenance merged and
/// deleted while the server ran: its descriptor, its mapped index and its
/// disk space, a few more with every round of writes.
#[derive(Default)]
struct Reader(std::sync::Mutex<Option<(Repository, Opened)>>);

/// See [`Reader`].
const READER_AGE: std::time::Duration = std::time::Duration::from_secs(1);

impl Reader {
    /// Drops the kept handle if it is at least `min_age` old or holds
    /// packs a pass deleted since (see [`Governance::packs_epoch`]), and is
    /// not in use (closed once the lock is let go of).
    fn let_go(&self, min_age: std::time::Duration, epoch: u64) {
        let old = self
            .0
            .try_lock()
            .ok()
            .and_then(|mut kept| kept.take_if(|(_, opened)| !opened.usable(min_age, epoch)));
        drop(old);
    }

    /// Runs `f` with the kept handle, opened first if there is none or it
    /// is too old.
    fn with<T>(
        &self,
        svc: &Service,
        f: impl FnOnce(&Repository) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        let mut kept = self
            .0
            .lock()
            .map_err(|_| AppError::internal("repository reader lock poisoned"))?;
        let epoch = svc.gov.packs_epoch();
        let fresh = match kept.take() {
            Some((repo, opened)) if opened.usable(READER_AGE, epoch) => (repo, opened),
            stale => {
                drop(stale);
                (svc.open_repo()?, Opened::now(epoch))
            }
        };
        let (repo, _) = kept.insert(fresh);
        f(repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_look_like_v4() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(new_uuid(), u);
    }
}
