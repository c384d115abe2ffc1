//! `TestRepo`: a governance repository in a temporary folder, made without
//! `gov init` (keys, `allowed_signers`, a first signed commit on `main`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gov::config::Settings;
use gov::store::git::{commit_files, init_repo};
use gov::store::keys::{AllowedSigners, Role, SigningKey};

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
        let repo = init_repo(&root, "main")?;
        let gov_toml = "# all defaults\n";
        std::fs::write(root.join("gov.toml"), gov_toml)?;
        let settings = Settings::load(&root)?;
        let mut signers = String::new();
        for (role, path) in [
            (Role::Server, &settings.server_key),
            (Role::Watchdog, &settings.watchdog_key),
            (Role::Approver, &settings.operator_key),
        ] {
            let key = SigningKey::generate(role.as_str())?;
            key.write_new(path)?;
            let name = if role == Role::Approver {
                "operator"
            } else {
                "gov"
            };
            signers.push_str(&AllowedSigners::line_for(role, name, &key));
            signers.push('\n');
        }
        let files = vec![
            ("gov.toml".to_string(), gov_toml.as_bytes().to_vec()),
            (".gitignore".to_string(), b".gov/\n".to_vec()),
            ("policies/allowed_signers".to_string(), signers.into_bytes()),
        ];
        for (path, data) in &files {
            let p = root.join(path);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(p, data)?;
        }
        let server = SigningKey::load(&settings.server_key)?;
        let who = git2::Signature::now("gov server", "server@gov")?;
        commit_files(
            &repo,
            &server,
            &who,
            &settings.main_refname(),
            None,
            &files,
            "gov init",
        )?;
        Ok(TestRepo { dir, settings })
    }

    pub fn root(&self) -> &Path {
        &self.settings.root
    }

    pub fn repo(&self) -> TestResult<git2::Repository> {
        Ok(git2::Repository::open(self.root())?)
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

    /// Runs the stock `git` in the repository.
    pub fn git(&self, args: &[&str]) -> TestResult<Output> {
        Ok(Command::new("git")
            .current_dir(self.root())
            .args(args)
            .output()?)
    }

    pub fn allowed_signers(&self) -> PathBuf {
        self.settings.allowed_signers_path()
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
