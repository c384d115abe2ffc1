//! Trees composed by gov: a base tree with files put in or taken out.
//!
//! Each new tree is written through the batch ([`Staged::write`]), so that
//! in a batch it goes straight to memory (see `memory_odb`) instead of
//! through libgit2's tree builder, which asks every backend about each new
//! tree first. The trees are byte for byte what libgit2's
//! `git_tree_create_updated` writes for the same change (a test compares
//! ids), and the same changes are refused.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use git2::{ObjectType, Oid, Repository};

use super::git::{Staged, StoreError};

/// A tree's mode (`40000`, as git writes it) and a file's (`100644`).
const TREE_MODE: i32 = 0o040000;
const FILE_MODE: i32 = 0o100644;
/// A submodule's entry (a commit).
const LINK_MODE: i32 = 0o160000;

/// `base` (or an empty tree) with each `(path, blob)` of `files` put in
/// as a file (`None`: taken out). Folders a removal leaves empty go too;
/// the root tree is written even when empty. Returns the new root tree.
pub fn with_files(
    repo: &Repository,
    staged: &mut Staged,
    base: Option<Oid>,
    files: &[(String, Option<Oid>)],
) -> Result<Oid, StoreError> {
    compose(repo, staged, base, files, Keep::No)
}

/// [`with_files`] for a tree that will be the base of the next ones (an
/// approval's merge on `main`, which the next approval composes on): the
/// trees it writes are kept as read ([`base_entries`]), so the next one
/// neither reads them back nor parses them again.
pub fn with_files_kept(
    repo: &Repository,
    staged: &mut Staged,
    base: Option<Oid>,
    files: &[(String, Option<Oid>)],
) -> Result<Oid, StoreError> {
    compose(repo, staged, base, files, Keep::Yes)
}

/// Whether [`update`] keeps the trees it writes in [`READ_TREES`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    Yes,
    No,
}

fn compose(
    repo: &Repository,
    staged: &mut Staged,
    base: Option<Oid>,
    files: &[(String, Option<Oid>)],
    keep: Keep,
) -> Result<Oid, StoreError> {
    let mut changes = Vec::with_capacity(files.len());
    for (path, blob) in files {
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts {
            check_name(part, path)?;
        }
        changes.push((parts, *blob, path.as_str()));
    }
    let changes: Vec<Change<'_>> = changes
        .iter()
        .map(|(parts, blob, path)| Change {
            parts,
            blob: *blob,
            path,
        })
        .collect();
    update(repo, staged, base, &changes, true, keep)?
        .ok_or_else(|| git2::Error::from_str("the root tree was not written").into())
}

/// A file to put in (`blob`) or take out, `parts` its path below the
/// tree at hand, `path` the whole of it (for errors).
struct Change<'a> {
    parts: &'a [&'a str],
    blob: Option<Oid>,
    path: &'a str,
}

