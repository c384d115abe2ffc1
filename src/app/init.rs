//! `gov init`: create a governance repository with its keys and a signed
//! first commit on `main`.

use std::path::{Path, PathBuf};

use crate::config::Settings;
/// Why a key could not be loaded or made (part of [`InitError`]).
pub use crate::store::keys::KeyError;
use crate::store::keys::{AllowedSigners, Role, SigningKey};

use super::scaffold;

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub dir: PathBuf,
    /// The operator's name, used in the approver principal.
    pub operator_name: String,
    /// An existing private key to approve with instead of a new one.
    pub operator_key: Option<PathBuf>,
}

#[derive(Debug)]
pub struct InitReport {
    pub dir: PathBuf,
    pub files: usize,
    pub commit: String,
    pub server_fingerprint: String,
    pub watchdog_fingerprint: String,
    pub operator_fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("refusing to overwrite existing files (nothing was written):\n{}", list(.0))]
    Collisions(Vec<PathBuf>),
    #[error("`{0}` is not a valid operator name (letters, digits, `.`, `-`, `_`)")]
    BadOperatorName(String),
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot create the git repository: {0}")]
    Git(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("  {}", p.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), InitError> {
    let werr = |source| InitError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(werr)?;
    }
    std::fs::write(path, bytes).map_err(werr)
}

/// Creates a folder only the owner may enter (local state: keys, tokens).
fn private_dir(dir: &Path) -> Result<(), InitError> {
    let werr = |source| InitError::Write {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(werr)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(werr)?;
    }
    Ok(())
}

/// Creates the repository. Checks every path first: on any collision it
/// writes nothing.
pub fn init(opts: &InitOptions) -> Result<InitReport, InitError> {
    if !valid_name(&opts.operator_name) {
        return Err(InitError::BadOperatorName(opts.operator_name.clone()));
    }
    let collisions = scaffold::collisions(&opts.dir);
    if !collisions.is_empty() {
        return Err(InitError::Collisions(collisions));
    }
    // Load a named operator key before writing anything, so a bad path
    // fails with nothing written.
    let operator = match &opts.operator_key {
        Some(path) => Some(SigningKey::load(path)?),
        None => None,
    };

    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let server = SigningKey::generate("gov server")?;
    let watchdog = SigningKey::generate("gov watchdog")?;
    let operator = match operator {
        Some(k) => k,
        None => SigningKey::generate(&format!("gov operator {}", opts.operator_name))?,
    };
    for (path, bytes) in scaffold::SCAFFOLD {
        let mut bytes = bytes.to_vec();
        if *path == "policies/allowed_signers" {
            let mut text = String::from_utf8_lossy(&bytes).into_owned();
            if !text.ends_with('\n') && !text.is_empty() {
                text.push('\n');
            }
            for (role, name, key) in [
                (Role::Server, "gov", &server),
                (Role::Watchdog, "gov", &watchdog),
                (Role::Approver, opts.operator_name.as_str(), &operator),
            ] {
                text.push_str(&AllowedSigners::line_for(role, name, key));
                text.push('\n');
            }
            bytes = text.into_bytes();
        }
        if *path == "gov.toml" {
            let mut text = String::from_utf8_lossy(&bytes).into_owned();
            if opts.operator_name != "operator" {
                text = text.replace(
                    "# operator_name = \"operator\"",
                    &format!("operator_name = {:?}", opts.operator_name),
                );
            }
            if let Some(p) = &opts.operator_key {
                let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                text = text.replace(
                    "# operator_key = \".gov/keys/operator\"",
                    &format!("operator_key = {:?}", abs.to_string_lossy()),
                );
            }
            bytes = text.into_bytes();
        }
        files.push((path.to_string(), bytes));
    }
    files.push((".gitignore".into(), scaffold::GITIGNORE.as_bytes().to_vec()));

    for (path, bytes) in &files {
        write_file(&opts.dir.join(path), bytes)?;
    }
    let settings = Settings::load(&opts.dir)?;
    private_dir(&settings.local_dir())?;
    private_dir(&settings.local_dir().join("keys"))?;
    server.write_new(&settings.server_key)?;
    watchdog.write_new(&settings.watchdog_key)?;
    if opts.operator_key.is_none() {
        operator.write_new(&settings.operator_key)?;
    }

    let repo = crate::store::git::init_repo(&opts.dir, &settings.main_branch)
        .map_err(|e| InitError::Git(e.to_string()))?;
    let author = git2::Signature::now(
        &opts.operator_name,
        &format!("{}@approver.gov", opts.operator_name),
    )
    .map_err(|e| InitError::Git(e.to_string()))?;
    let commit = crate::store::git::commit_files(
        &repo,
        &operator,
        &author,
        &settings.main_refname(),
        None,
        &files,
        "gov init: policies, agents and settings",
    )
    .map_err(|e| InitError::Git(e.to_string()))?;

    Ok(InitReport {
        dir: opts.dir.clone(),
        files: files.len(),
        commit: commit.to_string(),
        server_fingerprint: server.fingerprint(),
        watchdog_fingerprint: watchdog.fingerprint(),
        operator_fingerprint: operator.fingerprint(),
    })
}

