//! The agents in force: the `agents/<id>/agent.toml` files of a commit of
//! `main`, not the working tree, so that caps, group, wall clock and command
//! change only through review (the same rule as the policy set).

use std::collections::BTreeMap;
use std::path::Path;

use git2::{Oid, Repository};

use crate::config::{valid_agent_id, AgentSettings, Settings};

/// The folder of the governance repository that holds the agents.
pub const AGENTS_DIR: &str = "agents";
/// The file in an agent's folder that holds its settings.
pub const AGENT_FILE: &str = "agent.toml";

/// The id of the `agents/` tree of a commit (equal ids: same agents).
pub fn agents_tree(repo: &Repository, commit: Oid) -> Option<Oid> {
    crate::store::git::subtree_id(repo, commit, AGENTS_DIR)
}

/// Every agent of a commit: each `agents/<id>/agent.toml` blob whose folder
/// name is a valid agent id, parsed against `gov.toml`, or why it does not
/// parse. Folders without an `agent.toml` are not agents.
pub fn agents_at(
    repo: &Repository,
    commit: Oid,
    settings: &Settings,
) -> Result<BTreeMap<String, Result<AgentSettings, String>>, git2::Error> {
    let mut out = BTreeMap::new();
    let tree = repo.find_commit(commit)?.tree()?;
    let dir = match tree.get_path(Path::new(AGENTS_DIR)) {
        Ok(entry) => entry.to_object(repo)?.peel_to_tree()?,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in dir.iter() {
        let Some(id) = entry.name() else { continue };
        if entry.kind() != Some(git2::ObjectType::Tree) || !valid_agent_id(id) {
            continue;
        }
        let folder = repo.find_tree(entry.id())?;
        let Some(file) = folder.get_name(AGENT_FILE) else {
            continue;
        };
        if file.kind() != Some(git2::ObjectType::Blob) {
            continue;
        }
        let shown = format!("{AGENTS_DIR}/{id}/{AGENT_FILE} at {commit}");
        let blob = repo.find_blob(file.id())?;
        let parsed = match std::str::from_utf8(blob.content()) {
            Ok(text) => AgentSettings::parse(settings, id, text, Path::new(&shown))
                .map_err(|e| crate::domain::errors::error_chain(&e)),
            Err(_) => Err(format!("`{shown}` is not UTF-8 text")),
        };
        out.insert(id.to_string(), parsed);
    }
    Ok(out)
}

/// The text of `agents/<id>/agent.toml` at a commit, if it is there.
pub fn agent_file_at(repo: &Repository, commit: Oid, id: &str) -> Option<Vec<u8>> {
    let tree = repo.find_commit(commit).ok()?.tree().ok()?;
    let path = format!("{AGENTS_DIR}/{id}/{AGENT_FILE}");
    let entry = tree.get_path(Path::new(&path)).ok()?;
    let blob = repo.find_blob(entry.id()).ok()?;
    Some(blob.content().to_vec())
}
