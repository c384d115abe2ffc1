//! `.gov/server.json`: where the `gov serve` of this repository listens.
//!
//! `gov serve` writes it once it is listening and removes it when it stops.
//! The commands that prefer to go through a running server (`gov approve`,
//! `gov pause`, `gov status`, ...) read it, so that they talk to the server
//! of *this* repository, on whatever port it chose, and never to some other
//! program that happens to listen on the configured port. A record left by
//! a killed server is ignored once its process is gone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Settings;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    pub pid: u32,
    pub url: String,
}

pub fn path(settings: &Settings) -> PathBuf {
    settings.local_dir().join("server.json")
}

/// Writes the record atomically (a temporary file renamed into place).
pub fn write(settings: &Settings, record: &ServerRecord) -> std::io::Result<()> {
    let p = path(settings);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = p.with_extension(format!("json.{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(record).unwrap_or_default())?;
    std::fs::rename(&tmp, &p)
}

/// Removes the record if it is still ours.
pub fn remove_own(settings: &Settings) {
    let p = path(settings);
    if read_file(&p).is_some_and(|r| r.pid == std::process::id()) {
        let _ = std::fs::remove_file(&p);
    }
}

fn read_file(p: &Path) -> Option<ServerRecord> {
    let bytes = std::fs::read(p).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_ok()
}

/// The record of a server of this repository whose process still runs.
pub fn live(settings: &Settings) -> Option<ServerRecord> {
    read_file(&path(settings)).filter(|r| alive(r.pid))
}
