//! Ed25519 SSH keys: creating, loading, signing commits in git's SSH
//! signature format (namespace `git`, SHA-512), and the allowed-signers file
//! that says which key may sign in which role.
//!
//! Everything is done in Rust; `ssh-keygen` is never run.
//!
//! **Nonces made ahead.** An Ed25519 signature is `R = r·B` and
//! `s = r + H(R, A, M)·a`. The standard (RFC 8032) derives the secret
//! nonce `r` from the key and the message, so the base-point
//! multiplication, most of a signature's cost, can only start once the
//! message is known; an audit entry's message is known only in its
//! writer's turn, where every microsecond holds up the batch (it names the
//! entry before it). The verification equation does not care how `r` was
//! chosen, only that it is secret and never used twice. So a long-running
//! server ([`SigningKey::make_nonces_ahead`]) draws each `r` as
//! `SHA-512(the key's hash prefix ‖ 32 bytes from the operating system's
//! random source ‖ a count)`, computes `R` on a thread of its own, and
//! keeps a few hundred pairs ready; an audit entry's signature
//! ([`SigningKey::sign_git_ahead`]) takes one pair out of the pool (by
//! value: it is used once, and its `r` is wiped when dropped) and is left
//! with two hashes and a multiply-add. With the pool empty, for every other
//! signature, and in a process that never made a pool (the hook, a
//! command, the watchdog), the signature is the standard deterministic
//! one. Both verify the same way (stock `git`, `ssh-keygen -Y verify`,
//! gov's own checks).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use curve25519_dalek::{EdwardsPoint, Scalar};
use sha2::{Digest, Sha512};
use zeroize::Zeroize;

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
    /// Whether [`SigningKey::make_nonces_ahead`] asked for nonces made
    /// ahead; the pool starts with the first signature that takes one.
    wants_ahead: AtomicBool,
    /// Nonces made ahead, once started (see the module's documentation).
    ahead: OnceLock<Option<NoncesAhead>>,
}

/// How many nonces the pool holds when full...
const NONCES_KEPT: usize = 256;
/// ...and how few it may fall to before its thread fills it again (one
/// wake-up per this many signatures, not one per signature).
const NONCES_REFILL_AT: usize = NONCES_KEPT / 2;

/// A secret nonce `r` and its public point `R = r·B`, used for one
/// signature; `r` is wiped when it is dropped.
struct NoncePair {
    r: Scalar,
    big_r: [u8; 32],
}

impl Drop for NoncePair {
    fn drop(&mut self) {
        self.r.zeroize();
    }
}

/// The pool of nonces a thread keeps filled for one key.
struct NoncePool {
    ready: Mutex<Vec<NoncePair>>,
    /// Signalled when the pool falls to [`NONCES_REFILL_AT`], or to stop.
    low: Condvar,
    stop: AtomicBool,
}

/// A key's pool and what signing with its nonces needs besides the public
/// key: the secret scalar `a` (wiped when dropped).
struct NoncesAhead {
    pool: Arc<NoncePool>,
    scalar: Scalar,
}

impl Drop for NoncesAhead {
    fn drop(&mut self) {
        self.scalar.zeroize();
        self.pool.stop.store(true, Ordering::SeqCst);
        self.pool.low.notify_all();
    }
}

