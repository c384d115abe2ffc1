//! Packs written by gov itself, in Git's own format (pack version 2, index
//! version 2), so stock `git` and libgit2 read them like any other.
//!
//! A batch's pack is a handful of small objects that nothing refers to by
//! delta; libgit2's pack builder writes one by sorting, re-reading and
//! indexing what it just wrote (its indexer inflates and hashes every
//! object again). Writing the pack directly does each step once: every
//! object is deflated once, the pack's checksum is computed as it is
//! written, and the index is built from what was written.
//!
//! Background maintenance merges small packs into bigger ones. When the
//! packs hold no deltas (every pack a batch or a background pass wrote),
//! an entry is copied byte for byte, checked against the CRC-32 its index
//! gives: no object is inflated or deflated again. The merged pack's
//! index is written from the old packs' indexes, read side by side
//! ([`crate::store::pack_index`]), not from a list of what was copied.
//!
//! A pack reaches its final name only once it and its index are flushed,
//! the pack first: a reader never sees an index without its pack.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository};
use sha1::{Digest, Sha1};

use crate::store::git::{sync_all_at_once, StoreError};
use crate::store::pack_index::{column_buffer, Column, IndexFile, IndexWriter, Walk};

/// How a pack entry's data is compressed: by libdeflate (whole buffers,
/// no stream to reset between objects), at its fastest level (as `git`
/// writes with `core.compression 1`) for commits and blobs, and stored
/// without compression for trees. A batch's objects are deflated while
/// the chain lock is held (on the encoding thread as they are written,
/// or by the flush: see [`Content`]). zlib (through flate2) took 2-3
/// times as long per object, most of it resetting its stream for each
/// small one. A tree is mostly object ids, which no level shrinks: its
/// entry came out larger compressed than stored, and an approval
/// rewrites a month's folder of up to 256 of them. `gov maintain` by
/// hand repacks everything with libgit2's default level and a delta
/// search.
pub(crate) struct Deflate {
    fast: libdeflater::Compressor,
    stored: libdeflater::Compressor,
}

impl Deflate {
    pub(crate) fn new() -> Deflate {
        // Both levels are in libdeflate's range (0-12), so neither fails.
        let level = |n| libdeflater::CompressionLvl::new(n).unwrap_or_default();
        Deflate {
            fast: libdeflater::Compressor::new(level(1)),
            stored: libdeflater::Compressor::new(level(0)),
        }
    }

    fn for_kind(&mut self, kind: ObjectType) -> &mut libdeflater::Compressor {
        match kind {
            ObjectType::Tree => &mut self.stored,
            _ => &mut self.fast,
        }
    }
}

/// A pair of compressors lent to a [`PackWriter`] out of one kept for the
/// process, and given back when the writer is dropped: a batch's flush
/// encodes the few objects the encoding thread has not reached yet, and
/// making a pair for it each time mapped and unmapped their tables (a
/// system call, page faults and, to unmap, an interrupt to the other
/// cores) for one or two objects.
struct LentDeflate(Option<Deflate>);

static SPARE_DEFLATE: std::sync::Mutex<Option<Deflate>> = std::sync::Mutex::new(None);

impl LentDeflate {
    fn lend() -> LentDeflate {
        let spare = SPARE_DEFLATE.lock().ok().and_then(|mut s| s.take());
        LentDeflate(Some(spare.unwrap_or_else(Deflate::new)))
    }

    fn get(&mut self) -> &mut Deflate {
        self.0.get_or_insert_with(Deflate::new)
    }
}

impl Drop for LentDeflate {
    fn drop(&mut self) {
        if let (Some(d), Ok(mut spare)) = (self.0.take(), SPARE_DEFLATE.lock()) {
            spare.get_or_insert(d);
        }
    }
}

/// The number of Git's object types in a pack entry's header.
fn type_code(kind: ObjectType) -> Option<u8> {
    match kind {
        ObjectType::Commit => Some(1),
        ObjectType::Tree => Some(2),
        ObjectType::Blob => Some(3),
        ObjectType::Tag => Some(4),
        _ => None,
    }
}

/// A pack entry's header: its type and the inflated size, seven bits at a
/// time after the first four.
fn entry_header(code: u8, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    let mut size = size as u64;
    let mut byte = (code << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size > 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
    out
}

/// Encodes an object as a pack entry into `entry` (emptied first): its
/// header, then its content deflated. Returns the entry's CRC-32.
fn encode_entry(
    deflate: &mut Deflate,
    oid: Oid,
    kind: ObjectType,
    data: &[u8],
    entry: &mut Vec<u8>,
) -> std::io::Result<u32> {
    let code = type_code(kind).ok_or_else(|| {
        std::io::Error::other(format!("object {oid} has no type a pack can hold"))
    })?;
    entry.clear();
    entry.extend_from_slice(&entry_header(code, data.len()));
    let start = entry.len();
    let compressor = deflate.for_kind(kind);
    entry.resize(start + compressor.zlib_compress_bound(data.len()), 0);
    let len = compressor
        .zlib_compress(data, &mut entry[start..])
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    entry.truncate(start + len);
    Ok(crc32fast::hash(entry))
}

/// An object a batch wrote, as the batch's flush packs it: its type and
/// content, and its pack entry once encoded.
///
/// The flush holds the chain lock, and deflating the batch's objects was
/// nearly half of its work. So a writer's objects are handed, once its
/// turn is over, to a thread of this process that encodes objects ahead
/// ([`Content::encode_ahead`]); the flush takes the entries it finds
/// done and encodes the others itself (whichever starts first encodes,
/// the other waits for it or finds it done).
pub struct Content {
    kind: ObjectType,
    data: Vec<u8>,
    /// The CRC-32 and bytes of the pack entry, once encoded.
    entry: std::sync::OnceLock<Result<(u32, Vec<u8>), String>>,
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Content")
            .field("kind", &self.kind)
            .field("bytes", &self.data.len())
            .field("encoded", &self.entry.get().is_some())
            .finish()
    }
}

