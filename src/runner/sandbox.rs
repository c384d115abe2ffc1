//! Confining an agent with Landlock: what it may read and write.
//!
//! `gov run` starts every agent through `gov sandbox-exec` (a hidden
//! subcommand): that small launcher restricts itself with the rules below
//! and then executes the agent, which keeps them, as does everything it
//! starts (the PreToolUse hook included). Landlock is an allow-list:
//!
//! - **read and execute**: the system (`/usr`, `/etc`, `/proc`, ...), the
//!   folders on the agent's `PATH` (and the root of a version manager whose
//!   `shims` folder is on it), the programs it needs (`gov` itself for
//!   the hook, the agent's program, `claude`), and the governance
//!   repository's working tree **except** `.gov/` and the Git directory;
//! - **write**: the agent's own folder, its run's private folder (its
//!   `HOME` and `TMPDIR`) and a few devices (`/dev/null`, ...).
//!
//! Landlock cannot take a sub-folder out of a folder it allows, so a folder
//! that contains a protected path (`.gov/`, `.git/`, a key file named in
//! `gov.toml`) is allowed entry by entry instead, around the protected one
//! ([`grant_around`]). Symbolic links met on the way are not followed.
//!
//! A kernel without Landlock ABI 3 (Linux 6.2; ABI 3 is the first that stops
//! truncating a read-only file) cannot enforce this: [`probe`] says why, and
//! the runner refuses to run unless `gov.toml` says `[runner] sandbox =
//! "off"`. Signals to processes outside the sandbox are blocked where the
//! kernel has ABI 6; TCP (the agent reaches the server on loopback) is not
//! restricted. Landlock does not touch capabilities, so the launcher also
//! drops them all ([`drop_capabilities`]): an agent started by root keeps
//! none of root's powers beyond its files.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, Scope, ABI,
};

/// The rules one agent runs under: every path is absolute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confinement {
    /// Readable and executable, with everything below.
    pub read: Vec<PathBuf>,
    /// Readable and writable (create, remove, rename), with everything below.
    pub write: Vec<PathBuf>,
}

impl Confinement {
    /// The arguments of `gov sandbox-exec` that carry these rules, before
    /// `--` and the agent's command line.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        for (flag, paths) in [("--read", &self.read), ("--write", &self.write)] {
            for p in paths {
                args.push(OsString::from(flag));
                args.push(p.clone().into_os_string());
            }
        }
        args
    }
}

/// The system folders every agent may read and execute, when they exist.
pub const SYSTEM_READ: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/nix",
    "/proc", "/sys", "/dev",
];

/// Devices every agent may write.
pub const DEVICE_WRITE: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

/// What a confinement is computed from.
#[derive(Debug, Clone, Default)]
pub struct SandboxInputs {
    /// The governance repository's root.
    pub repo_root: PathBuf,
    /// The agent's folder (writable).
    pub agent_dir: PathBuf,
    /// The run's private folder (writable): the agent's `HOME` and `TMPDIR`.
    pub run_dir: PathBuf,
    /// Never reachable, whatever else is allowed: `.gov/`, the Git
    /// directories, key and secret files.
    pub protected: Vec<PathBuf>,
    /// Programs (files) the agent must be able to execute: `gov` for the
    /// hook, the agent's program when it has a path, `claude`.
    pub programs: Vec<PathBuf>,
    /// Folders whose whole content is needed, e.g. where `claude` is
    /// installed.
    pub program_dirs: Vec<PathBuf>,
    /// Single files the agent reads, e.g. the claude settings file.
    pub files: Vec<PathBuf>,
    /// The agent's `PATH`.
    pub path_var: Option<OsString>,
    /// The operator's `HOME`: never allowed as a whole through `PATH`.
    pub home: Option<PathBuf>,
    /// `[runner] sandbox_read` and `sandbox_write`.
    pub extra_read: Vec<PathBuf>,
    pub extra_write: Vec<PathBuf>,
}

fn canonical(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok()
}

/// Whether `path` is, or is inside, one of `protected`.
fn is_protected(path: &Path, protected: &[PathBuf]) -> bool {
    protected.iter().any(|p| path.starts_with(p))
}

/// Whether one of `protected` is inside (or is) `dir`.
fn holds_protected(dir: &Path, protected: &[PathBuf]) -> bool {
    protected.iter().any(|p| p.starts_with(dir))
}

