//! One run of one agent, from asking the server for a run to reporting how
//! it ended:
//!
//! 1. resolve everything local first (agent settings, task prompt, program),
//!    so a configuration error never opens a run;
//! 2. `POST /runs`: the server may refuse (paused agent, a `continue` policy)
//!    and has then already audited the skip; an unreachable server means
//!    nothing runs (fail closed);
//! 3. spawn the child in its own process group with a cleaned environment,
//!    confined by Landlock through `gov sandbox-exec` ([`super::sandbox`];
//!    a kernel that cannot confine it runs nothing, unless `gov.toml` says
//!    `[runner] sandbox = "off"`), tee a claude agent's stream-json to
//!    `.gov/runs/<run_id>.jsonl`;
//! 4. supervise it (wall clock, Ctrl-C);
//! 5. `POST /runs/{id}/finish` with the status, the reason and the usage the
//!    runner measured itself; the server charges the budget and audits.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::claude::{claude_args, hook_settings, new_session_id, ClaudeInvocation};
use super::env::{child_env, RunVars};
use super::hook::hook_deadline;
use super::meter::{Meter, UsageFile, BUDGET_REASON};
use super::process::{own_process_group, supervise_with_budget, Ending, Outcome, Supervision};
use super::sandbox::{self, Confinement, SandboxInputs, Unavailable};
use super::stream_json::StreamSummary;
use crate::client::{Client, ClientError, Timeouts, Token};
use crate::config::{AgentKind, AgentSettings, ConfigError, SandboxMode, Settings};

/// What the command line resolved from flags and the environment.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub agent_id: String,
    pub task_id: Option<String>,
    /// The server's base URL (`GOV_URL` or the port in `gov.toml`).
    pub server_url: String,
    /// The `gov` executable the PreToolUse hook runs.
    pub gov_exe: PathBuf,
    /// `$CLAUDE_BIN`, else `claude` on PATH.
    pub claude_bin: OsString,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// The runner's environment, filtered into the child's.
    pub parent_env: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("unknown agent `{id}`: no `{}`{}", path.display(), known_list(.known))]
    UnknownAgent {
        id: String,
        path: PathBuf,
        known: Vec<String>,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("agent `{id}` is not in force on `{branch}`: `agents/{id}/agent.toml` is only in the working tree or in a change that is not authorized; commit it to {branch} through review first{}", known_list(.known))]
    NotOnMain {
        id: String,
        branch: String,
        known: Vec<String>,
    },
    #[error("agent `{id}`: the working tree's `agents/{id}/agent.toml` differs from `{branch}`'s; commit it to {branch} through review first (or restore it: `git checkout {branch} -- agents/{id}/agent.toml`)")]
    DiffersFromMain { id: String, branch: String },
    #[error("agent `{id}` is not in force: its agent.toml on `{branch}` is not valid: {why}")]
    InvalidOnMain {
        id: String,
        branch: String,
        why: String,
    },
    #[error("cannot read the agents of `{branch}`: {message}")]
    MainUnreadable { branch: String, message: String },
    #[error(
        "agent `{0}` is a claude agent: name a task (`gov run {0} TASK`, with `tasks/TASK.md`)"
    )]
    TaskRequired(String),
    #[error("`{0}` is not a valid task name (letters, digits, `-` and `_`)")]
    BadTaskName(String),
    #[error("no task `{task}`: cannot read `{}`", path.display())]
    TaskMissing { task: String, path: PathBuf },
    #[error("cannot prepare the run: {0}")]
    Prepare(String),
    #[error("cannot confine agent `{id}`: {why}: nothing was run; to run agents unconfined on this machine, set `sandbox = \"off\"` under `[runner]` in gov.toml")]
    SandboxUnavailable { id: String, why: Unavailable },
    #[error("cannot read the runner token `{}` (is this repository initialised and `gov serve` started?): {source}", path.display())]
    NoRunnerToken {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the server does not know agent `{0}`")]
    UnknownToServer(String),
    #[error("cannot start a run, nothing was run")]
    Open(#[source] ClientError),
    #[error("run `{run_id}` {} but its end could not be recorded; the server must be told (`{}`)", describe(.body), serde_json::to_string(.body).unwrap_or_default())]
    Finish {
        run_id: String,
        body: Box<FinishBody>,
        #[source]
        source: ClientError,
    },
}

impl RunError {
    /// Configuration errors (exit 2) as opposed to failures (exit 1).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            RunError::Config(_)
                | RunError::NotOnMain { .. }
                | RunError::DiffersFromMain { .. }
                | RunError::InvalidOnMain { .. }
                | RunError::MainUnreadable { .. }
                | RunError::TaskRequired(_)
                | RunError::BadTaskName(_)
                | RunError::TaskMissing { .. }
                | RunError::SandboxUnavailable { .. }
        )
    }
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        format!(" (agents here: {})", known.join(", "))
    }
}

