//! The layering rules of ARCHITECTURE.md, checked on the source: the edges
//! (`cli/`, `server/`) and the runner reach the store only through `app/`,
//! and never Git or SQLite themselves; the domain imports nothing of the
//! outside world; the store does not call up into the runner; the store is
//! private to the crate but for `gov::testkit`. No exception
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

/// Checks that there are `lines` in `file` and that each starts with
/// `prefix`; names those that do not.
fn assert_all_start_with(lines: &[&str], prefix: &str, file: &str) {
    assert!(!lines.is_empty(), "{file}: nothing found");
    let other: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with(prefix))
        .collect();
    assert_eq!(other, Vec::<&str>::new(), "{file}");
}

fn read_source(rel: &str) -> TestResult<String> {
    Ok(std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel),
    )?)
}

#[test]
fn the_store_is_crate_private_and_tests_reach_it_only_through_testkit() -> TestResult {
    // The crate declares the store `pub(crate)`, and every store module too.
    let lib = read_source("src/lib.rs")?;
    let lib: Vec<&str> = lib.lines().collect();
    assert!(lib.contains(&"pub(crate) mod store;"), "src/lib.rs");
    let store = read_source("src/store/mod.rs")?;
    let declared: Vec<&str> = store
        .lines()
        .filter(|l| l.contains("mod "))
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    assert_all_start_with(&declared, "pub(crate) mod ", "src/store/mod.rs");
    // The one door, `gov::testkit`, exists only with the `testkit` feature
    // and only re-exports store items (no logic of its own to drift).
    let door = lib
        .iter()
        .position(|l| *l == "pub mod testkit;")
        .ok_or("src/lib.rs declares no `pub mod testkit;`")?;
    assert_eq!(lib[door - 1], "#[cfg(feature = \"testkit\")]");
    let testkit = read_source("src/testkit.rs")?;
    let code: Vec<&str> = testkit
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with("#["))
        .filter(|l| !l.starts_with("pub mod ") && *l != "}")
        .collect();
    assert_all_start_with(&code, "pub use crate::store::", "src/testkit.rs");
    // Only the dev build turns the feature on: no default feature, and the
    // dependency that enables it is gov itself, among the dev-dependencies.
    let manifest = read_source("Cargo.toml")?;
    let enabling: Vec<(&str, &str)> = {
        let mut section = "";
        let mut found = Vec::new();
        for l in manifest.lines() {
            if l.starts_with('[') {
                section = l;
            } else if l.contains("\"testkit\"") {
                found.push((section, l));
            }
        }
        found
    };
    assert_eq!(
        enabling,
        [(
            "[dev-dependencies]",
            "gov = { path = \".\", features = [\"testkit\"] }"
        )]
    );
    assert!(!manifest.lines().any(|l| l.starts_with("default =")));
    Ok(())
}
