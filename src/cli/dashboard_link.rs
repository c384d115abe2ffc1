//! `gov dashboard-link [--port PORT]`: asks the running server for a fresh
//! one-time dashboard login link (with the operator's token) and prints it.

use std::path::PathBuf;

use super::http::Client;
use super::{ExitCode, Failure};
use crate::config::Settings;
use crate::wire::LoginLink;

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
    let reply = client.post("/dashboard/login-codes", &serde_json::Map::new())?;
    let status = reply.status;
    let link: LoginLink = reply.ok_as().map_err(|f| {
        Failure::new(
            f.code,
            format!(
                "the server at {} refused a login link (HTTP {status}): {}",
                client.base(),
                f.message
            ),
        )
    })?;
    println!("{}", link.url);
    eprintln!(
        "open it in a browser on this machine; it works once, within {} minutes",
        link.expires_in_seconds / 60
    );
    Ok(ExitCode::Ok)
}