fn describe(body: &FinishBody) -> String {
    match (&body.status, &body.reason) {
        (RunStatus::Complete, _) => "completed".into(),
        (RunStatus::Failed, Some(r)) => format!("failed ({r})"),
        (RunStatus::Failed, None) => "failed".into(),
    }
}

pub use crate::wire::{
    RunFinish as FinishBody, RunOpened as OpenedRun, RunSkipped as Skip, RunStatus,
};

/// How a run went, for the command line to print.
#[derive(Debug, Clone)]
pub enum RunReport {
    Skipped(Skip),
    Finished {
        run_id: String,
        body: Box<FinishBody>,
        /// The server's `budget` after the charge.
        budget: Box<crate::wire::Budget>,
        /// The server's `run`: reserved and spent.
        run: crate::wire::RunSpend,
        /// Where a claude agent's stream was saved.
        log: Option<PathBuf>,
    },
}

/// What to start.
#[derive(Debug)]
struct Launch {
    program: OsString,
    args: Vec<OsString>,
    cwd: PathBuf,
    /// Claude agents: stdout is stream-json to parse and tee.
    stream: bool,
    /// The program as found on PATH or in the agent's folder, and for
    /// claude the folder it is installed in: the sandbox lets the agent
    /// execute them.
    programs: Vec<PathBuf>,
    program_dirs: Vec<PathBuf>,
    /// Files the program reads that are nowhere else it may read: the
    /// claude settings file.
    reads: Vec<PathBuf>,
    /// Holds the claude settings file for as long as the run lasts. The
    /// agent may read it, never write it.
    _scratch: Option<tempfile::TempDir>,
}

/// The run's private folder, removed when the run ends: `home/` is the
/// agent's `HOME`, `tmp/` its `TMPDIR`. With the agent's own folder, the
/// only places it may write.
#[derive(Debug)]
struct RunDir {
    dir: tempfile::TempDir,
}