/// The paths to allow so that everything below `root` is reachable except
/// `protected` and what is below it. `root` and `protected` are canonical.
/// A folder that holds a protected path is replaced by its entries
/// (symbolic links among them are skipped, not followed), recursively down
/// to the protected path; `list` reads a folder's entries as (path, is a
/// symbolic link).
pub fn grant_around(
    root: &Path,
    protected: &[PathBuf],
    list: &dyn Fn(&Path) -> Vec<(PathBuf, bool)>,
    out: &mut Vec<PathBuf>,
) {
    if is_protected(root, protected) {
        return;
    }
    if !holds_protected(root, protected) {
        out.push(root.to_path_buf());
        return;
    }
    for (entry, is_link) in list(root) {
        if !is_link {
            grant_around(&entry, protected, list, out);
        }
    }
}

/// A folder's entries, from the file system.
fn list_dir(dir: &Path) -> Vec<(PathBuf, bool)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, bool)> = entries
        .flatten()
        .map(|e| {
            let link = e.file_type().map(|t| t.is_symlink()).unwrap_or(true);
            (e.path(), link)
        })
        .collect();
    out.sort();
    out
}

/// The protected paths, canonical where they exist (a `.gov` that is a
/// symbolic link protects where it points), lexical otherwise.
fn protected_paths(inputs: &SandboxInputs) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in &inputs.protected {
        out.push(p.clone());
        if let Some(c) = canonical(p) {
            out.push(c);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Computes what the agent may reach. Paths that do not exist are left out.
pub fn confinement(inputs: &SandboxInputs) -> Confinement {
    let protected = protected_paths(inputs);
    let mut read = Vec::new();
    let mut write = Vec::new();
    let around = |p: &Path, out: &mut Vec<PathBuf>| {
        if let Some(c) = canonical(p) {
            grant_around(&c, &protected, &list_dir, out);
        }
    };
    for sys in SYSTEM_READ {
        around(Path::new(sys), &mut read);
    }
    // DNS: /etc/resolv.conf often points into /run.
    if let Some(resolv) = canonical(Path::new("/etc/resolv.conf")) {
        if let Some(dir) = resolv.parent() {
            around(dir, &mut read);
        }
    }
    around(&inputs.repo_root, &mut read);
    for p in inputs
        .programs
        .iter()
        .chain(&inputs.program_dirs)
        .chain(&inputs.files)
        .chain(&inputs.extra_read)
    {
        around(p, &mut read);
    }
    let home = inputs.home.as_deref().and_then(canonical);
    for dir in std::env::split_paths(inputs.path_var.as_deref().unwrap_or(OsStr::new(""))) {
        // A PATH entry is a folder of programs. One that holds the home
        // folder or a protected path (`PATH=$HOME:...`) is not one: it is
        // left out rather than opened up.
        let Some(dir) = dir.is_absolute().then(|| canonical(&dir)).flatten() else {
            continue;
        };
        // A version manager's `shims` folder (pyenv, rbenv, asdf) runs the
        // programs installed beside it: its parent is the tool's root.
        let dirs = match (dir.file_name(), dir.parent()) {
            (Some(name), Some(root)) if name == "shims" => vec![dir.clone(), root.to_path_buf()],
            _ => vec![dir],
        };
        for dir in dirs {
            let broad = home.as_deref().is_some_and(|h| h.starts_with(&dir))
                || holds_protected(&dir, &protected);
            if !broad {
                around(&dir, &mut read);
            }
        }
    }
    around(&inputs.agent_dir, &mut write);
    around(&inputs.run_dir, &mut write);
    for dev in DEVICE_WRITE {
        around(Path::new(dev), &mut write);
    }
    for p in &inputs.extra_write {
        around(p, &mut write);
    }
    for list in [&mut read, &mut write] {
        list.sort();
        list.dedup();
    }
    Confinement { read, write }
}

/// Why agents cannot be confined on this machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("this kernel has no Landlock (it is not built in, or not enabled at boot: the `lsm=` kernel parameter must list `landlock`)")]
    NoLandlock,
    #[error("this kernel's Landlock is older than ABI 3 (Linux 6.2): it cannot stop an agent from truncating files it may only read")]
    TooOld,
}

/// What the kernel enforces, as far as agents are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    /// Signals to processes outside the sandbox are blocked (ABI 6).
    pub signals_scoped: bool,
}

