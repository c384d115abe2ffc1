//! Version 2 pack indexes, read a table at a time and written as a
//! stream, so that nothing holds a whole index in memory.
//!
//! An index is a header, a fan-out table (how many ids begin with each
//! byte or a smaller one), then four tables in the order of the ids: the
//! ids (20 bytes each), the CRC-32 of each entry, each entry's offset in
//! the pack (4 bytes; with the top bit set, a place in the table of
//! 8-byte offsets that follows), then the pack's checksum and the index's
//! own.
//!
//! The background merge of every pack into one lists every object of the
//! repository (hundreds of thousands): holding each old index's list and
//! the new pack's list and index cost about 60 bytes an object at its
//! peak. [`Walk`] reads the old indexes' id tables side by side, in id
//! order, as a merge of sorted lists; [`IndexWriter`] writes the new
//! index as the walk goes.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use crate::store::git::StoreError;

/// The magic number and version an index begins with.
const MAGIC: [u8; 8] = [0xff, b't', b'O', b'c', 0, 0, 0, 2];
/// Where the table of ids begins: after the header and the fan-out.
const NAMES: u64 = 8 + 256 * 4;
/// What the buffers of the tables read at once may take in all: a merge
/// after a long one can take a hundred small packs, and each table read
/// through 64 KiB would take megabytes.
const COLUMN_BUDGET: usize = 1 << 20;

/// The buffer of each of `columns` tables read at once: at most 64 KiB,
/// at least 4 KiB, [`COLUMN_BUDGET`] in all unless that is less than
/// 4 KiB each.
pub fn column_buffer(columns: usize) -> usize {
    (COLUMN_BUDGET / columns.max(1)).clamp(4 * 1024, 64 * 1024)
}

/// An index on disk: its header read, its tables read on demand.
#[derive(Debug)]
pub struct IndexFile {
    path: PathBuf,
    file: File,
    count: u64,
    len: u64,
}

/// The tables that hold one item per object.
#[derive(Clone, Copy)]
enum Table {
    Names,
    Crcs,
    Offsets,
}

impl IndexFile {
    /// Opens the index at `path`, checking its header and that it is long
    /// enough for the objects it says it lists.
    pub fn open(path: &Path) -> Result<IndexFile, StoreError> {
        let file = File::open(path).map_err(|e| StoreError::io("read", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("read", path, e))?
            .len();
        let mut index = IndexFile {
            path: path.to_path_buf(),
            file,
            count: 0,
            len,
        };
        let mut head = [0u8; NAMES as usize];
        if len < NAMES + 40 || index.file.read_exact_at(&mut head, 0).is_err() || head[..8] != MAGIC
        {
            return Err(index.bad("not a version 2 pack index"));
        }
        let fanout = |i: usize| u32::from_be_bytes([0, 1, 2, 3].map(|b| head[8 + i * 4 + b]));
        if (1..256).any(|i| fanout(i) < fanout(i - 1)) {
            return Err(index.bad("the pack index's fan-out table is not in order"));
        }
        index.count = u64::from(fanout(255));
        if len < index.table(Table::Offsets) + index.count * 4 + 40 {
            return Err(index.bad("the pack index is cut short"));
        }
        Ok(index)
    }

    /// How many objects the index lists.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// An error about this index: `why` it cannot be read.
    pub fn bad(&self, why: &str) -> StoreError {
        StoreError::io("read", &self.path, std::io::Error::other(why.to_string()))
    }

    /// Where `table` begins.
    fn table(&self, table: Table) -> u64 {
        match table {
            Table::Names => NAMES,
            Table::Crcs => NAMES + self.count * 20,
            Table::Offsets => NAMES + self.count * 24,
        }
    }

    /// A reader of `table` from its first item to its last, through a
    /// buffer of `buffer` bytes.
    fn column(&self, table: Table, buffer: usize) -> Column<'_> {
        let width = match table {
            Table::Names => 20,
            Table::Crcs | Table::Offsets => 4,
        };
        let at = self.table(table);
        Column {
            index: self,
            reader: BufReader::with_capacity(
                buffer,
                At {
                    file: &self.file,
                    at,
                    end: at + self.count * width,
                },
            ),
        }
    }

