//! Loading the policy set from a folder or from the `policies/` tree of a
//! commit, and canonicalising the paths a tool call names before they reach
//! the Cedar context.

use std::path::{Component, Path, PathBuf};

use crate::domain::paths;
use crate::domain::policy::{PolicyLoadError, PolicySet, PolicySource};

pub const SCHEMA_FILE: &str = "schema.cedarschema";
pub const ENTITIES_FILE: &str = "entities.json";
/// The folder of the governance repository that holds the policy set.
pub const POLICIES_DIR: &str = "policies";

#[derive(Debug, thiserror::Error)]
pub enum PolicyStoreError {
    #[error("no policy schema: `{path}` is missing")]
    MissingSchema { path: String },
    #[error("cannot read `{path}`")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not UTF-8 text")]
    NotText { path: String },
    #[error("cannot read the policies of commit `{commit}`")]
    Git {
        commit: String,
        #[source]
        source: git2::Error,
    },
    #[error(transparent)]
    Load(#[from] PolicyLoadError),
}

/// The sources of a policy set, before parsing.
struct Sources {
    schema: Option<PolicySource>,
    policies: Vec<PolicySource>,
    entities: Option<PolicySource>,
}

impl Sources {
    fn load(self, schema_path: String, version: &str) -> Result<PolicySet, PolicyStoreError> {
        let schema = self
            .schema
            .ok_or(PolicyStoreError::MissingSchema { path: schema_path })?;
        Ok(PolicySet::load(
            &schema,
            &self.policies,
            self.entities.as_ref(),
            version,
        )?)
    }
}

/// Loads `schema.cedarschema`, every `*.cedar` (sorted by name) and
/// `entities.json` (optional) from a folder.
pub fn load_dir(policies_dir: &Path, version: &str) -> Result<PolicySet, PolicyStoreError> {
    load_dir_shown(policies_dir, version, &paths::to_slash)
}

/// Loads the `policies/` folder of a working tree, its files named as in a
/// commit (`policies/tools.cedar`).
pub fn load_worktree(root: &Path, version: &str) -> Result<PolicySet, PolicyStoreError> {
    let dir = root.join(POLICIES_DIR);
    load_dir_shown(
        &dir,
        version,
        &|path: &Path| match path.strip_prefix(root) {
            Ok(rel) => paths::to_slash(rel),
            Err(_) => paths::to_slash(path),
        },
    )
}

fn load_dir_shown(
    policies_dir: &Path,
    version: &str,
    show: &dyn Fn(&Path) -> String,
) -> Result<PolicySet, PolicyStoreError> {
    let read = |path: &Path| -> Result<PolicySource, PolicyStoreError> {
        let shown = show(path);
        let text = std::fs::read_to_string(path).map_err(|source| PolicyStoreError::Io {
            path: shown.clone(),
            source,
        })?;
        Ok(PolicySource::new(shown, text))
    };
    let schema_path = policies_dir.join(SCHEMA_FILE);
    let entries = std::fs::read_dir(policies_dir).map_err(|source| PolicyStoreError::Io {
        path: show(policies_dir),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PolicyStoreError::Io {
            path: show(policies_dir),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".cedar") && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    let mut policies = Vec::with_capacity(names.len());
    for name in names {
        policies.push(read(&policies_dir.join(name))?);
    }
    let entities_path = policies_dir.join(ENTITIES_FILE);
    let sources = Sources {
        schema: if schema_path.is_file() {
            Some(read(&schema_path)?)
        } else {
            None
        },
        policies,
        entities: if entities_path.is_file() {
            Some(read(&entities_path)?)
        } else {
            None
        },
    };
    sources.load(show(&schema_path), version)
}

/// Loads the policy set from the `policies/` tree of a commit; its version is
/// the commit id.
pub fn load_commit(
    repo: &git2::Repository,
    commit: git2::Oid,
) -> Result<PolicySet, PolicyStoreError> {
    let version = commit.to_string();
    let git_err = |source| PolicyStoreError::Git {
        commit: version.clone(),
        source,
    };
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(git_err)?;
    let schema_path = format!("{POLICIES_DIR}/{SCHEMA_FILE}");
    let mut sources = Sources {
        schema: None,
        policies: Vec::new(),
        entities: None,
    };
    let dir = match tree.get_path(Path::new(POLICIES_DIR)) {
        Ok(entry) => Some(
            entry
                .to_object(repo)
                .and_then(|o| o.peel_to_tree())
                .map_err(git_err)?,
        ),
        Err(e) if e.code() == git2::ErrorCode::NotFound => None,
        Err(e) => return Err(git_err(e)),
    };
    if let Some(dir) = dir {
        // Tree entries come sorted by name.
        for entry in dir.iter() {
            let Some(name) = entry.name() else { continue };
            let is_schema = name == SCHEMA_FILE;
            let is_entities = name == ENTITIES_FILE;
            let is_policy = name.ends_with(".cedar");
            if entry.kind() != Some(git2::ObjectType::Blob)
                || !(is_schema || is_entities || is_policy)
            {
                continue;
            }
            let path = format!("{POLICIES_DIR}/{name}");
            let blob = repo.find_blob(entry.id()).map_err(git_err)?;
            let text = std::str::from_utf8(blob.content())
                .map_err(|_| PolicyStoreError::NotText { path: path.clone() })?
                .to_string();
            let source = PolicySource::new(path, text);
            if is_schema {
                sources.schema = Some(source);
            } else if is_entities {
                sources.entities = Some(source);
            } else {
                sources.policies.push(source);
            }
        }
    }
    sources.load(schema_path, &version)
}

/// The version of a policy folder on disk: the `HEAD` commit of the Git
/// repository it is in, else `working-tree`.
pub fn disk_version(policies_dir: &Path) -> String {
    git2::Repository::discover(policies_dir)
        .ok()
        .and_then(|repo| {
            repo.head()
                .ok()?
                .peel_to_commit()
                .ok()
                .map(|c| c.id().to_string())
        })
        .unwrap_or_else(|| "working-tree".to_string())
}

/// The path a tool call names, as the OS would resolve it: relative paths
/// are relative to `agent_dir`, symlinks are followed (also dangling ones and
/// those in the middle of the path), `.` and `..` resolved. Returns the path
/// relative to `repo_root` with `/` separators (absolute when outside the
/// repository) and whether it is inside `agent_dir`.
///
/// `~` and `~/…` are the home directory (`$HOME`), as tools expand them;
/// `~user/…`, or `~` without a `$HOME`, is never inside. A path whose
/// symlinks cannot be resolved (a loop, too many links) is never inside.
///
/// The hook always has the call's `cwd` and uses
/// [`canonical_tool_path_from`]; this form is the unit tests'.
#[cfg(test)]
pub fn canonical_tool_path(repo_root: &Path, agent_dir: &Path, raw: &str) -> (String, bool) {
    canonical_tool_path_from(repo_root, agent_dir, agent_dir, raw)
}

/// The path a tool call names, resolved as `canonical_tool_path` (above)
/// does, with relative paths taken from `base` (the folder the call runs
/// in, which Claude Code sends as `cwd`) instead of the agent's folder.
/// Whether the result is inside is still judged against `agent_dir`.
pub fn canonical_tool_path_from(
    repo_root: &Path,
    agent_dir: &Path,
    base: &Path,
    raw: &str,
) -> (String, bool) {
    let agent = resolve(&absolute(agent_dir));
    let root = resolve(&absolute(repo_root));
    let home_relative = raw == "~" || raw.starts_with("~/");
    let raw = if home_relative {
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home).join(raw[1..].trim_start_matches('/')),
            None => return (raw.to_string(), false),
        }
    } else if raw.starts_with('~') {
        return (raw.to_string(), false);
    } else {
        PathBuf::from(raw)
    };
    let resolved = if raw.is_absolute() {
        resolve_checked(&raw)
    } else {
        resolve_checked(&absolute(base).join(&raw))
    };
    let Some(target) = resolved else {
        return (paths::to_slash(&raw), false);
    };
    let inside = target.starts_with(&agent);
    let shown = paths::relative_to(&target, &root).unwrap_or_else(|| paths::to_slash(&target));
    (shown, inside)
}

/// The file a shell runs for `program`: a name with a `/` is a path from
/// `cwd`; a bare name is searched in each folder of `path_var` (`$PATH`, an
/// empty entry meaning `cwd`, as the shell does) for an executable file.
/// Symlinks are resolved. `None` when nothing is found (a builtin, a typo).
pub fn resolve_program(program: &str, path_var: &str, cwd: &Path) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    let cwd = absolute(cwd);
    if program.contains('/') {
        return resolve_checked(&cwd.join(program));
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() {
            cwd.clone()
        } else {
            cwd.join(dir)
        };
        let candidate = dir.join(program);
        if is_executable_file(&candidate) {
            return resolve_checked(&candidate);
        }
    }
    None
}