impl NoncesAhead {
    /// Starts the thread that fills the pool for `key`; `None` if no
    /// thread could be started (signatures are then made the standard way).
    fn start(key: &ed25519_dalek::SigningKey) -> Option<NoncesAhead> {
        let pool = Arc::new(NoncePool {
            ready: Mutex::new(Vec::with_capacity(NONCES_KEPT)),
            low: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        // The second half of SHA-512(seed): the key's hash prefix, which the
        // standard mixes into its nonces; mixed into these as well, so a
        // weak random source alone does not make them guessable. Kept on
        // the heap, so that the thread takes it over without a copy left
        // on this stack, and wiped when dropped.
        let mut prefix = Box::new(zeroize::Zeroizing::new([0u8; 32]));
        prefix.copy_from_slice(&Sha512::digest(key.as_bytes())[32..]);
        let filled = pool.clone();
        let started = std::thread::Builder::new()
            .name("gov-nonces".into())
            .spawn(move || fill_nonces(&filled, &prefix));
        match started {
            Ok(_) => Some(NoncesAhead {
                pool,
                scalar: key.to_scalar(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the thread that makes signature nonces ahead");
                None
            }
        }
    }

    /// A nonce from the pool, if one is ready (never waits for one).
    fn take(&self) -> Option<NoncePair> {
        let mut ready = self.pool.ready.lock().ok()?;
        let nonce = ready.pop();
        if ready.len() == NONCES_REFILL_AT {
            self.pool.low.notify_one();
        }
        nonce
    }

    /// The Ed25519 signature of `message` with a nonce from the pool by
    /// the key whose public half is `public`, if a nonce is ready: `R ‖ s`,
    /// where `s = r + SHA-512(R ‖ A ‖ message)·a` (RFC 8032, 5.1.6, steps
    /// 4-6).
    fn try_sign(&self, public: &[u8; 32], message: &[u8]) -> Option<[u8; 64]> {
        let nonce = self.take()?;
        let k: [u8; 64] = Sha512::new()
            .chain_update(nonce.big_r)
            .chain_update(public)
            .chain_update(message)
            .finalize()
            .into();
        let s = Scalar::from_bytes_mod_order_wide(&k) * self.scalar + nonce.r;
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&nonce.big_r);
        signature[32..].copy_from_slice(s.as_bytes());
        Some(signature)
    }
}

/// The pool's thread: fills the pool whenever it falls to
/// [`NONCES_REFILL_AT`], until the key is dropped. A refill's nonces are
/// made outside the pool's lock and put in at once (signers only wait for
/// the push). Stops making nonces (signatures then take the standard way)
/// if the random source fails.
fn fill_nonces(pool: &NoncePool, prefix: &[u8; 32]) {
    let mut made = 0u64;
    loop {
        let missing = {
            let Ok(mut ready) = pool.ready.lock() else {
                return;
            };
            while ready.len() > NONCES_REFILL_AT && !pool.stop.load(Ordering::SeqCst) {
                ready = match pool.low.wait(ready) {
                    Ok(r) => r,
                    Err(_) => return,
                };
            }
            NONCES_KEPT - ready.len()
        };
        let mut fresh = Vec::with_capacity(missing);
        while fresh.len() < missing {
            if pool.stop.load(Ordering::SeqCst) {
                return;
            }
            // A count as well: within this process a nonce repeats only if
            // the random bytes and the count both do.
            made += 1;
            match new_nonce(prefix, made) {
                Ok(nonce) => fresh.push(nonce),
                Err(e) => {
                    tracing::warn!(error = %e, "the random source failed; signature nonces are no longer made ahead");
                    return;
                }
            }
        }
        if pool.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut ready) = pool.ready.lock() else {
            return;
        };
        ready.append(&mut fresh);
    }
}

/// A nonce `r = SHA-512(prefix ‖ 32 random bytes ‖ count)` (reduced mod
/// ℓ) and its point `R = r·B`.
fn new_nonce(prefix: &[u8; 32], count: u64) -> Result<NoncePair, getrandom::Error> {
    let mut random = [0u8; 32];
    getrandom::getrandom(&mut random)?;
    let mut wide: [u8; 64] = Sha512::new()
        .chain_update(prefix)
        .chain_update(random)
        .chain_update(count.to_le_bytes())
        .finalize()
        .into();
    random.zeroize();
    let r = Scalar::from_bytes_mod_order_wide(&wide);
    wide.zeroize();
    Ok(NoncePair {
        big_r: EdwardsPoint::mul_base(&r).compress().to_bytes(),
        r,
    })
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
        Ok(SigningKey {
            key,
            signer,
            wants_ahead: AtomicBool::new(false),
            ahead: OnceLock::new(),
        })
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

    /// Has signature nonces made ahead on a thread of this key's own, for
    /// a process that signs many entries (the server), used by
    /// [`SigningKey::sign_git_ahead`]: see the module's documentation. The
    /// thread starts with the first such signature (nothing is made at
    /// start-up, or in a process that never signs) and stops when the key
    /// is dropped.
    pub fn make_nonces_ahead(&self) {
        self.wants_ahead.store(true, Ordering::Relaxed);
    }

    /// Signs `data` as git does for a commit: an armored SSH signature in
    /// the `git` namespace.
    pub fn sign_git(&self, data: &[u8]) -> Result<String, KeyError> {
        use ed25519_dalek::Signer;
        let signed = signed_data(data)?;
        self.armored(self.signer.sign(&signed).to_bytes())
    }

    /// [`SigningKey::sign_git`] with a nonce made ahead, if one is ready
    /// ([`SigningKey::make_nonces_ahead`]); else the standard way. For a
    /// signature that holds up others (an audit entry in a writer's turn):
    /// the pool is kept for those.
    pub fn sign_git_ahead(&self, data: &[u8]) -> Result<String, KeyError> {
        use ed25519_dalek::Signer;
        let signed = signed_data(data)?;
        let public = self.signer.verifying_key();
        let raw = self
            .nonces_ahead()
            .and_then(|a| a.try_sign(public.as_bytes(), &signed))
            .unwrap_or_else(|| self.signer.sign(&signed).to_bytes());
        self.armored(raw)
    }

    /// The pool of nonces made ahead, started the first time it is asked
    /// for, if [`SigningKey::make_nonces_ahead`] wants one.
    fn nonces_ahead(&self) -> Option<&NoncesAhead> {
        if !self.wants_ahead.load(Ordering::Relaxed) {
            return None;
        }
        self.ahead
            .get_or_init(|| NoncesAhead::start(&self.signer))
            .as_ref()
    }

    /// A raw Ed25519 signature armored as git's SSH signature.
    fn armored(&self, raw: [u8; 64]) -> Result<String, KeyError> {
        let signature =
            ssh_key::Signature::new(Algorithm::Ed25519, raw.to_vec()).map_err(sign_failed)?;
        SshSig::new(
            self.key.public_key().key_data().clone(),
            GIT_NAMESPACE,
            HashAlg::Sha512,
            signature,
        )
        .and_then(|sig| sig.to_pem(LineEnding::LF))
        .map_err(sign_failed)
    }
}

/// What an SSH signature of `data` in git's namespace signs.
fn signed_data(data: &[u8]) -> Result<Vec<u8>, KeyError> {
    SshSig::signed_data(GIT_NAMESPACE, HashAlg::Sha512, data).map_err(sign_failed)
}

fn sign_failed(e: ssh_key::Error) -> KeyError {
    KeyError::Sign(e.to_string())
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

    /// A good signature by this signer.
    fn good(&self) -> SignatureCheck {
        SignatureCheck::Good {
            principal: self.principals.first().cloned().unwrap_or_default(),
            roles: self.roles().collect(),
            fingerprint: self.fingerprint.clone(),
        }
    }

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

/// A signature read and matched to its signer.
#[derive(Debug)]
pub enum Prepared {
    /// Its verdict is known already.
    Done(SignatureCheck),
    /// An Ed25519 signature by a listed key, still to check.
    Pending(PendingCheck),
}

/// An Ed25519 signature by a listed key and the data it signs (git's
/// SSH-signature blob over the commit), still to check.
#[derive(Debug)]
pub struct PendingCheck {
    /// The signer's place in [`AllowedSigners::signers`].
    signer: usize,
    signed: Vec<u8>,
    signature: ed25519_dalek::Signature,
}

/// Whether `bytes` is the one encoding of a point that [`compress`] gives,
/// as a signature's `R` must be to pass a check one by one: its `y` below
/// the field's prime 2^255 - 19, and no sign bit on a point whose `x` is
/// zero (`y` = 1 or `y` = -1).
///
/// [`compress`]: curve25519_dalek::edwards::EdwardsPoint::compress
fn canonical_point(bytes: &[u8; 32]) -> bool {
    let mut y = *bytes;
    let sign = y[31] & 0x80 != 0;
    y[31] &= 0x7f;
    // y >= 2^255 - 19: every byte 0xff but the first (>= 0xed) and the last (0x7f).
    let at_least_prime = y[0] >= 0xed && y[1..31].iter().all(|b| *b == 0xff) && y[31] == 0x7f;
    let one = y[0] == 1 && y[1..].iter().all(|b| *b == 0);
    let minus_one = y[0] == 0xec && y[1..31].iter().all(|b| *b == 0xff) && y[31] == 0x7f;
    !at_least_prime && !(sign && (one || minus_one))
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
        match self.prepare(armored, data) {
            Prepared::Done(check) => check,
            Prepared::Pending(pending) => self.finish(&pending),
        }
    }

    /// Reads an armored SSH signature over `data` and finds its signer; the
    /// check itself is left to [`AllowedSigners::check_all`] when the
    /// signer's key is Ed25519 (the only kind gov makes), and done now for
    /// any other key or when the signature is already known to be bad.
    pub fn prepare(&self, armored: &str, data: &[u8]) -> Prepared {
        let sig = match SshSig::from_pem(armored.trim().as_bytes()) {
            Ok(s) => s,
            Err(e) => {
                return Prepared::Done(SignatureCheck::Bad(format!(
                    "signature does not parse: {e}"
                )))
            }
        };
        if sig.namespace() != GIT_NAMESPACE {
            return Prepared::Done(SignatureCheck::Bad(format!(
                "signature namespace is `{}`, not `git`",
                sig.namespace()
            )));
        }
        let Some(index) = self
            .signers
            .iter()
            .position(|s| s.key.key_data() == sig.public_key())
        else {
            return Prepared::Done(SignatureCheck::Bad(
                "signed by a key that is not in allowed_signers".into(),
            ));
        };
        let signer = &self.signers[index];
        let verdict = |result: Result<(), ssh_key::Error>| match result {
            Ok(()) => signer.good(),
            Err(e) => SignatureCheck::Bad(format!("signature does not verify: {e}")),
        };
        if signer.decoded.is_none() {
            return Prepared::Done(verdict(signer.key.verify(GIT_NAMESPACE, data, &sig)));
        }
        if sig.algorithm() != Algorithm::Ed25519 {
            return Prepared::Done(verdict(Err(ssh_key::Error::AlgorithmUnknown)));
        }
        let signed = match SshSig::signed_data(sig.namespace(), sig.hash_alg(), data) {
            Ok(signed) => signed,
            Err(e) => return Prepared::Done(verdict(Err(e))),
        };
        match ed25519_dalek::Signature::from_slice(sig.signature().as_bytes()) {
            Ok(signature) => Prepared::Pending(PendingCheck {
                signer: index,
                signed,
                signature,
            }),
            Err(_) => Prepared::Done(verdict(Err(ssh_key::Error::Crypto))),
        }
    }

    /// The verdicts of prepared signatures, in the order given: the pending
    /// ones are checked together, first as one batch (see
    /// [`AllowedSigners::batch_holds`]); when the batch does not hold, one
    /// by one, so each verdict is exactly what [`AllowedSigners::check`]
    /// gives. A lone signature is checked on its own (a batch of one
    /// costs more than the check).
    pub fn check_all(&self, prepared: Vec<Prepared>) -> Vec<SignatureCheck> {
        let pending: Vec<&PendingCheck> = prepared
            .iter()
            .filter_map(|p| match p {
                Prepared::Pending(p) => Some(p),
                Prepared::Done(_) => None,
            })
            .collect();
        let batch = pending.len() > 1 && self.batch_holds(&pending);
        prepared
            .into_iter()
            .map(|p| match p {
                Prepared::Done(check) => check,
                Prepared::Pending(p) if batch => self.signers[p.signer].good(),
                Prepared::Pending(p) => self.finish(&p),
            })
            .collect()
    }

    /// One prepared signature checked on its own, as `ssh-keygen` and git
    /// check one: `[s]B - [k]A` must encode to the signature's `R`.
    fn finish(&self, pending: &PendingCheck) -> SignatureCheck {
        use ed25519_dalek::Verifier;
        let signer = &self.signers[pending.signer];
        let holds = signer
            .decoded
            .as_ref()
            .is_some_and(|vk| vk.verify(&pending.signed, &pending.signature).is_ok());
        if holds {
            signer.good()
        } else {
            SignatureCheck::Bad(format!(
                "signature does not verify: {}",
                ssh_key::Error::Crypto
            ))
        }
    }

    /// Whether every one of `pending` holds, checked as one random linear
    /// combination of their equations: with 128-bit random weights `z`,
    /// `Σ z·R − (Σ z·s)·B + Σ_keys (Σ z·k)·A` must be the identity. One
    /// multi-scalar multiplication over the signatures' `R` points (the
    /// few keys and the base point are added once) costs a fraction of a
    /// check each.
    ///
    /// It holds for every set that holds one by one. A set with a
    /// signature that does not hold one by one fails it, except with
    /// chance 2^-128, with one exception: a signature whose `R` was made
    /// with a small-order component (only the key's holder can make one
    /// that is otherwise valid; no signer does so by accident) can pass a
    /// batch while `ssh-keygen` refuses it. RFC 8032 (5.1.7) allows
    /// either check. `R` and `s` must be canonical encodings, as one by
    /// one. False when the system gives no randomness.
    fn batch_holds(&self, pending: &[&PendingCheck]) -> bool {
        use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
        use curve25519_dalek::scalar::Scalar;
        use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
        use sha2::{Digest, Sha512};
        let mut weights = vec![0u8; 16 * pending.len()];
        if getrandom::getrandom(&mut weights).is_err() {
            return false;
        }
        let mut base = Scalar::ZERO;
        let mut per_key = vec![Scalar::ZERO; self.signers.len()];
        let mut scalars = Vec::with_capacity(pending.len() + 1 + self.signers.len());
        let mut points = Vec::with_capacity(scalars.capacity());
        for (p, weight) in pending.iter().zip(weights.chunks_exact(16)) {
            let Some(key) = &self.signers[p.signer].decoded else {
                return false;
            };
            let r = p.signature.r_bytes();
            let s: Option<Scalar> = Scalar::from_canonical_bytes(*p.signature.s_bytes()).into();
            let (Some(s), true) = (s, canonical_point(r)) else {
                return false;
            };
            let Some(big_r) = CompressedEdwardsY(*r).decompress() else {
                return false;
            };
            let hash: [u8; 64] = Sha512::new()
                .chain_update(r)
                .chain_update(key.as_bytes())
                .chain_update(&p.signed)
                .finalize()
                .into();
            let k = Scalar::from_bytes_mod_order_wide(&hash);
            let mut z = [0u8; 32];
            z[..16].copy_from_slice(weight);
            let z = Scalar::from_bytes_mod_order(z);
            base -= z * s;
            per_key[p.signer] += z * k;
            scalars.push(z);
            points.push(big_r);
        }
        scalars.push(base);
        points.push(curve25519_dalek::constants::ED25519_BASEPOINT_POINT);
        // Every key with a signature in the batch (only decoded keys have
        // one: see above).
        for (signer, weight) in self.signers.iter().zip(per_key) {
            match &signer.decoded {
                Some(key) if weight != Scalar::ZERO => {
                    scalars.push(weight);
                    points.push(key.to_edwards());
                }
                _ => {}
            }
        }
        EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
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
    use std::collections::HashSet;

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

    /// How many nonces `key`'s pool holds now.
    fn nonces_ready(key: &SigningKey) -> usize {
        key.ahead
            .get()
            .and_then(Option::as_ref)
            .and_then(|a| a.pool.ready.lock().ok().map(|r| r.len()))
            .unwrap_or(0)
    }

    /// Signatures made with nonces made ahead verify as standard ones do,
    /// each nonce is used once, and the pool is filled again.
    #[test]
    fn signatures_with_nonces_made_ahead_verify_and_never_share_a_nonce(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let k = SigningKey::generate("test")?;
        let signers = AllowedSigners::parse(
            Path::new("allowed_signers"),
            &AllowedSigners::line_for(Role::Server, "gov", &k),
        )?;
        let wait_full = |k: &SigningKey| {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while nonces_ready(k) < NONCES_KEPT && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            nonces_ready(k)
        };
        // Without a pool: the standard, deterministic signature.
        assert_eq!(k.sign_git_ahead(b"same")?, k.sign_git(b"same")?);
        k.make_nonces_ahead();
        // The first signature that asks for a nonce starts the pool.
        k.sign_git_ahead(b"start")?;
        assert_eq!(wait_full(&k), NONCES_KEPT);
        let standard = |data: &[u8]| -> Result<[u8; 64], KeyError> {
            Ok(ed25519_dalek::Signer::sign(&k.signer, &signed_data(data)?).to_bytes())
        };
        let mut nonces = HashSet::new();
        // Each round takes the full pool down to where it is filled again
        // (never empty: each signature takes a nonce made ahead); four
        // rounds take twice what it holds.
        for round in 0..4 {
            for i in 0..NONCES_KEPT - NONCES_REFILL_AT {
                let data = format!("entry {round} {i}");
                let armored = k.sign_git_ahead(data.as_bytes())?;
                assert!(
                    matches!(
                        signers.check(&armored, data.as_bytes()),
                        SignatureCheck::Good { .. }
                    ),
                    "signature {round}/{i} does not verify"
                );
                assert!(matches!(
                    signers.check(&armored, b"another message"),
                    SignatureCheck::Bad(_)
                ));
                let raw = SshSig::from_pem(armored.as_bytes())?
                    .signature()
                    .as_bytes()
                    .to_vec();
                assert_ne!(
                    raw,
                    standard(data.as_bytes())?,
                    "signature {round}/{i} is the standard one"
                );
                assert!(nonces.insert(raw[..32].to_vec()), "a nonce was used twice");
            }
            assert_eq!(wait_full(&k), NONCES_KEPT, "the pool was not filled again");
        }
        // `sign_git` keeps to the standard way, pool or not.
        assert_eq!(k.sign_git(b"same")?, k.sign_git(b"same")?);
        assert_eq!(nonces_ready(&k), NONCES_KEPT);
        Ok(())
    }

    /// A signature armored again with its 64 bytes changed by `edit`.
    fn edited(armored: &str, edit: impl Fn(&mut [u8])) -> Result<String, ssh_key::Error> {
        let sig = SshSig::from_pem(armored.as_bytes())?;
        let mut raw = sig.signature().as_bytes().to_vec();
        edit(&mut raw);
        SshSig::new(
            sig.public_key().clone(),
            GIT_NAMESPACE,
            HashAlg::Sha512,
            ssh_key::Signature::new(Algorithm::Ed25519, raw)?,
        )?
        .to_pem(LineEnding::LF)
    }

    #[test]
    fn a_batch_gives_each_signature_the_verdict_it_gets_alone(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let server = SigningKey::generate("server")?;
        let watchdog = SigningKey::generate("watchdog")?;
        let stranger = SigningKey::generate("stranger")?;
        let signers = AllowedSigners::parse(
            Path::new("allowed_signers"),
            &format!(
                "{}\n{}\n",
                AllowedSigners::line_for(Role::Server, "gov", &server),
                AllowedSigners::line_for(Role::Watchdog, "gov", &watchdog)
            ),
        )?;
        let data: Vec<Vec<u8>> = (0..40).map(|i| format!("entry {i}").into_bytes()).collect();
        let mut sigs = Vec::new();
        for (i, d) in data.iter().enumerate() {
            let key = if i % 3 == 0 { &watchdog } else { &server };
            sigs.push(key.sign_git(d)?);
        }
        let checked = |sigs: &[String], data: &[Vec<u8>]| {
            let alone: Vec<SignatureCheck> = sigs
                .iter()
                .zip(data)
                .map(|(sig, d)| signers.check(sig, d))
                .collect();
            let prepared = sigs
                .iter()
                .zip(data)
                .map(|(sig, d)| signers.prepare(sig, d))
                .collect();
            (alone, signers.check_all(prepared))
        };
        let pending = |sigs: &[String], data: &[Vec<u8>]| {
            sigs.iter()
                .zip(data)
                .filter_map(|(sig, d)| match signers.prepare(sig, d) {
                    Prepared::Pending(p) => Some(p),
                    Prepared::Done(_) => None,
                })
                .collect::<Vec<_>>()
        };
        let (alone, together) = checked(&sigs, &data);
        assert!(alone
            .iter()
            .all(|c| matches!(c, SignatureCheck::Good { .. })));
        assert_eq!(together, alone);
        assert!(signers.batch_holds(&pending(&sigs, &data).iter().collect::<Vec<_>>()));
        let good_sigs = sigs.clone();

        // One signature over other data, one with `s` not reduced (s + ℓ),
        // one with a changed `R`, one by a key not listed.
        let mut data_bad = data.clone();
        data_bad[7] = b"entry 7, changed".to_vec();
        // ℓ, the order of the base point, little-endian.
        let order: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        sigs[13] = edited(&sigs[13], |raw| {
            let mut carry = 0u16;
            for (b, l) in raw[32..].iter_mut().zip(order) {
                let sum = u16::from(*b) + u16::from(l) + carry;
                *b = sum as u8;
                carry = sum >> 8;
            }
        })?;
        sigs[21] = edited(&sigs[21], |raw| raw[0] ^= 1)?;
        sigs[30] = stranger.sign_git(&data[30])?;
        let (alone, together) = checked(&sigs, &data_bad);
        assert_eq!(together, alone);
        let bad: Vec<usize> = (0..alone.len())
            .filter(|i| !matches!(alone[*i], SignatureCheck::Good { .. }))
            .collect();
        assert_eq!(bad, vec![7, 13, 21, 30]);
        assert_eq!(
            alone[7],
            SignatureCheck::Bad("signature does not verify: cryptographic error".into())
        );
        assert_eq!(
            alone[30],
            SignatureCheck::Bad("signed by a key that is not in allowed_signers".into())
        );
        // Each bad one alone among good ones fails the batch itself.
        for i in [7, 13, 21] {
            let mut one_bad = good_sigs.clone();
            one_bad[i] = sigs[i].clone();
            let mut d = data.clone();
            d[i] = data_bad[i].clone();
            let p = pending(&one_bad, &d);
            assert_eq!(p.len(), data.len());
            assert!(
                !signers.batch_holds(&p.iter().collect::<Vec<_>>()),
                "signature {i}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_point_is_canonical_when_it_encodes_as_compress_gives_it() {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        // 2^255 - 19, little-endian.
        let mut prime = [0xffu8; 32];
        prime[0] = 0xed;
        prime[31] = 0x7f;
        let mut cases: Vec<[u8; 32]> = Vec::new();
        for low in 0..=40u8 {
            let mut small = [0u8; 32];
            small[0] = low;
            cases.push(small);
            // p + low (for low < 19: y at or above the prime), and p - low.
            let mut above = prime;
            above[0] = above[0].wrapping_add(low);
            if low < 19 {
                cases.push(above);
            }
            let mut below = prime;
            below[0] = below[0].wrapping_sub(low);
            cases.push(below);
        }
        for i in 0..64u32 {
            let point = curve25519_dalek::constants::ED25519_BASEPOINT_POINT
                * curve25519_dalek::scalar::Scalar::from(i * 7919 + 1);
            cases.push(point.compress().to_bytes());
        }
        let mut seen = [0usize; 2];
        for case in cases {
            for sign in [0u8, 0x80] {
                let mut bytes = case;
                bytes[31] |= sign;
                let Some(point) = CompressedEdwardsY(bytes).decompress() else {
                    continue;
                };
                let round_trips = point.compress().to_bytes() == bytes;
                seen[usize::from(round_trips)] += 1;
                assert_eq!(canonical_point(&bytes), round_trips, "{bytes:02x?}");
            }
        }
        // Both kinds were met: encodings that decode but are not canonical,
        // and canonical ones.
        assert!(seen[0] >= 3 && seen[1] >= 64, "{seen:?}");
    }
}