    /// A reader of the CRC-32s, in the order of the ids (through a
    /// buffer of `buffer` bytes).
    pub fn crcs(&self, buffer: usize) -> Column<'_> {
        self.column(Table::Crcs, buffer)
    }

    /// A reader of the offsets as the index gives them, in the order of
    /// the ids (through a buffer of `buffer` bytes): [`IndexFile::offset`]
    /// resolves each.
    pub fn offsets(&self, buffer: usize) -> Column<'_> {
        self.column(Table::Offsets, buffer)
    }

    /// The offset an item of the offsets table gives: itself, or with its
    /// top bit set, its place in the table of 8-byte offsets.
    pub fn offset(&self, small: u32) -> Result<u64, StoreError> {
        if small & 0x8000_0000 == 0 {
            return Ok(u64::from(small));
        }
        let at = self.table(Table::Offsets) + self.count * 4 + u64::from(small & 0x7fff_ffff) * 8;
        if at + 8 + 40 > self.len {
            return Err(self.bad("a large offset is missing from the pack index"));
        }
        self.bytes_at(at).map(u64::from_be_bytes)
    }

    /// The `N` bytes at `at`.
    fn bytes_at<const N: usize>(&self, at: u64) -> Result<[u8; N], StoreError> {
        let mut item = [0u8; N];
        self.file
            .read_exact_at(&mut item, at)
            .map_err(|e| StoreError::io("read", &self.path, e))?;
        Ok(item)
    }

    /// The offset of the object listed `i`-th.
    pub fn offset_at(&self, i: u64) -> Result<u64, StoreError> {
        let small = self.bytes_at(self.table(Table::Offsets) + i * 4)?;
        self.offset(u32::from_be_bytes(small))
    }

    /// The id of the object listed `i`-th.
    pub fn name_at(&self, i: u64) -> Result<[u8; 20], StoreError> {
        self.bytes_at(NAMES + i * 20)
    }

    /// The id of the object whose entry starts at `offset`, if the index
    /// lists one (a scan: for error messages).
    pub fn name_of_offset(&self, offset: u64) -> Result<Option<[u8; 20]>, StoreError> {
        let mut offsets = self.offsets(column_buffer(1));
        for i in 0..self.count {
            if self.offset(offsets.next_u32()?)? == offset {
                return self.name_at(i).map(Some);
            }
        }
        Ok(None)
    }
}

/// Reads a range of a file by position (`pread`), so that several
/// readers of one open file do not move each other.
struct At<'f> {
    file: &'f File,
    at: u64,
    end: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min((self.end - self.at) as usize);
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// One table of an index, read item by item.
pub struct Column<'i> {
    index: &'i IndexFile,
    reader: BufReader<At<'i>>,
}

impl Column<'_> {
    fn next<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut item = [0u8; N];
        self.reader
            .read_exact(&mut item)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => self.index.bad("the pack index is cut short"),
                _ => StoreError::io("read", &self.index.path, e),
            })?;
        Ok(item)
    }

    /// The next item of a table of 4-byte items.
    pub fn next_u32(&mut self) -> Result<u32, StoreError> {
        self.next::<4>().map(u32::from_be_bytes)
    }
}

/// Every id that several indexes list, in order, each once: a merge of
/// their id tables (each sorted), read side by side.
pub struct Walk<'i> {
    indexes: &'i [IndexFile],
    names: Vec<Column<'i>>,
    /// Each index's next id not yet given, and where it lists it.
    heads: Vec<Option<(IdKey, u64)>>,
}

/// An object id as two integers that compare as its bytes do: a merge
/// compares ids several times an object, and comparing 20 bytes took a
/// call to `memcmp` each time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct IdKey(u128, u32);

