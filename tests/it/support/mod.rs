//! Shared test harness.
#![allow(
    dead_code,
    reason = "each test module uses a different part of the harness"
)]

use std::path::PathBuf;

pub mod browser;
pub mod git_http;
pub mod github;
pub mod sshd;

/// The agents' PATH in tests of `gov run`: the system's programs only, so
/// that what a confined agent can run does not depend on a developer's
/// toolchain (docs/RUNNER.md).
pub const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Bytes a program wrote, as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A recorded Claude Code stream (`tests/fixtures/stream-json/NAME`), as
/// `tests/fake-claude` replays it.
pub fn fixture(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/stream-json")
        .join(name)
}

/// The `gov` binary built for these tests.
pub fn gov_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gov"))
}

/// The `gov-hook` binary built for these tests (beside `gov`).
pub fn gov_hook_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gov-hook"))
}
pub mod repo;
pub mod server;

/// The output of one run of the `gov` binary.
pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `gov ARGS` in `cwd` with no inherited `GOV_*` settings.
pub fn gov(args: &[&str], cwd: &std::path::Path) -> Output {
    let out = std::process::Command::new(gov_bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("GOV_REPO")
        .env_remove("GOV_URL")
        .output()
        .expect("the gov binary runs");
    Output {
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// Every file below `dir` (`.git` included) with its bytes, for before/after
/// comparisons.
pub fn snapshot_tree(dir: &std::path::Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    fn walk(
        root: &std::path::Path,
        d: &std::path::Path,
        out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>,
    ) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.insert(p.strip_prefix(root).unwrap_or(&p).to_path_buf(), bytes);
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Runs stock `git ARGS` in `dir`, with the repository's allowed-signers
/// file configured so that signatures can be checked.
pub fn git_checked(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("git")
        .args(["-c", "gpg.ssh.allowedSignersFile=policies/allowed_signers"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs")
}

/// `text` with the parts no test can know beforehand replaced, so the rest
/// can be compared exactly: a Git commit id (40 hex digits) becomes
/// `<commit>`, a key fingerprint (`SHA256:…`) `<fingerprint>`, a UUID
/// (a generated proposal id) `<uuid>`. Only whole words are replaced.
pub fn pin_ids(text: &str) -> String {
    fn word_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '-' || c == '+' || c == '/'
    }
    fn is_uuid(w: &str) -> bool {
        let parts: Vec<&str> = w.split('-').collect();
        parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
            && parts
                .iter()
                .all(|p| p.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')))
    }
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let w = std::mem::take(word);
        if w.len() == 40 && w.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
            out.push_str("<commit>");
        } else if w.starts_with("SHA256:") && w.len() > 40 {
            out.push_str("<fingerprint>");
        } else if is_uuid(&w) {
            out.push_str("<uuid>");
        } else {
            out.push_str(&w);
        }
    };
    for c in text.chars() {
        if word_char(c) || (c == ':' && word == "SHA256") {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The pack files of the repository at `root` that process `pid` has
/// open (read from `/proc/PID/fd`): how many, and those deleted, asked
/// again every 100 ms until none is deleted or `patience` has passed.
pub fn packs_held(
    pid: u32,
    root: &std::path::Path,
    patience: std::time::Duration,
) -> (usize, Vec<String>) {
    let folder = root
        .join(".git/objects/pack")
        .to_string_lossy()
        .into_owned();
    let fds = format!("/proc/{pid}/fd");
    let deadline = std::time::Instant::now() + patience;
    loop {
        let held: Vec<String> = std::fs::read_dir(&fds)
            .into_iter()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .filter(|target| target.starts_with(&folder))
            .collect();
        let deleted: Vec<String> = held
            .iter()
            .filter(|t| t.ends_with(" (deleted)"))
            .cloned()
            .collect();
        if deleted.is_empty() || std::time::Instant::now() > deadline {
            return (held.len(), deleted);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
