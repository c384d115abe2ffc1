//! `gov dashboard-link [--port PORT]`: asks the running server for a fresh
//! one-time dashboard login link (with the operator's token) and prints it.

use std::path::PathBuf;

use super::http::Client;
use super::{ExitCode, Failure};
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's port on 127.0.0.1 (default: the server `.gov/server.json`
    /// names, or `GOV_URL`).
    #[arg(long)]
    pub port: Option<u16>,
}

pub fn run(args: Args, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let root = super::repo_root(repo)?;
    let settings = Settings::load(&root)?;
    let client = match args.port {
        Some(port) => Client::at_port(&settings, port),
        None => Client::new(&settings),
    };
    client.require_server()?;
    let reply = client.post("/dashboard/login-codes", &serde_json::json!({}))?;
    let status = reply.status;
    let body = reply.ok().map_err(|f| {
        Failure::new(
            f.code,
            format!(
                "the server at {} refused a login link (HTTP {status}): {}",
                client.base(),
                f.message
            ),
        )
    })?;
    let url = body["url"].as_str().ok_or_else(|| {
        Failure::new(
            ExitCode::Failure,
            format!("the server at {} sent no login link", client.base()),
        )
    })?;
    println!("{url}");
    eprintln!(
        "open it in a browser on this machine; it works once, within {} minutes",
        body["expires_in_seconds"].as_u64().unwrap_or(300) / 60
    );
    Ok(ExitCode::Ok)
}
