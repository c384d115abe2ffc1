//! Which entries may change state: only signed ones, by a key in the role
//! the entry's kind needs.
//!
//! The index projects an entry only after [`EntryCheck::check`] accepted
//! it: a good signature by a key of `policies/allowed_signers` as `main`'s
//! tip has it (the working file when `main` has none), in the server or
//! watchdog role (the approver role for an `audit_recovered` entry, which
//! records the operator's own decision), a message that parses, a sequence
//! number one above its parent's and the empty tree. Anything else is
//! tampering ([`StoreError::Tampered`]): the caller stops writing and keeps
//! what it has as evidence.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use crate::store::audit::{read_entry, ChainEntry};
use crate::store::git::{StoreError, EMPTY_TREE};
use crate::store::keys::{AllowedSigners, Role, SignatureCheck, SignersError};

/// The event type of the entry `gov audit recover` appends, signed by the
/// operator's approver key.
pub const RECOVERY_EVENT: &str = "audit_recovered";

/// The roles that may sign an entry of `event_type`.
pub fn signer_roles(event_type: &str) -> &'static [Role] {
    if event_type == RECOVERY_EVENT {
        &[Role::Approver]
    } else {
        &[Role::Server, Role::Watchdog]
    }
}

/// Where the allowed signers come from: `main`'s tip, else the working file.
#[derive(Debug, Clone)]
pub struct SignersSource {
    pub main_ref: String,
    pub file: PathBuf,
}

/// Why the allowed signers cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadSignersError {
    #[error(transparent)]
    Signers(#[from] SignersError),
    #[error("no allowed signers: `policies/allowed_signers` is neither on `{main_ref}` nor in the working tree")]
    Missing { main_ref: String },
}

impl SignersSource {
    /// The allowed signers as `main`'s tip has them, else the working file.
    pub fn load(&self, repo: &Repository) -> Result<AllowedSigners, LoadSignersError> {
        let on_main = repo
            .refname_to_id(&self.main_ref)
            .ok()
            .and_then(|id| repo.find_commit(id).ok())
            .and_then(|c| c.tree().ok())
            .and_then(|t| t.get_path(Path::new("policies/allowed_signers")).ok())
            .and_then(|e| repo.find_blob(e.id()).ok())
            .map(|b| String::from_utf8_lossy(b.content()).into_owned());
        match on_main {
            Some(text) => Ok(AllowedSigners::parse(&self.file, &text)?),
            None if self.file.is_file() => Ok(AllowedSigners::load(&self.file)?),
            None => Err(LoadSignersError::Missing {
                main_ref: self.main_ref.clone(),
            }),
        }
    }

    fn main_tip(&self, repo: &Repository) -> Option<Oid> {
        repo.refname_to_id(&self.main_ref).ok()
    }
}

/// Checks one commit's signature against the allowed signers.
pub fn signature_status(
    repo: &Repository,
    signers: &AllowedSigners,
    commit: Oid,
) -> SignatureCheck {
    match repo.extract_signature(&commit, Some("gpgsig")) {
        Ok((sig, data)) => match sig.as_str() {
            Some(s) => signers.check(s, &data),
            None => SignatureCheck::Bad("signature is not text".into()),
        },
        Err(e) if e.code() == git2::ErrorCode::NotFound => SignatureCheck::Missing,
        Err(e) => SignatureCheck::Bad(format!("cannot read the signature: {e}")),
    }
}

/// [`signature_status`] of each of `commits`, in their order, checked on
/// every core: each thread opens its own handle on the repository at
/// `git_dir` (a handle is not shared between threads) and takes a
/// contiguous share of the commits.
pub fn signature_statuses(
    git_dir: &Path,
    signers: &AllowedSigners,
    commits: &[Oid],
) -> Result<Vec<SignatureCheck>, StoreError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 16);
    let share = commits.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = commits
            .chunks(share)
            .map(|part| {
                s.spawn(move || -> Result<Vec<SignatureCheck>, StoreError> {
                    let repo = Repository::open(git_dir)?;
                    Ok(part
                        .iter()
                        .map(|oid| signature_status(&repo, signers, *oid))
                        .collect())
                })
            })
            .collect();
        let mut out = Vec::with_capacity(commits.len());
        for h in handles {
            let part = h.join().map_err(|_| {
                StoreError::io(
                    "check signatures in",
                    git_dir,
                    std::io::Error::other("a checking thread panicked"),
                )
            })??;
            out.extend(part);
        }
        Ok(out)
    })
}