impl RunDir {
    fn new() -> Result<RunDir, RunError> {
        let dir = tempfile::Builder::new()
            .prefix("gov-agent-")
            .tempdir()
            .map_err(|e| RunError::Prepare(format!("cannot create a temporary folder: {e}")))?;
        let run = RunDir { dir };
        for d in [run.home(), run.tmp()] {
            std::fs::create_dir(&d)
                .map_err(|e| RunError::Prepare(format!("cannot create `{}`: {e}", d.display())))?;
        }
        Ok(run)
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn home(&self) -> PathBuf {
        self.path().join("home")
    }
    fn tmp(&self) -> PathBuf {
        self.path().join("tmp")
    }
}

fn valid_task_name(t: &str) -> bool {
    crate::config::valid_agent_id(t)
}

/// The agent's settings as they are in force.
///
/// In a Git repository (the governance repository), they come from the tip
/// of `main`, like the policy set: an agent that is not on main, or whose
/// `agent.toml` in the working tree differs from main's, is refused (the
/// runner executes the agent's files from the working tree, so the two must
/// agree; an edit reaches main through review first). A repository without
/// a `main` branch has no agent in force. Outside a Git repository (a plain
/// folder) there is no main: the working tree is read.
fn load_agent(settings: &Settings, id: &str) -> Result<AgentSettings, RunError> {
    let path = settings.agents_dir().join(id).join("agent.toml");
    let branch = settings.main_branch.clone();
    let on_main = crate::app::agents::agents_on_main(settings, id).map_err(|message| {
        RunError::MainUnreadable {
            branch: branch.clone(),
            message,
        }
    })?;
    let Some(crate::app::agents::AgentsOnMain {
        settings,
        mut agents,
        agent_file: main_text,
    }) = on_main
    else {
        if crate::config::valid_agent_id(id) && !path.is_file() {
            return Err(RunError::UnknownAgent {
                id: id.to_string(),
                path,
                known: AgentSettings::list(settings),
            });
        }
        return Ok(AgentSettings::load(settings, id)?);
    };
    let settings = &settings;
    if !crate::config::valid_agent_id(id) {
        // The same message as for a working-tree folder.
        return Ok(AgentSettings::load(settings, id)?);
    }
    let Some(on_main) = agents.remove(id) else {
        if !path.is_file() {
            return Err(RunError::UnknownAgent {
                id: id.to_string(),
                path,
                known: agents.into_keys().collect(),
            });
        }
        return Err(RunError::NotOnMain {
            id: id.to_string(),
            branch,
            known: agents.into_keys().collect(),
        });
    };
    let agent = on_main.map_err(|why| RunError::InvalidOnMain {
        id: id.to_string(),
        branch: branch.clone(),
        why,
    })?;
    let tree_text = std::fs::read(&path).ok();
    if main_text != tree_text {
        return Err(RunError::DiffersFromMain {
            id: id.to_string(),
            branch,
        });
    }
    Ok(agent)
}

/// A program path with a `/` in it is relative to the agent's folder; a bare
/// name is looked up on PATH.
fn resolve_program(agent_dir: &Path, program: &str) -> OsString {
    let p = Path::new(program);
    if p.is_absolute() || !program.contains('/') {
        p.as_os_str().to_os_string()
    } else {
        agent_dir.join(p).into_os_string()
    }
}

fn plan(agent: &AgentSettings, req: &RunRequest, wait_seconds: u64) -> Result<Launch, RunError> {
    if let Some(t) = req.task_id.as_deref() {
        if !valid_task_name(t) {
            return Err(RunError::BadTaskName(t.to_string()));
        }
    }
    match agent.kind {
        AgentKind::Command => {
            let (program, args) = agent
                .command
                .clone()
                .ok_or_else(|| RunError::Prepare(format!("agent `{}` has no command", agent.id)))?;
            let program = resolve_program(&agent.dir, &program);
            Ok(Launch {
                programs: find_program(&program, &req.parent_env)
                    .into_iter()
                    .collect(),
                program,
                args: args.into_iter().map(OsString::from).collect(),
                cwd: agent.dir.clone(),
                stream: false,
                program_dirs: Vec::new(),
                reads: Vec::new(),
                _scratch: None,
            })
        }
        AgentKind::Claude => {
            let task = req
                .task_id
                .clone()
                .ok_or_else(|| RunError::TaskRequired(agent.id.clone()))?;
            let task_path = agent.dir.join("tasks").join(format!("{task}.md"));
            let prompt =
                std::fs::read_to_string(&task_path).map_err(|_| RunError::TaskMissing {
                    task: task.clone(),
                    path: task_path.clone(),
                })?;
            let system_prompt =
                std::fs::read_to_string(agent.dir.join(&agent.claude_prompt_file)).ok();
            let scratch = tempfile::Builder::new()
                .prefix("gov-run-")
                .tempdir()
                .map_err(|e| RunError::Prepare(format!("cannot create a temporary folder: {e}")))?;
            let settings_path = scratch.path().join("settings.json");
            let deadline = hook_deadline(Duration::from_secs(wait_seconds));
            let json = serde_json::to_vec_pretty(&hook_settings(&req.gov_exe, deadline))
                .map_err(|e| RunError::Prepare(e.to_string()))?;
            std::fs::write(&settings_path, json).map_err(|e| {
                RunError::Prepare(format!("cannot write `{}`: {e}", settings_path.display()))
            })?;
            let session_id = new_session_id()
                .map_err(|e| RunError::Prepare(format!("no randomness for a session id: {e}")))?;
            let inv = ClaudeInvocation {
                prompt,
                settings_path: settings_path.clone(),
                session_id,
                system_prompt,
            };
            let found = find_program(&req.claude_bin, &req.parent_env);
            Ok(Launch {
                program_dirs: found
                    .as_deref()
                    .and_then(Path::parent)
                    .map(Path::to_path_buf)
                    .into_iter()
                    .collect(),
                programs: found.into_iter().collect(),
                program: req.claude_bin.clone(),
                args: claude_args(agent, &inv),
                cwd: agent.dir.clone(),
                stream: true,
                reads: vec![settings_path],
                _scratch: Some(scratch),
            })
        }
    }
}

/// Where `program` is: a path as it is, a bare name looked up on the
/// runner's PATH (as the child will look it up); symbolic links resolved.
fn find_program(program: &OsString, parent_env: &[(String, String)]) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.components().count() > 1 {
        return std::fs::canonicalize(p).ok();
    }
    let path = parent_env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v)?;
    std::env::split_paths(path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(p))
        .find(|c| c.is_file())
        .and_then(|c| std::fs::canonicalize(c).ok())
}