fn handles(abi: ABI, scope: bool) -> bool {
    let ruleset = Ruleset::default().set_compatibility(CompatLevel::HardRequirement);
    let ruleset = if scope {
        ruleset.scope(Scope::from_all(abi))
    } else {
        ruleset.handle_access(AccessFs::from_all(abi))
    };
    ruleset.and_then(|r| r.create()).is_ok()
}

/// Whether this kernel can confine agents, without confining anything.
pub fn probe() -> Result<Support, Unavailable> {
    if !handles(ABI::V1, false) {
        return Err(Unavailable::NoLandlock);
    }
    if !handles(ABI::V3, false) {
        return Err(Unavailable::TooOld);
    }
    Ok(Support {
        signals_scoped: handles(ABI::V6, true),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    #[error("cannot open `{}`: {source}", path.display())]
    Path {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("cannot drop capabilities: {0}")]
    Capabilities(String),
}

fn ruleset() -> Result<RulesetCreated, SandboxError> {
    probe()?;
    let created = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V3))?
        .set_compatibility(CompatLevel::BestEffort)
        .scope(Scope::from_all(ABI::V6))?
        .create()?;
    Ok(created)
}

fn allow(
    ruleset: RulesetCreated,
    path: &Path,
    access: landlock::BitFlags<AccessFs>,
) -> Result<RulesetCreated, SandboxError> {
    let fd = match PathFd::new(path) {
        Ok(fd) => fd,
        // Gone since the plan was made: nothing to allow.
        Err(_) if !path.exists() => return Ok(ruleset),
        Err(e) => {
            return Err(SandboxError::Path {
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })
        }
    };
    let access = if path.is_dir() {
        access
    } else {
        access & AccessFs::from_file(ABI::V3)
    };
    Ok(ruleset.add_rule(PathBeneath::new(fd, access))?)
}

/// Restricts the calling thread, and every program it executes from now on,
/// to `c`. Irreversible. Fails (and restricts nothing that matters) when the
/// kernel cannot enforce it: the caller must then not run the agent.
pub fn enforce(c: &Confinement) -> Result<Support, SandboxError> {
    let mut ruleset = ruleset()?;
    for p in &c.read {
        ruleset = allow(ruleset, p, AccessFs::from_read(ABI::V3))?;
    }
    for p in &c.write {
        ruleset = allow(ruleset, p, AccessFs::from_all(ABI::V3))?;
    }
    let status = ruleset.restrict_self()?;
    if status.ruleset == landlock::RulesetStatus::NotEnforced || !status.no_new_privs {
        return Err(SandboxError::Unavailable(Unavailable::NoLandlock));
    }
    Ok(Support {
        signals_scoped: status.ruleset == landlock::RulesetStatus::FullyEnforced,
    })
}

