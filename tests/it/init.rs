//! `gov init`: the scaffold, the keys, the signed first commit, no-clobber.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::{git_checked, gov, pin_ids, snapshot_tree};

#[test]
fn init_writes_the_projects_own_defaults_and_a_signed_commit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("gp");
    let out = gov(&["init", dir.to_str().expect("utf-8 path")], tmp.path());
    assert!(out.status.success(), "init failed: {}", out.stderr_text());
    let committed = git_checked(&dir, &["ls-tree", "-r", "--name-only", "main"]);
    let files = String::from_utf8_lossy(&committed.stdout).lines().count();
    let d = dir.display();
    assert_eq!(
        pin_ids(&out.stdout_text()),
        format!(
            "created a governance repository in {d} ({files} files)
  first commit on main: <commit> (signed by the operator)
  server key:   <fingerprint>
  watchdog key: <fingerprint>
  operator key: <fingerprint>

next steps:
  cd {d}
  gov policy test          # the policy set and its test cases
  gov serve                # server and dashboard on 127.0.0.1:8005
  gov watchdog             # in a second terminal
  gov run noop smoke       # in a third: the zero-cost smoke agent
  gov audit verify         # check the signed audit trail
"
        )
    );

    // Every default file is byte-for-byte the project's own, except
    // allowed_signers, which gains the three generated keys.
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (rel, _) in gov::app::scaffold::SCAFFOLD {
        let ours = std::fs::read(project.join(rel)).expect("project file");
        let theirs = std::fs::read(dir.join(rel)).expect("initialised file");
        if *rel == "policies/allowed_signers" {
            let text = String::from_utf8(theirs).expect("utf-8");
            assert!(text.starts_with(&String::from_utf8_lossy(&ours).to_string()));
            for principal in [
                "gov@server.gov",
                "gov@watchdog.gov",
                "operator@approver.gov",
            ] {
                assert!(
                    text.contains(principal),
                    "allowed_signers lacks {principal}"
                );
            }
        } else {
            assert_eq!(ours, theirs, "{rel} differs from the project's own");
        }
    }

    // Private keys are 0600 OpenSSH files.
    #[cfg(unix)]
    for k in ["server", "watchdog", "operator"] {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(".gov/keys").join(k);
        let mode = std::fs::metadata(&p).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{k} key mode");
        let text = std::fs::read_to_string(&p).expect("key text");
        assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    }

    // Stock git: the first commit on main is signed by the operator and
    // verifies; the work tree is clean.
    let git = |args: &[&str]| crate::support::git_checked(&dir, args);
    let branch = git(&["rev-parse", "--abbrev-ref", "HEAD"]);
    assert_eq!(String::from_utf8_lossy(&branch.stdout).trim(), "main");
    let v = git(&["verify-commit", "-v", "main"]);
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(v.status.success(), "verify-commit failed: {err}");
    assert!(
        err.contains("Good \"git\" signature for operator@approver.gov"),
        "{err}"
    );
    let log = git(&["log", "--show-signature", "-1", "main"]);
    assert!(String::from_utf8_lossy(&log.stdout).contains("Good \"git\" signature"));
    let status = git(&["status", "--porcelain"]);
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        "",
        "work tree not clean"
    );
}

#[test]
fn init_twice_lists_collisions_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("gp");
    let d = dir.to_str().expect("utf-8 path");
    assert!(gov(&["init", d], tmp.path()).status.success());
    let before: BTreeMap<_, _> = snapshot_tree(&dir);

    let again = gov(&["init", d], tmp.path());
    assert_eq!(again.status.code(), Some(2));
    let err = again.stderr_text();
    assert!(err.contains("refusing to overwrite"), "{err}");
    for listed in [
        "gov.toml",
        "policies/schema.cedarschema",
        "agents/noop/agent.toml",
        ".gitignore",
    ] {
        assert!(err.contains(listed), "collision list lacks {listed}: {err}");
    }
    assert_eq!(before, snapshot_tree(&dir), "second init changed files");
}

#[test]
fn init_with_one_colliding_file_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("gp");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("gov.toml"), "# mine\n").expect("write");
    let out = gov(&["init", dir.to_str().expect("utf-8")], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        out.stderr_text(),
        format!(
            "error: refusing to overwrite existing files (nothing was written):\n  {}\n",
            dir.join("gov.toml").display()
        )
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("gov.toml")]);
    assert_eq!(
        std::fs::read_to_string(dir.join("gov.toml")).expect("read"),
        "# mine\n"
    );
}

