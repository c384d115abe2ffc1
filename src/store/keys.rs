//! Ed25519 SSH keys: creating, loading, signing commits in git's SSH
//! signature format (namespace `git`, SHA-512), and the allowed-signers file
//! that says which key may sign in which role.
//!
//! Everything is done in Rust; `ssh-keygen` is never run.

use std::io::Write;
use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// The signature namespace git uses for commits.
pub const GIT_NAMESPACE: &str = "git";

/// The role a key signs in, read from its principal in `allowed_signers`
/// (`NAME@ROLE.gov`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Signs audit entries and proposal commits written by `gov serve`.
    Server,
    /// Signs the watchdog's audit entries.
    Watchdog,
    /// A person who may approve proposals (signs approval merges).
    Approver,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Watchdog => "watchdog",
            Role::Approver => "approver",
        }
    }

    /// The principal written into `allowed_signers` for a key of this role.
    pub fn principal(self, name: &str) -> String {
        format!("{name}@{}.gov", self.as_str())
    }

    /// Reads the role out of a principal written by [`Role::principal`].
    pub fn from_principal(principal: &str) -> Option<Role> {
        let (_, domain) = principal.rsplit_once('@')?;
        match domain {
            "server.gov" => Some(Role::Server),
            "watchdog.gov" => Some(Role::Watchdog),
            "approver.gov" => Some(Role::Approver),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key `{path}` is not an OpenSSH private key: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("key `{path}` is not an Ed25519 key")]
    NotEd25519 { path: PathBuf },
    #[error("cannot sign: {0}")]
    Sign(String),
    #[error("cannot generate a key: {0}")]
    Generate(String),
}

/// A private signing key. Its `Debug` shows the public fingerprint only.
pub struct SigningKey {
    key: PrivateKey,
    /// The same key decoded for signing, once: deriving it from the
    /// OpenSSH form computes the public point again, which cost more than
    /// the signature itself on every commit.
    signer: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.fingerprint())
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// A fresh Ed25519 key from the operating system's random source.
    pub fn generate(comment: &str) -> Result<SigningKey, KeyError> {
        let mut key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        key.set_comment(comment);
        SigningKey::from_private(key)
    }

    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let key = PrivateKey::from_openssh(text.as_bytes()).map_err(|e| KeyError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(KeyError::NotEd25519 {
                path: path.to_path_buf(),
            });
        }
        if key.is_encrypted() {
            return Err(KeyError::Parse {
                path: path.to_path_buf(),
                message: "encrypted keys are not supported".into(),
            });
        }
        SigningKey::from_private(key).map_err(|e| KeyError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    fn from_private(key: PrivateKey) -> Result<SigningKey, KeyError> {
        let pair = key
            .key_data()
            .ed25519()
            .ok_or_else(|| KeyError::Sign("not an Ed25519 key".into()))?;
        let signer = ed25519_dalek::SigningKey::from(&pair.private);
        if signer.verifying_key().as_bytes() != pair.public.as_ref() {
            return Err(KeyError::Sign(
                "the private key does not match its public half".into(),
            ));
        }
        Ok(SigningKey { key, signer })
    }

    /// Writes the private key in OpenSSH format, mode 0600, never replacing
    /// an existing file; the public half goes beside it as `PATH.pub`.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let werr = |source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(werr)?;
        }
        let text = self
            .key
            .to_openssh(LineEnding::LF)
            .map_err(|e| KeyError::Sign(e.to_string()))?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(werr)?;
        f.write_all(text.as_bytes()).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        let pub_path = path.with_extension("pub");
        std::fs::write(&pub_path, format!("{}\n", self.public_line())).map_err(|source| {
            KeyError::Write {
                path: pub_path.clone(),
                source,
            }
        })?;
        Ok(())
    }

    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// `ssh-ed25519 AAAA… comment`
    pub fn public_line(&self) -> String {
        self.key.public_key().to_openssh().unwrap_or_default()
    }

    /// `SHA256:…`, as `ssh-keygen -l` and git print it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// Signs `data` as git does for a commit: an armored SSH signature in
    /// the `git` namespace.
    pub fn sign_git(&self, data: &[u8]) -> Result<String, KeyError> {
        use ed25519_dalek::Signer;
        let failed = |e: ssh_key::Error| KeyError::Sign(e.to_string());
        let signed = SshSig::signed_data(GIT_NAMESPACE, HashAlg::Sha512, data).map_err(failed)?;
        let raw = self.signer.sign(&signed).to_bytes();
        let signature =
            ssh_key::Signature::new(Algorithm::Ed25519, raw.to_vec()).map_err(failed)?;
        SshSig::new(
            self.key.public_key().key_data().clone(),
            GIT_NAMESPACE,
            HashAlg::Sha512,
            signature,
        )
        .and_then(|sig| sig.to_pem(LineEnding::LF))
        .map_err(failed)
    }
}

/// One line of `allowed_signers`.
#[derive(Debug, Clone)]
pub struct AllowedSigner {
    pub principals: Vec<String>,
    pub key: PublicKey,
    /// An Ed25519 key decoded once (decoding a point costs about a third
    /// of a check; a chain of 100,000 entries is checked against the same
    /// few keys), and the key's fingerprint.
    decoded: Option<ed25519_dalek::VerifyingKey>,
    fingerprint: String,
}

