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
//! gives: no object is inflated or deflated again.
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

/// How much a pack entry's data is compressed: zlib's fastest level (as
/// `git` writes with `core.compression 1`). A batch's objects are deflated
/// while the chain lock is held (on the encoding thread as they are
/// written, or by the flush: see [`Content`]), and an approval rewrites a
/// month's folder of up to 256 entries, mostly object ids, which no level
/// shrinks much: level 6 took twice as long for 1.4% less. `gov maintain`
/// by hand repacks everything with libgit2's default level and a delta
/// search.
const LEVEL: flate2::Compression = flate2::Compression::new(1);

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
    deflate: &mut flate2::Compress,
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
    entry.reserve(data.len() / 2 + 64);
    // One compressor for many objects, reset between them: making one
    // costs more than compressing a small object with it.
    deflate.reset();
    loop {
        let before = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&data[before..], entry, flate2::FlushCompress::Finish)
            .map_err(std::io::Error::other)?;
        match status {
            flate2::Status::StreamEnd => break,
            _ => entry.reserve(entry.capacity().max(64)),
        }
    }
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
    fn encoded(
        &self,
        oid: Oid,
        deflate: &mut flate2::Compress,
    ) -> std::io::Result<&(u32, Vec<u8>)> {
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
    /// use); without one, the flush encodes them. A writer hands over all
    /// the objects of its turn at once: one wake-up of the thread per
    /// turn, not one per object (each was a futex call and two context
    /// switches on the writer's serial path).
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
                    let mut deflate = flate2::Compress::new(LEVEL, true);
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
    written: Vec<Written>,
    deflate: flate2::Compress,
    scratch: Vec<u8>,
}

fn io<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> StoreError + 'p {
    move |e| StoreError::io(action, path, e)
}

impl PackWriter {
    /// Starts a pack of exactly `count` objects in `dir`.
    pub fn create(dir: &Path, count: u32) -> Result<PackWriter, StoreError> {
        Self::create_with_buffer(dir, count, 64 * 1024)
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
            written: Vec::with_capacity(count as usize),
            deflate: flate2::Compress::new(LEVEL, true),
            scratch: Vec::new(),
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
            .map_err(|e| StoreError::io("write a pack in", &self.dir, e))
    }

    /// Adds an object, deflating its content.
    pub fn add_object(
        &mut self,
        oid: Oid,
        kind: ObjectType,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let mut entry = std::mem::take(&mut self.scratch);
        let crc = encode_entry(&mut self.deflate, oid, kind, data, &mut entry)
            .map_err(|e| StoreError::io("compress an object for", &self.dir, e))?;
        let added = self.add_entry(oid, crc, &entry);
        self.scratch = entry;
        added
    }

    /// Adds a batch's object: its entry as [`Content::encode_ahead`]
    /// encoded it, else encoded now.
    fn add_content(&mut self, oid: Oid, content: &Content) -> Result<(), StoreError> {
        let (crc, entry) = content
            .encoded(oid, &mut self.deflate)
            .map_err(|e| StoreError::io("compress an object for", &self.dir, e))?;
        self.add_entry(oid, *crc, entry)
    }

    /// Adds an entry already encoded (header and compressed data) whose
    /// CRC-32 is `crc`.
    fn add_entry(&mut self, oid: Oid, crc: u32, entry: &[u8]) -> Result<(), StoreError> {
        if self.written.len() as u32 >= self.expected {
            return Err(git2::Error::from_str("more objects than the pack was started for").into());
        }
        self.written.push(Written {
            oid,
            offset: self.offset,
            crc,
        });
        self.put(entry)
    }