/// What the agent may not reach, whatever else it may: `.gov/`, the Git
/// directories, and the key and secret files `gov.toml` names.
fn protected_paths(settings: &Settings) -> Vec<PathBuf> {
    let mut p = vec![
        settings.local_dir(),
        settings.server_key.clone(),
        settings.watchdog_key.clone(),
        settings.operator_key.clone(),
        settings.webhook_secret_file.clone(),
        settings.operator_token_path(),
        settings.runner_token_path(),
    ];
    p.extend(crate::app::agents::git_dirs(&settings.root));
    p
}

/// The confinement of this run, or `None` when the operator turned the
/// sandbox off (said on stderr). A kernel that cannot confine agents is a
/// configuration error: nothing runs.
fn confine(
    settings: &Settings,
    req: &RunRequest,
    agent: &AgentSettings,
    launch: &Launch,
    run_dir: &RunDir,
) -> Result<Option<Confinement>, RunError> {
    if settings.runner.sandbox == SandboxMode::Off {
        eprintln!(
            "gov run: the sandbox is off (`sandbox = \"off\"` under `[runner]` in gov.toml): agent `{}` runs with every right of your user, `.gov/` (tokens, keys) and `.git/` included",
            agent.id
        );
        return Ok(None);
    }
    sandbox::probe().map_err(|why| RunError::SandboxUnavailable {
        id: agent.id.clone(),
        why,
    })?;
    let var = |name: &str| {
        req.parent_env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut programs = launch.programs.clone();
    programs.push(req.gov_exe.clone());
    // The hook program Claude Code starts (see `hook_settings`).
    let (hook, _) = super::claude::hook_program(&req.gov_exe, "pre-tool-use");
    if hook != req.gov_exe {
        programs.push(hook);
    }
    Ok(Some(sandbox::confinement(&SandboxInputs {
        repo_root: settings.root.clone(),
        agent_dir: agent.dir.clone(),
        run_dir: run_dir.path().to_path_buf(),
        protected: protected_paths(settings),
        programs,
        program_dirs: launch.program_dirs.clone(),
        files: launch.reads.clone(),
        path_var: var("PATH").map(OsString::from),
        home: var("HOME").map(PathBuf::from),
        extra_read: settings.runner.sandbox_read.clone(),
        extra_write: settings.runner.sandbox_write.clone(),
    })))
}

/// `POST /runs`: `Ok(Err(skip))` when the server refused the run.
fn open_run(
    client: &Client,
    agent_id: &str,
    task_id: Option<&str>,
) -> Result<Result<OpenedRun, Skip>, RunError> {
    let body = crate::wire::RunOpen {
        agent_id: agent_id.into(),
        task_id: task_id.map(str::to_string),
        folder: None,
    };
    match client.post_json::<_, OpenedRun>("/runs", &body) {
        Ok(run) => Ok(Ok(run)),
        Err(e) => match e.reply_as::<Skip>() {
            Some((423, skip)) => Ok(Err(skip)),
            Some((404, _)) => Err(RunError::UnknownToServer(agent_id.to_string())),
            _ if matches!(e, ClientError::Status { code: 423, .. }) => Ok(Err(Skip::default())),
            _ => Err(RunError::Open(e)),
        },
    }
}

/// Why a process ended, as the run's reason.
fn exit_reason(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit_status: {c}"),
        (None, Some(s)) => format!("killed_by_signal: {s}"),
        (None, None) => "exit_status: unknown".into(),
    }
}