impl Content {
    pub fn new(kind: ObjectType, data: Vec<u8>) -> Content {
        Content {
            kind,
            data,
            entry: std::sync::OnceLock::new(),
        }
    }

    /// The object's type.
    pub fn kind(&self) -> ObjectType {
        self.kind
    }

    /// The object's content.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The object's pack entry and its CRC-32, encoded now with `deflate`
    /// unless it was encoded already.
    fn encoded(&self, oid: Oid, deflate: &mut Deflate) -> std::io::Result<&(u32, Vec<u8>)> {
        self.entry
            .get_or_init(|| {
                let mut entry = Vec::new();
                encode_entry(deflate, oid, self.kind, &self.data, &mut entry)
                    .map(|crc| (crc, entry))
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| std::io::Error::other(e.clone()))
    }

    /// Hands objects to this process's encoding thread (started on first
    /// use); without one, the flush encodes them. The objects of several
    /// writers' turns are handed over at once: one wake-up of the thread
    /// per pass of the combining writer (`app::governance`), not one per
    /// turn or per object (each was a futex call and two context switches
    /// on the writers' serial path).
    pub fn encode_ahead(jobs: Vec<(Oid, std::sync::Arc<Content>)>) {
        type Jobs = Vec<(Oid, std::sync::Arc<Content>)>;
        static ENCODER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Jobs>>> =
            std::sync::OnceLock::new();
        if jobs.is_empty() {
            return;
        }
        let encoder = ENCODER.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Jobs>();
            std::thread::Builder::new()
                .name("gov-pack-encode".into())
                .spawn(move || {
                    let mut deflate = Deflate::new();
                    for jobs in rx {
                        for (oid, content) in jobs {
                            // An error is kept in the content: the flush
                            // reports it.
                            let _ = content.encoded(oid, &mut deflate);
                        }
                    }
                })
                .ok()
                .map(|_| tx)
        });
        if let Some(tx) = encoder {
            let _ = tx.send(jobs);
        }
    }
}

/// One object as written: where it starts in the pack and the CRC-32 of
/// its entry (header and compressed data).
struct Written {
    oid: Oid,
    offset: u64,
    crc: u32,
}

/// A pack being written into a temporary file in the pack folder.
pub struct PackWriter {
    dir: PathBuf,
    file: BufWriter<tempfile::NamedTempFile>,
    hash: Sha1,
    offset: u64,
    expected: u32,
    added: u32,
    /// The objects added, for the index (a merge writes its index from
    /// the old packs' indexes instead: see [`merge_raw`]).
    written: Vec<Written>,
    /// Lent on first use: a merge copies entries and deflates nothing.
    deflate: Option<LentDeflate>,
    scratch: Vec<u8>,
    /// A merge's pack is sent to the disk as it is written ([`Trickle`]).
    trickle: Option<Trickle>,
}

/// Where a merge's pack has been sent to the disk: every [`TRICKLE_BYTES`]
/// written, the writes of the last stretch are started and those of the
/// one before waited for (`sync_file_range`). A merge writes up to the
/// whole repository; left to the final flush, that flush wrote it in one
/// burst, and the batches flushing meanwhile waited behind it.
#[derive(Default)]
struct Trickle {
    /// Writes started up to here.
    started: u64,
    /// Writes waited for up to here.
    done: u64,
    /// The pack is written at most this fast, if paced: since when, and
    /// bytes a second ([`merge_raw`]).
    pace: Option<(std::time::Instant, u64)>,
}

/// See [`Trickle`]. Short stretches: the server's passes merge a few
/// hundred KiB at a time, many times a second, and a batch that flushes
/// while a pass does waits for what the pass has not sent out yet; with
/// stretches of 1 MiB such a merge was all left to its final flush, and
/// submissions' p99 was 1-2 ms higher on a new file system
/// (docs/BENCHMARKS.md, the thirty-seventh round).
const TRICKLE_BYTES: u64 = 64 << 10;

/// Starts the writes of `len` bytes of `file` from `from` to the disk;
/// with `wait`, waits for them (and those begun before) to end. Not a
/// flush: nothing is promised durable (the pack's final flush does that).
#[allow(
    unsafe_code,
    reason = "sync_file_range has no safe wrapper; it only starts or waits for the writes of the file's own pages"
)]
fn write_out(file: &File, from: u64, len: u64, wait: bool) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let flags = if wait {
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER
        } else {
            libc::SYNC_FILE_RANGE_WRITE
        };
        let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(len)) else {
            return Ok(());
        };
        // SAFETY: the descriptor is the open file's own, borrowed for the
        // call; sync_file_range reads no memory of ours.
        if unsafe { libc::sync_file_range(file.as_raw_fd(), from, len, flags) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, wait);
    Ok(())
}

fn io<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> StoreError + 'p {
    move |e| StoreError::io(action, path, e)
}

impl PackWriter {
    /// Starts a pack of exactly `count` objects in `dir`.
    pub fn create(dir: &Path, count: u32) -> Result<PackWriter, StoreError> {
        let mut w = Self::create_with_buffer(dir, count, 64 * 1024)?;
        w.written.reserve_exact(count as usize);
        Ok(w)
    }