/// The role a signature proves for an entry that needs one of `roles`:
/// the committer's `claimed` role when the signing key holds it, else the
/// first of `roles` the key holds; `None` when the signature is not good.
pub fn proved_signer(
    check: &SignatureCheck,
    roles: &[Role],
    claimed: Option<Role>,
) -> Option<Role> {
    let SignatureCheck::Good { roles: has, .. } = check else {
        return None;
    };
    match claimed {
        Some(r) if has.contains(&r) && roles.contains(&r) => Some(r),
        _ => has.iter().copied().find(|r| roles.contains(r)),
    }
}

/// Why a signature does not make a valid signer of `roles`; `None` if it
/// does.
pub fn signature_problem(check: &SignatureCheck, roles: &[Role]) -> Option<String> {
    match check {
        SignatureCheck::Good {
            principal,
            roles: has,
            ..
        } => {
            if has.iter().any(|r| roles.contains(r)) {
                None
            } else {
                let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                Some(format!(
                    "signed by `{principal}`, which has no {} role",
                    wanted.join(" or ")
                ))
            }
        }
        SignatureCheck::Missing => Some("not signed".into()),
        SignatureCheck::Bad(why) => Some(format!("bad signature: {why}")),
    }
}

/// Checks chain entries before they are projected. Keeps the allowed
/// signers of the `main` tip it last saw, reloading them when `main` moves.
#[derive(Debug)]
pub struct EntryCheck {
    source: SignersSource,
    cached: Option<(Option<Oid>, AllowedSigners)>,
}

impl EntryCheck {
    pub fn new(source: SignersSource) -> Self {
        EntryCheck {
            source,
            cached: None,
        }
    }

    fn signers(&mut self, repo: &Repository) -> Result<&AllowedSigners, StoreError> {
        let tip = self.source.main_tip(repo);
        if self.cached.as_ref().is_none_or(|(seen, _)| *seen != tip) {
            // Fail closed: without signers nothing can be checked, so
            // nothing is projected.
            let signers = self.source.load(repo).map_err(|e| StoreError::BadEntry {
                commit: "-".into(),
                reason: format!("cannot check signatures: {e}"),
            })?;
            self.cached = Some((tip, signers));
        }
        match &self.cached {
            Some((_, s)) => Ok(s),
            None => Err(StoreError::BadEntry {
                commit: "-".into(),
                reason: "cannot check signatures".into(),
            }),
        }
    }

    /// Reads the entry of commit `oid`, which must follow entry
    /// `after` (its sequence number and commit; `None` for the first), and
    /// checks it. Its signer is the role its signature proves.
    pub fn check(
        &mut self,
        repo: &Repository,
        oid: Oid,
        after: Option<(u64, Oid)>,
    ) -> Result<ChainEntry, StoreError> {
        let commit = repo.find_commit(oid)?;
        let tampered = |why: String| {
            StoreError::Tampered(format!("commit {}: {why}", short(&oid.to_string())))
        };
        let mut entry = read_entry(&commit).map_err(|e| tampered(e.to_string()))?;
        let seq = entry.entry.seq;
        let tampered = |why: String| {
            StoreError::Tampered(format!(
                "entry #{seq} (commit {}): {why}",
                short(&oid.to_string())
            ))
        };
        let expected_parent = after.map(|(_, c)| c);
        let parents: Vec<Oid> = commit.parent_ids().collect();
        if parents != expected_parent.into_iter().collect::<Vec<_>>() {
            return Err(tampered("it does not follow the previous entry".into()));
        }
        if seq != after.map_or(1, |(s, _)| s + 1) {
            return Err(tampered(format!(
                "its sequence number does not follow #{}",
                after.map_or(0, |(s, _)| s)
            )));
        }
        if commit.tree_id().to_string() != EMPTY_TREE {
            return Err(tampered("the commit carries files".into()));
        }
        let roles = signer_roles(entry.entry.entry.event_type());
        let check = signature_status(repo, self.signers(repo)?, oid);
        if let Some(why) = signature_problem(&check, roles) {
            return Err(tampered(why));
        }
        if matches!(check, SignatureCheck::Good { .. }) {
            entry.signer = proved_signer(&check, roles, entry.signer);
        }
        Ok(entry)
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
