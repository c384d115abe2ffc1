//! `gov guard --agent AGENT [PROJECT]`: put an interactive Claude Code
//! session in PROJECT under gov (see [`crate::runner::guard`] and
//! docs/GUARD.md); `gov guard --remove [PROJECT]` takes it out again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ExitCode, Failure};
use crate::client::{Client, Timeouts, Token};
use crate::config::Settings;
use crate::runner::claude::shell_quote;
use crate::runner::guard::{self, GovHooks, GuardRecord};
use crate::runner::hook::{guard_hook_deadline, SessionFile, SESSION_FILE_VAR};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project folder (default: the current folder).
    pub project: Option<PathBuf>,
    /// The agent the session acts as: its policies, budget and audit trail
    /// (it must be on main).
    #[arg(long, required_unless_present_any = ["remove", "print_managed_settings"])]
    pub agent: Option<String>,
    /// Write `.claude/settings.local.json` (not shared through the
    /// project's Git) instead of `.claude/settings.json`.
    #[arg(long, conflicts_with = "remove")]
    pub local: bool,
    /// Take gov's hook out again and end the session's run.
    #[arg(long)]
    pub remove: bool,
    /// Print Claude Code managed settings that put every session on this
    /// machine under gov's hooks and let no other hook run (for
    /// `/etc/claude-code/managed-settings.json`); changes nothing.
    #[arg(long, conflicts_with_all = ["remove", "local", "project"])]
    pub print_managed_settings: bool,
    /// With `--print-managed-settings`: the session file the hooks read
    /// (`~/…` is each user's home folder).
    #[arg(
        long,
        requires = "print_managed_settings",
        default_value = "/etc/gov/session.json"
    )]
    pub session_file: String,
}

fn fail(code: ExitCode, message: impl Into<String>) -> Failure {
    Failure::new(code, message)
}

fn io_fail(what: &str, path: &Path, e: std::io::Error) -> Failure {
    fail(
        ExitCode::Failure,
        format!("cannot {what} `{}`: {e}", path.display()),
    )
}

/// The folder of guard records in the governance repository.
fn guard_dir(settings: &Settings) -> PathBuf {
    settings.local_dir().join("guard")
}

