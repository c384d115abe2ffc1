//! The `gov` command line: one file per subcommand, each with a plain
//! `Args` struct and a `run` function. Errors become a message on stderr and
//! an exit code here, once.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod audit;
pub mod dashboard_link;
pub mod decide;
pub mod demo;
pub mod exit;
pub mod guard;
pub mod hook;
pub mod http;
pub mod init;
pub mod maintain;
pub mod pause;
pub mod policy;
pub mod policy_review;
pub mod proposals;
pub mod reindex;
pub mod run;
pub mod sandbox_exec;
pub mod serve;
pub mod server_record;
pub mod status;
pub mod sync;
pub mod token;
pub mod watchdog;

pub use exit::{ExitCode, Failure};

#[derive(Debug, Parser)]
#[command(
    name = "gov",
    version,
    about = "A governance harness for autonomous AI agents"
)]
pub struct Cli {
    /// The governance repository (default: the nearest folder upwards with a
    /// `gov.toml`).
    #[arg(long, global = true, env = "GOV_REPO")]
    pub repo: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch the whole governance loop in a few seconds (no model, no key).
    Demo(demo::Args),
    /// Create a governance repository.
    Init(init::Args),
    /// Check, test and evaluate the Cedar policy set.
    Policy(policy::Args),
    /// Run an agent once under governance.
    Run(run::Args),
    /// Hooks that Claude Code calls (installed by `gov run` and `gov guard`).
    Hook(hook::Args),
    /// Put a Claude Code session in any project under gov (`--remove` to undo).
    Guard(guard::Args),
    /// Check and read the audit chain.
    Audit(audit::Args),
    /// Rebuild the index database from the audit chain.
    Reindex(reindex::Args),
    /// Manage agent tokens (revoke one).
    Token(token::Args),
    /// Pack loose objects and refs, merge small packs (the server does this
    /// in the background).
    Maintain(maintain::Args),
    /// Serve the API and the dashboard on 127.0.0.1.
    Serve(serve::Args),
    /// Print a fresh one-time login link for the running server's dashboard.
    DashboardLink(dashboard_link::Args),
    /// List proposals, or show one.
    Proposals(proposals::Args),
    /// Approve a pending proposal (a signed merge into main).
    Approve(decide::Args),
    /// Reject a pending proposal.
    Reject(decide::Args),
    /// Pause an agent: its proposals, tool calls, credentials and runs are refused.
    Pause(pause::PauseArgs),
    /// Resume a paused agent.
    Resume(pause::ResumeArgs),
    /// The running server's state.
    Status(status::Args),
    /// Per-agent spend, proposals, runs and pauses, from the running server.
    Scoreboard(status::Args),
    /// Watch every agent: pause those the `continue` policies stop, expire
    /// stale proposals. Its own process; works without the server.
    Watchdog(watchdog::Args),
    /// Exchange with the Git remote: push proposals and the audit chain,
    /// take pull requests merged on the forge as approvals.
    Sync(sync::Args),
    /// Confine this process with Landlock, then execute an agent (used by
    /// `gov run`; see docs/RUNNER.md).
    #[command(hide = true)]
    SandboxExec(sandbox_exec::Args),
}

/// Diagnostics on stderr: warnings by default, more with `GOV_LOG`
/// (`GOV_LOG=debug`, or any `EnvFilter` directive such as `gov=trace`).
/// Colours only when stderr is a terminal.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("GOV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

impl Command {
    /// Whether the command only reads or writes the local repository and
    /// prints what it found or did: such a command ends quietly when its
    /// reader goes away (`gov audit log | head`), as any Unix tool does.
    /// The others (the server, runs and hooks, the watchdog, sync, the
    /// decisions that may push, the commands that ask the running server)
    /// keep the broken-pipe signal ignored: a closed socket or child pipe
    /// is an error they handle.
    fn quits_when_output_closes(&self) -> bool {
        matches!(
            self,
            Command::Init(_)
                | Command::Policy(_)
                | Command::Audit(_)
                | Command::Reindex(_)
                | Command::Token(_)
                | Command::Maintain(_)
                | Command::Proposals(_)
        )
    }
}

/// Lets the broken-pipe signal end this process. Rust's runtime ignores
/// it, so a print to a closed pipe failed, and `println!` panicked with a
/// backtrace on a plain `gov audit log | head`.
#[allow(
    unsafe_code,
    reason = "signal() has no safe wrapper; it only sets one signal's disposition"
)]
fn quit_when_output_closes() {
    // SAFETY: restores the default disposition of SIGPIPE; no handler of
    // ours runs, and no memory is passed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs one command and reports a failure on stderr.
pub fn run(cli: Cli) -> ExitCode {
    if cli.command.quits_when_output_closes() {
        quit_when_output_closes();
    }
    crate::app::limit_git_memory();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Init(args) => init::run(args),
        Command::Policy(args) => policy::run(args, cli.repo),
        Command::Audit(args) => audit::run(cli.repo, args),
        Command::Reindex(args) => reindex::run(cli.repo, args),
        Command::Maintain(args) => maintain::run(cli.repo, args),
        Command::Serve(args) => serve::run(args, cli.repo),
        Command::DashboardLink(args) => dashboard_link::run(args, cli.repo),
        Command::Proposals(args) => proposals::run(args, cli.repo),
        Command::Approve(args) => {
            decide::run(args, crate::domain::proposal::Verdict::Approve, cli.repo)
        }
        Command::Reject(args) => {
            decide::run(args, crate::domain::proposal::Verdict::Reject, cli.repo)
        }
        Command::Pause(args) => pause::run_pause(args, cli.repo),
        Command::Resume(args) => pause::run_resume(args, cli.repo),
        Command::Status(args) => status::run_status(args, cli.repo),
        Command::Scoreboard(args) => status::run_scoreboard(args, cli.repo),
        Command::Run(args) => run::run(args, cli.repo),
        Command::Hook(args) => hook::run(args),
        Command::Guard(args) => guard::run(args, cli.repo),
        Command::Watchdog(args) => watchdog::run(args, cli.repo),
        Command::Sync(args) => sync::run(cli.repo, args),
        Command::Token(args) => token::run(args, cli.repo),
        Command::SandboxExec(args) => sandbox_exec::run(args),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }
}

/// The governance repository a command works on: `--repo`, else the nearest
/// folder upwards from the current directory with a `gov.toml`.
pub fn repo_root(explicit: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(p) = explicit {
        tracing::debug!(repository = %p.display(), "repository from --repo or GOV_REPO");
        return Ok(p);
    }
    let cwd = std::env::current_dir().map_err(|e| {
        Failure::new(
            ExitCode::Failure,
            format!("cannot read the current directory: {e}"),
        )
    })?;
    let found = crate::config::Settings::discover(&cwd);
    tracing::debug!(cwd = %cwd.display(), repository = ?found, "looked for gov.toml");
    found.ok_or_else(|| {
        Failure::new(
            ExitCode::Config,
            "not in a governance repository (no `gov.toml` here or above); run `gov init DIR` or pass --repo",
        )
    })
}
