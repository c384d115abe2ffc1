//! A batch's new objects, put straight into the memory backend of its
//! repository handle.
//!
//! Writing an object through libgit2 (`git_odb_write`, and the tree
//! builder and blob calls that use it) first asks every backend whether
//! the object exists, and when none has it, which is always the case for
//! a new object, rescans the pack folder and asks again: a `stat` of the
//! loose path, a `utimes`, a listing of `objects/pack` and a look-up in
//! every pack's index, for each object. In a batch that was 28% of a
//! writer's time under the chain lock (a pending proposal writes eight
//! objects). A batch's objects only ever go to its memory backend and
//! from there into the batch's pack, and a copy of an object that also
//! exists on disk costs nothing but a few bytes, so gov writes them into
//! the memory backend itself: the id hashed here, the backend's own
//! `write` called, nothing else asked.
//!
//! git2 offers no way to add a backend it did not make or to call one, so
//! this is the crate's one use of libgit2-sys: the handle's object
//! database is reached through a reference's owner, and its memory
//! backend is made and added here.
#![allow(
    unsafe_code,
    reason = "git2 wraps neither adding a backend of our own nor writing to one; \
              the calls are libgit2's documented C API"
)]

use std::ptr::NonNull;
use std::sync::Mutex;

use git2::{ObjectType, Oid, Repository};
use libgit2_sys as raw;
use sha1::{Digest, Sha1};

use super::git::StoreError;

unsafe extern "C" {
    /// `git_reference_owner` (refs.h), which libgit2-sys does not bind: the
    /// repository a reference was looked up in. The pointer is borrowed.
    fn git_reference_owner(reference: *const raw::git_reference) -> *mut raw::git_repository;
}

/// The memory backend of one repository handle, written to directly.
pub struct MemoryObjects {
    /// A reference of our own to the handle's object database, which owns
    /// the backend: both live as long as this does, whatever happens to
    /// the handle.
    odb: NonNull<raw::git_odb>,
    backend: NonNull<raw::git_odb_backend>,
    /// libgit2's memory backend is not thread-safe; gov writes to it from
    /// the one writer holding the chain lock, and this makes that a rule.
    writing: Mutex<()>,
}

// SAFETY: the object database is reference-counted with atomic counts and
// may be released from any thread. The backend is written to only here,
// under `writing`, and read by libgit2 only through the repository handle
// it belongs to; gov uses that handle and this only from the writer that
// holds the batch (`Governance`'s writer mutex), so a read never runs
// during a write.
unsafe impl Send for MemoryObjects {}
// SAFETY: see `Send`; two writes through `&self` never interleave
// (`writing`).
unsafe impl Sync for MemoryObjects {}

impl std::fmt::Debug for MemoryObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryObjects")
    }
}

impl MemoryObjects {
    /// Adds a memory backend to `repo`'s object database, ahead of its
    /// loose and pack backends (priority 1000): objects written through it
    /// are read back from memory.
    pub fn attach(repo: &Repository) -> Result<MemoryObjects, StoreError> {
        // HEAD always exists (a symbolic ref, even on an unborn branch).
        let head = repo.find_reference("HEAD")?;
        let mut odb: *mut raw::git_odb = std::ptr::null_mut();
        let mut backend: *mut raw::git_odb_backend = std::ptr::null_mut();
        // SAFETY: `head.raw()` is a live reference of `repo`; its owner is
        // `repo`'s own `git_repository`, borrowed for the next call only.
        // `git_repository_odb` hands out a new reference to the database.
        check(unsafe { raw::git_repository_odb(&mut odb, git_reference_owner(head.raw())) })?;
        let odb = NonNull::new(odb).ok_or_else(|| git2::Error::from_str("no object database"))?;
        // Dropped on any failure below, which releases that reference.
        let mut memory = MemoryObjects {
            odb,
            // Set below; never used before.
            backend: NonNull::dangling(),
            writing: Mutex::new(()),
        };
        // SAFETY: `git_mempack_new` makes a backend or fails; on success
        // `git_odb_add_backend` takes it over (the database frees it). If
        // adding fails the backend is ours to free, through its own `free`.
        unsafe {
            check(raw::git_mempack_new(&mut backend))?;
            let made =
                NonNull::new(backend).ok_or_else(|| git2::Error::from_str("no memory backend"))?;
            if let Err(e) = check(raw::git_odb_add_backend(odb.as_ptr(), backend, 1000)) {
                if let Some(free) = (*backend).free {
                    free(backend);
                }
                return Err(e);
            }
            memory.backend = made;
        }
        Ok(memory)
    }

    /// Writes an object to memory without asking any other backend first;
    /// returns its id.
    pub fn write(&self, kind: ObjectType, data: &[u8]) -> Result<Oid, StoreError> {
        let raw_kind = match kind {
            ObjectType::Blob => raw::GIT_OBJECT_BLOB,
            ObjectType::Tree => raw::GIT_OBJECT_TREE,
            ObjectType::Commit => raw::GIT_OBJECT_COMMIT,
            ObjectType::Tag => raw::GIT_OBJECT_TAG,
            ObjectType::Any => {
                return Err(git2::Error::from_str("an object must have a type").into());
            }
        };
        let oid = object_id(kind, data)?;
        let mut id = raw::git_oid {
            id: [0; raw::GIT_OID_MAX_SIZE],
        };
        id.id[..20].copy_from_slice(oid.as_bytes());
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let backend = self.backend.as_ptr();
        // SAFETY: the backend lives as long as our reference to its
        // database; libgit2's memory backend always has `write`, which
        // copies `data` (of `data.len()` bytes) and keeps nothing of ours.
        unsafe {
            let write = (*backend)
                .write
                .ok_or_else(|| git2::Error::from_str("the memory backend cannot write"))?;
            check(write(
                backend,
                &id,
                data.as_ptr().cast(),
                data.len(),
                raw_kind,
            ))?;
        }
        Ok(oid)
    }
}

/// The id git gives an object of `kind` holding `data`, hashed here:
/// libgit2's hash detects SHA-1 collision attacks, which costs twice as
/// much, and these are gov's own objects (a test compares ids with
/// libgit2's).
pub fn object_id(kind: ObjectType, data: &[u8]) -> Result<Oid, StoreError> {
    let mut hash = Sha1::new();
    hash.update(format!("{} {}\0", kind.str(), data.len()).as_bytes());
    hash.update(data);
    Ok(Oid::from_bytes(&hash.finalize())?)
}

impl Drop for MemoryObjects {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `attach`, released once.
        unsafe { raw::git_odb_free(self.odb.as_ptr()) }
    }
}

/// libgit2's return code as a `Result`, with its last error.
fn check(code: std::ffi::c_int) -> Result<(), StoreError> {
    match code {
        0.. => Ok(()),
        _ => Err(git2::Error::last_error(code).into()),
    }
}