pub fn run(args: Args, repo: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let root = super::repo_root(repo)?;
    let settings = Settings::load(&root)?;
    if args.print_managed_settings {
        return print_managed_settings(&settings, &args.session_file);
    }
    let project = match &args.project {
        Some(p) => p.clone(),
        None => std::env::current_dir().map_err(|e| {
            fail(
                ExitCode::Failure,
                format!("cannot read the current folder: {e}"),
            )
        })?,
    };
    let project = std::fs::canonicalize(&project).map_err(|e| {
        fail(
            ExitCode::Config,
            format!("no project folder `{}`: {e}", project.display()),
        )
    })?;
    let client = |token: Token| {
        Client::new(
            &crate::client::server_url(std::env::var("GOV_URL").ok(), settings.port),
            token,
            Timeouts {
                connect: Duration::from_secs(2),
                total: Duration::from_secs(15),
            },
        )
    };
    let runner = || -> Result<Token, Failure> {
        let path = settings.runner_token_path();
        std::fs::read_to_string(&path)
            .map(Token::new)
            .map_err(|e| io_fail("read the runner token", &path, e))
    };
    if args.remove {
        return remove(&settings, &project, &client(runner()?));
    }
    let agent = args.agent.unwrap_or_default();
    if find_record(&settings, &project)?.is_some() {
        return Err(fail(
            ExitCode::Config,
            format!(
                "`{}` is already under gov: run `gov guard --remove` there first",
                project.display()
            ),
        ));
    }
    let claude_dir = project.join(".claude");
    let file_name = if args.local {
        "settings.local.json"
    } else {
        "settings.json"
    };
    let settings_file = claude_dir.join(file_name);
    let original = match std::fs::read_to_string(&settings_file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_fail("read", &settings_file, e)),
    };
    let gov_exe = std::env::current_exe().map_err(|e| {
        fail(
            ExitCode::Failure,
            format!("cannot find the gov executable: {e}"),
        )
    })?;
    // Checked before the run opens, so a bad settings file opens nothing.
    let shown = settings_file.display().to_string();
    let probe = GovHooks {
        check: "probe",
        meter: "probe",
        timeout_secs: 1,
    };
    guard::install(original.as_deref(), &shown, &probe)
        .map_err(|e| Failure::from_error(ExitCode::Config, &e))?;

    let started_at = crate::app::clock::Clock::system()
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = crate::wire::RunOpen {
        agent_id: agent.clone(),
        task_id: None,
        folder: Some(project.to_string_lossy().into_owned()),
    };
    let opened: crate::wire::RunOpened =
        client(runner()?).post_json("/runs", &body).map_err(|e| {
            fail(
                ExitCode::Failure,
                format!(
                    "cannot register the session as a run of `{agent}`: {}",
                    super::exit::error_chain(&e)
                ),
            )
        })?;
    let dir = guard_dir(&settings);
    std::fs::create_dir_all(&dir).map_err(|e| io_fail("create", &dir, e))?;
    let session_path = dir.join(format!("{}.session.json", opened.run_id));
    let session = SessionFile {
        url: crate::client::server_url(std::env::var("GOV_URL").ok(), settings.port),
        agent_id: agent.clone(),
        run_id: opened.run_id.clone(),
        agent_token: opened.agent_token,
        approval_wait_seconds: settings.approval_wait_seconds,
        started_at: Some(started_at),
    };
    write_private(&session_path, &to_json(&session))?;
    let hook_command = |event: &str| {
        format!(
            "{SESSION_FILE_VAR}={} {}",
            shell_quote(&session_path.to_string_lossy()),
            crate::runner::claude::hook_command(&gov_exe, event)
        )
    };
    let command = hook_command("pre-tool-use");
    let meter_command = hook_command("meter");
    let timeout = crate::runner::claude::hook_timeout_seconds(guard_hook_deadline(
        Duration::from_secs(settings.approval_wait_seconds),
    ));
    let gov_hooks = GovHooks {
        check: &command,
        meter: &meter_command,
        timeout_secs: timeout,
    };
    let installed = guard::install(original.as_deref(), &shown, &gov_hooks)
        .map_err(|e| Failure::from_error(ExitCode::Config, &e))?;
    let created_dir = !claude_dir.exists();
    std::fs::create_dir_all(&claude_dir).map_err(|e| io_fail("create", &claude_dir, e))?;
    let record = GuardRecord {
        project: project.to_string_lossy().into_owned(),
        settings_file: shown.clone(),
        original,
        created_dir,
        installed: installed.clone(),
        command,
        meter_command: Some(meter_command),
        agent_id: agent.clone(),
        run_id: opened.run_id.clone(),
        session_file: session_path.to_string_lossy().into_owned(),
    };
    // The record first: a settings file gov changed is always one it can
    // put back.
    write_private(
        &dir.join(format!("{}.json", opened.run_id)),
        &to_json(&record),
    )?;
    write_atomic(&settings_file, &installed)?;
    println!(
        "gov guard: `{}` is under gov as agent `{agent}` (run `{}`): every tool call of a Claude Code session started there asks gov's policies first",
        project.display(),
        opened.run_id
    );
    println!("gov guard: hook added to `{shown}`; `gov guard --remove` puts the file back");
    Ok(ExitCode::Ok)
}

