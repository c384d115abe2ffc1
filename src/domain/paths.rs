//! Lexical path arithmetic: `.` and `..` resolved on the text of a path, with
//! no file system access. The store resolves symlinks first (see
//! `store::policies::canonical_tool_path`); this is what is left after that.

use std::path::{Component, Path, PathBuf};

/// Resolves `.` and `..` lexically. `..` at the root stays at the root; a
/// relative path keeps the `..` it cannot resolve (`../a` stays `../a`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for comp in path.components() {
        match comp {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) | Some(Component::Prefix(_)) => {}
                _ => out.push(comp),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

/// `path` relative to `base`, joined with `/`, when `path` is `base` or
/// below it (component-wise: `/a/bc` is not below `/a/b`). Both should be
/// normalised already. `base` itself gives `.`.
pub fn relative_to(path: &Path, base: &Path) -> Option<String> {
    let rest = path.strip_prefix(base).ok()?;
    let parts: Vec<String> = rest
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.is_empty() {
        Some(".".to_string())
    } else {
        Some(parts.join("/"))
    }
}

/// A path as text with `/` separators.
pub fn to_slash(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}

/// Paths as messages show them: each in backticks, separated by `, `
/// (`` `a`, `b` ``).
pub fn quoted_list<S: AsRef<str>>(paths: &[S]) -> String {
    paths
        .iter()
        .map(|p| format!("`{}`", p.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        to_slash(&normalize(Path::new(s)))
    }

    #[test]
    fn resolves_dots() {
        assert_eq!(n("agents/noop/./memory.md"), "agents/noop/memory.md");
        assert_eq!(n("agents/noop/../../etc/passwd"), "etc/passwd");
        assert_eq!(n("/repo/agents/noop/../../../etc/passwd"), "/etc/passwd");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("../a/b/.."), "../a");
        assert_eq!(n("a/.."), ".");
    }

    #[test]
    fn relative_is_component_wise() {
        let base = Path::new("/r/agents/noop");
        assert_eq!(
            relative_to(Path::new("/r/agents/noop/m.md"), base).as_deref(),
            Some("m.md")
        );
        assert_eq!(
            relative_to(Path::new("/r/agents/noop"), base).as_deref(),
            Some(".")
        );
        assert_eq!(relative_to(Path::new("/r/agents/noopx/m.md"), base), None);
        assert_eq!(relative_to(Path::new("/etc/passwd"), base), None);
    }
}
