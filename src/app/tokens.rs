//! The operator's and the runner's bearer tokens: files under `.gov/`,
//! mode 0600, created on first start when missing.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::service::random_bytes;
use crate::domain::credential::token_from_bytes;

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot {action} the token file `{path}`: {source}")]
pub struct TokenFileError {
    action: &'static str,
    path: std::path::PathBuf,
    source: std::io::Error,
}

/// Reads the token in `path`; if there is none, writes a new one (0600).
pub fn load_or_create(path: &Path, prefix: &str) -> Result<Secret, TokenFileError> {
    let err = |action, source| TokenFileError {
        action,
        path: path.to_path_buf(),
        source,
    };
    if let Some(t) = read(path).map_err(|e| err("read", e))? {
        return Ok(t);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err("create the folder of", e))?;
    }
    let token = token_from_bytes(prefix, &random_bytes());
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| err("write", e))?;
            Ok(Secret(token))
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path)
            .map_err(|e| err("read", e))?
            .ok_or_else(|| err("read", std::io::Error::other("empty token file"))),
        Err(e) => Err(err("create", e)),
    }
}

/// Reads a token file; `None` when it does not exist or is empty.
pub fn read(path: &Path) -> std::io::Result<Option<Secret>> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(Secret(s.trim().to_string()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".gov/operator-token");
        let a = load_or_create(&path, "gov_op").expect("created");
        let b = load_or_create(&path, "gov_op").expect("read");
        assert_eq!(a, b);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(format!("{a:?}"), "Secret(<redacted>)");
    }
}