impl AllowedSigner {
    fn new(principals: Vec<String>, key: PublicKey) -> Self {
        let decoded = key
            .key_data()
            .ed25519()
            .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k.0).ok());
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        AllowedSigner {
            principals,
            key,
            decoded,
            fingerprint,
        }
    }

    /// Checks `sig` (made by this signer's key, in the `git` namespace)
    /// over `data`, as `PublicKey::verify` does, with the decoded key.
    fn verify(&self, data: &[u8], sig: &SshSig) -> Result<(), ssh_key::Error> {
        let Some(vk) = &self.decoded else {
            return self.key.verify(GIT_NAMESPACE, data, sig);
        };
        if sig.algorithm() != Algorithm::Ed25519 {
            return Err(ssh_key::Error::AlgorithmUnknown);
        }
        let signed = SshSig::signed_data(sig.namespace(), sig.hash_alg(), data)?;
        let signature = ed25519_dalek::Signature::from_slice(sig.signature().as_bytes())
            .map_err(|_| ssh_key::Error::Crypto)?;
        use ed25519_dalek::Verifier;
        vk.verify(&signed, &signature)
            .map_err(|_| ssh_key::Error::Crypto)
    }
}

impl AllowedSigner {
    /// The roles this signer holds, from its principals.
    pub fn roles(&self) -> impl Iterator<Item = Role> + '_ {
        self.principals
            .iter()
            .filter_map(|p| Role::from_principal(p))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignersError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The allowed-signers file in git's format:
/// `principal[,principal…] [options] keytype base64 [comment]`.
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    pub signers: Vec<AllowedSigner>,
}

/// The outcome of checking one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Good signature by a listed key; the principal and roles of that key.
    Good {
        principal: String,
        roles: Vec<Role>,
        fingerprint: String,
    },
    /// No signature at all.
    Missing,
    /// The signature does not parse, or does not verify, or its key is not
    /// listed.
    Bad(String),
}

impl AllowedSigners {
    pub fn load(path: &Path) -> Result<AllowedSigners, SignersError> {
        let text = std::fs::read_to_string(path).map_err(|source| SignersError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<AllowedSigners, SignersError> {
        let mut signers = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let perr = |message: String| SignersError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let mut fields = line.split_whitespace();
            let principals: Vec<String> = fields
                .next()
                .ok_or_else(|| perr("missing principals".into()))?
                .split(',')
                .map(|p| p.trim_matches('"').to_string())
                .collect();
            // Skip options (e.g. namespaces="git") until the key type.
            let rest: Vec<&str> = fields.collect();
            let kt = rest
                .iter()
                .position(|f| {
                    f.starts_with("ssh-") || f.starts_with("ecdsa-") || f.starts_with("sk-")
                })
                .ok_or_else(|| perr("no key type (expected e.g. `ssh-ed25519`)".into()))?;
            let key_text = rest[kt..].join(" ");
            let key = PublicKey::from_openssh(&key_text)
                .map_err(|e| perr(format!("bad public key: {e}")))?;
            signers.push(AllowedSigner::new(principals, key));
        }
        Ok(AllowedSigners { signers })
    }

    /// Checks an armored SSH signature over `data` against the listed keys.
    pub fn check(&self, armored: &str, data: &[u8]) -> SignatureCheck {
        let sig = match SshSig::from_pem(armored.trim().as_bytes()) {
            Ok(s) => s,
            Err(e) => return SignatureCheck::Bad(format!("signature does not parse: {e}")),
        };
        if sig.namespace() != GIT_NAMESPACE {
            return SignatureCheck::Bad(format!(
                "signature namespace is `{}`, not `git`",
                sig.namespace()
            ));
        }
        let Some(signer) = self
            .signers
            .iter()
            .find(|s| s.key.key_data() == sig.public_key())
        else {
            return SignatureCheck::Bad("signed by a key that is not in allowed_signers".into());
        };
        match signer.verify(data, &sig) {
            Ok(()) => SignatureCheck::Good {
                principal: signer.principals.first().cloned().unwrap_or_default(),
                roles: signer.roles().collect(),
                fingerprint: signer.fingerprint.clone(),
            },
            Err(e) => SignatureCheck::Bad(format!("signature does not verify: {e}")),
        }
    }

    /// The line to add for a key in a role.
    pub fn line_for(role: Role, name: &str, key: &SigningKey) -> String {
        format!(
            "{} namespaces=\"git\" {}",
            role.principal(name),
            key.public_line()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_check_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let k = SigningKey::generate("test")?;
        let other = SigningKey::generate("other")?;
        let signers = AllowedSigners::parse(
            Path::new("allowed_signers"),
            &format!(
                "# comment\n{}\n",
                AllowedSigners::line_for(Role::Server, "gov", &k)
            ),
        )?;
        let sig = k.sign_git(b"hello")?;
        assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----"));
        match signers.check(&sig, b"hello") {
            SignatureCheck::Good {
                roles, principal, ..
            } => {
                assert_eq!(roles, vec![Role::Server]);
                assert_eq!(principal, "gov@server.gov");
            }
            other => panic!("expected good, got {other:?}"),
        }
        assert!(matches!(
            signers.check(&sig, b"hellO"),
            SignatureCheck::Bad(_)
        ));
        let foreign = other.sign_git(b"hello")?;
        assert!(matches!(
            signers.check(&foreign, b"hello"),
            SignatureCheck::Bad(_)
        ));
        assert!(!format!("{k:?}").contains("PRIVATE"));
        Ok(())
    }
}