    /// [`PackWriter::create`], writing through a buffer of `buffer` bytes.
    fn create_with_buffer(dir: &Path, count: u32, buffer: usize) -> Result<PackWriter, StoreError> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let tmp = temporary_file(dir, "tmp_gov_pack_").map_err(io("create a pack in", dir))?;
        let mut w = PackWriter {
            dir: dir.to_path_buf(),
            file: BufWriter::with_capacity(buffer, tmp),
            hash: Sha1::new(),
            offset: 0,
            expected: count,
            added: 0,
            written: Vec::new(),
            deflate: None,
            scratch: Vec::new(),
            trickle: None,
        };
        let mut header = Vec::with_capacity(12);
        header.extend_from_slice(b"PACK");
        header.extend_from_slice(&2u32.to_be_bytes());
        header.extend_from_slice(&count.to_be_bytes());
        w.put(&header)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.hash.update(bytes);
        self.offset += bytes.len() as u64;
        self.file
            .write_all(bytes)
            .map_err(|e| StoreError::io("write a pack in", &self.dir, e))?;
        if self
            .trickle
            .as_ref()
            .is_some_and(|t| self.offset - t.started >= TRICKLE_BYTES)
        {
            self.trickle_out()?;
        }
        Ok(())
    }

    /// Starts the writes of what was written since the last call and waits
    /// for those of the stretch before ([`Trickle`]). Only a help: where
    /// the file system refuses, the pack is written on without it, and its
    /// final flush makes it durable all the same.
    fn trickle_out(&mut self) -> Result<(), StoreError> {
        self.file
            .flush()
            .map_err(|e| StoreError::io("write a pack in", &self.dir, e))?;
        let Some(t) = self.trickle.as_mut() else {
            return Ok(());
        };
        let file = self.file.get_ref().as_file();
        let sent = write_out(file, t.done, t.started - t.done, true)
            .and_then(|()| write_out(file, t.started, self.offset - t.started, false));
        match sent {
            Ok(()) => {
                (t.done, t.started) = (t.started, self.offset);
                if let Some((since, rate)) = t.pace {
                    let due =
                        std::time::Duration::from_secs_f64(t.done as f64 / rate.max(1) as f64);
                    if let Some(ahead) = due.checked_sub(since.elapsed()) {
                        std::thread::sleep(ahead);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "a merged pack is written without sending it out as it goes");
                self.trickle = None;
            }
        }
        Ok(())
    }

    fn compressor(&mut self) -> &mut Deflate {
        self.deflate.get_or_insert_with(LentDeflate::lend).get()
    }

    /// Adds an object, deflating its content.
    pub fn add_object(
        &mut self,
        oid: Oid,
        kind: ObjectType,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let mut entry = std::mem::take(&mut self.scratch);
        let crc = encode_entry(self.compressor(), oid, kind, data, &mut entry)
            .map_err(|e| StoreError::io("compress an object for", &self.dir, e))?;
        let added = self.add_entry(oid, crc, &entry);
        self.scratch = entry;
        added
    }

    /// Adds a batch's object: its entry as [`Content::encode_ahead`]
    /// encoded it, else encoded now.
    fn add_content(&mut self, oid: Oid, content: &Content) -> Result<(), StoreError> {
        let (crc, entry) = content
            .encoded(oid, self.compressor())
            .map_err(|e| StoreError::io("compress an object for", &self.dir, e))?;
        self.add_entry(oid, *crc, entry)
    }

    /// Adds an entry already encoded (header and compressed data) whose
    /// CRC-32 is `crc`.
    fn add_entry(&mut self, oid: Oid, crc: u32, entry: &[u8]) -> Result<(), StoreError> {
        self.written.push(Written {
            oid,
            offset: self.offset,
            crc,
        });
        self.add_unlisted(entry)
    }

    /// Adds an entry without keeping it for the index.
    fn add_unlisted(&mut self, entry: &[u8]) -> Result<(), StoreError> {
        if self.added >= self.expected {
            return Err(git2::Error::from_str("more objects than the pack was started for").into());
        }
        self.added += 1;
        self.put(entry)
    }

    /// Ends the pack: its checksum, its index, both flushed (with
    /// `also_flush`, at the same time), then both renamed to their final
    /// names (the pack first) and the folder flushed. Returns the pack's
    /// path.
    pub fn finish(mut self, also_flush: &[PathBuf]) -> Result<PathBuf, StoreError> {
        let mut written = std::mem::take(&mut self.written);
        self.finish_with(also_flush, |out, path, checksum| {
            write_listed(&mut written, out, path, checksum)
        })
    }

    /// [`PackWriter::finish`], the index written by `index` (given where
    /// to write it, its temporary path for errors and the pack's
    /// checksum).
    fn finish_with(
        mut self,
        also_flush: &[PathBuf],
        index: impl FnOnce(&mut dyn Write, &Path, &[u8; 20]) -> Result<(), StoreError>,
    ) -> Result<PathBuf, StoreError> {
        if self.added != self.expected {
            return Err(
                git2::Error::from_str("fewer objects than the pack was started for").into(),
            );
        }
        let checksum: [u8; 20] = std::mem::take(&mut self.hash).finalize().into();
        let dir = self.dir.clone();
        self.file
            .write_all(&checksum)
            .map_err(io("write a pack in", &dir))?;
        let pack_tmp = self
            .file
            .into_inner()
            .map_err(|e| StoreError::io("write a pack in", &dir, e.into_error()))?;
        let idx_tmp =
            temporary_file(&dir, "tmp_gov_idx_").map_err(io("create a pack index in", &dir))?;
        let idx_path = idx_tmp.path().to_path_buf();
        // An index is 28 bytes an object and 1 KiB more.
        let size = 1072 + 28 * self.expected as usize;
        let mut out = BufWriter::with_capacity(size.min(64 * 1024), idx_tmp);
        index(&mut out, &idx_path, &checksum)?;
        let idx_tmp = out
            .into_inner()
            .map_err(|e| StoreError::io("write", &idx_path, e.into_error()))?;
        use std::os::unix::fs::PermissionsExt;
        for f in [pack_tmp.as_file(), idx_tmp.as_file()] {
            f.set_permissions(std::fs::Permissions::from_mode(0o444))
                .map_err(io("write a pack in", &dir))?;
        }
        // Both flushed before either has its final name.
        let mut flush = vec![pack_tmp.path().to_path_buf(), idx_path];
        flush.extend_from_slice(also_flush);
        sync_all_at_once(&flush, &BTreeSet::new())?;
        let name = hex::encode(checksum);
        let pack = dir.join(format!("pack-{name}.pack"));
        let index = dir.join(format!("pack-{name}.idx"));
        pack_tmp
            .persist(&pack)
            .map_err(|e| StoreError::io("name", &pack, e.error))?;
        idx_tmp
            .persist(&index)
            .map_err(|e| StoreError::io("name", &index, e.error))?;
        sync_all_at_once(&[], &BTreeSet::from([dir]))?;
        Ok(pack)
    }
}

