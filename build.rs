//! Embeds the governance-repository defaults that `gov init` writes: the
//! project's own `gov.toml`, `policies/`, `agents/`, `proposals/` and
//! `audit/`, so that a checkout of this repository is itself a working
//! governance repository and the binary carries exactly the same files.

use std::path::{Path, PathBuf};

const ROOTS: &[&str] = &["gov.toml", "policies", "agents", "proposals", "audit"];

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let full = root.join(rel);
    if full.is_file() {
        out.push(rel.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(&full) else {
        return;
    };
    let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        let s = name.to_string_lossy();
        // Local state never ships: run logs, caches, editor droppings.
        if s == ".gov" || s == "__pycache__" || s.ends_with('~') || s.ends_with(".pyc") {
            continue;
        }
        collect(root, &rel.join(&name), out);
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut files = Vec::new();
    for r in ROOTS {
        println!("cargo:rerun-if-changed={r}");
        collect(&root, Path::new(r), &mut files);
    }
    let mut code = String::from("/// Files `gov init` writes: (path relative to the repository, contents).\npub const SCAFFOLD: &[(&str, &[u8])] = &[\n");
    for f in &files {
        let rel = f.to_string_lossy().replace('\\', "/");
        // Named from the package's folder when the crate compiles, not by
        // this run's absolute path: a target folder shared by two checkouts
        // keeps this file, and the other checkout may be gone by then.
        code.push_str(&format!(
            "    ({rel:?}, include_bytes!(concat!(env!(\"CARGO_MANIFEST_DIR\"), {:?}))),\n",
            format!("/{rel}")
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("scaffold.rs");
    if let Err(e) = std::fs::write(&out, code) {
        panic!("cannot write {}: {e}", out.display());
    }
}
