//! The layering rules of ARCHITECTURE.md, checked on the source: the edges
//! (`cli/`, `server/`) and the runner reach the store only through `app/`,
//! and never Git or SQLite themselves; the domain imports nothing of the
//! outside world; the store does not call up into the runner. No exception
//! is listed: a new offender fails.

use std::path::{Path, PathBuf};

use crate::support::repo::TestResult;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> TestResult {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            rust_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// Files under `src/<dir>` whose code (comments and unit tests aside)
/// names one of `needles`.
fn offenders(dir: &str, needles: &[&str]) -> TestResult<Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src.join(dir), &mut files)?;
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        // Unit tests may read fixtures; the rule is about the code itself.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        let code = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        if needles.iter().any(|n| code.contains(n)) {
            let rel = f.strip_prefix(&src)?.display().to_string();
            found.push(rel);
        }
    }
    found.sort();
    Ok(found)
}

#[test]
fn edges_reach_the_store_only_through_app() -> TestResult {
    for dir in ["cli", "server", "runner"] {
        assert_eq!(
            offenders(dir, &["store::", "git2", "rusqlite"])?,
            Vec::<String>::new(),
            "src/{dir} reaches the store, Git or SQLite without app/"
        );
    }
    Ok(())
}

#[test]
fn the_store_does_not_call_up() -> TestResult {
    let up = ["crate::runner", "crate::cli", "crate::server", "crate::app"];
    assert_eq!(offenders("store", &up)?, Vec::<String>::new());
    Ok(())
}

#[test]
fn the_domain_imports_nothing_of_the_outside_world() -> TestResult {
    let outside = [
        "crate::config",
        "crate::store",
        "crate::app",
        "std::fs",
        "std::process",
        "tokio",
        "git2",
        "rusqlite",
        "axum",
    ];
    assert_eq!(offenders("domain", &outside)?, Vec::<String>::new());
    Ok(())
}

#[test]
fn sql_lives_in_the_store() -> TestResult {
    let sql = ["SELECT ", "INSERT ", "UPDATE ", "DELETE FROM"];
    for dir in ["app", "cli", "server", "domain", "runner"] {
        assert_eq!(
            offenders(dir, &sql)?,
            Vec::<String>::new(),
            "SQL in src/{dir}"
        );
    }
    Ok(())
}

#[test]
fn the_clock_is_read_in_one_place() -> TestResult {
    let now = ["Utc::now", "Local::now", "SystemTime::now"];
    assert_eq!(
        offenders("", &now)?,
        ["app/clock.rs"],
        "the time is read from app::clock::Clock"
    );
    Ok(())
}

#[test]
fn the_store_is_crate_private_but_for_what_tests_and_benchmarks_read() -> TestResult {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/mod.rs"))?;
    let public: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    // The integration tests and the benchmarks (examples/) build fixtures
    // with these: keys, signed commits, the index, the chain, maintenance,
    // policy loading, the projection. Everything else is `pub(crate)`.
    assert_eq!(
        public,
        [
            "audit",
            "git",
            "index",
            "keys",
            "maintain",
            "policies",
            "projection"
        ]
    );
    Ok(())
}