/// The forges `gov init --ci` writes policy CI jobs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiForge {
    Github,
    Gitlab,
}

/// The job definitions of `docs/ci/` for `forge`: (path in the new
/// repository, contents).
pub fn ci_files(forge: CiForge) -> Vec<(&'static str, &'static [u8])> {
    let script: (&str, &[u8]) = (
        ".gov-ci/gov-policy-ci.sh",
        include_bytes!("../../docs/ci/gov-policy-ci.sh"),
    );
    match forge {
        CiForge::Github => vec![
            script,
            (
                ".github/workflows/gov-policy.yml",
                include_bytes!("../../docs/ci/github-policy.yml"),
            ),
        ],
        CiForge::Gitlab => vec![
            script,
            (
                ".gov-ci/gitlab-policy.yml",
                include_bytes!("../../docs/ci/gitlab-policy.yml"),
            ),
            (
                ".gitlab-ci.yml",
                b"include:\n  - local: .gov-ci/gitlab-policy.yml\n",
            ),
        ],
    }
}

/// The CI files of `forge` that already exist in `dir` (`gov init` then
/// writes nothing).
pub fn ci_collisions(dir: &Path, forge: CiForge) -> Vec<PathBuf> {
    ci_files(forge)
        .into_iter()
        .map(|(path, _)| dir.join(path))
        .filter(|p| p.exists())
        .collect()
}

/// Writes the policy CI jobs for `forge` into a repository `init` just
/// made and commits them onto `main`, signed by the operator (they are
/// not governed paths: no review needed). Returns the commit.
pub fn add_ci(dir: &Path, forge: CiForge) -> Result<String, InitError> {
    let settings = Settings::load(dir)?;
    let files: Vec<(String, Vec<u8>)> = ci_files(forge)
        .into_iter()
        .map(|(p, b)| (p.to_string(), b.to_vec()))
        .collect();
    for (path, bytes) in &files {
        write_file(&dir.join(path), bytes)?;
    }
    let git = |e: &dyn std::fmt::Display| InitError::Git(e.to_string());
    let key = SigningKey::load(&settings.operator_key)?;
    let repo = git2::Repository::open(dir).map_err(|e| git(&e))?;
    let tip = repo
        .refname_to_id(&settings.main_refname())
        .map_err(|e| git(&e))?;
    let author = git2::Signature::now(
        &settings.operator_name,
        &Role::Approver.principal(&settings.operator_name),
    )
    .map_err(|e| git(&e))?;
    let commit = crate::store::git::commit_files(
        &repo,
        &key,
        &author,
        &settings.main_refname(),
        Some(tip),
        &files,
        "gov init: policy CI jobs",
    )
    .map_err(|e| git(&e))?;
    Ok(commit.to_string())
}