#[test]
fn init_with_ci_writes_and_commits_the_policy_ci_jobs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = |name: &str| std::fs::read(project.join("docs/ci").join(name)).expect("docs/ci");
    for (forge, expected) in [
        (
            "github",
            vec![
                (
                    ".github/workflows/gov-policy.yml",
                    docs("github-policy.yml"),
                ),
                (".gov-ci/gov-policy-ci.sh", docs("gov-policy-ci.sh")),
            ],
        ),
        (
            "gitlab",
            vec![
                (".gov-ci/gitlab-policy.yml", docs("gitlab-policy.yml")),
                (".gov-ci/gov-policy-ci.sh", docs("gov-policy-ci.sh")),
                (
                    ".gitlab-ci.yml",
                    b"include:\n  - local: .gov-ci/gitlab-policy.yml\n".to_vec(),
                ),
            ],
        ),
    ] {
        let dir = tmp.path().join(forge);
        let out = gov(
            &["init", dir.to_str().expect("utf-8 path"), "--ci", forge],
            tmp.path(),
        );
        assert!(out.status.success(), "init failed: {}", out.stderr_text());
        let said = pin_ids(&out.stdout_text());
        assert_eq!(
            said.lines().nth(5),
            Some("  policy CI jobs: <commit> (signed by the operator; see docs/ci/README.md)"),
            "{said}"
        );
        for (path, bytes) in expected {
            assert_eq!(std::fs::read(dir.join(path)).expect(path), bytes, "{path}");
        }
        // Committed on main, signed by the operator; the tree is clean and
        // the chain verifies.
        let git = |args: &[&str]| crate::support::git_checked(&dir, args);
        let v = git(&["verify-commit", "main"]);
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
        let count = git(&["rev-list", "--count", "main"]);
        assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "2");
        let status = git(&["status", "--porcelain"]);
        assert_eq!(String::from_utf8_lossy(&status.stdout), "");
        let verify = gov(&["audit", "verify"], &dir);
        assert!(verify.status.success(), "{}", verify.stdout_text());
    }

    // A CI file already there: nothing is written.
    let dir = tmp.path().join("taken");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(".gitlab-ci.yml"), "stages: []\n").expect("write");
    let out = gov(
        &["init", dir.to_str().expect("utf-8 path"), "--ci", "gitlab"],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr_text()
            .contains("refusing to overwrite existing files (nothing was written):"),
        "{}",
        out.stderr_text()
    );
    assert!(!dir.join("gov.toml").exists());
}

/// A reader that stops early (`gov init DIR | head -0`, `gov audit log |
/// head`) ends a command that prints by the broken-pipe signal, as it ends
/// any Unix tool, with nothing on stderr; printing to the closed pipe
/// panicked with a backtrace before. `gov init` prints once its work is
/// done, so the repository it made is whole.
#[test]
fn a_reader_that_stops_early_ends_a_printing_command_quietly(
) -> Result<(), Box<dyn std::error::Error>> {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("gp");
    let dir_arg = dir.to_str().ok_or("non-utf-8 path")?;
    let into_closed_pipe = |args: &[&str]| -> std::io::Result<std::process::Output> {
        let (read, write) = nix::unistd::pipe()?;
        drop(read);
        std::process::Command::new(crate::support::gov_bin())
            .args(args)
            .current_dir(tmp.path())
            .env_remove("GOV_REPO")
            .stdout(std::process::Stdio::from(write))
            .output()
    };
    let out = into_closed_pipe(&["init", dir_arg])?;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let verified = gov(&["--repo", dir_arg, "audit", "verify"], tmp.path());
    assert!(verified.status.success(), "{}", verified.stderr_text());
    let paused = gov(
        &[
            "--repo",
            dir_arg,
            "pause",
            "noop",
            "--reason",
            "an entry to list",
        ],
        tmp.path(),
    );
    assert!(paused.status.success(), "{}", paused.stderr_text());
    let log = gov(&["--repo", dir_arg, "audit", "log"], tmp.path());
    assert!(
        log.status.success() && !log.stdout.is_empty(),
        "{}",
        log.stderr_text()
    );
    let out = into_closed_pipe(&["--repo", dir_arg, "audit", "log"])?;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    Ok(())
}