impl IdKey {
    fn of(id: &[u8; 20]) -> IdKey {
        let (mut high, mut low) = ([0u8; 16], [0u8; 4]);
        high.copy_from_slice(&id[..16]);
        low.copy_from_slice(&id[16..]);
        IdKey(u128::from_be_bytes(high), u32::from_be_bytes(low))
    }

    fn bytes(self) -> [u8; 20] {
        let mut id = [0u8; 20];
        id[..16].copy_from_slice(&self.0.to_be_bytes());
        id[16..].copy_from_slice(&self.1.to_be_bytes());
        id
    }
}

impl<'i> Walk<'i> {
    /// A walk of `indexes`, each id table read through a buffer of
    /// [`column_buffer`] for as many tables as indexes.
    pub fn new(indexes: &'i [IndexFile]) -> Result<Walk<'i>, StoreError> {
        let buffer = column_buffer(indexes.len());
        let mut walk = Walk {
            indexes,
            names: indexes
                .iter()
                .map(|i| i.column(Table::Names, buffer))
                .collect(),
            heads: vec![None; indexes.len()],
        };
        for p in 0..indexes.len() {
            walk.advance(p)?;
        }
        Ok(walk)
    }

    /// Reads index `p`'s next id, after its head (its first id while it
    /// has none: only a new walk advances an index without a head).
    fn advance(&mut self, p: usize) -> Result<(), StoreError> {
        let last = self.heads[p].take();
        let next = last.map_or(0, |(_, i)| i + 1);
        if next < self.indexes[p].count {
            let name = IdKey::of(&self.names[p].next::<20>()?);
            if last.is_some_and(|(previous, _)| previous >= name) {
                return Err(self.indexes[p].bad("the pack index's ids are not in order"));
            }
            self.heads[p] = Some((name, next));
        }
        Ok(())
    }

    /// The next id, or `None` after the last. `holders` is filled with
    /// the indexes that list it (their order in the walk, the first
    /// first) and where each lists it.
    pub fn next(
        &mut self,
        holders: &mut Vec<(usize, u64)>,
    ) -> Result<Option<[u8; 20]>, StoreError> {
        holders.clear();
        let Some(least) = self.heads.iter().flatten().map(|(name, _)| *name).min() else {
            return Ok(None);
        };
        for p in 0..self.heads.len() {
            if let Some((name, i)) = self.heads[p] {
                if name == least {
                    holders.push((p, i));
                    self.advance(p)?;
                }
            }
        }
        Ok(Some(least.bytes()))
    }
}

/// Writes an index table by table, in order, counting what it writes:
/// the header and fan-out first (from the count of ids beginning with
/// each byte), then `count` ids, `count` CRC-32s, `count` offsets.
pub struct IndexWriter<'w> {
    out: &'w mut dyn Write,
    path: &'w Path,
    hash: Sha1,
    count: u64,
    /// How many items each table has had.
    written: [u64; 3],
    large: Vec<u64>,
}