/// How a run ended → what the server is told (its `charges` are the
/// meter's to fill). `stream` is `Some` for claude agents (whose usage the
/// runner reads from their stream), `None` for command agents.
pub fn finish_body(outcome: &Outcome, stream: Option<&StreamSummary>) -> FinishBody {
    let result = stream.and_then(|s| s.result.as_ref());
    let usage_missing = stream.is_some() && result.is_none();
    let reason = match outcome.ending {
        Ending::Interrupted => Some("interrupted".to_string()),
        Ending::WallClock => Some("wallclock".to_string()),
        Ending::Budget => Some(BUDGET_REASON.to_string()),
        Ending::Exited => match (stream, result) {
            (Some(_), Some(r)) if !r.succeeded() => Some(r.error_reason()),
            (Some(_), None) => Some("no_result_event".to_string()),
            _ if !outcome.status.success() => Some(exit_reason(&outcome.status)),
            _ => None,
        },
    };
    FinishBody {
        status: if reason.is_none() {
            RunStatus::Complete
        } else {
            RunStatus::Failed
        },
        reason,
        usage_missing,
        charges: Vec::new(),
        estimate: stream.is_some_and(|s| s.final_usage().estimate),
        claude_cost_usd: result.and_then(|r| r.total_cost_usd),
        tool_uses: stream.map(|s| s.tool_uses.clone()).unwrap_or_default(),
        tokens: 0,
        dollars: None,
    }
}

/// Reads the child's stdout line by line as it comes, tees it to `log`, and
/// keeps the summary up to date. Signals `done` at end of stream.
fn spawn_reader(
    stdout: impl Read + Send + 'static,
    log: Option<std::fs::File>,
    summary: Arc<Mutex<StreamSummary>>,
    meter: Arc<Mutex<Meter>>,
    done: mpsc::Sender<()>,
) {
    let spawned = std::thread::Builder::new()
        .name("gov-run-stream".into())
        .spawn(move || {
            let mut log = log;
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if let Some(f) = log.as_mut() {
                    if f.write_all(&buf).is_err() {
                        tracing::warn!("cannot write the run log; going on without it");
                        log = None;
                    }
                }
                let line = String::from_utf8_lossy(&buf);
                // Usage is charged as it streams, before the next line is
                // read: a run is stopped within one usage report.
                let seen = match summary.lock() {
                    Ok(mut s) => s.observe(&line).then(|| s.stream_usage()),
                    Err(_) => None,
                };
                if let (Some(seen), Ok(mut m)) = (seen, meter.lock()) {
                    m.report(&seen, true);
                }
            }
            let _ = done.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the stream reader: {e}");
    }
}

/// How long the runner waits for a stream to end after its process did
/// (something the agent started may still hold the pipe open).
const STREAM_DRAIN: Duration = Duration::from_secs(2);

/// Runs an agent once. `stop` is set by Ctrl-C / SIGTERM (see
/// [`super::process::stop_on_signals`]).
pub fn run_agent(
    settings: &Settings,
    req: &RunRequest,
    stop: &AtomicBool,
) -> Result<RunReport, RunError> {
    let agent = load_agent(settings, &req.agent_id)?;
    let launch = plan(&agent, req, settings.approval_wait_seconds)?;
    let run_dir = RunDir::new()?;
    let confinement = confine(settings, req, &agent, &launch, &run_dir)?;
    let token_path = settings.runner_token_path();
    let token = std::fs::read_to_string(&token_path)
        .map(Token::new)
        .map_err(|source| RunError::NoRunnerToken {
            path: token_path.clone(),
            source,
        })?;
    let client = Client::new(&req.server_url, token, Timeouts::default());
    let opened = match open_run(&client, &agent.id, req.task_id.as_deref())? {
        Ok(run) => run,
        Err(skip) => return Ok(RunReport::Skipped(skip)),
    };
    let run_id = opened.run_id.clone();
    eprintln!("gov run: run `{run_id}` of agent `{}` started", agent.id);

    let child = Child {
        launch: &launch,
        confinement: confinement.as_ref(),
        run_dir: &run_dir,
    };
    let (mut body, log) = execute(settings, req, &agent, &child, &opened, stop, &client);
    let path = format!("/runs/{run_id}/finish");
    match client.post_json::<_, crate::wire::RunFinished>(&path, &body) {
        Ok(answer) => {
            take_recorded_end(&mut body, &answer);
            Ok(RunReport::Finished {
                run_id,
                body: Box::new(body),
                budget: Box::new(answer.budget),
                run: answer.run,
                log,
            })
        }
        Err(source) => Err(RunError::Finish {
            run_id,
            body: Box::new(body),
            source,
        }),
    }
}

