//! The one write path: every state change (server, watchdog, CLI) is an
//! audit entry appended through [`Governance`], and the index is updated
//! before the chain lock is released.
//!
//! Two locks serialise writers: a mutex inside the process and the chain's
//! file lock across processes. Under both, the index is caught up to the
//! chain's tip, so a [`Governance::transact`] closure reads current state,
//! decides, and returns the entries that record its decision.

use std::sync::{Mutex, MutexGuard};

use git2::Repository;

use crate::config::Settings;
use crate::domain::audit::{AuditEntry, NewEntry};
use crate::store::audit::{self as chain, ChainEntry};
use crate::store::git::StoreError;
use crate::store::index::Index;
use crate::store::keys::{KeyError, Role, SigningKey};
use crate::store::lock::ChainLock;

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
}

struct Writer {
    repo: Repository,
    index: Index,
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
    reader: Mutex<Index>,
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
    tip: Option<&'a ChainEntry>,
}

impl<'a> Tx<'a> {
    /// The repository, to read `main` or write proposal branches.
    pub fn repo(&self) -> &'a Repository {
        self.repo
    }
    /// The index, caught up to the chain's tip.
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
    /// The current last entry of the chain.
    pub fn tip(&self) -> Option<&'a AuditEntry> {
        self.tip.map(|t| &t.entry)
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
        let mut index = Index::open(&settings.index_path())?;
        index.catch_up(&repo, &settings.audit_refname())?;
        let reader = Index::open(&settings.index_path())?;
        Ok(Governance {
            settings: settings.clone(),
            audit_key,
            audit_role,
            signer_key,
            signer,
            writer: Mutex::new(Writer { repo, index }),
            reader: Mutex::new(reader),
        })
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

    /// Runs `f` holding the chain's lock with the index caught up to the
    /// tip; appends the entries it returns and applies them to the index
    /// before the lock is released. If `f` fails, nothing is appended.
    pub fn transact<T, E: From<GovError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<(T, Vec<NewEntry>), E>,
    ) -> Result<(T, Vec<AuditEntry>), E> {
        let mut guard = self.writer.lock().map_err(|_| GovError::Poisoned)?;
        let w = &mut *guard;
        let refname = self.settings.audit_refname();
        let lock = ChainLock::acquire(w.repo.path()).map_err(GovError::from)?;
        w.index
            .catch_up(&w.repo, &refname)
            .map_err(GovError::from)?;
        let tip = chain::tip(&w.repo, &refname).map_err(GovError::from)?;
        let mut tx = Tx {
            repo: &w.repo,
            index: &w.index,
            settings: &self.settings,
            signer_key: self.signer_key.as_ref().unwrap_or(&self.audit_key),
            signer: self.signer,
            tip: tip.as_ref(),
        };
        let (value, entries) = f(&mut tx)?;
        let written = chain::append(
            &lock,
            &w.repo,
            &refname,
            &self.audit_key,
            self.audit_role,
            entries,
        )
        .map_err(GovError::from)?;
        w.index
            .apply_written(&w.repo, &refname, &written)
            .map_err(GovError::from)?;
        drop(lock);
        for e in &written {
            tracing::debug!(
                seq = e.entry.seq,
                event = e.entry.entry.event_type(),
                "appended"
            );
        }
        Ok((value, written.into_iter().map(|w| w.entry).collect()))
    }

    /// A read connection to the index (WAL: readers never wait for writers).
    pub fn index(&self) -> Result<MutexGuard<'_, Index>, GovError> {
        self.reader.lock().map_err(|_| GovError::Poisoned)
    }
}

/// Rebuilds the index from the chain, holding the chain lock so no writer
/// appends meanwhile. Needs no key. Returns the number of entries indexed.
pub fn reindex(settings: &Settings) -> Result<usize, GovError> {
    let repo = open_repo(settings)?;
    let _lock = ChainLock::acquire(repo.path())?;
    let mut index = Index::open(&settings.index_path())?;
    Ok(index.rebuild(&repo, &settings.audit_refname())?)
}

/// Opens the index caught up to the chain, for reading. Needs no key.
pub fn open_index(settings: &Settings) -> Result<(Repository, Index), GovError> {
    let repo = open_repo(settings)?;
    let mut index = Index::open(&settings.index_path())?;
    index.catch_up(&repo, &settings.audit_refname())?;
    Ok((repo, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn governance_is_send_and_sync() {
        assert_send_sync::<Governance>();
    }
}
