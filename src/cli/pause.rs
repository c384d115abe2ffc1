//! `gov pause AGENT [--reason R]` and `gov resume AGENT`: through the
//! running server when one answers, else directly on the repository.

use std::path::PathBuf;

use crate::wire::{AgentState, PauseRequest};

use super::http::Client;
use super::{ExitCode, Failure};
use crate::app::agents;
use crate::app::service::Service;
use crate::config::Settings;
use crate::domain::audit::Actor;

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    pub agent: String,
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    pub agent: String,
}

fn apply(agent: &str, pause: Option<String>, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let root = super::repo_root(repo)?;
    let settings = Settings::load(&root)?;
    let client = Client::new(&settings);
    let verb = if pause.is_some() { "pause" } else { "resume" };
    let status = if client.is_up() {
        let body = PauseRequest {
            reason: pause.clone(),
        };
        let state: AgentState = client
            .post(&format!("/agents/{agent}/{verb}"), &body)?
            .ok_as()?;
        state.status
    } else {
        let svc = Service::open(&settings)?;
        let actor = Actor::operator(&settings.operator_name);
        let s = match pause {
            Some(r) => agents::pause(&svc, agent, &r, actor),
            None => agents::resume(&svc, agent, actor),
        }?;
        s.status
    };
    println!("agent {agent}: {status}");
    Ok(ExitCode::Ok)
}

pub fn run_pause(args: PauseArgs, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let reason = args
        .reason
        .unwrap_or_else(|| "paused by the operator".into());
    apply(&args.agent, Some(reason), repo)
}

pub fn run_resume(args: ResumeArgs, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    apply(&args.agent, None, repo)
}