/// A new temporary file in the pack folder `dir`, removed unless it is
/// persisted. A spare file of the repository (see `store::spare`) when one
/// is ready: creating a file can cost more than writing the pack.
pub(crate) fn temporary_file(dir: &Path, prefix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    // `dir` is `<git dir>/objects/pack`.
    let git_dir = dir.parent().and_then(Path::parent).unwrap_or(dir);
    temporary_file_in(git_dir, dir, prefix)
}

/// A new temporary file `<prefix><pid>_<n>` in the folder `dir` of the
/// repository at `git_dir`, removed unless it is persisted (or its path
/// kept): a spare file of the repository when one is ready. A killed
/// process's is removed by maintenance (`store::maintain`).
pub(crate) fn temporary_file_in(
    git_dir: &Path,
    dir: &Path,
    prefix: &str,
) -> std::io::Result<tempfile::NamedTempFile> {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut tries = 0;
    loop {
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{prefix}{}_{n}", std::process::id()));
        match crate::store::spare::create_new(git_dir, &path) {
            Ok(file) => {
                let path = tempfile::TempPath::try_from_path(path)?;
                return Ok(tempfile::NamedTempFile::from_parts(file, path));
            }
            // Left by a process that had our pid before.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Writes the index of the objects written (sorted here) into a pack
/// whose checksum is `pack_checksum`.
fn write_listed(
    written: &mut [Written],
    out: &mut dyn Write,
    path: &Path,
    pack_checksum: &[u8; 20],
) -> Result<(), StoreError> {
    written.sort_by(|a, b| a.oid.as_bytes().cmp(b.oid.as_bytes()));
    let mut counts = [0u32; 256];
    for w in written.iter() {
        counts[w.oid.as_bytes()[0] as usize] += 1;
    }
    let mut index = IndexWriter::new(out, path, &counts)?;
    for w in written.iter() {
        index.name(&oid_bytes(w.oid))?;
    }
    for w in written.iter() {
        index.crc(w.crc)?;
    }
    for w in written.iter() {
        index.offset(w.offset)?;
    }
    index.finish(pack_checksum)
}

/// An id's 20 bytes.
fn oid_bytes(oid: Oid) -> [u8; 20] {
    let mut bytes = [0u8; 20];
    bytes.copy_from_slice(oid.as_bytes());
    bytes
}

/// Writes `objects` (each in `repo`'s object database: in memory, loose or
/// packed) as one new pack with its index. Returns the pack's path.
pub fn write_objects(
    repo: &Repository,
    dir: &Path,
    objects: &[Oid],
    also_flush: &[PathBuf],
) -> Result<PathBuf, StoreError> {
    write_objects_with(repo, dir, objects.iter().map(|o| (*o, None)), also_flush)
}

/// [`write_objects`] for objects whose content the caller may have
/// (`Some`, a batch's objects): those are not read from the object
/// database, and their entries may be encoded already.
pub fn write_objects_with<'c>(
    repo: &Repository,
    dir: &Path,
    objects: impl IntoIterator<Item = (Oid, Option<&'c Content>)>,
    also_flush: &[PathBuf],
) -> Result<PathBuf, StoreError> {
    let mut seen = HashSet::new();
    let unique: Vec<(Oid, Option<&Content>)> = objects
        .into_iter()
        .filter(|(o, _)| seen.insert(*o))
        .collect();
    let odb = repo.odb()?;
    let mut w = PackWriter::create(dir, unique.len() as u32)?;
    for (oid, content) in unique {
        match content {
            Some(content) => w.add_content(oid, content)?,
            None => {
                let object = odb.read(oid)?;
                w.add_object(oid, object.kind(), object.data())?;
            }
        }
    }
    w.finish(also_flush)
}

/// One object of a pack as its index lists it.
#[derive(Debug, Clone, Copy)]
struct Listed {
    oid: Oid,
    offset: u64,
}

/// The object ids a version 2 pack index lists, in the order their entries
/// sit in the pack (the order they were written in).
pub fn objects_in_pack_order(idx: &Path) -> Result<Vec<Oid>, StoreError> {
    let mut listed = read_index(idx)?;
    listed.sort_by_key(|l| l.offset);
    Ok(listed.into_iter().map(|l| l.oid).collect())
}

/// Reads a version 2 pack index: the objects it lists.
fn read_index(idx: &Path) -> Result<Vec<Listed>, StoreError> {
    let index = IndexFile::open(idx)?;
    let mut out = Vec::with_capacity(index.count() as usize);
    let mut walk = Walk::new(std::slice::from_ref(&index))?;
    let mut holders = Vec::new();
    let mut offsets = index.offsets(column_buffer(2));
    while let Some(name) = walk.next(&mut holders)? {
        out.push(Listed {
            oid: Oid::from_bytes(&name)?,
            offset: index.offset(offsets.next_u32()?)?,
        });
    }
    Ok(out)
}

/// The buffer [`merge_raw`] reads each pack and writes the new one
/// through: a read or a write per 256 KiB (the kernel reads ahead of a
/// file read from end to end); both buffers are live at a merge's peak.
const MERGE_BUFFER: usize = 256 << 10;

/// Why [`merge_raw`] did not merge.
#[derive(Debug)]
pub enum MergeRaw {
    /// A pack holds deltas: its entries cannot be copied one by one.
    HasDeltas,
    Failed(StoreError),
}

impl From<StoreError> for MergeRaw {
    fn from(e: StoreError) -> Self {
        MergeRaw::Failed(e)
    }
}

/// Merges packs (given as their `.pack` paths, each with its `.idx`
/// beside it) into one new pack in `dir` by copying their entries byte
/// for byte: each entry checked against its index's CRC-32, an object in
/// several packs written once (from the first pack that holds it). Packs
/// holding deltas are refused ([`MergeRaw::HasDeltas`]) before anything
/// is named. Returns the new pack's path; the old packs are left for the
/// caller to remove. With `pace`, the new pack is written at most that
/// many bytes a second (a long merge on a thread of its own,
/// `store::maintain::LongLane`).
///
/// What a merge holds does not grow with the objects merged (the largest
/// background merge takes them all) beyond one pack's list of entries at
/// a time (its offset and CRC-32: 8 bytes an object in a pack under 4 GiB,
/// 16 in a larger one) and the list of objects given twice. The old
/// indexes are read side by side in the order of the ids ([`Walk`]): once
/// to find the objects an earlier pack gave already, and once for each
/// table of the new index, written as the walk goes.
pub fn merge_raw(dir: &Path, packs: &[PathBuf], pace: Option<u64>) -> Result<PathBuf, MergeRaw> {
    let indexes = packs
        .iter()
        .map(|p| IndexFile::open(&p.with_extension("idx")))
        .collect::<Result<Vec<_>, _>>()?;
    // The objects of each pack an earlier pack gave (by offset), and how
    // many ids of the new pack begin with each byte.
    let mut given_before: Vec<Vec<u64>> = vec![Vec::new(); packs.len()];
    let mut counts = [0u64; 256];
    let mut holders = Vec::new();
    let mut walk = Walk::new(&indexes)?;
    while let Some(name) = walk.next(&mut holders)? {
        counts[name[0] as usize] += 1;
        for &(p, i) in &holders[1..] {
            given_before[p].push(indexes[p].offset_at(i)?);
        }
    }
    drop(walk);
    let count = u32::try_from(counts.iter().sum::<u64>()).map_err(|_| {
        StoreError::from(git2::Error::from_str("more objects than a pack can hold"))
    })?;
    // Each count is at most the sum, which fits.
    let counts = counts.map(|c| c as u32);
    let mut w = PackWriter::create_with_buffer(dir, count, MERGE_BUFFER)?;
    w.trickle = Some(Trickle {
        pace: pace.map(|rate| (std::time::Instant::now(), rate)),
        ..Trickle::default()
    });
    let mut moved = Vec::with_capacity(packs.len());
    let mut buf = Vec::new();
    for ((pack, index), mut skip) in packs.iter().zip(&indexes).zip(given_before) {
        skip.sort_unstable();
        moved.push(copy_entries(&mut w, pack, index, &skip, &mut buf)?);
    }
    drop(buf);
    let new = w.finish_with(&[], |out, path, checksum| {
        let mut index = IndexWriter::new(out, path, &counts)?;
        let mut walk = Walk::new(&indexes)?;
        while let Some(name) = walk.next(&mut holders)? {
            index.name(&name)?;
        }
        drop(walk);
        // One walk and its tables at a time, their buffers shared out of
        // one budget.
        let buffer = column_buffer(2 * indexes.len());
        let crcs = indexes.iter().map(|i| i.crcs(buffer)).collect();
        walk_table(&indexes, crcs, |_, crc| index.crc(crc))?;
        let offsets = indexes.iter().map(|i| i.offsets(buffer)).collect();
        walk_table(&indexes, offsets, |p, small| {
            index.offset(moved[p].new_offset(indexes[p].offset(small)?))
        })?;
        index.finish(checksum)
    })?;
    Ok(new)
}

/// Walks `indexes` in id order once more, reading `columns` (one table of
/// each index) as the walk passes each place: one item for each, the
/// first holder's given to `first` with the holder.
fn walk_table(
    indexes: &[IndexFile],
    mut columns: Vec<Column>,
    mut first: impl FnMut(usize, u32) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut holders = Vec::new();
    let mut walk = Walk::new(indexes)?;
    while walk.next(&mut holders)?.is_some() {
        for (n, &(p, _)) in holders.iter().enumerate() {
            let item = columns[p].next_u32()?;
            if n == 0 {
                first(p, item)?;
            }
        }
    }
    Ok(())
}

/// Where a pack's entries went in a merged pack.
struct Moved {
    /// Where the first entry (at offset 12, after the header) went.
    base: u64,
    /// Each entry skipped (its object given by an earlier pack): its
    /// offset, and the bytes skipped up to its end.
    skipped: Vec<(u64, u64)>,
}

impl Moved {
    /// Where the kept entry at `old` went: the entries before it follow
    /// each other, less those skipped.
    fn new_offset(&self, old: u64) -> u64 {
        let before = self.skipped.partition_point(|(at, _)| *at < old);
        let gone = before.checked_sub(1).map_or(0, |k| self.skipped[k].1);
        self.base + (old - 12) - gone
    }
}

/// A pack's entries in the order they sit in it: each one's offset and
/// CRC-32, in 8 bytes while the pack is under 4 GiB (the offsets fit in 32
/// bits), else in 16. The largest list a merge holds: one for each object
/// of the pack it copies.
enum Entries {
    Small(Vec<(u32, u32)>),
    Large(Vec<(u64, u32)>),
}

impl Entries {
    /// The entries `index` lists, of a pack `len` bytes long.
    fn of(index: &IndexFile, len: u64) -> Result<Entries, StoreError> {
        let count = index.count() as usize;
        let buffer = column_buffer(2);
        let (mut crcs, mut offsets) = (index.crcs(buffer), index.offsets(buffer));
        let next = move || -> Result<(u64, u32), StoreError> {
            let crc = crcs.next_u32()?;
            Ok((index.offset(offsets.next_u32()?)?, crc))
        };
        Ok(if len <= u64::from(u32::MAX) {
            // An offset past the pack's end fails the copy's bounds check;
            // kept out of range here so that it still does.
            Entries::Small(sorted(count, next, |o| {
                u32::try_from(o).unwrap_or(u32::MAX)
            })?)
        } else {
            Entries::Large(sorted(count, next, |o| o)?)
        })
    }

    fn len(&self) -> usize {
        match self {
            Entries::Small(e) => e.len(),
            Entries::Large(e) => e.len(),
        }
    }

    /// The offset and CRC-32 of the `i`-th entry (`i` below [`Self::len`]).
    fn at(&self, i: usize) -> (u64, u32) {
        match self {
            Entries::Small(e) => (u64::from(e[i].0), e[i].1),
            Entries::Large(e) => e[i],
        }
    }
}

/// `count` entries from `next`, their offsets narrowed, sorted by offset.
fn sorted<O: Ord + Copy>(
    count: usize,
    mut next: impl FnMut() -> Result<(u64, u32), StoreError>,
    narrow: impl Fn(u64) -> O,
) -> Result<Vec<(O, u32)>, StoreError> {
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let (offset, crc) = next()?;
        entries.push((narrow(offset), crc));
    }
    entries.sort_unstable_by_key(|(offset, _)| *offset);
    Ok(entries)
}

/// Whether a pack entry whose first byte is `first` holds a whole object
/// (a commit, tree, blob or tag: types 1-4, bits 4-6 of the byte), not a
/// delta (6 by offset, 7 by id).
fn is_whole_object(first: u8) -> bool {
    matches!((first >> 4) & 7, 1..=4)
}

/// Whether the pack at `pack` (with its index beside it) holds a delta
/// (an entry stored as the difference from another object), which
/// [`merge_raw`] cannot copy. Reads each entry's first byte, in pack
/// order through a buffer, up to the first delta.
pub fn holds_deltas(pack: &Path) -> Result<bool, StoreError> {
    let index = IndexFile::open(&pack.with_extension("idx"))?;
    let file = File::open(pack).map_err(io("read", pack))?;
    let len = file.metadata().map_err(io("read", pack))?.len();
    let entries = Entries::of(&index, len)?;
    let mut reader = BufReader::with_capacity(64 << 10, file);
    let mut at = 0u64;
    let mut first = [0u8; 1];
    for i in 0..entries.len() {
        let (offset, _) = entries.at(i);
        // Entries come in offset order: a seek forward within the buffer.
        reader
            .seek_relative(offset.wrapping_sub(at) as i64)
            .map_err(io("read", pack))?;
        reader.read_exact(&mut first).map_err(io("read", pack))?;
        at = offset + 1;
        if !is_whole_object(first[0]) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Copies the entries of `pack` (listed by `index`) into `w`, but those
/// at the offsets `skip` (sorted). The pack is read from end to end
/// through a large buffer, skipped entries passed over within it or by a
/// seek: a read per buffer, not a seek and a read per entry.
fn copy_entries(
    w: &mut PackWriter,
    pack: &Path,
    index: &IndexFile,
    skip: &[u64],
    buf: &mut Vec<u8>,
) -> Result<Moved, MergeRaw> {
    let bad = |why: String| -> MergeRaw {
        StoreError::io("read", pack, std::io::Error::other(why)).into()
    };
    let file = File::open(pack).map_err(io("read", pack))?;
    let len = file.metadata().map_err(io("read", pack))?.len();
    let entries = Entries::of(index, len)?;
    let mut reader = BufReader::with_capacity(MERGE_BUFFER, file);
    let mut head = [0u8; 12];
    reader.read_exact(&mut head).map_err(io("read", pack))?;
    if head[..8] != *b"PACK\0\0\0\x02"
        || u64::from(u32::from_be_bytes([head[8], head[9], head[10], head[11]])) != index.count()
    {
        return Err(bad("the pack does not match its index".into()));
    }
    let moved_base = w.offset;
    let mut skipped = Vec::with_capacity(skip.len());
    let mut gone = 0u64;
    let mut skip = skip.iter().peekable();
    let mut at = 12u64;
    for i in 0..entries.len() {
        let (offset, crc) = entries.at(i);
        // Each entry ends where the next begins; the last before the
        // pack's 20-byte checksum.
        let end = if i + 1 < entries.len() {
            entries.at(i + 1).0
        } else {
            len.saturating_sub(20)
        };
        if offset != at || end <= offset || end - offset > u64::from(u32::MAX) {
            return Err(bad("an entry's bounds are wrong".into()));
        }
        at = end;
        let size = end - offset;
        if skip.next_if_eq(&&offset).is_some() {
            reader
                .seek_relative(size as i64)
                .map_err(io("read", pack))?;
            gone += size;
            skipped.push((offset, gone));
            continue;
        }
        buf.resize(size as usize, 0);
        reader.read_exact(buf).map_err(io("read", pack))?;
        if !is_whole_object(buf[0]) {
            return Err(MergeRaw::HasDeltas);
        }
        if crc32fast::hash(buf) != crc {
            let name = index
                .name_of_offset(offset)?
                .map_or_else(|| format!("at {offset}"), hex::encode);
            return Err(bad(format!("object {name} does not match its CRC-32")));
        }
        w.add_unlisted(buf)?;
    }
    if skip.next().is_some() {
        return Err(bad("an entry's bounds are wrong".into()));
    }
    Ok(Moved {
        base: moved_base,
        skipped,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn repo_with_objects(
        n: usize,
    ) -> Result<(tempfile::TempDir, Repository, Vec<Oid>), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init_bare(dir.path())?;
        let mut oids = Vec::new();
        for i in 0..n {
            let text = format!(
                "{}object {i}\n",
                "a line all objects share\n".repeat(80 + i % 7)
            );
            let blob = repo.blob(text.as_bytes())?;
            let mut tb = repo.treebuilder(None)?;
            tb.insert("f", blob, 0o100644)?;
            oids.extend([blob, tb.write()?]);
        }
        Ok((dir, repo, oids))
    }

    /// `len` bytes that do not compress (xorshift from `state`, which
    /// moves on).
    pub(crate) fn noise(state: &mut u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                *state as u8
            })
            .collect()
    }

    /// Stock git, in the repository at `dir`, with `input` on its stdin.
    pub(crate) fn git(
        dir: &Path,
        args: &[&str],
        input: &str,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let mut child = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(dir)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(format!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn sorted_unique(oids: &[Oid]) -> Vec<Oid> {
        let mut v = oids.to_vec();
        v.sort();
        v.dedup();
        v
    }

    fn path_str(p: &Path) -> Result<&str, Box<dyn std::error::Error>> {
        p.to_str().ok_or_else(|| "path is not UTF-8".into())
    }

    #[test]
    fn a_written_pack_is_what_stock_git_writes_for_the_same_objects() -> TestResult {
        let (dir, repo, oids) = repo_with_objects(40)?;
        let packdir = dir.path().join("objects/pack");
        let pack = write_objects(&repo, &packdir, &oids, &[])?;
        let idx = pack.with_extension("idx");
        // git checks the pack's and the index's checksums and every object.
        let verified = git(dir.path(), &["verify-pack", "-v", path_str(&idx)?], "")?;
        assert!(
            verified.contains(&format!("{}: ok", pack.display())),
            "{verified}"
        );
        let listed = read_index(&idx)?;
        let in_pack: Vec<Oid> = listed.iter().map(|l| l.oid).collect();
        assert_eq!(sorted_unique(&in_pack), sorted_unique(&oids));
        assert_eq!(in_pack.len(), sorted_unique(&oids).len());
        // And git's own index of the pack is byte for byte ours.
        let theirs = dir.path().join("theirs.idx");
        git(
            dir.path(),
            &["index-pack", "-o", path_str(&theirs)?, path_str(&pack)?],
            "",
        )?;
        assert_eq!(std::fs::read(&theirs)?, std::fs::read(&idx)?);
        Ok(())
    }

    #[test]
    fn objects_encoded_ahead_make_the_very_pack_the_flush_would_write() -> TestResult {
        let (dir, repo, oids) = repo_with_objects(20)?;
        let odb = repo.odb()?;
        let contents: Vec<(Oid, std::sync::Arc<Content>)> = oids
            .iter()
            .map(|oid| {
                let o = odb.read(*oid)?;
                Ok((
                    *oid,
                    std::sync::Arc::new(Content::new(o.kind(), o.data().to_vec())),
                ))
            })
            .collect::<Result<_, git2::Error>>()?;
        // Every other object goes to the encoding thread; the pack is
        // written once those are encoded, so that both ways are taken.
        Content::encode_ahead(
            contents
                .iter()
                .step_by(2)
                .map(|(oid, content)| (*oid, content.clone()))
                .collect(),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while contents
            .iter()
            .step_by(2)
            .any(|(_, c)| c.entry.get().is_none())
        {
            assert!(std::time::Instant::now() < deadline, "not encoded ahead");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(contents
            .iter()
            .skip(1)
            .step_by(2)
            .all(|(_, c)| c.entry.get().is_none()));
        let ours = dir.path().join("ours");
        let pack = write_objects_with(
            &repo,
            &ours,
            contents.iter().map(|(oid, c)| (*oid, Some(&**c))),
            &[],
        )?;
        let plain = write_objects(&repo, &dir.path().join("plain"), &oids, &[])?;
        assert_eq!(std::fs::read(&pack)?, std::fs::read(&plain)?);
        assert_eq!(
            std::fs::read(pack.with_extension("idx"))?,
            std::fs::read(plain.with_extension("idx"))?
        );
        let verified = git(
            dir.path(),
            &["verify-pack", "-v", path_str(&pack.with_extension("idx"))?],
            "",
        )?;
        assert!(verified.contains(": ok"), "{verified}");
        Ok(())
    }

    /// A pack's entries listed in 8 bytes each (under 4 GiB) are the ones
    /// listed in 16 (a larger pack's), in the order they sit in the pack:
    /// the first after the header, each past the one before.
    #[test]
    fn a_packs_entries_read_the_same_in_either_width() -> TestResult {
        let (dir, repo, oids) = repo_with_objects(20)?;
        let packdir = dir.path().join("objects/pack");
        let pack = write_objects(&repo, &packdir, &oids, &[])?;
        let index = IndexFile::open(&pack.with_extension("idx"))?;
        let len = std::fs::metadata(&pack)?.len();
        let small = Entries::of(&index, len)?;
        let large = Entries::of(&index, 5 << 30)?;
        assert!(matches!(small, Entries::Small(_)));
        assert!(matches!(large, Entries::Large(_)));
        assert_eq!(small.len(), oids.len());
        assert_eq!(large.len(), oids.len());
        let offsets: Vec<u64> = (0..small.len()).map(|i| small.at(i).0).collect();
        for i in 0..small.len() {
            assert_eq!(small.at(i), large.at(i), "entry {i}");
        }
        assert_eq!(
            offsets.first(),
            Some(&12),
            "the first entry follows the header"
        );
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        assert!(offsets.last().is_some_and(|&o| o < len - 20), "{offsets:?}");
        Ok(())
    }

    #[test]
    fn merged_packs_hold_every_object_once_and_verify() -> TestResult {
        let (dir, repo, oids) = repo_with_objects(30)?;
        let packdir = dir.path().join("objects/pack");
        let a = write_objects(&repo, &packdir, &oids[..30], &[])?;
        // Overlapping: the middle objects are in both packs.
        let b = write_objects(&repo, &packdir, &oids[20..], &[])?;
        let merged = merge_raw(&packdir, &[a, b], None).map_err(|e| format!("{e:?}"))?;
        let idx = merged.with_extension("idx");
        git(dir.path(), &["verify-pack", path_str(&idx)?], "")?;
        let listed = read_index(&idx)?;
        let in_pack: Vec<Oid> = listed.iter().map(|l| l.oid).collect();
        assert_eq!(in_pack.len(), sorted_unique(&oids).len());
        assert_eq!(sorted_unique(&in_pack), sorted_unique(&oids));
        index_is_gits(dir.path(), &merged)
    }

    /// A paced merge writes the same pack, and takes at least as long as
    /// its pace allows for what it sent out before its last stretch (a
    /// lower bound: a slower machine only takes longer).
    #[test]
    fn a_paced_merge_writes_the_same_pack_no_faster_than_its_pace() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init_bare(dir.path())?;
        let packdir = dir.path().join("objects/pack");
        // Incompressible blobs: 64 of 8 KiB.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut packs = Vec::new();
        for _ in 0..64 {
            let blob = repo.blob(&noise(&mut state, 8 << 10))?;
            packs.push(write_objects(&repo, &packdir, &[blob], &[])?);
        }
        let plain = merge_raw(&packdir, &packs, None).map_err(|e| format!("{e:?}"))?;
        let written = std::fs::read(&plain)?;
        std::fs::remove_file(&plain)?;
        std::fs::remove_file(plain.with_extension("idx"))?;
        let rate = 1u64 << 20;
        let started = std::time::Instant::now();
        let paced = merge_raw(&packdir, &packs, Some(rate)).map_err(|e| format!("{e:?}"))?;
        let took = started.elapsed();
        assert_eq!(paced, plain);
        assert_eq!(std::fs::read(&paced)?, written);
        // All but the last two stretches were paced; a stretch ends at the
        // first entry (8 KiB and its header) past `TRICKLE_BYTES`.
        let paced_bytes = written.len() as u64 - 2 * (TRICKLE_BYTES + (9 << 10));
        let least = std::time::Duration::from_secs_f64(paced_bytes as f64 / rate as f64);
        assert!(took >= least, "{took:?} < {least:?}");
        git(
            dir.path(),
            &["verify-pack", path_str(&paced.with_extension("idx"))?],
            "",
        )?;
        Ok(())
    }

    /// The index of the merged pack, written from the old indexes, is the
    /// one stock git makes by reading the pack itself.
    fn index_is_gits(dir: &Path, merged: &Path) -> TestResult {
        let theirs = dir.join("theirs.idx");
        git(
            dir,
            &["index-pack", "-o", path_str(&theirs)?, path_str(merged)?],
            "",
        )?;
        assert!(std::fs::read(merged.with_extension("idx"))? == std::fs::read(&theirs)?);
        std::fs::remove_file(theirs)?;
        Ok(())
    }

    /// Entries skipped past the merge's read buffer (objects an earlier
    /// pack gave already, more than a buffer's worth of them) are skipped
    /// by a seek, and the entries after them still read whole; the merged
    /// pack, sent to the disk as it is written, verifies.
    #[test]
    fn a_merge_skips_more_than_its_buffer_of_objects_it_has() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init_bare(dir.path())?;
        // Incompressible blobs of 400 KB: three of them outgrow the buffer.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut blob = || repo.blob(&noise(&mut state, 400_000));
        let oids = (0..6).map(|_| blob()).collect::<Result<Vec<Oid>, _>>()?;
        let packdir = dir.path().join("objects/pack");
        let a = write_objects(&repo, &packdir, &oids[..4], &[])?;
        // b begins with three objects a holds (1.2 MB), then two of its own.
        let b = write_objects(&repo, &packdir, &oids[1..], &[])?;
        const { assert!(MERGE_BUFFER < 1_200_000) };
        // The merged pack (2.4 MB) is sent out in stretches as it is
        // written, the second waiting for the first ([`Trickle`]).
        const { assert!(2 * TRICKLE_BYTES < 2_400_000) };
        let merged = merge_raw(&packdir, &[a, b], None).map_err(|e| format!("{e:?}"))?;
        let idx = merged.with_extension("idx");
        git(dir.path(), &["verify-pack", path_str(&idx)?], "")?;
        let in_pack: Vec<Oid> = read_index(&idx)?.iter().map(|l| l.oid).collect();
        assert_eq!(sorted_unique(&in_pack), sorted_unique(&oids));
        assert_eq!(in_pack.len(), 6);
        index_is_gits(dir.path(), &merged)
    }

    #[test]
    fn a_pack_with_deltas_is_not_merged_by_copying() -> TestResult {
        let (dir, _repo, oids) = repo_with_objects(60)?;
        // git packs them with deltas (the blobs are alike).
        let base = dir.path().join("objects/pack/pack");
        let list: String = oids.iter().map(|o| format!("{o}\n")).collect();
        git(
            dir.path(),
            &["pack-objects", "--window=50", path_str(&base)?],
            &list,
        )?;
        let packdir = dir.path().join("objects/pack");
        let packs: Vec<PathBuf> = std::fs::read_dir(&packdir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pack"))
            .collect();
        assert_eq!(packs.len(), 1);
        let verbose = git(
            dir.path(),
            &[
                "verify-pack",
                "-v",
                path_str(&packs[0].with_extension("idx"))?,
            ],
            "",
        )?;
        assert!(
            verbose.contains("chain length = 1"),
            "git made no delta: {verbose}"
        );
        let listing = || -> std::io::Result<Vec<std::ffi::OsString>> {
            let mut names: Vec<_> = std::fs::read_dir(&packdir)?
                .flatten()
                .map(|e| e.file_name())
                .collect();
            names.sort();
            Ok(names)
        };
        let before = listing()?;
        assert!(matches!(
            merge_raw(&packdir, &packs, None),
            Err(MergeRaw::HasDeltas)
        ));
        assert_eq!(listing()?, before, "a refused merge leaves no file behind");
        Ok(())
    }

    #[test]
    fn a_corrupt_entry_is_refused_and_nothing_is_named() -> TestResult {
        let (dir, repo, oids) = repo_with_objects(5)?;
        let packdir = dir.path().join("objects/pack");
        let a = write_objects(&repo, &packdir, &oids, &[])?;
        let mut bytes = std::fs::read(&a)?;
        bytes[20] ^= 0xff;
        std::fs::set_permissions(&a, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        std::fs::write(&a, &bytes)?;
        let err = match merge_raw(&packdir, std::slice::from_ref(&a), None) {
            Err(MergeRaw::Failed(e)) => e.to_string(),
            other => return Err(format!("merged a corrupt pack: {other:?}").into()),
        };
        assert!(err.ends_with("does not match its CRC-32"), "{err}");
        assert_eq!(std::fs::read_dir(&packdir)?.count(), 2);
        Ok(())
    }

    #[test]
    fn entry_headers_carry_type_and_size() {
        assert_eq!(entry_header(1, 5), vec![0x15]);
        assert_eq!(entry_header(3, 16), vec![0xb0, 0x01]);
        assert_eq!(entry_header(2, 0x1234), vec![0xa4, 0xa3, 0x02]);
    }
}