/// One level: `base` with `changes` applied. `None` when the tree would
/// be empty and is not the root.
fn update(
    repo: &Repository,
    staged: &mut Staged,
    base: Option<Oid>,
    changes: &[Change<'_>],
    root: bool,
    keep: Keep,
) -> Result<Option<Oid>, StoreError> {
    // Sorted as git sorts a tree: by name, a folder's name with a `/`.
    let mut entries: BTreeMap<Key, (i32, Oid)> = match base {
        Some(base) => base_entries(repo, base)?.iter().cloned().collect(),
        None => BTreeMap::new(),
    };
    // The changes below each folder, in the order given.
    let mut folders: BTreeMap<&str, Vec<Change<'_>>> = BTreeMap::new();
    for change in changes {
        match change.parts {
            [] => return Err(git2::Error::from_str("an empty path").into()),
            [name] => {
                let as_file = name.as_bytes();
                let as_folder = sort_key(name.as_bytes(), TREE_MODE);
                match change.blob {
                    Some(_) if entries.contains_key(&*as_folder) => {
                        return Err(replace_error("tree", change.path));
                    }
                    Some(_) if entries.get(as_file).is_some_and(|(m, _)| *m == LINK_MODE) => {
                        return Err(replace_error("commit", change.path));
                    }
                    Some(blob) => {
                        entries.insert(Key::from(as_file), (FILE_MODE, blob));
                    }
                    None => {
                        if entries.remove(as_file).is_none()
                            && entries.remove(&*as_folder).is_none()
                        {
                            return Err(git2::Error::from_str(&format!(
                                "failed to remove entry: file isn't in the tree - {name}"
                            ))
                            .into());
                        }
                    }
                }
            }
            [folder, rest @ ..] => folders.entry(*folder).or_default().push(Change {
                parts: rest,
                blob: change.blob,
                path: change.path,
            }),
        }
    }
    for (folder, below) in folders {
        let key = sort_key(folder.as_bytes(), TREE_MODE);
        if entries.contains_key(folder.as_bytes()) {
            return Err(git2::Error::from_str("D/F conflict when updating tree").into());
        }
        let sub_base = entries.get(&*key).map(|(_, id)| *id);
        match update(repo, staged, sub_base, &below, false, keep)? {
            Some(tree) => {
                entries.insert(Key::from(key), (TREE_MODE, tree));
            }
            None => {
                entries.remove(&*key);
            }
        }
    }
    if entries.is_empty() && !root {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(entries.len() * 64);
    for (key, (mode, id)) in &entries {
        let name = match mode & 0o170000 == TREE_MODE {
            true => &key[..key.len() - 1],
            false => &key[..],
        };
        match *mode {
            TREE_MODE => data.extend_from_slice(b"40000 "),
            FILE_MODE => data.extend_from_slice(b"100644 "),
            other => data.extend_from_slice(format!("{other:o} ").as_bytes()),
        }
        data.extend_from_slice(name);
        data.push(0);
        data.extend_from_slice(id.as_bytes());
    }
    let id = staged.write(repo, ObjectType::Tree, &data)?;
    if keep == Keep::Yes {
        remember(id, entries.into_iter().collect());
    }
    Ok(Some(id))
}

/// A name's sort key in a tree (see [`sort_key`]), shared between the
/// trees composed on a base and the base kept in [`READ_TREES`].
type Key = std::sync::Arc<[u8]>;

/// A tree's entries as [`update`] sorts them: each name's sort key, with
/// its mode and id.
type Entries = std::sync::Arc<[(Key, (i32, Oid))]>;

/// The trees [`update`] read lately, by id, and how many entries they
/// hold in all. Shared by the whole process: a tree's id names its
/// content in any repository.
static READ_TREES: std::sync::Mutex<(BTreeMap<Oid, Entries>, usize)> =
    std::sync::Mutex::new((BTreeMap::new(), 0));

/// The most entries [`READ_TREES`] holds (about 90 bytes each: the name
/// in its own allocation, its mode and id) before it starts over.
const READ_TREES_ENTRIES: usize = 16_384;

/// The entries of tree `id`, read once and kept while it is a base.
///
/// libgit2's object cache is off (see `git_memory`), and a proposal filed
/// on `main` is composed on `main`'s trees: on a `main` that holds
/// thousands of approved proposals, a month's folder holds 256 folders,
/// and reading it from its pack (inflated and hashed again) for every
/// submission made the submissions' cost grow with the approvals. The
/// same trees serve every submission until `main` moves.
fn base_entries(repo: &Repository, id: Oid) -> Result<Entries, StoreError> {
    // A thread that panicked holding the table left trees that never go
    // stale: the table is used as it is.
    let table = || {
        READ_TREES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some(kept) = table().0.get(&id).cloned() {
        return Ok(kept);
    }
    let tree = repo.find_tree(id)?;
    let entries: Entries = tree
        .iter()
        .map(|e| {
            let mode = e.filemode_raw();
            (Key::from(sort_key(e.name_bytes(), mode)), (mode, e.id()))
        })
        .collect();
    remember(id, entries.clone());
    Ok(entries)
}

/// Keeps tree `id`'s `entries` in [`READ_TREES`], starting the table over
/// when it would hold more than [`READ_TREES_ENTRIES`].
fn remember(id: Oid, entries: Entries) {
    let mut kept = READ_TREES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if kept.1 + entries.len() > READ_TREES_ENTRIES {
        *kept = (BTreeMap::new(), 0);
    }
    // Another thread may have kept it meanwhile: counted once.
    let len = entries.len();
    if len <= READ_TREES_ENTRIES && kept.0.insert(id, entries).is_none() {
        kept.1 += len;
    }
}

/// The id and mode of what tree `tree` holds at `path` (a file, a folder
/// or a submodule's commit), as `Tree::get_path` finds it; `None` when
/// nothing is there. Each level is read through the trees kept for
/// [`update`] ([`base_entries`]): an approval looks its file up in
/// `main`'s trees, which the merge it then composes reads anyway.
pub fn entry_at(
    repo: &Repository,
    tree: Oid,
    path: &str,
) -> Result<Option<(Oid, i32)>, StoreError> {
    let mut at = tree;
    let mut parts = path.split('/').peekable();
    while let Some(part) = parts.next() {
        let entries = base_entries(repo, at)?;
        // Sorted by their keys, as git sorts a tree (a tree whose entries
        // are out of order is searched as libgit2 searches it, by halves).
        let find = |key: &[u8]| {
            entries
                .binary_search_by(|(k, _)| (**k).cmp(key))
                .ok()
                .map(|i| entries[i].1)
        };
        let folder = find(&sort_key(part.as_bytes(), TREE_MODE));
        if parts.peek().is_none() {
            let found = folder.or_else(|| find(part.as_bytes()));
            return Ok(found.map(|(mode, id)| (id, mode)));
        }
        match folder {
            Some((_, id)) => at = id,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// A file (a blob, a symlink or a submodule's commit) that differs between
/// two trees: its path, and its id and mode on each side (`None`: not
/// there, or not a file there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub old: Option<(Oid, i32)>,
    pub new: Option<(Oid, i32)>,
}

impl FileChange {
    /// The file's blob (or commit) on the new side; `None`: deleted there.
    pub fn new_id(&self) -> Option<Oid> {
        self.new.map(|(id, _)| id)
    }
}

/// The files that differ between `old` and `new` (`None`: the empty tree),
/// as a diff of the two trees without rename detection lists them: added,
/// deleted, or changed in content or mode; a file that became a folder is
/// deleted and the folder's files added. In git's order (a folder sorts as
/// its name followed by `/`), which is libgit2's diff's. A folder with the
/// same id on both sides is not read, so the cost is that of the changed
/// paths, not of the trees' size (libgit2's tree-to-tree diff reads every
/// folder of both trees: on a `main` holding thousands of approved
/// proposals, that was most of an approval's time). A path that is not
/// UTF-8 is an error, and so is a tree whose entries are not in git's
/// order.
pub fn changed_files(
    repo: &Repository,
    old: Option<&git2::Tree<'_>>,
    new: Option<&git2::Tree<'_>>,
) -> Result<Vec<FileChange>, git2::Error> {
    let mut out = Vec::new();
    compare_level(repo, "", old, new, &mut out)?;
    Ok(out)
}

/// One level of [`changed_files`]: the entries of `old` and `new` under
/// `prefix`. Both trees list their entries in git's order, so one pass
/// over the two pairs them: an entry whose id and mode are the same on
/// both sides costs a comparison, without an allocation. A tree whose
/// entries are not in that order is refused (a lookup by name in it would
/// not be trusted either).
fn compare_level(
    repo: &Repository,
    prefix: &str,
    old: Option<&git2::Tree<'_>>,
    new: Option<&git2::Tree<'_>>,
    out: &mut Vec<FileChange>,
) -> Result<(), git2::Error> {
    let (mut before, mut after) = (Side::new(old), Side::new(new));
    loop {
        let order = match (before.peek(), after.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => git_order(&a, &b),
        };
        // A file on one side and a folder of the same name on the other
        // are met apart (git sorts a folder as its name with a `/`): the
        // file's deletion or addition, then the folder's files, as
        // libgit2's diff lists them.
        let (was, is) = match order {
            Ordering::Less => (before.take(prefix)?, None),
            Ordering::Greater => (None, after.take(prefix)?),
            Ordering::Equal => (before.take(prefix)?, after.take(prefix)?),
        };
        if let (Some(a), Some(b)) = (&was, &is) {
            if a.id() == b.id() && a.filemode() == b.filemode() {
                continue;
            }
        }
        let Some(named) = was.as_ref().or(is.as_ref()) else {
            continue;
        };
        let name = std::str::from_utf8(named.name_bytes()).map_err(|_| {
            git2::Error::from_str(&format!(
                "a path under `{prefix}` is not UTF-8: {}",
                String::from_utf8_lossy(named.name_bytes())
            ))
        })?;
        let path = format!("{prefix}{name}");
        let file = |e: &Option<git2::TreeEntry<'_>>| {
            e.as_ref()
                .filter(|e| !is_folder(e))
                .map(|e| (e.id(), e.filemode()))
        };
        let (old_file, new_file) = (file(&was), file(&is));
        if old_file.is_some() || new_file.is_some() {
            out.push(FileChange {
                path: path.clone(),
                old: old_file,
                new: new_file,
            });
        }
        let folder =
            |e: &Option<git2::TreeEntry<'_>>| -> Result<Option<git2::Tree<'_>>, git2::Error> {
                match e {
                    Some(e) if is_folder(e) => Ok(Some(repo.find_tree(e.id())?)),
                    _ => Ok(None),
                }
            };
        let (old_folder, new_folder) = (folder(&was)?, folder(&is)?);
        if old_folder.is_some() || new_folder.is_some() {
            compare_level(
                repo,
                &format!("{path}/"),
                old_folder.as_ref(),
                new_folder.as_ref(),
                out,
            )?;
        }
    }
    Ok(())
}

/// One tree's entries, read in order by [`compare_level`].
struct Side<'a, 't> {
    tree: Option<&'a git2::Tree<'t>>,
    next: usize,
}

impl<'a, 't> Side<'a, 't> {
    fn new(tree: Option<&'a git2::Tree<'t>>) -> Self {
        Side { tree, next: 0 }
    }

    fn peek(&self) -> Option<git2::TreeEntry<'a>> {
        self.tree.and_then(|t| t.get(self.next))
    }

    /// The next entry, checked to come after the one before it.
    fn take(&mut self, prefix: &str) -> Result<Option<git2::TreeEntry<'a>>, git2::Error> {
        let entry = self.peek();
        if let (Some(tree), Some(e), Some(last)) = (
            self.tree,
            &entry,
            self.next
                .checked_sub(1)
                .and_then(|i| self.tree.and_then(|t| t.get(i))),
        ) {
            if git_order(&last, e) != Ordering::Less {
                return Err(git2::Error::from_str(&format!(
                    "tree {} (`{prefix}`) does not list its entries in git's order",
                    tree.id()
                )));
            }
        }
        self.next += 1;
        Ok(entry)
    }
}

fn is_folder(e: &git2::TreeEntry<'_>) -> bool {
    e.kind() == Some(ObjectType::Tree)
}

/// Git's order of tree entries: by name, a folder's name with a `/`.
fn git_order(a: &git2::TreeEntry<'_>, b: &git2::TreeEntry<'_>) -> Ordering {
    let slash = |e: &git2::TreeEntry<'_>| -> &'static [u8] {
        if e.filemode() & 0o170000 == TREE_MODE {
            b"/"
        } else {
            b""
        }
    };
    a.name_bytes()
        .iter()
        .chain(slash(a))
        .cmp(b.name_bytes().iter().chain(slash(b)))
}

/// What libgit2 says when a file would replace an entry of another type
/// (a folder, or a submodule's commit).
fn replace_error(found: &str, path: &str) -> StoreError {
    git2::Error::from_str(&format!("cannot replace '{found}' with 'blob' at '{path}'")).into()
}

/// Where an entry sorts in a tree: its name, a folder's followed by `/`.
fn sort_key(name: &[u8], mode: i32) -> Vec<u8> {
    let mut key = name.to_vec();
    if mode & 0o170000 == TREE_MODE {
        key.push(b'/');
    }
    key
}

/// Refuses what libgit2 refuses as a tree entry's name.
fn check_name(part: &str, path: &str) -> Result<(), StoreError> {
    let bad = part.is_empty()
        || part == "."
        || part == ".."
        || part.eq_ignore_ascii_case(".git")
        || part.contains('\0');
    if bad {
        return Err(git2::Error::from_str(&format!(
            "failed to insert entry: invalid name for a tree entry - {path}"
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::build::TreeUpdateBuilder;
    use git2::FileMode;

    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    /// Each of `paths` put in as `blob`.
    fn put(paths: &[&str], blob: Oid) -> Vec<(String, Option<Oid>)> {
        paths.iter().map(|p| (p.to_string(), Some(blob))).collect()
    }

    /// libgit2's tree for the same change, written loose.
    fn libgit2_tree(
        repo: &Repository,
        base: Option<Oid>,
        files: &[(String, Option<Oid>)],
    ) -> Result<Oid, git2::Error> {
        let base = match base {
            Some(b) => repo.find_tree(b)?,
            None => repo.find_tree(repo.treebuilder(None)?.write()?)?,
        };
        let mut update = TreeUpdateBuilder::new();
        for (path, blob) in files {
            match blob {
                Some(b) => update.upsert(path.as_str(), *b, FileMode::Blob),
                None => update.remove(path.as_str()),
            };
        }
        update.create_updated(repo, &base)
    }

    /// The changes libgit2's tree-to-tree diff lists, as [`changed_files`]
    /// gives them.
    fn libgit2_changes(
        repo: &Repository,
        old: Option<&git2::Tree<'_>>,
        new: Option<&git2::Tree<'_>>,
    ) -> TestResult<Vec<FileChange>> {
        let diff = repo.diff_tree_to_tree(old, new, None)?;
        let side =
            |f: git2::DiffFile<'_>| (!f.id().is_zero()).then(|| (f.id(), i32::from(f.mode())));
        let mut out = Vec::new();
        for d in diff.deltas() {
            let path = d
                .new_file()
                .path()
                .or(d.old_file().path())
                .ok_or("no path")?;
            out.push(FileChange {
                path: path.to_str().ok_or("not UTF-8")?.to_string(),
                old: side(d.old_file()),
                new: side(d.new_file()),
            });
        }
        Ok(out)
    }

    /// `entry_at` finds what libgit2's `get_path` finds: files, folders,
    /// names that sort around a folder's (`a.b`, `a-b` beside `a/`), and
    /// nothing where nothing is.
    #[test]
    fn entry_at_finds_what_get_path_finds() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init(dir.path())?;
        let files: Vec<(String, Option<Oid>)> = [
            "a/b/c.toml",
            "a/b/d.toml",
            "a.b",
            "a-b/x",
            "proposals/2026/11/1d/p-1.toml",
            "top",
        ]
        .iter()
        .map(|p| Ok((p.to_string(), Some(repo.blob(p.as_bytes())?))))
        .collect::<Result<_, git2::Error>>()?;
        let root = libgit2_tree(&repo, None, &files)?;
        let tree = repo.find_tree(root)?;
        let paths = [
            "a",
            "a/b",
            "a/b/c.toml",
            "a/b/d.toml",
            "a/b/e.toml",
            "a.b",
            "a-b",
            "a-b/x",
            "a.b/x",
            "top",
            "top/x",
            "proposals/2026/11/1d/p-1.toml",
            "proposals/2026/11/1d/p-2.toml",
            "proposals/2026/12/1d/p-1.toml",
            "missing",
        ];
        for path in paths {
            let expected = tree
                .get_path(std::path::Path::new(path))
                .ok()
                .map(|e| (e.id(), e.filemode_raw()));
            assert_eq!(entry_at(&repo, root, path)?, expected, "{path}");
        }
        Ok(())
    }

    #[test]
    fn changed_files_are_those_libgit2_diffs_list() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init(dir.path())?;
        let blob = |text: &str| repo.blob(text.as_bytes());
        let (one, two, three) = (blob("one")?, blob("two")?, blob("three")?);
        let tree = |files: &[(&str, Oid, FileMode)]| -> TestResult<Oid> {
            let empty = repo.find_tree(repo.treebuilder(None)?.write()?)?;
            let mut update = TreeUpdateBuilder::new();
            for (path, id, mode) in files {
                update.upsert(*path, *id, *mode);
            }
            Ok(update.create_updated(&repo, &empty)?)
        };
        let many: Vec<String> = (0..40).map(|i| format!("same/f{i:02}.txt")).collect();
        let mut before = vec![
            ("a.txt", one, FileMode::Blob),
            ("dir/b.txt", one, FileMode::Blob),
            ("dir/sub/c.txt", two, FileMode::Blob),
            ("x", one, FileMode::Blob),
            ("y/z.txt", two, FileMode::Blob),
            ("run.sh", three, FileMode::Blob),
            ("gone/deep/file", one, FileMode::Blob),
            ("a-b", one, FileMode::Blob),
            // Between a file's place and its folder's: `x`, `x.md`, `x/`.
            ("x.md", one, FileMode::Blob),
            ("y-1", one, FileMode::Blob),
        ];
        before.extend(many.iter().map(|p| (p.as_str(), one, FileMode::Blob)));
        let mut after = vec![
            ("a.txt", two, FileMode::Blob),
            ("dir/sub/c.txt", two, FileMode::Blob),
            ("dir/sub/d.txt", three, FileMode::Blob),
            ("x/inner.txt", one, FileMode::Blob),
            ("y", two, FileMode::Blob),
            ("run.sh", three, FileMode::BlobExecutable),
            ("new/deep/file", one, FileMode::Blob),
            ("a-b", one, FileMode::Blob),
            ("a/b", one, FileMode::Blob),
            ("x.md", two, FileMode::Blob),
            ("y-1", three, FileMode::Blob),
        ];
        after.extend(many.iter().map(|p| (p.as_str(), one, FileMode::Blob)));
        let (old, new) = (
            repo.find_tree(tree(&before)?)?,
            repo.find_tree(tree(&after)?)?,
        );
        let expected = libgit2_changes(&repo, Some(&old), Some(&new))?;
        assert_eq!(expected.len(), 13, "{expected:#?}");
        assert_eq!(changed_files(&repo, Some(&old), Some(&new))?, expected);
        // Each way round, and against nothing.
        for (a, b) in [
            (Some(&new), Some(&old)),
            (None, Some(&new)),
            (Some(&old), None),
        ] {
            assert_eq!(changed_files(&repo, a, b)?, libgit2_changes(&repo, a, b)?);
        }
        assert_eq!(changed_files(&repo, Some(&old), Some(&old))?, vec![]);
        Ok(())
    }

    #[test]
    fn a_tree_out_of_git_order_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init(dir.path())?;
        let blob = repo.blob(b"text")?;
        let raw = |names: &[&str]| -> Result<Oid, git2::Error> {
            let mut data = Vec::new();
            for name in names {
                data.extend_from_slice(format!("100644 {name}\0").as_bytes());
                data.extend_from_slice(blob.as_bytes());
            }
            repo.odb()?.write(ObjectType::Tree, &data)
        };
        let (sorted, unsorted) = (raw(&["a", "b"])?, raw(&["b", "a"])?);
        let (sorted, unsorted) = (repo.find_tree(sorted)?, repo.find_tree(unsorted)?);
        let err = changed_files(&repo, None, Some(&unsorted))
            .err()
            .ok_or("an unsorted tree was compared")?;
        assert_eq!(
            err.message(),
            format!(
                "tree {} (``) does not list its entries in git's order",
                unsorted.id()
            )
        );
        assert_eq!(changed_files(&repo, None, Some(&sorted))?.len(), 2);
        Ok(())
    }

    #[test]
    fn a_tree_composed_here_is_the_one_libgit2_writes() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init(dir.path())?;
        let blob = |text: &str| repo.blob(text.as_bytes());
        let (a, b, c) = (blob("a\n")?, blob("b\n")?, blob("c\n")?);
        // Names that sort differently as files and as folders (`foo` as a
        // folder sorts after `foo.txt` and `foo-bar`).
        let start = put(
            &[
                "foo/x.toml",
                "foo.txt",
                "foo-bar",
                "proposals/2026/11/0a/p1.toml",
                "proposals/2026/11/0a/p2.toml",
                "proposals/2026/10/ff/p0.toml",
                "policies/base.cedar",
                "z",
            ],
            a,
        );
        let mut staged = Staged::default();
        let ours = with_files(&repo, &mut staged, None, &start)?;
        assert_eq!(ours, libgit2_tree(&repo, None, &start)?);
        // The same trees written to a batch's memory (ids hashed by gov).
        let memory = std::sync::Arc::new(crate::store::memory_odb::MemoryObjects::attach(&repo)?);
        let mut in_memory = Staged::in_memory(memory);
        assert_eq!(with_files(&repo, &mut in_memory, None, &start)?, ours);
        let cases: Vec<Vec<(String, Option<Oid>)>> = vec![
            // A new file deep down, next to others and in a new folder.
            put(&["proposals/2026/11/0a/p3.toml"], b),
            put(&["proposals/2026/12/7c/p4.toml"], b),
            // A file replaced, and several changes at once.
            put(&["foo.txt", "foo/y", "a/b/c/d"], c),
            // A removal that empties two folders, and one that does not.
            vec![("proposals/2026/10/ff/p0.toml".into(), None)],
            vec![
                ("proposals/2026/11/0a/p1.toml".into(), None),
                ("foo-bar".into(), None),
            ],
            // A file at the root.
            put(&["README.md"], c),
        ];
        for files in cases {
            let mut staged = Staged::default();
            let changed = with_files(&repo, &mut staged, Some(ours), &files)?;
            assert_eq!(
                changed,
                libgit2_tree(&repo, Some(ours), &files)?,
                "{files:?}"
            );
        }
        // Everything taken out: the root is written, empty.
        let all: Vec<(String, Option<Oid>)> =
            start.iter().map(|(p, _)| (p.clone(), None)).collect();
        let mut staged = Staged::default();
        let empty = with_files(&repo, &mut staged, Some(ours), &all)?;
        assert_eq!(empty, libgit2_tree(&repo, Some(ours), &all)?);
        assert_eq!(empty.to_string(), crate::store::git::EMPTY_TREE);
        Ok(())
    }

    /// Trees composed one on another with their trees kept as written (an
    /// approval's merge on the one before) are the trees libgit2 writes,
    /// and `entry_at` finds each file put in or taken out.
    #[test]
    fn trees_composed_on_kept_ones_are_those_libgit2_writes() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init(dir.path())?;
        let (a, b) = (repo.blob(b"a\n")?, repo.blob(b"b\n")?);
        let start = put(
            &[
                "proposals/2026/11/0a/p1.toml",
                "proposals/2026/10/ff/p0.toml",
                "foo.txt",
                "foo-bar",
            ],
            a,
        );
        let steps = [
            put(&["proposals/2026/11/0a/p2.toml"], b),
            put(&["proposals/2026/11/7c/p3.toml", "foo/x"], b),
            vec![("proposals/2026/10/ff/p0.toml".into(), None)],
            put(&["foo.txt"], b),
            vec![("foo-bar".into(), None)],
        ];
        let mut staged = Staged::default();
        let mut at = with_files_kept(&repo, &mut staged, None, &start)?;
        assert_eq!(at, libgit2_tree(&repo, None, &start)?);
        for files in &steps {
            let next = with_files_kept(&repo, &mut staged, Some(at), files)?;
            assert_eq!(next, libgit2_tree(&repo, Some(at), files)?, "{files:?}");
            for (path, blob) in files {
                assert_eq!(entry_at(&repo, next, path)?.map(|(id, _)| id), *blob);
            }
            at = next;
        }
        Ok(())
    }

    #[test]
    fn what_libgit2_refuses_is_refused_with_the_path() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init(dir.path())?;
        let a = repo.blob(b"a\n")?;
        let mut staged = Staged::default();
        let base = with_files(&repo, &mut staged, None, &[("d/f".into(), Some(a))])?;
        let refused = |files: &[(String, Option<Oid>)]| -> String {
            let mut staged = Staged::default();
            match with_files(&repo, &mut staged, Some(base), files) {
                Ok(id) => format!("written: {id}"),
                Err(e) => e.to_string(),
            }
        };
        // The refusals libgit2 makes in the same words.
        for files in [
            vec![("d".to_string(), Some(a))],
            vec![("d/f/g".to_string(), Some(a))],
            vec![("d/missing".to_string(), None)],
        ] {
            let theirs = libgit2_tree(&repo, Some(base), &files)
                .err()
                .map(|e| format!("git: {}", e.message()));
            assert_eq!(Some(refused(&files)), theirs, "{files:?}");
        }
        assert_eq!(
            refused(&[("d".into(), Some(a))]),
            "git: cannot replace 'tree' with 'blob' at 'd'"
        );
        assert_eq!(
            refused(&[("d/f/g".into(), Some(a))]),
            "git: D/F conflict when updating tree"
        );
        // A submodule (a commit entry) is not replaced by a file either.
        let mut tb = repo.treebuilder(Some(&repo.find_tree(base)?))?;
        tb.insert("sub", a, 0o160000)?;
        let with_sub = tb.write()?;
        let mut staged = Staged::default();
        let err = with_files(
            &repo,
            &mut staged,
            Some(with_sub),
            &[("sub".into(), Some(a))],
        );
        assert_eq!(
            err.err().map(|e| e.to_string()).as_deref(),
            Some("git: cannot replace 'commit' with 'blob' at 'sub'")
        );
        assert_eq!(
            libgit2_tree(&repo, Some(with_sub), &[("sub".into(), Some(a))])
                .err()
                .map(|e| e.message().to_string())
                .as_deref(),
            Some("cannot replace 'commit' with 'blob' at 'sub'")
        );
        assert_eq!(
            refused(&[("d/missing".into(), None)]),
            "git: failed to remove entry: file isn't in the tree - missing"
        );
        for bad in ["d//f", "../f", "d/.git/config", "/f"] {
            assert_eq!(
                refused(&[(bad.into(), Some(a))]),
                format!("git: failed to insert entry: invalid name for a tree entry - {bad}")
            );
        }
        Ok(())
    }
}