/// Drops every capability of this thread, for good (with no_new_privs,
/// which [`enforce`] sets, executing a program cannot give them back). An
/// agent started as root would otherwise keep root's powers that Landlock
/// does not cover: loading kernel modules, reading other processes'
/// memory and environment, raw network access. A no-op for an ordinary
/// user, who has none.
pub fn drop_capabilities() -> Result<(), SandboxError> {
    use caps::{CapSet, Capability};
    let err = |e: caps::errors::CapsError| SandboxError::Capabilities(e.to_string());
    // The bounding set first: dropping from it takes CAP_SETPCAP, which
    // clearing the permitted set below takes away.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(err)? {
        caps::clear(None, CapSet::Bounding).map_err(err)?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A file system as a map from folder to entries (name, is a link).
    fn tree(spec: &[(&str, &[(&str, bool)])]) -> BTreeMap<PathBuf, Vec<(PathBuf, bool)>> {
        spec.iter()
            .map(|(dir, entries)| {
                let dir = PathBuf::from(dir);
                let list = entries
                    .iter()
                    .map(|(name, link)| (dir.join(name), *link))
                    .collect();
                (dir, list)
            })
            .collect()
    }

    fn around(
        root: &str,
        protected: &[&str],
        fs: &BTreeMap<PathBuf, Vec<(PathBuf, bool)>>,
    ) -> Vec<String> {
        let protected: Vec<PathBuf> = protected.iter().map(PathBuf::from).collect();
        let list = |d: &Path| fs.get(d).cloned().unwrap_or_default();
        let mut out = Vec::new();
        grant_around(Path::new(root), &protected, &list, &mut out);
        out.iter().map(|p| p.display().to_string()).collect()
    }

    #[test]
    fn a_folder_without_protected_paths_is_allowed_whole() {
        let fs = tree(&[]);
        assert_eq!(around("/usr", &["/r/.gov"], &fs), ["/usr"]);
    }

    #[test]
    fn the_repository_is_allowed_entry_by_entry_around_gov_and_git() {
        let fs = tree(&[(
            "/r",
            &[
                (".git", false),
                (".gov", false),
                ("agents", false),
                ("gov.toml", false),
                ("policies", false),
                ("link-to-gov", true),
            ],
        )]);
        assert_eq!(
            around("/r", &["/r/.git", "/r/.gov"], &fs),
            ["/r/agents", "/r/gov.toml", "/r/policies"]
        );
    }

    #[test]
    fn an_ancestor_is_opened_down_to_the_protected_path() {
        let fs = tree(&[
            ("/opt", &[("tool", false), ("work", false)]),
            ("/opt/work", &[("other", false), ("repo", false)]),
            ("/opt/work/repo", &[(".gov", false), ("agents", false)]),
        ]);
        assert_eq!(
            around("/opt", &["/opt/work/repo/.gov"], &fs),
            ["/opt/tool", "/opt/work/other", "/opt/work/repo/agents"]
        );
    }

    #[test]
    fn protected_paths_and_what_is_inside_them_are_never_allowed() {
        let fs = tree(&[]);
        assert!(around("/r/.gov", &["/r/.gov"], &fs).is_empty());
        assert!(around("/r/.gov/keys", &["/r/.gov"], &fs).is_empty());
        // A key file named in gov.toml: its folder is opened around it.
        let fs = tree(&[("/etc/gov", &[("server", false), ("README", false)])]);
        assert_eq!(
            around("/etc/gov", &["/etc/gov/server"], &fs),
            ["/etc/gov/README"]
        );
    }

    #[test]
    fn a_confinement_never_reaches_gov_or_git() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("repo");
        for d in [".gov/keys", ".git", "agents/a", "agents/b", "policies"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::write(root.join("gov.toml"), "").expect("write");
        std::os::unix::fs::symlink(root.join(".gov"), root.join("agents/a/gov")).expect("link");
        std::os::unix::fs::symlink(root.join(".gov"), root.join("shortcut")).expect("link");
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).expect("mkdir");
        let inputs = SandboxInputs {
            repo_root: root.clone(),
            agent_dir: root.join("agents/a"),
            run_dir: run.clone(),
            protected: vec![root.join(".gov"), root.join(".git")],
            // PATH entries that would open too much are left out.
            path_var: Some(
                std::env::join_paths([dir.path(), &root, Path::new("relative")]).expect("join"),
            ),
            ..SandboxInputs::default()
        };
        let c = confinement(&inputs);
        let root = std::fs::canonicalize(&root).expect("canonical");
        let all: Vec<&PathBuf> = c.read.iter().chain(&c.write).collect();
        for p in &all {
            assert!(
                !root.join(".gov").starts_with(p) && !root.join(".git").starts_with(p),
                "{} would reach .gov or .git",
                p.display()
            );
        }
        for p in ["agents", "policies", "gov.toml"] {
            assert!(c.read.contains(&root.join(p)), "{p} readable: {:?}", c.read);
        }
        assert!(c.write.contains(&root.join("agents/a")));
        assert!(c.write.contains(&std::fs::canonicalize(&run).expect("run")));
        assert!(!c.write.contains(&root.join("agents/b")));
        assert!(c.read.iter().any(|p| p == Path::new("/usr")));

        // A version manager's shims folder opens the manager's root.
        let manager = dir.path().join("tools/.pyenv");
        std::fs::create_dir_all(manager.join("shims")).expect("mkdir");
        let c = confinement(&SandboxInputs {
            path_var: Some(manager.join("shims").into_os_string()),
            ..inputs
        });
        let manager = std::fs::canonicalize(&manager).expect("canonical");
        assert!(c.read.contains(&manager), "{:?}", c.read);
    }

    #[test]
    fn rules_travel_as_arguments() {
        let c = Confinement {
            read: vec![PathBuf::from("/usr"), PathBuf::from("/r/agents")],
            write: vec![PathBuf::from("/r/agents/a")],
        };
        let args: Vec<String> = c
            .to_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--read",
                "/usr",
                "--read",
                "/r/agents",
                "--write",
                "/r/agents/a"
            ]
        );
    }
}