/// The server has the last word on how a run ended: it fails a run in which
/// a tool call had no decision. Its answer's `status` and `reason` replace
/// the runner's.
fn take_recorded_end(body: &mut FinishBody, answer: &crate::wire::RunFinished) {
    body.status = answer.status;
    body.reason.clone_from(&answer.reason);
}

/// What to start and how it is confined.
struct Child<'a> {
    launch: &'a Launch,
    confinement: Option<&'a Confinement>,
    run_dir: &'a RunDir,
}

impl Child<'_> {
    /// The command: the agent's program, or when it is confined, `gov
    /// sandbox-exec RULES -- PROGRAM ARGS`, which confines itself and then
    /// becomes the agent (same process).
    fn command(&self, gov_exe: &Path) -> Command {
        let launch = self.launch;
        match self.confinement {
            Some(c) => {
                let mut cmd = Command::new(gov_exe);
                cmd.arg("sandbox-exec")
                    .args(c.to_args())
                    .arg("--")
                    .arg(&launch.program)
                    .args(&launch.args);
                cmd
            }
            None => {
                let mut cmd = Command::new(&launch.program);
                cmd.args(&launch.args);
                cmd
            }
        }
    }
}

/// Spawns and supervises the child; never fails: a failure to start is a
/// failed run with its reason.
fn execute(
    settings: &Settings,
    req: &RunRequest,
    agent: &AgentSettings,
    child: &Child<'_>,
    opened: &OpenedRun,
    stop: &AtomicBool,
    client: &Client,
) -> (FinishBody, Option<PathBuf>) {
    let launch = child.launch;
    let failed = |reason: String| FinishBody {
        status: RunStatus::Failed,
        reason: Some(reason),
        usage_missing: launch.stream,
        charges: Vec::new(),
        estimate: false,
        claude_cost_usd: None,
        tool_uses: Vec::new(),
        tokens: 0,
        dollars: None,
    };
    if stop.load(Ordering::SeqCst) {
        return (failed("interrupted".into()), None);
    }
    let vars = RunVars {
        url: req.server_url.clone(),
        agent_id: agent.id.clone(),
        run_id: opened.run_id.clone(),
        agent_token: Token::new(opened.agent_token.clone()),
        task_id: req.task_id.clone(),
        repo: settings.root.to_string_lossy().into_owned(),
        home: child.run_dir.home().to_string_lossy().into_owned(),
        tmp: child.run_dir.tmp().to_string_lossy().into_owned(),
    };
    let runs = settings.local_dir().join("runs");
    let budget_stop = Arc::new(AtomicBool::new(false));
    let meter = Arc::new(Mutex::new(Meter::new(
        client.clone(),
        &opened.run_id,
        settings.prices(&agent.budget),
        Arc::clone(&budget_stop),
    )));
    // Command agents report usage through a file the runner reads, in the
    // run's own folder (which the sandbox lets the agent write).
    let usage_file = if launch.stream {
        None
    } else {
        let path = child.run_dir.path().join("usage.jsonl");
        match UsageFile::create(path.clone()) {
            Ok(f) => Some(f),
            Err(e) => {
                return (
                    failed(format!("usage_file: `{}`: {e}", path.display())),
                    None,
                )
            }
        }
    };
    let program = Path::new(&launch.program).display().to_string();
    if child.confinement.is_some() && launch.programs.is_empty() {
        // The launcher would fail to execute it, with a less clear reason.
        eprintln!("gov run: cannot start `{program}`: not found");
        return (failed(format!("spawn_failed: {program}: not found")), None);
    }
    let mut cmd = child.command(&req.gov_exe);
    cmd.current_dir(&launch.cwd)
        .env_clear()
        .envs(child_env(
            req.parent_env.iter().cloned(),
            &vars,
            launch.stream,
        ))
        .env(
            super::hook::WAIT_VAR,
            settings.approval_wait_seconds.to_string(),
        )
        .stdin(Stdio::null())
        .stdout(if launch.stream {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .stderr(Stdio::inherit());
    if let Some(u) = &usage_file {
        cmd.env("GOV_USAGE_FILE", &u.path);
    }
    own_process_group(&mut cmd);
    let mut process = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gov run: cannot start `{program}`: {e}");
            return (failed(format!("spawn_failed: {program}: {e}")), None);
        }
    };

    let summary = Arc::new(Mutex::new(StreamSummary::default()));
    let (done_tx, done_rx) = mpsc::channel();
    let mut log_path = None;
    if let Some(stdout) = process.stdout.take() {
        let path = runs.join(format!("{}.jsonl", opened.run_id));
        let file = std::fs::create_dir_all(&runs)
            .and_then(|_| std::fs::File::create(&path))
            .map_err(|e| {
                eprintln!(
                    "gov run: cannot write `{}`: {e}; the stream is not saved",
                    path.display()
                )
            })
            .ok();
        if file.is_some() {
            log_path = Some(path);
        }
        spawn_reader(
            stdout,
            file,
            Arc::clone(&summary),
            Arc::clone(&meter),
            done_tx,
        );
    }
    let usage_done = Arc::new(AtomicBool::new(false));
    let usage_reader =
        usage_file.map(|f| spawn_usage_reader(f, Arc::clone(&meter), Arc::clone(&usage_done)));

    let sup = Supervision::new(Duration::from_secs(agent.wallclock_seconds), req.kill_grace);
    let outcome = match supervise_with_budget(&mut process, &sup, stop, &budget_stop) {
        Ok(o) => o,
        Err(e) => {
            // Cannot even wait for it: make sure it is gone, then say why.
            let _ = process.kill();
            let _ = process.wait();
            return (failed(format!("supervision_failed: {e}")), log_path);
        }
    };
    match outcome.ending {
        Ending::WallClock => eprintln!(
            "gov run: agent `{}` ran past its wall clock of {} s and was stopped",
            agent.id, agent.wallclock_seconds
        ),
        Ending::Interrupted => eprintln!("gov run: interrupted; agent `{}` was stopped", agent.id),
        // The meter has said why.
        Ending::Budget | Ending::Exited => {}
    }
    usage_done.store(true, Ordering::SeqCst);
    let (mut body, total) = if launch.stream {
        if done_rx.recv_timeout(STREAM_DRAIN).is_err() {
            tracing::warn!("the agent's output did not end with its process; using what was read");
        }
        let snapshot = summary.lock().map(|s| s.clone()).unwrap_or_default();
        let total = snapshot.final_usage().by_model;
        (finish_body(&outcome, Some(&snapshot)), total)
    } else {
        let total = usage_reader
            .and_then(|h| h.join().ok())
            .map(|f| f.totals)
            .unwrap_or_default();
        (finish_body(&outcome, None), total)
    };
    if let Ok(m) = meter.lock() {
        body.charges = m.rest(&total);
        if outcome.ending == Ending::Budget {
            body.reason = Some(m.stop_reason.to_string());
        }
    }
    (body, log_path)
}

