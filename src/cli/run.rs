//! `gov run AGENT [TASK]`: run an agent once under governance; see
//! [`crate::runner::run`]. Exit 0 when the run completed (or the server
//! skipped it), 1 when it failed or could not be recorded, 2 for a
//! configuration error.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::{ExitCode, Failure};
use crate::app::runs::{finish_run, RunEnd};
use crate::app::service::Service;
use crate::client::ClientError;
use crate::config::Settings;
use crate::domain::audit::Actor;
use crate::runner::process::stop_on_signals;
use crate::runner::run::{run_agent, FinishBody, RunError, RunReport, RunRequest, RunStatus};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent: a folder `agents/AGENT` with an `agent.toml`.
    pub agent: String,
    /// The task: `agents/AGENT/tasks/TASK.md` (required for claude agents).
    pub task: Option<String>,
}

/// The default time between SIGTERM and SIGKILL; `GOV_KILL_GRACE_MS`
/// overrides it.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

fn kill_grace(var: Option<String>) -> Duration {
    var.and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_KILL_GRACE)
}

pub fn run(args: Args, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let root = super::repo_root(repo)?;
    let settings = Settings::load(&root)?;
    let gov_exe = std::env::current_exe().map_err(|e| {
        Failure::new(
            ExitCode::Failure,
            format!("cannot find the gov executable: {e}"),
        )
    })?;
    let request = RunRequest {
        agent_id: args.agent,
        task_id: args.task,
        server_url: super::http::server_base(&settings),
        gov_exe,
        claude_bin: std::env::var_os("CLAUDE_BIN")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| OsString::from("claude")),
        kill_grace: kill_grace(std::env::var("GOV_KILL_GRACE_MS").ok()),
        parent_env: std::env::vars().collect(),
    };
    let stop = stop_on_signals()
        .map_err(|e| Failure::new(ExitCode::Failure, format!("cannot watch for Ctrl-C: {e}")))?;
    match run_agent(&settings, &request, &stop) {
        Ok(report) => Ok(print_report(&request.agent_id, &report)),
        Err(RunError::Finish {
            run_id,
            body,
            source,
        }) => Err(record_locally(&settings, &run_id, &body, &source)),
        Err(e) => Err(e.into()),
    }
}

/// The reason recorded when the server could not be told how a run ended.
pub fn unreachable_reason(body: &FinishBody) -> String {
    match &body.reason {
        Some(r) => format!("server_unreachable_at_finish: {r}"),
        None => "server_unreachable_at_finish".to_string(),
    }
}

/// The server could not be reached at the end of a run: record
/// `agent_run_failed` (and the measured usage) on the chain directly, signed
/// with the server's key, as the server would have. The run still fails
/// (exit 1): whatever the agent did was not reported in time.
fn record_locally(
    settings: &Settings,
    run_id: &str,
    body: &FinishBody,
    cause: &ClientError,
) -> Failure {
    let end = RunEnd {
        status: RunStatus::Failed,
        reason: Some(unreachable_reason(body)),
        ..body.clone()
    };
    let recorded =
        Service::open(settings).and_then(|svc| finish_run(&svc, run_id, &end, Actor::runner()));
    let cause = crate::cli::exit::error_chain(cause);
    match recorded {
        Ok(recorded) => Failure::new(
            ExitCode::Failure,
            format!(
                "failed: run `{run_id}`: {}: the server could not be told ({cause}); recorded on the audit chain directly",
                recorded.reason.unwrap_or_else(|| unreachable_reason(body))
            ),
        ),
        Err(e) => Failure::new(
            ExitCode::Failure,
            format!(
                "run `{run_id}` ended but could not be recorded: the server could not be told ({cause}) and the chain could not be written ({}); the server must be told (`{}`)",
                crate::cli::exit::error_chain(&e),
                serde_json::to_string(body).unwrap_or_default()
            ),
        ),
    }
}

fn print_report(agent: &str, report: &RunReport) -> ExitCode {
    match report {
        RunReport::Skipped(skip) => {
            let why = match skip.error.as_str() {
                "agent_paused" => "the agent is paused".to_string(),
                "continue_denied" => "a policy says it may not go on".to_string(),
                "budget_insufficient" => {
                    "its budget left cannot cover a run's reservation".to_string()
                }
                "" => "the server refused the run".to_string(),
                other => format!("the server refused the run (`{other}`)"),
            };
            // A pause's own reason, when the server gives it: its detail
            // repeats the agent (`agent `x` is paused: …`).
            let detail = match skip.reason.as_deref() {
                Some(r) if skip.error == "agent_paused" && !r.is_empty() => format!(": {r}"),
                _ if skip.detail.is_empty() => String::new(),
                _ => format!(": {}", skip.detail),
            };
            let ids: Vec<&str> = skip.policies.iter().map(|p| p.id.as_str()).collect();
            let policies = if ids.is_empty() {
                String::new()
            } else {
                format!(" (policies: {})", ids.join(", "))
            };
            println!("skipped: agent `{agent}` did not run: {why}{detail}{policies}");
            ExitCode::Ok
        }
        RunReport::Finished {
            run_id,
            body,
            budget,
            run,
            log,
        } => {
            let (tokens, dollars) = (run.tokens_spent, run.dollars_spent);
            let spend = if body.usage_missing && tokens == 0 {
                "usage unknown".to_string()
            } else if body.estimate {
                format!("{tokens} tokens, ${dollars:.4}, estimated from the stream")
            } else {
                format!("{tokens} tokens, ${dollars:.4}")
            };
            let remaining = format!("; {:.0}% of the budget left", budget.remaining_pct);
            let log = log
                .as_ref()
                .map(|p| format!("; log `{}`", p.display()))
                .unwrap_or_default();
            match body.status {
                RunStatus::Complete => {
                    println!(
                        "complete: run `{run_id}` of agent `{agent}` ({spend}{remaining}{log})"
                    );
                    ExitCode::Ok
                }
                RunStatus::Failed => {
                    let reason = body.reason.as_deref().unwrap_or("unknown");
                    println!("failed: run `{run_id}` of agent `{agent}`: {reason} ({spend}{remaining}{log})");
                    ExitCode::Failure
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_reason_keeps_the_runs_own() {
        let body = |reason: Option<&str>| FinishBody {
            status: if reason.is_some() {
                RunStatus::Failed
            } else {
                RunStatus::Complete
            },
            reason: reason.map(String::from),
            usage_missing: false,
            charges: vec![],
            estimate: false,
            claude_cost_usd: None,
            tool_uses: Vec::new(),
            tokens: 0,
            dollars: None,
        };
        assert_eq!(
            unreachable_reason(&body(None)),
            "server_unreachable_at_finish"
        );
        assert_eq!(
            unreachable_reason(&body(Some("wallclock"))),
            "server_unreachable_at_finish: wallclock"
        );
    }

    #[test]
    fn grace_from_env() {
        assert_eq!(kill_grace(None), DEFAULT_KILL_GRACE);
        assert_eq!(kill_grace(Some("250".into())), Duration::from_millis(250));
        assert_eq!(kill_grace(Some("soon".into())), DEFAULT_KILL_GRACE);
    }
}
