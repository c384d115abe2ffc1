//! Trees composed by gov: a base tree with files put in or taken out.
//!
//! Each new tree is written through the batch ([`Staged::write`]), so that
//! in a batch it goes straight to memory (see `memory_odb`) instead of
//! through libgit2's tree builder, which asks every backend about each new
//! tree first. The trees are byte for byte what libgit2's
//! `git_tree_create_updated` writes for the same change (a test compares
//! ids), and the same changes are refused.

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
    update(repo, staged, base, &changes, true)?
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
) -> Result<Option<Oid>, StoreError> {
    // Sorted as git sorts a tree: by name, a folder's name with a `/`.
    let mut entries: BTreeMap<Vec<u8>, (i32, Oid)> = BTreeMap::new();
    if let Some(base) = base {
        for e in repo.find_tree(base)?.iter() {
            let mode = e.filemode_raw();
            entries.insert(sort_key(e.name_bytes(), mode), (mode, e.id()));
        }
    }
    // The changes below each folder, in the order given.
    let mut folders: BTreeMap<&str, Vec<Change<'_>>> = BTreeMap::new();
    for change in changes {
        match change.parts {
            [] => return Err(git2::Error::from_str("an empty path").into()),
            [name] => {
                let as_file = name.as_bytes().to_vec();
                let as_folder = sort_key(name.as_bytes(), TREE_MODE);
                match change.blob {
                    Some(_) if entries.contains_key(&as_folder) => {
                        return Err(replace_error("tree", change.path));
                    }
                    Some(_) if entries.get(&as_file).is_some_and(|(m, _)| *m == LINK_MODE) => {
                        return Err(replace_error("commit", change.path));
                    }
                    Some(blob) => {
                        entries.insert(as_file, (FILE_MODE, blob));
                    }
                    None => {
                        if entries.remove(&as_file).is_none()
                            && entries.remove(&as_folder).is_none()
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
        let sub_base = entries.get(&key).map(|(_, id)| *id);
        match update(repo, staged, sub_base, &below, false)? {
            Some(tree) => {
                entries.insert(key, (TREE_MODE, tree));
            }
            None => {
                entries.remove(&key);
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
        data.extend_from_slice(format!("{mode:o} ").as_bytes());
        data.extend_from_slice(name);
        data.push(0);
        data.extend_from_slice(id.as_bytes());
    }
    Ok(Some(staged.write(repo, ObjectType::Tree, &data)?))
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

    #[test]
    fn a_tree_composed_here_is_the_one_libgit2_writes() -> TestResult {
        let dir = tempfile::tempdir()?;
        let repo = Repository::init(dir.path())?;
        let blob = |text: &str| repo.blob(text.as_bytes());
        let (a, b, c) = (blob("a\n")?, blob("b\n")?, blob("c\n")?);
        let set = |paths: &[&str], blob: Oid| -> Vec<(String, Option<Oid>)> {
            paths.iter().map(|p| (p.to_string(), Some(blob))).collect()
        };
        // Names that sort differently as files and as folders (`foo` as a
        // folder sorts after `foo.txt` and `foo-bar`).
        let start = set(
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
            set(&["proposals/2026/11/0a/p3.toml"], b),
            set(&["proposals/2026/12/7c/p4.toml"], b),
            // A file replaced, and several changes at once.
            set(&["foo.txt", "foo/y", "a/b/c/d"], c),
            // A removal that empties two folders, and one that does not.
            vec![("proposals/2026/10/ff/p0.toml".into(), None)],
            vec![
                ("proposals/2026/11/0a/p1.toml".into(), None),
                ("foo-bar".into(), None),
            ],
            // A file at the root.
            set(&["README.md"], c),
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