impl<'w> IndexWriter<'w> {
    /// Starts the index of a pack whose ids begin with each byte as often
    /// as `counts` says; `path` names it in errors.
    pub fn new(
        out: &'w mut dyn Write,
        path: &'w Path,
        counts: &[u32; 256],
    ) -> Result<IndexWriter<'w>, StoreError> {
        let mut w = IndexWriter {
            out,
            path,
            hash: Sha1::new(),
            count: 0,
            written: [0; 3],
            large: Vec::new(),
        };
        w.put(&MAGIC)?;
        let mut sum = 0u32;
        for c in counts {
            sum = sum
                .checked_add(*c)
                .ok_or_else(|| w.error("more objects than a pack index can list"))?;
            w.put(&sum.to_be_bytes())?;
        }
        w.count = u64::from(sum);
        Ok(w)
    }

    fn error(&self, why: &str) -> StoreError {
        StoreError::io("write", self.path, std::io::Error::other(why.to_string()))
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.hash.update(bytes);
        self.out
            .write_all(bytes)
            .map_err(|e| StoreError::io("write", self.path, e))
    }

    /// Counts an item of `table`, refusing one out of order.
    fn item(&mut self, table: Table, bytes: &[u8]) -> Result<(), StoreError> {
        let t = table as usize;
        if self.written[..t].iter().any(|w| *w != self.count) || self.written[t] == self.count {
            return Err(self.error("a pack index's tables were written out of order"));
        }
        self.written[t] += 1;
        self.put(bytes)
    }

    pub fn name(&mut self, id: &[u8; 20]) -> Result<(), StoreError> {
        self.item(Table::Names, id)
    }

    pub fn crc(&mut self, crc: u32) -> Result<(), StoreError> {
        self.item(Table::Crcs, &crc.to_be_bytes())
    }

    pub fn offset(&mut self, offset: u64) -> Result<(), StoreError> {
        let small = if offset < 0x8000_0000 {
            offset as u32
        } else {
            self.large.push(offset);
            0x8000_0000 | (self.large.len() - 1) as u32
        };
        self.item(Table::Offsets, &small.to_be_bytes())
    }

    /// Ends the index: the 8-byte offsets, the pack's checksum, the
    /// index's own.
    pub fn finish(mut self, pack_checksum: &[u8; 20]) -> Result<(), StoreError> {
        if self.written != [self.count; 3] {
            return Err(self.error("a pack index was ended before all its tables were written"));
        }
        for offset in std::mem::take(&mut self.large) {
            self.put(&offset.to_be_bytes())?;
        }
        self.put(pack_checksum)?;
        let own: [u8; 20] = std::mem::take(&mut self.hash).finalize().into();
        self.out
            .write_all(&own)
            .map_err(|e| StoreError::io("write", self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Writes an index of `objects` (id, CRC-32, offset; in the order
    /// given) to `path`.
    fn write_index(path: &Path, objects: &[([u8; 20], u32, u64)]) -> TestResult {
        let mut counts = [0u32; 256];
        for (name, _, _) in objects {
            counts[name[0] as usize] += 1;
        }
        let mut out = Vec::new();
        let mut w = IndexWriter::new(&mut out, path, &counts)?;
        for (name, _, _) in objects {
            w.name(name)?;
        }
        for (_, crc, _) in objects {
            w.crc(*crc)?;
        }
        for (_, _, offset) in objects {
            w.offset(*offset)?;
        }
        w.finish(&[7; 20])?;
        std::fs::write(path, out)?;
        Ok(())
    }

    /// `result` failed, with a message ending in `end`.
    fn fails_with<T: std::fmt::Debug>(result: Result<T, StoreError>, end: &str) {
        let err = result.map_err(|e| e.to_string());
        assert!(
            err.as_ref().is_err_and(|e| e.ends_with(end)),
            "{err:?} does not end in {end:?}"
        );
    }

    fn id(first: u8, last: u8) -> [u8; 20] {
        let mut name = [0u8; 20];
        name[0] = first;
        name[19] = last;
        name
    }

    /// An id, and the indexes that list it with where each lists it.
    type Held = ([u8; 20], Vec<(usize, u64)>);

    /// Every id of `indexes` as the walk gives them, with their holders.
    fn walked(indexes: &[IndexFile]) -> Result<Vec<Held>, StoreError> {
        let mut walk = Walk::new(indexes)?;
        let mut holders = Vec::new();
        let mut out = Vec::new();
        while let Some(name) = walk.next(&mut holders)? {
            out.push((name, holders.clone()));
        }
        Ok(out)
    }

    #[test]
    fn offsets_past_two_gigabytes_are_read_back_from_the_table_of_large_ones() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.idx");
        let objects = [
            (id(1, 0), 11, 12),
            (id(1, 1), 22, 5_000_000_000),
            (id(200, 0), 33, 0x8000_0000),
        ];
        write_index(&path, &objects)?;
        let index = IndexFile::open(&path)?;
        assert_eq!(index.count(), 3);
        let (mut crcs, mut offsets) = (index.crcs(4096), index.offsets(4096));
        for (i, (name, crc, offset)) in objects.iter().enumerate() {
            assert_eq!(index.name_at(i as u64)?, *name);
            assert_eq!(crcs.next_u32()?, *crc);
            assert_eq!(index.offset(offsets.next_u32()?)?, *offset);
            assert_eq!(index.offset_at(i as u64)?, *offset);
        }
        assert_eq!(index.name_of_offset(5_000_000_000)?, Some(id(1, 1)));
        assert_eq!(index.name_of_offset(13)?, None);
        Ok(())
    }

    #[test]
    fn id_keys_order_as_the_ids_bytes_do() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let ids: Vec<[u8; 20]> = (0..200)
            .map(|i| {
                let mut id = [0u8; 20];
                for b in &mut id {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Few values, so that ids share long prefixes.
                    *b = (seed % 3) as u8 * 0x7f;
                }
                id[i % 20] = (i % 256) as u8;
                id
            })
            .collect();
        for a in &ids {
            assert_eq!(IdKey::of(a).bytes(), *a);
            for b in &ids {
                assert_eq!(IdKey::of(a).cmp(&IdKey::of(b)), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn a_walk_gives_each_id_once_with_every_index_that_lists_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (a, b, c) = (
            dir.path().join("a.idx"),
            dir.path().join("b.idx"),
            dir.path().join("c.idx"),
        );
        write_index(&a, &[(id(1, 0), 0, 12), (id(3, 0), 0, 40)])?;
        write_index(
            &b,
            &[(id(0, 9), 0, 12), (id(3, 0), 0, 30), (id(9, 0), 0, 50)],
        )?;
        write_index(&c, &[])?;
        let indexes = [
            IndexFile::open(&a)?,
            IndexFile::open(&b)?,
            IndexFile::open(&c)?,
        ];
        assert_eq!(
            walked(&indexes)?,
            vec![
                (id(0, 9), vec![(1, 0)]),
                (id(1, 0), vec![(0, 0)]),
                (id(3, 0), vec![(0, 1), (1, 1)]),
                (id(9, 0), vec![(1, 2)]),
            ]
        );
        Ok(())
    }

    #[test]
    fn an_index_whose_ids_are_out_of_order_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.idx");
        write_index(&path, &[(id(1, 5), 0, 12), (id(1, 4), 0, 40)])?;
        let index = [IndexFile::open(&path)?];
        fails_with(walked(&index), "the pack index's ids are not in order");
        Ok(())
    }

    #[test]
    fn a_cut_index_and_a_file_that_is_no_index_are_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.idx");
        write_index(&path, &[(id(1, 0), 0, 12), (id(2, 0), 0, 40)])?;
        let whole = std::fs::read(&path)?;
        std::fs::write(&path, &whole[..whole.len() - 41])?;
        fails_with(IndexFile::open(&path), "the pack index is cut short");
        std::fs::write(&path, vec![b'x'; whole.len()])?;
        fails_with(IndexFile::open(&path), "not a version 2 pack index");
        Ok(())
    }

    #[test]
    fn tables_written_out_of_order_or_short_are_refused() -> TestResult {
        let path = Path::new("x.idx");
        let mut counts = [0u32; 256];
        counts[1] = 2;
        let mut out = Vec::new();
        let mut w = IndexWriter::new(&mut out, path, &counts)?;
        w.name(&id(1, 0))?;
        fails_with(w.crc(5), "written out of order");
        w.name(&id(1, 1))?;
        fails_with(w.name(&id(1, 2)), "written out of order");
        fails_with(
            w.finish(&[0; 20]),
            "ended before all its tables were written",
        );
        Ok(())
    }
}