fn remove(settings: &Settings, project: &Path, runner: &Client) -> Result<ExitCode, Failure> {
    let Some((record_path, record)) = find_record(settings, project)? else {
        return Err(fail(
            ExitCode::Config,
            format!("`{}` is not under gov guard", project.display()),
        ));
    };
    let settings_file = PathBuf::from(&record.settings_file);
    let current = match std::fs::read_to_string(&settings_file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_fail("read", &settings_file, e)),
    };
    let changed = current.as_deref() != Some(record.installed.as_str());
    let back = guard::restore(&record, current.as_deref())
        .map_err(|e| Failure::from_error(ExitCode::Config, &e))?;
    match back {
        Some(text) => write_atomic(&settings_file, &text)?,
        None => {
            if current.is_some() {
                std::fs::remove_file(&settings_file)
                    .map_err(|e| io_fail("remove", &settings_file, e))?;
            }
            if record.created_dir {
                // Only if empty: anything else in it is someone else's.
                let _ = std::fs::remove_dir(project.join(".claude"));
            }
        }
    }
    // What the session's transcripts gained since its last hook is reported
    // before the run ends; a session whose hooks never metered it (no
    // state) ends with its usage missing.
    let metered = meter_rest(&record);
    let end = crate::wire::RunFinish {
        status: crate::wire::RunStatus::Complete,
        reason: Some("gov guard removed".into()),
        tokens: 0,
        dollars: None,
        usage_missing: !matches!(metered, Ok(Some(_))),
        charges: Vec::new(),
        estimate: false,
        claude_cost_usd: None,
        tool_uses: Vec::new(),
    };
    let finished: Result<serde_json::Value, _> =
        runner.post_json(&format!("/runs/{}/finish", record.run_id), &end);
    let session = PathBuf::from(&record.session_file);
    for path in [
        session.clone(),
        session.with_file_name(format!("{}.meter.json", record.run_id)),
        session.with_file_name(format!("{}.meter.lock", record.run_id)),
    ] {
        let _ = std::fs::remove_file(path);
    }
    if let Err(e) = &metered {
        eprintln!(
            "gov guard: the session's last usage could not be reported: {}",
            super::exit::error_chain(e)
        );
    }
    std::fs::remove_file(&record_path).map_err(|e| io_fail("remove", &record_path, e))?;
    if changed {
        println!(
            "gov guard: `{}` changed since gov guard wrote it: removed gov's hook and kept the rest",
            record.settings_file
        );
    } else {
        println!("gov guard: `{}` restored", record.settings_file);
    }
    match finished {
        Ok(_) => {
            println!(
                "gov guard: run `{}` of `{}` ended",
                record.run_id, record.agent_id
            );
            Ok(ExitCode::Ok)
        }
        Err(e) => Err(fail(
            ExitCode::Failure,
            format!(
                "the hook is removed but run `{}` could not be ended: {}",
                record.run_id,
                super::exit::error_chain(&e)
            ),
        )),
    }
}

/// Prints managed settings whose hooks read `session_file`.
fn print_managed_settings(settings: &Settings, session_file: &str) -> Result<ExitCode, Failure> {
    let gov_exe = std::env::current_exe().map_err(|e| {
        fail(
            ExitCode::Failure,
            format!("cannot find the gov executable: {e}"),
        )
    })?;
    // `~/x` is left for the hook's shell to expand: each user's own file.
    let file = match session_file.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/{}", shell_quote(rest)),
        None => shell_quote(session_file),
    };
    let command = |event: &str| {
        format!(
            "{SESSION_FILE_VAR}={file} {}",
            crate::runner::claude::hook_command(&gov_exe, event)
        )
    };
    let (check, meter) = (command("pre-tool-use"), command("meter"));
    let timeout = crate::runner::claude::hook_timeout_seconds(guard_hook_deadline(
        Duration::from_secs(settings.approval_wait_seconds),
    ));
    let managed = guard::managed_settings(&GovHooks {
        check: &check,
        meter: &meter,
        timeout_secs: timeout,
    })
    .map_err(|e| Failure::from_error(ExitCode::Failure, &e))?;
    println!("{}", to_json(&managed));
    Ok(ExitCode::Ok)
}

/// Reports what the session's transcripts gained since its last hook.
fn meter_rest(
    record: &GuardRecord,
) -> Result<Option<crate::runner::session_meter::Metered>, crate::runner::hook::HookError> {
    let path = record.session_file.clone();
    let env = crate::runner::hook::hook_env(|k| (k == SESSION_FILE_VAR).then(|| path.clone()))?;
    match env.meter {
        Some(m) => Ok(m.meter_rest()?),
        None => Ok(None),
    }
}

/// The guard record of a project, if it has one.
fn find_record(
    settings: &Settings,
    project: &Path,
) -> Result<Option<(PathBuf, GuardRecord)>, Failure> {
    let dir = guard_dir(settings);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_fail("read", &dir, e)),
    };
    let want = project.to_string_lossy();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.ends_with(".session.json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Ok(record) = serde_json::from_str::<GuardRecord>(&text) {
            if record.project == want {
                return Ok(Some((path, record)));
            }
        }
    }
    Ok(None)
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into())
}

/// Writes a file only its owner can read (it holds a token).
fn write_private(path: &Path, text: &str) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_fail("write", path, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| io_fail("write", path, e))
}

/// Replaces a file in one step (a temporary file renamed over it), so a
/// crash leaves the old text or the new one, never half of either.
fn write_atomic(path: &Path, text: &str) -> Result<(), Failure> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_fail("write", path, e))?;
    tmp.write_all(text.as_bytes())
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| io_fail("write", path, e))?;
    tmp.persist(path)
        .map_err(|e| io_fail("write", path, e.error))?;
    Ok(())
}