    /// Ends the pack: its checksum, its index, both flushed (with
    /// `also_flush`, at the same time), then both renamed to their final
    /// names (the pack first) and the folder flushed. Returns the pack's
    /// path.
    pub fn finish(mut self, also_flush: &[PathBuf]) -> Result<PathBuf, StoreError> {
        if self.written.len() as u32 != self.expected {
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
        let idx = index_bytes(&mut self.written, &checksum);
        let mut idx_tmp =
            temporary_file(&dir, "tmp_gov_idx_").map_err(io("create a pack index in", &dir))?;
        idx_tmp
            .write_all(&idx)
            .map_err(io("write a pack index in", &dir))?;
        use std::os::unix::fs::PermissionsExt;
        for f in [pack_tmp.as_file(), idx_tmp.as_file()] {
            f.set_permissions(std::fs::Permissions::from_mode(0o444))
                .map_err(io("write a pack in", &dir))?;
        }
        // Both flushed before either has its final name.
        let mut flush = vec![pack_tmp.path().to_path_buf(), idx_tmp.path().to_path_buf()];
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
fn temporary_file(dir: &Path, prefix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // `dir` is `<git dir>/objects/pack`.
    let git_dir = dir.parent().and_then(Path::parent).unwrap_or(dir);
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

/// A version 2 pack index for the objects written (sorted here) into a
/// pack whose checksum is `pack_checksum`.
fn index_bytes(written: &mut [Written], pack_checksum: &[u8; 20]) -> Vec<u8> {
    written.sort_by(|a, b| a.oid.as_bytes().cmp(b.oid.as_bytes()));
    let n = written.len();
    let mut out = Vec::with_capacity(8 + 1024 + n * 28 + 40);
    out.extend_from_slice(&[0xff, b't', b'O', b'c']);
    out.extend_from_slice(&2u32.to_be_bytes());
    let mut fanout = [0u32; 256];
    for w in written.iter() {
        fanout[w.oid.as_bytes()[0] as usize] += 1;
    }
    let mut sum = 0u32;
    for f in fanout {
        sum += f;
        out.extend_from_slice(&sum.to_be_bytes());
    }
    for w in written.iter() {
        out.extend_from_slice(w.oid.as_bytes());
    }
    for w in written.iter() {
        out.extend_from_slice(&w.crc.to_be_bytes());
    }
    let mut large = Vec::new();
    for w in written.iter() {
        if w.offset < 0x8000_0000 {
            out.extend_from_slice(&(w.offset as u32).to_be_bytes());
        } else {
            out.extend_from_slice(&(0x8000_0000 | large.len() as u32).to_be_bytes());
            large.push(w.offset);
        }
    }
    for offset in large {
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out.extend_from_slice(pack_checksum);
    let idx_checksum: [u8; 20] = Sha1::digest(&out).into();
    out.extend_from_slice(&idx_checksum);
    out
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
    crc: u32,
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
    let data = std::fs::read(idx).map_err(io("read", idx))?;
    let bad = |why: &str| StoreError::io("read", idx, std::io::Error::other(why.to_string()));
    if data.len() < 8 + 1024 + 40
        || data[..4] != [0xff, b't', b'O', b'c']
        || data[4..8] != [0, 0, 0, 2]
    {
        return Err(bad("not a version 2 pack index"));
    }
    let u32_at =
        |at: usize| u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    let n = u32_at(8 + 255 * 4) as usize;
    let names = 8 + 1024;
    let crcs = names + n * 20;
    let offsets = crcs + n * 4;
    let large = offsets + n * 4;
    if data.len() < large + 40 {
        return Err(bad("the pack index is cut short"));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let oid = Oid::from_bytes(&data[names + i * 20..names + (i + 1) * 20])?;
        let small = u32_at(offsets + i * 4);
        let offset = if small & 0x8000_0000 == 0 {
            u64::from(small)
        } else {
            let at = large + (small & 0x7fff_ffff) as usize * 8;
            if data.len() < at + 8 + 40 {
                return Err(bad("a large offset is missing from the pack index"));
            }
            u64::from_be_bytes(data[at..at + 8].try_into().unwrap_or_default())
        };
        out.push(Listed {
            oid,
            crc: u32_at(crcs + i * 4),
            offset,
        });
    }
    Ok(out)
}

/// The buffer [`merge_raw`] reads each pack and writes the new one
/// through.
const MERGE_BUFFER: usize = 1 << 20;

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
/// several packs written once. Packs holding deltas are refused
/// ([`MergeRaw::HasDeltas`]) before anything is named. Returns the new
/// pack's path; the old packs are left for the caller to remove.
pub fn merge_raw(dir: &Path, packs: &[PathBuf]) -> Result<PathBuf, MergeRaw> {
    // Each pack's entries in the order they sit in it, and which of them
    // an earlier pack gave already. What a merge holds grows with the
    // objects merged (the largest background merge takes them all), so
    // it holds each thing once and lets go of it as soon as it can: the
    // set of ids only while the copies are marked, each pack's list once
    // the pack is copied.
    let mut listed = Vec::with_capacity(packs.len());
    let mut total = 0;
    for pack in packs {
        let mut objects = read_index(&pack.with_extension("idx"))?;
        objects.sort_by_key(|o| o.offset);
        let len = std::fs::metadata(pack).map_err(io("read", pack))?.len();
        total += objects.len();
        listed.push((pack, objects, len));
    }
    // Sized once: a set that grows holds its old table and its new one
    // together.
    let mut seen = HashSet::with_capacity(total);
    let copies: Vec<Vec<bool>> = listed
        .iter()
        .map(|(_, objects, _)| objects.iter().map(|o| !seen.insert(o.oid)).collect())
        .collect();
    let count = seen.len() as u32;
    drop(seen);
    let mut w = PackWriter::create_with_buffer(dir, count, MERGE_BUFFER)?;
    let mut buf = Vec::new();
    for ((pack, objects, len), copy) in listed.into_iter().zip(copies) {
        // Read from one end to the other through a large buffer: the kept
        // entries follow each other (an object already taken from an
        // earlier pack is skipped within the buffer), so a pack costs a
        // read per megabyte, not a seek and a read per entry.
        let file = File::open(pack).map_err(io("read", pack))?;
        let mut reader = BufReader::with_capacity(MERGE_BUFFER, file);
        let mut at = 0u64;
        for (i, o) in objects.iter().enumerate() {
            if copy[i] {
                continue;
            }
            // Each entry ends where the next begins; the last before the
            // pack's 20-byte checksum.
            let end = objects
                .get(i + 1)
                .map_or(len.saturating_sub(20), |next| next.offset);
            if end <= o.offset || end - o.offset > u64::from(u32::MAX) || o.offset < at {
                return Err(StoreError::io(
                    "read",
                    pack,
                    std::io::Error::other("an entry's bounds are wrong"),
                )
                .into());
            }
            buf.resize((end - o.offset) as usize, 0);
            let skip = i64::try_from(o.offset - at).map_err(std::io::Error::other);
            skip.and_then(|skip| reader.seek_relative(skip))
                .and_then(|()| reader.read_exact(&mut buf))
                .map_err(io("read", pack))?;
            at = end;
            if !matches!((buf[0] >> 4) & 7, 1..=4) {
                return Err(MergeRaw::HasDeltas);
            }
            if crc32fast::hash(&buf) != o.crc {
                return Err(StoreError::io(
                    "read",
                    pack,
                    std::io::Error::other(format!("object {} does not match its CRC-32", o.oid)),
                )
                .into());
            }
            w.add_entry(o.oid, o.crc, &buf)?;
        }
    }
    Ok(w.finish(&[])?)
}

#[cfg(test)]
mod tests {
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

    /// Stock git, in the repository at `dir`, with `input` on its stdin.
    fn git(dir: &Path, args: &[&str], input: &str) -> Result<String, Box<dyn std::error::Error>> {
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

    #[test]
    fn merged_packs_hold_every_object_once_and_verify() -> TestResult {
        let (dir, repo, oids) = repo_with_objects(30)?;
        let packdir = dir.path().join("objects/pack");
        let a = write_objects(&repo, &packdir, &oids[..30], &[])?;
        // Overlapping: the middle objects are in both packs.
        let b = write_objects(&repo, &packdir, &oids[20..], &[])?;
        let merged = merge_raw(&packdir, &[a, b]).map_err(|e| format!("{e:?}"))?;
        let idx = merged.with_extension("idx");
        git(dir.path(), &["verify-pack", path_str(&idx)?], "")?;
        let listed = read_index(&idx)?;
        let in_pack: Vec<Oid> = listed.iter().map(|l| l.oid).collect();
        assert_eq!(in_pack.len(), sorted_unique(&oids).len());
        assert_eq!(sorted_unique(&in_pack), sorted_unique(&oids));
        Ok(())
    }

    /// Entries skipped past the merge's read buffer (objects an earlier
    /// pack gave already, more than a buffer's worth of them) are skipped
    /// by a seek, and the entries after them still read whole.
    #[test]
    fn a_merge_skips_more_than_its_buffer_of_objects_it_has() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init_bare(dir.path())?;
        // Incompressible blobs of 400 KB: three of them outgrow the buffer.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut blob = || {
            let bytes: Vec<u8> = (0..400_000)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            repo.blob(&bytes)
        };
        let oids = (0..6).map(|_| blob()).collect::<Result<Vec<Oid>, _>>()?;
        let packdir = dir.path().join("objects/pack");
        let a = write_objects(&repo, &packdir, &oids[..4], &[])?;
        // b begins with three objects a holds (1.2 MB), then two of its own.
        let b = write_objects(&repo, &packdir, &oids[1..], &[])?;
        const { assert!(MERGE_BUFFER < 1_200_000) };
        let merged = merge_raw(&packdir, &[a, b]).map_err(|e| format!("{e:?}"))?;
        let idx = merged.with_extension("idx");
        git(dir.path(), &["verify-pack", path_str(&idx)?], "")?;
        let in_pack: Vec<Oid> = read_index(&idx)?.iter().map(|l| l.oid).collect();
        assert_eq!(sorted_unique(&in_pack), sorted_unique(&oids));
        assert_eq!(in_pack.len(), 6);
        Ok(())
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
            merge_raw(&packdir, &packs),
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
        let err = match merge_raw(&packdir, std::slice::from_ref(&a)) {
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