/// Reads a command agent's usage file as it grows and charges it, until
/// `done`; then reads it once more. Returns the file with its totals.
fn spawn_usage_reader(
    mut file: UsageFile,
    meter: Arc<Mutex<Meter>>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<UsageFile> {
    std::thread::spawn(move || loop {
        let last = done.load(Ordering::SeqCst);
        if file.poll() {
            if let Ok(mut m) = meter.lock() {
                m.report(&file.totals, false);
            }
        }
        if last {
            return file;
        }
        std::thread::sleep(USAGE_POLL);
    })
}

/// How often a command agent's usage file is read.
const USAGE_POLL: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn outcome(ending: Ending, code: i32) -> Outcome {
        Outcome {
            ending,
            status: ExitStatus::from_raw(code << 8),
            killed: false,
        }
    }

    const OK: &str = r#"{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.25,"usage":{"input_tokens":10,"output_tokens":5}}"#;

    #[test]
    fn command_agents_complete_on_exit_zero() {
        let b = finish_body(&outcome(Ending::Exited, 0), None);
        assert_eq!(b.status, RunStatus::Complete);
        assert_eq!((b.estimate, b.usage_missing), (false, false));
        let b = finish_body(&outcome(Ending::Exited, 3), None);
        assert_eq!(b.reason.as_deref(), Some("exit_status: 3"));
        let b = finish_body(&outcome(Ending::WallClock, 0), None);
        assert_eq!(b.reason.as_deref(), Some("wallclock"));
        let b = finish_body(&outcome(Ending::Budget, 0), None);
        assert_eq!(b.reason.as_deref(), Some("budget"));
    }

    #[test]
    fn claude_agents_report_the_result() {
        let s = StreamSummary::from_text(OK);
        let b = finish_body(&outcome(Ending::Exited, 0), Some(&s));
        assert_eq!(
            b,
            FinishBody {
                status: RunStatus::Complete,
                reason: None,
                usage_missing: false,
                charges: vec![],
                estimate: false,
                claude_cost_usd: Some(0.25),
                tool_uses: Vec::new(),
                tokens: 0,
                dollars: None,
            }
        );
        // Interrupted after the result: still failed.
        let b = finish_body(&outcome(Ending::Interrupted, 0), Some(&s));
        assert_eq!(
            (b.status, b.reason.as_deref()),
            (RunStatus::Failed, Some("interrupted"))
        );
        let b = finish_body(&outcome(Ending::Exited, 1), Some(&s));
        assert_eq!(b.reason.as_deref(), Some("exit_status: 1"));
        let none = StreamSummary::default();
        let b = finish_body(&outcome(Ending::Exited, 0), Some(&none));
        assert_eq!(
            (b.reason.as_deref(), b.usage_missing, b.estimate),
            (Some("no_result_event"), true, true)
        );
        let b = finish_body(&outcome(Ending::WallClock, 0), Some(&none));
        assert_eq!(
            (b.reason.as_deref(), b.usage_missing),
            (Some("wallclock"), true)
        );
    }

    #[test]
    fn a_kernel_that_cannot_confine_is_a_configuration_error() {
        for (why, says) in [
            (
                Unavailable::NoLandlock,
                "this kernel has no Landlock (it is not built in, or not enabled at boot: the `lsm=` kernel parameter must list `landlock`)",
            ),
            (
                Unavailable::TooOld,
                "this kernel's Landlock is older than ABI 3 (Linux 6.2): it cannot stop an agent from truncating files it may only read",
            ),
        ] {
            let e = RunError::SandboxUnavailable {
                id: "noop".into(),
                why,
            };
            assert!(e.is_config());
            assert_eq!(
                e.to_string(),
                format!(
                    "cannot confine agent `noop`: {says}: nothing was run; to run agents unconfined on this machine, set `sandbox = \"off\"` under `[runner]` in gov.toml"
                )
            );
        }
    }

    #[test]
    fn the_servers_recorded_end_wins() {
        let mut body = finish_body(&outcome(Ending::Exited, 0), None);
        assert_eq!(
            (body.status, body.reason.as_deref()),
            (RunStatus::Complete, None)
        );
        let answer = crate::wire::RunFinished {
            status: RunStatus::Failed,
            reason: Some("tool_without_gov_decision: …".into()),
            budget: serde_json::from_value(serde_json::json!({
                "agent_id": "noop", "wave": 0, "tokens_consumed": 0, "tokens_cap": 1,
                "dollars_consumed": 0.0, "dollars_cap": 1.0, "status": "ok",
                "remaining_pct": 100.0, "period": "lifetime", "paused_reason": null
            }))
            .expect("a budget"),
            run: crate::wire::RunSpend {
                tokens_reserved: 0,
                dollars_reserved: 0.0,
                tokens_spent: 0,
                dollars_spent: 0.0,
            },
        };
        take_recorded_end(&mut body, &answer);
        assert_eq!(
            (body.status, body.reason.as_deref()),
            (RunStatus::Failed, Some("tool_without_gov_decision: …"))
        );
    }

    #[test]
    fn programs_resolve_against_the_agent_folder() {
        let d = Path::new("/r/agents/a");
        assert_eq!(resolve_program(d, "python3"), OsString::from("python3"));
        assert_eq!(
            resolve_program(d, "./smoke.sh"),
            OsString::from("/r/agents/a/./smoke.sh")
        );
        assert_eq!(resolve_program(d, "/bin/sh"), OsString::from("/bin/sh"));
    }
}