#[cfg(unix)]
fn is_executable_file(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn is_executable_file(p: &Path) -> bool {
    p.is_file()
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// How many symlinks one resolution follows before giving up, as Linux does.
const MAX_SYMLINKS: u32 = 40;

/// Resolves an absolute path component by component, following symlinks
/// where they exist; components that do not exist are taken as written.
fn resolve(path: &Path) -> PathBuf {
    resolve_checked(path).unwrap_or_else(|| paths::normalize(path))
}

/// [`resolve`], or `None` when the OS would give up (more than
/// [`MAX_SYMLINKS`] links): such a path is not known to be anywhere.
fn resolve_checked(path: &Path) -> Option<PathBuf> {
    let mut cur = PathBuf::from("/");
    let mut followed = 0;
    resolve_into(&mut cur, path, &mut followed);
    (followed <= MAX_SYMLINKS).then(|| paths::normalize(&cur))
}

fn resolve_into(cur: &mut PathBuf, path: &Path, followed: &mut u32) {
    for comp in path.components() {
        match comp {
            Component::Prefix(_) | Component::RootDir => {
                *cur = PathBuf::from(comp.as_os_str());
                if matches!(comp, Component::Prefix(_)) {
                    cur.push("/");
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                cur.pop();
            }
            Component::Normal(name) => {
                let candidate = cur.join(name);
                let is_link = std::fs::symlink_metadata(&candidate)
                    .map(|m| m.file_type().is_symlink())
                    .unwrap_or(false);
                if is_link {
                    *followed += 1;
                    if *followed > MAX_SYMLINKS {
                        return;
                    }
                    match std::fs::read_link(&candidate) {
                        Ok(target) => resolve_into(cur, &target, followed),
                        Err(_) => *cur = candidate,
                    }
                } else {
                    *cur = candidate;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("repo");
        let agent = root.join("agents/noop");
        std::fs::create_dir_all(agent.join("workspace")).expect("mkdir");
        std::fs::write(agent.join("memory.md"), "m").expect("write");
        (tmp, root, agent)
    }

    #[test]
    fn relative_path_is_relative_to_the_agent_folder() {
        let (_tmp, root, agent) = repo();
        assert_eq!(
            canonical_tool_path(&root, &agent, "memory.md"),
            ("agents/noop/memory.md".to_string(), true)
        );
        assert_eq!(
            canonical_tool_path(&root, &agent, "./workspace/new/file.txt"),
            ("agents/noop/workspace/new/file.txt".to_string(), true)
        );
    }

    #[test]
    fn dot_dot_leaves_the_agent_folder() {
        let (_tmp, root, agent) = repo();
        assert_eq!(
            canonical_tool_path(&root, &agent, "../other/x"),
            ("agents/other/x".to_string(), false)
        );
        assert_eq!(
            canonical_tool_path(&root, &agent, "../../etc/passwd"),
            ("etc/passwd".to_string(), false)
        );
        let (p, inside) = canonical_tool_path(&root, &agent, "../../../../../../../../etc/passwd");
        assert_eq!((p.as_str(), inside), ("/etc/passwd", false));
    }

    #[test]
    fn absolute_paths() {
        let (_tmp, root, agent) = repo();
        assert_eq!(
            canonical_tool_path(&root, &agent, "/etc/passwd"),
            ("/etc/passwd".to_string(), false)
        );
        let inside = agent.join("memory.md");
        let (p, ok) = canonical_tool_path(&root, &agent, &inside.to_string_lossy());
        assert_eq!((p.as_str(), ok), ("agents/noop/memory.md", true));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_pointing_outside_are_followed() {
        let (tmp, root, agent) = repo();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, agent.join("escape")).expect("symlink");
        // A dangling link: writing through it would create the file outside.
        std::os::unix::fs::symlink("/nonexistent-gov-test/file", agent.join("dangling"))
            .expect("symlink");
        let want = paths::to_slash(&resolve(&outside.join("secret")));
        assert_eq!(
            canonical_tool_path(&root, &agent, "escape/secret"),
            (want, false)
        );
        assert_eq!(
            canonical_tool_path(&root, &agent, "dangling"),
            ("/nonexistent-gov-test/file".to_string(), false)
        );
        // `..` after a symlink goes up from the link's target, as the OS does.
        let (p, inside) =
            canonical_tool_path(&root, &agent, "escape/../repo/agents/noop/memory.md");
        assert_eq!((p.as_str(), inside), ("agents/noop/memory.md", true));
        // A link inside the folder to inside the folder stays inside.
        std::os::unix::fs::symlink("workspace", agent.join("ws")).expect("symlink");
        assert_eq!(
            canonical_tool_path(&root, &agent, "ws/a.txt"),
            ("agents/noop/workspace/a.txt".to_string(), true)
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_and_home_paths_are_never_inside() {
        let (_tmp, root, agent) = repo();
        std::os::unix::fs::symlink("loop-b", agent.join("loop-a")).expect("symlink");
        std::os::unix::fs::symlink("loop-a", agent.join("loop-b")).expect("symlink");
        assert!(!canonical_tool_path(&root, &agent, "loop-a/x").1);
        assert!(!canonical_tool_path(&root, &agent, "~").1);
        assert!(!canonical_tool_path(&root, &agent, "~/x").1);
        assert!(!canonical_tool_path(&root, &agent, "~other/x").1);
        // A name that merely contains `~` is an ordinary file.
        assert!(canonical_tool_path(&root, &agent, "notes~").1);
    }

    #[test]
    fn relative_paths_start_from_the_cwd_claude_code_sends() {
        let (_tmp, root, agent) = repo();
        // `cwd: "/"` with `etc/passwd` is `/etc/passwd`, not a file in the
        // agent's folder.
        assert_eq!(
            canonical_tool_path_from(&root, &agent, Path::new("/"), "etc/passwd"),
            ("/etc/passwd".to_string(), false)
        );
        assert_eq!(
            canonical_tool_path_from(&root, &agent, &agent.join("workspace"), "../memory.md"),
            ("agents/noop/memory.md".to_string(), true)
        );
    }

    #[cfg(unix)]
    #[test]
    fn programs_resolve_on_the_path_and_through_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let (tmp, _root, agent) = repo();
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let real = bin.join("real-git");
        std::fs::write(&real, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink(&real, bin.join("git")).expect("symlink");
        std::fs::write(bin.join("notexec"), "x").expect("write");
        let path_var = format!("/nonexistent-gov:{}", bin.display());
        let want = resolve(&real);
        assert_eq!(
            resolve_program("git", &path_var, &agent),
            Some(want.clone())
        );
        assert_eq!(resolve_program("notexec", &path_var, &agent), None);
        assert_eq!(resolve_program("cd", &path_var, &agent), None);
        assert_eq!(
            resolve_program(&bin.join("git").to_string_lossy(), "", &agent),
            Some(want)
        );
        // `./git` is the file in the folder the call runs in.
        assert_eq!(
            resolve_program("./memory.md", "", &agent),
            Some(resolve(&agent.join("memory.md")))
        );
    }

    #[test]
    fn loads_the_policies_of_a_commit() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = git2::Repository::init(tmp.path()).expect("init");
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(POLICIES_DIR);
        let mut index = repo.index().expect("index");
        for name in [
            "schema.cedarschema",
            "entities.json",
            "proposals.cedar",
            "watchdog.cedar",
        ] {
            let text = std::fs::read(shipped.join(name)).expect("read");
            let dest = tmp.path().join(POLICIES_DIR).join(name);
            std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
            std::fs::write(&dest, text).expect("write");
            index
                .add_path(&Path::new(POLICIES_DIR).join(name))
                .expect("add");
        }
        let tree = repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("tree");
        let sig = git2::Signature::now("t", "t@example.com").expect("sig");
        let oid = repo
            .commit(None, &sig, &sig, "policies", &tree, &[])
            .expect("commit");
        let set = load_commit(&repo, oid).expect("loads");
        assert_eq!(set.version(), oid.to_string());
        let files: Vec<String> = set.policies().into_iter().map(|p| p.file).collect();
        assert!(files.contains(&"policies/proposals.cedar".to_string()));
        assert!(files.contains(&"policies/watchdog.cedar".to_string()));
        assert!(!files.iter().any(|f| f.contains("tools")));
        let from_disk = load_dir(&tmp.path().join(POLICIES_DIR), "x").expect("loads");
        assert_eq!(from_disk.policies().len(), set.policies().len());
    }

    #[test]
    fn missing_schema_is_a_clear_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = load_dir(tmp.path(), "v").expect_err("no schema");
        assert!(err.to_string().contains("schema.cedarschema"), "{err}");
    }
}
