//! `TestRepo`: a governance repository in a temporary folder, made by
//! `app::init` as `gov init` makes it (its keys, `allowed_signers`, the
//! default policies and agents, one commit on `main` signed with the
//! operator's key), with fixed inputs: operator `operator`, new keys.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gov::app::governance::Role;
use gov::app::init::{init, InitOptions};
use gov::config::Settings;
use gov::testkit::keys::SigningKey;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub settings: Settings,
}

impl TestRepo {
    pub fn new() -> TestResult<TestRepo> {
        Self::new_in(tempfile::tempdir()?)
    }

    /// A repository in `dir` (e.g. a folder on a small file system).
    pub fn new_in(dir: tempfile::TempDir) -> TestResult<TestRepo> {
        let root = dir.path().to_path_buf();
        init(&InitOptions {
            dir: root.clone(),
            operator_name: "operator".into(),
            operator_key: None,
        })?;
        let settings = Settings::load(&root)?;
        Ok(TestRepo { dir, settings })
    }

    pub fn root(&self) -> &Path {
        &self.settings.root
    }

    pub fn repo(&self) -> TestResult<git2::Repository> {
        Ok(git2::Repository::open(self.root())?)
    }

    /// What `gov approve ID` prints once the approval merge is `main`'s
    /// tip.
    pub fn approved_line(&self, id: &str) -> TestResult<String> {
        let merge = self.repo()?.refname_to_id(&self.settings.main_refname())?;
        Ok(format!(
            "proposal `{id}` approved: merged into {} as {merge}\n",
            self.settings.main_branch
        ))
    }

    pub fn key(&self, role: Role) -> TestResult<SigningKey> {
        let path = match role {
            Role::Server => &self.settings.server_key,
            Role::Watchdog => &self.settings.watchdog_key,
            Role::Approver => &self.settings.operator_key,
        };
        Ok(SigningKey::load(path)?)
    }

    /// Runs `gov --repo ROOT ARGS…`.
    pub fn gov(&self, args: &[&str]) -> TestResult<Output> {
        Ok(Command::new(super::gov_bin())
            .arg("--repo")
            .arg(self.root())
            .args(args)
            .output()?)
    }

    /// Runs `gov --repo ROOT ARGS…` with `GOV_FAULT` naming the point
    /// where it dies (`gov::testkit::fault`), and checks that it did die
    /// there (SIGABRT).
    pub fn gov_killed_at(&self, fault: gov::testkit::fault::Fault, args: &[&str]) -> TestResult {
        use std::os::unix::process::ExitStatusExt;
        let o = Command::new(super::gov_bin())
            .arg("--repo")
            .arg(self.root())
            .args(args)
            .env("GOV_FAULT", fault.name())
            .output()?;
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGABRT),
            "{:?} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(())
    }

    /// Runs the stock `git` in the repository.
    pub fn git(&self, args: &[&str]) -> TestResult<Output> {
        Ok(Command::new("git")
            .current_dir(self.root())
            .args(args)
            .output()?)
    }

    /// Entries of one type, newest first, from the index caught up to the
    /// chain.
    pub fn entries(&self, event_type: &str) -> TestResult<Vec<gov::app::audit::IndexedEntry>> {
        let (_git, index) = gov::app::governance::open_index(&self.settings)?;
        Ok(index.query(&gov::app::audit::AuditFilter {
            event_type: Some(event_type.into()),
            ..Default::default()
        })?)
    }

    pub fn allowed_signers(&self) -> PathBuf {
        self.settings.allowed_signers_path()
    }

    /// Runs stock `git ARGS` in the repository with its `allowed_signers`
    /// configured, so that `verify-commit` and `--show-signature` check
    /// SSH signatures.
    pub fn git_with_signers(&self, args: &[&str]) -> TestResult<Output> {
        let signers = format!(
            "gpg.ssh.allowedSignersFile={}",
            self.allowed_signers().display()
        );
        self.git(&[&["-c", signers.as_str()], args].concat())
    }
}

/// A program a test needs (e.g. `ssh-keygen`, which `git` needs to check
/// SSH signatures): missing, it is a failed set-up, never a skipped check.
/// `scripts/test.sh` installs them.
pub fn require_program(name: &str) -> TestResult {
    match Command::new(name).arg("-?").output() {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "`{name}` cannot be run ({e}): the test needs it; `scripts/test.sh` installs it"
        )
        .into()),
    }
}

/// The output of a command as text.
pub trait OutputText {
    fn stdout_text(&self) -> String;
    fn stderr_text(&self) -> String;
}

impl OutputText for Output {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}
