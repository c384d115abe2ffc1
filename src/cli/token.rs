//! `gov token revoke TOKEN`: ends an agent token before it expires, through
//! the running server when one answers, else directly on the repository.

use std::io::Read;
use std::path::PathBuf;

use super::http::Client;
use super::{ExitCode, Failure};
use crate::app::runs;
use crate::app::service::Service;
use crate::config::Settings;
use crate::domain::audit::Actor;
use crate::wire::{TokenRevoke, TokenRevoked};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Revoke an agent token (audited as `agent_token_revoked`).
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The token, or `-` to read it from standard input (keeps it out of
    /// the process list).
    pub token: String,
}

pub fn run(args: Args, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let TokenCommand::Revoke(a) = args.command;
    let token = if a.token == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure::new(ExitCode::Failure, format!("cannot read the token: {e}")))?;
        s.trim().to_string()
    } else {
        a.token.trim().to_string()
    };
    let settings = Settings::load(&super::repo_root(repo)?)?;
    let client = Client::new(&settings);
    let agent = if client.is_up() {
        let body = serde_json::to_value(TokenRevoke { token })
            .map_err(|e| Failure::new(ExitCode::Failure, e.to_string()))?;
        let revoked: TokenRevoked = client.post("/tokens/revoke", &body)?.ok_as()?;
        revoked.agent_id
    } else {
        let svc = Service::open(&settings)?;
        runs::revoke_token(&svc, &token, Actor::operator(&settings.operator_name))?
    };
    println!("revoked a token of agent `{agent}`");
    Ok(ExitCode::Ok)
}
