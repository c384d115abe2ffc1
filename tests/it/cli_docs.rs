//! docs/CLI.md against the binary: the exit codes it gives by example, and
//! the flags each command's section names, which `--help` must list.

use std::path::Path;

use crate::support::repo::TestResult;
use crate::support::{gov, gov_bin};

fn cli_md() -> TestResult<String> {
    Ok(std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CLI.md"),
    )?)
}

/// The rows of the table under `### Exit codes by example`.
fn examples(doc: &str) -> TestResult<Vec<(String, i32)>> {
    let section = doc
        .split("### Exit codes by example")
        .nth(1)
        .ok_or("docs/CLI.md has no `### Exit codes by example`")?;
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `gov ")) {
        let (cmd, code) = line
            .trim_matches('|')
            .rsplit_once('|')
            .ok_or_else(|| format!("not a row: {line}"))?;
        let cmd = cmd.trim().trim_matches('`').to_string();
        rows.push((cmd, code.trim().parse()?));
    }
    Ok(rows)
}

#[test]
fn documented_exit_codes_hold() -> TestResult {
    let rows = examples(&cli_md()?)?;
    assert!(rows.len() >= 20, "only {} examples found", rows.len());
    let dir = tempfile::tempdir()?;
    let made = gov(&["init", "repo"], dir.path());
    assert!(made.status.success(), "{}", made.stderr_text());
    let root = dir.path().join("repo");
    // No server of this repository runs, and none may be found on the
    // default port either.
    let toml = std::fs::read_to_string(root.join("gov.toml"))?;
    assert!(
        toml.contains("# port = 8005"),
        "gov init changed its gov.toml"
    );
    std::fs::write(
        root.join("gov.toml"),
        toml.replace("# port = 8005", "port = 1"),
    )?;
    let bin = gov_bin();
    let mut wrong = Vec::new();
    for (cmd, expected) in &rows {
        let line = format!("'{}'{}", bin.display(), &cmd["gov".len()..]);
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .current_dir(&root)
            .env_remove("GOV_REPO")
            .env_remove("GOV_URL")
            .output()?;
        if out.status.code() != Some(*expected) {
            wrong.push(format!(
                "`{cmd}`: exit {:?}, docs say {expected}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// Each `## gov CMD ...` section's flags appear in `gov CMD --help`.
#[test]
fn documented_flags_are_in_help() -> TestResult {
    let doc = cli_md()?;
    let mut checked = 0;
    for section in doc.split("\n## gov ").skip(1) {
        let heading = section.lines().next().unwrap_or_default();
        let words: Vec<&str> = heading
            .split_whitespace()
            .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .collect();
        let body = section.split("\n## ").next().unwrap_or_default();
        let body = body.split("\n### ").next().unwrap_or_default();
        let mut flags: Vec<String> = Vec::new();
        for piece in body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if let Some(name) = piece.strip_prefix("--") {
                let is_flag = name.starts_with(|c: char| c.is_ascii_lowercase());
                if is_flag && !flags.iter().any(|f| f == piece) {
                    flags.push(piece.to_string());
                }
            }
        }
        let mut args = words.clone();
        args.push("--help");
        let out = gov(&args, Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(
            out.status.success(),
            "gov {words:?} --help: {}",
            out.stderr_text()
        );
        let help = out.stdout_text();
        for f in &flags {
            assert!(
                help.contains(f.as_str()),
                "docs/CLI.md documents `{f}` for `gov {}`; its --help does not list it:\n{help}",
                words.join(" ")
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} flags checked");
    Ok(())
}

/// An invalid `gov.toml` is one line naming the line and the key, for every
/// command that reads the repository (`gov policy test` too); diagnostics
/// with `GOV_LOG=debug` carry no colour codes when stderr is not a terminal.
#[test]
fn a_broken_gov_toml_is_named_in_one_line() -> TestResult {
    let dir = tempfile::tempdir()?;
    let made = gov(&["init", "repo"], dir.path());
    assert!(made.status.success(), "{}", made.stderr_text());
    let root = dir.path().join("repo");
    let path = root.join("gov.toml");
    let good = std::fs::read_to_string(&path)?;
    let line = good
        .lines()
        .position(|l| l == "# port = 8005")
        .ok_or("no port line")?
        + 1;
    std::fs::write(&path, good.replace("# port = 8005", "port = \"abc\""))?;
    for cmd in [&["status"][..], &["policy", "test"], &["proposals"]] {
        let out = gov(cmd, &root);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
        assert_eq!(
            out.stderr_text(),
            format!(
                "error: `{}` is not valid: line {line}: `server.port`: invalid type: string \"abc\", expected u16\n",
                path.display()
            )
        );
    }
    std::fs::write(&path, format!("{good}\nnot toml\n"))?;
    let out = gov(&["status"], &root);
    let err = out.stderr_text();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("line {}:", good.lines().count() + 2)),
        "{err}"
    );
    std::fs::write(&path, &good)?;
    let quiet = gov(&["proposals"], &root);
    let debug = std::process::Command::new(gov_bin())
        .arg("proposals")
        .current_dir(&root)
        .env("GOV_LOG", "debug")
        .env_remove("GOV_REPO")
        .env_remove("GOV_URL")
        .output()?;
    let debug_err = String::from_utf8_lossy(&debug.stderr);
    assert_eq!(quiet.stderr_text(), "");
    assert!(debug_err.contains("DEBUG"), "{debug_err}");
    assert!(debug_err.contains("reading settings"), "{debug_err}");
    assert!(!debug_err.contains('\u{1b}'), "colour codes: {debug_err:?}");
    Ok(())
}
